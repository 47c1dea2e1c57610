// RFC 7296 2.4 INITIAL_CONTACT and the unique-identity policy (PeerConfig::unique): a rebooted
// initiator that re-initiates leaves the responder with one IKE SA, not a pile.
#include <set>

#include "ikev2_harness.hpp"

namespace x2sec::test {
namespace {

// a loses all state (a reboot): a fresh engine and data plane with a new random seed, the
// same configuration.
void reboot_a(Pair& p, uint64_t seed) {
    auto rng = std::make_unique<DeterministicRng>(seed);
    for (uint32_t spi : p.a.backend.installed_spis()) (void)p.a.backend.remove(spi);
    auto engine = std::make_unique<Engine>(p.a.cfg, p.a.backend, *rng);
    p.a.engine = std::move(engine);
    p.a.rng = std::move(rng);
    p.a.events.clear();
}

// a connects, then reboots and re-initiates `times` more times.
void reboot_and_reinitiate(Pair& p, int times) {
    ASSERT_TRUE(p.connect());
    for (int i = 0; i < times; ++i) {
        reboot_a(p, 1000 + static_cast<uint64_t>(i));
        ASSERT_TRUE(p.a.engine->initiate(p.a.cfg.peers[0].name, p.clock.now()).ok());
        p.pump();
        p.advance(2000);
        p.pump();
        ASSERT_EQ(p.a.engine->list_sas().size(), 1u);
        ASSERT_EQ(p.a.engine->list_sas()[0].state, "ESTABLISHED");
    }
}

size_t established(const Node& n) {
    size_t k = 0;
    for (const auto& s : n.engine->list_sas()) k += s.state == "ESTABLISHED";
    return k;
}

TEST(IkeUnique, RebootedPeerWithInitialContactLeavesOneIkeSa) {
    Pair p(base_peer(true), base_peer(false));
    reboot_and_reinitiate(p, 3);
    // b: exactly one IKE SA (the newest) and its one Child SA, paired with a's.
    auto sas = p.b.engine->list_sas();
    std::cout << "[ figures ] responder after 1 + 3 re-initiations with INITIAL_CONTACT: " << sas.size()
              << " IKE SA(s), " << p.b.backend.installed_spis().size() << " Child SA(s)\n";
    ASSERT_EQ(sas.size(), 1u);
    EXPECT_EQ(sas[0].spi_i, p.a.engine->list_sas()[0].spi_i);
    ASSERT_EQ(p.b.backend.installed_spis().size(), 1u);
    EXPECT_EQ(p.b.backend.find(p.b.backend.installed_spis()[0])->spi_out, p.a.backend.installed_spis().at(0));
    EXPECT_EQ(p.b.counter("ike.rx.initial_contact"), 4u);  // the first SA carried one too
    EXPECT_EQ(p.b.counter("ike.auth.initial_contact_deleted"), 3u);
    EXPECT_EQ(p.b.count(Event::Kind::IkeSaDown), 3u);
    EXPECT_TRUE(p.b.engine->check_indexes().ok());
}

TEST(IkeUnique, InitialContactIsSentOnlyOnTheFirstIkeSa) {
    Pair p(base_peer(true), base_peer(false));
    ASSERT_TRUE(p.connect());
    EXPECT_EQ(p.a.counter("ike.tx.initial_contact"), 1u);
    // A second IKE SA to the same peer while a holds one: no INITIAL_CONTACT; b's policy `no`
    // keeps both.
    Pair q(base_peer(true), [] {
        auto pb = base_peer(false);
        pb.unique = UniquePolicy::No;
        return pb;
    }());
    ASSERT_TRUE(q.connect());
    ASSERT_TRUE(q.a.engine->initiate(q.a.cfg.peers[0].name, q.clock.now()).ok());
    q.pump();
    EXPECT_EQ(q.a.counter("ike.tx.initial_contact"), 1u);
    EXPECT_EQ(q.b.counter("ike.rx.initial_contact"), 1u);
    EXPECT_EQ(established(q.b), 2u);
    EXPECT_EQ(q.b.counter("ike.auth.initial_contact_deleted"), 0u);
}

TEST(IkeUnique, ReplaceWithoutInitialContactLeavesOneIkeSa) {
    // a never sends INITIAL_CONTACT (like a peer without it); b's default unique = replace.
    auto pa = base_peer(true);
    pa.unique = UniquePolicy::Never;
    Pair p(pa, base_peer(false));
    EXPECT_EQ(p.b.cfg.peers[0].unique, UniquePolicy::Replace);
    reboot_and_reinitiate(p, 3);
    EXPECT_EQ(p.b.counter("ike.rx.initial_contact"), 0u);
    EXPECT_EQ(p.b.counter("ike.auth.unique_replaced"), 3u);
    ASSERT_EQ(p.b.engine->list_sas().size(), 1u);
    EXPECT_EQ(p.b.engine->list_sas()[0].spi_i, p.a.engine->list_sas()[0].spi_i);
    EXPECT_EQ(p.b.backend.installed_spis().size(), 1u);
    EXPECT_TRUE(p.b.engine->check_indexes().ok());
}

TEST(IkeUnique, NoAndNeverKeepDuplicates) {
    for (auto [a_policy, b_policy] :
         {std::pair{UniquePolicy::Never, UniquePolicy::No}, std::pair{UniquePolicy::Replace, UniquePolicy::Never}}) {
        SCOPED_TRACE(std::string("a ") + to_string(a_policy) + ", b " + to_string(b_policy));
        auto pa = base_peer(true), pb = base_peer(false);
        pa.unique = a_policy;
        pb.unique = b_policy;
        Pair p(pa, pb);
        reboot_and_reinitiate(p, 3);
        EXPECT_EQ(established(p.b), 4u);
        EXPECT_EQ(p.b.counter("ike.auth.initial_contact_deleted"), 0u);
        EXPECT_EQ(p.b.counter("ike.auth.unique_replaced"), 0u);
        EXPECT_TRUE(p.b.engine->check_indexes().ok());
    }
}

TEST(IkeUnique, KeepRefusesASecondIkeSaUnlessInitialContact) {
    auto pa = base_peer(true), pb = base_peer(false);
    pa.unique = UniquePolicy::Never;  // no INITIAL_CONTACT
    pb.unique = UniquePolicy::Keep;
    Pair p(pa, pb);
    ASSERT_TRUE(p.connect());
    auto first = p.b.engine->list_sas().at(0).spi_i;
    reboot_a(p, 77);
    ASSERT_TRUE(p.a.engine->initiate("to-b", p.clock.now()).ok());
    p.pump();
    EXPECT_EQ(p.b.counter("ike.auth.unique_keep_refused"), 1u);
    const Event* f = p.a.find(Event::Kind::AuthFailed);
    ASSERT_NE(f, nullptr);
    EXPECT_EQ(f->code, auth_failure::PeerRejected);
    ASSERT_EQ(p.b.engine->list_sas().size(), 1u);
    EXPECT_EQ(p.b.engine->list_sas()[0].spi_i, first);
    // With INITIAL_CONTACT the new one replaces the old one even under keep.
    p.a.cfg.peers[0].unique = UniquePolicy::Keep;
    reboot_a(p, 78);
    ASSERT_TRUE(p.a.engine->initiate("to-b", p.clock.now()).ok());
    p.pump();
    ASSERT_EQ(p.b.engine->list_sas().size(), 1u);
    EXPECT_EQ(p.b.engine->list_sas()[0].spi_i, p.a.engine->list_sas().at(0).spi_i);
    EXPECT_EQ(p.b.counter("ike.auth.initial_contact_deleted"), 1u);
}

TEST(IkeUnique, SimultaneousInitiationsDoNotDeleteEachOther) {
    // Both ends initiate at once: each holds one SA it initiated and one it answered; replace
    // deletes only older SAs the peer initiated, so both pairs stay.
    Pair p(base_peer(true), base_peer(false));
    ASSERT_TRUE(p.a.engine->initiate("to-b", p.clock.now()).ok());
    ASSERT_TRUE(p.b.engine->initiate("to-a", p.clock.now()).ok());
    p.pump();
    EXPECT_EQ(established(p.a), 2u);
    EXPECT_EQ(established(p.b), 2u);
    EXPECT_EQ(p.a.counter("ike.auth.unique_replaced") + p.b.counter("ike.auth.unique_replaced"), 0u);
    EXPECT_TRUE(p.a.engine->check_indexes().ok());
    EXPECT_TRUE(p.b.engine->check_indexes().ok());
}

TEST(IkeUnique, ManyIdentitiesEachReplaceOnlyTheirOwn) {
    // Three initiator identities to one responder config accepting any identity: the first IKE SA
    // of each carries INITIAL_CONTACT (the per-config count of a), the second of each replaces
    // only its own identity's first (the identities index of b), never another identity's.
    EngineConfig ca, cb;
    for (int i = 0; i < 3; ++i) {
        auto pa = base_peer(true);
        pa.name = "to-b-" + std::to_string(i);
        pa.local_id = Identity::parse("fqdn:n" + std::to_string(i) + ".henb.example").value();
        ca.peers.push_back(pa);
    }
    auto pb = base_peer(false);
    pb.remote_id.reset();
    cb.peers = {pb};
    Pair p(ca, cb, 5);
    for (int round = 0; round < 2; ++round)
        for (int i = 0; i < 3; ++i) {
            ASSERT_TRUE(p.a.engine->initiate("to-b-" + std::to_string(i), p.clock.now()).ok());
            p.pump();
            p.advance(10);
            p.pump();
            EXPECT_TRUE(p.a.engine->check_indexes().ok()) << p.a.engine->check_indexes().error().detail();
            EXPECT_TRUE(p.b.engine->check_indexes().ok()) << p.b.engine->check_indexes().error().detail();
        }
    EXPECT_EQ(p.a.counter("ike.tx.initial_contact"), 3u);
    EXPECT_EQ(p.b.counter("ike.auth.unique_replaced"), 3u);
    EXPECT_EQ(p.b.counter("ike.auth.initial_contact_deleted"), 0u);
    std::set<std::string> ids;
    for (const auto& s : p.b.engine->list_sas()) {
        EXPECT_EQ(s.state, "ESTABLISHED");
        ids.insert(s.remote_id);
    }
    EXPECT_EQ(ids.size(), 3u);
    EXPECT_EQ(p.b.engine->list_sas().size(), 3u);
    p.advance(1000);
    p.pump();
    EXPECT_EQ(established(p.a), 3u);  // the replaced ones deleted by b's DELETE
    EXPECT_TRUE(p.a.engine->check_indexes().ok());
}

}  // namespace
}  // namespace x2sec::test
