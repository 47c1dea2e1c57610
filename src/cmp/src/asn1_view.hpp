// Read-only views into CMP/CRMF structures that OpenSSL 3.0 parses but has no getters for
// (3.2+ adds OSSL_CRMF_CERTTEMPLATE_get0_publicKey and OSSL_CMP_MSG_get0_extraCerts).  They
// are decoded with OpenSSL's own ASN.1 template engine (asn1t.h item definitions that mirror
// RFC 4211 / RFC 4210), not by hand.
#pragma once

#include <openssl/cmp.h>
#include <openssl/crmf.h>
#include <vector>
#include <x2sec/common/bytes.hpp>
#include <x2sec/pki/ossl.hpp>

namespace x2sec::cmp::detail {

// The publicKey of the CertTemplate of a CertReqMsg (null when absent or malformed).
pki::PkeyPtr template_public_key(const OSSL_CRMF_MSG* crm);
// The extraCerts of a DER PKIMessage, in message order (empty when none or malformed).
std::vector<pki::X509Ptr> extra_certs(BytesView der_message);

}  // namespace x2sec::cmp::detail
