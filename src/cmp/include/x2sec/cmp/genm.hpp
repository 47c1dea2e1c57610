// The values of the RFC 9480 / RFC 9483 4.3 general messages that OpenSSL 3.0 has no ASN.1
// types for (OSSL_CMP_ITAV_new_rootCaKeyUpdate, ..._new0_certReqTemplate arrive in 3.2):
// defined with OpenSSL's own ASN.1 template macros (genm.cpp), reusing its X509 and
// OSSL_CRMF_CERTTEMPLATE types, so OpenSSL encodes and decodes them; x2sec writes no DER.
// In an OSSL_CMP_ITAV they are an ASN1_TYPE holding the SEQUENCE (3.0's ITAV template does
// not know these infoType OIDs and keeps their value as ANY).
#pragma once

#include <openssl/asn1.h>
#include <openssl/cmp.h>
#include <openssl/crmf.h>
#include <openssl/safestack.h>
#include <openssl/x509.h>
#include <memory>
#include <optional>
#include <string>
#include <vector>
#include <x2sec/cmp/profile.hpp>
#include <x2sec/common/bytes.hpp>
#include <x2sec/common/result.hpp>
#include <x2sec/pki/pki.hpp>

// RootCaKeyUpdateContent ::= SEQUENCE {                (RFC 9480 2.14, EXPLICIT TAGS)
//     newWithNew       CMPCertificate,
//     newWithOld   [0] CMPCertificate OPTIONAL,
//     oldWithNew   [1] CMPCertificate OPTIONAL }
struct X2SEC_ROOTCAKEYUPDATE_st {
    X509* newWithNew;
    X509* newWithOld;
    X509* oldWithNew;
};
using X2SEC_ROOTCAKEYUPDATE = X2SEC_ROOTCAKEYUPDATE_st;
DECLARE_ASN1_FUNCTIONS(X2SEC_ROOTCAKEYUPDATE)

// AttributeTypeAndValue ::= SEQUENCE { type OBJECT IDENTIFIER, value ANY DEFINED BY type }
// (RFC 4211 6; the elements of Controls)
struct X2SEC_ATAV_st {
    ASN1_OBJECT* type;
    ASN1_TYPE* value;
};
using X2SEC_ATAV = X2SEC_ATAV_st;
DECLARE_ASN1_FUNCTIONS(X2SEC_ATAV)
DEFINE_STACK_OF(X2SEC_ATAV)

// CertReqTemplateContent ::= SEQUENCE {                (RFC 9480 2.16)
//     certTemplate  CertTemplate,
//     keySpec       Controls OPTIONAL }               Controls ::= SEQUENCE SIZE (1..MAX) OF AttributeTypeAndValue
struct X2SEC_CERTREQTEMPLATE_st {
    OSSL_CRMF_CERTTEMPLATE* certTemplate;
    STACK_OF(X2SEC_ATAV) * keySpec;
};
using X2SEC_CERTREQTEMPLATE = X2SEC_CERTREQTEMPLATE_st;
DECLARE_ASN1_FUNCTIONS(X2SEC_CERTREQTEMPLATE)

namespace x2sec::cmp {

// infoType OIDs (RFC 9480 2.x, id-it = 1.3.6.1.5.5.7.4) and the key controls (id-regCtrl).
inline constexpr const char* kIdItCaCerts = "1.3.6.1.5.5.7.4.17";
inline constexpr const char* kIdItRootCaKeyUpdate = "1.3.6.1.5.5.7.4.18";
inline constexpr const char* kIdItCertReqTemplate = "1.3.6.1.5.5.7.4.19";
inline constexpr const char* kIdItRootCaCert = "1.3.6.1.5.5.7.4.20";
inline constexpr const char* kIdRegCtrlAlgId = "1.3.6.1.5.5.7.5.1.11";
inline constexpr const char* kIdRegCtrlRsaKeyLen = "1.3.6.1.5.5.7.5.1.12";

struct GenmFree {
    void operator()(X2SEC_ROOTCAKEYUPDATE* v) const { X2SEC_ROOTCAKEYUPDATE_free(v); }
    void operator()(X2SEC_CERTREQTEMPLATE* v) const { X2SEC_CERTREQTEMPLATE_free(v); }
    void operator()(OSSL_CMP_ITAV* v) const { OSSL_CMP_ITAV_free(v); }
};
using RootCaKeyUpdatePtr = std::unique_ptr<X2SEC_ROOTCAKEYUPDATE, GenmFree>;
using CertReqTemplatePtr = std::unique_ptr<X2SEC_CERTREQTEMPLATE, GenmFree>;
using ItavPtr = std::unique_ptr<OSSL_CMP_ITAV, GenmFree>;

// An InfoTypeAndValue of type `oid` whose infoValue is `value` encoded by `item`, or absent
// when value is null.  nullptr on failure (OpenSSL's error queue says why).
ItavPtr make_itav(const char* oid, const ASN1_ITEM* item, const void* value);
// The dotted OID of an ITAV's infoType.
std::string itav_oid(const OSSL_CMP_ITAV* itav);
// The infoValue of an ITAV whose type OpenSSL 3.0 does not know, as the DER of the value:
// nullopt when absent, an Error when it is not a constructed value (SEQUENCE).
Result<std::optional<Bytes>> itav_value_der(const OSSL_CMP_ITAV* itav);

// Decoders (OpenSSL's template decoder; trailing octets are an error).
Result<RootCaKeyUpdatePtr> decode_root_ca_key_update(BytesView der);
Result<CertReqTemplatePtr> decode_cert_req_template(BytesView der);
Result<pki::X509Ptr> decode_certificate(BytesView der);

// A root CA key update (RFC 4210 4.4): the new self-signed root and the two link
// certificates.  new_with_old: the new root's name and key, signed by the old root key;
// old_with_new: the old root's name and key, signed by the new root key.
struct RootKeyUpdate {
    pki::X509Ptr new_with_new, new_with_old, old_with_new;
};
// Ok, or an Error naming what is inconsistent: newWithNew not self-signed, newWithOld not
// carrying the new root's name and key, oldWithNew not signed by the new key.
Status check_root_key_update(const RootKeyUpdate& u);
// Whether `old_root` is the root newWithOld was signed with (its key verifies it).
bool is_old_root_of(const RootKeyUpdate& u, X509* old_root);
// Makes the new root (Profile::RootCa, subject of the old root unless `new_subject` is given)
// for `new_key` (valid from `not_before` for `validity_days`) and both link certificates (from
// `not_before` until the old root expires): pki::make_root_update, checked with
// check_root_key_update.
Result<RootKeyUpdate> make_root_key_update(X509* old_root, EVP_PKEY* old_key, EVP_PKEY* new_key,
                                           const std::string& new_subject, int64_t not_before, int64_t validity_days);

// The certificate request template of a profile (RFC 9483 4.3.3) for a requester with the
// node identities `identities`: subject CN = the identity; subjectAltName with the identity
// as dNSName (when the profile permits dNSNames; an empty dNSName when the identity does not
// fit the patterns, for the EE to fill in), an empty iPAddress when the profile requires one,
// a URI (the pattern with the placeholders filled in, or empty when it has a `*`) when it
// requires one; keySpec: an id-regCtrl-algId per permitted EC key type (id-ecPublicKey with
// the curve) and an id-regCtrl-rsaKeyLen per RSA size, absent when the profile permits any.
Result<CertReqTemplatePtr> make_cert_req_template(const IssuanceProfile& p, const std::vector<std::string>& identities);

}  // namespace x2sec::cmp
