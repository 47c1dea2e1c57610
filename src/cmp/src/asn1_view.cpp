#include "asn1_view.hpp"

#include <openssl/asn1t.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>

// ---- RFC 4211 CertTemplate, mirrored field for field (tags and tagging as in RFC 4211 and
// OpenSSL's crmf_asn.c) so that a re-encoded OSSL_CRMF_CERTTEMPLATE decodes into it.
extern "C" {
typedef struct {
    ASN1_TIME* notBefore;
    ASN1_TIME* notAfter;
} X2S_OPTIONAL_VALIDITY;
// SubjectPublicKeyInfo with the key as its BIT STRING (X509_PUBKEY would decode it).
typedef struct {
    X509_ALGOR* algorithm;
    ASN1_BIT_STRING* subjectPublicKey;
} X2S_SPKI;
typedef struct {
    ASN1_INTEGER* version;
    ASN1_INTEGER* serialNumber;
    X509_ALGOR* signingAlg;
    X509_NAME* issuer;
    X2S_OPTIONAL_VALIDITY* validity;
    X509_NAME* subject;
    X2S_SPKI* publicKey;
    ASN1_BIT_STRING* issuerUID;
    ASN1_BIT_STRING* subjectUID;
    STACK_OF(X509_EXTENSION) * extensions;
} X2S_CERT_TEMPLATE;
// RFC 4210 PKIMessage with header and body kept opaque.
typedef struct {
    ASN1_TYPE* header;
    ASN1_TYPE* body;
    ASN1_BIT_STRING* protection;
    STACK_OF(ASN1_TYPE) * extraCerts;  // kept as DER: the caller decodes (or finds) each certificate
} X2S_PKIMESSAGE;
// RFC 4210 5.1.1 PKIHeader (EXPLICIT tags, as in OpenSSL's cmp_asn.c).
typedef struct {
    ASN1_INTEGER* pvno;
    GENERAL_NAME* sender;
    GENERAL_NAME* recipient;
    ASN1_GENERALIZEDTIME* messageTime;
    X509_ALGOR* protectionAlg;
    ASN1_OCTET_STRING* senderKID;
    ASN1_OCTET_STRING* recipKID;
    ASN1_OCTET_STRING* transactionID;
    ASN1_OCTET_STRING* senderNonce;
    ASN1_OCTET_STRING* recipNonce;
    STACK_OF(ASN1_UTF8STRING) * freeText;
    STACK_OF(ASN1_TYPE) * generalInfo;
} X2S_PKIHEADER;
// RFC 4210 InfoTypeAndValue, the elements of generalInfo.
typedef struct {
    ASN1_OBJECT* type;
    ASN1_TYPE* value;
} X2S_ITAV;
typedef struct {
    X2S_PKIHEADER* header;
    ASN1_TYPE* body;
    ASN1_BIT_STRING* protection;
    STACK_OF(ASN1_TYPE) * extraCerts;
} X2S_PKIMESSAGE_HDR;
// RFC 4211 POPOSigningKey / ProofOfPossession / CertReqMsg (IMPLICIT tags, crmf_asn.c).
typedef struct {
    STACK_OF(ASN1_TYPE) * poposkInput;
    X509_ALGOR* algorithmIdentifier;
    ASN1_BIT_STRING* signature;
} X2S_POPOSIGNINGKEY;
typedef struct {
    int type;
    union {
        ASN1_NULL* raVerified;
        X2S_POPOSIGNINGKEY* signature;
        ASN1_TYPE* keyEncipherment;
        ASN1_TYPE* keyAgreement;
    } value;
} X2S_POPO;
typedef struct {
    ASN1_TYPE* certReq;
    X2S_POPO* popo;
    STACK_OF(ASN1_TYPE) * regInfo;
} X2S_CERTREQMSG;
// RFC 4210 5.3.9 RevDetails; the rr body is [11] EXPLICIT SEQUENCE OF RevDetails.
typedef struct {
    X2S_CERT_TEMPLATE* certDetails;
    STACK_OF(X509_EXTENSION) * crlEntryDetails;
} X2S_REVDETAILS;
typedef struct {
    ASN1_TYPE* header;
    OPENSSL_STACK* body;  // of X2S_REVDETAILS
    ASN1_BIT_STRING* protection;
    STACK_OF(ASN1_TYPE) * extraCerts;
} X2S_PKIMESSAGE_RR;
// RFC 4210 5.3.21 ErrorMsgContent; the error body is [23] EXPLICIT ErrorMsgContent.
typedef struct {
    OSSL_CMP_PKISI* pKIStatusInfo;
    ASN1_INTEGER* errorCode;
    STACK_OF(ASN1_UTF8STRING) * errorDetails;
} X2S_ERRORMSGCONTENT;
typedef struct {
    ASN1_TYPE* header;
    X2S_ERRORMSGCONTENT* body;
    ASN1_BIT_STRING* protection;
    STACK_OF(ASN1_TYPE) * extraCerts;
} X2S_PKIMESSAGE_ERR;
}

ASN1_SEQUENCE(X2S_OPTIONAL_VALIDITY) =
    {
        ASN1_EXP_OPT(X2S_OPTIONAL_VALIDITY, notBefore, ASN1_TIME, 0),
        ASN1_EXP_OPT(X2S_OPTIONAL_VALIDITY, notAfter, ASN1_TIME, 1),
} ASN1_SEQUENCE_END(X2S_OPTIONAL_VALIDITY)

        ASN1_SEQUENCE(X2S_SPKI) =
            {
                ASN1_SIMPLE(X2S_SPKI, algorithm, X509_ALGOR),
                ASN1_SIMPLE(X2S_SPKI, subjectPublicKey, ASN1_BIT_STRING),
} ASN1_SEQUENCE_END(X2S_SPKI)

                ASN1_SEQUENCE(X2S_CERT_TEMPLATE) =
                    {
                        ASN1_IMP_OPT(X2S_CERT_TEMPLATE, version, ASN1_INTEGER, 0),
                        ASN1_IMP_OPT(X2S_CERT_TEMPLATE, serialNumber, ASN1_INTEGER, 1),
                        ASN1_IMP_OPT(X2S_CERT_TEMPLATE, signingAlg, X509_ALGOR, 2),
                        ASN1_EXP_OPT(X2S_CERT_TEMPLATE, issuer, X509_NAME, 3),
                        ASN1_IMP_OPT(X2S_CERT_TEMPLATE, validity, X2S_OPTIONAL_VALIDITY, 4),
                        ASN1_EXP_OPT(X2S_CERT_TEMPLATE, subject, X509_NAME, 5),
                        ASN1_IMP_OPT(X2S_CERT_TEMPLATE, publicKey, X2S_SPKI, 6),
                        ASN1_IMP_OPT(X2S_CERT_TEMPLATE, issuerUID, ASN1_BIT_STRING, 7),
                        ASN1_IMP_OPT(X2S_CERT_TEMPLATE, subjectUID, ASN1_BIT_STRING, 8),
                        ASN1_IMP_SEQUENCE_OF_OPT(X2S_CERT_TEMPLATE, extensions, X509_EXTENSION, 9),
} ASN1_SEQUENCE_END(X2S_CERT_TEMPLATE)

                        ASN1_SEQUENCE(X2S_PKIMESSAGE) =
                            {
                                ASN1_SIMPLE(X2S_PKIMESSAGE, header, ASN1_ANY),
                                ASN1_SIMPLE(X2S_PKIMESSAGE, body, ASN1_ANY),
                                ASN1_EXP_OPT(X2S_PKIMESSAGE, protection, ASN1_BIT_STRING, 0),
                                ASN1_EXP_SEQUENCE_OF_OPT(X2S_PKIMESSAGE, extraCerts, ASN1_ANY, 1),
} ASN1_SEQUENCE_END(X2S_PKIMESSAGE)

                                ASN1_SEQUENCE(X2S_PKIHEADER) =
                                    {
                                        ASN1_SIMPLE(X2S_PKIHEADER, pvno, ASN1_INTEGER),
                                        ASN1_SIMPLE(X2S_PKIHEADER, sender, GENERAL_NAME),
                                        ASN1_SIMPLE(X2S_PKIHEADER, recipient, GENERAL_NAME),
                                        ASN1_EXP_OPT(X2S_PKIHEADER, messageTime, ASN1_GENERALIZEDTIME, 0),
                                        ASN1_EXP_OPT(X2S_PKIHEADER, protectionAlg, X509_ALGOR, 1),
                                        ASN1_EXP_OPT(X2S_PKIHEADER, senderKID, ASN1_OCTET_STRING, 2),
                                        ASN1_EXP_OPT(X2S_PKIHEADER, recipKID, ASN1_OCTET_STRING, 3),
                                        ASN1_EXP_OPT(X2S_PKIHEADER, transactionID, ASN1_OCTET_STRING, 4),
                                        ASN1_EXP_OPT(X2S_PKIHEADER, senderNonce, ASN1_OCTET_STRING, 5),
                                        ASN1_EXP_OPT(X2S_PKIHEADER, recipNonce, ASN1_OCTET_STRING, 6),
                                        ASN1_EXP_SEQUENCE_OF_OPT(X2S_PKIHEADER, freeText, ASN1_UTF8STRING, 7),
                                        ASN1_EXP_SEQUENCE_OF_OPT(X2S_PKIHEADER, generalInfo, ASN1_ANY, 8),
} ASN1_SEQUENCE_END(X2S_PKIHEADER)

                                        ASN1_SEQUENCE(X2S_ITAV) =
                                            {
                                                ASN1_SIMPLE(X2S_ITAV, type, ASN1_OBJECT),
                                                ASN1_OPT(X2S_ITAV, value, ASN1_ANY),
} ASN1_SEQUENCE_END(X2S_ITAV)

                                                ASN1_SEQUENCE(X2S_PKIMESSAGE_HDR) =
                                                    {
                                                        ASN1_SIMPLE(X2S_PKIMESSAGE_HDR, header, X2S_PKIHEADER),
                                                        ASN1_SIMPLE(X2S_PKIMESSAGE_HDR, body, ASN1_ANY),
                                                        ASN1_EXP_OPT(X2S_PKIMESSAGE_HDR, protection, ASN1_BIT_STRING,
                                                                     0),
                                                        ASN1_EXP_SEQUENCE_OF_OPT(X2S_PKIMESSAGE_HDR, extraCerts,
                                                                                 ASN1_ANY, 1),
} ASN1_SEQUENCE_END(X2S_PKIMESSAGE_HDR)

                                                        ASN1_SEQUENCE(X2S_POPOSIGNINGKEY) =
                                                            {
                                                                ASN1_IMP_SEQUENCE_OF_OPT(X2S_POPOSIGNINGKEY,
                                                                                         poposkInput, ASN1_ANY, 0),
                                                                ASN1_SIMPLE(X2S_POPOSIGNINGKEY, algorithmIdentifier,
                                                                            X509_ALGOR),
                                                                ASN1_SIMPLE(X2S_POPOSIGNINGKEY, signature,
                                                                            ASN1_BIT_STRING),
} ASN1_SEQUENCE_END(X2S_POPOSIGNINGKEY)

                                                                ASN1_CHOICE(X2S_POPO) =
                                                                    {
                                                                        ASN1_IMP(X2S_POPO, value.raVerified, ASN1_NULL,
                                                                                 0),
                                                                        ASN1_IMP(X2S_POPO, value.signature,
                                                                                 X2S_POPOSIGNINGKEY, 1),
                                                                        ASN1_EXP(X2S_POPO, value.keyEncipherment,
                                                                                 ASN1_ANY, 2),
                                                                        ASN1_EXP(X2S_POPO, value.keyAgreement, ASN1_ANY,
                                                                                 3),
} ASN1_CHOICE_END(X2S_POPO)

                                                                        ASN1_SEQUENCE(X2S_CERTREQMSG) =
                                                                            {
                                                                                ASN1_SIMPLE(X2S_CERTREQMSG, certReq,
                                                                                            ASN1_ANY),
                                                                                ASN1_OPT(X2S_CERTREQMSG, popo,
                                                                                         X2S_POPO),
                                                                                ASN1_SEQUENCE_OF_OPT(X2S_CERTREQMSG,
                                                                                                     regInfo, ASN1_ANY),
} ASN1_SEQUENCE_END(X2S_CERTREQMSG)

                                                                                ASN1_SEQUENCE(X2S_REVDETAILS) =
                                                                                    {
                                                                                        ASN1_SIMPLE(X2S_REVDETAILS,
                                                                                                    certDetails,
                                                                                                    X2S_CERT_TEMPLATE),
                                                                                        ASN1_SEQUENCE_OF_OPT(
                                                                                            X2S_REVDETAILS,
                                                                                            crlEntryDetails,
                                                                                            X509_EXTENSION),
} ASN1_SEQUENCE_END(X2S_REVDETAILS)

                                                                                        ASN1_SEQUENCE(
                                                                                            X2S_PKIMESSAGE_RR) =
                                                                                            {
                                                                                                ASN1_SIMPLE(
                                                                                                    X2S_PKIMESSAGE_RR,
                                                                                                    header, ASN1_ANY),
                                                                                                ASN1_EXP_SEQUENCE_OF(
                                                                                                    X2S_PKIMESSAGE_RR,
                                                                                                    body,
                                                                                                    X2S_REVDETAILS, 11),
                                                                                                ASN1_EXP_OPT(
                                                                                                    X2S_PKIMESSAGE_RR,
                                                                                                    protection,
                                                                                                    ASN1_BIT_STRING, 0),
                                                                                                ASN1_EXP_SEQUENCE_OF_OPT(
                                                                                                    X2S_PKIMESSAGE_RR,
                                                                                                    extraCerts,
                                                                                                    ASN1_ANY, 1),
} ASN1_SEQUENCE_END(X2S_PKIMESSAGE_RR)

                                                                                                ASN1_SEQUENCE(
                                                                                                    X2S_ERRORMSGCONTENT) =
                                                                                                    {
                                                                                                        ASN1_SIMPLE(
                                                                                                            X2S_ERRORMSGCONTENT,
                                                                                                            pKIStatusInfo,
                                                                                                            OSSL_CMP_PKISI),
                                                                                                        ASN1_OPT(
                                                                                                            X2S_ERRORMSGCONTENT,
                                                                                                            errorCode,
                                                                                                            ASN1_INTEGER),
                                                                                                        ASN1_SEQUENCE_OF_OPT(
                                                                                                            X2S_ERRORMSGCONTENT,
                                                                                                            errorDetails,
                                                                                                            ASN1_UTF8STRING),
} ASN1_SEQUENCE_END(X2S_ERRORMSGCONTENT)

                                                                                                        ASN1_SEQUENCE(
                                                                                                            X2S_PKIMESSAGE_ERR) =
                                                                                                            {
                                                                                                                ASN1_SIMPLE(
                                                                                                                    X2S_PKIMESSAGE_ERR,
                                                                                                                    header,
                                                                                                                    ASN1_ANY),
                                                                                                                ASN1_EXP(
                                                                                                                    X2S_PKIMESSAGE_ERR,
                                                                                                                    body,
                                                                                                                    X2S_ERRORMSGCONTENT,
                                                                                                                    23),
                                                                                                                ASN1_EXP_OPT(
                                                                                                                    X2S_PKIMESSAGE_ERR,
                                                                                                                    protection,
                                                                                                                    ASN1_BIT_STRING,
                                                                                                                    0),
                                                                                                                ASN1_EXP_SEQUENCE_OF_OPT(
                                                                                                                    X2S_PKIMESSAGE_ERR,
                                                                                                                    extraCerts,
                                                                                                                    ASN1_ANY,
                                                                                                                    1),
} ASN1_SEQUENCE_END(X2S_PKIMESSAGE_ERR)

                                                                                                                namespace x2sec::
                                                                                                                    cmp::
                                                                                                                        detail {
    namespace {

    // An EC public key on a named curve from its point; null for anything else.
    pki::PkeyPtr ec_key_from_point(const X2S_SPKI& spki) {
        const ASN1_OBJECT* oid = nullptr;
        int ptype = V_ASN1_UNDEF;
        const void* pval = nullptr;
        X509_ALGOR_get0(&oid, &ptype, &pval, spki.algorithm);
        if (OBJ_obj2nid(oid) != NID_X9_62_id_ecPublicKey || ptype != V_ASN1_OBJECT) return nullptr;
        int curve = OBJ_obj2nid(static_cast<const ASN1_OBJECT*>(pval));
        const char* group = curve == NID_undef ? nullptr : OBJ_nid2sn(curve);
        const ASN1_BIT_STRING* bits = spki.subjectPublicKey;
        if (!group || !bits || (bits->flags & 0x07) != 0 || ASN1_STRING_length(bits) < 1) return nullptr;
        std::unique_ptr<EVP_PKEY_CTX, decltype(&EVP_PKEY_CTX_free)> ctx(
            EVP_PKEY_CTX_new_from_name(nullptr, "EC", nullptr), EVP_PKEY_CTX_free);
        OSSL_PARAM params[] = {
            OSSL_PARAM_construct_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, const_cast<char*>(group), 0),
            OSSL_PARAM_construct_octet_string(OSSL_PKEY_PARAM_PUB_KEY, const_cast<unsigned char*>(bits->data),
                                              static_cast<size_t>(bits->length)),
            OSSL_PARAM_construct_end()};
        EVP_PKEY* key = nullptr;
        if (!ctx || EVP_PKEY_fromdata_init(ctx.get()) != 1 ||
            EVP_PKEY_fromdata(ctx.get(), &key, EVP_PKEY_PUBLIC_KEY, params) != 1) {
            ERR_clear_error();
            return nullptr;
        }
        return pki::PkeyPtr(key);
    }

    }  // namespace

    TemplateKey template_public_key(const OSSL_CRMF_MSG* crm) {
        TemplateKey out;
        if (!crm) return out;
        OSSL_CRMF_CERTTEMPLATE* tmpl = OSSL_CRMF_MSG_get0_tmpl(crm);
        if (!tmpl) return out;
        unsigned char* der = nullptr;
        int n = i2d_OSSL_CRMF_CERTTEMPLATE(tmpl, &der);
        if (n <= 0) return out;
        const unsigned char* p = der;
        auto* mirror =
            reinterpret_cast<X2S_CERT_TEMPLATE*>(ASN1_item_d2i(nullptr, &p, n, ASN1_ITEM_rptr(X2S_CERT_TEMPLATE)));
        OPENSSL_free(der);
        if (!mirror || !mirror->publicKey) {
            ASN1_item_free(reinterpret_cast<ASN1_VALUE*>(mirror), ASN1_ITEM_rptr(X2S_CERT_TEMPLATE));
            ERR_clear_error();
            return out;
        }
        unsigned char* spki = nullptr;
        int sn = ASN1_item_i2d(reinterpret_cast<ASN1_VALUE*>(mirror->publicKey), &spki, ASN1_ITEM_rptr(X2S_SPKI));
        if (sn > 0) {
            out.spki.assign(spki, spki + sn);
            out.key = ec_key_from_point(*mirror->publicKey);
            if (!out.key) {  // other key types: OpenSSL's decoders
                const unsigned char* q = spki;
                out.key.reset(d2i_PUBKEY(nullptr, &q, sn));
            }
        }
        OPENSSL_free(spki);
        ASN1_item_free(reinterpret_cast<ASN1_VALUE*>(mirror), ASN1_ITEM_rptr(X2S_CERT_TEMPLATE));
        ERR_clear_error();
        if (!out.key) out.spki.clear();
        return out;
    }

    namespace {

    template <typename T>
    struct Mirror {
        const ASN1_ITEM* it;
        T* v = nullptr;
        Mirror(const ASN1_ITEM* item, const unsigned char* der, size_t n) : it(item) {
            const unsigned char* p = der;
            v = reinterpret_cast<T*>(ASN1_item_d2i(nullptr, &p, static_cast<long>(n), it));
            // Trailing bytes mean this is not the structure we mirror.
            if (v && p != der + n) {
                ASN1_item_free(reinterpret_cast<ASN1_VALUE*>(v), it);
                v = nullptr;
            }
            ERR_clear_error();
        }
        ~Mirror() { ASN1_item_free(reinterpret_cast<ASN1_VALUE*>(v), it); }
        Mirror(const Mirror&) = delete;
        Mirror& operator=(const Mirror&) = delete;
    };

    ProtectionAlg describe_alg(const X509_ALGOR* alg) {
        ProtectionAlg r;
        r.ok = true;
        if (!alg) return r;
        const ASN1_OBJECT* obj = nullptr;
        X509_ALGOR_get0(&obj, nullptr, nullptr, alg);
        r.present = obj != nullptr;
        r.nid = OBJ_obj2nid(obj);
        char buf[128];
        if (r.nid != NID_undef)
            r.name = OBJ_nid2sn(r.nid);
        else if (obj && OBJ_obj2txt(buf, sizeof buf, obj, 1) > 0)
            r.name = buf;
        return r;
    }

    }  // namespace

    MessageView view_message(BytesView der) {
        MessageView v;
        Mirror<X2S_PKIMESSAGE> m(ASN1_ITEM_rptr(X2S_PKIMESSAGE), der.data(), der.size());
        if (!m.v) return v;
        v.ok = true;
        if (m.v->header && ASN1_TYPE_get(m.v->header) == V_ASN1_SEQUENCE && m.v->header->value.sequence) {
            // The header's own DER (ASN1_ANY keeps a constructed value whole), read as a PKIHeader.
            const ASN1_STRING* h = m.v->header->value.sequence;
            Mirror<X2S_PKIHEADER> hdr(ASN1_ITEM_rptr(X2S_PKIHEADER), ASN1_STRING_get0_data(h),
                                      static_cast<size_t>(ASN1_STRING_length(h)));
            if (hdr.v) {
                v.protection = describe_alg(hdr.v->protectionAlg);
                STACK_OF(ASN1_TYPE)* gi = hdr.v->generalInfo;
                for (int i = 0; gi && i < sk_ASN1_TYPE_num(gi); ++i) {
                    ASN1_TYPE* t = sk_ASN1_TYPE_value(gi, i);
                    if (ASN1_TYPE_get(t) != V_ASN1_SEQUENCE || !t->value.sequence) continue;
                    Mirror<X2S_ITAV> itav(ASN1_ITEM_rptr(X2S_ITAV), ASN1_STRING_get0_data(t->value.sequence),
                                          static_cast<size_t>(ASN1_STRING_length(t->value.sequence)));
                    if (itav.v && OBJ_obj2nid(itav.v->type) == NID_id_it_implicitConfirm)
                        v.protection.implicit_confirm = true;
                }
            }
        }
        for (int i = 0; m.v->extraCerts && i < sk_ASN1_TYPE_num(m.v->extraCerts); ++i) {
            ASN1_TYPE* t = sk_ASN1_TYPE_value(m.v->extraCerts, i);
            if (ASN1_TYPE_get(t) != V_ASN1_SEQUENCE || !t->value.sequence) {
                v.extra_certs.clear();
                break;
            }
            const unsigned char* d = ASN1_STRING_get0_data(t->value.sequence);
            v.extra_certs.emplace_back(d, d + ASN1_STRING_length(t->value.sequence));
        }
        if (!m.v->extraCerts) {
            v.without_extra_certs.assign(der.begin(), der.end());
            return v;
        }
        sk_ASN1_TYPE_pop_free(m.v->extraCerts, ASN1_TYPE_free);
        m.v->extraCerts = nullptr;
        unsigned char* out = nullptr;
        int n = ASN1_item_i2d(reinterpret_cast<ASN1_VALUE*>(m.v), &out, ASN1_ITEM_rptr(X2S_PKIMESSAGE));
        if (n <= 0) {
            ERR_clear_error();
            v.ok = false;
            return v;
        }
        v.without_extra_certs.assign(out, out + n);
        OPENSSL_free(out);
        return v;
    }

    Bytes sender_nonce(BytesView der) {
        Mirror<X2S_PKIMESSAGE_HDR> m(ASN1_ITEM_rptr(X2S_PKIMESSAGE_HDR), der.data(), der.size());
        if (!m.v || !m.v->header || !m.v->header->senderNonce) return {};
        const ASN1_OCTET_STRING* n = m.v->header->senderNonce;
        const unsigned char* d = ASN1_STRING_get0_data(n);
        return Bytes(d, d + ASN1_STRING_length(n));
    }

    ProtectionAlg popo_signature_alg(const OSSL_CRMF_MSG* crm) {
        if (!crm) return {};
        unsigned char* der = nullptr;
        int n = i2d_OSSL_CRMF_MSG(const_cast<OSSL_CRMF_MSG*>(crm), &der);
        if (n <= 0) return {};
        Mirror<X2S_CERTREQMSG> m(ASN1_ITEM_rptr(X2S_CERTREQMSG), der, static_cast<size_t>(n));
        OPENSSL_free(der);
        if (!m.v) return {};
        if (!m.v->popo || m.v->popo->type != 1 || !m.v->popo->value.signature) {
            ProtectionAlg none;
            none.ok = true;
            return none;
        }
        return describe_alg(m.v->popo->value.signature->algorithmIdentifier);
    }

    RevocationReason revocation_reason(BytesView der) {
        RevocationReason r;
        Mirror<X2S_PKIMESSAGE_RR> m(ASN1_ITEM_rptr(X2S_PKIMESSAGE_RR), der.data(), der.size());
        if (!m.v || !m.v->body || OPENSSL_sk_num(m.v->body) < 1) return r;
        r.ok = true;
        auto* d = static_cast<X2S_REVDETAILS*>(OPENSSL_sk_value(m.v->body, 0));
        for (int i = 0; d->crlEntryDetails && i < sk_X509_EXTENSION_num(d->crlEntryDetails); ++i) {
            X509_EXTENSION* e = sk_X509_EXTENSION_value(d->crlEntryDetails, i);
            if (OBJ_obj2nid(X509_EXTENSION_get_object(e)) != NID_crl_reason) continue;
            auto* en = static_cast<ASN1_ENUMERATED*>(X509V3_EXT_d2i(e));
            if (!en) {
                ERR_clear_error();
                r.ok = false;  // a reasonCode that does not decode
                return r;
            }
            long v = ASN1_ENUMERATED_get(en);
            ASN1_ENUMERATED_free(en);
            r.reason = (v < 0 || v > 255) ? 256 : static_cast<int>(v);
            break;
        }
        return r;
    }

    Result<Bytes> replace_error_content(BytesView der, const OSSL_CMP_PKISI* si, const std::string& text) {
        Mirror<X2S_PKIMESSAGE_ERR> m(ASN1_ITEM_rptr(X2S_PKIMESSAGE_ERR), der.data(), der.size());
        if (!m.v || !m.v->body) return Error(ErrorDomain::Cmp, 0, "not an error PKIMessage");
        X2S_ERRORMSGCONTENT* c = m.v->body;
        OSSL_CMP_PKISI_free(c->pKIStatusInfo);
        c->pKIStatusInfo = OSSL_CMP_PKISI_dup(si);
        ASN1_INTEGER_free(c->errorCode);
        c->errorCode = nullptr;
        sk_ASN1_UTF8STRING_pop_free(c->errorDetails, ASN1_UTF8STRING_free);
        c->errorDetails = sk_ASN1_UTF8STRING_new_null();
        ASN1_UTF8STRING* t = ASN1_UTF8STRING_new();
        if (!c->pKIStatusInfo || !c->errorDetails || !t ||
            !ASN1_STRING_set(t, text.data(), static_cast<int>(text.size())) ||
            !sk_ASN1_UTF8STRING_push(c->errorDetails, t)) {
            ASN1_UTF8STRING_free(t);
            ERR_clear_error();
            return Error(ErrorDomain::Cmp, 0, "cannot build ErrorMsgContent");
        }
        unsigned char* out = nullptr;
        int n = ASN1_item_i2d(reinterpret_cast<ASN1_VALUE*>(m.v), &out, ASN1_ITEM_rptr(X2S_PKIMESSAGE_ERR));
        if (n <= 0) {
            ERR_clear_error();
            return Error(ErrorDomain::Cmp, 0, "cannot encode the error PKIMessage");
        }
        Bytes b(out, out + n);
        OPENSSL_free(out);
        return b;
    }

}  // namespace x2sec::cmp::detail
