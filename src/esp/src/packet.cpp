#include <cstring>
#include <x2sec/esp/packet.hpp>

namespace x2sec::esp {

const char* to_string(DropReason r) {
    switch (r) {
        case DropReason::Truncated:
            return "truncated";
        case DropReason::UnknownSpi:
            return "unknown_spi";
        case DropReason::Replay:
            return "replay";
        case DropReason::ReplayOld:
            return "replay_old";
        case DropReason::SeqZero:
            return "seq_zero";
        case DropReason::Auth:
            return "auth";
        case DropReason::BadPadding:
            return "bad_padding";
        case DropReason::BadNextHeader:
            return "bad_next_header";
        case DropReason::Policy:
            return "policy";
        case DropReason::NoPolicy:
            return "no_policy";
        case DropReason::Malformed:
            return "malformed";
        case DropReason::SeqExhausted:
            return "seq_exhausted";
        case DropReason::Expired:
            return "expired";
        case DropReason::TooBig:
            return "too_big";
        case DropReason::Crypto:
            return "crypto";
        case DropReason::NotEsp:
            return "not_esp";
        case DropReason::Count:
            break;
    }
    return "unknown";
}

UdpKind classify_udp_encap(std::span<const uint8_t> p) {
    if (p.size() == 1 && p[0] == 0xFF) return UdpKind::Keepalive;
    if (p.size() >= 4 && p[0] == 0 && p[1] == 0 && p[2] == 0 && p[3] == 0)
        return p.size() > 4 ? UdpKind::Ike : UdpKind::Invalid;
    if (p.size() >= 8) return UdpKind::Esp;
    return UdpKind::Invalid;
}

bool parse_ip(const uint8_t* p, size_t len, IpFlow& f) {
    if (len < 1) return false;
    unsigned version = p[0] >> 4;
    const uint8_t* l4 = nullptr;
    size_t l4_len = 0;
    bool first_fragment = true;
    if (version == 4) {
        if (len < 20) return false;
        size_t ihl = size_t(p[0] & 0x0f) * 4;
        size_t total = (size_t(p[2]) << 8) | p[3];
        if (ihl < 20 || total < ihl || total > len) return false;
        f.src = IpAddress{};
        f.dst = IpAddress{};
        std::memcpy(f.src.bytes.data(), p + 12, 4);
        std::memcpy(f.dst.bytes.data(), p + 16, 4);
        f.proto = p[9];
        f.header_len = ihl;
        f.total_len = total;
        first_fragment = ((p[6] & 0x1f) | p[7]) == 0;
        l4 = p + ihl;
        l4_len = total - ihl;
    } else if (version == 6) {
        if (len < 40) return false;
        size_t payload = (size_t(p[4]) << 8) | p[5];
        if (40 + payload > len) return false;
        f.src = IpAddress{};
        f.dst = IpAddress{};
        f.src.v6 = f.dst.v6 = true;
        std::memcpy(f.src.bytes.data(), p + 8, 16);
        std::memcpy(f.dst.bytes.data(), p + 24, 16);
        f.proto = p[6];  // extension headers are not walked: selectors see their type
        f.header_len = 40;
        f.total_len = 40 + payload;
        l4 = p + 40;
        l4_len = payload;
    } else {
        return false;
    }
    f.src_port = f.dst_port = 0;
    if (first_fragment) {
        switch (f.proto) {
            case 6:
            case 17:
            case 132:
            case 136:  // TCP, UDP, SCTP, UDP-Lite
                if (l4_len >= 4) {
                    f.src_port = uint16_t((l4[0] << 8) | l4[1]);
                    f.dst_port = uint16_t((l4[2] << 8) | l4[3]);
                }
                break;
            case 1:
            case 58:  // ICMP, ICMPv6: type and code (RFC 4301 4.4.1.1)
                if (l4_len >= 2) f.src_port = uint16_t((l4[0] << 8) | l4[1]);
                break;
            default:
                break;
        }
    }
    return true;
}

size_t seal(SaCipher& c, uint32_t spi, uint64_t seq, bool esn, const uint8_t* iv, uint8_t next_header,
            std::span<uint8_t> buf, size_t payload_off, size_t payload_len) {
    const size_t iv_len = c.iv_len();
    const size_t hdr = 8 + iv_len;
    if (payload_off < hdr || payload_off > buf.size()) return 0;
    const size_t align = c.align();
    size_t padded = (payload_len + 2 + align - 1) / align * align;
    size_t pad = padded - payload_len - 2;
    size_t start = payload_off - hdr;
    size_t total = hdr + padded + c.icv_len();
    if (start + total > buf.size()) return 0;
    uint8_t* esp = buf.data() + start;
    store_be32(esp, spi);
    store_be32(esp + 4, static_cast<uint32_t>(seq));
    if (iv) std::memcpy(esp + 8, iv, iv_len);
    uint8_t* ct = esp + hdr;
    uint8_t* trailer = ct + payload_len;
    for (size_t i = 0; i < pad; ++i) trailer[i] = static_cast<uint8_t>(i + 1);
    trailer[pad] = static_cast<uint8_t>(pad);
    trailer[pad + 1] = next_header;
    uint8_t* icv = ct + padded;
    if (c.aead()) {
        uint8_t aad[12];
        store_be32(aad, spi);
        size_t aad_len = 8;
        if (esn) {
            store_be32(aad + 4, static_cast<uint32_t>(seq >> 32));
            store_be32(aad + 8, static_cast<uint32_t>(seq));
            aad_len = 12;
        } else {
            store_be32(aad + 4, static_cast<uint32_t>(seq));
        }
        if (iv ? !c.gcm_seal(aad, aad_len, esp + 8, ct, padded, icv)
               : !c.gcm_seal_next(aad, aad_len, esp + 8, ct, padded, icv))
            return 0;
    } else {
        if (!iv) return 0;
        if (!c.cbc_crypt(esp + 8, ct, padded)) return 0;
        uint8_t hi[4];
        store_be32(hi, static_cast<uint32_t>(seq >> 32));
        if (!c.hmac(esp, hdr + padded, hi, esn ? 4 : 0, icv)) return 0;
    }
    return total;
}

OpenResult open(SaCipher& c, bool esn, uint64_t full_seq, std::span<uint8_t> pkt) {
    OpenResult r;
    const size_t iv_len = c.iv_len();
    const size_t hdr = 8 + iv_len;
    const size_t icv_len = c.icv_len();
    if (pkt.size() < hdr + icv_len + c.align()) {
        r.reason = DropReason::Truncated;
        return r;
    }
    size_t ct_len = pkt.size() - hdr - icv_len;
    if (ct_len % c.align() != 0) {
        r.reason = DropReason::Truncated;
        return r;
    }
    uint8_t* esp = pkt.data();
    uint8_t* ct = esp + hdr;
    const uint8_t* icv = ct + ct_len;
    if (c.aead()) {
        uint8_t aad[12];
        std::memcpy(aad, esp, 4);
        size_t aad_len = 8;
        if (esn) {
            store_be32(aad + 4, static_cast<uint32_t>(full_seq >> 32));
            std::memcpy(aad + 8, esp + 4, 4);
            aad_len = 12;
        } else {
            std::memcpy(aad + 4, esp + 4, 4);
        }
        if (!c.gcm_open(aad, aad_len, esp + 8, ct, ct_len, icv)) {
            r.reason = DropReason::Auth;
            return r;
        }
    } else {
        uint8_t hi[4], want[16];
        store_be32(hi, static_cast<uint32_t>(full_seq >> 32));
        if (!c.hmac(esp, hdr + ct_len, hi, esn ? 4 : 0, want)) {
            r.reason = DropReason::Crypto;
            return r;
        }
        if (!ct_equal({want, 16}, {icv, 16})) {
            r.reason = DropReason::Auth;
            return r;
        }
        if (!c.cbc_crypt(esp + 8, ct, ct_len)) {
            r.reason = DropReason::Crypto;
            return r;
        }
    }
    uint8_t pad = ct[ct_len - 2];
    uint8_t nh = ct[ct_len - 1];
    if (size_t(pad) + 2 > ct_len) {
        r.reason = DropReason::BadPadding;
        return r;
    }
    size_t payload_len = ct_len - 2 - pad;
    for (size_t i = 0; i < pad; ++i) {
        if (ct[payload_len + i] != static_cast<uint8_t>(i + 1)) {
            r.reason = DropReason::BadPadding;
            return r;
        }
    }
    r.ok = true;
    r.next_header = nh;
    r.payload_off = hdr;
    r.payload_len = payload_len;
    return r;
}

}  // namespace x2sec::esp
