// OCSP in IKEv2 (RFC 4806): CERTREQ / CERT payloads of encoding 14 (OCSP Content).  The task
// files call these hooks; the logic is in ocsp_content.cpp.
#pragma once

#include <optional>
#include <vector>

#include "../engine_internal.hpp"

namespace x2sec::ike::ocsp_content {

inline constexpr uint8_t kEncoding = 14;  // Certificate Encoding "OCSP Content"

// The key hashes a CERTREQ of encoding 14 lists (RFC 4806 3.1: the SHA-1 hashes of the public
// keys of the OCSP responders the sender trusts; empty: it trusts its CA's own and delegated
// responders only).  nullopt: the peer sent no such CERTREQ (does not ask for our response).
using Asked = std::optional<std::vector<Bytes>>;

// The CERTREQ (encoding 14) asking the peer for its OCSP response, when the peer config's
// ocsp_stapling is not off: the SHA-1 SubjectPublicKeyInfo hashes of p.ocsp_responders.
void add_certreq(const PeerConfig& p, std::vector<wire::Payload>& out);
// Whether the peer's message carries CERTREQs of encoding 14, and the hashes they list.
Asked asks(const std::vector<wire::Payload>& in);
// Our OCSP response as CERT encoding 14, when `asked` and a response is available
// (ocsp_staple_file, or what p.ocsp_stapler has cached; never a fetch here) and the peer can
// accept its signer: one whose key hash it listed, or our CA or a responder our CA authorised.
// Otherwise nothing is added, counted and logged (ike.ocsp.staple_unavailable,
// ike.ocsp.staple_signer_not_listed, ike.ocsp.staple_signer_unknown).
void add_staple(EngineImpl& e, const IkeSa& sa, const PeerConfig& p, const Asked& asked,
                std::vector<wire::Payload>& out);
// True when the peer sent a CERT of encoding 14 that this config uses, or always under
// require: the leaf's revocation status is then settled by check(), not by the trust store's
// revocation checker.
bool settles_leaf(const PeerConfig& p, const std::vector<wire::Payload>& in);
// After the chain verified: the stapled response for chain[0] (issuer chain[1]; signed by it,
// a responder it authorised, or one of p.ocsp_responders), or the requirement of one.  Errors
// are ErrorDomain::Pki with a VerifyFailure code naming the cause.
Status check(EngineImpl& e, const IkeSa& sa, const PeerConfig& p, const x509::VerifiedChain& chain,
             const std::vector<wire::Payload>& in, int64_t now);

}  // namespace x2sec::ike::ocsp_content
