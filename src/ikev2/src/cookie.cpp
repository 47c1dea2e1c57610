// COOKIE secret, COOKIEs and the light IKE_SA_INIT walk for the receive queue (cookie.hpp).
#include <x2sec/common/codec.hpp>
#include <x2sec/crypto/crypto.hpp>
#include <x2sec/ikev2/cookie.hpp>
#include <x2sec/ikev2/wire.hpp>

namespace x2sec::ike {

void CookieJar::rotate(Rng& rng, Millis now) {
    m_old = std::move(m_secret);
    m_secret = SecureBytes(32);
    rng.fill(std::span<uint8_t>(m_secret.data(), m_secret.size()));
    ++m_version;
    m_rotated_at = now;
}

Bytes CookieJar::compute(BytesView ni, const IpAddress& ipi, uint64_t spi_i, const SecureBytes& secret,
                         uint32_t version) {
    Writer w;
    w.bytes(ni);
    w.bytes(ipi.view());
    w.u64(spi_i);
    w.bytes(secret.view());
    Bytes h = crypto::digest(crypto::Hash::Sha256, w.data());
    Writer c;
    c.u32(version);
    c.bytes(h);
    return c.take();
}

Bytes CookieJar::make(BytesView ni, const IpAddress& ipi, uint64_t spi_i) const {
    if (!ready()) return {};
    return compute(ni, ipi, spi_i, m_secret, m_version);
}

bool CookieJar::valid(BytesView cookie, BytesView ni, const IpAddress& ipi, uint64_t spi_i) const {
    if (!ready() || cookie.size() != kCookieSize) return false;
    Reader r(cookie);
    uint32_t version = r.u32();
    if (!r.ok()) return false;
    if (version == m_version) return ct_equal(cookie, compute(ni, ipi, spi_i, m_secret, m_version));
    if (version == m_version - 1 && !m_old.empty()) return ct_equal(cookie, compute(ni, ipi, spi_i, m_old, version));
    return false;  // two rotations ago or never: its secret is gone
}

const char* to_string(CookieCheck c) {
    switch (c) {
        case CookieCheck::None:
            return "none";
        case CookieCheck::Valid:
            return "valid";
        case CookieCheck::Bad:
            return "bad";
        case CookieCheck::Malformed:
            return "malformed";
    }
    return "?";
}

InitCookieFields peek_init_cookie(BytesView datagram) {
    constexpr size_t kGeneric = 4;  // next payload, flags, length
    InitCookieFields f;
    Reader r(datagram);
    f.spi_i = r.u64();
    uint64_t spi_r = r.u64();
    uint8_t next = r.u8();
    r.skip(1);  // version
    uint8_t exchange = r.u8();
    uint8_t flags = r.u8();
    uint32_t message_id = r.u32();
    r.skip(4);  // length: not trusted (the engine checks it); the walk stays within the datagram
    if (!r.ok() || spi_r != 0 || exchange != static_cast<uint8_t>(wire::ExchangeType::IkeSaInit) ||
        (flags & wire::kFlagResponse) != 0 || (flags & wire::kFlagInitiator) == 0 || message_id != 0) {
        f.malformed = true;
        return f;
    }
    bool have_cookie = false, have_nonce = false;
    for (size_t index = 0; next != 0; ++index) {
        if (index >= 256 || r.remaining() < kGeneric) {
            f.malformed = true;
            return f;
        }
        uint8_t type = next;
        next = r.u8();
        r.skip(1);  // flags
        uint16_t len = r.u16();
        if (!r.ok() || len < kGeneric || len - kGeneric > r.remaining()) {
            f.malformed = true;
            return f;
        }
        Reader body = r.sub(len - kGeneric);
        if (type == static_cast<uint8_t>(wire::PayloadType::Nonce)) {
            if (have_nonce) {
                f.malformed = true;
                return f;
            }
            have_nonce = true;
            f.nonce = body.rest();
        } else if (type == static_cast<uint8_t>(wire::PayloadType::Notify)) {
            body.skip(1);  // protocol id
            uint8_t spi_size = body.u8();
            uint16_t notify_type = body.u16();
            body.skip(spi_size);
            if (!body.ok()) {  // shorter than its fixed part and SPI
                f.malformed = true;
                return f;
            }
            if (notify_type == wire::notify::Cookie) {
                BytesView data = body.rest();
                if (have_cookie || data.empty() || data.size() > 64) {  // the decoder's bound (1..64)
                    f.malformed = true;
                    return f;
                }
                have_cookie = true;
                f.cookie = data;
            }
        }
        if (!r.ok()) {
            f.malformed = true;
            return f;
        }
    }
    if (have_cookie && !have_nonce) f.malformed = true;
    return f;
}

}  // namespace x2sec::ike
