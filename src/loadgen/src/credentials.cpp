// Credentials of `x2sec ike load`: identities, derived PSKs, the certificate directory.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <optional>
#include <openssl/pem.h>
#include <x2sec/common/file.hpp>
#include <x2sec/loadgen/ike_load.hpp>
#include <x2sec/pki/pki.hpp>

namespace x2sec::loadgen {

namespace fs = std::filesystem;

std::string initiator_identity(size_t i, const std::string& realm) {
    return "n" + std::to_string(i) + "." + realm;
}

SecureBytes derive_psk(BytesView base_secret, const std::string& identity) {
    return crypto::hmac(crypto::Hash::Sha256, base_secret,
                        BytesView(reinterpret_cast<const uint8_t*>(identity.data()), identity.size()));
}

Status write_private_file(const std::string& path, const std::string& text) {
    std::string tmp = path + ".tmp." + std::to_string(::getpid());
    int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) return Error(tmp + ": " + std::strerror(errno));
    size_t off = 0;
    while (off < text.size()) {
        ssize_t n = ::write(fd, text.data() + off, text.size() - off);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            int e = errno;
            ::close(fd);
            ::unlink(tmp.c_str());
            return Error(tmp + ": write: " + std::strerror(e));
        }
        off += static_cast<size_t>(n);
    }
    if (::fsync(fd) != 0 || ::close(fd) != 0) {
        ::unlink(tmp.c_str());
        return Error(tmp + ": " + std::strerror(errno));
    }
    if (::rename(tmp.c_str(), path.c_str()) != 0) {
        int e = errno;
        ::unlink(tmp.c_str());
        return Error(path + ": rename: " + std::strerror(e));
    }
    return {};
}

namespace {

Result<pki::X509Ptr> issue(const std::string& cn, const std::string& dns, pki::Profile profile, EVP_PKEY* key,
                           X509* ca_cert, EVP_PKEY* ca_key) {
    X2SEC_TRY(auto name, pki::parse_name("/O=x2sec load/CN=" + cn));
    pki::IssueRequest r;
    r.profile = profile;
    r.subject = name.get();
    r.public_key = key;
    if (!dns.empty()) r.dns = {dns};
    r.validity_days = profile == pki::Profile::RootCa ? 3650 : 825;
    return pki::issue_certificate(r, ca_cert, ca_key);
}

// A private key and its certificate, as the engine uses them.
struct Pair {
    std::shared_ptr<crypto::PrivateKey> key;
    x509::Certificate cert;
};

// Issues a key and certificate into base.pem / base.key (key first, so a certificate on disk
// always has its key) and keeps both: nothing is read back.
Result<Pair> issue_pair(const std::string& base, const std::string& dns, pki::Profile profile, X509* ca_cert,
                        EVP_PKEY* ca_key) {
    X2SEC_TRY(auto key, pki::generate_key(pki::KeyAlg::EcP256));
    X2SEC_TRY(auto cert, issue(dns, dns, profile, key.get(), ca_cert, ca_key));
    X2SEC_TRY_STATUS(pki::save_private_key(base + ".key", key.get()));
    X2SEC_TRY_STATUS(pki::save_certs_pem(base + ".pem", {cert.get()}));
    return Pair{std::make_shared<crypto::PrivateKey>(crypto::PrivateKey::adopt(key.release())),
                x509::Certificate::adopt(cert.release())};
}

// The first certificate of a PEM file, parsed once: the PEM block is only base64-decoded here,
// and Certificate::from_der parses the DER (its fast path for EC keys).
Result<x509::Certificate> load_certificate(const std::string& path) {
    X2SEC_TRY(auto pem, read_file(path, 1 << 20));
    pki::BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
    if (!bio) return Error(path + ": out of memory");
    unsigned char* der = nullptr;
    long len = 0;
    if (PEM_bytes_read_bio(&der, &len, nullptr, PEM_STRING_X509, bio.get(), nullptr, nullptr) != 1) {
        ERR_clear_error();
        return Error(path + ": no PEM certificate");
    }
    auto cert = x509::Certificate::from_der(BytesView(der, static_cast<size_t>(len)));
    OPENSSL_free(der);
    if (!cert) return Error(cert.error()).context(path);
    return cert;
}

bool has_dns_name(const x509::Certificate& c, const std::string& name) {
    auto sans = c.san_dns();
    return std::find(sans.begin(), sans.end(), name) != sans.end();
}

}  // namespace

Result<Credentials> prepare_certs(const std::string& dir_in, size_t count, const std::string& realm,
                                  const std::string& responder_id) {
    std::error_code ec;
    fs::path dir = fs::absolute(dir_in, ec);
    if (ec) return Error(dir_in + ": " + ec.message());
    fs::create_directories(dir / "initiators", ec);
    if (ec) return Error((dir / "initiators").string() + ": " + ec.message());
    const std::string ca_pem = (dir / "ca.pem").string(), ca_key_path = (dir / "ca.key").string();
    pki::PkeyPtr ca_key;
    std::optional<x509::Certificate> ca;
    if (!fs::exists(ca_pem)) {
        X2SEC_TRY(auto k, pki::generate_key(pki::KeyAlg::EcP256));
        X2SEC_TRY(auto c, issue("x2sec load CA", "", pki::Profile::RootCa, k.get(), nullptr, k.get()));
        X2SEC_TRY_STATUS(pki::save_private_key(ca_key_path, k.get()));
        X2SEC_TRY_STATUS(pki::save_certs_pem(ca_pem, {c.get()}));
        ca_key = std::move(k);
        ca = x509::Certificate::adopt(c.release());
    } else {
        X2SEC_TRY(auto c, load_certificate(ca_pem));
        ca = std::move(c);
    }
    X509* const ca_cert = ca->get();  // the issuer of whatever is missing (shared with the trust anchor)
    // The CA key is read only when something is missing.
    auto need_ca_key = [&]() -> Status {
        if (ca_key) return {};
        if (!fs::exists(ca_key_path))
            return Error(ca_key_path + ": missing, and certificates must be issued (" + dir.string() +
                         " is incomplete)");
        X2SEC_TRY(auto k, pki::load_private_key(ca_key_path));
        ca_key = std::move(k);
        return {};
    };
    Credentials c;
    c.dir = dir.string();
    c.responder_id = responder_id;
    c.trust = std::make_shared<x509::TrustStore>();
    c.trust->add_anchor(*ca, "load-ca");
    const std::string rbase = (dir / "responder").string();
    if (!fs::exists(rbase + ".pem")) {
        X2SEC_TRY_STATUS(need_ca_key());
        X2SEC_TRY_STATUS(issue_pair(rbase, responder_id, pki::Profile::Server, ca_cert, ca_key.get()));
    } else {
        X2SEC_TRY(auto rc, load_certificate(rbase + ".pem"));
        if (!has_dns_name(rc, responder_id))
            return Error(rbase + ".pem: not a certificate for the responder identity " + responder_id);
    }
    c.initiators.reserve(count);
    for (size_t i = 0; i < count; ++i) {
        const std::string id = initiator_identity(i, realm);
        const std::string base = (dir / "initiators" / std::to_string(i)).string();
        if (!fs::exists(base + ".pem") || !fs::exists(base + ".key")) {
            X2SEC_TRY_STATUS(need_ca_key());
            X2SEC_TRY(auto issued, issue_pair(base, id, pki::Profile::BaseStation, ca_cert, ca_key.get()));
            c.initiators.push_back({id, std::move(issued.key), std::move(issued.cert)});
            continue;
        }
        X2SEC_TRY(auto cert, load_certificate(base + ".pem"));
        if (!has_dns_name(cert, id))
            return Error(base + ".pem: expected a certificate for " + id + " (realm or numbering differs)");
        X2SEC_TRY(auto key, crypto::PrivateKey::load(base + ".key"));
        // 0 or -1: another key or key type (-2: cannot be compared, e.g. a key in a token).
        if (const int same = EVP_PKEY_eq(cert.public_key(), key.get()); same == 0 || same == -1)
            return Error(base + ".key: not the key of " + base + ".pem");
        c.initiators.push_back({id, std::make_shared<crypto::PrivateKey>(std::move(key)), std::move(cert)});
    }
    return c;
}

}  // namespace x2sec::loadgen
