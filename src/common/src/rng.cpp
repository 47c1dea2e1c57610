#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <x2sec/common/rng.hpp>

namespace x2sec {

void OsRng::fill(std::span<uint8_t> out) {
    if (out.empty()) return;
    if (RAND_bytes(out.data(), static_cast<int>(out.size())) != 1) {
        std::fprintf(stderr, "x2sec: RAND_bytes failed; refusing to continue without randomness\n");
        std::abort();
    }
}

DeterministicRng::DeterministicRng(uint64_t seed) : m_seed(seed) {}

void DeterministicRng::fill(std::span<uint8_t> out) {
    size_t i = 0;
    while (i < out.size()) {
        if (m_used == sizeof(m_block)) {
            uint8_t in[16];
            for (int k = 0; k < 8; ++k) in[k] = static_cast<uint8_t>(m_seed >> (56 - 8 * k));
            for (int k = 0; k < 8; ++k) in[8 + k] = static_cast<uint8_t>(m_counter >> (56 - 8 * k));
            ++m_counter;
            unsigned int len = 0;
            EVP_Digest(in, sizeof(in), m_block, &len, EVP_sha256(), nullptr);
            m_used = 0;
        }
        size_t n = std::min(out.size() - i, sizeof(m_block) - m_used);
        std::memcpy(out.data() + i, m_block + m_used, n);
        m_used += n;
        i += n;
    }
}

Rng& os_rng() {
    static OsRng rng;
    return rng;
}

}  // namespace x2sec
