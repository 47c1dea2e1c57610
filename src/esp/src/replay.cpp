#include <x2sec/esp/replay.hpp>

namespace x2sec::esp {

ReplayWindow::ReplayWindow(uint32_t size, bool esn) : m_esn(esn) {
    if (size < 64) size = 64;
    size = (size + 63) / 64 * 64;
    m_size = size;
    m_bits.assign(size / 64, 0);
}

bool ReplayWindow::test_bit(uint64_t seq) const {
    uint64_t i = seq % m_size;
    return (m_bits[i / 64] >> (i % 64)) & 1u;
}
void ReplayWindow::set_bit(uint64_t seq) {
    uint64_t i = seq % m_size;
    m_bits[i / 64] |= uint64_t(1) << (i % 64);
}
void ReplayWindow::clear_bit(uint64_t seq) {
    uint64_t i = seq % m_size;
    m_bits[i / 64] &= ~(uint64_t(1) << (i % 64));
}

ReplayWindow::Verdict ReplayWindow::check(uint32_t seq_lo, uint64_t* full_seq) const {
    uint64_t seq = seq_lo;
    if (m_esn) {
        // RFC 4303 A2.2: infer the high-order 32 bits from the window position.
        uint32_t tl = static_cast<uint32_t>(m_top);
        uint32_t th = static_cast<uint32_t>(m_top >> 32);
        uint32_t bottom = tl - (m_size - 1);  // wraps when tl < size-1
        uint32_t hi;
        if (tl >= m_size - 1) {
            hi = seq_lo >= bottom ? th : th + 1;  // case A: window within one subspace
        } else {
            // case B: window spans two subspaces
            hi = seq_lo >= bottom ? th - 1 : th;
            if (hi == UINT32_MAX && th == 0) hi = 0;  // nothing below the first subspace
        }
        seq = (uint64_t(hi) << 32) | seq_lo;
    }
    *full_seq = seq;
    if (seq == 0) return Verdict::Zero;
    if (seq > m_top) return Verdict::Ok;
    if (m_top - seq >= m_size) return Verdict::TooOld;
    return test_bit(seq) ? Verdict::Replayed : Verdict::Ok;
}

void ReplayWindow::update(uint64_t seq) {
    if (seq > m_top) {
        uint64_t diff = seq - m_top;
        if (diff >= m_size) {
            for (auto& w : m_bits) w = 0;
        } else {
            for (uint64_t s = m_top + 1; s < seq; ++s) clear_bit(s);
        }
        clear_bit(seq);
        m_top = seq;
    }
    set_bit(seq);
}

}  // namespace x2sec::esp
