// The responder's peer index (src/sa/peer_index.*): with thousands of PSK peers on the same
// addresses, IKE_AUTH lands each initiator on the config its IDi names, the catch-all still
// ranks below an exact match, and update_peer re-indexes a replaced or added config.
#include <gtest/gtest.h>

#include <x2sec/test/psk_peers.hpp>

#include "ikev2_harness.hpp"

using namespace x2sec;
using namespace x2sec::ike;
using namespace x2sec::test;

namespace {

// A responder config of the SeGW (fqdn:segw.example) on 192.0.2.2 for peers on 192.0.2.1.
PeerConfig responder(const std::string& name, const std::optional<std::string>& remote, const std::string& psk) {
    auto p = psk_peer(base_peer(false), "fqdn:segw.example", remote, psk);
    p.name = name;
    return p;
}

std::string henb(size_t i) {
    return "fqdn:henb" + std::to_string(i) + ".example";
}

// 2,000 PSK configs on the same addresses; a catch-all (no remote_id, another PSK) first.
EngineConfig many(size_t n) {
    EngineConfig c;
    c.peers.push_back(responder("any", std::nullopt, "catch-all secret"));
    for (size_t i = 0; i < n; ++i)
        c.peers.push_back(responder("henb" + std::to_string(i), henb(i), "psk " + std::to_string(i)));
    return c;
}

EngineConfig with(PeerConfig p) {
    return engine_with({std::move(p)});
}

}  // namespace

TEST(IkePeerIndex, ManyPskPeersEachLandsOnItsOwnConfig) {
    constexpr size_t n = 2000;
    for (size_t i : {size_t{0}, size_t{1}, size_t{977}, n - 1}) {
        Pair p(with(psk_peer(base_peer(true), henb(i), "fqdn:segw.example", "psk " + std::to_string(i))), many(n),
               10 + i);
        ASSERT_TRUE(p.connect()) << i << ": " << why_failed(p.b);
        auto sb = p.b.engine->list_sas();
        ASSERT_EQ(sb.size(), 1u);
        EXPECT_EQ(sb[0].peer, "henb" + std::to_string(i));
        EXPECT_EQ(sb[0].remote_id, henb(i));
    }
    // An identity no config names falls to the catch-all (its PSK).
    Pair p(with(psk_peer(base_peer(true), "fqdn:stranger.example", "fqdn:segw.example", "catch-all secret")), many(n),
           7);
    ASSERT_TRUE(p.connect()) << why_failed(p.b);
    EXPECT_EQ(p.b.engine->list_sas()[0].peer, "any");
}

TEST(IkePeerIndex, UnknownIdentityWithoutCatchAllIsRefusedWithBoundedCandidateList) {
    EngineConfig c = many(50);
    c.peers.erase(c.peers.begin());  // no catch-all
    Pair p(with(psk_peer(base_peer(true), "fqdn:stranger.example", "fqdn:segw.example", "x")), c, 3);
    EXPECT_FALSE(p.connect());
    std::string d = why_failed(p.b);
    EXPECT_NE(d.find("no peer config for identity fqdn:stranger.example"), std::string::npos) << d;
    EXPECT_NE(d.find("and 42 more"), std::string::npos) << d;
    EXPECT_EQ(p.b.engine->counters().get("ike.auth.no_peer_config"), 1u);
}

TEST(IkePeerIndex, UpdatePeerReindexesReplacedAndAddedConfigs) {
    EngineConfig c = many(100);
    c.peers.erase(c.peers.begin());
    Pair p(with(psk_peer(base_peer(true), "fqdn:new-id.example", "fqdn:segw.example", "new psk")), c, 5);
    // henb42 now requires another identity (replaced in place), and a new config is added.
    ASSERT_TRUE(p.b.engine->update_peer(responder("henb42", std::string("fqdn:new-id.example"), "new psk")).ok());
    ASSERT_TRUE(p.b.engine->update_peer(responder("added", henb(42), "psk 42")).ok());
    ASSERT_TRUE(p.connect()) << why_failed(p.b);
    EXPECT_EQ(p.b.engine->list_sas()[0].peer, "henb42");

    Pair q(with(psk_peer(base_peer(true), henb(42), "fqdn:segw.example", "psk 42")), c, 6);
    ASSERT_TRUE(q.b.engine->update_peer(responder("henb42", std::string("fqdn:new-id.example"), "new psk")).ok());
    ASSERT_TRUE(q.b.engine->update_peer(responder("added", henb(42), "psk 42")).ok());
    ASSERT_TRUE(q.connect()) << why_failed(q.b);
    EXPECT_EQ(q.b.engine->list_sas()[0].peer, "added");
}
