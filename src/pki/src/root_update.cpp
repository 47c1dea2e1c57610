#include <fcntl.h>
#include <openssl/x509v3.h>
#include <unistd.h>
#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <x2sec/pki/root_update.hpp>

namespace fs = std::filesystem;

namespace x2sec::pki {

namespace {

Error update_error(const std::string& what) {
    return Error(ErrorDomain::Pki, 0, "root key update: " + what);
}

int64_t clock_or(int64_t now) {
    return now != 0 ? now : static_cast<int64_t>(std::time(nullptr));
}

bool key_matches(X509* cert, EVP_PKEY* key) {
    bool ok = X509_check_private_key(cert, key) == 1;
    ERR_clear_error();
    return ok;
}

Status fsync_dir(const std::string& dir) {
    int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return Error(ErrorDomain::Io, errno, "cannot open " + dir + ": " + std::strerror(errno));
    int rc = ::fsync(fd);
    int err = errno;
    ::close(fd);
    if (rc != 0) return Error(ErrorDomain::Io, err, "cannot fsync " + dir + ": " + std::strerror(err));
    return ok_status();
}

// A fresh directory `<parent>/.<stem>.XXXXXX` (0700), removed again unless keep() is called.
class TempDir {
public:
    static Result<TempDir> create(const std::string& parent, const std::string& stem) {
        std::string tmpl = parent + "/." + stem + ".XXXXXX";
        if (!::mkdtemp(tmpl.data()))
            return Error(ErrorDomain::Io, errno,
                         "cannot create a directory in " + parent + ": " + std::strerror(errno));
        return TempDir(tmpl);
    }
    TempDir(TempDir&& o) noexcept : m_path(std::move(o.m_path)) { o.m_path.clear(); }
    TempDir& operator=(TempDir&&) = delete;
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;
    ~TempDir() {
        if (m_path.empty()) return;
        std::error_code ec;
        fs::remove_all(m_path, ec);
    }
    const std::string& path() const { return m_path; }
    void keep() { m_path.clear(); }

private:
    explicit TempDir(std::string p) : m_path(std::move(p)) {}
    std::string m_path;
};

Status rename_path(const std::string& from, const std::string& to) {
    if (::rename(from.c_str(), to.c_str()) != 0)
        return Error(ErrorDomain::Io, errno, "cannot rename " + from + " to " + to + ": " + std::strerror(errno));
    return ok_status();
}

// The cRLDistributionPoints URIs (fullName uniformResourceIdentifier) of a certificate.
std::vector<std::string> crl_urls_of(X509* x) {
    std::vector<std::string> urls;
    auto* dps = static_cast<CRL_DIST_POINTS*>(X509_get_ext_d2i(x, NID_crl_distribution_points, nullptr, nullptr));
    if (!dps) return urls;
    for (int i = 0; i < sk_DIST_POINT_num(dps); ++i) {
        DIST_POINT* dp = sk_DIST_POINT_value(dps, i);
        if (!dp->distpoint || dp->distpoint->type != 0) continue;
        GENERAL_NAMES* names = dp->distpoint->name.fullname;
        for (int j = 0; j < sk_GENERAL_NAME_num(names); ++j) {
            GENERAL_NAME* g = sk_GENERAL_NAME_value(names, j);
            if (g->type != GEN_URI) continue;
            const ASN1_IA5STRING* s = g->d.uniformResourceIdentifier;
            urls.emplace_back(reinterpret_cast<const char*>(ASN1_STRING_get0_data(s)),
                              static_cast<size_t>(ASN1_STRING_length(s)));
        }
    }
    CRL_DIST_POINTS_free(dps);
    return urls;
}

struct OldRoot {
    X509Ptr cert;
    PkeyPtr key;
    bool intermediate = false;  // root.key exists: the root signs only the issuing CA
};

Result<OldRoot> load_old_root(const std::string& dir) {
    OldRoot o;
    X2SEC_TRY(o.cert, load_cert(dir + "/root.crt"));
    o.intermediate = fs::exists(dir + "/root.key");
    const std::string key_file = dir + (o.intermediate ? "/root.key" : "/ca.key");
    X2SEC_TRY(o.key, load_private_key(key_file));
    if (!key_matches(o.cert.get(), o.key.get()))
        return update_error(key_file + " is not the key of " + dir + "/root.crt");
    return o;
}

}  // namespace

Result<RootUpdate> make_root_update(X509* old_root, EVP_PKEY* old_key, EVP_PKEY* new_key,
                                    const std::string& new_subject, int64_t now, int64_t validity_days) {
    if (!old_root || !old_key || !new_key) return update_error("old root, old key and new key are required");
    if (!key_matches(old_root, old_key)) return update_error("the old key is not the old root's key");
    if (EVP_PKEY_eq(X509_get0_pubkey(old_root), new_key) == 1) return update_error("the new key is the old key");
    ERR_clear_error();
    NamePtr subject;
    if (!new_subject.empty()) {
        X2SEC_TRY(subject, parse_name(new_subject));
    } else {
        subject.reset(X509_NAME_dup(X509_get_subject_name(old_root)));
        if (!subject) return ossl_error(ErrorDomain::Pki, "copying the old root's name");
    }
    const int64_t nb = now - 60;
    if (not_after(old_root) <= nb) return update_error("the old root has expired; there is nothing to link to");
    RootUpdate u;
    IssueRequest r;
    r.profile = Profile::RootCa;
    r.subject = subject.get();
    r.public_key = new_key;
    r.not_before = nb;
    r.validity_days = validity_days;
    X2SEC_TRY(u.new_with_new, issue_certificate(r, nullptr, new_key));
    // The links live while both roots do: from now until the old root expires (RFC 4210 4.4).
    r.profile = Profile::RootLink;
    r.not_after = std::min(not_after(old_root), not_after(u.new_with_new.get()));
    X2SEC_TRY(u.new_with_old, issue_certificate(r, old_root, old_key));
    IssueRequest o = r;
    o.subject = X509_get_subject_name(old_root);
    o.public_key = X509_get0_pubkey(old_root);
    X2SEC_TRY(u.old_with_new, issue_certificate(o, u.new_with_new.get(), new_key));
    return u;
}

Status create_root_update(const std::string& ca_dir, const RootUpdateOptions& opt) {
    const std::string target = ca_dir + "/" + kRootUpdateDir;
    std::error_code ec;
    if (fs::exists(target, ec) || fs::is_symlink(target, ec))
        return update_error(target + " exists: a root key update is already prepared (archive or remove it first)");
    X2SEC_TRY(auto old, load_old_root(ca_dir));
    const int64_t now = clock_or(opt.now);
    // Everything that can fail for a reason other than I/O happens before anything is written.
    if (!opt.subject.empty()) X2SEC_TRY_STATUS(parse_name(opt.subject));
    X2SEC_TRY(auto new_key, generate_key(opt.alg, opt.key_token));
    X2SEC_TRY(auto u,
              make_root_update(old.cert.get(), old.key.get(), new_key.get(), opt.subject, now, opt.validity_days));
    X2SEC_TRY(auto tmp, TempDir::create(ca_dir, kRootUpdateDir));
    const std::string t = tmp.path() + "/";
    X2SEC_TRY_STATUS(save_private_key(t + kNewRootKeyFile, new_key.get()));
    X2SEC_TRY_STATUS(save_certs_pem(t + kNewWithNewFile, {u.new_with_new.get()}));
    X2SEC_TRY_STATUS(save_certs_pem(t + kNewWithOldFile, {u.new_with_old.get()}));
    X2SEC_TRY_STATUS(save_certs_pem(t + kOldWithNewFile, {u.old_with_new.get()}));
    X2SEC_TRY_STATUS(fsync_dir(tmp.path()));
    X2SEC_TRY_STATUS(rename_path(tmp.path(), target));
    tmp.keep();
    return fsync_dir(ca_dir);
}

Status activate_root_update(const std::string& ca_dir, int64_t now) {
    now = clock_or(now);
    const std::string up = ca_dir + "/" + kRootUpdateDir + "/";
    const std::string old_dir = ca_dir + "/" + kRootOldDir;
    std::error_code ec;
    if (!fs::exists(up + kNewWithNewFile, ec))
        return update_error("no root key update prepared in " + up + " (run `x2sec pki root-update` first)");
    if (fs::exists(old_dir, ec) || fs::is_symlink(old_dir, ec))
        return update_error(old_dir + " exists: an earlier update was activated (archive or remove it first)");
    X2SEC_TRY(auto old, load_old_root(ca_dir));
    X2SEC_TRY(auto nn, load_cert(up + kNewWithNewFile));
    X2SEC_TRY(auto no, load_cert(up + kNewWithOldFile));
    X2SEC_TRY(auto new_key, load_private_key(up + kNewRootKeyFile));
    if (X509_cmp(old.cert.get(), nn.get()) == 0) return update_error("the new root is already the CA's root");
    if (!key_matches(nn.get(), new_key.get()))
        return update_error(up + kNewRootKeyFile + " is not the key of " + up + kNewWithNewFile);
    bool linked = X509_verify(no.get(), X509_get0_pubkey(old.cert.get())) == 1 &&
                  EVP_PKEY_eq(X509_get0_pubkey(no.get()), X509_get0_pubkey(nn.get())) == 1;
    ERR_clear_error();
    if (!linked) return update_error(up + " was not prepared for this CA's root (newWithOld is not signed by it)");
    if (!old.intermediate)
        return update_error(
            "--activate needs a CA with an issuing CA under the root (init-operator-ca --intermediate): here the root "
            "key signs the end-entity certificates and CRLs itself (see docs/pki-cmp.md, Root CA key update)");

    X2SEC_TRY(auto ica, load_cert(ca_dir + "/ca.crt"));
    X2SEC_TRY(auto ra_certs, load_certs_pem(ca_dir + "/ra.crt"));
    // The issuing CA keeps its name and key (so everything it issued still chains), certified
    // by the new root.
    IssueRequest r;
    r.profile = Profile::IntermediateCa;
    r.subject = X509_get_subject_name(ica.get());
    r.public_key = X509_get0_pubkey(ica.get());
    r.not_before = now - 60;
    r.not_after = std::min(not_after(ica.get()), not_after(nn.get()));
    r.crl_urls = crl_urls_of(ica.get());
    if (*r.not_after <= *r.not_before) return update_error("the issuing CA certificate has expired");
    X2SEC_TRY(auto new_ica, issue_certificate(r, nn.get(), new_key.get()));
    std::vector<X509*> ra_chain{ra_certs.front().get(), new_ica.get(), nn.get()};

    // root-old/ first (a complete copy of what is replaced), then each file atomically.
    X2SEC_TRY(auto keep, TempDir::create(ca_dir, kRootOldDir));
    const std::string k = keep.path() + "/";
    for (const char* f : {"root.crt", "root.key", "ca.crt", "chain.pem", "ra.crt"}) {
        fs::copy_file(ca_dir + "/" + f, k + f, ec);
        if (ec) return Error(ErrorDomain::Io, 0, "cannot copy " + ca_dir + "/" + f + ": " + ec.message());
    }
    fs::permissions(k + "root.key", fs::perms::owner_read | fs::perms::owner_write, ec);
    if (ec) return Error(ErrorDomain::Io, 0, "cannot restrict " + k + "root.key: " + ec.message());
    X2SEC_TRY_STATUS(fsync_dir(keep.path()));
    X2SEC_TRY_STATUS(rename_path(keep.path(), old_dir));
    keep.keep();
    X2SEC_TRY_STATUS(fsync_dir(ca_dir));
    X2SEC_TRY_STATUS(save_certs_pem(ca_dir + "/chain.pem", {new_ica.get(), nn.get()}));
    X2SEC_TRY_STATUS(save_certs_pem(ca_dir + "/ca.crt", {new_ica.get()}));
    X2SEC_TRY_STATUS(save_certs_pem(ca_dir + "/ra.crt", ra_chain));
    X2SEC_TRY_STATUS(save_private_key(ca_dir + "/root.key", new_key.get()));
    return save_certs_pem(ca_dir + "/root.crt", {nn.get()});
}

}  // namespace x2sec::pki
