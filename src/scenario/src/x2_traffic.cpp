#include <algorithm>
#include <x2sec/common/codec.hpp>
#include <x2sec/scenario/x2_traffic.hpp>

namespace x2sec::scenario {

uint32_t crc32c(BytesView data) {
    uint32_t crc = 0xffffffffu;
    for (uint8_t b : data) {
        crc ^= b;
        for (int k = 0; k < 8; ++k) crc = (crc >> 1) ^ (0x82f63b78u & (0u - (crc & 1u)));
    }
    return ~crc;
}

namespace {

uint16_t ip_checksum(BytesView hdr) {
    uint32_t sum = 0;
    for (size_t i = 0; i + 1 < hdr.size(); i += 2) sum += (uint32_t(hdr[i]) << 8) | hdr[i + 1];
    while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
    return uint16_t(~sum);
}

Bytes ipv4(const IpAddress& src, const IpAddress& dst, uint8_t proto, BytesView payload) {
    Writer w;
    w.u8(0x45);
    w.u8(0);
    w.u16(uint16_t(20 + payload.size()));
    w.u16(0x2a2a);  // identification
    w.u16(0x4000);  // DF
    w.u8(64);
    w.u8(proto);
    w.u16(0);  // checksum, patched below
    w.bytes(src.view());
    w.bytes(dst.view());
    uint16_t c = ip_checksum(BytesView(w.data().data(), 20));
    w.patch_u16(10, c);
    w.bytes(payload);
    return w.take();
}

}  // namespace

Bytes x2ap_packet(const IpAddress& src, const IpAddress& dst, uint32_t tsn, BytesView pdu) {
    Writer s;
    s.u16(kX2apSctpPort);  // source port (X2-C uses 36422 on both sides)
    s.u16(kX2apSctpPort);
    s.u32(0x58325843);  // verification tag
    s.u32(0);           // checksum, patched below
    size_t chunk_len = 16 + pdu.size();
    s.u8(0);     // DATA
    s.u8(0x03);  // B|E: unfragmented
    s.u16(uint16_t(chunk_len));
    s.u32(tsn);
    s.u16(0);  // stream id
    s.u16(uint16_t(tsn));
    s.u32(kX2apPpid);
    s.bytes(pdu);
    s.zeros((4 - chunk_len % 4) % 4);
    uint32_t c = crc32c(s.data());
    // CRC32c goes in little-endian byte order (RFC 4960 appendix B).
    Bytes sctp = s.take();
    sctp[8] = uint8_t(c);
    sctp[9] = uint8_t(c >> 8);
    sctp[10] = uint8_t(c >> 16);
    sctp[11] = uint8_t(c >> 24);
    return ipv4(src, dst, 132, sctp);
}

Bytes gtpu_packet(const IpAddress& src, const IpAddress& dst, uint32_t teid, BytesView user) {
    Writer u;
    u.u16(kGtpuPort);
    u.u16(kGtpuPort);
    u.u16(uint16_t(8 + 8 + user.size()));
    u.u16(0);    // UDP checksum optional over IPv4
    u.u8(0x30);  // version 1, PT=1
    u.u8(0xff);  // G-PDU
    u.u16(uint16_t(user.size()));
    u.u32(teid);
    u.bytes(user);
    return ipv4(src, dst, 17, u.data());
}

std::vector<Bytes> x2_traffic_mix(const IpAddress& src, const IpAddress& dst, unsigned n) {
    std::vector<Bytes> out;
    for (unsigned i = 0; i < n; ++i) {
        std::string x2ap = "X2AP HandoverRequest #" + std::to_string(i) + " from " + src.to_string() +
                           " (UE context, E-RABs to be set up)";
        out.push_back(x2ap_packet(src, dst, 1000 + i, as_bytes(x2ap)));
        std::string user = "GTP-U user data #" + std::to_string(i) + " forwarded over X2-U during handover";
        out.push_back(gtpu_packet(src, dst, 0x10000 + i, as_bytes(user)));
    }
    return out;
}

bool contains(BytesView hay, BytesView needle) {
    if (needle.empty()) return true;
    return std::search(hay.begin(), hay.end(), needle.begin(), needle.end()) != hay.end();
}

}  // namespace x2sec::scenario
