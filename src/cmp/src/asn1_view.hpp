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

// The publicKey of the CertTemplate of a CertReqMsg (null when absent or malformed).
pki::PkeyPtr template_public_key(const OSSL_CRMF_MSG* crm);
// The DER of each of the extraCerts of a DER PKIMessage, in message order (empty when none or
// the message is malformed); decoding them is the caller's (Server: through its certificate cache).
std::vector<Bytes> extra_certs_der(BytesView der_message);

// The header's protectionAlg of a DER PKIMessage: its OID as a NID (NID_undef when the
// message is unprotected); `ok` false when the header does not decode.
struct ProtectionAlg {
    bool ok = false;
    bool present = false;
    int nid = NID_undef;            // signature or MAC algorithm OID
    std::string name;               // its short name, or the dotted OID
    bool implicit_confirm = false;  // (protection_alg only) generalInfo carries id-it-implicitConfirm
};
ProtectionAlg protection_alg(BytesView der_message);

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
