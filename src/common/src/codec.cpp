#include <x2sec/common/codec.hpp>

namespace x2sec {

bool Reader::need(size_t n) {
    if (m_failed) return false;
    if (m_data.size() - m_pos < n) {
        fail("truncated: need " + std::to_string(n) + " bytes at offset " + std::to_string(m_pos) + ", have " +
             std::to_string(m_data.size() - m_pos));
        return false;
    }
    return true;
}

void Reader::fail(std::string reason) {
    if (m_failed) return;
    m_failed = true;
    m_reason = std::move(reason);
}

uint8_t Reader::u8() {
    if (!need(1)) return 0;
    return m_data[m_pos++];
}
uint16_t Reader::u16() {
    if (!need(2)) return 0;
    uint16_t v = static_cast<uint16_t>((m_data[m_pos] << 8) | m_data[m_pos + 1]);
    m_pos += 2;
    return v;
}
uint32_t Reader::u24() {
    if (!need(3)) return 0;
    uint32_t v = (uint32_t(m_data[m_pos]) << 16) | (uint32_t(m_data[m_pos + 1]) << 8) | m_data[m_pos + 2];
    m_pos += 3;
    return v;
}
uint32_t Reader::u32() {
    if (!need(4)) return 0;
    uint32_t v = (uint32_t(m_data[m_pos]) << 24) | (uint32_t(m_data[m_pos + 1]) << 16) |
                 (uint32_t(m_data[m_pos + 2]) << 8) | m_data[m_pos + 3];
    m_pos += 4;
    return v;
}
uint64_t Reader::u64() {
    uint64_t hi = u32();
    uint64_t lo = u32();
    return (hi << 32) | lo;
}
BytesView Reader::bytes(size_t n) {
    if (!need(n)) return {};
    BytesView v = m_data.subspan(m_pos, n);
    m_pos += n;
    return v;
}
Bytes Reader::copy(size_t n) {
    auto v = bytes(n);
    return Bytes(v.begin(), v.end());
}
BytesView Reader::rest() {
    if (m_failed) return {};
    BytesView v = m_data.subspan(m_pos);
    m_pos = m_data.size();
    return v;
}
void Reader::skip(size_t n) {
    (void)bytes(n);
}
Reader Reader::sub(size_t n) {
    auto v = bytes(n);
    Reader r(v);
    if (m_failed) r.fail(m_reason);
    return r;
}

void Writer::u16(uint16_t v) {
    m_out.push_back(static_cast<uint8_t>(v >> 8));
    m_out.push_back(static_cast<uint8_t>(v));
}
void Writer::u24(uint32_t v) {
    m_out.push_back(static_cast<uint8_t>(v >> 16));
    m_out.push_back(static_cast<uint8_t>(v >> 8));
    m_out.push_back(static_cast<uint8_t>(v));
}
void Writer::u32(uint32_t v) {
    for (int s = 24; s >= 0; s -= 8) m_out.push_back(static_cast<uint8_t>(v >> s));
}
void Writer::u64(uint64_t v) {
    u32(static_cast<uint32_t>(v >> 32));
    u32(static_cast<uint32_t>(v));
}
Writer::Mark Writer::reserve(size_t width) {
    Mark m{m_out.size(), width};
    m_out.insert(m_out.end(), width, 0);
    return m;
}
void Writer::patch(Mark m, size_t from) {
    size_t len = m_out.size() - from;
    if (m.width == 2)
        patch_u16(m.field, static_cast<uint16_t>(len));
    else
        patch_u32(m.field, static_cast<uint32_t>(len));
}
void Writer::patch_u16(size_t at, uint16_t v) {
    m_out[at] = static_cast<uint8_t>(v >> 8);
    m_out[at + 1] = static_cast<uint8_t>(v);
}
void Writer::patch_u32(size_t at, uint32_t v) {
    for (int i = 0; i < 4; ++i) m_out[at + static_cast<size_t>(i)] = static_cast<uint8_t>(v >> (24 - 8 * i));
}

}  // namespace x2sec
