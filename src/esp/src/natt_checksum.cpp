#include <cstring>
#include <x2sec/esp/natt_checksum.hpp>

namespace x2sec::esp {

namespace {

uint32_t sum_words(uint32_t acc, const uint8_t* p, size_t n) {
    for (size_t i = 0; i + 1 < n; i += 2) acc += uint32_t(p[i]) << 8 | p[i + 1];
    if (n & 1) acc += uint32_t(p[n - 1]) << 8;
    return acc;
}

uint16_t fold(uint32_t acc) {
    while (acc >> 16) acc = (acc & 0xffff) + (acc >> 16);
    return static_cast<uint16_t>(acc);
}

constexpr uint8_t kTcp = 6, kUdp = 17;

}  // namespace

uint16_t checksum_replace(uint16_t check, BytesView old_words, BytesView new_words) {
    uint32_t acc = uint16_t(~check);
    for (size_t i = 0; i + 1 < old_words.size(); i += 2)
        acc += uint16_t(~(uint32_t(old_words[i]) << 8 | old_words[i + 1]));
    acc = sum_words(acc, new_words.data(), new_words.size() & ~size_t(1));
    return static_cast<uint16_t>(~fold(acc));
}

uint16_t transport_checksum(const IpAddress& src, const IpAddress& dst, uint8_t proto, const uint8_t* l4, size_t len) {
    uint32_t acc = 0;
    acc = sum_words(acc, src.bytes.data(), src.size());
    acc = sum_words(acc, dst.bytes.data(), dst.size());
    acc += proto;
    acc += uint32_t(len >> 16) + uint32_t(len & 0xffff);
    acc = sum_words(acc, l4, len);
    return static_cast<uint16_t>(~fold(acc));
}

const char* to_string(ChecksumFix f) {
    switch (f) {
        case ChecksumFix::None:
            return "none";
        case ChecksumFix::Incremental:
            return "incremental";
        case ChecksumFix::UdpZeroed:
            return "udp_zeroed";
        case ChecksumFix::Recomputed:
            return "recomputed";
    }
    return "?";
}

ChecksumFix fix_transport_checksum(uint8_t* ip, size_t len, const IpAddress* orig_src, const IpAddress* orig_dst) {
    if (len < 20) return ChecksumFix::None;
    bool v6 = (ip[0] >> 4) == 6;
    size_t h = v6 ? 40 : size_t(ip[0] & 15) * 4;
    if ((!v6 && (ip[0] >> 4) != 4) || h < 20 || len < h) return ChecksumFix::None;
    uint8_t proto = v6 ? ip[6] : ip[9];
    uint8_t* l4 = ip + h;
    size_t l4_len = len - h;
    size_t off;
    if (proto == kUdp) {
        if (l4_len < 8) return ChecksumFix::None;
        off = 6;
    } else if (proto == kTcp) {
        if (l4_len < 20) return ChecksumFix::None;
        off = 16;
    } else {
        return ChecksumFix::None;
    }
    uint16_t check = uint16_t(l4[off] << 8 | l4[off + 1]);
    if (proto == kUdp && !v6 && check == 0) return ChecksumFix::None;  // sender sent none
    IpAddress src, dst;
    src.v6 = dst.v6 = v6;
    std::memcpy(src.bytes.data(), ip + (v6 ? 8 : 12), v6 ? 16 : 4);
    std::memcpy(dst.bytes.data(), ip + (v6 ? 24 : 16), v6 ? 16 : 4);
    uint16_t fixed;
    ChecksumFix how;
    if (orig_src && orig_dst && orig_src->v6 == v6 && orig_dst->v6 == v6) {
        uint8_t old_w[32], new_w[32];
        size_t n = v6 ? 16 : 4;
        std::memcpy(old_w, orig_src->bytes.data(), n);
        std::memcpy(old_w + n, orig_dst->bytes.data(), n);
        std::memcpy(new_w, src.bytes.data(), n);
        std::memcpy(new_w + n, dst.bytes.data(), n);
        fixed = checksum_replace(check, BytesView(old_w, 2 * n), BytesView(new_w, 2 * n));
        how = ChecksumFix::Incremental;
    } else if (proto == kUdp && !v6) {
        l4[off] = l4[off + 1] = 0;
        return ChecksumFix::UdpZeroed;
    } else {
        l4[off] = l4[off + 1] = 0;
        fixed = transport_checksum(src, dst, proto, l4, l4_len);
        how = ChecksumFix::Recomputed;
    }
    if (proto == kUdp && fixed == 0) fixed = 0xffff;  // 0 means "no checksum" for UDP
    l4[off] = uint8_t(fixed >> 8);
    l4[off + 1] = uint8_t(fixed);
    return how;
}

}  // namespace x2sec::esp
