// Credentials of `x2sec ike load`: identities, derived PSKs, the certificate directory.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
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

// Issues a key and certificate into base.pem / base.key (key first, so a certificate on disk
// always has its key).
Status issue_pair(const std::string& base, const std::string& dns, pki::Profile profile, X509* ca_cert,
                  EVP_PKEY* ca_key) {
    X2SEC_TRY(auto key, pki::generate_key(pki::KeyAlg::EcP256));
    X2SEC_TRY(auto cert, issue(dns, dns, profile, key.get(), ca_cert, ca_key));
    X2SEC_TRY_STATUS(pki::save_private_key(base + ".key", key.get()));
    return pki::save_certs_pem(base + ".pem", {cert.get()});
}

Result<x509::Certificate> to_x509(X509* x) {
    return x509::Certificate::from_der(pki::cert_der(x));
}

Result<std::shared_ptr<crypto::PrivateKey>> load_key(const std::string& path) {
    X2SEC_TRY(auto pk, pki::load_private_key(path));
    X2SEC_TRY(auto pem, pki::private_key_pem(pk.get()));
    X2SEC_TRY(auto key, crypto::PrivateKey::from_pem(pem));
    return std::make_shared<crypto::PrivateKey>(std::move(key));
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
    pki::X509Ptr ca_cert;
    if (!fs::exists(ca_pem)) {
        X2SEC_TRY(auto k, pki::generate_key(pki::KeyAlg::EcP256));
        X2SEC_TRY(auto c, issue("x2sec load CA", "", pki::Profile::RootCa, k.get(), nullptr, k.get()));
        X2SEC_TRY_STATUS(pki::save_private_key(ca_key_path, k.get()));
        X2SEC_TRY_STATUS(pki::save_certs_pem(ca_pem, {c.get()}));
        ca_key = std::move(k);
        ca_cert = std::move(c);
    } else {
        X2SEC_TRY(auto c, pki::load_cert(ca_pem));
        ca_cert = std::move(c);
    }
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
    X2SEC_TRY(auto anchor, to_x509(ca_cert.get()));
    c.trust->add_anchor(anchor, "load-ca");
    const std::string rbase = (dir / "responder").string();
    if (!fs::exists(rbase + ".pem")) {
        X2SEC_TRY_STATUS(need_ca_key());
        X2SEC_TRY_STATUS(issue_pair(rbase, responder_id, pki::Profile::Server, ca_cert.get(), ca_key.get()));
    } else {
        X2SEC_TRY(auto rc, pki::load_cert(rbase + ".pem"));
        auto sans = pki::san_dns(rc.get());
        if (std::find(sans.begin(), sans.end(), responder_id) == sans.end())
            return Error(rbase + ".pem: not a certificate for the responder identity " + responder_id);
    }
    c.initiators.reserve(count);
    for (size_t i = 0; i < count; ++i) {
        const std::string id = initiator_identity(i, realm);
        const std::string base = (dir / "initiators" / std::to_string(i)).string();
        if (!fs::exists(base + ".pem") || !fs::exists(base + ".key")) {
            X2SEC_TRY_STATUS(need_ca_key());
            X2SEC_TRY_STATUS(issue_pair(base, id, pki::Profile::BaseStation, ca_cert.get(), ca_key.get()));
        }
        X2SEC_TRY(auto x, pki::load_cert(base + ".pem"));
        auto sans = pki::san_dns(x.get());
        if (std::find(sans.begin(), sans.end(), id) == sans.end())
            return Error(base + ".pem: expected a certificate for " + id + " (realm or numbering differs)");
        X2SEC_TRY(auto cert, to_x509(x.get()));
        X2SEC_TRY(auto key, load_key(base + ".key"));
        c.initiators.push_back({id, std::move(key), std::move(cert)});
    }
    return c;
}

}  // namespace x2sec::loadgen
