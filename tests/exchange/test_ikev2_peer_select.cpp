// Responder peer config selection (like strongSwan): candidates by address at IKE_SA_INIT,
// then IKE_AUTH picks the candidate whose remote_id is the initiator's IDi (an unset remote_id
// matches any, below an exact match), preferring a local_id equal to the IDr it sent.
#include <gtest/gtest.h>

#include <x2sec/test/psk_peers.hpp>

#include "ikev2_harness.hpp"

using namespace x2sec;
using namespace x2sec::ike;
using namespace x2sec::test;

namespace {

// An initiator on 192.0.2.1 (base_peer(true)) with identity `local`, expecting `remote`.
PeerConfig initiator(const std::string& local, const std::string& remote, const std::string& psk) {
    return psk_peer(base_peer(true), local, remote, psk);
}

// A responder config on 192.0.2.2 for peers on 192.0.2.1 (the same address for every config).
PeerConfig responder(const std::string& name, const std::string& local, const std::optional<std::string>& remote,
                     const std::string& psk) {
    auto p = psk_peer(base_peer(false), local, remote, psk);
    p.name = name;
    return p;
}

EngineConfig with(std::vector<PeerConfig> peers) {
    return engine_with(std::move(peers));
}

}  // namespace

TEST(IkePeerSelect, PskEachInitiatorLandsOnItsOwnConfig) {
    std::vector<PeerConfig> resp = {responder("to-a1", "fqdn:b1.henb.example", "fqdn:a1.henb.example", "secret one"),
                                    responder("to-a2", "fqdn:b2.henb.example", "fqdn:a2.henb.example", "secret two")};
    {
        Pair p(with({initiator("fqdn:a1.henb.example", "fqdn:b1.henb.example", "secret one")}), with(resp), 1);
        ASSERT_TRUE(p.connect()) << why_failed(p.b);
        auto sb = p.b.engine->list_sas();
        EXPECT_EQ(sb[0].peer, "to-a1");
        EXPECT_EQ(sb[0].local_id, "fqdn:b1.henb.example");
        EXPECT_EQ(sb[0].remote_id, "fqdn:a1.henb.example");
    }
    {
        // The second config: IDi selects it although the first matches the addresses too; its
        // PSK and local_id (the IDr a2 expects) are used.
        Pair p(with({initiator("fqdn:a2.henb.example", "fqdn:b2.henb.example", "secret two")}), with(resp), 2);
        ASSERT_TRUE(p.connect()) << why_failed(p.b);
        auto sb = p.b.engine->list_sas();
        EXPECT_EQ(sb[0].peer, "to-a2");
        EXPECT_EQ(sb[0].local_id, "fqdn:b2.henb.example");
        EXPECT_EQ(sb[0].remote_id, "fqdn:a2.henb.example");
        auto sa = p.a.engine->list_sas();
        EXPECT_EQ(sa[0].remote_id, "fqdn:b2.henb.example");
        auto* up = p.b.find(Event::Kind::IkeSaUp);
        ASSERT_NE(up, nullptr);
        EXPECT_EQ(up->peer, "to-a2");
        EXPECT_EQ(p.b.backend.installed_spis().size(), 1u);
    }
}

TEST(IkePeerSelect, ExactRemoteIdBeatsWildcardAndIdrIsPreferred) {
    // A catch-all config first, then an exact one: the exact one wins for its IDi.
    std::vector<PeerConfig> resp = {responder("any", "fqdn:b1.henb.example", std::nullopt, "catch-all secret"),
                                    responder("to-a2", "fqdn:b2.henb.example", "fqdn:a2.henb.example", "secret two")};
    {
        Pair p(with({initiator("fqdn:a2.henb.example", "fqdn:b2.henb.example", "secret two")}), with(resp), 3);
        ASSERT_TRUE(p.connect()) << why_failed(p.b);
        EXPECT_EQ(p.b.engine->list_sas()[0].peer, "to-a2");
    }
    {
        Pair p(with({initiator("fqdn:a9.henb.example", "fqdn:b1.henb.example", "catch-all secret")}), with(resp), 4);
        ASSERT_TRUE(p.connect()) << why_failed(p.b);
        EXPECT_EQ(p.b.engine->list_sas()[0].peer, "any");
    }
    // Two catch-alls: the IDr the initiator sent picks the one with that local_id.
    std::vector<PeerConfig> two_any = {responder("any-1", "fqdn:b1.henb.example", std::nullopt, "s1"),
                                       responder("any-2", "fqdn:b2.henb.example", std::nullopt, "s2")};
    Pair p(with({initiator("fqdn:a3.henb.example", "fqdn:b2.henb.example", "s2")}), with(two_any), 5);
    ASSERT_TRUE(p.connect()) << why_failed(p.b);
    EXPECT_EQ(p.b.engine->list_sas()[0].peer, "any-2");
}

TEST(IkePeerSelect, CertificateEachInitiatorLandsOnItsOwnConfig) {
    TestCa root = make_root("Vendor A");
    auto trust = std::make_shared<x509::TrustStore>();
    trust->add_anchor(root.certificate(), "vendor-a");
    Leaf l1 = make_leaf(root, "a1.henb.example"), l2 = make_leaf(root, "a2.henb.example");
    Leaf lb = make_leaf(root, "b.henb.example");
    auto r1 = responder("to-a1", "fqdn:b.henb.example", "fqdn:a1.henb.example", "");
    auto r2 = responder("to-a2", "fqdn:b.henb.example", "fqdn:a2.henb.example", "");
    use_cert(r1, lb, {}, trust);
    use_cert(r2, lb, {}, trust);
    // Different traffic selectors per config, so the Child SA shows which config answered.
    r2.children[0].local_ts = {TrafficSelector::from_prefix(IpAddress::v4(203, 0, 113, 22), 32)};
    r2.children[0].remote_ts = {TrafficSelector::from_prefix(IpAddress::v4(203, 0, 113, 21), 32)};
    for (int which = 1; which <= 2; ++which) {
        auto i = initiator(which == 1 ? "fqdn:a1.henb.example" : "fqdn:a2.henb.example", "fqdn:b.henb.example", "");
        use_cert(i, which == 1 ? l1 : l2, {}, trust);
        if (which == 2) {
            i.children[0].local_ts = {TrafficSelector::from_prefix(IpAddress::v4(203, 0, 113, 21), 32)};
            i.children[0].remote_ts = {TrafficSelector::from_prefix(IpAddress::v4(203, 0, 113, 22), 32)};
        }
        Pair p(with({i}), with({r1, r2}), 10 + static_cast<uint64_t>(which));
        ASSERT_TRUE(p.connect()) << which << ": " << why_failed(p.b);
        auto sb = p.b.engine->list_sas();
        EXPECT_EQ(sb[0].peer, which == 1 ? "to-a1" : "to-a2");
        EXPECT_NE(sb[0].peer_cert_subject.find(which == 1 ? "a1.henb.example" : "a2.henb.example"), std::string::npos);
        ASSERT_EQ(sb[0].children.size(), 1u);
        ASSERT_EQ(sb[0].children[0].ts_local.size(), 1u);
        EXPECT_EQ(sb[0].children[0].ts_local[0],
                  TrafficSelector::from_prefix(IpAddress::v4(203, 0, 113, which == 1 ? 2 : 22), 32));
    }
}

TEST(IkePeerSelect, NoConfigForIdiIsAuthenticationFailed) {
    std::vector<PeerConfig> resp = {responder("to-a1", "fqdn:b.henb.example", "fqdn:a1.henb.example", "secret"),
                                    responder("to-a2", "fqdn:b.henb.example", "fqdn:a2.henb.example", "secret")};
    Pair p(with({initiator("fqdn:c.henb.example", "fqdn:b.henb.example", "secret")}), with(resp), 7);
    EXPECT_FALSE(p.connect());
    auto* fb = p.b.find(Event::Kind::AuthFailed);
    ASSERT_NE(fb, nullptr);
    EXPECT_EQ(fb->code, static_cast<int>(x509::VerifyFailure::IdMismatch));
    EXPECT_NE(fb->detail.find("no peer config for identity fqdn:c.henb.example"), std::string::npos) << fb->detail;
    EXPECT_NE(fb->detail.find("to-a1, to-a2"), std::string::npos) << fb->detail;
    EXPECT_EQ(p.b.counter("ike.auth.no_peer_config"), 1u);
    EXPECT_EQ(p.b.counter("ike.auth.failed"), 1u);
    expect_refused_by_responder(p);
}
