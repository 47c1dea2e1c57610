#include <atomic>
#include <ctime>
#include <memory>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <stdexcept>
#include <x2sec/test/test_pki.hpp>

namespace x2sec::test {

namespace {

[[noreturn]] void die(const std::string& what) {
    throw std::runtime_error("test PKI: " + what + ": " + crypto::openssl_errors());
}

int64_t now() {
    return static_cast<int64_t>(std::time(nullptr));
}

X509_NAME* parse_name(const std::string& subject) {
    X509_NAME* n = X509_NAME_new();
    if (n == nullptr) die("X509_NAME_new");
    std::string s = subject;
    if (s.find('=') == std::string::npos) s = "CN=" + s;
    size_t pos = 0;
    while (pos <= s.size()) {
        size_t comma = s.find(',', pos);
        if (comma == std::string::npos) comma = s.size();
        std::string part = s.substr(pos, comma - pos);
        while (!part.empty() && part.front() == ' ') part.erase(part.begin());
        const size_t eq = part.find('=');
        if (eq == std::string::npos) die("bad subject component '" + part + "'");
        const std::string field = part.substr(0, eq);
        const std::string value = part.substr(eq + 1);
        if (X509_NAME_add_entry_by_txt(n, field.c_str(), MBSTRING_UTF8,
                                       reinterpret_cast<const unsigned char*>(value.c_str()), -1, -1, 0) != 1) {
            X509_NAME_free(n);
            die("subject field '" + field + "'");
        }
        pos = comma + 1;
    }
    return n;
}

std::string san_config(const std::vector<std::string>& sans) {
    std::string out;
    for (const auto& s : sans) {
        std::string item;
        if (s.rfind("DNS:", 0) == 0 || s.rfind("IP:", 0) == 0 || s.rfind("email:", 0) == 0 || s.rfind("URI:", 0) == 0)
            item = s;
        else if (IpAddress::parse(s))
            item = "IP:" + s;
        else if (s.find('@') != std::string::npos)
            item = "email:" + s;
        else
            item = "DNS:" + s;
        out += (out.empty() ? "" : ",") + item;
    }
    return out;
}

void add_ext(X509* x, X509V3_CTX* ctx, int nid, const std::string& value) {
    X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, ctx, nid, value.c_str());
    if (ext == nullptr) die(std::string("extension ") + OBJ_nid2sn(nid) + " = " + value);
    X509_add_ext(x, ext, -1);
    X509_EXTENSION_free(ext);
}

const EVP_MD* md_for(const EVP_PKEY* signer) {
    if (EVP_PKEY_get_base_id(signer) == EVP_PKEY_ED25519) return nullptr;
    if (EVP_PKEY_get_base_id(signer) == EVP_PKEY_EC && EVP_PKEY_get_bits(signer) > 256) return EVP_sha384();
    return EVP_sha256();
}

uint64_t next_serial() {
    static std::atomic<uint64_t> counter{0};
    static const uint64_t base = [] {
        uint64_t b = 0;
        RAND_bytes(reinterpret_cast<unsigned char*>(&b), sizeof(b));
        return (b & 0x00ffffffffff0000ULL) | 0x0100000000000000ULL;
    }();
    return base + (++counter);
}

// issuer == nullptr: self-signed with the subject key.
Issued build(const x509::Certificate* issuer, const crypto::PrivateKey* issuer_key, const CertOptions& o) {
    crypto::PrivateKey key = crypto::PrivateKey::adopt(nullptr);
    EVP_PKEY* subject_pub = nullptr;
    if (o.subject_key != nullptr) {
        subject_pub = const_cast<EVP_PKEY*>(o.subject_key);
    } else {
        auto k = crypto::PrivateKey::generate(o.key_type);
        if (!k.ok()) throw std::runtime_error("test PKI: " + k.error().detail());
        key = std::move(k).value();
        subject_pub = key.get();
    }
    const EVP_PKEY* signer = issuer_key != nullptr ? issuer_key->get() : key.get();
    if (signer == nullptr) throw std::runtime_error("test PKI: self-signed certificate needs its own key");

    X509* raw = X509_new();
    if (raw == nullptr) die("X509_new");
    x509::Certificate cert = x509::Certificate::adopt(raw);
    X509_set_version(raw, X509_VERSION_3);
    ASN1_INTEGER_set_uint64(X509_get_serialNumber(raw), o.serial ? *o.serial : next_serial());
    X509_NAME* subj = parse_name(o.subject);
    X509_set_subject_name(raw, subj);
    X509_set_issuer_name(raw, issuer != nullptr ? X509_get_subject_name(issuer->get()) : subj);
    X509_NAME_free(subj);
    const int64_t nb = o.not_before != 0 ? o.not_before : now() - 3600;
    const int64_t na = o.not_after != 0 ? o.not_after : now() + 365 * 86400;
    if (ASN1_TIME_set(X509_getm_notBefore(raw), static_cast<time_t>(nb)) == nullptr ||
        ASN1_TIME_set(X509_getm_notAfter(raw), static_cast<time_t>(na)) == nullptr)
        die("validity");
    if (X509_set_pubkey(raw, subject_pub) != 1) die("X509_set_pubkey");

    X509V3_CTX ctx;
    X509V3_set_ctx_nodb(&ctx);
    X509V3_set_ctx(&ctx, issuer != nullptr ? issuer->get() : raw, raw, nullptr, nullptr, 0);
    if (o.is_ca) {
        std::string bc = "critical,CA:TRUE";
        if (o.path_len) bc += ",pathlen:" + std::to_string(*o.path_len);
        add_ext(raw, &ctx, NID_basic_constraints, bc);
    } else {
        add_ext(raw, &ctx, NID_basic_constraints, "critical,CA:FALSE");
    }
    if (o.key_usage != "none")
        add_ext(raw, &ctx, NID_key_usage,
                !o.key_usage.empty() ? o.key_usage
                                     : (o.is_ca ? "critical,keyCertSign,cRLSign" : "critical,digitalSignature"));
    if (!o.extended_key_usage.empty()) add_ext(raw, &ctx, NID_ext_key_usage, o.extended_key_usage);
    add_ext(raw, &ctx, NID_subject_key_identifier, "hash");
    if (issuer != nullptr) add_ext(raw, &ctx, NID_authority_key_identifier, "keyid:always");
    if (!o.sans.empty()) add_ext(raw, &ctx, NID_subject_alt_name, san_config(o.sans));
    if (!o.crl_urls.empty()) {
        std::string v;
        for (const auto& u : o.crl_urls) v += (v.empty() ? "URI:" : ",URI:") + u;
        add_ext(raw, &ctx, NID_crl_distribution_points, v);
    }
    if (!o.ocsp_urls.empty()) {
        std::string v;
        for (const auto& u : o.ocsp_urls) v += (v.empty() ? "OCSP;URI:" : ",OCSP;URI:") + u;
        add_ext(raw, &ctx, NID_info_access, v);
    }
    if (X509_sign(raw, const_cast<EVP_PKEY*>(signer), md_for(signer)) <= 0) die("X509_sign");
    return Issued{std::move(cert), std::move(key)};
}

}  // namespace

Issued make_self_signed(const CertOptions& opts) {
    return build(nullptr, nullptr, opts);
}

Issued make_root(const std::string& name, crypto::KeyType type, int64_t not_before, int64_t not_after) {
    CertOptions o;
    o.subject = name;
    o.key_type = type;
    o.not_before = not_before;
    o.not_after = not_after;
    o.is_ca = true;
    return build(nullptr, nullptr, o);
}

Issued make_cert(const x509::Certificate& issuer, const crypto::PrivateKey& issuer_key, const CertOptions& opts) {
    return build(&issuer, &issuer_key, opts);
}

Issued make_cert(const Issued& issuer, const CertOptions& opts) {
    return build(&issuer.cert, &issuer.key, opts);
}

Issued make_cert(const x509::Certificate& issuer, const crypto::PrivateKey& issuer_key, const std::string& subject,
                 const std::vector<std::string>& sans, crypto::KeyType type, int64_t not_before, int64_t not_after,
                 bool is_ca) {
    CertOptions o;
    o.subject = subject;
    o.sans = sans;
    o.key_type = type;
    o.not_before = not_before;
    o.not_after = not_after;
    o.is_ca = is_ca;
    return build(&issuer, &issuer_key, o);
}

Issued make_cert(const Issued& issuer, const std::string& subject, const std::vector<std::string>& sans,
                 crypto::KeyType type, int64_t not_before, int64_t not_after, bool is_ca) {
    return make_cert(issuer.cert, issuer.key, subject, sans, type, not_before, not_after, is_ca);
}

x509::Crl make_crl(const Issued& issuer, const std::vector<x509::Certificate>& revoked, int64_t this_update,
                   int64_t next_update) {
    X509_CRL* raw = X509_CRL_new();
    if (raw == nullptr) die("X509_CRL_new");
    x509::Crl crl = x509::Crl::adopt(raw);
    const int64_t tu = this_update != 0 ? this_update : now();
    const int64_t nu = next_update != 0 ? next_update : tu + 7 * 86400;
    X509_CRL_set_version(raw, 1);  // v2
    X509_CRL_set_issuer_name(raw, X509_get_subject_name(issuer.cert.get()));
    std::unique_ptr<ASN1_TIME, decltype(&ASN1_TIME_free)> t1(ASN1_TIME_set(nullptr, static_cast<time_t>(tu)),
                                                             ASN1_TIME_free);
    std::unique_ptr<ASN1_TIME, decltype(&ASN1_TIME_free)> t2(ASN1_TIME_set(nullptr, static_cast<time_t>(nu)),
                                                             ASN1_TIME_free);
    if (!t1 || !t2 || X509_CRL_set1_lastUpdate(raw, t1.get()) != 1 || X509_CRL_set1_nextUpdate(raw, t2.get()) != 1)
        die("CRL times");
    for (const auto& c : revoked) {
        X509_REVOKED* r = X509_REVOKED_new();
        if (r == nullptr) die("X509_REVOKED_new");
        X509_REVOKED_set_serialNumber(r, const_cast<ASN1_INTEGER*>(X509_get0_serialNumber(c.get())));
        X509_REVOKED_set_revocationDate(r, t1.get());
        X509_CRL_add0_revoked(raw, r);
    }
    X509V3_CTX ctx;
    X509V3_set_ctx_nodb(&ctx);
    X509V3_set_ctx(&ctx, issuer.cert.get(), nullptr, nullptr, raw, 0);
    X509_EXTENSION* aki = X509V3_EXT_conf_nid(nullptr, &ctx, NID_authority_key_identifier, "keyid:always");
    if (aki == nullptr) die("CRL authorityKeyIdentifier");
    X509_CRL_add_ext(raw, aki, -1);
    X509_EXTENSION_free(aki);
    ASN1_INTEGER* number = ASN1_INTEGER_new();
    ASN1_INTEGER_set(number, 1);
    X509_CRL_add1_ext_i2d(raw, NID_crl_number, number, 0, 0);
    ASN1_INTEGER_free(number);
    X509_CRL_sort(raw);
    if (X509_CRL_sign(raw, issuer.key.get(), md_for(issuer.key.get())) <= 0) die("X509_CRL_sign");
    return crl;
}

Bytes name_der(const std::string& subject) {
    X509_NAME* n = parse_name(subject);
    unsigned char* der = nullptr;
    const int len = i2d_X509_NAME(n, &der);
    X509_NAME_free(n);
    if (len <= 0) die("i2d_X509_NAME");
    Bytes out(der, der + len);
    OPENSSL_free(der);
    return out;
}

}  // namespace x2sec::test
