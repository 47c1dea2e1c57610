// OCSP in IKEv2 (RFC 4806): CERTREQ / CERT payloads of encoding 14 (OCSP Content).  The task
// files call these hooks; the logic is in ocsp_content.cpp.
#pragma once

#include <vector>

#include "../engine_internal.hpp"

namespace x2sec::ike::ocsp_content {

inline constexpr uint8_t kEncoding = 14;  // Certificate Encoding "OCSP Content"

// The CERTREQ (encoding 14, no responder hashes: any responder the CA authorised) asking the
// peer for its OCSP response, when the peer config's ocsp_stapling is not off.
void add_certreq(const PeerConfig& p, std::vector<wire::Payload>& out);
// Whether the peer's message carries a CERTREQ of encoding 14 (it asks for our OCSP response).
bool asks(const std::vector<wire::Payload>& in);
// Our OCSP response as CERT encoding 14, when `asked` and a response is available
// (ocsp_staple_file, or a look-up at our AIA URL, cached until nextUpdate).  Without one nothing
// is added (counted ike.ocsp.staple_unavailable).
void add_staple(EngineImpl& e, const IkeSa& sa, const PeerConfig& p, bool asked, std::vector<wire::Payload>& out);
// True when the peer sent a CERT of encoding 14 that this config uses, or always under
// require: the leaf's revocation status is then settled by check(), not by the trust store's
// revocation checker.
bool settles_leaf(const PeerConfig& p, const std::vector<wire::Payload>& in);
// After the chain verified: the stapled response for chain[0] (issuer chain[1]), or the
// requirement of one.  Errors are ErrorDomain::Pki with a VerifyFailure code naming the cause.
Status check(EngineImpl& e, const IkeSa& sa, const PeerConfig& p, const x509::VerifiedChain& chain,
             const std::vector<wire::Payload>& in, int64_t now);

}  // namespace x2sec::ike::ocsp_content
