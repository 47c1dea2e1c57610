#include <cstdlib>
#include <cstdio>
#include <openssl/crypto.h>
#include <x2sec/common/bytes.hpp>

namespace x2sec {

std::string to_hex(BytesView data) {
    static const char digits[] = "0123456789abcdef";
    std::string s;
    s.resize(data.size() * 2);
    for (size_t i = 0; i < data.size(); ++i) {
        s[2 * i] = digits[data[i] >> 4];
        s[2 * i + 1] = digits[data[i] & 0xf];
    }
    return s;
}

static int nibble(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

std::optional<Bytes> from_hex(std::string_view hex) {
    Bytes out;
    out.reserve(hex.size() / 2);
    int hi = -1;
    for (char c : hex) {
        if (c == ' ' || c == ':' || c == '\n' || c == '\r' || c == '\t') continue;
        int n = nibble(c);
        if (n < 0) return std::nullopt;
        if (hi < 0) {
            hi = n;
        } else {
            out.push_back(static_cast<uint8_t>((hi << 4) | n));
            hi = -1;
        }
    }
    if (hi >= 0) return std::nullopt;
    return out;
}

Bytes hex(std::string_view h) {
    auto r = from_hex(h);
    if (!r) {
        std::fprintf(stderr, "x2sec::hex: invalid hex literal\n");
        std::abort();
    }
    return *r;
}

bool ct_equal(BytesView a, BytesView b) {
    if (a.size() != b.size()) return false;
    if (a.empty()) return true;
    return CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

namespace {

// Length of the well-formed UTF-8 sequence of a printable code point at data[i], 0 if none
// (RFC 3629: no overlong forms, no surrogates, at most U+10FFFF).
size_t printable_utf8_len(BytesView d, size_t i) {
    const uint8_t c = d[i];
    size_t n;
    uint32_t cp;
    if (c >= 0xc2 && c <= 0xdf)
        n = 2, cp = c & 0x1fu;
    else if (c >= 0xe0 && c <= 0xef)
        n = 3, cp = c & 0x0fu;
    else if (c >= 0xf0 && c <= 0xf4)
        n = 4, cp = c & 0x07u;
    else
        return 0;
    if (d.size() - i < n) return 0;
    for (size_t k = 1; k < n; ++k) {
        if ((d[i + k] & 0xc0) != 0x80) return 0;
        cp = (cp << 6) | (d[i + k] & 0x3fu);
    }
    if ((n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10ffff))) return 0;
    if (cp >= 0xd800 && cp <= 0xdfff) return 0;            // surrogates
    if (cp < 0xa0) return 0;                               // C1 controls
    if (cp == 0xad || (cp >= 0x200b && cp <= 0x200f) ||    // soft hyphen, zero width, marks
        (cp >= 0x2028 && cp <= 0x202e) ||                  // line/paragraph separators, bidi
        (cp >= 0x2066 && cp <= 0x2069) || cp == 0xfeff ||  // bidi isolates, BOM
        (cp & 0xfffe) == 0xfffe)                           // noncharacters
        return 0;
    return n;
}

}  // namespace

std::string printable_text(BytesView data) {
    static const char* digits = "0123456789abcdef";
    std::string out;
    out.reserve(data.size());
    for (size_t i = 0; i < data.size();) {
        const uint8_t c = data[i];
        if (c == '\\') {
            out += "\\\\";
            ++i;
        } else if (c >= 0x20 && c < 0x7f) {
            out += static_cast<char>(c);
            ++i;
        } else if (size_t n = c >= 0x80 ? printable_utf8_len(data, i) : 0; n > 0) {
            out.append(reinterpret_cast<const char*>(data.data() + i), n);
            i += n;
        } else {
            out += "\\x";
            out += digits[c >> 4];
            out += digits[c & 15];
            ++i;
        }
    }
    return out;
}

void secure_zero(void* p, size_t n) {
    OPENSSL_cleanse(p, n);
}

void SecureBytes::resize(size_t n) {
    if (n <= m_data.capacity()) {
        if (n < m_data.size()) secure_zero(m_data.data() + n, m_data.size() - n);
        m_data.resize(n, 0);
        return;
    }
    std::vector<uint8_t> bigger;
    bigger.reserve(n);
    bigger.assign(m_data.begin(), m_data.end());
    bigger.resize(n, 0);
    wipe();
    m_data = std::move(bigger);
}

SecureBytes SecureBytes::slice(size_t off, size_t len) const {
    if (off > m_data.size() || len > m_data.size() - off) std::abort();
    return SecureBytes(BytesView(m_data.data() + off, len));
}

void SecureBytes::append(BytesView v) {
    size_t old = m_data.size();
    resize(old + v.size());
    std::copy(v.begin(), v.end(), m_data.begin() + static_cast<std::ptrdiff_t>(old));
}

}  // namespace x2sec
