// Timers: the engine keeps a min-heap of per-SA deadlines (lazily invalidated) instead of
// scanning every SA in tick()/next_deadline().  These tests pin the observable behaviour under
// the fixed clock: next_deadline() is exact, due timers fire in tick(), an entry made stale by
// traffic is neither reported nor fired, and many SAs are served correctly.
#include <gtest/gtest.h>

#include "ikev2_harness.hpp"

using namespace x2sec;
using namespace x2sec::ike;
using namespace x2sec::test;

TEST(IkeTimers, ManySasDpdFiresOnceEachAtTheDeadline) {
    auto pa = base_peer(true), pb = base_peer(false);
    pa.dpd_interval_ms = 10000;
    pb.unique = UniquePolicy::No;  // 40 IKE SAs with the same identities, all kept
    Pair p(pa, pb);
    constexpr size_t kSas = 40;
    for (size_t i = 0; i < kSas; ++i) {
        ASSERT_TRUE(p.a.engine->initiate("to-b", p.clock.now()).ok());
        p.pump();
    }
    ASSERT_EQ(p.a.engine->list_sas().size(), kSas);
    ASSERT_EQ(p.b.engine->list_sas().size(), kSas);
    for (const auto& s : p.a.engine->list_sas()) ASSERT_EQ(s.state, "ESTABLISHED");
    Millis t0 = p.clock.now();
    ASSERT_TRUE(p.a.engine->next_deadline().has_value());
    EXPECT_EQ(*p.a.engine->next_deadline(), t0 + 10000);
    EXPECT_FALSE(p.b.engine->next_deadline().has_value() && *p.b.engine->next_deadline() < t0 + 30000);
    p.advance(9999);
    EXPECT_EQ(p.pump(), 0u);
    p.advance(1);
    EXPECT_EQ(p.pump(), 2 * kSas);  // one DPD request and response per SA
    EXPECT_EQ(*p.a.engine->next_deadline(), p.clock.now() + 10000);
    EXPECT_EQ(p.a.engine->list_sas().size(), kSas);
}

TEST(IkeTimers, TrafficMovesTheDeadlineAndTheStaleEntryIsIgnored) {
    auto pa = base_peer(true), pb = base_peer(false);
    pa.dpd_interval_ms = 10000;
    Pair p(pa, pb);
    ASSERT_TRUE(p.connect());
    Millis t0 = p.clock.now();
    EXPECT_EQ(*p.a.engine->next_deadline(), t0 + 10000);
    // At t0+5s a liveness check answered: the DPD deadline moves to t0+15s.
    p.advance(5000);
    ASSERT_TRUE(p.a.engine->send_dpd(p.a.engine->list_sas()[0].id, p.clock.now()).ok());
    EXPECT_EQ(p.pump(), 2u);
    // The entry filed for t0+10s is stale now: it is neither reported nor fires.
    EXPECT_EQ(*p.a.engine->next_deadline(), t0 + 15000);
    p.advance(t0 + 10000 - p.clock.now());
    EXPECT_EQ(p.pump(), 0u);
    EXPECT_EQ(*p.a.engine->next_deadline(), t0 + 15000);
    p.advance(4999);
    EXPECT_EQ(p.pump(), 0u);
    p.advance(1);
    EXPECT_EQ(p.pump(), 2u);
}

TEST(IkeTimers, RetransmitHalfOpenAndRekeyDeadlines) {
    auto pa = base_peer(true), pb = base_peer(false);
    pa.ike_rekey_seconds = 100;
    Pair p(pa, pb);
    // Lose a's IKE_AUTH request: a retransmits at +4 s, b's half-open SA expires at +30 s.
    bool lose = true;
    p.drop = [&](const Datagram& d, bool from_a) {
        auto m = wire::Message::decode(d.data);
        return lose && from_a && m.ok() && m->header.exchange == wire::ExchangeType::IkeAuth;
    };
    Millis t0 = p.clock.now();
    ASSERT_TRUE(p.a.engine->initiate("to-b", t0).ok());
    p.pump();
    EXPECT_EQ(*p.a.engine->next_deadline(), t0 + 4000);
    EXPECT_EQ(*p.b.engine->next_deadline(), t0 + 30000);
    p.advance(4000);
    p.pump();
    EXPECT_EQ(p.a.counter("ike.tx.retransmit"), 1u);
    EXPECT_EQ(*p.a.engine->next_deadline(), t0 + 4000 + 7200);  // 4 s * 1.8
    lose = false;
    p.advance(7200);
    p.pump();
    ASSERT_TRUE(p.established());
    // Rekey at 100 s minus up to 10 % jitter; b only has its COOKIE secret rotation left.
    Millis up = p.clock.now();
    auto d = p.a.engine->next_deadline();
    ASSERT_TRUE(d.has_value());
    EXPECT_GE(*d, up + 90000);
    EXPECT_LE(*d, up + 100000);
    EXPECT_EQ(*p.b.engine->next_deadline(), t0 + 120000);
    p.advance(*d - p.clock.now());
    p.pump();
    auto sas = p.a.engine->list_sas();
    ASSERT_EQ(sas.size(), 1u);
    EXPECT_NE(sas[0].id, 1u);  // the rekeyed successor
    EXPECT_EQ(p.a.count(Event::Kind::IkeSaRekeyed), 1u);
}
