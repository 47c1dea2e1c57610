// The IKEv2 engine and the ESP data plane together in one process, with the in-memory
// backend: two ike::Engine instances whose ChildSaBackend is an esp::DataPlane, IKE datagrams
// carried by a shuttle, ESP by MemoryEndpoint.  Nobody calls rekey by hand: the data plane's
// soft limits (packets, bytes, sequence numbers) raise ChildSaEvents, the engines run
// CREATE_CHILD_SA, and the traffic that flows the whole time must arrive complete, in order,
// with no ESP drop.  A hard limit without a soft one removes the Child SA on both sides.
#include <gtest/gtest.h>

#include <cstring>
#include <memory>
#include <thread>
#include <x2sec/common/event_queue.hpp>
#include <x2sec/common/rng.hpp>
#include <x2sec/common/time.hpp>
#include <x2sec/esp/memory_backend.hpp>
#include <x2sec/ikev2/engine.hpp>

using namespace x2sec;
using namespace x2sec::esp;
using namespace x2sec::ike;

namespace {

// A is 192.0.2.1 protecting 203.0.113.1, B is 192.0.2.2 protecting 203.0.113.2.
PeerConfig peer(bool a, const Lifetime& life) {
    PeerConfig p;
    p.name = a ? "to-b" : "to-a";
    p.local_addr = a ? IpAddress::v4(192, 0, 2, 1) : IpAddress::v4(192, 0, 2, 2);
    p.remote_addr = a ? IpAddress::v4(192, 0, 2, 2) : IpAddress::v4(192, 0, 2, 1);
    p.local_id = Identity::parse(a ? "fqdn:a.henb.example" : "fqdn:b.henb.example").value();
    p.remote_id = Identity::parse(a ? "fqdn:b.henb.example" : "fqdn:a.henb.example").value();
    p.local_auth = p.remote_auth = AuthMethod::Psk;
    p.psk = SecureBytes(as_bytes("in-process rekey test secret"));
    p.ike_proposals = {parse_ike_proposal("aes128gcm16-prfsha256-ecp256").value()};
    ChildConfig c;
    c.name = "x2";
    c.local_ts = {TrafficSelector::from_prefix(a ? IpAddress::v4(203, 0, 113, 1) : IpAddress::v4(203, 0, 113, 2), 32)};
    c.remote_ts = {TrafficSelector::from_prefix(a ? IpAddress::v4(203, 0, 113, 2) : IpAddress::v4(203, 0, 113, 1), 32)};
    c.proposals = {parse_child_proposal("aes128gcm16").value()};
    c.lifetime = life;
    c.rekey_seconds = 0;
    p.children = {c};
    p.dpd_interval_ms = 0;
    p.ike_rekey_seconds = 0;
    return p;
}

// IPv4/UDP 2152 (X2-U) packet carrying a 32-bit sequence number and filler.
Bytes packet(bool from_a, uint32_t n, size_t payload) {
    Bytes p(28 + payload);
    p[0] = 0x45;
    p[2] = uint8_t(p.size() >> 8);
    p[3] = uint8_t(p.size());
    p[8] = 64;
    p[9] = 17;
    uint8_t x = from_a ? 1 : 2, y = from_a ? 2 : 1;
    const uint8_t src[4] = {203, 0, 113, x}, dst[4] = {203, 0, 113, y};
    std::memcpy(p.data() + 12, src, 4);
    std::memcpy(p.data() + 16, dst, 4);
    p[20] = 0x08, p[21] = 0x68, p[22] = 0x08, p[23] = 0x68;  // 2152 -> 2152
    p[24] = uint8_t((8 + payload) >> 8);
    p[25] = uint8_t(8 + payload);
    for (size_t i = 0; i < payload; ++i) p[28 + i] = uint8_t(n + i);
    p[28] = uint8_t(n >> 24), p[29] = uint8_t(n >> 16), p[30] = uint8_t(n >> 8), p[31] = uint8_t(n);
    return p;
}

uint32_t seq_of(BytesView p) {
    return uint32_t(p[28]) << 24 | uint32_t(p[29]) << 16 | uint32_t(p[30]) << 8 | p[31];
}

struct Side {
    Counters counters;
    DataPlane dp{counters};
    MemoryEndpoint ep{dp};
    DeterministicRng rng;
    EngineConfig cfg;
    ChildSaEventQueue expiries;  // the data plane's lifetime events, for the engine's loop
    std::unique_ptr<Engine> engine;
    std::vector<Event> events;
    std::vector<uint32_t> received;  // sequence numbers of delivered packets
    bool intact = true;
    explicit Side(uint64_t seed) : rng(seed) {}
    size_t count(Event::Kind k) const {
        size_t n = 0;
        for (const auto& e : events) n += e.kind == k;
        return n;
    }
    uint64_t c(const char* name) const { return counters.get(name); }
    size_t children() const {
        auto sas = engine->list_sas();
        return sas.empty() ? 0 : sas[0].children.size();
    }
};

struct World {
    ManualClock clock{1000};
    Side a{11}, b{12};
    explicit World(const Lifetime& life) : World(life, life) {}
    World(const Lifetime& life_a, const Lifetime& life_b) {
        a.cfg.peers = {peer(true, life_a)};
        b.cfg.peers = {peer(false, life_b)};
        a.engine = std::make_unique<Engine>(a.cfg, a.dp, a.rng);  // the DataPlane is the backend
        b.engine = std::make_unique<Engine>(b.cfg, b.dp, b.rng);
        a.dp.set_events(a.expiries.events());
        b.dp.set_events(b.expiries.events());
        a.ep.connect(b.ep);
        b.ep.connect(a.ep);
        for (Side* s : {&a, &b}) {
            Side& me = *s;
            me.ep.on_deliver = [&me, from_a = s == &b](BytesView p) {
                uint32_t n = seq_of(p);
                me.intact &= Bytes(p.begin(), p.end()) == packet(from_a, n, p.size() - 28);
                me.received.push_back(n);
            };
        }
    }
    void pump() {
        for (int round = 0; round < 50; ++round) {
            auto oa = a.engine->take_outgoing(), ob = b.engine->take_outgoing();
            collect();
            if (oa.empty() && ob.empty()) return;
            for (auto& d : oa) deliver(d, b);
            for (auto& d : ob) deliver(d, a);
        }
    }
    void deliver(const Datagram& d, Side& to) {
        Datagram in;
        in.local = d.remote;
        in.remote = d.local;
        in.data = d.data;
        in.non_esp_marker = d.non_esp_marker;
        to.engine->handle_datagram(in, clock.now());
    }
    void collect() {
        for (auto& e : a.engine->take_events()) a.events.push_back(e);
        for (auto& e : b.engine->take_events()) b.events.push_back(e);
    }
    // What the backends' RX threads and the runtime loop do every few ms: the data planes tick
    // on a thread of their own (where their lifetime events are raised), the loop takes the
    // queued events and hands them to its engine.
    void tick(Millis ms) {
        clock.advance(ms);
        std::thread data_plane([&] {
            a.dp.tick(clock.now());
            b.dp.tick(clock.now());
        });
        data_plane.join();
        a.expiries.deliver(*a.engine, clock.now());
        b.expiries.deliver(*b.engine, clock.now());
        a.engine->tick(clock.now());
        b.engine->tick(clock.now());
        pump();
    }
    bool connect() {
        if (!a.engine->initiate("to-b", clock.now()).ok()) return false;
        pump();
        return a.dp.sa_count() == 1 && b.dp.sa_count() == 1;
    }
    // n packets A -> B and n/4 B -> A, with IKE and lifetimes serviced every 8 packets.
    void traffic(uint32_t& next_a, uint32_t& next_b, size_t n, size_t payload) {
        for (size_t i = 0; i < n; ++i) {
            a.ep.send(packet(true, next_a++, payload), clock.now());
            if (i % 4 == 0) b.ep.send(packet(false, next_b++, payload / 4 + 8), clock.now());
            if (i % 8 == 7) tick(5);
        }
        tick(5);
    }
};

void expect_sequence(const std::vector<uint32_t>& got, uint32_t n) {
    ASSERT_EQ(got.size(), n);
    for (uint32_t i = 0; i < n; ++i) ASSERT_EQ(got[i], i) << "packet " << i << " lost or reordered";
}

void expect_no_esp_drops(const Side& s) {
    for (const char* c : {"esp.drop.auth", "esp.drop.unknown_spi", "esp.drop.replay", "esp.drop.replay_old",
                          "esp.drop.expired", "esp.drop.no_policy", "esp.drop.seq_exhausted", "esp.drop.policy"})
        EXPECT_EQ(s.c(c), 0u) << c;
}

TEST(EspIkeRekey, SoftPacketLimitRekeysThroughTheEngineWithoutLoss) {
    Lifetime life;
    life.soft_packets = 200;
    life.hard_packets = 100000;
    World w(life);
    ASSERT_TRUE(w.connect());
    uint32_t na = 0, nb = 0;
    w.traffic(na, nb, 2000, 300);
    expect_sequence(w.b.received, na);
    expect_sequence(w.a.received, nb);
    EXPECT_TRUE(w.a.intact);
    EXPECT_TRUE(w.b.intact);
    // 2000 packets with a soft limit of 200 (A's outbound, B's inbound): about nine rekeys.
    size_t rekeys = w.a.count(Event::Kind::ChildSaRekeyed);
    EXPECT_GE(rekeys, 5u);
    EXPECT_GE(w.a.c("esp.sa.soft_expired") + w.b.c("esp.sa.soft_expired"), 5u);
    EXPECT_EQ(w.a.c("esp.sa.installed"), 1 + w.a.c("esp.sa.removed"));
    EXPECT_GE(w.a.c("esp.sa.outbound_switched"), 5u);
    // Old SAs were deleted by IKE: one Child SA left on each side, in the data plane and engine.
    EXPECT_EQ(w.a.dp.sa_count(), 1u);
    EXPECT_EQ(w.b.dp.sa_count(), 1u);
    EXPECT_EQ(w.a.children(), 1u);
    EXPECT_EQ(w.b.children(), 1u);
    EXPECT_EQ(w.a.dp.status()[0].spi_out, w.b.dp.status()[0].spi_in);
    expect_no_esp_drops(w.a);
    expect_no_esp_drops(w.b);
}

TEST(EspIkeRekey, SoftByteLimitRekeysThroughTheEngineWithoutLoss) {
    Lifetime life;
    life.soft_bytes = 100000;  // inner octets per direction
    World w(life);
    ASSERT_TRUE(w.connect());
    uint32_t na = 0, nb = 0;
    w.traffic(na, nb, 1500, 1000);  // ~1.5 MB A -> B
    expect_sequence(w.b.received, na);
    expect_sequence(w.a.received, nb);
    EXPECT_GE(w.a.count(Event::Kind::ChildSaRekeyed) + w.b.count(Event::Kind::ChildSaRekeyed), 10u);
    EXPECT_EQ(w.a.dp.sa_count(), 1u);
    EXPECT_EQ(w.b.dp.sa_count(), 1u);
    expect_no_esp_drops(w.a);
    expect_no_esp_drops(w.b);
}

TEST(EspIkeRekey, SequenceNumberExhaustionForcesARekey) {
    World w(Lifetime{});
    ASSERT_TRUE(w.connect());
    uint32_t old_in = w.a.dp.status()[0].spi_in;
    // Close to 2^32 - 1: within DataPlaneOptions::seq_soft_margin, so the first packet asks
    // for a rekey, and the SA must not run out before the new one takes over.
    ASSERT_TRUE(w.a.dp.set_outbound_seq(old_in, 0xffffffffULL - 200).ok());
    uint32_t na = 0, nb = 0;
    w.traffic(na, nb, 400, 200);
    expect_sequence(w.b.received, na);
    EXPECT_EQ(w.a.count(Event::Kind::ChildSaRekeyed), 1u);
    EXPECT_EQ(w.a.c("esp.sa.soft_expired"), 1u);
    EXPECT_EQ(w.a.c("esp.drop.seq_exhausted"), 0u);
    ASSERT_EQ(w.a.dp.sa_count(), 1u);
    EXPECT_NE(w.a.dp.status()[0].spi_in, old_in);
    EXPECT_LT(w.a.dp.status()[0].out_seq, 1000u);  // the new SA starts again at 1
    expect_no_esp_drops(w.b);
}

TEST(EspIkeRekey, SequenceExhaustionWithoutRekeyStopsSending) {
    // The engine cannot answer (the IKE datagrams are lost): the SA stops at 2^32 - 1 and
    // never wraps.
    World w(Lifetime{});
    ASSERT_TRUE(w.connect());
    uint32_t spi = w.a.dp.status()[0].spi_in;
    ASSERT_TRUE(w.a.dp.set_outbound_seq(spi, 0xffffffffULL - 3).ok());
    size_t sent = 0;
    for (uint32_t i = 0; i < 10; ++i) sent += w.a.ep.send(packet(true, i, 100), w.clock.now());
    EXPECT_EQ(sent, 3u);
    EXPECT_EQ(w.a.c("esp.drop.seq_exhausted"), 7u);
    EXPECT_EQ(w.b.received.size(), 3u);
}

TEST(EspIkeRekey, HardLimitWithoutSoftRemovesTheChildSaOnBothSides) {
    Lifetime life;
    life.hard_packets = 50;  // no soft limit: no rekey
    World w(life);
    ASSERT_TRUE(w.connect());
    uint32_t na = 0, nb = 0;
    for (int i = 0; i < 80; ++i) w.a.ep.send(packet(true, na++, 100), w.clock.now());
    EXPECT_EQ(w.b.received.size(), 50u);
    EXPECT_EQ(w.a.c("esp.drop.expired"), 30u);
    w.tick(10);  // A's data plane removes it, its engine deletes the Child SA with the peer
    w.tick(10);
    EXPECT_EQ(w.a.c("esp.sa.hard_expired"), 1u);
    EXPECT_EQ(w.a.dp.sa_count(), 0u);
    EXPECT_EQ(w.b.dp.sa_count(), 0u);  // removed through the IKE delete
    EXPECT_EQ(w.a.children(), 0u);
    EXPECT_EQ(w.b.children(), 0u);
    EXPECT_EQ(w.a.count(Event::Kind::ChildSaRekeyed), 0u);
    // Nothing gets through any more.
    EXPECT_FALSE(w.a.ep.send(packet(true, na++, 100), w.clock.now()));
    EXPECT_FALSE(w.b.ep.send(packet(false, nb++, 100), w.clock.now()));
    // The IKE SA itself stays up.
    ASSERT_EQ(w.a.engine->list_sas().size(), 1u);
    EXPECT_EQ(w.a.engine->list_sas()[0].state, "ESTABLISHED");
}

TEST(EspIkeRekey, HardLimitOnOneSideReachesThePeerThroughAnIkeDelete) {
    // Only A has a limit: B learns about the expiry from A's INFORMATIONAL delete alone.
    Lifetime life;
    life.hard_packets = 50;
    World w(life, Lifetime{});
    ASSERT_TRUE(w.connect());
    uint32_t na = 0;
    for (int i = 0; i < 60; ++i) w.a.ep.send(packet(true, na++, 100), w.clock.now());
    EXPECT_EQ(w.b.received.size(), 50u);
    EXPECT_EQ(w.b.dp.sa_count(), 1u);  // B's own limits are not reached
    w.tick(10);
    w.tick(10);
    EXPECT_EQ(w.a.c("esp.sa.hard_expired"), 1u);
    EXPECT_EQ(w.b.c("esp.sa.hard_expired"), 0u);
    EXPECT_EQ(w.a.dp.sa_count(), 0u);
    EXPECT_EQ(w.b.dp.sa_count(), 0u);
    EXPECT_EQ(w.b.c("esp.sa.removed"), 1u);
    EXPECT_EQ(w.a.children(), 0u);
    EXPECT_EQ(w.b.children(), 0u);
    EXPECT_EQ(w.a.count(Event::Kind::ChildSaDown), 1u);
    EXPECT_EQ(w.b.count(Event::Kind::ChildSaDown), 1u);
    EXPECT_FALSE(w.b.ep.send(packet(false, 0, 100), w.clock.now()));
}

}  // namespace
