// The engine's index from inbound Child SA SPI to the owning IKE SA: exact across Child rekey,
// IKE rekey (children moved to the new IKE SA), delete and IKE SA removal, and used for the
// data plane's lifetime events (an unknown SPI is ignored and counted) and peer deletes.
#include <gtest/gtest.h>

#include <algorithm>

#include "ikev2_harness.hpp"

using namespace x2sec;
using namespace x2sec::ike;
using namespace x2sec::test;

namespace {

// Both engines' indexes agree exactly with their SAs.
void expect_indexes(Pair& p, const char* where) {
    auto a = p.a.engine->check_indexes(), b = p.b.engine->check_indexes();
    EXPECT_TRUE(a.ok()) << where << ": a: " << (a.ok() ? "" : a.error().to_string());
    EXPECT_TRUE(b.ok()) << where << ": b: " << (b.ok() ? "" : b.error().to_string());
}

// The one IKE SA of a node (fails the test otherwise).
IkeSaInfo only_sa(Node& n) {
    auto l = n.engine->list_sas();
    EXPECT_EQ(l.size(), 1u);
    return l.empty() ? IkeSaInfo{} : l[0];
}

std::vector<uint32_t> child_spis(const IkeSaInfo& sa) {
    std::vector<uint32_t> out;
    for (const auto& c : sa.children) out.push_back(c.spi_in);
    std::sort(out.begin(), out.end());
    return out;
}

std::vector<uint32_t> sorted(std::vector<uint32_t> v) {
    std::sort(v.begin(), v.end());
    return v;
}

// The events of a kind raised since index `from` of the node's event list.
std::vector<Event> events_since(const Node& n, size_t from, Event::Kind k) {
    std::vector<Event> out;
    for (size_t i = from; i < n.events.size(); ++i)
        if (n.events[i].kind == k) out.push_back(n.events[i]);
    return out;
}

}  // namespace

TEST(ChildIndex, UnknownSpiExpiryIsIgnoredAndCounted) {
    Pair p(base_peer(true), base_peer(false));
    ASSERT_TRUE(p.connect());
    expect_indexes(p, "established");
    auto before = only_sa(p.b);
    size_t events = p.b.events.size();
    uint32_t bogus = 0xdeadbeef;
    ASSERT_FALSE(p.b.backend.find(bogus).has_value());
    p.b.backend.fire_soft_expiry(bogus);
    p.b.backend.fire_hard_expiry(bogus);
    p.advance(0);
    EXPECT_EQ(p.pump(), 0u);  // nothing sent
    EXPECT_EQ(p.b.counter("ike.child.expired_unknown_spi"), 2u);
    EXPECT_EQ(p.b.counter("ike.child.soft_expired"), 0u);
    EXPECT_EQ(p.b.counter("ike.child.hard_expired"), 0u);
    EXPECT_EQ(p.b.events.size(), events);
    auto after = only_sa(p.b);
    EXPECT_EQ(after.id, before.id);
    EXPECT_EQ(child_spis(after), child_spis(before));
    EXPECT_EQ(p.b.backend.installed_spis().size(), 1u);
    expect_indexes(p, "after the unknown SPI");
}

TEST(ChildIndex, FollowsChildRekey) {
    Pair p(base_peer(true), base_peer(false));
    ASSERT_TRUE(p.connect());
    uint32_t first = p.b.backend.installed_spis()[0];
    // The data plane asks b to rekey: the index finds b's IKE SA.
    p.b.backend.fire_soft_expiry(first);
    p.advance(0);
    p.pump();
    EXPECT_EQ(p.b.counter("ike.child.soft_expired"), 1u);
    EXPECT_EQ(p.b.count(Event::Kind::ChildSaRekeyed), 1u);
    expect_indexes(p, "after the first Child rekey");
    uint32_t second = p.b.backend.installed_spis()[0];
    ASSERT_NE(second, first);
    EXPECT_EQ(child_spis(only_sa(p.b)), std::vector<uint32_t>{second});
    // The old SPI is gone from the index: a late expiry for it changes nothing.
    p.b.backend.fire_soft_expiry(first);
    p.b.backend.fire_hard_expiry(first);
    p.advance(0);
    EXPECT_EQ(p.pump(), 0u);
    EXPECT_EQ(p.b.counter("ike.child.expired_unknown_spi"), 2u);
    EXPECT_EQ(p.b.count(Event::Kind::ChildSaRekeyed), 1u);
    // The new SPI is indexed: its expiry rekeys again.
    p.b.backend.fire_soft_expiry(second);
    p.advance(0);
    p.pump();
    EXPECT_EQ(p.b.count(Event::Kind::ChildSaRekeyed), 2u);
    EXPECT_NE(p.b.backend.installed_spis()[0], second);
    expect_indexes(p, "after the second Child rekey");
    // a (the peer of these rekeys) indexed its new children too: a soft expiry on a rekeys.
    uint32_t a_spi = p.a.backend.installed_spis()[0];
    p.a.backend.fire_soft_expiry(a_spi);
    p.advance(0);
    p.pump();
    EXPECT_EQ(p.a.counter("ike.child.soft_expired"), 1u);
    EXPECT_EQ(p.a.counter("ike.child.expired_unknown_spi"), 0u);
    EXPECT_NE(p.a.backend.installed_spis()[0], a_spi);
    expect_indexes(p, "after a's Child rekey");
}

TEST(ChildIndex, FollowsChildrenToTheRekeyedIkeSa) {
    auto [pa, pb] = two_child_peers();
    Pair p(pa, pb);
    ASSERT_TRUE(p.connect());
    ASSERT_TRUE(p.a.engine->create_child(only_sa(p.a).id, "x2u", p.clock.now()).ok());
    p.pump();
    ASSERT_EQ(p.a.backend.installed_spis().size(), 2u);
    expect_indexes(p, "two children");
    for (int round = 0; round < 2; ++round) {
        // Round 0: a (IKE initiator) rekeys the IKE SA; round 1: b does.
        Node& rekeyer = round == 0 ? p.a : p.b;
        auto old_a = only_sa(p.a), old_b = only_sa(p.b);
        ASSERT_TRUE(rekeyer.engine->rekey_ike(only_sa(rekeyer).id, p.clock.now()).ok());
        p.pump();
        p.advance(1);  // reap the old IKE SAs
        auto new_a = only_sa(p.a), new_b = only_sa(p.b);
        ASSERT_NE(new_a.id, old_a.id);
        ASSERT_NE(new_b.id, old_b.id);
        EXPECT_EQ(child_spis(new_a), child_spis(old_a));
        EXPECT_EQ(child_spis(new_b), child_spis(old_b));
        expect_indexes(p, round == 0 ? "after a's IKE rekey" : "after b's IKE rekey");
        // Lifetime events for the moved children reach the new IKE SA on both ends.
        for (Node* n : {&p.a, &p.b}) {
            uint64_t new_id = (n == &p.a ? new_a : new_b).id;
            size_t from = n->events.size();
            uint32_t spi = child_spis(only_sa(*n))[0];
            n->backend.fire_soft_expiry(spi);
            p.advance(0);
            p.pump();
            auto rekeyed = events_since(*n, from, Event::Kind::ChildSaRekeyed);
            ASSERT_EQ(rekeyed.size(), 1u) << "round " << round;
            EXPECT_EQ(rekeyed[0].ike_sa_id, new_id);
            EXPECT_EQ(only_sa(*n).children.size(), 2u);
            EXPECT_EQ(n->backend.installed_spis().size(), 2u);
            expect_indexes(p, "after a soft expiry on the new IKE SA");
        }
    }
    // A hard expiry on a moved-and-rekeyed child: b tells a over the current IKE SA.
    auto cur_b = only_sa(p.b);
    uint32_t victim = child_spis(cur_b)[1];
    size_t from = p.b.events.size();
    p.b.backend.fire_hard_expiry(victim);
    p.advance(0);
    p.pump();
    EXPECT_EQ(p.b.counter("ike.child.hard_expired"), 1u);
    auto down = events_since(p.b, from, Event::Kind::ChildSaDown);
    ASSERT_EQ(down.size(), 1u);
    EXPECT_EQ(down[0].ike_sa_id, cur_b.id);
    EXPECT_EQ(only_sa(p.b).children.size(), 1u);
    EXPECT_EQ(only_sa(p.a).children.size(), 1u);
    EXPECT_EQ(p.a.backend.installed_spis().size(), 1u);
    expect_indexes(p, "after the hard expiry");
}

TEST(ChildIndex, FollowsIkeRekeyCollision) {
    Pair p(base_peer(true), base_peer(false));
    ASSERT_TRUE(p.connect());
    auto ia = only_sa(p.a), ib = only_sa(p.b);
    ASSERT_TRUE(p.a.engine->rekey_ike(ia.id, p.clock.now()).ok());
    ASSERT_TRUE(p.b.engine->rekey_ike(ib.id, p.clock.now()).ok());
    p.pump();
    p.advance(1);
    expect_indexes(p, "after the IKE rekey collision");
    for (Node* n : {&p.a, &p.b}) {
        auto sa = only_sa(*n);
        ASSERT_EQ(sa.children.size(), 1u);
        size_t from = n->events.size();
        n->backend.fire_soft_expiry(sa.children[0].spi_in);
        p.advance(0);
        p.pump();
        auto rekeyed = events_since(*n, from, Event::Kind::ChildSaRekeyed);
        ASSERT_EQ(rekeyed.size(), 1u);
        EXPECT_EQ(rekeyed[0].ike_sa_id, sa.id);  // the surviving IKE SA
        expect_indexes(p, "after a soft expiry on the survivor");
    }
}

TEST(ChildIndex, DeleteAndIkeRemovalDropEntries) {
    auto [pa, pb] = two_child_peers();
    Pair p(pa, pb);
    ASSERT_TRUE(p.connect());
    ASSERT_TRUE(p.a.engine->create_child(only_sa(p.a).id, "x2u", p.clock.now()).ok());
    p.pump();
    auto spis_a = sorted(p.a.backend.installed_spis());
    auto spis_b = sorted(p.b.backend.installed_spis());
    ASSERT_EQ(spis_a.size(), 2u);
    // a deletes one child; b handles the peer's DELETE.
    ASSERT_TRUE(p.a.engine->delete_child(only_sa(p.a).id, spis_a[0], p.clock.now()).ok());
    p.pump();
    expect_indexes(p, "after the Child delete");
    auto left_b = p.b.backend.installed_spis();
    ASSERT_EQ(left_b.size(), 1u);
    uint32_t gone_b = left_b[0] == spis_b[0] ? spis_b[1] : spis_b[0];
    // Expiry events for the deleted Child SA (on both ends) are unknown now.
    p.a.backend.fire_hard_expiry(spis_a[0]);
    p.b.backend.fire_soft_expiry(gone_b);
    p.advance(0);
    EXPECT_EQ(p.pump(), 0u);
    EXPECT_EQ(p.a.counter("ike.child.expired_unknown_spi"), 1u);
    EXPECT_EQ(p.b.counter("ike.child.expired_unknown_spi"), 1u);
    // The whole IKE SA goes: every entry with it.
    ASSERT_TRUE(p.b.engine->delete_ike(only_sa(p.b).id, p.clock.now()).ok());
    p.pump();
    p.advance(1);
    EXPECT_TRUE(p.a.engine->list_sas().empty());
    EXPECT_TRUE(p.b.engine->list_sas().empty());
    expect_indexes(p, "after the IKE delete");
    p.a.backend.fire_soft_expiry(spis_a[1]);
    p.b.backend.fire_hard_expiry(left_b[0]);
    p.advance(0);
    EXPECT_EQ(p.pump(), 0u);
    EXPECT_EQ(p.a.counter("ike.child.expired_unknown_spi"), 2u);
    EXPECT_EQ(p.b.counter("ike.child.expired_unknown_spi"), 2u);
}

TEST(ChildIndex, DeadPeerRemovalDropsEntries) {
    auto pa = base_peer(true);
    pa.dpd_interval_ms = 10000;
    Pair p(pa, base_peer(false));
    ASSERT_TRUE(p.connect());
    uint32_t spi = p.a.backend.installed_spis()[0];
    p.drop = [](const Datagram&, bool) { return true; };
    for (int i = 0; i < 40 && p.a.count(Event::Kind::PeerDead) == 0; ++i) {
        p.advance(5000);
        p.pump();
    }
    ASSERT_EQ(p.a.count(Event::Kind::PeerDead), 1u);
    p.advance(1);
    EXPECT_TRUE(p.a.engine->list_sas().empty());
    expect_indexes(p, "after the peer was declared dead");
    p.a.backend.fire_hard_expiry(spi);
    p.advance(0);
    EXPECT_EQ(p.a.counter("ike.child.expired_unknown_spi"), 1u);
}

// The peer deletes a Child SA over the old IKE SA while an IKE rekey moves it: b (which moved
// its children when it processed the rekey response) follows the old IKE SA to its successor,
// and a (which moved them when it answered the rekey) finds its Child SA through the index when
// b confirms the delete.  Both ends end with the Child SA gone and exact indexes.
TEST(ChildIndex, PeerDeleteRacingAnIkeRekey) {
    Pair p(base_peer(true), base_peer(false));
    ASSERT_TRUE(p.connect());
    auto ia = only_sa(p.a), ib = only_sa(p.b);
    uint32_t spi_a = ia.children[0].spi_in;
    // a sends DELETE for its Child SA on the old IKE SA (held in flight); b starts an IKE rekey.
    ASSERT_TRUE(p.a.engine->delete_child(ia.id, spi_a, p.clock.now()).ok());
    ASSERT_TRUE(p.b.engine->rekey_ike(ib.id, p.clock.now()).ok());
    auto held_delete = p.a.engine->take_outgoing();
    auto rekey_req = p.b.engine->take_outgoing();
    ASSERT_EQ(held_delete.size(), 1u);
    ASSERT_EQ(rekey_req.size(), 1u);
    p.deliver(rekey_req[0], false);  // a answers the rekey: a's children move to a's new IKE SA
    auto rekey_resp = p.a.engine->take_outgoing();
    ASSERT_EQ(rekey_resp.size(), 1u);
    p.deliver(rekey_resp[0], true);  // b moves its children and queues the old SA's delete
    p.collect();
    ASSERT_EQ(p.b.count(Event::Kind::IkeSaRekeyed), 1u);
    expect_indexes(p, "children moved, delete in flight");
    p.deliver(held_delete[0], true);  // b: DELETE on the old IKE SA for a moved Child SA
    p.pump();
    p.advance(1);
    EXPECT_EQ(p.a.count(Event::Kind::ChildSaDown), 1u);
    EXPECT_EQ(p.b.count(Event::Kind::ChildSaDown), 1u);
    auto na = only_sa(p.a), nb = only_sa(p.b);
    EXPECT_NE(na.id, ia.id);
    EXPECT_NE(nb.id, ib.id);
    EXPECT_TRUE(na.children.empty());
    EXPECT_TRUE(nb.children.empty());
    EXPECT_TRUE(p.a.backend.installed_spis().empty());
    EXPECT_TRUE(p.b.backend.installed_spis().empty());
    expect_indexes(p, "after the racing delete");
}

// A CREATE_CHILD_SA the responder refuses, and one that never gets an answer: the SPI the
// initiator reserved for it is given back (check_indexes counts every SPI handed out).
TEST(ChildIndex, RefusedOrUnansweredCreateChildGivesItsSpiBack) {
    auto [pa, pb] = two_child_peers();
    pb.children.pop_back();  // b has no "x2u", and its "x2" does not cover a's x2u selectors:
    pa.children[1].local_ts = {TrafficSelector::from_prefix(IpAddress::v4(198, 51, 100, 1), 32)};
    Pair p(pa, pb);  // b refuses the second Child SA (TS_UNACCEPTABLE)
    ASSERT_TRUE(p.connect());
    const uint64_t id = only_sa(p.a).id;
    size_t ev = p.a.events.size();
    ASSERT_TRUE(p.a.engine->create_child(id, "x2u", p.clock.now()).ok());
    p.pump();
    EXPECT_FALSE(events_since(p.a, ev, Event::Kind::NegotiationFailed).empty());
    EXPECT_EQ(p.a.backend.installed_spis().size(), 1u);
    expect_indexes(p, "after the refused CREATE_CHILD_SA");
    // Unanswered: b's answers are lost until a gives up on the exchange (and the IKE SA).
    p.drop = [](const Datagram&, bool from_a) { return !from_a; };
    ASSERT_TRUE(p.a.engine->create_child(id, "x2", p.clock.now()).ok());
    p.pump();
    auto mid = p.a.engine->check_indexes();
    EXPECT_TRUE(mid.ok()) << "in flight: " << (mid.ok() ? "" : mid.error().to_string());
    for (int i = 0; i < 200 && !p.a.engine->list_sas().empty(); ++i) {
        p.advance(1000);
        p.pump();
    }
    EXPECT_TRUE(p.a.engine->list_sas().empty());
    auto end = p.a.engine->check_indexes();
    EXPECT_TRUE(end.ok()) << "after giving up: " << (end.ok() ? "" : end.error().to_string());
}
