// Read-only views into CMP/CRMF structures that OpenSSL 3.0 parses but has no getters for
// (3.2+ adds OSSL_CRMF_CERTTEMPLATE_get0_publicKey and OSSL_CMP_MSG_get0_extraCerts).  They
// are decoded with OpenSSL's own ASN.1 template engine (asn1t.h item definitions that mirror
// RFC 4211 / RFC 4210), not by hand.
#pragma once

#include <openssl/cmp.h>
#include <openssl/crmf.h>
#include <string>
#include <vector>
#include <x2sec/common/result.hpp>
#include <x2sec/common/bytes.hpp>
#include <x2sec/pki/ossl.hpp>

namespace x2sec::cmp::detail {

// The publicKey of the CertTemplate of a CertReqMsg: the key (null when absent or malformed)
// and its DER SubjectPublicKeyInfo as the request carries it.  An EC key on a named curve is
// imported from its point (EVP_PKEY_fromdata, which checks that the point is on the curve)
// instead of through OpenSSL 3.0's provider decoders, which cost ten signatures per key.
struct TemplateKey {
    pki::PkeyPtr key;
    Bytes spki;
};
TemplateKey template_public_key(const OSSL_CRMF_MSG* crm);

// The header's protectionAlg of a PKIMessage: its OID as a NID (NID_undef when the message is
// unprotected); `ok` false when the header does not decode.
struct ProtectionAlg {
    bool ok = false;
    bool present = false;
    int nid = NID_undef;            // signature or MAC algorithm OID
    std::string name;               // its short name, or the dotted OID
    bool implicit_confirm = false;  // (view_message only) generalInfo carries id-it-implicitConfirm
};

// One pass over a DER PKIMessage (OpenSSL's template engine, certificates kept as DER): `ok`
// false when it is not one PKIMessage without trailing bytes.  extra_certs: the DER of each
// of the extraCerts in message order (empty when none, or when one is not a SEQUENCE);
// decoding them is the caller's (Server: through its certificate cache).  without_extra_certs:
// the same message with its extraCerts left out, header, body and protection as they came
// (the protection covers header and body only, RFC 4210 5.1.3), so that OpenSSL decodes no
// certificate a second time.
struct MessageView {
    bool ok = false;
    ProtectionAlg protection;  // .ok false when the header does not decode
    std::vector<Bytes> extra_certs;
    Bytes without_extra_certs;
};
MessageView view_message(BytesView der_message);

// The header's senderNonce of a DER PKIMessage (empty when absent or when it does not decode);
// extraCerts and body are not decoded.
Bytes sender_nonce(BytesView der_message);

// The signature AlgorithmIdentifier of a CertReqMsg's POPOSigningKey: present = false when the
// POP is not a signature (raVerified, keyEncipherment, ...) or absent.
ProtectionAlg popo_signature_alg(const OSSL_CRMF_MSG* crm);

// The CRLReason of the first RevDetails of an rr (its crlEntryDetails reasonCode extension):
// -1 when the request names none; `ok` false when the message is not a decodable rr.
struct RevocationReason {
    bool ok = false;
    int reason = -1;
};
RevocationReason revocation_reason(BytesView der_message);

// For an `error` PKIMessage produced by OpenSSL: the same message with its
// ErrorMsgContent replaced by {si, errorDetails = [text]} (DER).  The caller re-protects it
// (OSSL_CMP_MSG_update_transactionID), since the protection covers the body.  The PKIStatusInfo
// itself comes from OSSL_CMP_STATUSINFO_new; OpenSSL's template engine does the encoding.
Result<Bytes> replace_error_content(BytesView der_error_message, const OSSL_CMP_PKISI* si, const std::string& text);

}  // namespace x2sec::cmp::detail
