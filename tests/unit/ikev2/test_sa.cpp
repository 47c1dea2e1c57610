// The IKE SA state machine (EngineImpl::transition) and the Child SA table (ChildSaTable).
#include <gtest/gtest.h>

#include <x2sec/common/child_sa.hpp>
#include <x2sec/common/rng.hpp>

#include "engine_internal.hpp"

using namespace x2sec;
using namespace x2sec::ike;

namespace {

EngineConfig one_peer() {
    EngineConfig c;
    PeerConfig p;
    p.name = "peer";
    p.ike_rekey_seconds = 3600;
    c.peers.push_back(p);
    return c;
}

struct Harness {
    MemoryChildSaBackend backend;
    DeterministicRng rng{7};
    EngineImpl e{one_peer(), backend, rng};
};

}  // namespace

TEST(IkeSaState, IllegalTransitionIsRefusedNamedAndCounted) {
    Harness h;
    IkeSa& sa = h.e.new_sa(0, true, 100);
    ASSERT_TRUE(h.e.transition(sa, SaState::Connecting, 100).ok());
    auto bad = h.e.transition(sa, SaState::Rekeyed, 100);
    ASSERT_FALSE(bad.ok());
    EXPECT_NE(bad.error().detail().find("CONNECTING -> REKEYED"), std::string::npos) << bad.error().detail();
    EXPECT_EQ(sa.state, SaState::Connecting);  // unchanged
    EXPECT_EQ(h.e.m_counters.get("ike.sa.illegal_transition"), 1u);
    EXPECT_FALSE(sa.up());
}

TEST(IkeSaState, EnteringEstablishedOwnsTheEntryEffects) {
    Harness h;
    IkeSa& sa = h.e.new_sa(0, true, 100);
    ASSERT_TRUE(h.e.transition(sa, SaState::Connecting, 100).ok());
    ASSERT_TRUE(h.e.transition(sa, SaState::Established, 250).ok());
    EXPECT_TRUE(sa.up());
    EXPECT_EQ(sa.established_at, 250);
    EXPECT_GT(sa.rekey_at, 250);  // the rekey timer is armed
    ASSERT_EQ(h.e.m_events.size(), 1u);
    EXPECT_EQ(h.e.m_events[0].kind, Event::Kind::IkeSaUp);
    // Back from REKEYING (a failed rekey) nothing is re-announced.
    ASSERT_TRUE(h.e.transition(sa, SaState::Rekeying, 300).ok());
    ASSERT_TRUE(h.e.transition(sa, SaState::Established, 400).ok());
    EXPECT_EQ(sa.established_at, 250);
    EXPECT_EQ(h.e.m_events.size(), 1u);
    // A rekey successor comes up from CREATED without an IkeSaUp (the rekey raises IkeSaRekeyed).
    IkeSa& ns = h.e.new_sa(0, true, 500);
    ASSERT_TRUE(h.e.transition(ns, SaState::Established, 500).ok());
    EXPECT_TRUE(ns.up());
    EXPECT_EQ(h.e.m_events.size(), 1u);
    // One refused before it takes over never comes up.
    IkeSa& refused = h.e.new_sa(0, true, 600);
    ASSERT_TRUE(h.e.transition(refused, SaState::Deleting, 600).ok());
    EXPECT_FALSE(refused.up());
    EXPECT_EQ(h.e.m_counters.get("ike.sa.illegal_transition"), 0u);
}

TEST(ChildSaTable, StateWritesGoThroughTheTable) {
    Counters counters;
    ChildSaTable table(counters, x2sec::log::get("ike"));
    IkeSa sa;
    sa.id = 1;
    ChildSa c;
    c.name = "x2";
    c.spi_in = 0x1000;
    ChildSa& held = table.attach(sa, c);
    EXPECT_EQ(table.owner(0x1000), std::optional<uint64_t>(1));
    EXPECT_EQ(held.st(), ChildSa::St::Installed);
    EXPECT_TRUE(table.set_state(sa, held, ChildSa::St::Rekeying).ok());
    EXPECT_TRUE(table.set_state(sa, held, ChildSa::St::Rekeyed).ok());
    EXPECT_TRUE(table.set_state(sa, held, ChildSa::St::Deleting).ok());
    auto bad = table.set_state(sa, held, ChildSa::St::Installed);
    ASSERT_FALSE(bad.ok());
    EXPECT_NE(bad.error().detail().find("DELETING -> INSTALLED"), std::string::npos) << bad.error().detail();
    EXPECT_EQ(held.st(), ChildSa::St::Deleting);
    EXPECT_EQ(counters.get("ike.child.illegal_transition"), 1u);
    ChildSa gone = table.detach(sa, sa.children.begin());
    EXPECT_EQ(gone.spi_in, 0x1000u);
    EXPECT_FALSE(table.owner(0x1000).has_value());
    EXPECT_TRUE(sa.children.empty());
}
