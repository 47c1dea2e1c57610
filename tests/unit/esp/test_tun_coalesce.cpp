// TunCoalescer: decrypted TCP segments leave as one TSO super-packet per flow run.  The round
// trip is checked against the TX side's own segmentation: super-packet -> tso_segment ->
// coalesce -> tso_segment again must give back the same segments, byte for byte.
#include <gtest/gtest.h>
#include <cstring>
#include <vector>
#include <x2sec/common/bytes.hpp>
#include <x2sec/esp/gso.hpp>
#include <x2sec/esp/tun_coalesce.hpp>

using namespace x2sec;
using namespace x2sec::esp;

namespace {

struct Sink {
    std::vector<Bytes> writes;  // vnet header + packet, as the TUN device would see them
    static ssize_t write(void* ctx, const iovec* iov, int n) {
        Bytes w;
        for (int i = 0; i < n; ++i) {
            auto* p = static_cast<const uint8_t*>(iov[i].iov_base);
            w.insert(w.end(), p, p + iov[i].iov_len);
        }
        static_cast<Sink*>(ctx)->writes.push_back(w);
        return ssize_t(w.size());
    }
};

Bytes super_v4(size_t payload, uint8_t flags, uint32_t seq = 0x01000000, uint16_t sport = 40000) {
    Bytes p(20 + 32 + payload);  // TCP with 12 octets of options (timestamps)
    p[0] = 0x45;
    p[2] = uint8_t(p.size() >> 8);
    p[3] = uint8_t(p.size());
    p[4] = 0x12;
    p[6] = 0x40;
    p[8] = 64;
    p[9] = 6;
    const uint8_t src[4] = {198, 51, 100, 1}, dst[4] = {203, 0, 113, 1};
    std::memcpy(&p[12], src, 4);
    std::memcpy(&p[16], dst, 4);
    uint8_t* t = &p[20];
    t[0] = uint8_t(sport >> 8), t[1] = uint8_t(sport), t[2] = 0x14, t[3] = 0x51;
    t[4] = uint8_t(seq >> 24), t[5] = uint8_t(seq >> 16), t[6] = uint8_t(seq >> 8), t[7] = uint8_t(seq);
    t[11] = 9;
    t[12] = 0x80;
    t[13] = flags;
    t[14] = 0x20;
    const uint8_t opts[12] = {1, 1, 8, 10, 0, 0, 1, 2, 0, 0, 3, 4};
    std::memcpy(t + 20, opts, 12);
    for (size_t i = 0; i < payload; ++i) p[52 + i] = uint8_t(i * 7 + 3);
    return p;
}

// Segments of a super-packet as the peer's TX side makes them (complete packets).
std::vector<Bytes> segments(const Bytes& super, uint16_t mss) {
    VnetHdr h;
    h.gso_type = 1;
    h.gso_size = mss;
    TsoInfo t;
    EXPECT_TRUE(tso_inspect(super.data(), super.size(), h, t));
    std::vector<Bytes> out;
    for (size_t i = 0; i < t.segments; ++i) {
        Bytes s(super.size());
        s.resize(tso_segment(super.data(), t, i, s.data(), s.size()));
        out.push_back(s);
    }
    return out;
}

// Each packet in its own buffer with room for the virtio header in front.
struct Buffers {
    std::vector<Bytes> storage;
    std::vector<uint8_t*> ip;
    explicit Buffers(const std::vector<Bytes>& pkts) {
        for (const auto& p : pkts) {
            Bytes b(kVnetHdrLen + p.size());
            std::memcpy(b.data() + kVnetHdrLen, p.data(), p.size());
            storage.push_back(std::move(b));
        }
        for (auto& b : storage) ip.push_back(b.data() + kVnetHdrLen);
    }
};

TEST(TunCoalesce, SegmentsOfOneFlowBecomeOneSuperPacketThatResegmentsToTheSame) {
    Bytes super = super_v4(20 * 1388 + 500, 0x18);  // last segment shorter, PSH at the end
    auto segs = segments(super, 1388);
    ASSERT_EQ(segs.size(), 21u);
    Sink sink;
    TunCoalescer co(&Sink::write, &sink);
    Buffers b(segs);
    for (size_t i = 0; i < segs.size(); ++i) co.push(b.ip[i], segs[i].size());
    co.flush();
    ASSERT_EQ(sink.writes.size(), 1u);
    EXPECT_EQ(co.super_packets, 1u);
    EXPECT_EQ(co.coalesced_segments, 21u);
    const Bytes& w = sink.writes[0];
    VnetHdr h = VnetHdr::parse(w.data());
    EXPECT_EQ(h.flags, 1);     // NEEDS_CSUM
    EXPECT_EQ(h.gso_type, 1);  // TCPv4
    EXPECT_EQ(h.gso_size, 1388);
    EXPECT_EQ(h.hdr_len, 52);
    EXPECT_EQ(h.csum_start, 20);
    EXPECT_EQ(h.csum_offset, 16);
    ASSERT_EQ(w.size(), kVnetHdrLen + super.size());
    EXPECT_EQ(0, std::memcmp(w.data() + kVnetHdrLen + 52, super.data() + 52, super.size() - 52));  // payload
    // What the kernel would do with it: segment again.
    TsoInfo t;
    Bytes pkt(w.begin() + kVnetHdrLen, w.end());
    ASSERT_TRUE(tso_inspect(pkt.data(), pkt.size(), h, t));
    ASSERT_EQ(t.segments, segs.size());
    for (size_t i = 0; i < t.segments; ++i) {
        Bytes s(pkt.size());
        s.resize(tso_segment(pkt.data(), t, i, s.data(), s.size()));
        EXPECT_EQ(s, segs[i]) << "segment " << i;
    }
}

TEST(TunCoalesce, BreaksOnGapsOtherFlowsFlagsAndShortSegments) {
    auto a = segments(super_v4(4 * 1000, 0x10), 1000);                     // 4 segments, ACK only
    auto other = segments(super_v4(2 * 1000, 0x10, 0x5000, 40001), 1000);  // another flow
    auto b = segments(super_v4(3 * 1000, 0x10, 0x01000000 + 5000), 1000);  // gap of 1000 after a
    std::vector<Bytes> all = {a[0], a[1], other[0], other[1], a[2], a[3], b[0], b[1], b[2]};
    Bytes syn = super_v4(0, 0x02);  // SYN: never merged
    syn.resize(52);
    all.push_back(syn);
    Sink sink;
    TunCoalescer co(&Sink::write, &sink);
    Buffers buf(all);
    for (size_t i = 0; i < all.size(); ++i) co.push(buf.ip[i], all[i].size());
    co.flush();
    // a0+a1 | other0+other1 | a2+a3 | b0+b1+b2 (not after a3: sequence gap) | SYN alone
    ASSERT_EQ(sink.writes.size(), 5u);
    EXPECT_EQ(sink.writes[0].size(), kVnetHdrLen + 52 + 2000);
    EXPECT_EQ(sink.writes[3].size(), kVnetHdrLen + 52 + 3000);
    VnetHdr single = VnetHdr::parse(sink.writes[4].data());
    EXPECT_EQ(single.flags, 2);  // DATA_VALID, no GSO
    EXPECT_EQ(single.gso_type, 0);
    EXPECT_EQ(Bytes(sink.writes[4].begin() + kVnetHdrLen, sink.writes[4].end()), syn);

    // A short segment closes the run; a lone segment goes out unchanged with DATA_VALID.
    auto c = segments(super_v4(1000 + 300, 0x10, 0x7000), 1000);
    auto d = segments(super_v4(1000, 0x10, 0x7000 + 1300), 1000);
    std::vector<Bytes> run = {c[0], c[1], d[0]};
    Sink s2;
    TunCoalescer co2(&Sink::write, &s2);
    Buffers b2(run);
    for (size_t i = 0; i < run.size(); ++i) co2.push(b2.ip[i], run[i].size());
    co2.flush();
    ASSERT_EQ(s2.writes.size(), 2u);
    EXPECT_EQ(s2.writes[0].size(), kVnetHdrLen + 52 + 1300);
    EXPECT_EQ(Bytes(s2.writes[1].begin() + kVnetHdrLen, s2.writes[1].end()), d[0]);
}

}  // namespace
