// OCSP look-ups (RFC 6960) against `openssl ocsp -port` on loopback: a good, a revoked and an
// unknown answer, a responder that is not running, an unauthorised signer, a stapled response
// verified on its own, and a tampered one; the OcspStapler's thread (start(), destructor) and
// cancelled look-ups.
#include <gtest/gtest.h>

#include <chrono>
#include <ctime>
#include <memory>
#include <optional>
#include <thread>
#include <x2sec/test/ocsp.hpp>
#include <x2sec/test/ports.hpp>
#include <x2sec/test/test_pki.hpp>
#include <x2sec/x509/ocsp.hpp>
#include <x2sec/x509/ocsp_stapler.hpp>
#include <x2sec/x509/revocation.hpp>

using namespace x2sec;
using namespace x2sec::x509;

namespace {

// A CA, a delegated OCSP responder (id-kp-OCSPSigning) and three leaves: good (in the index),
// revoked (in the index, revoked), unknown (not in the index); `openssl ocsp` answers for them.
struct Responder : ::testing::Test {
    test::Issued ca = test::make_root("OCSP Test CA");
    std::optional<test::Issued> signer, good, revoked, unknown;
    std::optional<test::OpensslOcspResponder> responder;
    std::string url;

    test::Issued leaf(const std::string& cn, uint64_t serial) {
        test::CertOptions o;
        o.subject = cn;
        o.serial = serial;
        o.ocsp_urls = {url};
        return test::make_cert(ca, o);
    }

    void SetUp() override {
        if (!test::OpensslOcspResponder::available()) GTEST_SKIP() << "openssl CLI not installed";
        test::CertOptions so;
        so.subject = "OCSP Responder";
        so.extended_key_usage = "OCSPSigning";
        signer = test::make_cert(ca, so);
        responder.emplace(ca.cert.pem(), signer->cert.pem(), signer->key.to_pem().view(),
                          std::vector<test::OpensslOcspResponder::Entry>{{"1001", "/CN=good.example", false},
                                                                         {"1002", "/CN=revoked.example", true}});
        const std::string started = responder->start(0);
        ASSERT_EQ(started, "") << "openssl ocsp did not start";
        url = responder->url();  // the leaves name the port it runs on
        good = leaf("good.example", 0x1001);
        revoked = leaf("revoked.example", 0x1002);
        unknown = leaf("unknown.example", 0x1003);
    }
    void TearDown() override { responder.reset(); }
    static int64_t now() { return static_cast<int64_t>(std::time(nullptr)); }
};

}  // namespace

TEST_F(Responder, GoodRevokedAndUnknownAnswers) {
    EXPECT_EQ(ocsp_url(good->cert), url);
    OcspOptions o;
    auto g = ocsp_lookup(good->cert, ca.cert, url, o, now());
    ASSERT_TRUE(g.ok()) << g.error().detail();
    EXPECT_EQ(g->status, OcspStatus::Good);
    EXPECT_LE(g->this_update, now() + 5);
    EXPECT_GT(g->next_update, now());
    EXPECT_FALSE(g->response_der.empty());

    auto r = ocsp_lookup(revoked->cert, ca.cert, url, o, now());
    ASSERT_TRUE(r.ok()) << r.error().detail();
    EXPECT_EQ(r->status, OcspStatus::Revoked);
    EXPECT_EQ(r->reason, 1);  // keyCompromise
    EXPECT_EQ(r->revoked_at, 1704067200);

    auto u = ocsp_lookup(unknown->cert, ca.cert, url, o, now());
    ASSERT_TRUE(u.ok()) << u.error().detail();
    EXPECT_EQ(u->status, OcspStatus::Unknown);
}

TEST_F(Responder, StapledResponseVerifiedOnItsOwnAndOutOfRangeRefused) {
    OcspOptions o;
    auto g = ocsp_lookup(good->cert, ca.cert, url, o, now());
    ASSERT_TRUE(g.ok()) << g.error().detail();
    auto again = ocsp_verify_response(g->response_der, good->cert, ca.cert, o, now());
    ASSERT_TRUE(again.ok()) << again.error().detail();
    EXPECT_EQ(again->status, OcspStatus::Good);
    // For another certificate it holds no answer.
    auto other = ocsp_verify_response(g->response_der, revoked->cert, ca.cert, o, now());
    ASSERT_FALSE(other.ok());
    EXPECT_NE(other.error().detail().find("no answer"), std::string::npos) << other.error().detail();
    // After nextUpdate (10 minutes) + skew it is expired; before thisUpdate it is not yet valid.
    auto late = ocsp_verify_response(g->response_der, good->cert, ca.cert, o, now() + 3600);
    ASSERT_FALSE(late.ok());
    EXPECT_NE(late.error().detail().find("nextUpdate"), std::string::npos) << late.error().detail();
    auto early = ocsp_verify_response(g->response_der, good->cert, ca.cert, o, now() - 3600);
    EXPECT_FALSE(early.ok());
    // A flipped octet in the signed part breaks the signature (or the encoding).
    Bytes bad = g->response_der;
    bad[bad.size() / 2] ^= 0x01;
    EXPECT_FALSE(ocsp_verify_response(bad, good->cert, ca.cert, o, now()).ok());
    EXPECT_FALSE(ocsp_verify_response(Bytes{0x30, 0x03, 0x0a, 0x01, 0x00}, good->cert, ca.cert, o, now()).ok());
}

TEST_F(Responder, ResponderOfAnotherCaIsNotAuthorised) {
    // The responder signs for CA 1; asked about a certificate of CA 2 with the same serial, its
    // answer is not signed by CA 2 or a responder CA 2 authorised.
    test::Issued ca2 = test::make_root("Other CA");
    test::CertOptions o2;
    o2.subject = "good.example";
    o2.serial = 0x1001;
    auto foreign = test::make_cert(ca2, o2);
    auto r = ocsp_lookup(foreign.cert, ca2.cert, url, OcspOptions{}, now());
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().code(), static_cast<int>(VerifyFailure::CrlUnavailable));
}

// RFC 6960 2.2 (b): the same answer is accepted when its signer is configured as a Trusted
// Responder (the requester trusts its key, whatever CA 2 says).
TEST_F(Responder, TrustedResponderIsAcceptedForAnyCa) {
    test::Issued ca2 = test::make_root("Other CA");
    test::CertOptions o2;
    o2.subject = "good.example";
    o2.serial = 0x1001;
    auto foreign = test::make_cert(ca2, o2);
    OcspOptions o;
    o.trusted_responders = {ca.cert};  // not the signer: still refused
    auto refused = ocsp_lookup(foreign.cert, ca2.cert, url, o, now());
    ASSERT_FALSE(refused.ok());
    EXPECT_NE(refused.error().detail().find("nor signed by a configured trusted responder"), std::string::npos)
        << refused.error().detail();
    o.trusted_responders = {ca.cert, signer->cert};
    auto r = ocsp_lookup(foreign.cert, ca2.cert, url, o, now());
    ASSERT_TRUE(r.ok()) << r.error().detail();
    EXPECT_EQ(r->signer, OcspSigner::Trusted);
    EXPECT_EQ(r->signer_spki_sha1, signer->cert.spki_sha1());
    // For CA 1's own certificate the same signer is a delegated responder.
    auto g = ocsp_lookup(good->cert, ca.cert, url, o, now());
    ASSERT_TRUE(g.ok()) << g.error().detail();
    EXPECT_EQ(g->signer, OcspSigner::Delegated);
}

// Who signed a response, as the side that staples it sees it (RFC 4806).
TEST_F(Responder, SignerOfAResponseIsFoundWithoutTrustingIt) {
    auto g = ocsp_lookup(good->cert, ca.cert, url, OcspOptions{}, now());
    ASSERT_TRUE(g.ok()) << g.error().detail();
    auto s = ocsp_response_signer(g->response_der, ca.cert, {}, now());
    ASSERT_TRUE(s.ok()) << s.error().detail();
    ASSERT_TRUE(s->cert.has_value());
    EXPECT_EQ(s->cert->der(), signer->cert.der());  // included in the response by openssl ocsp
    EXPECT_EQ(s->spki_sha1, signer->cert.spki_sha1());
    EXPECT_FALSE(s->by_issuer);
    EXPECT_TRUE(s->ca_authorised);
    test::Issued ca2 = test::make_root("Other CA");
    auto other = ocsp_response_signer(g->response_der, ca2.cert, {}, now());  // CA 2 authorised nobody
    ASSERT_TRUE(other.ok()) << other.error().detail();
    EXPECT_FALSE(other->ca_authorised);
    EXPECT_FALSE(ocsp_response_signer(Bytes{0x30, 0x03, 0x0a, 0x01, 0x00}, ca.cert, {}, now()).ok());
}

TEST(Ocsp, UnreachableResponderIsUnavailable) {
    test::Issued ca = test::make_root("Lonely CA");
    auto leaf = test::make_cert(ca, "leaf.example");
    OcspOptions o;
    o.timeout_ms = 1000;
    const std::string url = test::unused_http_url(2);
    auto r = ocsp_lookup(leaf.cert, ca.cert, url, o, static_cast<int64_t>(std::time(nullptr)));
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().code(), static_cast<int>(VerifyFailure::CrlUnavailable));
    EXPECT_NE(r.error().detail().find(url), std::string::npos) << r.error().detail();
    EXPECT_EQ(ocsp_url(leaf.cert), "");
    EXPECT_FALSE(ocsp_lookup(leaf.cert, ca.cert, "https://127.0.0.1/", o, 0).ok());
}

// RevocationChecker with method = ocsp / ocsp-then-crl: the chain's leaf is looked up at the
// responder of its authorityInfoAccess.
namespace {
RevocationConfig ocsp_config(RevocationMethod m, CrlPolicy p = CrlPolicy::Hard) {
    RevocationConfig c;
    c.method = m;
    c.policy = p;
    c.background = false;
    c.fetch_timeout_ms = 2000;
    return c;
}
}  // namespace

TEST_F(Responder, CheckerUsesOcspForGoodRevokedUnknownAndCaches) {
    RevocationChecker rc(ocsp_config(RevocationMethod::Ocsp));
    ASSERT_TRUE(rc.start().ok());
    RevocationChecker::Verdict v;
    auto g = rc.check({good->cert, ca.cert}, now(), &v);
    EXPECT_TRUE(g.ok()) << g.error().detail();
    EXPECT_EQ(v, RevocationChecker::Verdict::Good);
    auto r = rc.check({revoked->cert, ca.cert}, now(), &v);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().code(), static_cast<int>(VerifyFailure::Revoked));
    EXPECT_NE(r.error().detail().find("OCSP responder"), std::string::npos) << r.error().detail();
    EXPECT_EQ(v, RevocationChecker::Verdict::Revoked);
    auto u = rc.check({unknown->cert, ca.cert}, now(), &v);
    ASSERT_FALSE(u.ok());
    EXPECT_EQ(u.error().code(), static_cast<int>(VerifyFailure::CrlUnavailable));
    EXPECT_NE(u.error().detail().find("unknown"), std::string::npos) << u.error().detail();
    EXPECT_EQ(rc.counters().get("x509.ocsp.good"), 1u);
    EXPECT_EQ(rc.counters().get("x509.ocsp.revoked"), 1u);
    EXPECT_EQ(rc.counters().get("x509.ocsp.unknown"), 1u);
    // The good answer is cached until its nextUpdate: with the responder gone it still holds.
    responder->stop();
    EXPECT_TRUE(rc.check({good->cert, ca.cert}, now(), &v).ok());
    EXPECT_EQ(rc.counters().get("x509.ocsp.cache_hit"), 1u);
}

TEST_F(Responder, UnreachableResponderGoesToPolicyOrToTheCrls) {
    responder->stop();
    RevocationChecker::Verdict v;
    {
        RevocationChecker hard(ocsp_config(RevocationMethod::Ocsp));
        ASSERT_TRUE(hard.start().ok());
        auto st = hard.check({good->cert, ca.cert}, now(), &v);
        ASSERT_FALSE(st.ok());
        EXPECT_EQ(st.error().code(), static_cast<int>(VerifyFailure::CrlUnavailable));
        EXPECT_EQ(v, RevocationChecker::Verdict::Unavailable);
        EXPECT_EQ(hard.counters().get("x509.ocsp.unavailable"), 1u);
    }
    {
        RevocationChecker soft(ocsp_config(RevocationMethod::Ocsp, CrlPolicy::Soft));
        ASSERT_TRUE(soft.start().ok());
        EXPECT_TRUE(soft.check({good->cert, ca.cert}, now(), &v).ok());
        EXPECT_EQ(soft.counters().get("x509.ocsp.soft_accepted"), 1u);
    }
    {
        // ocsp-then-crl: the CRL sources decide; with `require` and none, it is refused.
        auto c = ocsp_config(RevocationMethod::OcspThenCrl);
        c.require = true;
        RevocationChecker fb(c);
        ASSERT_TRUE(fb.start().ok());
        auto st = fb.check({good->cert, ca.cert}, now(), &v);
        ASSERT_FALSE(st.ok());
        EXPECT_NE(st.error().detail().find("no CRL"), std::string::npos) << st.error().detail();
    }
}

// The stapler's thread runs only after start() (the daemon's runtime calls it; loading a
// configuration does not), and its destructor abandons a fetch in flight at a silent responder
// (connection accepted by the kernel, never answered) instead of waiting for the fetch timeout.
TEST(OcspStaplerThread, NoFetchBeforeStartAndAFetchInFlightDoesNotHoldTheDestructor) {
    const test::SilentListener silent(test::free_tcp_port(3));

    test::Issued ca = test::make_root("Stapler CA");
    test::CertOptions o;
    o.subject = "segw.example";
    o.ocsp_urls = {silent.url()};
    auto leaf = test::make_cert(ca, o);
    OcspStaplerConfig c;
    c.fetch_timeout_ms = 8000;  // far longer than the bound below
    auto s = std::make_unique<OcspStapler>(c);
    ASSERT_TRUE(s->add(leaf.cert, ca.cert).ok());
    EXPECT_FALSE(s->started());
    EXPECT_FALSE(silent.connection_pending(500)) << "a fetch before start()";
    EXPECT_EQ(s->last_error(leaf.cert), "not fetched yet");

    s->start();
    EXPECT_TRUE(s->started());
    ASSERT_TRUE(silent.connection_pending(10000)) << "no fetch after start()";  // connected: in the backlog
    std::this_thread::sleep_for(std::chrono::milliseconds(100));                // the POST is sent, waiting
    const auto t0 = std::chrono::steady_clock::now();
    s.reset();
    const auto ms =
        std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0).count();
    EXPECT_LT(ms, 2000) << "the destructor waited for the fetch in flight";
}

TEST(OcspStaplerThread, CancelledLookUpFailsAtOnceAndNamesTheUrl) {
    test::Issued ca = test::make_root("Cancel CA");
    auto leaf = test::make_cert(ca, "leaf.example");
    OcspCancel cancel;
    cancel.cancel();
    OcspOptions o;
    o.cancel = &cancel;
    const std::string url = test::unused_http_url(4);
    auto r = ocsp_lookup(leaf.cert, ca.cert, url, o, static_cast<int64_t>(std::time(nullptr)));
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().code(), static_cast<int>(VerifyFailure::CrlUnavailable));
    EXPECT_NE(r.error().detail().find(url + ": look-up cancelled"), std::string::npos) << r.error().detail();
}
