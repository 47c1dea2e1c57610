// Spreading the periodic timers of SAs that came up together (a SeGW after a power cut): a
// timer due `base` after its start runs at base - U(0, base * percent / 100) instead, so N SAs
// established at the same instant fire over a window of that width rather than all at once.
#pragma once

#include <algorithm>
#include <cstdint>
#include <x2sec/common/rng.hpp>
#include <x2sec/common/time.hpp>

namespace x2sec::ike {

// `random` is one uniform 32-bit draw; percent is capped at 100; a base of 0 (timer off) or a
// percent of 0 (no jitter) returns base unchanged.
inline Millis jittered(Millis base, uint32_t percent, uint32_t random) {
    if (base <= 0 || percent == 0) return base;
    const auto window = static_cast<uint64_t>(base) * std::min<uint32_t>(percent, 100) / 100;
    return base - static_cast<Millis>(random % (window + 1));
}
// The same with a draw from `rng`, taken only when there is a window (a replayed exchange with a
// fixed RNG sees the same draws as before when the jitter is off).
inline Millis jittered(Millis base, uint32_t percent, Rng& rng) {
    if (base <= 0 || percent == 0) return base;
    return jittered(base, percent, rng.u32());
}

}  // namespace x2sec::ike
