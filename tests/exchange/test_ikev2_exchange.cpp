// Exchange tests: two engines in one process (fixed RNG, manual clock, in-memory backends).
#include <gtest/gtest.h>

#include <x2sec/ikev2/keymat.hpp>

#include "ikev2_harness.hpp"

using namespace x2sec;
using namespace x2sec::ike;
using namespace x2sec::test;

namespace {

// The Child SA pair agrees: a's outbound SPI/keys are b's inbound and vice versa.
void expect_child_pair(Pair& p) {
    auto sa = p.a.backend.installed_spis(), sb = p.b.backend.installed_spis();
    ASSERT_EQ(sa.size(), 1u);
    ASSERT_EQ(sb.size(), 1u);
    auto ca = *p.a.backend.find(sa[0]), cb = *p.b.backend.find(sb[0]);
    EXPECT_EQ(ca.spi_out, cb.spi_in);
    EXPECT_EQ(cb.spi_out, ca.spi_in);
    EXPECT_TRUE(ct_equal(ca.keys_out.enc_key, cb.keys_in.enc_key));
    EXPECT_TRUE(ct_equal(cb.keys_out.enc_key, ca.keys_in.enc_key));
    EXPECT_FALSE(ct_equal(ca.keys_out.enc_key, ca.keys_in.enc_key));
    EXPECT_EQ(ca.cipher, cb.cipher);
    EXPECT_EQ(ca.ts_local, cb.ts_remote);
    EXPECT_EQ(ca.ts_remote, cb.ts_local);
}

// An INFORMATIONAL request with an SK payload of 40 zero octets (no valid ICV for any SA).
Bytes forged_sk_request(uint64_t spi_i, uint64_t spi_r, uint32_t message_id) {
    wire::Message m;
    m.header.spi_i = spi_i;
    m.header.spi_r = spi_r;
    m.header.exchange = wire::ExchangeType::Informational;
    m.header.flags = wire::kFlagInitiator;
    m.header.message_id = message_id;
    m.payloads.push_back({wire::PayloadType::SK, false, wire::SkPayload{0, Bytes(40, 0)}});
    return m.encode();
}

}  // namespace

TEST(IkeExchange, PskEstablishesIkeAndChildSa) {
    Pair p(base_peer(true), base_peer(false));
    ASSERT_TRUE(p.connect());
    EXPECT_EQ(p.a.count(Event::Kind::IkeSaUp), 1u);
    EXPECT_EQ(p.b.count(Event::Kind::IkeSaUp), 1u);
    EXPECT_EQ(p.a.count(Event::Kind::ChildSaUp), 1u);
    EXPECT_EQ(p.b.count(Event::Kind::ChildSaUp), 1u);
    expect_child_pair(p);
    auto ia = p.a.engine->list_sas()[0], ib = p.b.engine->list_sas()[0];
    EXPECT_TRUE(ia.initiator);
    EXPECT_FALSE(ib.initiator);
    EXPECT_EQ(ia.spi_i, ib.spi_i);
    EXPECT_EQ(ia.spi_r, ib.spi_r);
    EXPECT_EQ(ia.encr, "AES_GCM_16_128");
    EXPECT_EQ(ia.prf, "PRF_HMAC_SHA2_256");
    EXPECT_EQ(ia.dh, "ECP_256");
    EXPECT_EQ(ia.remote_id, "fqdn:b.henb.example");
    EXPECT_EQ(ib.remote_id, "fqdn:a.henb.example");
    EXPECT_EQ(ia.remote_auth, "pre-shared key");
    ASSERT_EQ(ia.children.size(), 1u);
    EXPECT_EQ(ia.children[0].cipher, "AES_GCM_16_128");
    EXPECT_FALSE(ia.encap);
    // Exactly four datagrams: IKE_SA_INIT and IKE_AUTH.
    EXPECT_EQ(p.log.size(), 4u);
}

TEST(IkeExchange, CbcProposalAndNarrowing) {
    auto pa = base_peer(true), pb = base_peer(false);
    pa.ike_proposals = {proposal("aes256-sha256-modp2048")};
    pb.ike_proposals = {proposal("aes128gcm16-prfsha256-ecp256"), proposal("aes256-sha256-modp2048")};
    pa.children[0].proposals = {child_proposal("aes128-sha256")};
    pb.children[0].proposals = {child_proposal("aes128gcm16"), child_proposal("aes128-sha256")};
    // a asks for the whole /24 on its side; b only allows .1 -> narrowed.
    pa.children[0].local_ts = {TrafficSelector::from_prefix(IpAddress::v4(203, 0, 113, 0), 24)};
    Pair p(pa, pb);
    ASSERT_TRUE(p.connect());
    auto ia = p.a.engine->list_sas()[0];
    EXPECT_EQ(ia.encr, "AES_CBC_256");
    EXPECT_EQ(ia.integ, "HMAC_SHA2_256_128");
    EXPECT_EQ(ia.dh, "MODP_2048");
    ASSERT_EQ(ia.children.size(), 1u);
    EXPECT_EQ(ia.children[0].ts_local,
              std::vector<TrafficSelector>{TrafficSelector::from_prefix(IpAddress::v4(203, 0, 113, 1), 32)});
    auto c = *p.a.backend.find(p.a.backend.installed_spis()[0]);
    EXPECT_EQ(c.cipher, EspCipher::AesCbc128_HmacSha256_128);
    EXPECT_EQ(c.keys_in.enc_key.size(), 16u);
    EXPECT_EQ(c.keys_in.integ_key.size(), 32u);
    expect_child_pair(p);
}

TEST(IkeExchange, PskMismatchFailsOnBothSides) {
    auto pb = base_peer(false);
    pb.psk = SecureBytes(as_bytes("a different secret"));
    Pair p(base_peer(true), pb);
    EXPECT_FALSE(p.connect());
    auto* fb = p.b.find(Event::Kind::AuthFailed);
    ASSERT_NE(fb, nullptr);
    EXPECT_EQ(fb->code, auth_failure::PskMismatch);
    EXPECT_NE(fb->detail.find("pre-shared key mismatch"), std::string::npos);
    expect_refused_by_responder(p);
}

TEST(IkeExchange, ConfiguredRemoteIdMustMatch) {
    auto pb = base_peer(false);
    pb.remote_id = Identity::parse("fqdn:someone-else.example").value();
    Pair p(base_peer(true), pb);
    EXPECT_FALSE(p.connect());
    auto* fb = p.b.find(Event::Kind::AuthFailed);
    ASSERT_NE(fb, nullptr);
    EXPECT_EQ(fb->code, static_cast<int>(x509::VerifyFailure::IdMismatch));
}

TEST(IkeExchange, InvalidKePayloadRetry) {
    auto pa = base_peer(true), pb = base_peer(false);
    pa.ike_proposals = {proposal("aes128gcm16-prfsha256-ecp256-ecp384")};
    pb.ike_proposals = {proposal("aes128gcm16-prfsha256-ecp384")};
    Pair p(pa, pb);
    ASSERT_TRUE(p.connect());
    EXPECT_EQ(p.a.engine->list_sas()[0].dh, "ECP_384");
    EXPECT_EQ(p.a.counter("ike.rx.invalid_ke_payload"), 1u);
    EXPECT_EQ(p.b.counter("ike.tx.invalid_ke_payload"), 1u);
    EXPECT_EQ(p.log.size(), 6u);
    expect_child_pair(p);
}

TEST(IkeExchange, NoProposalChosen) {
    auto pb = base_peer(false);
    pb.ike_proposals = {proposal("aes256-sha384-modp2048")};
    Pair p(base_peer(true), pb);
    EXPECT_FALSE(p.connect());
    auto* f = p.a.find(Event::Kind::NegotiationFailed);
    ASSERT_NE(f, nullptr);
    EXPECT_EQ(f->code, wire::notify::NoProposalChosen);
}

TEST(IkeExchange, CookieAboveHalfOpenThreshold) {
    EngineConfig ca, cb;
    ca.peers = {base_peer(true)};
    cb.peers = {base_peer(false)};
    cb.cookie_threshold = 0;  // always demand a cookie
    Pair p(ca, cb, 7);
    ASSERT_TRUE(p.connect());
    EXPECT_EQ(p.b.counter("ike.tx.cookie"), 1u);
    EXPECT_EQ(p.log.size(), 6u);
    // The second IKE_SA_INIT starts with the COOKIE notify.
    auto m = wire::Message::decode(p.log[2].second.data);
    ASSERT_TRUE(m.ok());
    auto* n = m->payloads[0].as<wire::NotifyPayload>();
    ASSERT_NE(n, nullptr);
    EXPECT_EQ(n->type, wire::notify::Cookie);
    expect_child_pair(p);
}

TEST(IkeExchange, BadCookieIsRefused) {
    EngineConfig ca, cb;
    ca.peers = {base_peer(true)};
    cb.peers = {base_peer(false)};
    cb.cookie_threshold = 0;
    Pair p(ca, cb, 8);
    // Corrupt the cookie the initiator echoes.
    p.drop = [](const Datagram& d, bool from_a) {
        auto m = wire::Message::decode(d.data);
        if (from_a && m.ok() && m->header.exchange == wire::ExchangeType::IkeSaInit)
            if (auto* n = m->payloads[0].as<wire::NotifyPayload>(); n && n->type == wire::notify::Cookie) {
                const_cast<Bytes&>(d.data)[40] ^= 1;
            }
        return false;
    };
    EXPECT_FALSE(p.connect());
    EXPECT_GE(p.b.counter("ike.rx.bad_cookie"), 1u);
}

TEST(IkeExchange, LateIkeSaInitCopyAfterAuthIsDroppedQuietly) {
    // The responder releases the IKE_SA_INIT messages (and DH key, nonces) once IKE_AUTH is
    // answered; a late copy of the IKE_SA_INIT request is then counted and not answered.
    Pair p(base_peer(true), base_peer(false));
    ASSERT_TRUE(p.connect());
    Datagram init;
    for (const auto& [from_a, d] : p.log)
        if (from_a && wire::Header::decode(d.data).ok() &&
            wire::Header::decode(d.data)->exchange == wire::ExchangeType::IkeSaInit) {
            init = d;
            break;
        }
    ASSERT_FALSE(init.data.empty());
    p.deliver(init, true);
    EXPECT_EQ(p.b.counter("ike.rx.retransmit_after_auth"), 1u);
    EXPECT_EQ(p.b.counter("ike.rx.retransmit"), 0u);
    EXPECT_TRUE(p.b.engine->take_outgoing().empty());
    EXPECT_TRUE(p.established());
    // The SA still works: a Child SA rekey goes through.
    auto sas = p.b.engine->list_sas();
    ASSERT_EQ(sas.size(), 1u);
    ASSERT_EQ(sas[0].children.size(), 1u);
    ASSERT_TRUE(p.b.engine->rekey_child(sas[0].id, sas[0].children[0].spi_in, p.clock.now()).ok());
    p.pump();
    EXPECT_EQ(p.b.backend.install_count(), 2u);
}

TEST(IkeExchange, RetransmissionAndCachedResponse) {
    Pair p(base_peer(true), base_peer(false));
    int dropped = 0;
    p.drop = [&](const Datagram& d, bool from_a) {
        auto h = wire::Header::decode(d.data);
        if (!from_a && h.ok() && h->exchange == wire::ExchangeType::IkeAuth && dropped == 0) {
            ++dropped;
            return true;  // lose the first IKE_AUTH response
        }
        return false;
    };
    ASSERT_TRUE(p.a.engine->initiate("to-b", p.clock.now()).ok());
    p.pump();
    EXPECT_FALSE(p.established());  // b is up, a waits
    auto deadline = p.a.engine->next_deadline();
    ASSERT_TRUE(deadline.has_value());
    EXPECT_EQ(*deadline, p.clock.now() + 4000);
    p.advance(4000);
    p.pump();
    EXPECT_TRUE(p.established());
    EXPECT_EQ(p.a.counter("ike.tx.retransmit"), 1u);
    EXPECT_EQ(p.b.counter("ike.rx.retransmit"), 1u);
    EXPECT_EQ(p.b.backend.install_count(), 1u);  // the retransmitted request was not processed twice
    expect_child_pair(p);
}

TEST(IkeExchange, RetransmissionGivesUpWithBackoff) {
    Pair p(base_peer(true), base_peer(false));
    p.drop = [](const Datagram&, bool) { return true; };
    ASSERT_TRUE(p.a.engine->initiate("to-b", p.clock.now()).ok());
    p.pump();
    std::vector<Millis> gaps;
    Millis last = p.clock.now();
    for (int i = 0; i < 10 && p.a.engine->next_deadline(); ++i) {
        Millis next = *p.a.engine->next_deadline();
        gaps.push_back(next - last);
        last = next;
        p.clock.set(next);
        p.a.engine->tick(next);
        p.pump();
    }
    ASSERT_GE(gaps.size(), 3u);
    EXPECT_EQ(gaps[0], 4000);
    EXPECT_EQ(gaps[1], 7200);  // 4000 * 1.8
    EXPECT_EQ(p.a.counter("ike.tx.retransmit"), 5u);
    auto* f = p.a.find(Event::Kind::NegotiationFailed);
    ASSERT_NE(f, nullptr);
    EXPECT_NE(f->detail.find("retransmissions"), std::string::npos);
    EXPECT_TRUE(p.a.engine->list_sas().empty());
}

TEST(IkeExchange, ChildRekey) {
    Pair p(base_peer(true), base_peer(false));
    ASSERT_TRUE(p.connect());
    uint32_t old_a = p.a.backend.installed_spis()[0];
    uint32_t old_b = p.b.backend.installed_spis()[0];
    uint32_t reqid = p.a.backend.find(old_a)->reqid;
    auto id = p.a.engine->list_sas()[0].id;
    ASSERT_TRUE(p.a.engine->rekey_child(id, old_a, p.clock.now()).ok());
    p.pump();
    EXPECT_EQ(p.a.count(Event::Kind::ChildSaRekeyed), 1u);
    EXPECT_EQ(p.b.count(Event::Kind::ChildSaRekeyed), 1u);
    EXPECT_EQ(p.a.count(Event::Kind::ChildSaDown), 0u);
    expect_child_pair(p);
    EXPECT_NE(p.a.backend.installed_spis()[0], old_a);
    EXPECT_NE(p.b.backend.installed_spis()[0], old_b);
    EXPECT_EQ(p.a.backend.find(p.a.backend.installed_spis()[0])->reqid, reqid);
    EXPECT_EQ(p.a.backend.install_count(), 2u);
    EXPECT_EQ(p.a.backend.remove_count(), 1u);
}

TEST(IkeExchange, ChildRekeyWithPfs) {
    auto pa = base_peer(true), pb = base_peer(false);
    pa.children[0].proposals = {child_proposal("aes256gcm16-ecp256")};
    pb.children[0].proposals = {child_proposal("aes256gcm16-ecp256")};
    Pair p(pa, pb);
    ASSERT_TRUE(p.connect());
    uint32_t old_b = p.b.backend.installed_spis()[0];
    auto id = p.b.engine->list_sas()[0].id;
    // The responder of the IKE SA rekeys this time.
    ASSERT_TRUE(p.b.engine->rekey_child(id, old_b, p.clock.now()).ok());
    p.pump();
    expect_child_pair(p);
    auto info = p.b.engine->list_sas()[0];
    ASSERT_EQ(info.children.size(), 1u);
    EXPECT_EQ(info.children[0].pfs, "ECP_256");
    EXPECT_EQ(info.children[0].cipher, "AES_GCM_16_256");
}

TEST(IkeExchange, CreateSecondChild) {
    auto [pa, pb] = two_child_peers();
    Pair p(pa, pb);
    ASSERT_TRUE(p.connect());
    auto id = p.a.engine->list_sas()[0].id;
    ASSERT_TRUE(p.a.engine->create_child(id, "x2u", p.clock.now()).ok());
    p.pump();
    EXPECT_EQ(p.a.backend.installed_spis().size(), 2u);
    EXPECT_EQ(p.b.backend.installed_spis().size(), 2u);
    EXPECT_EQ(p.a.engine->list_sas()[0].children.size(), 2u);
}

TEST(IkeExchange, IkeRekeyMovesChildren) {
    Pair p(base_peer(true), base_peer(false));
    ASSERT_TRUE(p.connect());
    auto before = p.a.engine->list_sas()[0];
    ASSERT_TRUE(p.a.engine->rekey_ike(before.id, p.clock.now()).ok());
    p.pump();
    auto la = p.a.engine->list_sas(), lb = p.b.engine->list_sas();
    ASSERT_EQ(la.size(), 1u);
    ASSERT_EQ(lb.size(), 1u);
    EXPECT_NE(la[0].id, before.id);
    EXPECT_NE(la[0].spi_i, before.spi_i);
    EXPECT_EQ(la[0].spi_i, lb[0].spi_i);
    EXPECT_EQ(la[0].spi_r, lb[0].spi_r);
    EXPECT_EQ(la[0].children.size(), 1u);
    EXPECT_EQ(lb[0].children.size(), 1u);
    EXPECT_EQ(p.a.count(Event::Kind::IkeSaRekeyed), 1u);
    EXPECT_EQ(p.b.count(Event::Kind::IkeSaRekeyed), 1u);
    EXPECT_EQ(p.a.count(Event::Kind::IkeSaDown), 0u);
    EXPECT_EQ(p.a.backend.remove_count(), 0u);
    // The new IKE SA works: rekey the child over it, then DPD.
    ASSERT_TRUE(p.a.engine->rekey_child(la[0].id, p.a.backend.installed_spis()[0], p.clock.now()).ok());
    p.pump();
    expect_child_pair(p);
    ASSERT_TRUE(p.b.engine->send_dpd(lb[0].id, p.clock.now()).ok());
    p.pump();
    EXPECT_TRUE(p.established());
    // Now the original responder rekeys the (already rekeyed) IKE SA.
    ASSERT_TRUE(p.b.engine->rekey_ike(lb[0].id, p.clock.now()).ok());
    p.pump();
    auto la2 = p.a.engine->list_sas(), lb2 = p.b.engine->list_sas();
    ASSERT_EQ(la2.size(), 1u);
    ASSERT_EQ(lb2.size(), 1u);
    EXPECT_TRUE(lb2[0].initiator);
    EXPECT_FALSE(la2[0].initiator);
    EXPECT_EQ(la2[0].spi_i, lb2[0].spi_i);
    EXPECT_EQ(lb2[0].children.size(), 1u);
    ASSERT_TRUE(p.a.engine->delete_child(la2[0].id, p.a.backend.installed_spis()[0], p.clock.now()).ok());
    p.pump();
    EXPECT_TRUE(p.b.backend.installed_spis().empty());
}

TEST(IkeExchange, ChildRekeyCollision) {
    Pair p(base_peer(true), base_peer(false));
    ASSERT_TRUE(p.connect());
    uint32_t old_a = p.a.backend.installed_spis()[0];
    uint32_t old_b = p.b.backend.installed_spis()[0];
    ASSERT_TRUE(p.a.engine->rekey_child(p.a.engine->list_sas()[0].id, old_a, p.clock.now()).ok());
    ASSERT_TRUE(p.b.engine->rekey_child(p.b.engine->list_sas()[0].id, old_b, p.clock.now()).ok());
    p.pump();
    // Exactly one new Child SA pair survives on both sides; old and redundant ones are gone.
    expect_child_pair(p);
    EXPECT_NE(p.a.backend.installed_spis()[0], old_a);
    EXPECT_EQ(p.a.backend.install_count(), 3u);  // first + ours + the peer's
    EXPECT_EQ(p.b.backend.install_count(), 3u);
    EXPECT_EQ(p.a.engine->list_sas()[0].children.size(), 1u);
    EXPECT_EQ(p.b.engine->list_sas()[0].children.size(), 1u);
}

TEST(IkeExchange, IkeRekeyCollision) {
    Pair p(base_peer(true), base_peer(false));
    ASSERT_TRUE(p.connect());
    auto ia = p.a.engine->list_sas()[0], ib = p.b.engine->list_sas()[0];
    ASSERT_TRUE(p.a.engine->rekey_ike(ia.id, p.clock.now()).ok());
    ASSERT_TRUE(p.b.engine->rekey_ike(ib.id, p.clock.now()).ok());
    p.pump();
    p.advance(1);
    auto la = p.a.engine->list_sas(), lb = p.b.engine->list_sas();
    ASSERT_EQ(la.size(), 1u);
    ASSERT_EQ(lb.size(), 1u);
    EXPECT_EQ(la[0].spi_i, lb[0].spi_i);
    EXPECT_EQ(la[0].spi_r, lb[0].spi_r);
    EXPECT_NE(la[0].spi_i, ia.spi_i);
    EXPECT_EQ(la[0].children.size(), 1u);
    EXPECT_EQ(lb[0].children.size(), 1u);
    EXPECT_EQ(p.a.backend.installed_spis().size(), 1u);
    // The survivor carries further exchanges.
    ASSERT_TRUE(p.a.engine->rekey_child(la[0].id, p.a.backend.installed_spis()[0], p.clock.now()).ok());
    p.pump();
    expect_child_pair(p);
}

TEST(IkeExchange, DeleteChildAndIke) {
    Pair p(base_peer(true), base_peer(false));
    ASSERT_TRUE(p.connect());
    auto id = p.b.engine->list_sas()[0].id;
    ASSERT_TRUE(p.b.engine->delete_child(id, p.b.backend.installed_spis()[0], p.clock.now()).ok());
    p.pump();
    EXPECT_TRUE(p.a.backend.installed_spis().empty());
    EXPECT_TRUE(p.b.backend.installed_spis().empty());
    EXPECT_EQ(p.a.count(Event::Kind::ChildSaDown), 1u);
    EXPECT_EQ(p.b.count(Event::Kind::ChildSaDown), 1u);
    ASSERT_TRUE(p.a.engine->create_child(p.a.engine->list_sas()[0].id, "x2", p.clock.now()).ok());
    p.pump();
    expect_child_pair(p);
    ASSERT_TRUE(p.a.engine->delete_ike(p.a.engine->list_sas()[0].id, p.clock.now()).ok());
    p.pump();
    p.advance(1);
    EXPECT_TRUE(p.a.engine->list_sas().empty());
    EXPECT_TRUE(p.b.engine->list_sas().empty());
    EXPECT_TRUE(p.a.backend.installed_spis().empty());
    EXPECT_TRUE(p.b.backend.installed_spis().empty());
    EXPECT_EQ(p.a.count(Event::Kind::IkeSaDown), 1u);
    EXPECT_EQ(p.b.count(Event::Kind::IkeSaDown), 1u);
}

TEST(IkeExchange, DpdKeepsAliveAndDetectsDeadPeer) {
    auto pa = base_peer(true);
    pa.dpd_interval_ms = 10000;
    Pair p(pa, base_peer(false));
    ASSERT_TRUE(p.connect());
    p.advance(10000);
    size_t n = p.pump();
    EXPECT_EQ(n, 2u);  // an empty INFORMATIONAL and its answer
    EXPECT_TRUE(p.established());
    // The responder counted the liveness check it answered; the initiator answered none.
    EXPECT_EQ(p.b.engine->counters().get("ike.rx.informational_request"), 1u);
    EXPECT_EQ(p.b.engine->counters().get("ike.rx.liveness_check"), 1u);
    EXPECT_EQ(p.a.engine->counters().get("ike.rx.liveness_check"), 0u);
    // Now the peer vanishes.
    p.drop = [](const Datagram&, bool) { return true; };
    for (int i = 0; i < 40 && p.a.count(Event::Kind::PeerDead) == 0; ++i) {
        p.advance(5000);
        p.pump();
    }
    auto* dead = p.a.find(Event::Kind::PeerDead);
    ASSERT_NE(dead, nullptr);
    EXPECT_TRUE(p.a.engine->list_sas().empty());
    EXPECT_TRUE(p.a.backend.installed_spis().empty());
}

TEST(IkeExchange, ForcedEncapsulationFloatsTo4500) {
    auto pa = base_peer(true);
    pa.force_encap = true;
    Pair p(pa, base_peer(false));
    ASSERT_TRUE(p.connect());
    // IKE_SA_INIT on 500, IKE_AUTH on 4500 with the non-ESP marker.
    ASSERT_EQ(p.log.size(), 4u);
    EXPECT_EQ(p.log[0].second.remote.port, 500);
    EXPECT_FALSE(p.log[0].second.non_esp_marker);
    EXPECT_EQ(p.log[2].second.remote.port, 4500);
    EXPECT_EQ(p.log[2].second.local.port, 4500);
    EXPECT_TRUE(p.log[2].second.non_esp_marker);
    EXPECT_EQ(p.log[3].second.local.port, 4500);
    EXPECT_TRUE(p.log[3].second.non_esp_marker);
    auto ib = p.b.engine->list_sas()[0];
    EXPECT_TRUE(ib.nat_remote);
    EXPECT_TRUE(ib.encap);
    auto cb = *p.b.backend.find(p.b.backend.installed_spis()[0]);
    EXPECT_TRUE(cb.udp_encap);
    EXPECT_EQ(cb.remote_port, 4500);
    auto ca = *p.a.backend.find(p.a.backend.installed_spis()[0]);
    EXPECT_TRUE(ca.udp_encap);
    EXPECT_EQ(ca.local_port, 4500);
}

TEST(IkeExchange, KeyLoggerExportsMatchingKeys) {
    Pair p(base_peer(true), base_peer(false));
    std::vector<IkeSaKeys> ka;
    std::vector<ChildSaParams> kc;
    p.a.engine->set_key_logger([&](const IkeSaKeys& k) { ka.push_back(k); },
                               [&](const ChildSaParams& c) { kc.push_back(c); });
    ASSERT_TRUE(p.connect());
    ASSERT_EQ(ka.size(), 1u);
    EXPECT_EQ(ka[0].sk_ei.size(), 20u);  // AES-128 key + salt
    EXPECT_EQ(ka[0].encr_name, "AES-GCM-128 with 16 octet ICV [RFC5282]");
    EXPECT_EQ(ka[0].spi_i, p.a.engine->list_sas()[0].spi_i);
    ASSERT_EQ(kc.size(), 1u);
    EXPECT_EQ(kc[0].keys_in.enc_key.size(), 20u);
}

// RFC 7296 2.5 and 1.5/2.21.4: a request of a higher major version draws INVALID_MAJOR_VERSION
// with our version (2.0) in the header; a response of a higher version is only dropped; these
// unprotected answers and INVALID_IKE_SPI are rate limited per second over the engine.
TEST(IkeExchange, HigherMajorVersionAndUnprotectedAnswersAreRateLimited) {
    Pair p(base_peer(true), base_peer(false));
    ASSERT_TRUE(p.connect());
    auto& b = *p.b.engine;
    (void)b.take_outgoing();
    Datagram d;
    d.local = Endpoint{IpAddress::v4(192, 0, 2, 2), 500};
    d.remote = Endpoint{IpAddress::v4(192, 0, 2, 1), 500};
    wire::Message m;
    m.header.spi_i = 0x1111;
    m.header.spi_r = 0;
    m.header.version = 0x31;  // IKE 3.1
    m.header.exchange = wire::ExchangeType::IkeSaInit;
    m.header.flags = wire::kFlagInitiator;
    m.payloads.push_back({wire::PayloadType::Nonce, false, wire::NoncePayload{Bytes(32, 7)}});
    d.data = m.encode();
    b.handle_datagram(d, p.clock.now());
    EXPECT_EQ(p.b.counter("ike.rx.invalid_major_version"), 1u);
    auto out = b.take_outgoing();
    ASSERT_EQ(out.size(), 1u);
    auto ans = wire::Message::decode(out[0].data);
    ASSERT_TRUE(ans.ok()) << ans.error().to_string();
    EXPECT_EQ(ans->header.version, 0x20);
    EXPECT_TRUE(ans->header.response());
    EXPECT_EQ(ans->header.spi_i, 0x1111u);
    EXPECT_NE(wire::find_notify(ans->payloads, wire::notify::InvalidMajorVersion), nullptr);
    // A response of a higher version: dropped, never answered.
    m.header.flags = wire::kFlagResponse;
    d.data = m.encode();
    b.handle_datagram(d, p.clock.now());
    EXPECT_EQ(p.b.counter("ike.rx.invalid_major_version"), 2u);
    EXPECT_TRUE(b.take_outgoing().empty());

    // 15 encrypted requests for unknown IKE SAs within one second: 9 more answers (one went to
    // the version request above), then rate limited; a second later answers resume.
    d.data = forged_sk_request(0x3333, 0x4444, 1);
    for (int i = 0; i < 15; ++i) b.handle_datagram(d, p.clock.now());
    EXPECT_EQ(p.b.counter("ike.rx.invalid_ike_spi"), 15u);
    EXPECT_EQ(b.take_outgoing().size(), 9u);
    EXPECT_EQ(p.b.counter("ike.rx.unprotected_notify_rate_limited"), 6u);
    p.clock.advance(1000);
    b.handle_datagram(d, p.clock.now());
    EXPECT_EQ(b.take_outgoing().size(), 1u);
    EXPECT_EQ(b.list_sas().size(), 1u);  // the real SA is untouched
}

TEST(IkeExchange, BadInputIsCountedNeverFatal) {
    Pair p(base_peer(true), base_peer(false));
    ASSERT_TRUE(p.connect());
    auto& b = *p.b.engine;
    Datagram d;
    d.local = Endpoint{IpAddress::v4(192, 0, 2, 2), 500};
    d.remote = Endpoint{IpAddress::v4(192, 0, 2, 1), 500};
    d.data = hex("0102");
    b.handle_datagram(d, p.clock.now());
    EXPECT_EQ(p.b.counter("ike.rx.invalid_syntax"), 1u);
    // An encrypted request for an unknown IKE SA: INVALID_IKE_SPI answer.
    d.data = forged_sk_request(0x1111, 0x2222, 3);
    b.handle_datagram(d, p.clock.now());
    EXPECT_EQ(p.b.counter("ike.rx.invalid_ike_spi"), 1u);
    auto out = b.take_outgoing();
    ASSERT_EQ(out.size(), 1u);
    auto ans = wire::Message::decode(out[0].data);
    ASSERT_TRUE(ans.ok());
    EXPECT_TRUE(ans->header.response());
    EXPECT_NE(wire::find_notify(ans->payloads, wire::notify::InvalidIkeSpi), nullptr);
    // The real SA, a forged SK: ICV fails, dropped.
    auto info = b.list_sas()[0];
    d.data = forged_sk_request(info.spi_i, info.spi_r, 2);  // the next request b expects
    b.handle_datagram(d, p.clock.now());
    EXPECT_EQ(p.b.counter("ike.rx.integrity_check_failed"), 1u);
    // Out of window.
    d.data = forged_sk_request(info.spi_i, info.spi_r, 57);
    b.handle_datagram(d, p.clock.now());
    EXPECT_EQ(p.b.counter("ike.rx.invalid_message_id"), 1u);
    // Oversized.
    d.data = Bytes(70000, 0);
    b.handle_datagram(d, p.clock.now());
    EXPECT_EQ(p.b.counter("ike.rx.oversized"), 1u);
    // IKE_SA_INIT with an unknown critical payload: answered UNSUPPORTED_CRITICAL_PAYLOAD.
    std::string h =
        "00112233445566770000000000000000"
        "c8"
        "20"
        "22"
        "08"
        "00000000"
        "00000024"
        "00800008"
        "deadbeef";
    d.data = hex(h);
    b.handle_datagram(d, p.clock.now());
    EXPECT_EQ(p.b.counter("ike.rx.unsupported_critical_payload"), 1u);
    out = b.take_outgoing();
    ASSERT_EQ(out.size(), 1u);
    auto crit = wire::Message::decode(out[0].data);
    ASSERT_TRUE(crit.ok());
    auto* n = wire::find_notify(crit->payloads, wire::notify::UnsupportedCriticalPayload);
    ASSERT_NE(n, nullptr);
    EXPECT_EQ(n->data, Bytes{200});
    // The SA survived all of it.
    ASSERT_TRUE(p.a.engine->send_dpd(p.a.engine->list_sas()[0].id, p.clock.now()).ok());
    EXPECT_EQ(p.pump(), 2u);
    EXPECT_TRUE(p.established());
}

TEST(IkeExchange, DuplicatedRequestAnsweredFromCache) {
    Pair p(base_peer(true), base_peer(false));
    ASSERT_TRUE(p.connect());
    // Replay a's IKE_AUTH request to b: b resends its cached response instead of re-processing.
    Datagram req = p.log[2].second;
    Datagram in{req.remote, req.local, req.data, req.non_esp_marker};
    p.b.engine->handle_datagram(in, p.clock.now());
    auto out = p.b.engine->take_outgoing();
    ASSERT_EQ(out.size(), 1u);
    EXPECT_EQ(out[0].data, p.log[3].second.data);
    EXPECT_EQ(p.b.backend.install_count(), 1u);
    // a drops the duplicate response (no request outstanding).
    Datagram back{out[0].remote, out[0].local, out[0].data, out[0].non_esp_marker};
    p.a.engine->handle_datagram(back, p.clock.now());
    EXPECT_EQ(p.a.counter("ike.rx.invalid_message_id"), 1u);
}

TEST(IkeExchange, RekeyTimersFire) {
    auto pa = base_peer(true), pb = base_peer(false);
    pa.children[0].rekey_seconds = 100;
    pa.ike_rekey_seconds = 1000;
    Pair p(pa, pb);
    ASSERT_TRUE(p.connect());
    uint32_t first = p.a.backend.installed_spis()[0];
    p.advance(100 * 1000);
    p.pump();
    EXPECT_EQ(p.a.count(Event::Kind::ChildSaRekeyed), 1u);
    EXPECT_NE(p.a.backend.installed_spis()[0], first);
    p.advance(1000 * 1000);
    p.pump();
    EXPECT_GE(p.a.count(Event::Kind::IkeSaRekeyed), 1u);
    EXPECT_TRUE(p.established());
    expect_child_pair(p);
}

TEST(IkeExchange, SoftExpiryFromDataPlaneRekeys) {
    Pair p(base_peer(true), base_peer(false));
    ASSERT_TRUE(p.connect());
    uint32_t first = p.b.backend.installed_spis()[0];
    p.b.backend.fire_soft_expiry(first);
    EXPECT_EQ(p.b.expiries.pending(), 1u);  // queued for the loop, not yet in the engine
    p.advance(0);
    EXPECT_EQ(p.b.expiries.pending(), 0u);
    p.pump();
    EXPECT_EQ(p.b.count(Event::Kind::ChildSaRekeyed), 1u);
    EXPECT_NE(p.b.backend.installed_spis()[0], first);
    ASSERT_EQ(p.b.backend.outbound_switches.size(), 1u);
    EXPECT_EQ(p.b.backend.outbound_switches[0].first, first);
    expect_child_pair(p);
}

TEST(IkeExchange, Ipv4IdentitiesWithPsk) {
    auto pa = base_peer(true), pb = base_peer(false);
    pa.local_id = Identity::parse("192.0.2.1").value();
    pa.remote_id = Identity::parse("192.0.2.2").value();
    pb.local_id = Identity::parse("192.0.2.2").value();
    pb.remote_id = Identity::parse("ipv4:192.0.2.1").value();
    Pair p(pa, pb);
    ASSERT_TRUE(p.connect());
    EXPECT_EQ(p.b.engine->list_sas()[0].remote_id, "ipv4:192.0.2.1");
}

TEST(IkeExchange, HalfOpenSasExpireAndCountTowardsCookies) {
    EngineConfig ca, cb;
    ca.peers = {base_peer(true)};
    cb.peers = {base_peer(false)};
    cb.cookie_threshold = 1;
    Pair p(ca, cb, 11);
    // The first attempt stays half-open on b: a's IKE_AUTH is lost.
    p.drop = [](const Datagram& d, bool from_a) {
        auto h = wire::Header::decode(d.data);
        return from_a && h.ok() && h->exchange == wire::ExchangeType::IkeAuth;
    };
    ASSERT_TRUE(p.a.engine->initiate("to-b", p.clock.now()).ok());
    p.pump();
    EXPECT_EQ(p.b.engine->list_sas().size(), 1u);
    EXPECT_EQ(p.b.counter("ike.tx.cookie"), 0u);
    // A second initiation now meets the cookie demand (one half-open SA >= threshold 1).
    ASSERT_TRUE(p.a.engine->initiate("to-b", p.clock.now()).ok());
    p.pump();
    EXPECT_EQ(p.b.counter("ike.tx.cookie"), 1u);
    // b forgets half-open SAs after half_open_timeout_ms.
    p.clock.advance(cb.half_open_timeout_ms);
    p.b.engine->tick(p.clock.now());
    EXPECT_TRUE(p.b.engine->list_sas().empty());
    EXPECT_GE(p.b.counter("ike.half_open_expired"), 1u);
}
