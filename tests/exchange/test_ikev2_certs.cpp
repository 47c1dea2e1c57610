// Certificate authentication between two engines: two vendor roots in one trust store
// (Scenario 1 vs 2 of the contribution), intermediates, CERTREQ, fragmentation, and every
// failure reason.
#include <gtest/gtest.h>

#include "ikev2_harness.hpp"

using namespace x2sec;
using namespace x2sec::ike;
using namespace x2sec::test;

namespace {

struct Pki {
    TestCa root_a = make_root("Vendor A");
    TestCa inter_a = make_intermediate(root_a, "Vendor A");
    TestCa root_b = make_root("Vendor B");
    std::shared_ptr<x509::TrustStore> both() const {
        auto t = std::make_shared<x509::TrustStore>();
        t->add_anchor(root_a.certificate(), "vendor-a");
        t->add_anchor(root_b.certificate(), "vendor-b");
        return t;
    }
    std::shared_ptr<x509::TrustStore> only_a() const {
        auto t = std::make_shared<x509::TrustStore>();
        t->add_anchor(root_a.certificate(), "vendor-a");
        return t;
    }
    std::shared_ptr<x509::TrustStore> only_b() const {
        auto t = std::make_shared<x509::TrustStore>();
        t->add_anchor(root_b.certificate(), "vendor-b");
        return t;
    }
};

const Pki& pki_fixture() {
    static Pki p;
    return p;
}

// The usual two ends: a's leaf under vendor A's intermediate (sent along), b's leaf directly
// under vendor B's root, each trusting `trust_a` / `trust_b` (default: both vendor roots).
// Tests change pa/pb (identities, trust) before building the Pair.
struct TwoVendors {
    const Pki& k = pki_fixture();
    Leaf la = make_leaf(k.inter_a, "a.henb.example");
    Leaf lb = make_leaf(k.root_b, "b.henb.example");
    PeerConfig pa = base_peer(true), pb = base_peer(false);
    explicit TwoVendors(std::shared_ptr<x509::TrustStore> trust_a = pki_fixture().both(),
                        std::shared_ptr<x509::TrustStore> trust_b = pki_fixture().both()) {
        use_cert(pa, la, {k.inter_a.certificate()}, trust_a);
        use_cert(pb, lb, {}, trust_b);
    }
};

// Both ends with RSA-3072 leaves issued by `issuer`, trusting `root` (labelled `label`), each
// sending its leaf and `chain_a` / `chain_b`: large enough IKE_AUTH messages to fragment.
std::pair<PeerConfig, PeerConfig> rsa_ends(const TestCa& root, const TestCa& issuer, const std::string& label,
                                           std::vector<x509::Certificate> chain_a,
                                           std::vector<x509::Certificate> chain_b) {
    Leaf la = make_leaf(issuer, "a.henb.example", 1'700'000'000, 2'000'000'000, pki::KeyAlg::Rsa3072);
    Leaf lb = make_leaf(issuer, "b.henb.example", 1'700'000'000, 2'000'000'000, pki::KeyAlg::Rsa3072);
    auto trust = std::make_shared<x509::TrustStore>();
    trust->add_anchor(root.certificate(), label);
    auto pa = base_peer(true), pb = base_peer(false);
    use_cert(pa, la, std::move(chain_a), trust);
    use_cert(pb, lb, std::move(chain_b), trust);
    return {pa, pb};
}

}  // namespace

TEST(IkeCerts, TwoVendorRootsAuthenticate) {
    TwoVendors t;
    Pair p(t.pa, t.pb);
    ASSERT_TRUE(p.connect()) << why_failed(p.b);
    auto ia = p.a.engine->list_sas()[0], ib = p.b.engine->list_sas()[0];
    EXPECT_EQ(ia.peer_cert_anchor, "vendor-b");
    EXPECT_EQ(ib.peer_cert_anchor, "vendor-a");
    EXPECT_NE(ib.peer_cert_subject.find("a.henb.example"), std::string::npos);
    EXPECT_EQ(ia.remote_auth, "ECDSA-SHA256 certificate");
    EXPECT_EQ(ia.local_auth, "ECDSA-SHA256 certificate");
    // The IKE_SA_INIT response carried CERTREQ with both anchors' SPKI hashes.
    auto init_resp = wire::Message::decode(p.log[1].second.data);
    ASSERT_TRUE(init_resp.ok());
    auto* cr = wire::find_payload(init_resp->payloads, wire::PayloadType::CERTREQ);
    ASSERT_NE(cr, nullptr);
    EXPECT_EQ(cr->as<wire::CertReqPayload>()->hashes().size(), 2u);
    EXPECT_NE(wire::find_notify(init_resp->payloads, wire::notify::SignatureHashAlgorithms), nullptr);
    EXPECT_EQ(p.a.backend.installed_spis().size(), 1u);
    EXPECT_EQ(p.b.backend.installed_spis().size(), 1u);
}

TEST(IkeCerts, DnIdentity) {
    TwoVendors t;
    // a identifies by its subject DN.
    t.pa.local_id.type = x509::IdType::DerAsn1Dn;
    t.pa.local_id.data = t.la.certificate().subject_der();
    t.pb.remote_id.reset();
    t.pa.remote_id.reset();
    Pair p(t.pa, t.pb);
    ASSERT_TRUE(p.connect()) << why_failed(p.b);
    EXPECT_EQ(p.b.engine->list_sas()[0].remote_id.rfind("dn:", 0), 0u);
}

TEST(IkeCerts, UntrustedCa) {
    TwoVendors t(pki_fixture().both(), pki_fixture().only_b());  // b does not know vendor A
    Pair p(t.pa, t.pb);
    EXPECT_FALSE(p.connect());
    EXPECT_EQ(failure_code(p.b), static_cast<int>(x509::VerifyFailure::UntrustedCa)) << why_failed(p.b);
    EXPECT_EQ(failure_code(p.a), auth_failure::PeerRejected) << why_failed(p.a);
    EXPECT_GE(p.b.counter("ike.auth.failed"), 1u);
}

TEST(IkeCerts, IdNotInCertificate) {
    TwoVendors t;
    t.pa.local_id = Identity::parse("fqdn:impostor.henb.example").value();
    t.pb.remote_id.reset();
    Pair p(t.pa, t.pb);
    EXPECT_FALSE(p.connect());
    auto* f = p.b.find(Event::Kind::AuthFailed);
    ASSERT_NE(f, nullptr);
    EXPECT_EQ(f->code, static_cast<int>(x509::VerifyFailure::IdMismatch));
    EXPECT_NE(f->detail.find("impostor"), std::string::npos);
}

TEST(IkeCerts, ExpiredCertificate) {
    const auto& k = pki_fixture();
    Leaf la = make_leaf(k.inter_a, "a.henb.example", 1'700'000'000, 1'750'000'000);  // clock is at 1.8e9
    Leaf lb = make_leaf(k.root_b, "b.henb.example");
    auto pa = base_peer(true), pb = base_peer(false);
    use_cert(pa, la, {k.inter_a.certificate()}, k.both());
    use_cert(pb, lb, {}, k.both());
    Pair p(pa, pb);
    EXPECT_FALSE(p.connect());
    EXPECT_EQ(failure_code(p.b), static_cast<int>(x509::VerifyFailure::Expired)) << why_failed(p.b);
}

TEST(IkeCerts, RevokedCertificate) {
    const auto& k = pki_fixture();
    Leaf la = make_leaf(k.root_b, "a.henb.example");
    Leaf lb = make_leaf(k.root_b, "b.henb.example");
    pki::Revoked rv;
    rv.serial = pki::serial_bytes(X509_get0_serialNumber(la.cert.get()));
    rv.time = 1'750'000'000;
    auto crl = pki::issue_crl(k.root_b.cert.get(), k.root_b.key.get(), {rv}, 1, 1'790'000'000, 1'900'000'000).value();
    auto trust = std::make_shared<x509::TrustStore>();
    trust->add_anchor(k.root_b.certificate(), "vendor-b");
    trust->add_crl(x509::Crl::from_der(pki::crl_der(crl.get())).value());
    trust->set_crl_check(true);
    auto pa = base_peer(true), pb = base_peer(false);
    use_cert(pa, la, {}, k.both());
    use_cert(pb, lb, {}, trust);
    Pair p(pa, pb);
    EXPECT_FALSE(p.connect());
    EXPECT_EQ(failure_code(p.b), static_cast<int>(x509::VerifyFailure::Revoked)) << why_failed(p.b);
}

TEST(IkeCerts, ResponderCertRejectedByInitiator) {
    TwoVendors t(pki_fixture().only_a());  // a does not trust vendor B
    Pair p(t.pa, t.pb);
    EXPECT_FALSE(p.connect());
    EXPECT_EQ(failure_code(p.a), static_cast<int>(x509::VerifyFailure::UntrustedCa)) << why_failed(p.a);
    // b learns it through INFORMATIONAL AUTHENTICATION_FAILED.
    EXPECT_EQ(failure_code(p.b), auth_failure::PeerRejected) << why_failed(p.b);
    EXPECT_TRUE(p.a.engine->list_sas().empty());
    EXPECT_TRUE(p.b.engine->list_sas().empty());
    EXPECT_TRUE(p.b.backend.installed_spis().empty());
}

TEST(IkeCerts, CertificateAgainstPskPolicyIsRejected) {
    const auto& k = pki_fixture();
    Leaf la = make_leaf(k.inter_a, "a.henb.example");
    auto pa = base_peer(true), pb = base_peer(false);
    use_cert(pa, la, {k.inter_a.certificate()}, k.both());
    pa.remote_auth = AuthMethod::Psk;
    pa.psk = SecureBytes(as_bytes("x"));
    Pair p(pa, pb);  // b expects PSK
    EXPECT_FALSE(p.connect());
    EXPECT_EQ(failure_code(p.b), auth_failure::MethodMismatch) << why_failed(p.b);
}

TEST(IkeCerts, FragmentationAt1280WithRsaChain) {
    auto root = make_root("Vendor R", pki::KeyAlg::Rsa3072);
    auto inter = make_intermediate(root, "Vendor R", pki::KeyAlg::Rsa3072);
    auto [pa, pb] = rsa_ends(root, inter, "vendor-r", {inter.certificate()}, {inter.certificate()});
    Pair p(pa, pb);
    ASSERT_TRUE(p.connect()) << why_failed(p.b);
    size_t frags_a = 0, frags_b = 0;
    for (const auto& [from_a, d] : p.log) {
        EXPECT_LE(d.data.size() + 20 + 8, 1280u) << "datagram of " << d.data.size() << " octets";
        auto m = wire::Message::decode(d.data);
        ASSERT_TRUE(m.ok());
        if (m->payloads.size() == 1 && m->payloads[0].type == wire::PayloadType::SKF) (from_a ? frags_a : frags_b)++;
    }
    EXPECT_GE(frags_a, 3u);
    EXPECT_GE(frags_b, 3u);
    EXPECT_EQ(p.b.counter("ike.rx.reassembled"), 1u);
    EXPECT_EQ(p.a.counter("ike.rx.reassembled"), 1u);
    EXPECT_EQ(p.a.engine->list_sas()[0].remote_auth, "RSASSA-PSS-SHA256 certificate");
}

TEST(IkeCerts, LostFragmentIsRetransmitted) {
    auto root = make_root("Vendor R2", pki::KeyAlg::Rsa3072);
    auto [pa, pb] = rsa_ends(root, root, "vendor-r2", {root.certificate()}, {});
    pa.fragment_size = pb.fragment_size = 576;
    Pair p(pa, pb);
    bool dropped = false;
    p.drop = [&](const Datagram& d, bool from_a) {
        auto m = wire::Message::decode(d.data);
        if (from_a && !dropped && m.ok() && m->payloads.size() == 1)
            if (auto* f = m->payloads[0].as<wire::SkfPayload>(); f && f->number == 2) {
                dropped = true;
                return true;
            }
        return false;
    };
    ASSERT_TRUE(p.a.engine->initiate("to-b", p.clock.now()).ok());
    p.pump();
    EXPECT_FALSE(p.established());
    p.advance(4000);
    p.pump();
    EXPECT_TRUE(p.established());
    EXPECT_TRUE(dropped);
}

// Scenario 2: a's vendor certificate is not trusted by b; after enrolment (an operator
// certificate) the runtime replaces a's credentials with update_peer and the next attempt works.
TEST(IkeCerts, UpdatePeerReplacesCredentials) {
    const auto& k = pki_fixture();
    TestCa op = make_root("Operator");
    Leaf vendor = make_leaf(k.inter_a, "a.henb.example");
    Leaf operator_cert = make_leaf(op, "a.henb.example");
    Leaf lb = make_leaf(op, "b.henb.example");
    auto op_only = std::make_shared<x509::TrustStore>();
    op_only->add_anchor(op.certificate(), "operator");
    auto pa = base_peer(true), pb = base_peer(false);
    use_cert(pa, vendor, {k.inter_a.certificate()}, op_only);
    use_cert(pb, lb, {}, op_only);
    Pair p(pa, pb);
    EXPECT_FALSE(p.connect());
    EXPECT_EQ(failure_code(p.b), static_cast<int>(x509::VerifyFailure::UntrustedCa)) << why_failed(p.b);
    auto updated = pa;
    use_cert(updated, operator_cert, {}, op_only);
    ASSERT_TRUE(p.a.engine->update_peer(updated).ok());
    EXPECT_TRUE(p.connect());
    EXPECT_EQ(p.b.engine->list_sas()[0].peer_cert_anchor, "operator");
}

// ---------------------------------------------------------------- CERTREQ anchors (RFC 7296 3.7)

namespace {
Bytes spki_sha1_of(const TestCa& ca) {
    x509::TrustStore t;
    t.add_anchor(ca.certificate(), "x");
    return t.anchor_spki_sha1s().at(0);
}
const Event* certreq_event(const Node& n) {
    return n.find(Event::Kind::PeerCertReq);
}
}  // namespace

// Both ends see the other's CERTREQ as an event and on the SA, each hash mapped to the label
// of its own anchor with that key, or left unknown.
TEST(IkeCertReq, AnchorsMappedToLabelsBothWays) {
    const auto& k = pki_fixture();
    TestCa root_c = make_root("Vendor C");
    Leaf la = make_leaf(k.inter_a, "a.henb.example");
    Leaf lb = make_leaf(k.root_b, "b.henb.example");
    auto b_store = std::make_shared<x509::TrustStore>();  // b trusts vendor A and vendor C
    b_store->add_anchor(k.root_a.certificate(), "vendor-a");
    b_store->add_anchor(root_c.certificate(), "vendor-c");
    auto pa = base_peer(true), pb = base_peer(false);
    use_cert(pa, la, {k.inter_a.certificate()}, k.both());  // a trusts vendor A and vendor B
    use_cert(pb, lb, {}, b_store);
    Pair p(pa, pb);
    ASSERT_TRUE(p.connect()) << why_failed(p.b);

    // a (initiator) got b's CERTREQ in the IKE_SA_INIT response: vendor-a (known), vendor C (not ours).
    const Event* ea = certreq_event(p.a);
    ASSERT_NE(ea, nullptr);
    EXPECT_EQ(p.a.count(Event::Kind::PeerCertReq), 1u);
    ASSERT_EQ(ea->certreq.size(), 2u);
    EXPECT_EQ(ea->certreq[0].spki_sha1, spki_sha1_of(k.root_a));
    EXPECT_EQ(ea->certreq[0].label, "vendor-a");
    EXPECT_NE(ea->certreq[0].subject.find("Vendor A Root CA"), std::string::npos);
    EXPECT_TRUE(ea->certreq[0].known());
    EXPECT_EQ(ea->certreq[1].spki_sha1, spki_sha1_of(root_c));
    EXPECT_FALSE(ea->certreq[1].known());
    EXPECT_TRUE(ea->certreq[1].subject.empty());
    EXPECT_NE(ea->detail.find("vendor-a"), std::string::npos);
    EXPECT_NE(ea->detail.find("unknown(" + to_hex(spki_sha1_of(root_c)) + ")"), std::string::npos);

    // b (responder) got a's CERTREQ in IKE_AUTH: vendor A (known as vendor-a), vendor B (not b's).
    const Event* eb = certreq_event(p.b);
    ASSERT_NE(eb, nullptr);
    ASSERT_EQ(eb->certreq.size(), 2u);
    EXPECT_EQ(eb->certreq[0].label, "vendor-a");
    EXPECT_EQ(eb->certreq[1].spki_sha1, spki_sha1_of(k.root_b));
    EXPECT_FALSE(eb->certreq[1].known());

    // The same on the established SAs.
    auto ia = p.a.engine->list_sas().at(0), ib = p.b.engine->list_sas().at(0);
    ASSERT_EQ(ia.peer_certreq.size(), 2u);
    EXPECT_EQ(ia.peer_certreq[0].label, "vendor-a");
    EXPECT_FALSE(ia.peer_certreq[1].known());
    ASSERT_EQ(ib.peer_certreq.size(), 2u);
    EXPECT_EQ(ib.peer_certreq[1].spki_sha1, spki_sha1_of(k.root_b));

    // Kept across an IKE rekey.
    ASSERT_TRUE(p.a.engine->rekey_ike(ia.id, p.clock.now()).ok());
    p.pump();
    auto after = p.a.engine->list_sas();
    ASSERT_EQ(after.size(), 1u);
    EXPECT_NE(after[0].id, ia.id);
    ASSERT_EQ(after[0].peer_certreq.size(), 2u);
    EXPECT_EQ(after[0].peer_certreq[0].label, "vendor-a");
}

// What the node agent needs when the direct interface fails: the responder asked only for a
// CA the initiator does not have, the initiator's vendor chain is rejected, yet the initiator
// learnt the responder's anchors (a hash of another peer config's anchor is mapped to its label).
TEST(IkeCertReq, ReportedEvenWhenAuthenticationFails) {
    const auto& k = pki_fixture();
    TestCa op = make_root("Operator");
    Leaf la = make_leaf(k.inter_a, "a.henb.example");
    Leaf lb = make_leaf(op, "b.henb.example");
    auto op_only = std::make_shared<x509::TrustStore>();
    op_only->add_anchor(op.certificate(), "operator");
    auto pa = base_peer(true), pb = base_peer(false);
    use_cert(pa, la, {k.inter_a.certificate()}, k.both());  // a: vendor roots only for this peer
    use_cert(pb, lb, {}, op_only);                          // b: operator root only
    EngineConfig ca, cb;
    ca.peers = {pa};
    auto segw = base_peer(true);  // a's other peer (e.g. the SeGW) knows the operator root
    segw.name = "segw";
    segw.remote_addr = IpAddress::v4(198, 51, 100, 9);
    use_cert(segw, la, {k.inter_a.certificate()}, op_only);
    ca.peers.push_back(segw);
    cb.peers = {pb};
    Pair p(ca, cb, 1);
    EXPECT_FALSE(p.connect());
    EXPECT_EQ(failure_code(p.b), static_cast<int>(x509::VerifyFailure::UntrustedCa)) << why_failed(p.b);
    const Event* ea = certreq_event(p.a);
    ASSERT_NE(ea, nullptr);
    EXPECT_EQ(ea->peer, "to-b");
    ASSERT_EQ(ea->certreq.size(), 1u);
    EXPECT_EQ(ea->certreq[0].spki_sha1, spki_sha1_of(op));
    EXPECT_EQ(ea->certreq[0].label, "operator");
    // b saw a's CERTREQ before rejecting a's chain.
    const Event* eb = certreq_event(p.b);
    ASSERT_NE(eb, nullptr);
    ASSERT_EQ(eb->certreq.size(), 2u);
    EXPECT_FALSE(eb->certreq[0].known());
    EXPECT_FALSE(eb->certreq[1].known());
}

TEST(IkeCertReq, NoneWithPskOrWhenDisabled) {
    {
        Pair p(base_peer(true), base_peer(false));
        ASSERT_TRUE(p.connect());
        EXPECT_EQ(certreq_event(p.a), nullptr);
        EXPECT_EQ(certreq_event(p.b), nullptr);
        EXPECT_TRUE(p.a.engine->list_sas().at(0).peer_certreq.empty());
    }
    TwoVendors t;
    t.pb.send_certreq = false;
    Pair p(t.pa, t.pb);
    ASSERT_TRUE(p.connect());
    EXPECT_EQ(certreq_event(p.a), nullptr);  // b sent none
    ASSERT_NE(certreq_event(p.b), nullptr);  // a did
    EXPECT_EQ(certreq_event(p.b)->certreq.size(), 2u);
    EXPECT_TRUE(p.a.engine->list_sas().at(0).peer_certreq.empty());
}
