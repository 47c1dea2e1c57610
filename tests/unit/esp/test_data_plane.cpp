#include <gtest/gtest.h>
#include <cstring>
#include <map>
#include <set>
#include <x2sec/common/time.hpp>
#include <x2sec/esp/memory_backend.hpp>

using namespace x2sec;
using namespace x2sec::esp;

namespace {

// IPv4 packet with a UDP/TCP/SCTP-style port header; payload filled with a counter.
Bytes ipv4(const char* src, const char* dst, uint8_t proto, uint16_t sport, uint16_t dport, size_t payload,
           uint8_t fill = 0) {
    Bytes p(20 + 8 + payload);
    p[0] = 0x45;
    p[2] = uint8_t(p.size() >> 8);
    p[3] = uint8_t(p.size());
    p[8] = 64;
    p[9] = proto;
    std::memcpy(p.data() + 12, IpAddress::parse(src)->bytes.data(), 4);
    std::memcpy(p.data() + 16, IpAddress::parse(dst)->bytes.data(), 4);
    p[20] = uint8_t(sport >> 8);
    p[21] = uint8_t(sport);
    p[22] = uint8_t(dport >> 8);
    p[23] = uint8_t(dport);
    for (size_t i = 0; i < payload; ++i) p[28 + i] = uint8_t(fill + i);
    return p;
}

Bytes key(size_t n, uint8_t seed) {
    Bytes k(n);
    for (size_t i = 0; i < n; ++i) k[i] = uint8_t(seed + i * 13);
    return k;
}

// Params for side A (198.51.100.0/24 behind 192.0.2.1) and the mirror for side B.
std::pair<ChildSaParams, ChildSaParams> pair_params(uint32_t spi_a, uint32_t spi_b,
                                                    EspCipher cipher = EspCipher::AesGcm16_128, uint32_t reqid = 1,
                                                    uint8_t seed = 1) {
    ChildSaParams a;
    a.reqid = reqid;
    a.spi_in = spi_a;
    a.spi_out = spi_b;
    a.cipher = cipher;
    a.local_addr = *IpAddress::parse("192.0.2.1");
    a.remote_addr = *IpAddress::parse("192.0.2.2");
    a.ts_local = {TrafficSelector::from_prefix(*IpAddress::parse("198.51.100.0"), 24)};
    a.ts_remote = {TrafficSelector::from_prefix(*IpAddress::parse("203.0.113.0"), 24)};
    size_t ek = cipher == EspCipher::AesGcm16_128               ? 20
                : cipher == EspCipher::AesGcm16_256             ? 36
                : cipher == EspCipher::AesCbc128_HmacSha256_128 ? 16
                                                                : 32;
    size_t ik = (cipher == EspCipher::AesGcm16_128 || cipher == EspCipher::AesGcm16_256) ? 0 : 32;
    a.keys_in.enc_key = SecureBytes(key(ek, seed));
    a.keys_in.integ_key = SecureBytes(key(ik, seed + 1));
    a.keys_out.enc_key = SecureBytes(key(ek, seed + 2));
    a.keys_out.integ_key = SecureBytes(key(ik, seed + 3));
    a.name = "x2";
    ChildSaParams b = a;
    b.spi_in = spi_b;
    b.spi_out = spi_a;
    std::swap(b.local_addr, b.remote_addr);
    std::swap(b.ts_local, b.ts_remote);
    std::swap(b.keys_in, b.keys_out);
    return {a, b};
}

struct Pair {
    Counters ca, cb;
    DataPlane a{ca}, b{cb};
    MemoryEndpoint ea{a}, eb{b};
    std::vector<Bytes> at_a, at_b;
    Pair() {
        ea.connect(eb);
        eb.connect(ea);
        ea.on_deliver = [this](BytesView p) { at_a.emplace_back(p.begin(), p.end()); };
        eb.on_deliver = [this](BytesView p) { at_b.emplace_back(p.begin(), p.end()); };
    }
    void install(const std::pair<ChildSaParams, ChildSaParams>& p) {
        ASSERT_TRUE(a.install(p.first).ok());
        ASSERT_TRUE(b.install(p.second).ok());
    }
};

}  // namespace

class DataPlaneCiphers : public ::testing::TestWithParam<EspCipher> {};

TEST_P(DataPlaneCiphers, TunnelBothDirectionsBytesIntact) {
    Pair t;
    t.install(pair_params(0x1001, 0x2002, GetParam()));
    for (size_t len : {0, 1, 100, 1372, 1400, 8000}) {
        Bytes p = ipv4("198.51.100.7", "203.0.113.9", 17, 40000, 2152, len, uint8_t(len));
        ASSERT_TRUE(t.ea.send(p));
        ASSERT_FALSE(t.at_b.empty());
        EXPECT_EQ(t.at_b.back(), p);
        Bytes q = ipv4("203.0.113.9", "198.51.100.7", 132, 36422, 36422, len, 3);
        ASSERT_TRUE(t.eb.send(q));
        EXPECT_EQ(t.at_a.back(), q);
    }
    EXPECT_EQ(t.ca.get("esp.tx.packets"), 6u);
    EXPECT_EQ(t.cb.get("esp.rx.packets"), 6u);
    // The wire carries SPI 0x2002 and an incrementing sequence number.
    const Bytes& w = t.eb.last_datagram();
    EXPECT_EQ(load_be32(w.data()), 0x1001u);
    EXPECT_EQ(load_be32(w.data() + 4), 6u);
}

INSTANTIATE_TEST_SUITE_P(All, DataPlaneCiphers,
                         ::testing::Values(EspCipher::AesGcm16_128, EspCipher::AesGcm16_256,
                                           EspCipher::AesCbc128_HmacSha256_128, EspCipher::AesCbc256_HmacSha256_128));

TEST(DataPlane, EsnTunnelCrossesThe32BitBoundary) {
    Pair t;
    auto p = pair_params(0x11, 0x22);
    p.first.esn = p.second.esn = true;
    t.install(p);
    ASSERT_TRUE(t.a.set_outbound_seq(0x11, 0xfffffff0ULL).ok());
    Bytes pkt = ipv4("198.51.100.1", "203.0.113.1", 17, 1, 2, 50);
    for (int i = 0; i < 40; ++i) ASSERT_TRUE(t.ea.send(pkt)) << i;
    EXPECT_EQ(t.at_b.size(), 40u);
    auto st = t.b.status();
    ASSERT_EQ(st.size(), 1u);
    EXPECT_EQ(st[0].replay_top, 0xfffffff0ULL + 40);
}

TEST(DataPlane, PolicySelectsByProtocolAndPort) {
    Pair t;
    auto p = pair_params(0x31, 0x32);
    // X2-C only: SCTP 36422 towards the peer; X2-U: UDP 2152, each its own Child SA.
    auto x2c = p;
    for (auto* side : {&x2c.first, &x2c.second}) {
        for (auto& ts : side->ts_local) ts.ip_protocol = 132;
        for (auto& ts : side->ts_remote) ts.ip_protocol = 132, ts.start_port = ts.end_port = 36422;
    }
    x2c.second.ts_local[0].start_port = x2c.second.ts_local[0].end_port = 36422;
    x2c.second.ts_remote[0].start_port = 0;
    x2c.second.ts_remote[0].end_port = 65535;
    t.install(x2c);
    auto x2u = pair_params(0x41, 0x42, EspCipher::AesGcm16_128, 2, 9);
    for (auto* side : {&x2u.first, &x2u.second}) {
        for (auto& ts : side->ts_local) ts.ip_protocol = 17;
        for (auto& ts : side->ts_remote) ts.ip_protocol = 17;
    }
    x2u.first.ts_remote[0].start_port = x2u.first.ts_remote[0].end_port = 2152;
    x2u.second.ts_local[0].start_port = x2u.second.ts_local[0].end_port = 2152;
    t.install(x2u);

    ASSERT_TRUE(t.ea.send(ipv4("198.51.100.1", "203.0.113.1", 132, 5000, 36422, 10)));
    EXPECT_EQ(load_be32(t.ea.last_datagram().data()), 0x32u);
    ASSERT_TRUE(t.ea.send(ipv4("198.51.100.1", "203.0.113.1", 17, 5000, 2152, 10)));
    EXPECT_EQ(load_be32(t.ea.last_datagram().data()), 0x42u);
    EXPECT_FALSE(t.ea.send(ipv4("198.51.100.1", "203.0.113.1", 17, 5000, 2153, 10)));
    EXPECT_FALSE(t.ea.send(ipv4("198.51.100.1", "203.0.113.1", 6, 5000, 36422, 10)));
    EXPECT_FALSE(t.ea.send(ipv4("192.0.2.99", "203.0.113.1", 132, 5000, 36422, 10)));
    EXPECT_EQ(t.ca.get("esp.drop.no_policy"), 3u);
    EXPECT_EQ(t.at_b.size(), 2u);
}

TEST(DataPlane, InboundInnerAddressesMustMatchTheSa) {
    Pair t;
    auto p = pair_params(0x51, 0x52);
    // B is misconfigured with a wider local selector than A accepts from it.
    p.second.ts_local = {TrafficSelector::from_prefix(*IpAddress::parse("203.0.0.0"), 16)};
    t.install(p);
    ASSERT_TRUE(t.eb.send(ipv4("203.0.113.5", "198.51.100.5", 17, 1, 2, 20)));
    EXPECT_FALSE(t.eb.send(ipv4("203.0.114.5", "198.51.100.5", 17, 1, 2, 20)));
    EXPECT_EQ(t.ca.get("esp.drop.policy"), 1u);
    EXPECT_EQ(t.at_a.size(), 1u);
}

TEST(DataPlane, BadInputDroppedCountedNeverDelivered) {
    Pair t;
    t.install(pair_params(0x61, 0x62));
    Bytes pkt = ipv4("198.51.100.1", "203.0.113.1", 17, 1, 2, 64);
    ASSERT_TRUE(t.ea.send(pkt));
    Bytes good = t.ea.last_datagram();
    size_t delivered = t.at_b.size();

    // replayed
    EXPECT_FALSE(t.eb.receive(good));
    EXPECT_EQ(t.cb.get("esp.drop.replay"), 1u);
    // tampered (payload, ICV, header)
    for (size_t i : {size_t(20), good.size() - 1, size_t(5)}) {
        Bytes bad = good;
        bad[i] ^= 0x40;
        store_be32(bad.data() + 4, 100 + uint32_t(i));  // a fresh sequence number
        if (i == 5) bad[5] ^= 0x40;
        EXPECT_FALSE(t.eb.receive(bad));
    }
    EXPECT_EQ(t.cb.get("esp.drop.auth"), 3u);
    // truncated
    for (size_t n : {size_t(8), size_t(20), size_t(39), good.size() - 1}) {
        Bytes bad(good.begin(), good.begin() + static_cast<ptrdiff_t>(n));
        store_be32(bad.data() + 4, 500 + uint32_t(n));
        EXPECT_FALSE(t.eb.receive(bad));
    }
    EXPECT_GE(t.cb.get("esp.drop.truncated") + t.cb.get("esp.drop.auth"), 7u);
    // unknown SPI
    Bytes unknown = good;
    store_be32(unknown.data(), 0xdeadbeef);
    EXPECT_FALSE(t.eb.receive(unknown));
    EXPECT_EQ(t.cb.get("esp.drop.unknown_spi"), 1u);
    // sequence number zero
    Bytes zero = good;
    store_be32(zero.data() + 4, 0);
    EXPECT_FALSE(t.eb.receive(zero));
    EXPECT_EQ(t.cb.get("esp.drop.seq_zero"), 1u);
    // keepalive and IKE are not ESP
    EXPECT_FALSE(t.eb.receive(hex("ff")));
    EXPECT_EQ(t.cb.get("esp.rx.keepalive"), 1u);
    EXPECT_FALSE(t.eb.receive(hex("00000000112233445566778899")));
    EXPECT_EQ(t.cb.get("esp.rx.ike"), 1u);
    EXPECT_FALSE(t.eb.receive(hex("0102")));
    EXPECT_EQ(t.cb.get("esp.drop.not_esp"), 1u);

    EXPECT_EQ(t.at_b.size(), delivered);
    // The window did not move on forged packets: a fresh legitimate packet still passes.
    ASSERT_TRUE(t.ea.send(pkt));
    EXPECT_EQ(t.at_b.size(), delivered + 1);
}

TEST(DataPlane, WrongNextHeaderInTunnelModeDropped) {
    Pair t;
    auto p = pair_params(0x71, 0x72);
    t.install(p);
    // Craft a packet on the A->B SA carrying next header 1 (ICMP) instead of 4.
    auto enc = SaCipher::create(p.first.cipher, p.first.keys_out, true);
    ASSERT_TRUE(enc.ok());
    Bytes inner = ipv4("198.51.100.1", "203.0.113.1", 17, 1, 2, 8);
    Bytes buf(16 + inner.size() + kMaxTailroom);
    std::memcpy(buf.data() + 16, inner.data(), inner.size());
    uint8_t iv[8] = {0, 0, 0, 0, 0, 0, 0, 1};
    size_t n = seal(**enc, 0x72, 1, false, iv, 1, buf, 16, inner.size());
    ASSERT_GT(n, 0u);
    EXPECT_FALSE(t.eb.receive(BytesView(buf.data(), n)));
    EXPECT_EQ(t.cb.get("esp.drop.bad_next_header"), 1u);
    // A dummy packet (next header 59) is accepted and not delivered.
    n = seal(**enc, 0x72, 2, false, iv, 59, buf, 16, 0);
    iv[7] = 2;
    n = seal(**enc, 0x72, 2, false, iv, 59, buf, 16, 0);
    EXPECT_TRUE(t.eb.receive(BytesView(buf.data(), n)));
    EXPECT_EQ(t.cb.get("esp.rx.dummy"), 1u);
    EXPECT_TRUE(t.at_b.empty());
}

TEST(DataPlane, TransportModeRebuildsTheIpHeader) {
    Pair t;
    auto p = pair_params(0x81, 0x82);
    for (auto* s : {&p.first, &p.second}) {
        s->mode = IpsecMode::Transport;
        s->ts_local = {TrafficSelector::from_prefix(s->local_addr, 32)};
        s->ts_remote = {TrafficSelector::from_prefix(s->remote_addr, 32)};
    }
    t.install(p);
    Bytes pkt = ipv4("192.0.2.1", "192.0.2.2", 132, 36422, 36422, 100);
    ASSERT_TRUE(t.ea.send(pkt));
    ASSERT_EQ(t.at_b.size(), 1u);
    const Bytes& got = t.at_b[0];
    ASSERT_EQ(got.size(), pkt.size());
    EXPECT_EQ(got[9], 132);
    EXPECT_EQ(0, std::memcmp(got.data() + 12, pkt.data() + 12, 8));
    EXPECT_EQ(0, std::memcmp(got.data() + 20, pkt.data() + 20, pkt.size() - 20));
    // Transport mode carries the transport payload only: 100 + 8 + trailer + ICV + header.
    EXPECT_EQ(t.ea.last_datagram().size(), 16u + 108 + 2 + 2 + 16);
}

TEST(DataPlane, LifetimesSoftAskForRekeyHardRemove) {
    Pair t;
    auto p = pair_params(0x91, 0x92);
    p.first.lifetime.soft_packets = 5;
    p.first.lifetime.hard_packets = 8;
    t.install(p);
    std::vector<uint32_t> soft, hard;
    t.a.set_events({[&](uint32_t s) { soft.push_back(s); }, [&](uint32_t s) { hard.push_back(s); }});
    Bytes pkt = ipv4("198.51.100.1", "203.0.113.1", 17, 1, 2, 10);
    for (int i = 0; i < 4; ++i) ASSERT_TRUE(t.ea.send(pkt));
    t.a.tick(100);
    EXPECT_TRUE(soft.empty());
    ASSERT_TRUE(t.ea.send(pkt));
    t.a.tick(200);
    EXPECT_EQ(soft, std::vector<uint32_t>{0x91});
    for (int i = 0; i < 3; ++i) ASSERT_TRUE(t.ea.send(pkt));
    EXPECT_FALSE(t.ea.send(pkt));  // hard limit reached: dropped until removed
    EXPECT_EQ(t.ca.get("esp.drop.expired"), 1u);
    t.a.tick(300);
    EXPECT_EQ(soft.size(), 1u);  // soft fires once
    EXPECT_EQ(hard, std::vector<uint32_t>{0x91});
    EXPECT_EQ(t.a.sa_count(), 0u);
    EXPECT_FALSE(t.ea.send(pkt));
    EXPECT_EQ(t.ca.get("esp.drop.no_policy"), 1u);
}

TEST(DataPlane, LifetimeSecondsAndBytes) {
    Pair t;
    auto p = pair_params(0xa1, 0xa2);
    p.first.lifetime.soft_seconds = 10;
    p.first.lifetime.hard_seconds = 20;
    p.second.lifetime.soft_bytes = 1000;
    t.install(p);
    std::vector<uint32_t> soft_a, hard_a, soft_b;
    t.a.set_events({[&](uint32_t s) { soft_a.push_back(s); }, [&](uint32_t s) { hard_a.push_back(s); }});
    t.b.set_events({[&](uint32_t s) { soft_b.push_back(s); }, {}});
    t.a.tick(1000);  // installation time is the first tick
    t.a.tick(10999);
    EXPECT_TRUE(soft_a.empty());
    t.a.tick(11000);
    EXPECT_EQ(soft_a.size(), 1u);
    for (int i = 0; i < 20; ++i) ASSERT_TRUE(t.ea.send(ipv4("198.51.100.1", "203.0.113.1", 17, 1, 2, 50)));
    t.b.tick(0);
    EXPECT_EQ(soft_b, std::vector<uint32_t>{0xa2});  // inbound bytes on B
    t.a.tick(21000);
    EXPECT_EQ(hard_a, std::vector<uint32_t>{0xa1});
}

TEST(DataPlane, SequenceExhaustionForcesRekeyAndStopsSending) {
    Pair t;
    t.install(pair_params(0xb1, 0xb2));
    std::vector<uint32_t> soft;
    t.a.set_events({[&](uint32_t s) { soft.push_back(s); }, {}});
    Bytes pkt = ipv4("198.51.100.1", "203.0.113.1", 17, 1, 2, 10);
    ASSERT_TRUE(t.a.set_outbound_seq(0xb1, 0xffffffffULL - 3).ok());
    for (int i = 0; i < 3; ++i) ASSERT_TRUE(t.ea.send(pkt)) << i;
    EXPECT_EQ(load_be32(t.ea.last_datagram().data() + 4), 0xffffffffu);
    EXPECT_FALSE(t.ea.send(pkt));  // never wraps to 0 without ESN
    EXPECT_EQ(t.ca.get("esp.drop.seq_exhausted"), 1u);
    t.a.tick(0);
    EXPECT_EQ(soft, std::vector<uint32_t>{0xb1});
}

TEST(DataPlane, RekeyWithoutLoss) {
    Pair t;
    auto old_sa = pair_params(0xc1, 0xc2);
    auto new_sa = pair_params(0xd1, 0xd2, EspCipher::AesGcm16_128, 1, 77);
    t.install(old_sa);
    size_t sent = 0;
    auto both_ways = [&] {
        for (int i = 0; i < 5; ++i, ++sent) {
            ASSERT_TRUE(t.ea.send(ipv4("198.51.100.1", "203.0.113.1", 6, 1000, 80, 100, uint8_t(sent))));
            ASSERT_TRUE(t.eb.send(ipv4("203.0.113.1", "198.51.100.1", 6, 80, 1000, 100, uint8_t(sent))));
        }
    };
    both_ways();
    // 1. both install the new pair: inbound ready, outbound still on the old SA
    t.install(new_sa);
    both_ways();
    EXPECT_EQ(load_be32(t.ea.last_datagram().data()), 0xc2u);
    // 2. A switches first: B can already receive on the new SA
    ASSERT_TRUE(t.a.set_outbound(0xc1, 0xd1).ok());
    both_ways();
    EXPECT_EQ(load_be32(t.ea.last_datagram().data()), 0xd2u);
    EXPECT_EQ(load_be32(t.eb.last_datagram().data()), 0xc1u);
    ASSERT_TRUE(t.b.set_outbound(0xc2, 0xd2).ok());
    both_ways();
    EXPECT_EQ(load_be32(t.eb.last_datagram().data()), 0xd1u);
    // 3. delete the old pair
    ASSERT_TRUE(t.a.remove(0xc1).ok());
    ASSERT_TRUE(t.b.remove(0xc2).ok());
    both_ways();
    EXPECT_EQ(t.at_a.size(), sent);
    EXPECT_EQ(t.at_b.size(), sent);
    EXPECT_EQ(t.a.sa_count(), 1u);
    uint64_t drops = 0;
    for (auto& [name, v] : t.ca.snapshot())
        if (name.rfind("esp.drop.", 0) == 0) drops += v;
    EXPECT_EQ(drops, 0u);
}

// ESP that A sent on the old SA before the rekey's DELETE can reach B after B removed the old
// SA (IKE and raw ESP arrive on different sockets): B still accepts it for kRekeyDrainMs,
// counted esp.rx.after_rekey, with its replay window; an SA removed without a successor (a
// plain delete) is gone at once.
TEST(DataPlane, RekeyedAwaySaStillAcceptsPacketsInFlight) {
    Pair t;
    t.install(pair_params(0xc1, 0xc2));
    bool in_flight = true;
    t.ea.on_wire = [&](Bytes&) { return !in_flight; };  // false: the datagram is not delivered yet
    const Bytes p = ipv4("198.51.100.1", "203.0.113.1", 17, 1, 2, 10, 9);
    EXPECT_FALSE(t.ea.send(p));
    const Bytes late_old = t.ea.last_datagram();
    ASSERT_EQ(load_be32(late_old.data()), 0xc2u);
    t.install(pair_params(0xd1, 0xd2, EspCipher::AesGcm16_128, 1, 77));
    ASSERT_TRUE(t.a.set_outbound(0xc1, 0xd1).ok());
    ASSERT_TRUE(t.b.remove(0xc2).ok());
    EXPECT_EQ(t.b.sa_count(), 1u);
    ASSERT_TRUE(t.eb.receive(late_old));
    ASSERT_FALSE(t.at_b.empty());
    EXPECT_EQ(t.at_b.back(), p);
    EXPECT_EQ(t.cb.get("esp.rx.after_rekey"), 1u);
    EXPECT_FALSE(t.eb.receive(late_old));  // still replay-protected
    EXPECT_EQ(t.cb.get("esp.drop.replay"), 1u);
    EXPECT_EQ(t.cb.get("esp.drop.unknown_spi"), 0u);
    // The new SA deleted with no successor: a packet for it that arrives afterwards is dropped.
    EXPECT_FALSE(t.ea.send(p));
    const Bytes late_new = t.ea.last_datagram();
    ASSERT_EQ(load_be32(late_new.data()), 0xd2u);
    ASSERT_TRUE(t.b.remove(0xd2).ok());
    EXPECT_FALSE(t.eb.receive(late_new));
    EXPECT_EQ(t.cb.get("esp.drop.unknown_spi"), 1u);
    EXPECT_EQ(t.cb.get("esp.rx.after_rekey"), 1u);
}

// The data plane reads no clock: the drain window of a rekeyed-away SA is measured on the time
// its caller passes in (here a manual clock), from the latest time it saw before remove().
TEST(DataPlane, DrainWindowRunsOnTheCallersClock) {
    ManualClock clock(50'000);
    Pair t;
    t.install(pair_params(0xc1, 0xc2));
    bool in_flight = true;
    t.ea.on_wire = [&](Bytes&) { return !in_flight; };
    const Bytes p = ipv4("198.51.100.1", "203.0.113.1", 17, 1, 2, 10, 9);
    EXPECT_FALSE(t.ea.send(p, clock.now()));
    const Bytes late1 = t.ea.last_datagram();
    EXPECT_FALSE(t.ea.send(p, clock.now()));
    const Bytes late2 = t.ea.last_datagram();
    ASSERT_NE(late1, late2);
    t.install(pair_params(0xd1, 0xd2, EspCipher::AesGcm16_128, 1, 77));
    ASSERT_TRUE(t.a.set_outbound(0xc1, 0xd1).ok());
    t.b.tick(clock.now());  // B has seen t = 50 s when the rekey's DELETE removes the old SA
    ASSERT_TRUE(t.b.remove(0xc2).ok());
    clock.advance(kRekeyDrainMs - 1);
    ASSERT_TRUE(t.eb.receive(late1, clock.now()));  // inside the window
    EXPECT_EQ(t.cb.get("esp.rx.after_rekey"), 1u);
    clock.advance(1);
    EXPECT_FALSE(t.eb.receive(late2, clock.now()));  // the window closed at 50 s + kRekeyDrainMs
    EXPECT_EQ(t.cb.get("esp.drop.unknown_spi"), 1u);
    EXPECT_EQ(t.cb.get("esp.rx.after_rekey"), 1u);
}

TEST(DataPlane, RemovingTheActiveSaFallsBackToTheNewest) {
    Pair t;
    t.install(pair_params(0xe1, 0xe2));
    t.install(pair_params(0xf1, 0xf2, EspCipher::AesGcm16_128, 1, 55));
    // The IKE side removed the old SA without set_outbound: traffic moves to the new one.
    ASSERT_TRUE(t.a.remove(0xe1).ok());
    ASSERT_TRUE(t.b.remove(0xe2).ok());
    ASSERT_TRUE(t.ea.send(ipv4("198.51.100.1", "203.0.113.1", 17, 1, 2, 10)));
    EXPECT_EQ(load_be32(t.ea.last_datagram().data()), 0xf2u);
}

// install/remove/set_outbound find the policy and the SAs of a policy through indexes, not by
// walking the SPD and the SAD: many policies, rekeys (two SAs per policy), removals in every
// order, and the traffic still leaves on the SA the old walk would have picked.
TEST(DataPlane, PolicyAndSaIndexesFollowInstallsRekeysAndRemovals) {
    Pair t;
    const uint32_t n = 300;
    for (uint32_t i = 0; i < n; ++i) t.install(pair_params(0x1000 + i, 0x2000 + i, EspCipher::AesGcm16_128, i + 1));
    ASSERT_EQ(t.a.check_indexes(), "");
    // Rekey every third policy: a second SA under the same reqid, outbound switched to it.
    for (uint32_t i = 0; i < n; i += 3) {
        t.install(pair_params(0x5000 + i, 0x6000 + i, EspCipher::AesGcm16_128, i + 1, 9));
        ASSERT_TRUE(t.a.set_outbound(0x1000 + i, 0x5000 + i).ok());
    }
    ASSERT_EQ(t.a.check_indexes(), "");
    EXPECT_EQ(t.a.sa_count(), n + n / 3);
    // Policy 1 (reqid 1, the first of 300 with the same selectors) carries the traffic: its
    // rekeyed SA 0x5000 sends.
    Bytes pkt = ipv4("198.51.100.1", "203.0.113.1", 17, 1, 2, 10);
    ASSERT_TRUE(t.ea.send(pkt));
    EXPECT_EQ(load_be32(t.ea.last_datagram().data()), 0x6000u);
    // Removing the new SA of a rekeyed policy falls back to the old one; removing the old SA
    // of another keeps the new; removing a policy's only SA removes the policy, and the next
    // policy in SPD order takes the traffic.
    ASSERT_TRUE(t.a.remove(0x5000).ok());
    ASSERT_EQ(t.a.check_indexes(), "");
    ASSERT_TRUE(t.ea.send(pkt));
    EXPECT_EQ(load_be32(t.ea.last_datagram().data()), 0x2000u);
    ASSERT_TRUE(t.a.remove(0x1000).ok());
    ASSERT_EQ(t.a.check_indexes(), "");
    ASSERT_TRUE(t.ea.send(pkt));
    EXPECT_EQ(load_be32(t.ea.last_datagram().data()), 0x2001u);                    // reqid 2, never rekeyed
    for (uint32_t i = 3; i < n; i += 3) ASSERT_TRUE(t.a.remove(0x1000 + i).ok());  // old SAs of the rekeyed
    ASSERT_EQ(t.a.check_indexes(), "");
    for (uint32_t i = n - 1; i >= 1; --i) {  // everything else, newest policy first
        const uint32_t spi = i % 3 == 0 ? 0x5000 + i : 0x1000 + i;
        ASSERT_TRUE(t.a.remove(spi).ok()) << std::hex << spi;
        if (i % 50 == 0) {
            ASSERT_EQ(t.a.check_indexes(), "");
        }
    }
    EXPECT_EQ(t.a.sa_count(), 0u);
    EXPECT_EQ(t.a.check_indexes(), "");
    EXPECT_FALSE(t.ea.send(pkt));  // no policy left
    EXPECT_FALSE(t.a.remove(0x1001).ok());
}

TEST(DataPlane, InstallErrors) {
    Counters c;
    DataPlane dp(c);
    auto p = pair_params(0x1, 0x2).first;
    ASSERT_TRUE(dp.install(p).ok());
    EXPECT_FALSE(dp.install(p).ok());  // same SPI
    auto z = p;
    z.spi_in = 0;
    EXPECT_FALSE(dp.install(z).ok());
    auto k = pair_params(0x3, 0x4).first;
    k.keys_out.enc_key = SecureBytes(Bytes(5, 1));
    EXPECT_FALSE(dp.install(k).ok());
    auto n = pair_params(0x5, 0x6).first;
    n.ts_local.clear();
    EXPECT_FALSE(dp.install(n).ok());
    EXPECT_FALSE(dp.remove(0x77).ok());
    EXPECT_FALSE(dp.set_outbound(0x1, 0x77).ok());
    EXPECT_EQ(dp.sa_count(), 1u);
}

TEST(DataPlane, GcmExplicitIvIsAPerSaCounter) {
    Pair t;
    t.install(pair_params(0x1a1, 0x1a2));
    Bytes pkt = ipv4("198.51.100.1", "203.0.113.1", 17, 1, 2, 10);
    uint64_t prev = 0;
    for (int i = 0; i < 5; ++i) {
        ASSERT_TRUE(t.ea.send(pkt));
        const Bytes& w = t.ea.last_datagram();
        uint64_t iv = (uint64_t(load_be32(w.data() + 8)) << 32) | load_be32(w.data() + 12);
        if (i > 0) {
            EXPECT_EQ(iv, prev + 1) << "RFC 4106: unique IV per packet under one key";
        }
        prev = iv;
    }
    EXPECT_EQ(t.at_b.size(), 5u);
}

namespace {
// Outbound SPI of the ESP packet MemoryEndpoint put on the wire last (the tap).
uint32_t last_spi_out(const std::vector<Bytes>& wire) {
    const Bytes& e = wire.back();
    return (uint32_t(e[0]) << 24) | (uint32_t(e[1]) << 16) | (uint32_t(e[2]) << 8) | e[3];
}
}  // namespace

TEST(DataPlane, FlowCacheFollowsPolicyChanges) {
    // protect() caches flow -> policy per thread; installs and removals must invalidate it.
    Pair t;
    std::vector<Bytes> wire;
    t.ea.on_wire = [&](Bytes& d) {
        wire.push_back(d);
        return true;
    };
    // 200 other policies first (10.1.x.y/32 === 10.2.x.y/32), then the one the flow uses.
    for (uint32_t i = 1; i <= 200; ++i) {
        auto p = pair_params(0x100000 + i, 0x200000 + i, EspCipher::AesGcm16_128, i + 1);
        p.first.ts_local = {TrafficSelector::from_prefix(IpAddress::v4(10, 1, 0, uint8_t(i)), 32)};
        p.first.ts_remote = {TrafficSelector::from_prefix(IpAddress::v4(10, 2, 0, uint8_t(i)), 32)};
        ASSERT_TRUE(t.a.install(p.first).ok());
    }
    auto p1 = pair_params(0x11, 0x12);
    t.install(p1);
    Bytes pkt = ipv4("198.51.100.1", "203.0.113.1", 17, 1000, 2000, 40);
    ASSERT_TRUE(t.ea.send(pkt));
    ASSERT_TRUE(t.ea.send(pkt));  // the second one from the cache
    EXPECT_EQ(last_spi_out(wire), 0x12u);
    EXPECT_EQ(t.at_b.size(), 2u);
    // Another SA for the same selectors: a new policy only after the old one is removed.
    ASSERT_TRUE(t.a.remove(0x11).ok());
    EXPECT_FALSE(t.ea.send(pkt)) << "no policy any more: the cached entry must not be used";
    EXPECT_EQ(t.ca.get("esp.drop.no_policy"), 1u);
    auto p2 = pair_params(0x21, 0x22, EspCipher::AesGcm16_128, 1, 7);
    ASSERT_TRUE(t.b.remove(0x12).ok());
    t.install(p2);
    ASSERT_TRUE(t.ea.send(pkt));
    EXPECT_EQ(last_spi_out(wire), 0x22u);
    EXPECT_EQ(t.at_b.size(), 3u);
    // A flow of one of the other policies goes out on its own SA (B does not hold it).
    EXPECT_FALSE(t.ea.send(ipv4("10.1.0.7", "10.2.0.7", 17, 1, 2, 10)));
    EXPECT_EQ(last_spi_out(wire), 0x200007u);
    EXPECT_FALSE(t.ea.send(ipv4("10.1.0.7", "10.2.0.7", 17, 1, 2, 10)));
    EXPECT_EQ(last_spi_out(wire), 0x200007u);
    EXPECT_TRUE(t.ea.send(pkt));
    EXPECT_EQ(last_spi_out(wire), 0x22u);
}

// ---------------------------------------------------------------- lifetime scheduling
// tick() pops only the SAs whose time deadline is due (a min-heap, stale entries of removed
// SAs skipped), plus those the data path flagged; tick_examined() counts what it looked at.

namespace {

struct Events {
    std::vector<std::pair<Millis, uint32_t>> soft, hard;  // (tick time, spi)
    Millis now = 0;
    ChildSaEvents handlers() {
        return {[this](uint32_t s) { soft.emplace_back(now, s); }, [this](uint32_t s) { hard.emplace_back(now, s); }};
    }
    void tick(DataPlane& dp, Millis t) {
        now = t;
        dp.tick(t);
    }
};

ChildSaParams timed(uint32_t spi, uint64_t soft_s, uint64_t hard_s, uint32_t reqid = 0) {
    ChildSaParams p = pair_params(spi, spi + 0x10000000u, EspCipher::AesGcm16_128, reqid ? reqid : spi).first;
    p.lifetime.soft_seconds = soft_s;
    p.lifetime.hard_seconds = hard_s;
    return p;
}

}  // namespace

TEST(DataPlaneLifetimeOrder, ManySasFireInDeadlineOrderEachOnceSoftThenHard) {
    Counters c;
    DataPlane dp(c);
    Events ev;
    dp.set_events(ev.handlers());
    // 300 SAs, installed in an order unrelated to their deadlines: soft after 1..300 s
    // (a permutation), hard 50 s after the soft one; 0 s and no limit mixed in.
    std::map<uint32_t, std::pair<Millis, Millis>> want;  // spi -> (soft at, hard at), ms
    const Millis start = 5000;
    for (uint32_t i = 0; i < 300; ++i) {
        const uint32_t spi = 0x1000 + i;
        const uint64_t soft_s = 1 + (i * 7919u) % 300;
        ASSERT_TRUE(dp.install(timed(spi, soft_s, soft_s + 50)).ok());
        want[spi] = {start + Millis(soft_s) * 1000, start + Millis(soft_s + 50) * 1000};
    }
    ASSERT_TRUE(dp.install(timed(0x9000, 0, 0)).ok());  // no time limits: never fires
    ev.tick(dp, start);                                 // lifetimes start at the first tick
    EXPECT_TRUE(ev.soft.empty());
    for (Millis t = start + 100; t <= start + 400'000; t += 100) ev.tick(dp, t);
    ASSERT_EQ(ev.soft.size(), 300u);
    ASSERT_EQ(ev.hard.size(), 300u);
    std::set<uint32_t> soft_seen, hard_seen;
    for (size_t i = 0; i < ev.soft.size(); ++i) {
        auto [t, spi] = ev.soft[i];
        ASSERT_TRUE(want.count(spi)) << std::hex << spi;
        EXPECT_EQ(t, want[spi].first) << std::hex << spi;  // at the first tick at or after it
        EXPECT_TRUE(soft_seen.insert(spi).second) << "soft twice " << std::hex << spi;
        if (i > 0) {
            EXPECT_LE(ev.soft[i - 1].first, t);
        }
    }
    for (size_t i = 0; i < ev.hard.size(); ++i) {
        auto [t, spi] = ev.hard[i];
        EXPECT_EQ(t, want[spi].second) << std::hex << spi;
        EXPECT_TRUE(hard_seen.insert(spi).second) << "hard twice " << std::hex << spi;
        EXPECT_TRUE(soft_seen.count(spi)) << "hard before soft " << std::hex << spi;
        if (i > 0) {
            EXPECT_LE(ev.hard[i - 1].first, t);
        }
    }
    EXPECT_EQ(dp.sa_count(), 1u);  // the untimed one
    EXPECT_EQ(c.get("esp.sa.soft_expired"), 300u);
    EXPECT_EQ(c.get("esp.sa.hard_expired"), 300u);
}

TEST(DataPlaneLifetimeOrder, DueInOneTickFireInDeadlineOrder) {
    Counters c;
    DataPlane dp(c);
    Events ev;
    dp.set_events(ev.handlers());
    // Installed latest deadline first; one tick long after all soft limits (none hard).
    for (uint32_t i = 0; i < 50; ++i) ASSERT_TRUE(dp.install(timed(0x2000 + i, 100 - i, 1000)).ok());
    ev.tick(dp, 0);
    ev.tick(dp, 200'000);
    ASSERT_EQ(ev.soft.size(), 50u);
    for (uint32_t i = 0; i < 50; ++i) EXPECT_EQ(ev.soft[i].second, 0x2000 + 49 - i) << i;
    EXPECT_TRUE(ev.hard.empty());
    // A tick past both limits of an SA raises hard only, as a walk over all SAs did.
    ASSERT_TRUE(dp.install(timed(0x3000, 10, 20)).ok());
    ev.tick(dp, 300'000);
    ev.tick(dp, 400'000);
    EXPECT_EQ(ev.soft.size(), 50u);
    ASSERT_EQ(ev.hard.size(), 1u);
    EXPECT_EQ(ev.hard[0].second, 0x3000u);
}

TEST(DataPlaneLifetimeOrder, RemovedSaNeverFires) {
    Counters c;
    DataPlane dp(c);
    Events ev;
    dp.set_events(ev.handlers());
    for (uint32_t i = 0; i < 100; ++i) ASSERT_TRUE(dp.install(timed(0x100 + i, 10, 20)).ok());
    ev.tick(dp, 0);
    for (uint32_t i = 0; i < 100; i += 2) ASSERT_TRUE(dp.remove(0x100 + i).ok());
    // Removed before its first tick too.
    ASSERT_TRUE(dp.install(timed(0x500, 1, 2)).ok());
    ASSERT_TRUE(dp.remove(0x500).ok());
    for (Millis t = 100; t <= 30'000; t += 100) ev.tick(dp, t);
    ASSERT_EQ(ev.soft.size(), 50u);
    ASSERT_EQ(ev.hard.size(), 50u);
    for (auto& [t, spi] : ev.soft) EXPECT_EQ((spi - 0x100) % 2, 1u) << std::hex << spi;
    for (auto& [t, spi] : ev.hard) EXPECT_EQ((spi - 0x100) % 2, 1u) << std::hex << spi;
    EXPECT_EQ(dp.sa_count(), 0u);
}

// An SPI handed out again: the removed SA's queued deadline must not fire the new one early.
TEST(DataPlaneLifetimeOrder, ReusedSpiKeepsItsOwnDeadlines) {
    Counters c;
    DataPlane dp(c);
    Events ev;
    dp.set_events(ev.handlers());
    ASSERT_TRUE(dp.install(timed(0x77, 10, 20)).ok());
    ev.tick(dp, 0);
    ASSERT_TRUE(dp.remove(0x77).ok());
    ASSERT_TRUE(dp.install(timed(0x77, 30, 40)).ok());
    ev.tick(dp, 1000);  // the new SA's lifetime starts here
    for (Millis t = 1100; t <= 30'900; t += 100) ev.tick(dp, t);
    EXPECT_TRUE(ev.soft.empty());
    ev.tick(dp, 31'000);
    ASSERT_EQ(ev.soft.size(), 1u);
    EXPECT_EQ(ev.soft[0].second, 0x77u);
    for (Millis t = 31'100; t <= 41'000; t += 100) ev.tick(dp, t);
    ASSERT_EQ(ev.hard.size(), 1u);
    EXPECT_EQ(ev.hard[0].first, 41'000);
}

TEST(DataPlaneLifetimeOrder, RekeyedAwaySaIsDroppedAfterItsGracePeriod) {
    Pair t;
    t.install(pair_params(0xc1, 0xc2));
    bool in_flight = true;
    t.ea.on_wire = [&](Bytes&) { return !in_flight; };
    const Bytes p = ipv4("198.51.100.1", "203.0.113.1", 17, 1, 2, 10, 9);
    EXPECT_FALSE(t.ea.send(p, 10'000));
    const Bytes late = t.ea.last_datagram();
    in_flight = false;
    t.install(pair_params(0xd1, 0xd2, EspCipher::AesGcm16_128, 1, 77));
    ASSERT_TRUE(t.a.set_outbound(0xc1, 0xd1).ok());
    t.b.tick(10'000);
    ASSERT_TRUE(t.b.remove(0xc2).ok());  // rekeyed away at 10 s: drains until 12 s
    EXPECT_EQ(t.b.draining_count(), 1u);
    t.b.tick(10'000 + kRekeyDrainMs - 1);
    EXPECT_EQ(t.b.draining_count(), 1u);
    ASSERT_TRUE(t.eb.receive(late, 10'000 + kRekeyDrainMs - 1));
    EXPECT_EQ(t.cb.get("esp.rx.after_rekey"), 1u);
    t.b.tick(10'000 + kRekeyDrainMs);
    EXPECT_EQ(t.b.draining_count(), 0u);
    // Removed without a successor: not kept at all.
    ASSERT_TRUE(t.b.remove(0xd2).ok());
    EXPECT_EQ(t.b.draining_count(), 0u);
    EXPECT_EQ(t.b.sa_count(), 0u);
}

TEST(DataPlaneLifetimeOrder, TenThousandSasNoneDueExamineNone) {
    Pair t;
    const uint32_t n = 10'000;
    for (uint32_t i = 0; i < n; ++i) {
        auto p = pair_params(0x10000 + i, 0x20000 + i, EspCipher::AesGcm16_128, i + 1);
        p.first.lifetime.soft_seconds = 3600 + i % 100;
        p.first.lifetime.hard_seconds = 7200;
        p.first.lifetime.soft_packets = 3;
        ASSERT_TRUE(t.a.install(p.first).ok());
    }
    std::vector<uint32_t> soft;
    t.a.set_events({[&](uint32_t s) { soft.push_back(s); }, {}});
    t.a.tick(0);  // starts every lifetime: each SA once
    EXPECT_EQ(t.a.tick_examined(), n);
    for (Millis now = 100; now <= 10'000; now += 100) t.a.tick(now);
    EXPECT_EQ(t.a.tick_examined(), n);  // 100 ticks, nothing due: no SA looked at
    // A packet limit crossed on the data path: the next tick examines that SA only.  The SPD
    // holds 10,000 policies with the same selectors; the first installed one carries it.
    Bytes pkt = ipv4("198.51.100.1", "203.0.113.1", 17, 1, 2, 10);
    for (int i = 0; i < 3; ++i) (void)t.ea.send(pkt, 10'000);
    t.a.tick(10'100);
    EXPECT_EQ(soft, std::vector<uint32_t>{0x10000});
    EXPECT_EQ(t.a.tick_examined(), n + 1);
    t.a.tick(10'200);
    EXPECT_EQ(t.a.tick_examined(), n + 1);
    // The first soft time limit (3600 s, every 100th SA): those 100 SAs and no other.
    t.a.tick(3'600'000);
    EXPECT_EQ(t.a.tick_examined(), n + 1 + 100);
    EXPECT_EQ(soft.size(), 1u + 99);  // 0x10000 had fired already
}

TEST(DataPlaneLifetimeOrder, StaleDeadlinesOfRemovedSasAreCompacted) {
    Counters c;
    DataPlane dp(c);
    const uint32_t n = 3000;
    for (uint32_t i = 0; i < n; ++i) ASSERT_TRUE(dp.install(timed(0x40000 + i, 100, 200)).ok());
    dp.tick(0);
    EXPECT_EQ(dp.tick_examined(), n);
    for (uint32_t i = 0; i < n; ++i) ASSERT_TRUE(dp.remove(0x40000 + i).ok());
    // When the removed SAs' deadlines pass, fewer stale entries than removals are left.
    dp.tick(100'000);
    const uint64_t stale = dp.tick_examined() - n;
    EXPECT_GT(stale, 0u);
    EXPECT_LE(stale, 1024u);
    dp.tick(200'000);
    EXPECT_EQ(dp.tick_examined(), n + stale);
}
