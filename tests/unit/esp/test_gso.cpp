#include <gtest/gtest.h>
#include <cstring>
#include <x2sec/common/bytes.hpp>
#include <x2sec/esp/gso.hpp>

using namespace x2sec;
using namespace x2sec::esp;

namespace {

// Straightforward RFC 1071 over big-endian words, independent of the code under test.
uint16_t ref_sum(const uint8_t* p, size_t n, uint32_t sum = 0) {
    for (size_t i = 0; i + 1 < n; i += 2) sum += uint32_t(p[i] << 8 | p[i + 1]);
    if (n & 1) sum += uint32_t(p[n - 1] << 8);
    while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
    return uint16_t(sum);
}

bool tcp_checksum_ok(const uint8_t* ip, size_t len) {
    bool v6 = (ip[0] >> 4) == 6;
    size_t hl = v6 ? 40 : size_t(ip[0] & 15) * 4;
    size_t tl = len - hl;
    uint32_t sum = 0;
    if (!v6) {
        sum += ref_sum(ip + 12, 8);
        sum += 6 + uint32_t(tl);
    } else {
        sum += ref_sum(ip + 8, 32);
        sum += 6 + uint32_t(tl);
    }
    return ref_sum(ip + hl, tl, sum) == 0xffff;
}

Bytes tso_v4(size_t payload, uint8_t flags) {
    Bytes p(20 + 20 + payload);
    p[0] = 0x45;
    p[2] = uint8_t(p.size() >> 8);
    p[3] = uint8_t(p.size());
    p[4] = 0x12;
    p[5] = 0x34;
    p[6] = 0x40;  // DF
    p[8] = 64;
    p[9] = 6;
    const uint8_t src[4] = {198, 51, 100, 1}, dst[4] = {203, 0, 113, 1};
    std::memcpy(&p[12], src, 4);
    std::memcpy(&p[16], dst, 4);
    uint8_t* t = &p[20];
    t[0] = 0x9c;
    t[1] = 0x40;
    t[2] = 0x14;
    t[3] = 0x51;
    t[4] = 0xff;  // seq near the wrap
    t[5] = 0xff;
    t[6] = 0xf0;
    t[7] = 0x00;
    t[12] = 0x50;
    t[13] = flags;
    t[14] = 0xff;
    for (size_t i = 0; i < payload; ++i) p[40 + i] = uint8_t(i * 7);
    return p;
}

}  // namespace

TEST(EspGso, CompletesPartialChecksum) {
    Bytes p = tso_v4(101, 0x18);
    // Kernel style: the TCP checksum field holds the folded pseudo-header sum.
    uint32_t ph = ref_sum(&p[12], 8) + 6 + uint32_t(p.size() - 20);
    while (ph >> 16) ph = (ph & 0xffff) + (ph >> 16);
    p[36] = uint8_t(ph >> 8);
    p[37] = uint8_t(ph);
    uint8_t raw[10] = {1, 0};
    uint16_t start = 20, off = 16;
    std::memcpy(raw + 6, &start, 2);
    std::memcpy(raw + 8, &off, 2);
    VnetHdr h = VnetHdr::parse(raw);
    ASSERT_TRUE(complete_checksum(p.data(), p.size(), h));
    EXPECT_TRUE(tcp_checksum_ok(p.data(), p.size()));
    h.csum_start = uint16_t(p.size());
    EXPECT_FALSE(complete_checksum(p.data(), p.size(), h));
}

TEST(EspGso, SegmentsTcpV4SuperPacket) {
    const size_t payload = 5000, mss = 1360;
    Bytes p = tso_v4(payload, 0x19 | 0x80);  // FIN PSH ACK CWR
    VnetHdr h;
    h.gso_type = 1;
    h.gso_size = uint16_t(mss);
    TsoInfo t;
    ASSERT_TRUE(tso_inspect(p.data(), p.size(), h, t));
    EXPECT_EQ(t.segments, 4u);
    Bytes joined;
    for (size_t i = 0; i < t.segments; ++i) {
        uint8_t out[2000];
        size_t n = tso_segment(p.data(), t, i, out, sizeof(out));
        ASSERT_GT(n, 0u);
        size_t want = i + 1 < t.segments ? mss : payload - 3 * mss;
        EXPECT_EQ(n, 40 + want);
        EXPECT_EQ(size_t(out[2] << 8 | out[3]), n);
        EXPECT_EQ(ref_sum(out, 20), 0xffff) << "IPv4 header checksum, segment " << i;
        EXPECT_EQ(size_t(out[4] << 8 | out[5]), 0x1234 + i);
        EXPECT_TRUE(tcp_checksum_ok(out, n)) << "segment " << i;
        uint32_t seq = uint32_t(out[24]) << 24 | uint32_t(out[25]) << 16 | uint32_t(out[26]) << 8 | out[27];
        EXPECT_EQ(seq, uint32_t(0xfffff000u + i * mss));
        bool last = i + 1 == t.segments;
        EXPECT_EQ((out[33] & 0x09) != 0, last) << "FIN/PSH only on the last";
        EXPECT_EQ((out[33] & 0x80) != 0, i == 0) << "CWR only on the first";
        joined.insert(joined.end(), out + 40, out + n);
        EXPECT_EQ(tso_segment(p.data(), t, i, out, 39), 0u);  // too small
    }
    EXPECT_EQ(joined, Bytes(p.begin() + 40, p.end()));
}

TEST(EspGso, SegmentsTcpV6AndRejectsOthers) {
    Bytes p(40 + 20 + 3000);
    p[0] = 0x60;
    p[4] = uint8_t((20 + 3000) >> 8);
    p[5] = uint8_t(20 + 3000);
    p[6] = 6;
    p[7] = 64;
    p[8] = 0x20;
    p[9] = 0x01;
    p[10] = 0x0d;
    p[11] = 0xb8;
    p[23] = 1;
    p[24] = 0x20;
    p[25] = 0x01;
    p[26] = 0x0d;
    p[27] = 0xb8;
    p[39] = 2;
    p[52] = 0x50;
    p[53] = 0x10;
    for (size_t i = 0; i < 3000; ++i) p[60 + i] = uint8_t(i);
    VnetHdr h;
    h.gso_type = 4;
    h.gso_size = 1000;
    TsoInfo t;
    ASSERT_TRUE(tso_inspect(p.data(), p.size(), h, t));
    EXPECT_EQ(t.segments, 3u);
    for (size_t i = 0; i < 3; ++i) {
        uint8_t out[1500];
        size_t n = tso_segment(p.data(), t, i, out, sizeof(out));
        ASSERT_EQ(n, 1060u);
        EXPECT_EQ(size_t(out[4] << 8 | out[5]), 1020u);
        EXPECT_TRUE(tcp_checksum_ok(out, n));
    }
    p[6] = 17;  // not TCP
    EXPECT_FALSE(tso_inspect(p.data(), p.size(), h, t));
    h.gso_size = 0;
    p[6] = 6;
    EXPECT_FALSE(tso_inspect(p.data(), p.size(), h, t));
    EXPECT_FALSE(tso_inspect(p.data(), 30, h, t));
}
