#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <pthread.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <x2sec/common/rng.hpp>

namespace x2sec {

namespace {

[[noreturn]] void no_randomness() {
    std::fprintf(stderr, "x2sec: RAND_bytes failed; refusing to continue without randomness\n");
    std::abort();
}

// Small requests (an IKE setup draws about ten: SPIs, nonce, DH scalar, IVs) are served from a
// per-thread block filled by one RAND_bytes call.  In OpenSSL 3.0 every RAND_bytes call costs
// about 0.9 us whatever its size up to a few hundred octets (the CTR-DRBG re-keys its AES for
// the update step after each request), while 1 KiB costs barely more than 8 octets.
//
// The block holds output of OpenSSL's DRBG not yet handed out; the DRBG's own state in the same
// process memory predicts its future output just as well, so keeping it adds no exposure.
// Octets are wiped as they are handed out and the rest when the thread ends.  A forked child
// must not hand out its parent's octets again: the child handler empties the forking thread's
// block (the only thread the child has).  Large requests go to RAND_bytes directly.
constexpr size_t kBlock = 1024;
constexpr size_t kDirect = 256;  // requests of this size or more bypass the block

struct Block {
    uint8_t buf[kBlock];
    size_t next = kBlock;  // buf[next..] is unread; kBlock: empty
    ~Block() { OPENSSL_cleanse(buf, sizeof buf); }
};

thread_local Block t_block;

void empty_block_after_fork() {
    OPENSSL_cleanse(t_block.buf, sizeof t_block.buf);
    t_block.next = kBlock;
}

}  // namespace

void OsRng::fill(std::span<uint8_t> out) {
    if (out.empty()) return;
    // Without the fork handler (it fails only without memory) nothing is buffered.
    static const bool fork_safe = pthread_atfork(nullptr, nullptr, empty_block_after_fork) == 0;
    if (out.size() >= kDirect || !fork_safe) {
        if (RAND_bytes(out.data(), static_cast<int>(out.size())) != 1) no_randomness();
        return;
    }
    Block& b = t_block;
    if (kBlock - b.next < out.size()) {
        if (RAND_bytes(b.buf, static_cast<int>(kBlock)) != 1) no_randomness();
        b.next = 0;
    }
    std::memcpy(out.data(), b.buf + b.next, out.size());
    OPENSSL_cleanse(b.buf + b.next, out.size());
    b.next += out.size();
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
