// x2sec::x509 OCSP (RFC 6960): look-ups at the responder named in a certificate's
// authorityInfoAccess (id-ad-ocsp), and verification of an OCSP response however it arrived
// (an HTTP look-up, or an IKEv2 CERT payload of encoding 14, RFC 4806).  Built on OpenSSL's
// OCSP API; nothing is hand-encoded.
//
// A response is accepted only when:
//   * responseStatus is successful and it is a BasicOCSPResponse;
//   * it is signed by the certificate's issuer, or by a responder certificate the issuer issued
//     with extendedKeyUsage id-kp-OCSPSigning (OCSP_basic_verify: signer authorised), whose
//     chain verifies to the issuer at `now`, or by one of OcspOptions::trusted_responders (RFC
//     6960 2.2 "a Trusted Responder whose public key is trusted by the requester": the
//     signature is checked with that certificate's key, the certificate must be valid at `now`,
//     nothing else about it is asked);
//   * it carries a SingleResponse for exactly this certificate (CertID over the issuer name and
//     key, SHA-1 as RFC 5019 asks);
//   * thisUpdate <= now + max_skew_s and (nextUpdate absent or now <= nextUpdate + max_skew_s),
//     and, with max_age_s >= 0, thisUpdate >= now - max_age_s;
//   * with a nonce sent (look-ups): the response echoes it (if require_nonce), and never a
//     different one.
// Errors are ErrorDomain::Pki with code VerifyFailure::CrlUnavailable (no usable answer) and
// name the URL / what failed; a verified answer is returned with its status.
#pragma once

#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <vector>
#include <x2sec/common/bytes.hpp>
#include <x2sec/common/result.hpp>
#include <x2sec/x509/x509.hpp>

namespace x2sec::x509 {

enum class OcspStatus { Good, Revoked, Unknown };
const char* to_string(OcspStatus s);

// Who signed an accepted response (RFC 6960 2.2): the certificate's issuer, a responder the
// issuer authorised (id-kp-OCSPSigning), or a responder the verifier trusts by configuration.
enum class OcspSigner { Issuer, Delegated, Trusted };
const char* to_string(OcspSigner s);

struct OcspAnswer {
    OcspStatus status = OcspStatus::Unknown;
    int reason = -1;         // CRLReason when revoked and given, else -1
    int64_t revoked_at = 0;  // revocationTime (unix seconds) when revoked
    int64_t this_update = 0;
    int64_t next_update = 0;  // 0 when absent
    Bytes response_der;       // the whole OCSPResponse (e.g. to send in IKEv2, RFC 4806)
    OcspSigner signer = OcspSigner::Issuer;
    Bytes signer_spki_sha1;  // SHA-1 of the signer certificate's DER SubjectPublicKeyInfo
};

// Lets another thread abandon a look-up in flight (OcspOptions::cancel): cancel() shuts the
// look-up's connection down, so that it fails at once instead of at its timeout (a silent
// responder); a look-up that starts after cancel() fails at once.  The connect itself is
// bounded by the timeout only.
class OcspCancel {
public:
    void cancel();
    bool cancelled() const;
    // For ocsp_lookup: the connected socket of the look-up in flight (false: already
    // cancelled, do not go on), and the end of its use (true: cancel() came meanwhile).
    bool attach(int fd);
    bool detach();

private:
    mutable std::mutex m_mu;
    int m_fd = -1;
    bool m_cancelled = false;
};

struct OcspOptions {
    int timeout_ms = 5000;        // one HTTP POST, connect to last octet (whole seconds, >= 1 s)
    size_t max_size = 64 * 1024;  // larger responses are refused
    bool nonce = true;            // send a nonce (RFC 8954 length 32) in look-ups
    bool require_nonce = true;    // with nonce: the response must echo it
    int64_t max_skew_s = 300;     // clock tolerance for thisUpdate / nextUpdate
    int64_t max_age_s = -1;       // thisUpdate no older than this (-1: no limit)
    // Responders trusted for any certificate without the issuer's authorisation (see above).
    std::vector<Certificate> trusted_responders;
    OcspCancel* cancel = nullptr;  // look-ups only: see OcspCancel (not owned)
};

// The signer of a response, found without trusting it: the certificate among the response's
// own certificates, `issuer` and `known` that its responderID names and whose key verifies the
// signature.  ca_authorised: it is `issuer`, or a responder `issuer` authorised
// (id-kp-OCSPSigning, chain to `issuer` valid at `now`).  Used by the side that staples a
// response (RFC 4806) to see whether the peer can accept it.
struct OcspSignerInfo {
    std::optional<Certificate> cert;
    Bytes spki_sha1;  // SHA-1 of its DER SubjectPublicKeyInfo (as RFC 4806 CERTREQ lists them)
    bool by_issuer = false;
    bool ca_authorised = false;
};
Result<OcspSignerInfo> ocsp_response_signer(BytesView der, const Certificate& issuer,
                                            const std::vector<Certificate>& known, int64_t now);

// The first http:// id-ad-ocsp URL of the certificate's authorityInfoAccess ("" if none).
std::string ocsp_url(const Certificate& cert);

// Asks the responder at `url` about `cert` (issued by `issuer`): POST application/ocsp-request
// (no proxy), then verify as above.
Result<OcspAnswer> ocsp_lookup(const Certificate& cert, const Certificate& issuer, const std::string& url,
                               const OcspOptions& opt, int64_t now);

// Verifies a DER OCSPResponse for `cert` / `issuer` (no nonce: the response was not asked for
// by this request, e.g. stapled in IKEv2).
Result<OcspAnswer> ocsp_verify_response(BytesView der, const Certificate& cert, const Certificate& issuer,
                                        const OcspOptions& opt, int64_t now);

}  // namespace x2sec::x509
