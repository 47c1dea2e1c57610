// x2sec::cmp::OcspResponder — an RFC 6960 OCSP responder for the operator issuing CA, answering
// from the RA/CA's store (cmp::Store), so a revocation by rr, by `x2sec ca revoke` or by a
// negative certConf is visible at once, on every instance sharing the store.
//
// Sans-I/O: respond() takes one DER OCSPRequest and returns one DER OCSPResponse; HttpServer
// (http.hpp) serves it over HTTP (POST application/ocsp-request, and GET <path>/<base64>,
// RFC 6960 A.1).  Built on OpenSSL's OCSP API (d2i_OCSP_REQUEST, OCSP_basic_add1_status,
// OCSP_basic_sign, OCSP_copy_nonce); no DER is written by hand.
//
//  * Each CertID is matched against the issuing CA (issuer name and key hash, in the hash
//    algorithm the request uses: SHA-1, SHA-256, SHA-384, SHA-512); a CertID of another issuer,
//    or a serial the store does not hold, is `unknown`; a revoked serial is `revoked` with its
//    time and CRLReason (none for unspecified, as in the CRL); any other recorded one `good`.
//  * Signed by a delegated OCSP signer (a certificate of the issuing CA with id-kp-OCSPSigning
//    and id-pkix-ocsp-nocheck, see ensure_ocsp_signer), which is included in the response along
//    with the issuing CA when that is not the root.
//  * The request's nonce (RFC 8954: 1..32 octets) is echoed; a longer one is malformedRequest.
//  * Bad input never gets a signed answer: not DER, trailing octets, no CertID, more than
//    `max_certs` CertIDs or an oversized nonce: malformedRequest; the store failing: tryLater.
//    Counters: ocsp.rx.requests, ocsp.tx.{good,revoked,unknown} (per CertID),
//    ocsp.reject.{malformed,too_many,nonce}, ocsp.error.{store,sign}.
#pragma once

#include <memory>
#include <string>
#include <x2sec/cmp/store.hpp>
#include <x2sec/common/counters.hpp>
#include <x2sec/common/result.hpp>
#include <x2sec/pki/pki.hpp>

namespace x2sec::cmp {

struct OcspConfig {
    pki::X509Ptr ca_cert;      // the issuing CA whose certificates are answered for
    pki::X509Ptr signer_cert;  // delegated OCSP signer (issued by ca_cert)
    pki::PkeyPtr signer_key;
    std::vector<pki::X509Ptr> extra;  // sent with the signer (the issuing CA if not a root)
    int next_update_s = 3600;         // nextUpdate = thisUpdate + this (0: no nextUpdate)
    int max_certs = 32;               // CertIDs per request
};

class OcspResponder {
public:
    // The store and counters must outlive the responder.
    OcspResponder(OcspConfig cfg, Store& store, Counters& counters);
    ~OcspResponder();
    OcspResponder(const OcspResponder&) = delete;
    OcspResponder& operator=(const OcspResponder&) = delete;
    // Always a DER OCSPResponse (successful and signed, or an unsigned error status).
    // Thread-safe.
    Bytes respond(BytesView request_der);
    Counters& counters() { return m_counters; }

private:
    struct Impl;
    std::unique_ptr<Impl> m_impl;
    Counters& m_counters;
};

// The delegated OCSP signer of an operator CA directory: `<dir>/ocsp.crt` and `<dir>/ocsp.key`
// when they exist, match the issuing CA and are valid for at least a quarter of `validity_days`
// more; otherwise a new P-256 key and certificate (pki::Profile::OcspSigner, validity_days) are
// issued with the CA key and written atomically (key 0600).  Short-lived on purpose: a signer
// with id-pkix-ocsp-nocheck cannot be revoked, it must expire.
Status ensure_ocsp_signer(const std::string& ca_dir, X509* ca_cert, EVP_PKEY* ca_key, OcspConfig& out,
                          int validity_days = 30);

}  // namespace x2sec::cmp
