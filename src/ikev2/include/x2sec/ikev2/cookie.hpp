// COOKIEs (RFC 7296 2.6): the responder's secret, the COOKIEs it hands out and their check, in
// one place for the engine (which demands and checks them above cookie_threshold half-open SAs)
// and the runtime's receive queue (which serves an IKE_SA_INIT with a valid COOKIE before the
// plain ones, docs/ikev2.md "Receive queue").
//
//   COOKIE = <version of the secret, 4 octets> | SHA-256(Ni | IPi | SPIi | <secret>)
//
// A COOKIE made with the current secret or the one before it is valid; the secret rotates every
// cookie_secret_lifetime_ms, so a COOKIE is valid for one to two lifetimes.
#pragma once

#include <cstdint>
#include <x2sec/common/bytes.hpp>
#include <x2sec/common/child_sa.hpp>  // IpAddress
#include <x2sec/common/rng.hpp>
#include <x2sec/common/time.hpp>

namespace x2sec::ike {

class CookieJar {
public:
    static constexpr size_t kCookieSize = 4 + 32;
    // No secret until the first rotation: nothing is valid then.
    bool ready() const { return m_rotated_at >= 0; }
    Millis rotated_at() const { return m_rotated_at; }
    uint32_t version() const { return m_version; }
    // A new secret; the current one becomes the old one (the one before is forgotten).
    void rotate(Rng& rng, Millis now);
    // The COOKIE for this initiator under the current secret (empty before the first rotation).
    Bytes make(BytesView ni, const IpAddress& ipi, uint64_t spi_i) const;
    // Whether `cookie` is the COOKIE for this initiator under the current or the old secret
    // (the version prefix picks the secret; one SHA-256 at most, compared in constant time).
    bool valid(BytesView cookie, BytesView ni, const IpAddress& ipi, uint64_t spi_i) const;

private:
    static Bytes compute(BytesView ni, const IpAddress& ipi, uint64_t spi_i, const SecureBytes& secret,
                         uint32_t version);
    SecureBytes m_secret, m_old;
    uint32_t m_version = 0;
    Millis m_rotated_at = -1;
};

// What an IKE_SA_INIT request's COOKIE notify is worth (Engine::check_init_cookie).
enum class CookieCheck {
    None,       // no COOKIE notify: a plain IKE_SA_INIT
    Valid,      // a COOKIE this responder handed out (current or previous secret)
    Bad,        // a COOKIE that does not verify (forged, for another initiator, or expired)
    Malformed,  // not an IKE_SA_INIT request, or its payload chain does not hold together
                // (truncated, a length out of bounds, two COOKIEs or Nonces, a COOKIE without Nonce)
};
const char* to_string(CookieCheck c);

// The COOKIE notify's data and the Nonce payload's data of an IKE_SA_INIT request, found by a
// walk over the generic payload headers only (checked reads; the payload bodies other than the
// COOKIE notify's are not decoded): views into `datagram`.
struct InitCookieFields {
    bool malformed = false;
    BytesView cookie, nonce;  // empty when absent
    uint64_t spi_i = 0;
};
InitCookieFields peek_init_cookie(BytesView datagram);

}  // namespace x2sec::ike
