#include <gtest/gtest.h>

#include <ctime>

#include <x2sec/common/rng.hpp>
#include <x2sec/common/time.hpp>
#include <x2sec/kds/config.hpp>
#include <x2sec/kds/protocol.hpp>
#include <x2sec/kds/server.hpp>
#include <x2sec/kds/tls.hpp>
#include <x2sec/node/lab_pki.hpp>

using namespace x2sec;
using namespace x2sec::kds;

namespace {

const std::string kA1 = "0023a1000001.henb.vendor-a.example";
const std::string kB1 = "0023b2000001.henb.vendor-b.example";
const std::string kA2 = "0023a1000002.henb.vendor-a.example";

ServerConfig config() {
    ServerConfig c;
    c.nodes = {{"a1", kA1}, {"b1", kB1}, {"a2", kA2}};
    c.relations = {{"a1", "b1"}};
    c.key_lifetime_s = 600;
    return c;
}

KeyRequest req(const std::string& from, const std::string& to, uint32_t id = 7) {
    KeyRequest r;
    r.request_id = id;
    r.requester = from;
    r.peer = to;
    return r;
}

}  // namespace

TEST(KdsCodec, RequestRoundTrip) {
    KeyRequest r = req(kA1, kB1, 42);
    r.rekey = true;
    r.previous_key_id = Bytes(16, 0xab);
    auto enc = encode(r);
    auto dec = decode(enc.view());
    ASSERT_TRUE(dec.ok()) << dec.error().to_string();
    auto& d = std::get<KeyRequest>(*dec);
    EXPECT_EQ(d.request_id, 42u);
    EXPECT_EQ(d.requester, kA1);
    EXPECT_EQ(d.peer, kB1);
    EXPECT_TRUE(d.rekey);
    EXPECT_EQ(d.previous_key_id, Bytes(16, 0xab));
    // Byte-for-byte stable.
    EXPECT_EQ(to_hex(encode(d).view()), to_hex(enc.view()));
}

TEST(KdsCodec, ResponseAndErrorRoundTrip) {
    KeyResponse r;
    r.request_id = 1;
    r.key_id = Bytes(16, 1);
    r.key = SecureBytes(Bytes(32, 2));
    r.lifetime_s = 3600;
    r.generation = 3;
    r.identity_a = kA1;
    r.identity_b = kB1;
    auto dec = decode(encode(r).view());
    ASSERT_TRUE(dec.ok());
    auto& d = std::get<KeyResponse>(*dec);
    EXPECT_TRUE(ct_equal(d.key.view(), Bytes(32, 2)));
    EXPECT_EQ(d.generation, 3u);
    EXPECT_EQ(d.identity_b, kB1);
    auto e = decode(encode(ErrorMessage{9, ErrorCode::UnauthorisedPair, "nope"}).view());
    ASSERT_TRUE(e.ok());
    EXPECT_EQ(std::get<ErrorMessage>(*e).code, ErrorCode::UnauthorisedPair);
    EXPECT_EQ(std::get<ErrorMessage>(*e).text, "nope");
}

TEST(KdsCodec, RejectsMalformed) {
    auto good = encode(req(kA1, kB1));
    Bytes b(good.view().begin(), good.view().end());
    // wrong version
    Bytes v = b; v[0] = 2;
    auto r = decode(v);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().code(), int(ErrorCode::UnsupportedVersion));
    // truncated
    Bytes t(b.begin(), b.end() - 1);
    EXPECT_FALSE(decode(t).ok());
    // trailing byte
    Bytes tr = b; tr.push_back(0);
    EXPECT_FALSE(decode(tr).ok());
    // reserved non-zero
    Bytes rs = b; rs[3] = 1;
    EXPECT_FALSE(decode(rs).ok());
    // huge body length
    Bytes hb = b; hb[4] = 0x7f;
    EXPECT_FALSE(decode(hb).ok());
    // unknown critical TLV appended (update body length)
    Bytes crit = b;
    for (uint8_t x : {0x80, 0x63, 0x00, 0x00}) crit.push_back(x);
    crit[7] = uint8_t(crit[7] + 4);
    auto c = decode(crit);
    ASSERT_FALSE(c.ok());
    EXPECT_NE(c.error().detail().find("critical"), std::string::npos);
    // unknown non-critical TLV is skipped
    Bytes nc = b;
    for (uint8_t x : {0x00, 0x63, 0x00, 0x01, 0x55}) nc.push_back(x);
    nc[7] = uint8_t(nc[7] + 5);
    EXPECT_TRUE(decode(nc).ok());
    // bad identity
    auto bad = encode(req("has space", kB1));
    EXPECT_FALSE(decode(bad.view()).ok());
    EXPECT_FALSE(frame_size(Bytes{1, 1}).ok());
}

TEST(KdsServer, SameKeyForBothMembersOfAPair) {
    DeterministicRng rng(1);
    Server s(config(), rng);
    auto ra = s.handle_request(kA1, req(kA1, kB1), 0);
    auto rb = s.handle_request(kB1, req(kB1, kA1), 1000);
    auto& ka = std::get<KeyResponse>(ra);
    auto& kb = std::get<KeyResponse>(rb);
    EXPECT_EQ(ka.key.size(), 32u);
    EXPECT_TRUE(ct_equal(ka.key.view(), kb.key.view()));
    EXPECT_EQ(ka.key_id, kb.key_id);
    EXPECT_EQ(ka.identity_a, kA1);
    EXPECT_EQ(ka.identity_b, kB1);
    EXPECT_EQ(ka.lifetime_s, 600u);
    EXPECT_EQ(kb.lifetime_s, 599u);
    // Both took it: the KDS wiped its copy.
    EXPECT_EQ(s.pairs_with_key_material(), 0u);
    EXPECT_EQ(s.counters().get("kds.key.wiped_after_delivery"), 1u);
}

TEST(KdsServer, FreshKeysDifferAcrossRngStates) {
    DeterministicRng rng(1);
    ServerConfig c = config();
    c.relations.push_back({"a2", "b1"});
    Server s(c, rng);
    auto k1 = std::get<KeyResponse>(s.handle_request(kA1, req(kA1, kB1), 0));
    auto k2 = std::get<KeyResponse>(s.handle_request(kA2, req(kA2, kB1), 0));
    EXPECT_FALSE(ct_equal(k1.key.view(), k2.key.view()));
    EXPECT_NE(k1.key_id, k2.key_id);
}

TEST(KdsServer, RefusesUnauthorisedPair) {
    DeterministicRng rng(1);
    Server s(config(), rng);
    Outcome o;
    auto r = s.handle_request(kA2, req(kA2, kB1), 0, &o);
    ASSERT_TRUE(std::holds_alternative<ErrorMessage>(r));
    EXPECT_EQ(std::get<ErrorMessage>(r).code, ErrorCode::UnauthorisedPair);
    EXPECT_FALSE(o.granted);
    EXPECT_EQ(s.counters().get("kds.refused.UNAUTHORISED_PAIR"), 1u);
    EXPECT_EQ(s.pairs_known(), 0u);
}

TEST(KdsServer, RefusesUnknownClientAndMismatchAndUnknownPeer) {
    DeterministicRng rng(1);
    Server s(config(), rng);
    auto r1 = s.handle_request("0023cc000001.henb.vendor-c.example", req("0023cc000001.henb.vendor-c.example", kB1), 0);
    EXPECT_EQ(std::get<ErrorMessage>(r1).code, ErrorCode::UnknownClient);
    auto r2 = s.handle_request(kA2, req(kA1, kB1), 0);  // a2 asks pretending to be a1
    EXPECT_EQ(std::get<ErrorMessage>(r2).code, ErrorCode::IdentityMismatch);
    auto r3 = s.handle_request(kA1, req(kA1, "nobody.example"), 0);
    EXPECT_EQ(std::get<ErrorMessage>(r3).code, ErrorCode::UnknownPeer);
}

TEST(KdsServer, ExpiryAndRekeyRedistribution) {
    DeterministicRng rng(1);
    ServerConfig c = config();
    c.wipe_after_delivery = false;
    Server s(c, rng);
    auto g1 = std::get<KeyResponse>(s.handle_request(kA1, req(kA1, kB1), 0));
    EXPECT_EQ(g1.generation, 1u);
    // a1 asks to rekey: generation 2; b1 asking with the same old id gets generation 2 too.
    KeyRequest rk = req(kA1, kB1);
    rk.rekey = true;
    rk.previous_key_id = g1.key_id;
    auto g2a = std::get<KeyResponse>(s.handle_request(kA1, rk, 10'000));
    KeyRequest rkb = req(kB1, kA1);
    rkb.rekey = true;
    rkb.previous_key_id = g1.key_id;
    auto g2b = std::get<KeyResponse>(s.handle_request(kB1, rkb, 11'000));
    EXPECT_EQ(g2a.generation, 2u);
    EXPECT_EQ(g2b.generation, 2u);
    EXPECT_EQ(g2a.key_id, g2b.key_id);
    EXPECT_TRUE(ct_equal(g2a.key.view(), g2b.key.view()));
    EXPECT_FALSE(ct_equal(g1.key.view(), g2a.key.view()));
    EXPECT_EQ(s.counters().get("kds.key.rekeyed"), 1u);
    // After the lifetime the key is dropped; the next request gets a fresh one.
    s.expire(10'000 + 600'000);
    EXPECT_EQ(s.pairs_known(), 0u);
    EXPECT_EQ(s.counters().get("kds.key.expired"), 1u);
    auto g3 = std::get<KeyResponse>(s.handle_request(kA1, req(kA1, kB1), 700'000));
    EXPECT_NE(g3.key_id, g2a.key_id);
    EXPECT_EQ(g3.generation, 1u);
}

TEST(KdsServer, MalformedBytesAnsweredWithError) {
    DeterministicRng rng(1);
    Server s(config(), rng);
    Bytes junk = {1, 1, 0, 0, 0, 0, 0, 3, 0xff, 0xff, 0xff};
    auto out = s.handle(kA1, junk, 0);
    auto m = decode(out.view());
    ASSERT_TRUE(m.ok());
    EXPECT_EQ(std::get<ErrorMessage>(*m).code, ErrorCode::Malformed);
    EXPECT_EQ(s.counters().get("kds.rx.malformed"), 1u);
}

// ---------------------------------------------------------------- mutual TLS over loopback
namespace {
struct Pki {
    node::LabCa vendor_a = node::LabCa::create("Vendor A Root CA", "Vendor A", 1'700'000'000, 3650).value();
    node::LabCa vendor_b = node::LabCa::create("Vendor B Root CA", "Vendor B", 1'700'000'000, 3650).value();
    node::LabCa rogue = node::LabCa::create("Rogue CA", "Rogue", 1'700'000'000, 3650).value();
    node::LabCa op = node::LabCa::create("Operator Root CA", "Operator", 1'700'000'000, 3650).value();
    TlsCredentials creds(node::LabCa& ca, const std::string& id, const std::string& anchors) {
        auto c = ca.issue(id, int64_t(time(nullptr)) - 3600, 365).value();
        return TlsCredentials{c.chain_pem, c.key_pem, anchors};
    }
};
}  // namespace

class KdsTls : public ::testing::Test {
protected:
    Pki pki;
    DeterministicRng rng{5};
    SystemClock clock;
    std::unique_ptr<Server> engine;
    std::unique_ptr<TlsServer> server;
    void SetUp() override {
        engine = std::make_unique<Server>(config(), rng);
        server = std::make_unique<TlsServer>(*engine, clock);
        auto st = server->start("127.0.0.1", 0,
                                pki.creds(pki.op, "kds.operator.example",
                                          pki.vendor_a.root_pem() + pki.vendor_b.root_pem()));
        ASSERT_TRUE(st.ok()) << st.error().to_string();
    }
    void TearDown() override { server->stop(); }
};

TEST_F(KdsTls, BothNodesGetTheSameKeyOverMutualTls) {
    auto ca = pki.creds(pki.vendor_a, kA1, pki.op.root_pem());
    auto cb = pki.creds(pki.vendor_b, kB1, pki.op.root_pem());
    TransferStats st;
    auto ka = fetch_key("127.0.0.1", server->port(), "kds.operator.example", ca, req(kA1, kB1, 1), &st);
    ASSERT_TRUE(ka.ok()) << ka.error().to_string();
    auto kb = fetch_key("127.0.0.1", server->port(), "kds.operator.example", cb, req(kB1, kA1, 2));
    ASSERT_TRUE(kb.ok()) << kb.error().to_string();
    EXPECT_TRUE(ct_equal(ka->key.view(), kb->key.view()));
    EXPECT_EQ(ka->key_id, kb->key_id);
    EXPECT_GT(st.bytes_sent, 100u);
    EXPECT_GT(st.bytes_received, 100u);
    EXPECT_EQ(st.messages, 2u);
    EXPECT_GE(st.round_trips, 2u);
}

TEST_F(KdsTls, UnauthorisedPairRefused) {
    auto c2 = pki.creds(pki.vendor_a, kA2, pki.op.root_pem());
    auto r = fetch_key("127.0.0.1", server->port(), "kds.operator.example", c2, req(kA2, kB1));
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().domain(), ErrorDomain::Kds);
    EXPECT_EQ(r.error().code(), int(ErrorCode::UnauthorisedPair));
}

TEST_F(KdsTls, ClientCertificateFromUnknownCaRefused) {
    auto rogue = pki.creds(pki.rogue, kA1, pki.op.root_pem());  // right name, wrong CA
    auto r = fetch_key("127.0.0.1", server->port(), "kds.operator.example", rogue, req(kA1, kB1));
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().domain(), ErrorDomain::Io) << r.error().to_string();
    EXPECT_EQ(engine->counters().get("kds.key.delivered"), 0u);
}

TEST_F(KdsTls, TrustedCertificateOfUnknownNodeRefused) {
    auto c = pki.creds(pki.vendor_a, "0023a1099999.henb.vendor-a.example", pki.op.root_pem());
    auto r = fetch_key("127.0.0.1", server->port(), "kds.operator.example", c,
                       req("0023a1099999.henb.vendor-a.example", kB1));
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().code(), int(ErrorCode::UnknownClient));
}

TEST_F(KdsTls, ServerNameChecked) {
    auto ca = pki.creds(pki.vendor_a, kA1, pki.op.root_pem());
    auto r = fetch_key("127.0.0.1", server->port(), "other-kds.operator.example", ca, req(kA1, kB1));
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.error().detail().find("handshake"), std::string::npos) << r.error().detail();
}

TEST(KdsConfig, ErrorsCarryLineAndColumn) {
    auto r = parse_serve_config("[kds]\nport = 70000\n", "kds.toml", ".");
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.error().detail().find("kds.toml:2:"), std::string::npos) << r.error().detail();
    auto r2 = parse_serve_config("[kds]\nbogus = 1\n", "kds.toml", ".");
    ASSERT_FALSE(r2.ok());
    EXPECT_NE(r2.error().detail().find("kds.toml:2:1: unknown key"), std::string::npos) << r2.error().detail();
    auto r3 = parse_serve_config("[kds\n", "kds.toml", ".");
    ASSERT_FALSE(r3.ok());
    EXPECT_NE(r3.error().detail().find("kds.toml:1:"), std::string::npos) << r3.error().detail();
}
