// Anti-replay window of RFC 4303 3.4.3 and appendix A, for 32-bit and extended (64-bit)
// sequence numbers.  check() runs before decryption and never changes the state; update()
// runs only after the ICV verified.  With ESN the high 32 bits are inferred from the low 32
// on the wire as in appendix A2.2.
#pragma once

#include <cstdint>
#include <vector>

namespace x2sec::esp {

class ReplayWindow {
public:
    // size in packets; rounded up to a multiple of 64, at least 64.
    explicit ReplayWindow(uint32_t size = 1024, bool esn = false);

    enum class Verdict : uint8_t { Ok, Replayed, TooOld, Zero };
    // Infers the full sequence number (ESN) and checks it against the window.
    Verdict check(uint32_t seq_lo, uint64_t* full_seq) const;
    // Marks full_seq as received (call after the ICV verified).
    void update(uint64_t full_seq);

    uint64_t top() const { return m_top; }
    uint32_t size() const { return m_size; }
    bool esn() const { return m_esn; }

private:
    bool test_bit(uint64_t seq) const;
    void set_bit(uint64_t seq);
    void clear_bit(uint64_t seq);
    uint32_t m_size;
    bool m_esn;
    uint64_t m_top = 0;  // highest authenticated sequence number (0 = none yet)
    std::vector<uint64_t> m_bits;
};

}  // namespace x2sec::esp
