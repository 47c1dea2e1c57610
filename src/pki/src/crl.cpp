#include <openssl/pem.h>
#include <x2sec/pki/pki.hpp>

namespace x2sec::pki {

Result<CrlPtr> issue_crl(X509* issuer_cert, EVP_PKEY* issuer_key, const std::vector<Revoked>& revoked,
                         int64_t crl_number, int64_t this_update, int64_t next_update) {
    CrlPtr crl(X509_CRL_new());
    X509_CRL_set_version(crl.get(), 1);
    X509_CRL_set_issuer_name(crl.get(), X509_get_subject_name(issuer_cert));
    ASN1_TIME* t = ASN1_TIME_new();
    ASN1_TIME_set(t, static_cast<time_t>(this_update));
    X509_CRL_set1_lastUpdate(crl.get(), t);
    ASN1_TIME_set(t, static_cast<time_t>(next_update));
    X509_CRL_set1_nextUpdate(crl.get(), t);
    ASN1_TIME_free(t);
    for (auto& r : revoked) {
        X509_REVOKED* rv = X509_REVOKED_new();
        BIGNUM* bn = BN_bin2bn(r.serial.data(), static_cast<int>(r.serial.size()), nullptr);
        ASN1_INTEGER* s = BN_to_ASN1_INTEGER(bn, nullptr);
        BN_free(bn);
        X509_REVOKED_set_serialNumber(rv, s);
        ASN1_INTEGER_free(s);
        ASN1_TIME* rt = ASN1_TIME_new();
        ASN1_TIME_set(rt, static_cast<time_t>(r.time));
        X509_REVOKED_set_revocationDate(rv, rt);
        ASN1_TIME_free(rt);
        if (r.reason > 0) {
            ASN1_ENUMERATED* e = ASN1_ENUMERATED_new();
            ASN1_ENUMERATED_set(e, r.reason);
            X509_REVOKED_add1_ext_i2d(rv, NID_crl_reason, e, 0, 0);
            ASN1_ENUMERATED_free(e);
        }
        X509_CRL_add0_revoked(crl.get(), rv);
    }
    X509_CRL_sort(crl.get());
    ASN1_INTEGER* num = ASN1_INTEGER_new();
    ASN1_INTEGER_set_int64(num, crl_number);
    X509_CRL_add1_ext_i2d(crl.get(), NID_crl_number, num, 0, 0);
    ASN1_INTEGER_free(num);
    X509V3_CTX ctx;
    X509V3_set_ctx_nodb(&ctx);
    X509V3_set_ctx(&ctx, issuer_cert, nullptr, nullptr, crl.get(), 0);
    if (X509_EXTENSION* aki = X509V3_EXT_conf_nid(nullptr, &ctx, NID_authority_key_identifier, "keyid:always")) {
        X509_CRL_add_ext(crl.get(), aki, -1);
        X509_EXTENSION_free(aki);
    }
    const EVP_MD* md =
        (EVP_PKEY_is_a(issuer_key, "EC") && EVP_PKEY_get_bits(issuer_key) > 256) ? EVP_sha384() : EVP_sha256();
    if (!X509_CRL_sign(crl.get(), issuer_key, md)) return ossl_error(ErrorDomain::Crypto, "signing CRL");
    return crl;
}

Bytes crl_der(X509_CRL* crl) {
    unsigned char* p = nullptr;
    int n = i2d_X509_CRL(crl, &p);
    if (n <= 0) return {};
    Bytes out(p, p + n);
    OPENSSL_free(p);
    return out;
}

std::string crl_pem(X509_CRL* crl) {
    BioPtr b(BIO_new(BIO_s_mem()));
    PEM_write_bio_X509_CRL(b.get(), crl);
    char* p = nullptr;
    long n = BIO_get_mem_data(b.get(), &p);
    return std::string(p, static_cast<size_t>(n));
}

}  // namespace x2sec::pki
