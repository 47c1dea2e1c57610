// Byte strings, hex, constant-time comparison and zeroising buffers for secrets.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace x2sec {

using Bytes = std::vector<uint8_t>;
using BytesView = std::span<const uint8_t>;

std::string to_hex(BytesView data);
// Accepts upper/lower case, ignores spaces, ':' and newlines; nullopt on odd length or a
// non-hex character.
std::optional<Bytes> from_hex(std::string_view hex);
// For tests and constants: aborts on invalid input.
Bytes hex(std::string_view hex);

inline BytesView as_bytes(std::string_view s) {
    return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}
inline Bytes to_bytes(std::string_view s) {
    return Bytes(s.begin(), s.end());
}
inline Bytes concat(std::initializer_list<BytesView> parts) {
    Bytes out;
    size_t n = 0;
    for (auto p : parts) n += p.size();
    out.reserve(n);
    for (auto p : parts) out.insert(out.end(), p.begin(), p.end());
    return out;
}

// Peer-supplied octets (an ID_FQDN, an e-mail identity, a DN attribute value) as text that
// is safe in logs, events and JSON: printable ASCII and well-formed UTF-8 of printable code
// points pass unchanged; '\\' is doubled; every other octet (controls, DEL, invalid or overlong
// UTF-8, surrogates, C1 controls, bidirectional overrides) becomes "\\xHH".  The mapping is
// injective (distinct inputs give distinct texts) and the result is always valid UTF-8.
std::string printable_text(BytesView data);
inline std::string printable_text(std::string_view s) {
    return printable_text(as_bytes(s));
}

// Constant-time equality (CRYPTO_memcmp); false when lengths differ.
bool ct_equal(BytesView a, BytesView b);

// Overwrite memory in a way the compiler will not elide (OPENSSL_cleanse).
void secure_zero(void* p, size_t n);

// A byte buffer for key material: zeroised on destruction, on clear() and on move-from.
// Never printed: there is deliberately no operator<< and no to_string.
class SecureBytes {
public:
    SecureBytes() = default;
    explicit SecureBytes(size_t n) : m_data(n, 0) {}
    explicit SecureBytes(BytesView v) : m_data(v.begin(), v.end()) {}
    // A copy is a second buffer with the same octets (the copy wipes its own in its destructor).
    SecureBytes(const SecureBytes& o) = default;
    SecureBytes(SecureBytes&& o) noexcept : m_data(std::move(o.m_data)) { o.wipe(); }
    SecureBytes& operator=(const SecureBytes& o) {
        if (this != &o) {
            wipe();
            m_data = o.m_data;
        }
        return *this;
    }
    SecureBytes& operator=(SecureBytes&& o) noexcept {
        if (this != &o) {
            wipe();
            m_data = std::move(o.m_data);
            o.wipe();
        }
        return *this;
    }
    ~SecureBytes() { wipe(); }

    uint8_t* data() { return m_data.data(); }
    const uint8_t* data() const { return m_data.data(); }
    size_t size() const { return m_data.size(); }
    bool empty() const { return m_data.empty(); }
    void resize(size_t n);  // wipes the old storage if it has to reallocate
    void clear() { wipe(); }
    uint8_t& operator[](size_t i) { return m_data[i]; }
    const uint8_t& operator[](size_t i) const { return m_data[i]; }
    BytesView view() const { return {m_data.data(), m_data.size()}; }
    std::span<uint8_t> span() { return {m_data.data(), m_data.size()}; }
    operator BytesView() const { return view(); }
    // Sub-range copy (e.g. splitting KEYMAT into keys).
    SecureBytes slice(size_t off, size_t len) const;
    void append(BytesView v);

private:
    void wipe() {
        if (!m_data.empty()) secure_zero(m_data.data(), m_data.size());
        m_data.clear();
    }
    std::vector<uint8_t> m_data;
};

}  // namespace x2sec
