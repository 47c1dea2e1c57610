// Bounds-checked Reader and length-back-patching Writer for wire formats (network order).
// The Reader fails sticky: after the first error every read fails and returns zero/empty, so
// a decoder can read a whole structure and check ok() once.
#pragma once

#include <cstdint>
#include <string>
#include <x2sec/common/bytes.hpp>
#include <x2sec/common/result.hpp>

namespace x2sec {

class Reader {
public:
    explicit Reader(BytesView data) : m_data(data) {}

    uint8_t u8();
    uint16_t u16();
    uint32_t u24();
    uint32_t u32();
    uint64_t u64();
    BytesView bytes(size_t n);  // view into the input, empty on failure
    Bytes copy(size_t n);
    BytesView rest();  // everything left
    void skip(size_t n);
    // A sub-reader over the next n bytes (fails this reader if fewer are left).
    Reader sub(size_t n);

    bool ok() const { return !m_failed; }
    bool empty() const { return m_pos == m_data.size(); }
    size_t remaining() const { return m_failed ? 0 : m_data.size() - m_pos; }
    size_t position() const { return m_pos; }
    // Mark the reader failed with a reason (e.g. a field value out of range).
    void fail(std::string reason);
    const std::string& failure() const { return m_reason; }

private:
    bool need(size_t n);
    BytesView m_data;
    size_t m_pos = 0;
    bool m_failed = false;
    std::string m_reason;
};

class Writer {
public:
    Writer() = default;
    explicit Writer(Bytes&& initial) : m_out(std::move(initial)) {}

    void u8(uint8_t v) { m_out.push_back(v); }
    void u16(uint16_t v);
    void u24(uint32_t v);
    void u32(uint32_t v);
    void u64(uint64_t v);
    void bytes(BytesView v) { m_out.insert(m_out.end(), v.begin(), v.end()); }
    void zeros(size_t n) { m_out.insert(m_out.end(), n, 0); }

    // Length back-patching: reserve a 16/32-bit field now, fill it in later with the number
    // of bytes from `from` (default: the field's own position) to the current end.
    struct Mark {
        size_t field;
        size_t width;
    };
    Mark reserve16() { return reserve(2); }
    Mark reserve32() { return reserve(4); }
    // Writes (size() - from) into the reserved field; `from` defaults to the field position.
    void patch(Mark m, size_t from);
    void patch(Mark m) { patch(m, m.field); }
    void patch_u8(size_t at, uint8_t v) { m_out[at] = v; }
    void patch_u16(size_t at, uint16_t v);
    void patch_u32(size_t at, uint32_t v);

    size_t size() const { return m_out.size(); }
    const Bytes& data() const { return m_out; }
    Bytes take() { return std::move(m_out); }

private:
    Mark reserve(size_t width);
    Bytes m_out;
};

}  // namespace x2sec
