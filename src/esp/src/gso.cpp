#include <cstring>
#include <x2sec/esp/gso.hpp>

namespace x2sec::esp {

VnetHdr VnetHdr::parse(const uint8_t* p) {
    VnetHdr h;
    h.flags = p[0];
    h.gso_type = p[1];
    std::memcpy(&h.hdr_len, p + 2, 2);
    std::memcpy(&h.gso_size, p + 4, 2);
    std::memcpy(&h.csum_start, p + 6, 2);
    std::memcpy(&h.csum_offset, p + 8, 2);
    return h;
}

uint64_t csum_add(uint64_t sum, const uint8_t* p, size_t n) {
    while (n >= 8) {
        uint32_t a, b;
        std::memcpy(&a, p, 4);
        std::memcpy(&b, p + 4, 4);
        // Big-endian 16-bit words summed via byte-swapped 32-bit loads: sum in host order,
        // swap once at the end (one's-complement sums are byte-order independent).
        sum += a;
        sum += b;
        p += 8;
        n -= 8;
    }
    while (n >= 2) {
        uint16_t w;
        std::memcpy(&w, p, 2);
        sum += w;
        p += 2;
        n -= 2;
    }
    if (n) {
        uint16_t w = 0;
        std::memcpy(&w, p, 1);
        sum += w;
    }
    return sum;
}

uint16_t csum_fold(uint64_t sum) {
    while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
    // sum is in memory (network) order as loaded natively: return it the same way.
    return static_cast<uint16_t>(~sum & 0xffff);
}

namespace {

void store_csum(uint8_t* p, uint16_t c) {
    std::memcpy(p, &c, 2);
}  // c already in wire order

uint16_t be16(const uint8_t* p) {
    return uint16_t((p[0] << 8) | p[1]);
}
void put16(uint8_t* p, size_t v) {
    p[0] = uint8_t(v >> 8);
    p[1] = uint8_t(v);
}

}  // namespace

bool complete_checksum(uint8_t* pkt, size_t len, const VnetHdr& h) {
    size_t start = h.csum_start, field = size_t(h.csum_start) + h.csum_offset;
    if (start >= len || field + 2 > len) return false;
    store_csum(pkt + field, csum_fold(csum_add(0, pkt + start, len - start)));
    return true;
}

bool tso_inspect(const uint8_t* pkt, size_t len, const VnetHdr& h, TsoInfo& t) {
    if (len < 20 || h.gso_size == 0) return false;
    unsigned version = pkt[0] >> 4;
    if (version == 4) {
        t.v6 = false;
        t.ip_hl = size_t(pkt[0] & 0x0f) * 4;
        if (t.ip_hl < 20 || pkt[9] != 6) return false;
    } else if (version == 6) {
        t.v6 = true;
        t.ip_hl = 40;
        if (len < 40 || pkt[6] != 6) return false;  // no extension headers
    } else {
        return false;
    }
    if (len < t.ip_hl + 20) return false;
    t.tcp_hl = size_t(pkt[t.ip_hl + 12] >> 4) * 4;
    if (t.tcp_hl < 20 || len < t.ip_hl + t.tcp_hl) return false;
    t.payload = len - t.ip_hl - t.tcp_hl;
    t.mss = h.gso_size;
    t.segments = t.payload == 0 ? 1 : (t.payload + t.mss - 1) / t.mss;
    return true;
}

size_t tso_segment(const uint8_t* pkt, const TsoInfo& t, size_t i, uint8_t* out, size_t cap) {
    size_t off = i * t.mss;
    size_t chunk = off >= t.payload ? 0 : (t.payload - off < t.mss ? t.payload - off : t.mss);
    size_t hl = t.ip_hl + t.tcp_hl;
    size_t total = hl + chunk;
    if (total > cap) return 0;
    std::memcpy(out, pkt, hl);
    std::memcpy(out + hl, pkt + hl + off, chunk);
    bool last = i + 1 == t.segments;
    uint8_t* ip = out;
    uint8_t* tcp = out + t.ip_hl;
    size_t tcp_len = t.tcp_hl + chunk;
    uint64_t pseudo = 0;
    if (!t.v6) {
        put16(ip + 2, total);
        put16(ip + 4, be16(pkt + 4) + i);  // IP ID increments per segment
        ip[10] = ip[11] = 0;
        store_csum(ip + 10, csum_fold(csum_add(0, ip, t.ip_hl)));
        pseudo = csum_add(pseudo, ip + 12, 8);
        uint8_t ph[4] = {0, 6, uint8_t(tcp_len >> 8), uint8_t(tcp_len)};
        pseudo = csum_add(pseudo, ph, 4);
    } else {
        put16(ip + 4, tcp_len);
        pseudo = csum_add(pseudo, ip + 8, 32);
        uint8_t ph[8] = {0, 0, uint8_t(tcp_len >> 8), uint8_t(tcp_len), 0, 0, 0, 6};
        pseudo = csum_add(pseudo, ph, 8);
    }
    uint32_t seq = (uint32_t(tcp[4]) << 24) | (uint32_t(tcp[5]) << 16) | (uint32_t(tcp[6]) << 8) | tcp[7];
    seq += uint32_t(off);
    tcp[4] = uint8_t(seq >> 24);
    tcp[5] = uint8_t(seq >> 16);
    tcp[6] = uint8_t(seq >> 8);
    tcp[7] = uint8_t(seq);
    if (!last) tcp[13] &= uint8_t(~0x09);  // FIN, PSH only on the last segment
    if (i > 0) tcp[13] &= uint8_t(~0x80);  // CWR only on the first
    tcp[16] = tcp[17] = 0;
    store_csum(tcp + 16, csum_fold(csum_add(pseudo, tcp, tcp_len)));
    return total;
}

}  // namespace x2sec::esp
