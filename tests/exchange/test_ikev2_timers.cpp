// Timers: the engine keeps a min-heap of per-SA deadlines (lazily invalidated) instead of
// scanning every SA in tick()/next_deadline().  These tests pin the observable behaviour under
// the fixed clock: next_deadline() is exact, due timers fire in tick(), an entry made stale by
// traffic is neither reported nor fired, and many SAs are served correctly.
#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>
#include <vector>

#include "ikev2_harness.hpp"

using namespace x2sec;
using namespace x2sec::ike;
using namespace x2sec::test;

TEST(IkeTimers, ManySasDpdFiresOnceEachAtTheDeadline) {
    auto pa = base_peer(true), pb = base_peer(false);
    pa.dpd_interval_ms = 10000;
    pa.dpd_jitter_percent = 0;     // exact deadlines (the jitter: DpdOfSasUpAtTheSameInstantIsSpread)
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
    pa.dpd_jitter_percent = 0;
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

// A SeGW whose H(e)NBs all came back at once must not probe them all at once: each liveness
// check is due dpd_interval - U(0, dpd_jitter_percent %) after the last datagram, drawn anew for
// every check.  N SAs up at the same instant check over the whole window, and again spread (not
// re-synchronised) in the next round.
TEST(IkeTimers, DpdOfSasUpAtTheSameInstantIsSpread) {
    auto pa = base_peer(true), pb = base_peer(false);
    pa.dpd_interval_ms = 10000;
    pa.dpd_jitter_percent = 20;  // window: 8 s .. 10 s after the last datagram
    pb.unique = UniquePolicy::No;
    pb.dpd_interval_ms = 0;  // only a checks
    Pair p(pa, pb);
    constexpr size_t kSas = 200;
    for (size_t i = 0; i < kSas; ++i) {
        ASSERT_TRUE(p.a.engine->initiate("to-b", p.clock.now()).ok());
        p.pump();
    }
    ASSERT_EQ(p.a.engine->list_sas().size(), kSas);
    const Millis t0 = p.clock.now();  // every SA up (and last heard from) at t0
    // Walk the clock in 100 ms steps: DPD requests per step (each is answered: 2 datagrams).
    constexpr Millis kStep = 100;
    p.advance(7999);
    EXPECT_EQ(p.pump(), 0u);  // nothing before dpd_interval - 20 %
    p.advance(1);
    size_t total = p.pump() / 2;  // due exactly at the window's start: counted in its first step
    std::vector<size_t> per_step;
    while (p.clock.now() < t0 + 10000) {
        p.advance(kStep);
        per_step.push_back(p.pump() / 2);
        total += per_step.back();
    }
    per_step[0] += total - std::accumulate(per_step.begin(), per_step.end(), size_t{0});
    EXPECT_EQ(total, kSas);  // each SA checked exactly once by dpd_interval
    ASSERT_EQ(per_step.size(), 20u);
    // Spread over the window: every 0.5 s quarter of it has checks, no step holds more than a
    // fifth of them (all at one instant would be 200 in one step; uniform is ~10 per step).
    for (size_t q = 0; q < 4; ++q) {
        size_t in_q = 0;
        for (size_t k = 5 * q; k < 5 * q + 5; ++k) in_q += per_step[k];
        EXPECT_GT(in_q, kSas / 8) << "quarter " << q;
    }
    EXPECT_LT(*std::max_element(per_step.begin(), per_step.end()), kSas / 5);
    // The second round: each check drew its own jitter again, so the checks that were close
    // together are not forced back into step; still every SA once, 8 s .. 10 s after its first.
    size_t second = 0, peak = 0;
    while (p.clock.now() < t0 + 20000) {
        p.advance(kStep);
        size_t n = p.pump() / 2;
        second += n;
        peak = std::max(peak, n);
    }
    EXPECT_EQ(second, kSas);
    EXPECT_LT(peak, kSas / 5);
    EXPECT_EQ(p.a.engine->list_sas().size(), kSas);
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
