#include <arpa/inet.h>
#include <openssl/asn1t.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>
#include <cctype>
#include <ctime>
#include <x2sec/common/file.hpp>
#include <x2sec/pki/pki.hpp>

// RFC 5280 SubjectPublicKeyInfo with the key left as its BIT STRING (X509_PUBKEY's template
// decodes the key through the provider decoders, which is what set_spki avoids); its ASN.1
// item is defined at the end of this file.
extern "C" {
typedef struct {
    X509_ALGOR* algorithm;
    ASN1_BIT_STRING* subject_public_key;
} X2S_PKI_SPKI;
}
DECLARE_ASN1_ITEM(X2S_PKI_SPKI)

namespace x2sec::pki {
namespace {

// The certificate's SubjectPublicKeyInfo set from DER without decoding the key (the encoding is
// copied field for field: algorithm, parameters, key bits).
Status set_spki(X509* cert, BytesView der) {
    const unsigned char* p = der.data();
    auto* spki = reinterpret_cast<X2S_PKI_SPKI*>(
        ASN1_item_d2i(nullptr, &p, static_cast<long>(der.size()), ASN1_ITEM_rptr(X2S_PKI_SPKI)));
    struct Free {
        X2S_PKI_SPKI* s;
        ~Free() { ASN1_item_free(reinterpret_cast<ASN1_VALUE*>(s), ASN1_ITEM_rptr(X2S_PKI_SPKI)); }
    } guard{spki};
    if (!spki || p != der.data() + der.size() || (spki->subject_public_key->flags & 0x07) != 0) {
        ERR_clear_error();
        return Error(ErrorDomain::Pki, 0, "public key: not a DER SubjectPublicKeyInfo");
    }
    const ASN1_OBJECT* oid = nullptr;
    int ptype = V_ASN1_UNDEF;
    const void* pval = nullptr;
    X509_ALGOR_get0(&oid, &ptype, &pval, spki->algorithm);
    void* param = nullptr;
    if (ptype == V_ASN1_OBJECT)
        param = OBJ_dup(static_cast<const ASN1_OBJECT*>(pval));
    else if (ptype != V_ASN1_UNDEF && ptype != V_ASN1_NULL && pval)
        param = ASN1_STRING_dup(static_cast<const ASN1_STRING*>(pval));
    ASN1_OBJECT* alg = OBJ_dup(oid);
    int n = ASN1_STRING_length(spki->subject_public_key);
    auto* bits = static_cast<unsigned char*>(
        OPENSSL_memdup(ASN1_STRING_get0_data(spki->subject_public_key), static_cast<size_t>(n > 0 ? n : 1)));
    bool need_param = ptype != V_ASN1_UNDEF && ptype != V_ASN1_NULL;
    if (!alg || !bits || (need_param && !param) ||
        !X509_PUBKEY_set0_param(X509_get_X509_PUBKEY(cert), alg, ptype, param, bits, n)) {
        ASN1_OBJECT_free(alg);
        OPENSSL_free(bits);
        if (ptype == V_ASN1_OBJECT)
            ASN1_OBJECT_free(static_cast<ASN1_OBJECT*>(param));
        else
            ASN1_STRING_free(static_cast<ASN1_STRING*>(param));
        return ossl_error(ErrorDomain::Pki, "setting public key");
    }
    return ok_status();
}

}  // namespace

const char* profile_name(Profile p) {
    switch (p) {
        case Profile::RootCa:
            return "root-ca";
        case Profile::IntermediateCa:
            return "intermediate-ca";
        case Profile::Device:
            return "device";
        case Profile::BaseStation:
            return "base-station";
        case Profile::Server:
            return "server";
        case Profile::OcspSigner:
            return "ocsp-signer";
        case Profile::RootLink:
            return "root-link";
    }
    return "?";
}

Bytes random_serial() {
    Bytes s(16);
    do {
        if (RAND_bytes(s.data(), static_cast<int>(s.size())) != 1) std::abort();
        s[0] &= 0x7f;
    } while (s[0] == 0);  // keep exactly 16 octets in DER, positive
    return s;
}

namespace {

const EVP_MD* digest_for(EVP_PKEY* key) {
    if (EVP_PKEY_is_a(key, "EC") && EVP_PKEY_get_bits(key) > 256) return EVP_sha384();
    return EVP_sha256();
}

Status add_ext(X509* cert, X509* issuer, int nid, const std::string& value) {
    X509V3_CTX ctx;
    X509V3_set_ctx_nodb(&ctx);
    X509V3_set_ctx(&ctx, issuer ? issuer : cert, cert, nullptr, nullptr, 0);
    X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value.c_str());
    if (!ext) return ossl_error(ErrorDomain::Pki, std::string("building extension ") + OBJ_nid2sn(nid) + "=" + value);
    int ok = X509_add_ext(cert, ext, -1);
    X509_EXTENSION_free(ext);
    if (!ok) return ossl_error(ErrorDomain::Pki, "adding extension");
    return ok_status();
}

// subjectAltName built as GENERAL_NAMES (no configuration-string parsing, so a value can
// never be read as another name or option).
Status add_san(X509* cert, const IssueRequest& req) {
    GENERAL_NAMES* names = sk_GENERAL_NAME_new_null();
    struct Guard {
        GENERAL_NAMES* n;
        ~Guard() { GENERAL_NAMES_free(n); }
    } guard{names};
    auto push_ia5 = [&](int type, const std::string& v) {
        ASN1_IA5STRING* s = ASN1_IA5STRING_new();
        GENERAL_NAME* g = GENERAL_NAME_new();
        if (!s || !g || !ASN1_STRING_set(s, v.data(), static_cast<int>(v.size()))) {
            ASN1_IA5STRING_free(s);
            GENERAL_NAME_free(g);
            return false;
        }
        GENERAL_NAME_set0_value(g, type, s);
        if (!sk_GENERAL_NAME_push(names, g)) {
            GENERAL_NAME_free(g);
            return false;
        }
        return true;
    };
    for (auto& d : req.dns)
        if (!push_ia5(GEN_DNS, d)) return ossl_error(ErrorDomain::Pki, "building dNSName");
    for (auto& ip : req.ips) {
        ASN1_OCTET_STRING* a = a2i_IPADDRESS(ip.c_str());
        if (!a) return Error(ErrorDomain::Pki, 0, "invalid iPAddress '" + ip + "'");
        GENERAL_NAME* g = GENERAL_NAME_new();
        if (!g) {
            ASN1_OCTET_STRING_free(a);
            return ossl_error(ErrorDomain::Pki, "building iPAddress");
        }
        GENERAL_NAME_set0_value(g, GEN_IPADD, a);
        if (!sk_GENERAL_NAME_push(names, g)) {
            GENERAL_NAME_free(g);
            return ossl_error(ErrorDomain::Pki, "building iPAddress");
        }
    }
    for (auto& u : req.uris)
        if (!push_ia5(GEN_URI, u)) return ossl_error(ErrorDomain::Pki, "building uniformResourceIdentifier");
    if (!X509_add1_ext_i2d(cert, NID_subject_alt_name, names, 0, X509V3_ADD_APPEND))
        return ossl_error(ErrorDomain::Pki, "adding subjectAltName");
    return ok_status();
}

}  // namespace

bool valid_dns_name(std::string_view d) {
    if (d.empty() || d.size() > 253) return false;
    for (char c : d)
        if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '.' || c == '*')) return false;
    return true;
}

bool valid_uri(std::string_view u) {
    if (u.empty() || u.size() > 2048 || !std::isalpha(static_cast<unsigned char>(u[0]))) return false;
    size_t colon = u.find(':');
    if (colon == std::string::npos || colon == 0) return false;
    for (size_t i = 0; i < colon; ++i) {
        char c = u[i];
        if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '+' || c == '-' || c == '.')) return false;
    }
    for (char c : u)
        if (static_cast<unsigned char>(c) <= 0x20 || static_cast<unsigned char>(c) >= 0x7f) return false;
    return true;
}

Result<X509Ptr> issue_certificate(const IssueRequest& req, X509* issuer_cert, EVP_PKEY* issuer_key) {
    if (!req.subject || (!req.public_key && req.public_key_spki.empty()) || !issuer_key)
        return Error(ErrorDomain::Pki, 0, "issue_certificate: subject, public key and issuer key are required");
    bool ca =
        req.profile == Profile::RootCa || req.profile == Profile::IntermediateCa || req.profile == Profile::RootLink;
    if (req.profile == Profile::RootCa && issuer_cert)
        return Error(ErrorDomain::Pki, 0, "a root CA certificate is self-signed (no issuer certificate)");
    if (req.profile != Profile::RootCa && !issuer_cert)
        return Error(ErrorDomain::Pki, 0, std::string(profile_name(req.profile)) + " certificate needs an issuer");
    if (issuer_cert && X509_check_private_key(issuer_cert, issuer_key) != 1) {
        ERR_clear_error();
        return Error(ErrorDomain::Pki, 0, "issuer key does not match the issuer certificate");
    }
    for (auto& d : req.dns)
        if (!valid_dns_name(d)) return Error(ErrorDomain::Pki, 0, "invalid dNSName '" + d + "'");
    for (auto& u : req.uris)
        if (!valid_uri(u)) return Error(ErrorDomain::Pki, 0, "invalid uniformResourceIdentifier '" + u + "'");

    X509Ptr cert(X509_new());
    X509_set_version(cert.get(), 2);
    Bytes serial = req.serial.empty() ? random_serial() : req.serial;
    BIGNUM* bn = BN_bin2bn(serial.data(), static_cast<int>(serial.size()), nullptr);
    BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(cert.get()));
    BN_free(bn);
    X509_set_subject_name(cert.get(), req.subject);
    X509_set_issuer_name(cert.get(), issuer_cert ? X509_get_subject_name(issuer_cert) : req.subject);
    int64_t now = static_cast<int64_t>(std::time(nullptr));
    int64_t nb = req.not_before.value_or(now - 60);
    int64_t na = req.not_after.value_or(nb + 60 + req.validity_days * 86400);
    if (na <= nb) return Error(ErrorDomain::Pki, 0, "notAfter must be later than notBefore");
    ASN1_TIME_set(X509_getm_notBefore(cert.get()), static_cast<time_t>(nb));
    ASN1_TIME_set(X509_getm_notAfter(cert.get()), static_cast<time_t>(na));
    if (!req.public_key_spki.empty()) {
        X2SEC_TRY_STATUS(set_spki(cert.get(), req.public_key_spki));
    } else if (!X509_set_pubkey(cert.get(), req.public_key)) {
        return ossl_error(ErrorDomain::Pki, "setting public key");
    }

    X509* iss = issuer_cert ? issuer_cert : cert.get();
    if (ca) {
        X2SEC_TRY_STATUS(
            add_ext(cert.get(), iss, NID_basic_constraints,
                    req.profile == Profile::IntermediateCa ? "critical,CA:TRUE,pathlen:0" : "critical,CA:TRUE"));
        X2SEC_TRY_STATUS(add_ext(cert.get(), iss, NID_key_usage, "critical,keyCertSign,cRLSign"));
    } else {
        X2SEC_TRY_STATUS(add_ext(cert.get(), iss, NID_basic_constraints, "critical,CA:FALSE"));
        X2SEC_TRY_STATUS(add_ext(cert.get(), iss, NID_key_usage, "critical,digitalSignature"));
        if (req.profile == Profile::Server)
            X2SEC_TRY_STATUS(add_ext(cert.get(), iss, NID_ext_key_usage, "serverAuth,clientAuth"));
        if (req.profile == Profile::OcspSigner) {
            X2SEC_TRY_STATUS(add_ext(cert.get(), iss, NID_ext_key_usage, "OCSPSigning"));
            X2SEC_TRY_STATUS(add_ext(cert.get(), iss, NID_id_pkix_OCSP_noCheck, "ignored"));
        }
    }
    X2SEC_TRY_STATUS(add_ext(cert.get(), iss, NID_subject_key_identifier, "hash"));
    if (req.profile != Profile::RootCa)
        X2SEC_TRY_STATUS(add_ext(cert.get(), iss, NID_authority_key_identifier, "keyid:always"));
    if (!req.dns.empty() || !req.ips.empty() || !req.uris.empty()) X2SEC_TRY_STATUS(add_san(cert.get(), req));
    std::string cdp;
    for (auto& u : req.crl_urls) cdp += (cdp.empty() ? "" : ",") + std::string("URI:") + u;
    if (!cdp.empty()) X2SEC_TRY_STATUS(add_ext(cert.get(), iss, NID_crl_distribution_points, cdp));
    std::string aia;
    for (auto& u : req.ocsp_urls) aia += (aia.empty() ? "" : ",") + std::string("OCSP;URI:") + u;
    if (!aia.empty()) X2SEC_TRY_STATUS(add_ext(cert.get(), iss, NID_info_access, aia));

    if (!X509_sign(cert.get(), issuer_key, digest_for(issuer_key)))
        return ossl_error(ErrorDomain::Crypto, "signing certificate");
    return cert;
}

std::string cert_pem(X509* x) {
    BioPtr b(BIO_new(BIO_s_mem()));
    PEM_write_bio_X509(b.get(), x);
    char* p = nullptr;
    long n = BIO_get_mem_data(b.get(), &p);
    return std::string(p, static_cast<size_t>(n));
}

Bytes cert_der(X509* x) {
    unsigned char* p = nullptr;
    int n = i2d_X509(x, &p);
    if (n <= 0) return {};
    Bytes out(p, p + n);
    OPENSSL_free(p);
    return out;
}

Result<X509Ptr> cert_from_der(BytesView der) {
    const unsigned char* p = der.data();
    X509* x = d2i_X509(nullptr, &p, static_cast<long>(der.size()));
    if (!x) return ossl_error(ErrorDomain::Pki, "not a DER certificate");
    return X509Ptr(x);
}

Status save_certs_pem(const std::string& path, const std::vector<X509*>& certs) {
    std::string all;
    for (X509* c : certs) all += cert_pem(c);
    return write_file_atomic(path, std::string_view(all), 0644);
}

Result<std::vector<X509Ptr>> load_certs_pem(const std::string& path) {
    X2SEC_TRY(auto data, read_file(path, 16 << 20));
    BioPtr b(BIO_new_mem_buf(data.data(), static_cast<int>(data.size())));
    std::vector<X509Ptr> out;
    while (X509* x = PEM_read_bio_X509(b.get(), nullptr, nullptr, nullptr)) out.emplace_back(x);
    ERR_clear_error();
    if (out.empty()) return Error(ErrorDomain::Pki, 0, path + ": no PEM certificate found");
    return out;
}

Result<X509Ptr> load_cert(const std::string& path) {
    X2SEC_TRY(auto v, load_certs_pem(path));
    return std::move(v.front());
}

std::vector<std::string> san_dns(X509* x) {
    std::vector<std::string> out;
    auto* names = static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(x, NID_subject_alt_name, nullptr, nullptr));
    if (!names) return out;
    for (int i = 0; i < sk_GENERAL_NAME_num(names); ++i) {
        GENERAL_NAME* g = sk_GENERAL_NAME_value(names, i);
        if (g->type == GEN_DNS)
            out.emplace_back(reinterpret_cast<const char*>(ASN1_STRING_get0_data(g->d.dNSName)),
                             static_cast<size_t>(ASN1_STRING_length(g->d.dNSName)));
    }
    GENERAL_NAMES_free(names);
    return out;
}

Bytes serial_bytes(const ASN1_INTEGER* serial) {
    BIGNUM* bn = ASN1_INTEGER_to_BN(serial, nullptr);
    Bytes out(static_cast<size_t>(BN_num_bytes(bn)));
    BN_bn2bin(bn, out.data());
    BN_free(bn);
    return out;
}

std::string serial_hex(X509* x) {
    return to_hex(serial_bytes(X509_get0_serialNumber(x)));
}

namespace {
int64_t asn1_time_unix(const ASN1_TIME* t) {
    struct tm tm {};
    if (!ASN1_TIME_to_tm(t, &tm)) return 0;
    return static_cast<int64_t>(timegm(&tm));
}
}  // namespace
int64_t not_after(X509* x) {
    return asn1_time_unix(X509_get0_notAfter(x));
}
int64_t not_before(X509* x) {
    return asn1_time_unix(X509_get0_notBefore(x));
}

bool public_keys_equal(X509* x, EVP_PKEY* key) {
    EVP_PKEY* pub = X509_get0_pubkey(x);
    return pub && key && EVP_PKEY_eq(pub, key) == 1;
}

std::string describe(X509* x) {
    BioPtr b(BIO_new(BIO_s_mem()));
    X509_print_ex(b.get(), x, XN_FLAG_RFC2253, X509_FLAG_NO_SIGDUMP | X509_FLAG_NO_PUBKEY);
    char* p = nullptr;
    long n = BIO_get_mem_data(b.get(), &p);
    std::string out(p, static_cast<size_t>(n));
    EVP_PKEY* k = X509_get0_pubkey(x);
    if (k)
        out += "    Public key: " + std::string(EVP_PKEY_get0_type_name(k)) + " " +
               std::to_string(EVP_PKEY_get_bits(k)) + " bits\n";
    return out;
}

StorePtr make_trust_store(const std::vector<X509*>& anchors) {
    StorePtr store(X509_STORE_new());
    for (X509* a : anchors) X509_STORE_add_cert(store.get(), a);
    return store;
}

Status verify_chain(X509* leaf, const std::vector<X509*>& anchors, const std::vector<X509*>& untrusted,
                    int64_t unix_time) {
    auto store = make_trust_store(anchors);
    return verify_chain(leaf, store.get(), untrusted, unix_time);
}

Status verify_chain(X509* leaf, X509_STORE* store, const std::vector<X509*>& untrusted, int64_t unix_time) {
    auto sk = make_stack(untrusted);
    std::unique_ptr<X509_STORE_CTX, OsslFree> ctx(X509_STORE_CTX_new());
    X509_STORE_CTX_init(ctx.get(), store, leaf, sk.get());
    if (unix_time) X509_STORE_CTX_set_time(ctx.get(), 0, static_cast<time_t>(unix_time));
    if (X509_verify_cert(ctx.get()) == 1) return ok_status();
    int err = X509_STORE_CTX_get_error(ctx.get());
    X509* bad = X509_STORE_CTX_get_current_cert(ctx.get());
    ERR_clear_error();
    return Error(ErrorDomain::Pki, err,
                 "certificate '" + name_to_string(X509_get_subject_name(bad ? bad : leaf)) +
                     "': " + X509_verify_cert_error_string(err));
}

}  // namespace x2sec::pki

ASN1_SEQUENCE(X2S_PKI_SPKI) = {
    ASN1_SIMPLE(X2S_PKI_SPKI, algorithm, X509_ALGOR),
    ASN1_SIMPLE(X2S_PKI_SPKI, subject_public_key, ASN1_BIT_STRING),
} ASN1_SEQUENCE_END(X2S_PKI_SPKI)
