#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

#include <cstdio>
#include <x2sec/scenario/lab_pki.hpp>

namespace x2sec::scenario {

namespace {

Error ossl(const std::string& what) {
    return Error(ErrorDomain::Pki, 0, "lab PKI: " + what);
}

EVP_PKEY* new_p256() {
    return EVP_EC_gen("P-256");
}

std::string to_pem(X509* x) {
    BIO* b = BIO_new(BIO_s_mem());
    PEM_write_bio_X509(b, x);
    char* p = nullptr;
    long n = BIO_get_mem_data(b, &p);
    std::string s(p, size_t(n));
    BIO_free(b);
    return s;
}

SecureBytes key_pem(EVP_PKEY* k) {
    BIO* b = BIO_new(BIO_s_secmem());
    PEM_write_bio_PrivateKey(b, k, nullptr, nullptr, 0, nullptr, nullptr);
    char* p = nullptr;
    long n = BIO_get_mem_data(b, &p);
    SecureBytes s(BytesView(reinterpret_cast<const uint8_t*>(p), size_t(n)));
    BIO_free(b);  // secure memory BIO: cleansed on free
    return s;
}

bool add_ext(X509* cert, X509* issuer, int nid, const std::string& value) {
    X509V3_CTX ctx;
    X509V3_set_ctx_nodb(&ctx);
    X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
    X509_EXTENSION* ex = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value.c_str());
    if (!ex) return false;
    bool ok = X509_add_ext(cert, ex, -1) == 1;
    X509_EXTENSION_free(ex);
    return ok;
}

X509* new_cert(EVP_PKEY* subject_key, const std::string& cn, const std::string& org, int64_t nb, int days) {
    X509* x = X509_new();
    X509_set_version(x, 2);
    uint8_t serial[16];
    RAND_bytes(serial, sizeof serial);
    serial[0] &= 0x7f;
    BIGNUM* bn = BN_bin2bn(serial, sizeof serial, nullptr);
    BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x));
    BN_free(bn);
    ASN1_TIME_set(X509_getm_notBefore(x), time_t(nb));
    ASN1_TIME_set(X509_getm_notAfter(x), time_t(nb + int64_t(days) * 86400));
    X509_set_pubkey(x, subject_key);
    X509_NAME* n = X509_get_subject_name(x);
    if (!org.empty())
        X509_NAME_add_entry_by_txt(n, "O", MBSTRING_UTF8, reinterpret_cast<const unsigned char*>(org.c_str()), -1, -1,
                                   0);
    X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_UTF8, reinterpret_cast<const unsigned char*>(cn.c_str()), -1, -1, 0);
    return x;
}

}  // namespace

struct LabCa::Impl {
    EVP_PKEY* key = nullptr;
    X509* root = nullptr;
    ~Impl() {
        EVP_PKEY_free(key);
        X509_free(root);
    }
};

LabCa::LabCa() : m_impl(std::make_unique<Impl>()) {}
LabCa::LabCa(LabCa&&) noexcept = default;
LabCa& LabCa::operator=(LabCa&&) noexcept = default;
LabCa::~LabCa() = default;
X509* LabCa::cert() const {
    return m_impl->root;
}
EVP_PKEY* LabCa::key() const {
    return m_impl->key;
}

Result<LabCa> LabCa::create(const std::string& cn, const std::string& org, int64_t nb, int days) {
    LabCa ca;
    ca.m_cn = cn;
    ca.m_impl->key = new_p256();
    if (!ca.m_impl->key) return ossl("key generation failed");
    X509* x = new_cert(ca.m_impl->key, cn, org, nb, days);
    X509_set_issuer_name(x, X509_get_subject_name(x));
    bool ok = add_ext(x, x, NID_basic_constraints, "critical,CA:TRUE") &&
              add_ext(x, x, NID_key_usage, "critical,keyCertSign,cRLSign") &&
              add_ext(x, x, NID_subject_key_identifier, "hash") && X509_sign(x, ca.m_impl->key, EVP_sha256()) > 0;
    ca.m_impl->root = x;
    if (!ok) return ossl("signing root " + cn);
    ca.m_root_pem = to_pem(x);
    return ca;
}

Result<LabCredential> LabCa::issue(const std::string& fqdn, int64_t nb, int days, bool server_auth) {
    EVP_PKEY* k = new_p256();
    if (!k) return ossl("key generation failed");
    auto c = issue_for_key(fqdn, k, key_pem(k), nb, days, server_auth);
    EVP_PKEY_free(k);
    return c;
}

Result<LabCredential> LabCa::issue_for_key(const std::string& fqdn, EVP_PKEY* key, SecureBytes key_ref,
                                           int64_t not_before_unix, int days, bool server_auth) {
    X509* x = new_cert(key, fqdn, "", not_before_unix, days);
    X509_set_issuer_name(x, X509_get_subject_name(m_impl->root));
    bool ok = add_ext(x, m_impl->root, NID_basic_constraints, "critical,CA:FALSE") &&
              add_ext(x, m_impl->root, NID_key_usage, "critical,digitalSignature") &&
              add_ext(x, m_impl->root, NID_ext_key_usage, server_auth ? "serverAuth,clientAuth" : "clientAuth") &&
              add_ext(x, m_impl->root, NID_subject_key_identifier, "hash") &&
              add_ext(x, m_impl->root, NID_authority_key_identifier, "keyid:always") &&
              add_ext(x, m_impl->root, NID_subject_alt_name, "DNS:" + fqdn) &&
              X509_sign(x, m_impl->key, EVP_sha256()) > 0;
    LabCredential c;
    if (ok) {
        c.cert_pem = to_pem(x);
        c.chain_pem = c.cert_pem;
        c.key_pem = std::move(key_ref);
        c.identity = fqdn;
    }
    X509_free(x);
    if (!ok) return ossl("issuing " + fqdn);
    return c;
}

std::string eui48_fqdn(uint64_t eui48, const std::string& realm) {
    char buf[16];
    std::snprintf(buf, sizeof buf, "%012llx", static_cast<unsigned long long>(eui48 & 0xffffffffffffULL));
    return std::string(buf) + "." + realm;
}

}  // namespace x2sec::scenario
