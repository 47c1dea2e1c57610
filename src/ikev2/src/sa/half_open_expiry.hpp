// When a half-open responder IKE SA (IKE_SA_INIT answered, IKE_AUTH not yet) expires.
//
// half_open_timeout reclaims the state of initiators that never send IKE_AUTH.  But a SeGW after
// a power cut admits thousands of half-open SAs at once (up to max_half_open) and authenticates
// them one after the other: when that takes longer than half_open_timeout, the SAs it has not
// reached yet expire although their initiators are waiting for it, and those initiators are
// stranded — their IKE_AUTH (and every retransmission of it) meets an unknown SPI until their
// own retransmissions run out, minutes later, and the DH work on both sides is lost.
//
// So, while the responder is loaded (at least cookie_threshold half-open SAs) and still bringing
// half-open SAs up (one within the last 2 s), a half-open SA past half_open_timeout is kept,
// checked again every second, up to 4 x half_open_timeout in all: the responder is behind, not
// the initiator.  When nothing comes up (initiators that never send IKE_AUTH and nobody else
// served), or below the threshold, every SA expires at half_open_timeout as before.  The cost:
// under load, half-open SAs of initiators that never finish also hold their slot (still within
// max_half_open and max_half_open_per_source) up to 4 x longer.
#pragma once

#include <cstddef>
#include <cstdint>
#include <x2sec/common/time.hpp>

namespace x2sec::ike {

class HalfOpenOrder {
public:
    static constexpr Millis kRecheckMs = 1000;
    static constexpr Millis kServingMs = 2000;
    static constexpr Millis kMaxFactor = 4;
    // A half-open responder SA came up (IKE_AUTH done) at `now`.
    void served(Millis now) {
        ++m_served;
        m_last_served = now;
    }
    // Whether a half-open SA of this age expires at `now`; `loaded`: the responder holds at least
    // cookie_threshold half-open SAs.
    bool expires(Millis now, Millis age, Millis timeout, bool loaded) const {
        if (age < timeout) return false;
        if (age >= kMaxFactor * timeout || !loaded || m_served == 0) return true;
        return now - m_last_served > kServingMs;
    }

private:
    uint64_t m_served = 0;
    Millis m_last_served = 0;
};

}  // namespace x2sec::ike
