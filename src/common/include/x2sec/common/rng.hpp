// Randomness is injected so exchanges can be replayed with a fixed RNG in tests.
#pragma once

#include <cstdint>
#include <span>
#include <x2sec/common/bytes.hpp>

namespace x2sec {

class Rng {
public:
    virtual ~Rng() = default;
    virtual void fill(std::span<uint8_t> out) = 0;
    Bytes bytes(size_t n) {
        Bytes b(n);
        fill(b);
        return b;
    }
    uint32_t u32() {
        uint8_t b[4];
        fill(b);
        return (uint32_t(b[0]) << 24) | (uint32_t(b[1]) << 16) | (uint32_t(b[2]) << 8) | b[3];
    }
    uint64_t u64() { return (uint64_t(u32()) << 32) | u32(); }
};

// OpenSSL's RAND_bytes (aborts the process if the DRBG fails: there is no safe fallback).
// Requests under 256 octets are served from a per-thread 1 KiB block of its output, wiped as
// it is handed out and emptied in a forked child (rng.cpp).
class OsRng final : public Rng {
public:
    void fill(std::span<uint8_t> out) override;
};

// Deterministic stream (SHA-256 in counter mode over a seed): for tests only, never for keys
// outside tests.
class DeterministicRng final : public Rng {
public:
    explicit DeterministicRng(uint64_t seed);
    void fill(std::span<uint8_t> out) override;

private:
    uint64_t m_seed;
    uint64_t m_counter = 0;
    uint8_t m_block[32]{};
    size_t m_used = 32;
};

// Process-wide OS RNG, for code that is not under test control.
Rng& os_rng();

}  // namespace x2sec
