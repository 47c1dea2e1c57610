// The operator credential on disk (one atomic switch per install) and renewal before expiry.
#include <cerrno>
#include <cmath>
#include <cstring>
#include <ctime>
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <algorithm>
#include <filesystem>
#include <x2sec/cmp/client.hpp>
#include <x2sec/crypto/pkcs11.hpp>
#include <x2sec/common/file.hpp>
#include <x2sec/common/log.hpp>

namespace x2sec::cmp {

namespace {

namespace fs = std::filesystem;
constexpr const char* kNames[] = {"operator.key", "operator.crt", "operator-root.crt"};

Error io_error(const std::string& what, const std::string& path) {
    return Error(ErrorDomain::Io, errno, what + " " + path + ": " + std::strerror(errno));
}

Status sync_dir(const std::string& d) {
    int fd = ::open(d.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return io_error("cannot open directory", d);
    int rc = ::fsync(fd);
    ::close(fd);
    if (rc != 0) return io_error("cannot sync directory", d);
    return ok_status();
}

// "20261129T064700Z" (compact: version names) or "2026-11-29 06:47:00 UTC" (messages).
std::string utc(int64_t t, bool compact) {
    time_t tt = static_cast<time_t>(t);
    struct tm tm {};
    gmtime_r(&tt, &tm);
    char buf[64];
    if (compact)
        std::strftime(buf, sizeof buf, "%Y%m%dT%H%M%SZ", &tm);
    else
        std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S UTC", &tm);
    return buf;
}

// The link target of <dir>/current ("versions/<v>"), empty when there is none.
std::string current_target(const std::string& dir) {
    char buf[4096];
    ssize_t n = ::readlink((dir + "/current").c_str(), buf, sizeof buf - 1);
    if (n <= 0) return {};
    return std::string(buf, static_cast<size_t>(n));
}

// Atomically makes `link` a symlink to `target` (temporary link + rename over).
Status replace_symlink(const std::string& link, const std::string& target) {
    std::string tmp = link + ".tmp." + std::to_string(::getpid());
    ::unlink(tmp.c_str());
    if (::symlink(target.c_str(), tmp.c_str()) != 0) return io_error("cannot create symlink", tmp);
    if (::rename(tmp.c_str(), link.c_str()) != 0) {
        auto e = io_error("cannot rename symlink onto", link);
        ::unlink(tmp.c_str());
        return e;
    }
    return ok_status();
}

// Overwrites a key file with zeros before it is unlinked (best effort on journaling/flash).
void shred_file(const std::string& path) {
    int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) return;
    struct stat st {};
    if (::fstat(fd, &st) == 0 && st.st_size > 0) {
        std::vector<unsigned char> zero(static_cast<size_t>(st.st_size), 0);
        ssize_t w = ::write(fd, zero.data(), zero.size());
        (void)w;
        ::fsync(fd);
    }
    ::close(fd);
}

void remove_version(const std::string& vdir) {
    shred_file(vdir + "/operator.key");
    std::error_code ec;
    fs::remove_all(vdir, ec);
}

}  // namespace

Status install_credential(const std::string& dir, EVP_PKEY* key, const Enrolled& e, const InstallOptions& opt) {
    auto step = [&](std::string_view s) {
        if (opt.before_step) opt.before_step(s);
    };
    if (!key || !e.cert) return Error(ErrorDomain::Config, 0, "install_credential: key and certificate are required");
    if (!pki::public_keys_equal(e.cert.get(), key))
        return Error(ErrorDomain::Pki, 0, "refusing to install: the certificate does not match the key");
    // A key in a PKCS#11 token gets its certificate stored beside it (operator.key then
    // holds the key's URI).
    if (auto uri = crypto::token_key_uri(key))
        X2SEC_TRY_STATUS(crypto::store_token_certificate(*uri, pki::cert_der(e.cert.get())));
    std::error_code ec;
    fs::create_directories(dir + "/versions", ec);
    if (ec) return Error(ErrorDomain::Io, 0, "cannot create " + dir + "/versions: " + ec.message());
    ::chmod((dir + "/versions").c_str(), 0700);  // --dir itself may be shared ("."): leave it

    const std::string previous = current_target(dir);
    // The operator root: the one the enrolment validated against, else the installed one
    // (a kur answer need not carry it again).
    pki::X509Ptr root = e.operator_root ? pki::up_ref(e.operator_root.get()) : nullptr;
    if (!root)
        if (auto cur = load_credential(dir); cur.ok() && cur->root) root = std::move(cur->root);

    step("version-dir");
    std::string base = "versions/" + utc(static_cast<int64_t>(std::time(nullptr)), true) + "-" +
                       pki::serial_hex(e.cert.get()).substr(0, 16);
    std::string name = base;
    for (int i = 1; ::mkdir((dir + "/" + name).c_str(), 0700) != 0; ++i) {
        if (errno != EEXIST || i > 100) return io_error("cannot create", dir + "/" + name);
        name = base + "." + std::to_string(i);
    }
    const std::string vdir = dir + "/" + name;
    auto abandon = [&](Error err) -> Status {
        remove_version(vdir);
        return err;
    };

    step("key");
    if (auto st = pki::save_private_key(vdir + "/operator.key", key); !st) return abandon(st.error());
    step("cert");
    std::vector<X509*> certs{e.cert.get()};
    for (auto& c : e.chain)
        if (X509_check_issued(c.get(), c.get()) != X509_V_OK) certs.push_back(c.get());
    if (auto st = pki::save_certs_pem(vdir + "/operator.crt", certs); !st) return abandon(st.error());
    step("root");
    if (root)
        if (auto st = pki::save_certs_pem(vdir + "/operator-root.crt", {root.get()}); !st) return abandon(st.error());
    if (auto st = sync_dir(vdir); !st) return abandon(st.error());
    if (auto st = sync_dir(dir + "/versions"); !st) return abandon(st.error());

    // The commit point: one rename(2) of the `current` symlink.
    step("switch");
    if (auto st = replace_symlink(dir + "/current", name); !st) return abandon(st.error());
    if (auto st = sync_dir(dir); !st) return st;  // switched; durability of the rename unknown

    // Compatibility names for readers configured with file paths: symlinks through
    // `current`, created once (a flat legacy file is replaced by its link).
    step("links");
    for (const char* n : kNames) {
        std::string link = dir + "/" + n, want = std::string("current/") + n;
        char buf[4096];
        ssize_t len = ::readlink(link.c_str(), buf, sizeof buf - 1);
        if (len > 0 && std::string(buf, static_cast<size_t>(len)) == want) continue;
        if (std::string(n) == "operator-root.crt" && !root) continue;
        if (std::string(n) == "operator.key") shred_file(link);  // a legacy flat key
        if (auto st = replace_symlink(link, want); !st) return st;
    }
    (void)sync_dir(dir);

    // Keep the new and the previous version; remove older ones and crash leftovers.
    step("prune");
    if (DIR* d = ::opendir((dir + "/versions").c_str())) {
        std::vector<std::string> drop;
        while (dirent* ent = ::readdir(d)) {
            std::string v = std::string("versions/") + ent->d_name;
            if (ent->d_name[0] == '.' || v == name || v == previous) continue;
            drop.push_back(v);
        }
        ::closedir(d);
        for (auto& v : drop) remove_version(dir + "/" + v);
    }
    log::get("cmp")->info("installed operator credential serial {} as {}/{}", pki::serial_hex(e.cert.get()), dir, name);
    return ok_status();
}

Result<OperatorCredential> load_credential(const std::string& dir) {
    OperatorCredential c;
    std::string base = dir;
    std::string target = current_target(dir);
    if (!target.empty()) {
        if (target.find("..") != std::string::npos || target.front() == '/')
            return Error(ErrorDomain::Config, 0, dir + "/current points outside the credential directory");
        base = dir + "/" + target;  // resolved once: both files come from this version
        c.version = target;
    } else {
        c.version = "legacy";
    }
    X2SEC_TRY(c.key, pki::load_private_key(base + "/operator.key"));
    X2SEC_TRY(auto certs, pki::load_certs_pem(base + "/operator.crt"));
    c.cert = std::move(certs.front());
    for (size_t i = 1; i < certs.size(); ++i) c.chain.push_back(std::move(certs[i]));
    struct stat st {};
    if (::stat((base + "/operator-root.crt").c_str(), &st) == 0) {
        X2SEC_TRY(c.root, pki::load_cert(base + "/operator-root.crt"));
    }
    if (!pki::public_keys_equal(c.cert.get(), c.key.get()))
        return Error(ErrorDomain::Pki, 0,
                     "operator credential in " + base + " is inconsistent: operator.key does not match operator.crt");
    return c;
}

// ---------------------------------------------------------------- renewal

Result<RenewalWindow> parse_renewal_window(std::string_view t) {
    RenewalWindow w;
    std::string s(t);
    if (s.empty()) return Error(ErrorDomain::Config, 0, "empty renewal window");
    if (s.back() == '%') {
        w.percent = true;
        s.pop_back();
    } else {
        w.percent = false;
        if (s.back() == 'd') s.pop_back();
    }
    char* end = nullptr;
    errno = 0;
    double v = std::strtod(s.c_str(), &end);
    if (s.empty() || !end || *end || errno || !std::isfinite(v) || v < 0 || (w.percent && v > 100))
        return Error(ErrorDomain::Config, 0,
                     "renewal window '" + std::string(t) +
                         "' must be DAYS (e.g. 30 or 30d) or PERCENT of the lifetime (e.g. 20%)");
    w.value = v;
    return w;
}

RenewalCheck renewal_check(X509* cert, int64_t now, const RenewalWindow& w) {
    RenewalCheck r;
    int64_t nb = pki::not_before(cert);
    r.not_after = pki::not_after(cert);
    int64_t before = w.percent
                         ? static_cast<int64_t>(std::llround(static_cast<double>(r.not_after - nb) * w.value / 100.0))
                         : static_cast<int64_t>(std::llround(w.value * 86400.0));
    r.due_at = std::max(nb, r.not_after - before);
    r.expired = now >= r.not_after;
    r.due = r.expired || now >= r.due_at;
    return r;
}

std::string RenewalCheck::describe() const {
    const bool fmt = false;
    if (expired) return "operator certificate expired at " + utc(not_after, fmt);
    if (due) return "renewal due since " + utc(due_at, fmt) + " (certificate expires " + utc(not_after, fmt) + ")";
    return "not due until " + utc(due_at, fmt) + " (certificate expires " + utc(not_after, fmt) + ")";
}

bool needs_renewal(X509* cert, int64_t now, double fraction) {
    int64_t nb = pki::not_before(cert), na = pki::not_after(cert);
    return now >= nb + static_cast<int64_t>(static_cast<double>(na - nb) * fraction);
}

Result<RenewalOutcome> renew_if_due(const std::string& dir, const ClientCommon& common, int64_t now,
                                    const RenewalWindow& w, pki::KeyAlg alg, bool implicit_confirm) {
    X2SEC_TRY(auto cur, load_credential(dir));
    RenewalOutcome out;
    out.check = renewal_check(cur.cert.get(), now, w);
    if (out.check.expired)
        return Error(
            ErrorDomain::Pki, 0,
            out.check.describe() + ": kur cannot be authenticated with it; re-enrol with the vendor credential (ir)");
    if (!out.check.due) {
        out.next_check_at = out.check.due_at;
        return out;
    }
    RenewRequest r;
    static_cast<ClientCommon&>(r) = common;
    if (r.operator_roots.empty()) {
        if (!cur.root) return Error(ErrorDomain::Config, 0, dir + " holds no operator root; give one to renew");
        r.operator_roots = {cur.root.get()};
    }
    // A key in a token is renewed in its token (same label, a fresh id).
    X2SEC_TRY(auto nk, pki::generate_key(alg, crypto::token_key_uri(cur.key.get()).value_or("")));
    r.current_key = cur.key.get();
    r.current_cert = cur.cert.get();
    for (auto& c : cur.chain) r.current_chain.push_back(c.get());
    r.new_key = nk.get();
    r.implicit_confirm = implicit_confirm;
    X2SEC_TRY(auto e, Client::renew(r));
    if (!e.operator_root) e.operator_root = pki::up_ref(r.operator_roots.front());
    X2SEC_TRY_STATUS(install_credential(dir, nk.get(), e));
    out.renewed = true;
    out.new_cert = pki::up_ref(e.cert.get());
    out.next_check_at = renewal_check(e.cert.get(), now, w).due_at;
    return out;
}

}  // namespace x2sec::cmp
