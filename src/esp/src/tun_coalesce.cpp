#include <cstring>
#include <x2sec/esp/tun_coalesce.hpp>

namespace x2sec::esp {

namespace {

uint32_t be32(const uint8_t* p) {
    return uint32_t(p[0]) << 24 | uint32_t(p[1]) << 16 | uint32_t(p[2]) << 8 | p[3];
}
uint16_t be16(const uint8_t* p) {
    return uint16_t(p[0] << 8 | p[1]);
}
void put16(uint8_t* p, size_t v) {
    p[0] = uint8_t(v >> 8);
    p[1] = uint8_t(v);
}
constexpr uint8_t kAck = 0x10, kPsh = 0x08;

}  // namespace

bool TunCoalescer::eligible(const uint8_t* ip, size_t len) {
    if (len < 40 || ip[0] != 0x45 || ip[9] != 6 || be16(ip + 2) != len) return false;
    if ((be16(ip + 6) & 0x3fff) != 0) return false;  // MF or a fragment offset
    size_t thl = size_t(ip[32] >> 4) * 4;
    if (thl < 20 || 20 + thl >= len) return false;  // needs payload
    uint8_t flags = ip[33];
    return flags == kAck || flags == (kAck | kPsh);
}

bool TunCoalescer::joins(const uint8_t* ip, size_t len) const {
    if (m_closed || m_segments >= kMaxSegments) return false;
    const uint8_t* f = m_first;
    size_t payload = len - m_hl;
    if (len <= m_hl || payload > m_gso || m_hl + m_payload + payload > 65535) return false;
    // Same IP header apart from length, ID and checksum.
    if (ip[1] != f[1] || (ip[6] & 0x40) != (f[6] & 0x40) || ip[8] != f[8] || std::memcmp(ip + 12, f + 12, 8) != 0)
        return false;
    // Same TCP header apart from sequence number, PSH and checksum; in sequence.
    const uint8_t *t = ip + 20, *ft = f + 20;
    if (size_t(t[12] >> 4) * 4 != m_hl - 20) return false;
    if (std::memcmp(t, ft, 4) != 0 || std::memcmp(t + 8, ft + 8, 5) != 0 || std::memcmp(t + 14, ft + 14, 2) != 0 ||
        std::memcmp(t + 18, ft + 18, m_hl - 20 - 18) != 0)
        return false;
    return be32(t + 4) == m_next_seq;
}

void TunCoalescer::write_single(uint8_t* ip, size_t len) {
    uint8_t* h = ip - kVnetHdrLen;
    std::memset(h, 0, kVnetHdrLen);
    h[0] = 2;  // DATA_VALID: authenticated by the ICV
    iovec v{h, len + kVnetHdrLen};
    if (m_write(m_ctx, &v, 1) < 0) ++write_errors;
}

void TunCoalescer::push(uint8_t* ip, size_t len) {
    if (!eligible(ip, len)) {
        flush();
        write_single(ip, len);
        return;
    }
    if (m_active && joins(ip, len)) {
        size_t payload = len - m_hl;
        m_iov[m_segments + 1] = {ip + m_hl, payload};
        ++m_segments;
        m_payload += payload;
        m_next_seq += uint32_t(payload);
        if (payload < m_gso || (ip[33] & kPsh)) m_closed = true;
        m_psh |= (ip[33] & kPsh) != 0;
        return;
    }
    flush();
    m_active = true;
    m_first = ip;
    m_first_len = len;
    m_hl = 20 + size_t(ip[32] >> 4) * 4;
    m_gso = len - m_hl;
    m_payload = m_gso;
    m_segments = 1;
    m_next_seq = be32(ip + 24) + uint32_t(m_gso);
    m_psh = (ip[33] & kPsh) != 0;
    m_closed = m_psh;
    m_iov[1] = {ip + m_hl, m_gso};
}

void TunCoalescer::flush() {
    if (!m_active) return;
    m_active = false;
    if (m_segments == 1) {
        write_single(m_first, m_first_len);
        return;
    }
    uint8_t* ip = m_hdr + kVnetHdrLen;
    std::memcpy(ip, m_first, m_hl);
    size_t total = m_hl + m_payload;
    put16(ip + 2, total);
    ip[10] = ip[11] = 0;
    uint16_t ipsum = csum_fold(csum_add(0, ip, 20));
    std::memcpy(ip + 10, &ipsum, 2);  // csum_fold keeps wire order
    uint8_t* t = ip + 20;
    if (m_psh) t[13] |= kPsh;
    // NEEDS_CSUM: the TCP checksum field holds the (uncomplemented) pseudo-header sum.
    uint8_t pseudo[12];
    std::memcpy(pseudo, ip + 12, 8);
    pseudo[8] = 0;
    pseudo[9] = 6;
    put16(pseudo + 10, total - 20);
    uint16_t ps = uint16_t(~csum_fold(csum_add(0, pseudo, 12)));
    std::memcpy(t + 16, &ps, 2);
    uint16_t hdr_len = uint16_t(m_hl), gso = uint16_t(m_gso), start = 20, off = 16;
    m_hdr[0] = 1;                         // VIRTIO_NET_HDR_F_NEEDS_CSUM
    m_hdr[1] = 1;                         // VIRTIO_NET_HDR_GSO_TCPV4
    std::memcpy(m_hdr + 2, &hdr_len, 2);  // legacy header: native byte order
    std::memcpy(m_hdr + 4, &gso, 2);
    std::memcpy(m_hdr + 6, &start, 2);
    std::memcpy(m_hdr + 8, &off, 2);
    m_iov[0] = {m_hdr, kVnetHdrLen + m_hl};
    if (m_write(m_ctx, m_iov, int(m_segments + 1)) < 0) ++write_errors;
    ++super_packets;
    coalesced_segments += m_segments;
}

}  // namespace x2sec::esp
