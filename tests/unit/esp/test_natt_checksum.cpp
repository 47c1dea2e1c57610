// RFC 3948 3.1.2 / RFC 7296 2.23.1: TCP/UDP checksum fix-up of transport-mode packets after
// decapsulation behind NAT.  The expected values were computed independently (full Internet
// checksum over the pseudo-header with the post-NAT addresses, Python reference).
#include <gtest/gtest.h>
#include <cstring>
#include <x2sec/esp/memory_backend.hpp>
#include <x2sec/esp/natt_checksum.hpp>

using namespace x2sec;
using namespace x2sec::esp;

namespace {

IpAddress ip(const char* s) {
    return *IpAddress::parse(s);
}

// IPv4 or IPv6 packet: header with (src, dst) and the given L4 segment.
Bytes packet(const IpAddress& src, const IpAddress& dst, uint8_t proto, const Bytes& l4) {
    size_t h = src.v6 ? 40 : 20;
    Bytes p(h + l4.size());
    if (src.v6) {
        p[0] = 0x60;
        p[4] = uint8_t(l4.size() >> 8);
        p[5] = uint8_t(l4.size());
        p[6] = proto;
        p[7] = 64;
        std::memcpy(p.data() + 8, src.bytes.data(), 16);
        std::memcpy(p.data() + 24, dst.bytes.data(), 16);
    } else {
        p[0] = 0x45;
        p[2] = uint8_t(p.size() >> 8);
        p[3] = uint8_t(p.size());
        p[8] = 64;
        p[9] = proto;
        std::memcpy(p.data() + 12, src.bytes.data(), 4);
        std::memcpy(p.data() + 16, dst.bytes.data(), 4);
    }
    std::memcpy(p.data() + h, l4.data(), l4.size());
    return p;
}

Bytes udp(uint16_t check, const std::string& payload) {
    Bytes u(8 + payload.size());
    u[0] = 0x08, u[1] = 0x68, u[2] = 0x08, u[3] = 0x68;  // 2152 -> 2152
    u[4] = uint8_t(u.size() >> 8);
    u[5] = uint8_t(u.size());
    u[6] = uint8_t(check >> 8);
    u[7] = uint8_t(check);
    std::memcpy(u.data() + 8, payload.data(), payload.size());
    return u;
}

Bytes tcp(uint16_t check, const std::string& payload) {
    const uint8_t h[20] = {0x8e,
                           0x46,
                           0x9c,
                           0x40,
                           1,
                           2,
                           3,
                           4,
                           0x0a,
                           0x0b,
                           0x0c,
                           0x0d,
                           0x50,
                           0x18,
                           0xff,
                           0xff,
                           uint8_t(check >> 8),
                           uint8_t(check),
                           0,
                           0};  // 36422 -> 40000, PSH|ACK
    Bytes t(20 + payload.size());
    std::memcpy(t.data(), h, 20);
    std::memcpy(t.data() + 20, payload.data(), payload.size());
    return t;
}

uint16_t l4_check(const Bytes& p, size_t off) {
    return uint16_t(p[off] << 8 | p[off + 1]);
}

// The sender (real address 198.51.100.7 behind a NAT) computed its checksum with its own
// address; the packet arrives rebuilt with the NAT's public address 203.0.113.9.
const IpAddress kRealSrc = ip("198.51.100.7"), kNatSrc = ip("203.0.113.9"), kDst = ip("192.0.2.2");

TEST(NattChecksum, UdpIpv4IncrementalFromOriginalAddresses) {
    Bytes p = packet(kNatSrc, kDst, 17, udp(0x5a80, "GTP-U x2 test vector"));
    EXPECT_EQ(fix_transport_checksum(p.data(), p.size(), &kRealSrc, &kDst), ChecksumFix::Incremental);
    EXPECT_EQ(l4_check(p, 26), 0x48b1);
}

TEST(NattChecksum, TcpIpv4IncrementalFromOriginalAddresses) {
    Bytes p = packet(kNatSrc, kDst, 6, tcp(0x7b40, "X2AP setup request"));
    EXPECT_EQ(fix_transport_checksum(p.data(), p.size(), &kRealSrc, &kDst), ChecksumFix::Incremental);
    EXPECT_EQ(l4_check(p, 36), 0x6971);
}

TEST(NattChecksum, UdpIpv6Incremental) {
    IpAddress real = ip("2001:db8:1::7"), nat = ip("2001:db8:ffff::9"), dst = ip("2001:db8:2::2");
    Bytes p = packet(nat, dst, 17, udp(0xeb3f, "GTP-U x2 test vector"));
    EXPECT_EQ(fix_transport_checksum(p.data(), p.size(), &real, &dst), ChecksumFix::Incremental);
    EXPECT_EQ(l4_check(p, 46), 0xeb3e);
}

TEST(NattChecksum, UdpResultZeroIsSentAsAllOnes) {
    // A payload whose post-NAT checksum folds to 0: UDP must carry 0xffff (0 = no checksum).
    Bytes p = packet(kNatSrc, kDst, 17, udp(0x11cf, std::string("zero") + char(0x04) + char(0x21)));
    EXPECT_EQ(fix_transport_checksum(p.data(), p.size(), &kRealSrc, &kDst), ChecksumFix::Incremental);
    EXPECT_EQ(l4_check(p, 26), 0xffff);
}

TEST(NattChecksum, UdpIpv4WithoutOriginalAddressesIsZeroed) {
    Bytes p = packet(kNatSrc, kDst, 17, udp(0x5a80, "GTP-U x2 test vector"));
    EXPECT_EQ(fix_transport_checksum(p.data(), p.size(), nullptr, nullptr), ChecksumFix::UdpZeroed);
    EXPECT_EQ(l4_check(p, 26), 0);
}

TEST(NattChecksum, TcpWithoutOriginalAddressesIsRecomputed) {
    Bytes p = packet(kNatSrc, kDst, 6, tcp(0x7b40, "X2AP setup request"));
    EXPECT_EQ(fix_transport_checksum(p.data(), p.size(), nullptr, nullptr), ChecksumFix::Recomputed);
    EXPECT_EQ(l4_check(p, 36), 0x6971);
}

TEST(NattChecksum, UdpIpv6WithoutOriginalAddressesIsRecomputedNeverZeroed) {
    IpAddress nat = ip("2001:db8:ffff::9"), dst = ip("2001:db8:2::2");
    Bytes p = packet(nat, dst, 17, udp(0xeb3f, "GTP-U x2 test vector"));
    EXPECT_EQ(fix_transport_checksum(p.data(), p.size(), nullptr, nullptr), ChecksumFix::Recomputed);
    EXPECT_EQ(l4_check(p, 46), 0xeb3e);
}

TEST(NattChecksum, UntouchedCases) {
    Bytes none = packet(kNatSrc, kDst, 17, udp(0, "no checksum"));  // IPv4 UDP sent without one
    EXPECT_EQ(fix_transport_checksum(none.data(), none.size(), &kRealSrc, &kDst), ChecksumFix::None);
    EXPECT_EQ(l4_check(none, 26), 0);
    Bytes sctp = packet(kNatSrc, kDst, 132, Bytes(16, 0x42));  // SCTP: CRC32c has no pseudo-header
    Bytes before = sctp;
    EXPECT_EQ(fix_transport_checksum(sctp.data(), sctp.size(), &kRealSrc, &kDst), ChecksumFix::None);
    EXPECT_EQ(sctp, before);
    Bytes shorty = packet(kNatSrc, kDst, 6, Bytes(10, 0));  // truncated TCP header: left alone
    EXPECT_EQ(fix_transport_checksum(shorty.data(), shorty.size(), &kRealSrc, &kDst), ChecksumFix::None);
}

TEST(NattChecksum, Rfc1624Replace) {
    // Replacing a word by itself changes nothing; replacing and restoring is the identity.
    const uint8_t a[4] = {198, 51, 100, 7}, b[4] = {203, 0, 113, 9};
    uint16_t c = 0x5a80;
    EXPECT_EQ(checksum_replace(c, BytesView(a, 4), BytesView(a, 4)), c);
    EXPECT_EQ(checksum_replace(checksum_replace(c, BytesView(a, 4), BytesView(b, 4)), BytesView(b, 4), BytesView(a, 4)),
              c);
}

// The data plane applies it: transport-mode Child SA through NAT.  The peer (real address
// 198.51.100.7) sends with its real address in the checksum; the receiver knows it from the
// transport-mode traffic selectors (RFC 7296 2.23.1) and sees the NAT's address outside.
TEST(NattChecksum, DataPlaneFixesTransportModePacketsBehindNat) {
    Counters ca, cb;
    DataPlane a(ca), b(cb);
    MemoryEndpoint ea(a), eb(b);
    ea.connect(eb);
    Bytes got;
    eb.on_deliver = [&](BytesView p) { got.assign(p.begin(), p.end()); };
    ChildSaParams pa;
    pa.reqid = 7;
    pa.spi_in = 0x1001;
    pa.spi_out = 0x2002;
    pa.mode = IpsecMode::Transport;
    pa.udp_encap = true;
    pa.keys_in.enc_key = SecureBytes(Bytes(20, 0x11));
    pa.keys_out.enc_key = SecureBytes(Bytes(20, 0x22));
    ChildSaParams pb = pa;
    // A: real 198.51.100.7, talks to 192.0.2.2.
    pa.local_addr = kRealSrc;
    pa.remote_addr = kDst;
    pa.ts_local = {TrafficSelector::from_prefix(kRealSrc, 32)};
    pa.ts_remote = {TrafficSelector::from_prefix(kDst, 32)};
    // B sees A as the NAT's 203.0.113.9; the selectors carry A's real address.
    pb.spi_in = 0x2002;
    pb.spi_out = 0x1001;
    std::swap(pb.keys_in, pb.keys_out);
    pb.local_addr = kDst;
    pb.remote_addr = kNatSrc;
    pb.ts_local = {TrafficSelector::from_prefix(kDst, 32)};
    pb.ts_remote = {TrafficSelector::from_prefix(kRealSrc, 32)};
    ASSERT_TRUE(a.install(pa).ok());
    ASSERT_TRUE(b.install(pb).ok());

    Bytes u = packet(kRealSrc, kDst, 17, udp(0x5a80, "GTP-U x2 test vector"));
    ASSERT_TRUE(ea.send(u));
    ASSERT_EQ(got.size(), u.size());
    EXPECT_EQ(0, std::memcmp(got.data() + 12, kNatSrc.bytes.data(), 4));  // rebuilt from outside
    EXPECT_EQ(l4_check(got, 26), 0x48b1);
    EXPECT_EQ(cb.get("esp.rx.natt_checksum_fixed"), 1u);

    Bytes t = packet(kRealSrc, kDst, 6, tcp(0x7b40, "X2AP setup request"));
    ASSERT_TRUE(ea.send(t));
    EXPECT_EQ(l4_check(got, 36), 0x6971);
    EXPECT_EQ(0, std::memcmp(got.data() + 40, "X2AP setup request", 18));
    EXPECT_EQ(cb.get("esp.rx.natt_checksum_fixed"), 2u);
}

}  // namespace
