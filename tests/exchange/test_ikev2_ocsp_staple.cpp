// OCSP in IKEv2 (RFC 4806), the responder-key hashes and the source of our own response:
//  * IkeOcspStaple: the CERTREQ of encoding 14 lists the SHA-1 SubjectPublicKeyInfo hashes of
//    the OCSP responders a peer trusts (ocsp_responders); the side asked staples its response
//    only when the asker can accept its signer (listed, or our CA / a responder our CA
//    authorised), and the asker accepts a response from a listed responder (RFC 6960 2.2
//    "Trusted Responder") and refuses one from an unlisted one.  Responses are signed here
//    with OpenSSL's OCSP API.
//  * IkeOcspAia: the SeGW's response fetched by x509::OcspStapler from the responder in its
//    certificate's AIA (`openssl ocsp -port` on loopback), in the background: good, revoked,
//    the responder unreachable or silent, refresh before nextUpdate and keeping a response
//    while a refresh fails.
#include <gtest/gtest.h>
#include <openssl/ocsp.h>
#include <openssl/sha.h>

#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <memory>
#include <optional>
#include <x2sec/common/file.hpp>
#include <x2sec/test/ocsp.hpp>
#include <x2sec/test/ports.hpp>
#include <x2sec/x509/ocsp_stapler.hpp>
#include <x2sec/x509/revocation.hpp>

#include "ikev2_harness.hpp"

using namespace x2sec;
using namespace x2sec::ike;
using namespace x2sec::test;

namespace {

constexpr int64_t kNow = 1'800'000'000;  // the harness clock's unix time

const TestCa& ca() {
    static TestCa c = make_root("Stapling");
    return c;
}

Leaf leaf_for(const std::string& fqdn, const std::vector<std::string>& ocsp_urls = {}, Bytes serial = {}) {
    LeafOptions o;
    o.ocsp_urls = ocsp_urls;
    o.serial = std::move(serial);
    return make_leaf(ca(), fqdn, o);
}

// An OCSP signing certificate: delegated by ca() (id-kp-OCSPSigning), or a third party's own
// (self-signed, nothing to do with ca(): acceptable only as a configured Trusted Responder).
struct Responder {
    pki::PkeyPtr key;
    pki::X509Ptr cert;
    x509::Certificate certificate() const { return x509::Certificate::from_der(pki::cert_der(cert.get())).value(); }
};

Responder responder(const std::string& cn, bool delegated) {
    Responder r;
    r.key = pki::generate_key(pki::KeyAlg::EcP256).value();
    auto n = name(cn, delegated ? "Stapling" : "Third Party");
    pki::IssueRequest q;
    q.profile = delegated ? pki::Profile::OcspSigner : pki::Profile::RootCa;
    q.subject = n.get();
    q.public_key = r.key.get();
    q.not_before = 1'700'000'000;
    q.not_after = 2'000'000'000;
    r.cert = delegated ? pki::issue_certificate(q, ca().cert.get(), ca().key.get()).value()
                       : pki::issue_certificate(q, nullptr, r.key.get()).value();
    return r;
}

// A DER OCSPResponse about `l` (status V_OCSP_CERTSTATUS_*) signed by signer_cert/signer_key,
// which it includes.
Bytes ocsp_response(const Leaf& l, int status, X509* signer_cert, EVP_PKEY* signer_key) {
    Bytes der = make_ocsp_response(l.cert.get(), ca().cert.get(), status, signer_cert, signer_key, kNow - 3600,
                                   kNow + 86400, kNow - 7200);
    EXPECT_FALSE(der.empty()) << "signing the OCSP response";
    return der;
}

// SHA-1 of the DER SubjectPublicKeyInfo, computed here independently of x509::Certificate.
Bytes spki_sha1(X509* x) {
    unsigned char* der = nullptr;
    const int n = i2d_X509_PUBKEY(X509_get_X509_PUBKEY(x), &der);
    Bytes h(SHA_DIGEST_LENGTH);
    SHA1(der, static_cast<size_t>(n > 0 ? n : 0), h.data());
    OPENSSL_free(der);
    return h;
}

std::shared_ptr<x509::TrustStore> store() {
    auto t = std::make_shared<x509::TrustStore>();
    t->add_anchor(ca().certificate(), "operator");
    return t;
}

// The H(e)NB (a, initiator) asks for the SeGW's (b) OCSP response and trusts `responders`;
// the SeGW staples `staple_file`.  No CRL checks: only the staple can settle the status.
struct IkeOcspStaple : ::testing::Test {
    Leaf henb = leaf_for("a.henb.example");
    Leaf segw = leaf_for("b.henb.example");
    Responder third = responder("Third Party OCSP", false);
    Responder other = responder("Another Party OCSP", false);
    Responder delegated = responder("Stapling OCSP", true);
    std::string dir, staple_file;

    void SetUp() override {
        char tmpl[] = "/tmp/x2sec-ocsp-staple-XXXXXX";
        ASSERT_NE(mkdtemp(tmpl), nullptr);
        dir = tmpl;
        staple_file = dir + "/segw-ocsp.der";
    }
    void TearDown() override { std::filesystem::remove_all(dir); }

    void staple(const Bytes& der) const { ASSERT_TRUE(write_file_atomic(staple_file, der).ok()); }

    // fragments = false: whole messages, so that Tamper can rewrite the IKE_AUTH response.
    std::unique_ptr<Pair> pair(OcspStapling mode, std::vector<x509::Certificate> responders,
                               bool fragments = true) const {
        auto pa = base_peer(true), pb = base_peer(false);
        pa.fragmentation = pb.fragmentation = fragments;
        use_cert(pa, henb, {}, store());
        use_cert(pb, segw, {}, store());
        pa.ocsp_stapling = mode;
        pa.ocsp_responders = std::move(responders);
        pb.ocsp_staple_file = staple_file;
        return std::make_unique<Pair>(pa, pb);
    }
};

// The encoding-14 CERTREQs of the initiator's IKE_AUTH request, decoded.
struct CertReqSpy {
    Tamper t;
    std::vector<Bytes> seen;
    explicit CertReqSpy(Pair& p) {
        t.edit = [this](const wire::Header& h, std::vector<wire::Payload>& pl, bool from_a) {
            if (from_a && h.exchange == wire::ExchangeType::IkeAuth)
                for (const auto& x : pl)
                    if (auto* cr = x.as<wire::CertReqPayload>(); cr && cr->encoding == 14) seen.push_back(cr->data);
            return false;
        };
        t.attach(p);
    }
};

}  // namespace

TEST_F(IkeOcspStaple, CertReqCarriesTheTrustedRespondersKeyHashes) {
    staple(ocsp_response(segw, V_OCSP_CERTSTATUS_GOOD, third.cert.get(), third.key.get()));
    auto p = pair(OcspStapling::Require, {third.certificate(), other.certificate()});
    CertReqSpy spy(*p);
    EXPECT_TRUE(p->connect()) << why_failed(p->a);
    ASSERT_EQ(spy.seen.size(), 1u);
    Bytes want = spki_sha1(third.cert.get());
    Bytes h2 = spki_sha1(other.cert.get());
    want.insert(want.end(), h2.begin(), h2.end());
    EXPECT_EQ(to_hex(spy.seen[0]), to_hex(want));  // 2 x 20 octets, in configuration order
    EXPECT_EQ(p->b.counter("ike.ocsp.staple_signer_listed"), 1u);
    EXPECT_EQ(p->a.counter("ike.ocsp.staple_trusted_responder"), 1u);
    EXPECT_EQ(p->a.counter("ike.ocsp.staple_good"), 1u);
}

TEST_F(IkeOcspStaple, WithoutRespondersTheCertReqListsNone) {
    staple(ocsp_response(segw, V_OCSP_CERTSTATUS_GOOD, ca().cert.get(), ca().key.get()));
    auto p = pair(OcspStapling::Require, {});
    CertReqSpy spy(*p);
    EXPECT_TRUE(p->connect()) << why_failed(p->a);
    ASSERT_EQ(spy.seen.size(), 1u);
    EXPECT_TRUE(spy.seen[0].empty());
    EXPECT_EQ(p->b.counter("ike.ocsp.staple_signer_ca"), 1u);  // RFC 4806 3.1 case (a): no hash needed
    EXPECT_EQ(p->a.counter("ike.ocsp.staple_good"), 1u);
}

TEST_F(IkeOcspStaple, StapleFromAnUnlistedResponderIsNotSent) {
    staple(ocsp_response(segw, V_OCSP_CERTSTATUS_GOOD, third.cert.get(), third.key.get()));
    auto none = pair(OcspStapling::Require, {});  // lists nobody: only our CA's responders count
    EXPECT_FALSE(none->connect());
    EXPECT_EQ(none->b.counter("ike.ocsp.staple_signer_not_listed"), 1u);
    EXPECT_EQ(none->b.counter("ike.ocsp.staple_sent"), 0u);
    EXPECT_EQ(none->a.counter("ike.ocsp.staple_missing"), 1u);
    EXPECT_NE(why_failed(none->a).find("peer sent no OCSP response"), std::string::npos) << why_failed(none->a);

    auto wrong = pair(OcspStapling::Require, {other.certificate()});  // lists another responder
    EXPECT_FALSE(wrong->connect());
    EXPECT_EQ(wrong->b.counter("ike.ocsp.staple_signer_not_listed"), 1u);
    EXPECT_EQ(wrong->a.counter("ike.ocsp.staple_missing"), 1u);

    auto listed = pair(OcspStapling::Require, {other.certificate(), third.certificate()});
    EXPECT_TRUE(listed->connect()) << why_failed(listed->a);
    EXPECT_EQ(listed->b.counter("ike.ocsp.staple_signer_listed"), 1u);
    EXPECT_EQ(listed->a.counter("ike.ocsp.staple_trusted_responder"), 1u);
}

TEST_F(IkeOcspStaple, OurCasResponsesAreSentWhateverTheList) {
    staple(ocsp_response(segw, V_OCSP_CERTSTATUS_GOOD, delegated.cert.get(), delegated.key.get()));
    auto p = pair(OcspStapling::Require, {third.certificate()});  // RFC 4806 3.1 case (c)
    EXPECT_TRUE(p->connect()) << why_failed(p->a);
    EXPECT_EQ(p->b.counter("ike.ocsp.staple_signer_delegated"), 1u);
    EXPECT_EQ(p->a.counter("ike.ocsp.staple_trusted_responder"), 0u);
    EXPECT_EQ(p->a.counter("ike.ocsp.staple_good"), 1u);
}

// The receiving side on its own: a response put on the wire by a peer that ignores the list.
TEST_F(IkeOcspStaple, ResponseOfAnUnlistedResponderOnTheWireIsRefused) {
    staple(ocsp_response(segw, V_OCSP_CERTSTATUS_GOOD, ca().cert.get(), ca().key.get()));
    const Bytes injected = ocsp_response(segw, V_OCSP_CERTSTATUS_GOOD, third.cert.get(), third.key.get());
    auto p = pair(OcspStapling::Require, {other.certificate()}, false);
    Tamper t;
    t.edit = [&](const wire::Header& h, std::vector<wire::Payload>& pl, bool from_a) {
        if (from_a || h.exchange != wire::ExchangeType::IkeAuth) return false;
        for (auto& x : pl)
            if (auto* c = x.as<wire::CertPayload>(); c && c->encoding == 14) c->data = injected;
        return true;
    };
    t.attach(*p);
    EXPECT_FALSE(p->connect());
    EXPECT_EQ(t.edited, 1u);
    EXPECT_EQ(p->a.counter("ike.ocsp.staple_invalid"), 1u);
    EXPECT_EQ(failure_code(p->a), static_cast<int>(x509::VerifyFailure::CrlUnavailable)) << why_failed(p->a);
    EXPECT_NE(why_failed(p->a).find("nor signed by a configured trusted responder"), std::string::npos)
        << why_failed(p->a);
    EXPECT_TRUE(p->a.engine->list_sas().empty());
}

TEST_F(IkeOcspStaple, GarbageOnTheWireIsRefused) {
    staple(ocsp_response(segw, V_OCSP_CERTSTATUS_GOOD, ca().cert.get(), ca().key.get()));
    auto p = pair(OcspStapling::Request, {}, false);
    Tamper t;
    t.edit = [&](const wire::Header& h, std::vector<wire::Payload>& pl, bool from_a) {
        if (from_a || h.exchange != wire::ExchangeType::IkeAuth) return false;
        for (auto& x : pl)
            if (auto* c = x.as<wire::CertPayload>(); c && c->encoding == 14) c->data = {0x30, 0x03, 0x0a, 0x01, 0x00};
        return true;
    };
    t.attach(*p);
    EXPECT_FALSE(p->connect());
    EXPECT_EQ(p->a.counter("ike.ocsp.staple_invalid"), 1u);
    EXPECT_NE(why_failed(p->a).find("stapled OCSP response (CERT encoding 14) refused"), std::string::npos)
        << why_failed(p->a);
}

// ---------------------------------------------------------------- from the AIA responder

namespace {

// `openssl ocsp -port` for ca(), signing with a delegated responder; the SeGW's certificate
// names it in its AIA.  Serial 5E01 is good, 5E02 revoked.
struct IkeOcspAia : ::testing::Test {
    std::optional<OpensslOcspResponder> server;
    std::string url;
    int port = 0;
    std::optional<Leaf> henb, good, revoked;

    void SetUp() override {
        if (!OpensslOcspResponder::available()) GTEST_SKIP() << "openssl CLI not installed";
        Responder signer = responder("Stapling OCSP", true);
        server.emplace(pki::cert_pem(ca().cert.get()), pki::cert_pem(signer.cert.get()),
                       pki::private_key_pem(signer.key.get()).value().view(),
                       std::vector<OpensslOcspResponder::Entry>{{"5E01", "/CN=b.henb.example", false},
                                                                {"5E02", "/CN=b.henb.example", true}});
        const std::string started = server->start(1);
        ASSERT_EQ(started, "") << "openssl ocsp did not start";
        port = server->port();
        url = server->url();  // the certificates name the port it runs on
        henb = leaf_for("a.henb.example");
        good = leaf_for("b.henb.example", {url}, Bytes{0x5e, 0x01});
        revoked = leaf_for("b.henb.example", {url}, Bytes{0x5e, 0x02});
    }
    void stop_responder() { server->stop(); }
    void TearDown() override { server.reset(); }

    static std::shared_ptr<x509::OcspStapler> stapler() {
        x509::OcspStaplerConfig c;
        c.fetch_timeout_ms = 2000;
        auto s = std::make_shared<x509::OcspStapler>(c);
        s->start();  // as the daemon's runtime does
        return s;
    }

    // The H(e)NB requires the SeGW's response; the SeGW staples from `s`.  The harness clock
    // runs at the real time here: the responder's answers are valid for 10 minutes from now.
    std::unique_ptr<Pair> pair(const Leaf& segw, std::shared_ptr<x509::OcspStapler> s) {
        auto pa = base_peer(true), pb = base_peer(false);
        use_cert(pa, *henb, {}, store());
        use_cert(pb, segw, {}, store());
        pa.ocsp_stapling = OcspStapling::Require;
        pb.ocsp_stapler = std::move(s);
        auto p = std::make_unique<Pair>(pa, pb);
        p->clock = ManualClock(1000, static_cast<int64_t>(std::time(nullptr)));
        return p;
    }
};

}  // namespace

TEST_F(IkeOcspAia, GoodResponseFetchedInTheBackgroundIsStapled) {
    auto s = stapler();
    ASSERT_TRUE(s->add(good->certificate(), ca().certificate()).ok());  // URL from the AIA
    ASSERT_TRUE(s->wait_idle(15000));
    EXPECT_EQ(s->counters().get("x509.ocsp.staple_fetch_ok"), 1u) << s->last_error(good->certificate());
    stop_responder();  // the exchange uses what is cached: no look-up now
    auto p = pair(*good, s);
    EXPECT_TRUE(p->connect()) << why_failed(p->a);
    EXPECT_EQ(p->b.counter("ike.ocsp.staple_sent"), 1u);
    EXPECT_EQ(p->b.counter("ike.ocsp.staple_signer_delegated"), 1u);
    EXPECT_EQ(p->a.counter("ike.ocsp.staple_good"), 1u);
    EXPECT_EQ(s->counters().get("x509.ocsp.staple_fetch_ok"), 1u);
    EXPECT_EQ(s->counters().get("x509.ocsp.staple_fetch_failed"), 0u);
}

TEST_F(IkeOcspAia, RevokedAnswerStapledMakesThePeerRefuse) {
    auto s = stapler();
    ASSERT_TRUE(s->add(revoked->certificate(), ca().certificate()).ok());
    ASSERT_TRUE(s->wait_idle(15000));
    auto cached = s->current(revoked->certificate(), static_cast<int64_t>(std::time(nullptr)));
    ASSERT_TRUE(cached.has_value()) << s->last_error(revoked->certificate());
    EXPECT_EQ(cached->answer.status, x509::OcspStatus::Revoked);
    auto p = pair(*revoked, s);
    EXPECT_FALSE(p->connect());
    EXPECT_EQ(p->b.counter("ike.ocsp.staple_sent"), 1u);
    EXPECT_EQ(p->a.counter("ike.ocsp.staple_revoked"), 1u);
    EXPECT_EQ(failure_code(p->a), static_cast<int>(x509::VerifyFailure::Revoked)) << why_failed(p->a);
    EXPECT_NE(why_failed(p->a).find("revoked (stapled OCSP response"), std::string::npos) << why_failed(p->a);
    EXPECT_TRUE(p->a.engine->list_sas().empty());
    EXPECT_TRUE(p->b.engine->list_sas().empty());
}

// A responder that accepts the connection and never answers: the exchange goes on without a
// staple while the fetch is still running; the fetch then fails with a named error.
TEST_F(IkeOcspAia, SilentOrUnreachableResponderNeverHoldsTheExchange) {
    stop_responder();
    auto silent = std::make_unique<SilentListener>(static_cast<uint16_t>(port));  // the POST goes unanswered
    x509::OcspStaplerConfig c;
    c.fetch_timeout_ms = 8000;  // far longer than the exchange below takes
    auto s = std::make_shared<x509::OcspStapler>(c);
    s->start();
    ASSERT_TRUE(s->add(good->certificate(), ca().certificate()).ok());
    auto p = pair(*good, s);
    EXPECT_FALSE(p->connect());  // the H(e)NB requires a response; none is cached yet
    EXPECT_EQ(p->b.counter("ike.ocsp.staple_unavailable"), 1u);
    EXPECT_EQ(p->a.counter("ike.ocsp.staple_missing"), 1u);
    EXPECT_EQ(s->counters().get("x509.ocsp.staple_fetch_ok") + s->counters().get("x509.ocsp.staple_fetch_failed"),
              0u);  // still fetching while the exchange ran
    ASSERT_TRUE(s->wait_idle(20000));
    EXPECT_EQ(s->counters().get("x509.ocsp.staple_fetch_failed"), 1u);
    EXPECT_NE(s->last_error(good->certificate()).find(url), std::string::npos) << s->last_error(good->certificate());
    silent.reset();

    // Nothing listens now (connection refused): another failure, counted, same engines.
    x509::OcspStaplerConfig c2;
    c2.fetch_timeout_ms = 1000;
    auto s2 = std::make_shared<x509::OcspStapler>(c2);
    s2->start();
    ASSERT_TRUE(s2->add(good->certificate(), ca().certificate()).ok());
    ASSERT_TRUE(s2->wait_idle(20000));
    EXPECT_EQ(s2->counters().get("x509.ocsp.staple_fetch_failed"), 1u);
    EXPECT_FALSE(s2->current(good->certificate(), static_cast<int64_t>(std::time(nullptr))).has_value());
    EXPECT_NE(s2->last_error(good->certificate()).find("OCSP: " + url), std::string::npos)
        << s2->last_error(good->certificate());
    EXPECT_GE(x509::revocation_counters().get("x509.ocsp.staple_fetch_failed"), 2u);
}

// The schedule on a clock of its own (no thread): refetched after half the validity, not
// before; a failed refresh keeps the response while it is valid, then it is dropped.
TEST_F(IkeOcspAia, RefreshedBeforeNextUpdateAndKeptWhileARefreshFails) {
    const int64_t t0 = static_cast<int64_t>(std::time(nullptr));
    int64_t t = t0;
    x509::OcspStaplerConfig c;
    c.background = false;
    c.fetch_timeout_ms = 1000;
    c.retry_s = 30;
    c.max_skew_s = 0;
    c.unix_time = [&t] { return t; };
    x509::OcspStapler s(c);
    const auto cert = good->certificate();
    ASSERT_TRUE(s.add(cert, ca().certificate()).ok());
    s.poll();
    ASSERT_EQ(s.counters().get("x509.ocsp.staple_fetch_ok"), 1u) << s.last_error(cert);
    auto first = s.current(cert, t);
    ASSERT_TRUE(first.has_value());
    EXPECT_GT(first->valid_until, t0 + 500);  // -nmin 10

    t = t0 + 200;  // before halfway (~300 s): nothing to do
    s.poll();
    EXPECT_EQ(s.counters().get("x509.ocsp.staple_fetch_ok"), 1u);

    t = t0 + 360;  // past halfway: refreshed
    s.poll();
    EXPECT_EQ(s.counters().get("x509.ocsp.staple_fetch_ok"), 2u) << s.last_error(cert);
    EXPECT_EQ(s.counters().get("x509.ocsp.staple_refreshed"), 1u);

    stop_responder();
    t = t0 + 480;
    s.poll();  // fails: the cached response is still valid and kept
    EXPECT_EQ(s.counters().get("x509.ocsp.staple_fetch_failed"), 1u);
    EXPECT_EQ(s.counters().get("x509.ocsp.staple_kept"), 1u);
    EXPECT_TRUE(s.current(cert, t).has_value());

    t = first->valid_until + 120;  // past its nextUpdate, the responder still down
    s.poll();
    EXPECT_EQ(s.counters().get("x509.ocsp.staple_fetch_failed"), 2u);
    EXPECT_EQ(s.counters().get("x509.ocsp.staple_expired"), 1u);
    EXPECT_FALSE(s.current(cert, t).has_value());
    EXPECT_NE(s.last_error(cert).find(url), std::string::npos) << s.last_error(cert);
}
