// OCSP in IKEv2 (RFC 4806): the initiator (the H(e)NB, ocsp_stapling = request / require) sends
// a CERTREQ of encoding 14; the responder (the SeGW) answers with its OCSP response in a CERT
// payload of encoding 14, read from ocsp_staple_file; the initiator verifies it
// (x509::ocsp_verify_response) instead of fetching the CRL its revocation checker would use.
// The responses are signed here with OpenSSL's OCSP API by the CA that issued the SeGW's
// certificate.
#include <gtest/gtest.h>
#include <openssl/ocsp.h>
#include <cstdlib>

#include <filesystem>
#include <x2sec/common/file.hpp>
#include <x2sec/test/http_server.hpp>
#include <x2sec/x509/revocation.hpp>

#include "ikev2_harness.hpp"

using namespace x2sec;
using namespace x2sec::ike;
using namespace x2sec::test;

namespace {

constexpr int64_t kNow = 1'800'000'000;  // the harness clock's unix time

const TestCa& ca() {
    static TestCa c = make_root("Operator");
    return c;
}

Leaf leaf_with_cdp(const std::string& fqdn, const std::string& crl_url) {
    Leaf l;
    l.key = pki::generate_key(pki::KeyAlg::EcP256).value();
    auto n = name(fqdn, "x2sec test");
    pki::IssueRequest r;
    r.profile = pki::Profile::BaseStation;
    r.subject = n.get();
    r.public_key = l.key.get();
    r.dns = {fqdn};
    r.crl_urls = {crl_url};
    r.not_before = 1'700'000'000;
    r.not_after = 2'000'000'000;
    l.cert = pki::issue_certificate(r, ca().cert.get(), ca().key.get()).value();
    auto pem = pki::private_key_pem(l.key.get()).value();
    l.signer = std::make_shared<crypto::PrivateKey>(crypto::PrivateKey::from_pem(pem).value());
    return l;
}

// A DER OCSPResponse about `l` signed by the CA: status V_OCSP_CERTSTATUS_*.
Bytes ocsp_response(const Leaf& l, int status, int64_t this_update = kNow - 3600, int64_t next_update = kNow + 86400) {
    OCSP_CERTID* id = OCSP_cert_to_id(EVP_sha1(), l.cert.get(), ca().cert.get());
    OCSP_BASICRESP* bs = OCSP_BASICRESP_new();
    ASN1_TIME* tu = ASN1_TIME_set(nullptr, static_cast<time_t>(this_update));
    ASN1_TIME* nu = ASN1_TIME_set(nullptr, static_cast<time_t>(next_update));
    ASN1_TIME* rt = ASN1_TIME_set(nullptr, static_cast<time_t>(kNow - 7200));
    bool revoked = status == V_OCSP_CERTSTATUS_REVOKED;
    EXPECT_NE(OCSP_basic_add1_status(bs, id, status, revoked ? OCSP_REVOKED_STATUS_KEYCOMPROMISE : 0,
                                     revoked ? rt : nullptr, tu, nu),
              nullptr);
    EXPECT_EQ(OCSP_basic_sign(bs, ca().cert.get(), ca().key.get(), EVP_sha256(), nullptr, 0), 1);
    OCSP_RESPONSE* resp = OCSP_response_create(OCSP_RESPONSE_STATUS_SUCCESSFUL, bs);
    unsigned char* der = nullptr;
    int n = i2d_OCSP_RESPONSE(resp, &der);
    Bytes out(der, der + (n > 0 ? n : 0));
    OPENSSL_free(der);
    OCSP_RESPONSE_free(resp);
    OCSP_BASICRESP_free(bs);
    OCSP_CERTID_free(id);
    ASN1_TIME_free(tu);
    ASN1_TIME_free(nu);
    ASN1_TIME_free(rt);
    return out;
}

struct IkeOcspContent : ::testing::Test {
    HttpBodyServer http;  // the CRL server named by every certificate here
    Leaf henb = leaf_with_cdp("a.henb.example", http.url());
    Leaf segw = leaf_with_cdp("b.henb.example", http.url());  // base_peer ids
    std::shared_ptr<x509::RevocationChecker> checker;
    std::string dir;
    std::string staple_file;

    void SetUp() override {
        char tmpl[] = "/tmp/x2sec-ocsp-content-XXXXXX";
        ASSERT_NE(mkdtemp(tmpl), nullptr);
        dir = tmpl;
        staple_file = dir + "/segw-ocsp.der";
        http.set_body(Bytes{});  // no CRL: a fetch would fail (and be counted)
    }
    void TearDown() override { std::filesystem::remove_all(dir); }

    void staple(const Bytes& der) const { ASSERT_TRUE(write_file_atomic(staple_file, der).ok()); }

    // The H(e)NB checks the SeGW's revocation (CRL at its cRLDistributionPoint, hard policy)
    // unless a stapled response settles it; the SeGW checks nothing.
    std::unique_ptr<Pair> pair(OcspStapling mode, bool segw_staples = true) {
        x509::RevocationConfig c;
        c.max_wait_ms = 3000;
        c.fetch_timeout_ms = 2000;
        checker = std::make_shared<x509::RevocationChecker>(c);
        EXPECT_TRUE(checker->start().ok());
        auto checked = std::make_shared<x509::TrustStore>();
        checked->add_anchor(ca().certificate(), "operator");
        checked->set_revocation(checker);
        auto plain = std::make_shared<x509::TrustStore>();
        plain->add_anchor(ca().certificate(), "operator");
        auto pa = base_peer(true), pb = base_peer(false);
        use_cert(pa, henb, {}, checked);
        use_cert(pb, segw, {}, plain);
        pa.ocsp_stapling = mode;
        if (segw_staples) pb.ocsp_staple_file = staple_file;
        return std::make_unique<Pair>(pa, pb);
    }
    uint64_t crl(const std::string& n) const { return checker->counters().get(n); }
};

std::string why(const Node& n) {
    auto* f = n.find(Event::Kind::AuthFailed);
    return f ? f->detail : "";
}
int code(const Node& n) {
    auto* f = n.find(Event::Kind::AuthFailed);
    return f ? f->code : -1;
}

// The initiator refused the responder: nothing is left installed on either side.
void expect_refused_by_initiator(const Pair& p) {
    EXPECT_TRUE(p.a.engine->list_sas().empty());
    EXPECT_TRUE(p.a.backend.installed_spis().empty());
    EXPECT_EQ(p.a.counter("ike.auth.failed"), 1u);
}

}  // namespace

TEST_F(IkeOcspContent, GoodStapledResponseEstablishesWithoutAnyFetch) {
    staple(ocsp_response(segw, V_OCSP_CERTSTATUS_GOOD));
    auto p = pair(OcspStapling::Require);
    EXPECT_TRUE(p->connect()) << why(p->a);
    EXPECT_EQ(p->a.counter("ike.ocsp.staple_good"), 1u);
    EXPECT_EQ(p->b.counter("ike.ocsp.staple_sent"), 1u);
    EXPECT_EQ(http.requests(), 0u);  // no CRL (nor OCSP) fetch
    EXPECT_EQ(crl("x509.crl.fetch_failed"), 0u);
    EXPECT_EQ(crl("x509.crl.checked"), 0u);
}

TEST_F(IkeOcspContent, WithoutStaplingTheCrlIsFetchedAndItsAbsenceRefuses) {
    staple(ocsp_response(segw, V_OCSP_CERTSTATUS_GOOD));
    auto p = pair(OcspStapling::Off);  // no CERTREQ 14: the SeGW sends no response
    EXPECT_FALSE(p->connect());
    EXPECT_EQ(code(p->a), static_cast<int>(x509::VerifyFailure::CrlUnavailable)) << why(p->a);
    EXPECT_EQ(p->b.counter("ike.ocsp.staple_sent"), 0u);
    EXPECT_GE(http.requests(), 1u);
}

TEST_F(IkeOcspContent, RevokedStapledResponseFailsAuthentication) {
    staple(ocsp_response(segw, V_OCSP_CERTSTATUS_REVOKED));
    auto p = pair(OcspStapling::Request);
    EXPECT_FALSE(p->connect());
    EXPECT_EQ(code(p->a), static_cast<int>(x509::VerifyFailure::Revoked)) << why(p->a);
    EXPECT_NE(why(p->a).find("revoked (stapled OCSP response"), std::string::npos) << why(p->a);
    EXPECT_EQ(p->a.counter("ike.ocsp.staple_revoked"), 1u);
    expect_refused_by_initiator(*p);
    EXPECT_EQ(http.requests(), 0u);
}

TEST_F(IkeOcspContent, UnknownFallsBackToTheCrlUnderRequestAndIsRefusedUnderRequire) {
    staple(ocsp_response(segw, V_OCSP_CERTSTATUS_UNKNOWN));
    auto req = pair(OcspStapling::Request);
    EXPECT_FALSE(req->connect());  // the fallback CRL fetch finds no CRL (hard policy)
    EXPECT_EQ(code(req->a), static_cast<int>(x509::VerifyFailure::CrlUnavailable)) << why(req->a);
    EXPECT_EQ(req->a.counter("ike.ocsp.staple_unknown"), 1u);
    EXPECT_GE(http.requests(), 1u);
    EXPECT_EQ(crl("x509.crl.unavailable"), 1u);

    const uint64_t fetched = http.requests();
    auto strict = pair(OcspStapling::Require);
    EXPECT_FALSE(strict->connect());
    EXPECT_EQ(code(strict->a), static_cast<int>(x509::VerifyFailure::CrlUnavailable)) << why(strict->a);
    EXPECT_NE(why(strict->a).find("'unknown' (ocsp_stapling = require)"), std::string::npos) << why(strict->a);
    EXPECT_EQ(http.requests(), fetched);  // no fallback fetch
    expect_refused_by_initiator(*strict);
}

TEST_F(IkeOcspContent, MissingResponseWhenRequiredIsRefused) {
    auto p = pair(OcspStapling::Require, false);  // the SeGW has no response (no file, no AIA URL)
    EXPECT_FALSE(p->connect());
    EXPECT_EQ(p->b.counter("ike.ocsp.staple_unavailable"), 1u);
    EXPECT_EQ(p->a.counter("ike.ocsp.staple_missing"), 1u);
    EXPECT_NE(why(p->a).find("peer sent no OCSP response (CERT encoding 14) (ocsp_stapling = require)"),
              std::string::npos)
        << why(p->a);
    expect_refused_by_initiator(*p);
}

TEST_F(IkeOcspContent, GarbageOrStaleResponseIsRefusedAndTheEngineCarriesOn) {
    // A file that is no OCSPResponse: the SeGW cannot tell who signed it, so it does not send it
    // (the receiver's handling of garbage on the wire: IkeOcspStaple.GarbageOnTheWireIsRefused).
    staple(Bytes{0x30, 0x03, 0x0a, 0x01, 0x00, 0xde, 0xad});
    auto p = pair(OcspStapling::Request);
    EXPECT_FALSE(p->connect());  // no staple: the CRL check runs and finds no CRL
    EXPECT_EQ(p->b.counter("ike.ocsp.staple_signer_unknown"), 1u);
    EXPECT_EQ(p->b.counter("ike.ocsp.staple_sent"), 0u);
    EXPECT_EQ(code(p->a), static_cast<int>(x509::VerifyFailure::CrlUnavailable)) << why(p->a);
    expect_refused_by_initiator(*p);

    staple(ocsp_response(segw, V_OCSP_CERTSTATUS_GOOD, kNow - 2 * 86400, kNow - 86400));  // expired
    EXPECT_FALSE(p->connect());
    EXPECT_EQ(p->a.counter("ike.ocsp.staple_invalid"), 1u);

    staple(ocsp_response(henb, V_OCSP_CERTSTATUS_GOOD));  // about another certificate
    EXPECT_FALSE(p->connect());
    EXPECT_EQ(p->a.counter("ike.ocsp.staple_invalid"), 2u);

    staple(ocsp_response(segw, V_OCSP_CERTSTATUS_GOOD));  // the same engines, now a good response
    EXPECT_TRUE(p->connect()) << why(p->a);
    EXPECT_EQ(p->a.counter("ike.ocsp.staple_good"), 1u);
}

// The other direction: the SeGW (responder, ocsp_stapling = require) asks in its IKE_SA_INIT
// CERTREQ; the H(e)NB staples its response in the IKE_AUTH request.
TEST_F(IkeOcspContent, ResponderAsksInIkeSaInitAndTheInitiatorStaples) {
    x509::RevocationConfig c;
    checker = std::make_shared<x509::RevocationChecker>(c);
    ASSERT_TRUE(checker->start().ok());
    auto checked = std::make_shared<x509::TrustStore>();
    checked->add_anchor(ca().certificate(), "operator");
    checked->set_revocation(checker);
    auto plain = std::make_shared<x509::TrustStore>();
    plain->add_anchor(ca().certificate(), "operator");
    auto make = [&](const Bytes& henb_staple) {
        staple(henb_staple);
        auto pa = base_peer(true), pb = base_peer(false);
        use_cert(pa, henb, {}, plain);
        use_cert(pb, segw, {}, checked);
        pa.ocsp_staple_file = staple_file;
        pb.ocsp_stapling = OcspStapling::Require;
        return std::make_unique<Pair>(pa, pb);
    };
    auto good = make(ocsp_response(henb, V_OCSP_CERTSTATUS_GOOD));
    EXPECT_TRUE(good->connect()) << why(good->b);
    EXPECT_EQ(good->a.counter("ike.ocsp.staple_sent"), 1u);
    EXPECT_EQ(good->b.counter("ike.ocsp.staple_good"), 1u);
    EXPECT_EQ(http.requests(), 0u);

    auto revoked = make(ocsp_response(henb, V_OCSP_CERTSTATUS_REVOKED));
    EXPECT_FALSE(revoked->connect());
    EXPECT_EQ(code(revoked->b), static_cast<int>(x509::VerifyFailure::Revoked)) << why(revoked->b);
    EXPECT_EQ(revoked->b.counter("ike.ocsp.staple_revoked"), 1u);
    expect_refused_by_responder(*revoked);
}
