#include "asn1_view.hpp"

#include <openssl/asn1t.h>

// ---- RFC 4211 CertTemplate, mirrored field for field (tags and tagging as in RFC 4211 and
// OpenSSL's crmf_asn.c) so that a re-encoded OSSL_CRMF_CERTTEMPLATE decodes into it.
extern "C" {
typedef struct {
    ASN1_TIME* notBefore;
    ASN1_TIME* notAfter;
} X2S_OPTIONAL_VALIDITY;
typedef struct {
    ASN1_INTEGER* version;
    ASN1_INTEGER* serialNumber;
    X509_ALGOR* signingAlg;
    X509_NAME* issuer;
    X2S_OPTIONAL_VALIDITY* validity;
    X509_NAME* subject;
    X509_PUBKEY* publicKey;
    ASN1_BIT_STRING* issuerUID;
    ASN1_BIT_STRING* subjectUID;
    STACK_OF(X509_EXTENSION)* extensions;
} X2S_CERT_TEMPLATE;
// RFC 4210 PKIMessage with header and body kept opaque.
typedef struct {
    ASN1_TYPE* header;
    ASN1_TYPE* body;
    ASN1_BIT_STRING* protection;
    STACK_OF(X509)* extraCerts;
} X2S_PKIMESSAGE;
}

ASN1_SEQUENCE(X2S_OPTIONAL_VALIDITY) = {
    ASN1_EXP_OPT(X2S_OPTIONAL_VALIDITY, notBefore, ASN1_TIME, 0),
    ASN1_EXP_OPT(X2S_OPTIONAL_VALIDITY, notAfter, ASN1_TIME, 1),
} ASN1_SEQUENCE_END(X2S_OPTIONAL_VALIDITY)

ASN1_SEQUENCE(X2S_CERT_TEMPLATE) = {
    ASN1_IMP_OPT(X2S_CERT_TEMPLATE, version, ASN1_INTEGER, 0),
    ASN1_IMP_OPT(X2S_CERT_TEMPLATE, serialNumber, ASN1_INTEGER, 1),
    ASN1_IMP_OPT(X2S_CERT_TEMPLATE, signingAlg, X509_ALGOR, 2),
    ASN1_EXP_OPT(X2S_CERT_TEMPLATE, issuer, X509_NAME, 3),
    ASN1_IMP_OPT(X2S_CERT_TEMPLATE, validity, X2S_OPTIONAL_VALIDITY, 4),
    ASN1_EXP_OPT(X2S_CERT_TEMPLATE, subject, X509_NAME, 5),
    ASN1_IMP_OPT(X2S_CERT_TEMPLATE, publicKey, X509_PUBKEY, 6),
    ASN1_IMP_OPT(X2S_CERT_TEMPLATE, issuerUID, ASN1_BIT_STRING, 7),
    ASN1_IMP_OPT(X2S_CERT_TEMPLATE, subjectUID, ASN1_BIT_STRING, 8),
    ASN1_IMP_SEQUENCE_OF_OPT(X2S_CERT_TEMPLATE, extensions, X509_EXTENSION, 9),
} ASN1_SEQUENCE_END(X2S_CERT_TEMPLATE)

ASN1_SEQUENCE(X2S_PKIMESSAGE) = {
    ASN1_SIMPLE(X2S_PKIMESSAGE, header, ASN1_ANY),
    ASN1_SIMPLE(X2S_PKIMESSAGE, body, ASN1_ANY),
    ASN1_EXP_OPT(X2S_PKIMESSAGE, protection, ASN1_BIT_STRING, 0),
    ASN1_EXP_SEQUENCE_OF_OPT(X2S_PKIMESSAGE, extraCerts, X509, 1),
} ASN1_SEQUENCE_END(X2S_PKIMESSAGE)

namespace x2sec::cmp::detail {

pki::PkeyPtr template_public_key(const OSSL_CRMF_MSG* crm) {
    if (!crm) return nullptr;
    OSSL_CRMF_CERTTEMPLATE* tmpl = OSSL_CRMF_MSG_get0_tmpl(crm);
    if (!tmpl) return nullptr;
    unsigned char* der = nullptr;
    int n = i2d_OSSL_CRMF_CERTTEMPLATE(tmpl, &der);
    if (n <= 0) return nullptr;
    const unsigned char* p = der;
    auto* mirror = reinterpret_cast<X2S_CERT_TEMPLATE*>(
        ASN1_item_d2i(nullptr, &p, n, ASN1_ITEM_rptr(X2S_CERT_TEMPLATE)));
    OPENSSL_free(der);
    if (!mirror) {
        ERR_clear_error();
        return nullptr;
    }
    EVP_PKEY* key = mirror->publicKey ? X509_PUBKEY_get(mirror->publicKey) : nullptr;
    ASN1_item_free(reinterpret_cast<ASN1_VALUE*>(mirror), ASN1_ITEM_rptr(X2S_CERT_TEMPLATE));
    ERR_clear_error();
    return pki::PkeyPtr(key);
}

std::vector<pki::X509Ptr> extra_certs(BytesView der_message) {
    std::vector<pki::X509Ptr> out;
    const unsigned char* p = der_message.data();
    auto* m = reinterpret_cast<X2S_PKIMESSAGE*>(
        ASN1_item_d2i(nullptr, &p, static_cast<long>(der_message.size()), ASN1_ITEM_rptr(X2S_PKIMESSAGE)));
    if (!m) {
        ERR_clear_error();
        return out;
    }
    for (int i = 0; m->extraCerts && i < sk_X509_num(m->extraCerts); ++i)
        out.push_back(pki::up_ref(sk_X509_value(m->extraCerts, i)));
    ASN1_item_free(reinterpret_cast<ASN1_VALUE*>(m), ASN1_ITEM_rptr(X2S_PKIMESSAGE));
    return out;
}

}  // namespace x2sec::cmp::detail
