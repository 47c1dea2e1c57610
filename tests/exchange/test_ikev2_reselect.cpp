// IKE_AUTH re-selects the responder's peer config by IDi/IDr (strongSwan-like).  The config it
// lands on must accept what IKE_SA_INIT already negotiated: a candidate whose IKE proposals do
// not contain the chosen algorithms is skipped (strongSwan: "ignore candidate without matching
// IKE proposal"); none left is AUTHENTICATION_FAILED.  The first Child SA is then negotiated
// against the re-selected config's children only (NO_PROPOSAL_CHOSEN / TS_UNACCEPTABLE with the
// IKE SA kept).
#include <gtest/gtest.h>

#include "ikev2_harness.hpp"

using namespace x2sec;
using namespace x2sec::ike;
using namespace x2sec::test;

namespace {

Identity id(const std::string& s) {
    return Identity::parse(s).value();
}

PeerConfig initiator(const std::string& local) {
    auto p = base_peer(true);
    p.local_id = id(local);
    p.remote_id.reset();
    return p;
}

PeerConfig responder(const std::string& name, std::optional<std::string> remote, std::vector<std::string> proposals) {
    auto p = base_peer(false);
    p.name = name;
    if (remote)
        p.remote_id = id(*remote);
    else
        p.remote_id.reset();
    p.ike_proposals.clear();
    for (const auto& s : proposals) p.ike_proposals.push_back(proposal(s));
    return p;
}

EngineConfig with(std::vector<PeerConfig> peers) {
    EngineConfig c;
    c.peers = std::move(peers);
    return c;
}

const std::string kGcm = "aes128gcm16-prfsha256-ecp256";
const std::string kCbc = "aes256-sha256-modp2048";

}  // namespace

// IKE_SA_INIT is answered by the first config (GCM chosen); IDi a2 selects to-a2, which only
// allows CBC: rejected, and with no other candidate the initiator gets AUTHENTICATION_FAILED.
TEST(IkeReselect, ReselectedConfigMustAcceptTheIkeProposal) {
    auto i = initiator("fqdn:a2.henb.example");
    i.ike_proposals = {proposal(kGcm), proposal(kCbc)};
    Pair p(
        with({i}),
        with({responder("to-a1", "fqdn:a1.henb.example", {kGcm}), responder("to-a2", "fqdn:a2.henb.example", {kCbc})}),
        21);
    EXPECT_FALSE(p.connect());
    auto* fb = p.b.find(Event::Kind::AuthFailed);
    ASSERT_NE(fb, nullptr);
    EXPECT_EQ(fb->code, auth_failure::ProposalMismatch);
    EXPECT_NE(fb->detail.find("to-a2"), std::string::npos) << fb->detail;
    EXPECT_NE(fb->detail.find("AES_GCM_16_128"), std::string::npos) << fb->detail;
    EXPECT_EQ(p.b.counter("ike.auth.proposal_mismatch"), 1u);
    EXPECT_EQ(p.b.counter("ike.auth.failed"), 1u);
    expect_refused_by_responder(p);
}

// The same, with a catch-all config that accepts GCM: it is selected instead of the exact one.
TEST(IkeReselect, CandidateWithoutTheProposalIsSkipped) {
    auto i = initiator("fqdn:a2.henb.example");
    i.ike_proposals = {proposal(kGcm), proposal(kCbc)};
    Pair p(with({i}),
           with({responder("to-a1", "fqdn:a1.henb.example", {kGcm}), responder("to-a2", "fqdn:a2.henb.example", {kCbc}),
                 responder("any", std::nullopt, {kCbc, kGcm})}),
           22);
    ASSERT_TRUE(p.connect());
    EXPECT_EQ(p.b.engine->list_sas().at(0).peer, "any");
    EXPECT_EQ(p.b.engine->list_sas().at(0).encr, "AES_GCM_16_128");
    // And when the exact config lists the chosen proposal anywhere in its list, it wins.
    Pair q(with({i}),
           with({responder("to-a1", "fqdn:a1.henb.example", {kGcm}),
                 responder("to-a2", "fqdn:a2.henb.example", {kCbc, kGcm}), responder("any", std::nullopt, {kGcm})}),
           23);
    ASSERT_TRUE(q.connect());
    EXPECT_EQ(q.b.engine->list_sas().at(0).peer, "to-a2");
}

// The first Child SA is negotiated against the re-selected config's children: to-a1 (which
// answered IKE_SA_INIT) would accept the initiator's ESP proposal, to-a2 does not.
TEST(IkeReselect, ChildProposalCheckedAgainstReselectedConfig) {
    auto i = initiator("fqdn:a2.henb.example");
    auto r2 = responder("to-a2", "fqdn:a2.henb.example", {kGcm});
    r2.children[0].proposals = {child_proposal("aes256gcm16")};
    Pair p(with({i}), with({responder("to-a1", "fqdn:a1.henb.example", {kGcm}), r2}), 24);
    ASSERT_TRUE(p.a.engine->initiate("to-b", p.clock.now()).ok());
    p.pump();
    ASSERT_TRUE(p.established());  // the IKE SA stands, as in strongSwan
    EXPECT_EQ(p.b.engine->list_sas().at(0).peer, "to-a2");
    EXPECT_TRUE(p.b.engine->list_sas().at(0).children.empty());
    EXPECT_TRUE(p.a.engine->list_sas().at(0).children.empty());
    EXPECT_TRUE(p.b.backend.installed_spis().empty());
    auto* nb = p.b.find(Event::Kind::NegotiationFailed);
    ASSERT_NE(nb, nullptr);
    EXPECT_EQ(nb->code, wire::notify::NoProposalChosen);
    EXPECT_EQ(nb->peer, "to-a2");
}

TEST(IkeReselect, TrafficSelectorsCheckedAgainstReselectedConfig) {
    auto i = initiator("fqdn:a2.henb.example");
    auto r2 = responder("to-a2", "fqdn:a2.henb.example", {kGcm});
    r2.children[0].remote_ts = {TrafficSelector::from_prefix(IpAddress::v4(198, 51, 100, 7), 32)};
    Pair p(with({i}), with({responder("to-a1", "fqdn:a1.henb.example", {kGcm}), r2}), 25);
    ASSERT_TRUE(p.a.engine->initiate("to-b", p.clock.now()).ok());
    p.pump();
    ASSERT_TRUE(p.established());
    EXPECT_EQ(p.b.engine->list_sas().at(0).peer, "to-a2");
    EXPECT_TRUE(p.b.backend.installed_spis().empty());
    auto* nb = p.b.find(Event::Kind::NegotiationFailed);
    ASSERT_NE(nb, nullptr);
    EXPECT_EQ(nb->code, wire::notify::TsUnacceptable);
    // Control: with to-a2's selectors matching, the Child SA comes up under to-a2.
    Pair q(
        with({i}),
        with({responder("to-a1", "fqdn:a1.henb.example", {kGcm}), responder("to-a2", "fqdn:a2.henb.example", {kGcm})}),
        26);
    ASSERT_TRUE(q.connect());
    EXPECT_EQ(q.b.engine->list_sas().at(0).peer, "to-a2");
    EXPECT_EQ(q.b.backend.installed_spis().size(), 1u);
}
