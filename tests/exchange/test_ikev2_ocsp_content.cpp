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
#include <x2sec/test/ocsp.hpp>
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

// A DER OCSPResponse about `l` signed by the CA: status V_OCSP_CERTSTATUS_*.
Bytes ocsp_response(const Leaf& l, int status, int64_t this_update = kNow - 3600, int64_t next_update = kNow + 86400) {
    Bytes der = make_ocsp_response(l.cert.get(), ca().cert.get(), status, ca().cert.get(), ca().key.get(), this_update,
                                   next_update, kNow - 7200);
    EXPECT_FALSE(der.empty()) << "signing the OCSP response";
    return der;
}

struct IkeOcspContent : ::testing::Test {
    HttpBodyServer http;  // the CRL server named by every certificate here
    Leaf henb = make_leaf_with_cdp(ca(), "a.henb.example", http.url());
    Leaf segw = make_leaf_with_cdp(ca(), "b.henb.example", http.url());  // base_peer ids
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
    EXPECT_TRUE(p->connect()) << why_failed(p->a);
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
    EXPECT_EQ(failure_code(p->a), static_cast<int>(x509::VerifyFailure::CrlUnavailable)) << why_failed(p->a);
    EXPECT_EQ(p->b.counter("ike.ocsp.staple_sent"), 0u);
    EXPECT_GE(http.requests(), 1u);
}

TEST_F(IkeOcspContent, RevokedStapledResponseFailsAuthentication) {
    staple(ocsp_response(segw, V_OCSP_CERTSTATUS_REVOKED));
    auto p = pair(OcspStapling::Request);
    EXPECT_FALSE(p->connect());
    EXPECT_EQ(failure_code(p->a), static_cast<int>(x509::VerifyFailure::Revoked)) << why_failed(p->a);
    EXPECT_NE(why_failed(p->a).find("revoked (stapled OCSP response"), std::string::npos) << why_failed(p->a);
    EXPECT_EQ(p->a.counter("ike.ocsp.staple_revoked"), 1u);
    expect_refused_by_initiator(*p);
    EXPECT_EQ(http.requests(), 0u);
}

TEST_F(IkeOcspContent, UnknownFallsBackToTheCrlUnderRequestAndIsRefusedUnderRequire) {
    staple(ocsp_response(segw, V_OCSP_CERTSTATUS_UNKNOWN));
    auto req = pair(OcspStapling::Request);
    EXPECT_FALSE(req->connect());  // the fallback CRL fetch finds no CRL (hard policy)
    EXPECT_EQ(failure_code(req->a), static_cast<int>(x509::VerifyFailure::CrlUnavailable)) << why_failed(req->a);
    EXPECT_EQ(req->a.counter("ike.ocsp.staple_unknown"), 1u);
    EXPECT_GE(http.requests(), 1u);
    EXPECT_EQ(crl("x509.crl.unavailable"), 1u);

    const uint64_t fetched = http.requests();
    auto strict = pair(OcspStapling::Require);
    EXPECT_FALSE(strict->connect());
    EXPECT_EQ(failure_code(strict->a), static_cast<int>(x509::VerifyFailure::CrlUnavailable)) << why_failed(strict->a);
    EXPECT_NE(why_failed(strict->a).find("'unknown' (ocsp_stapling = require)"), std::string::npos)
        << why_failed(strict->a);
    EXPECT_EQ(http.requests(), fetched);  // no fallback fetch
    expect_refused_by_initiator(*strict);
}

TEST_F(IkeOcspContent, MissingResponseWhenRequiredIsRefused) {
    auto p = pair(OcspStapling::Require, false);  // the SeGW has no response (no file, no AIA URL)
    EXPECT_FALSE(p->connect());
    EXPECT_EQ(p->b.counter("ike.ocsp.staple_unavailable"), 1u);
    EXPECT_EQ(p->a.counter("ike.ocsp.staple_missing"), 1u);
    EXPECT_NE(why_failed(p->a).find("peer sent no OCSP response (CERT encoding 14) (ocsp_stapling = require)"),
              std::string::npos)
        << why_failed(p->a);
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
    EXPECT_EQ(failure_code(p->a), static_cast<int>(x509::VerifyFailure::CrlUnavailable)) << why_failed(p->a);
    expect_refused_by_initiator(*p);

    staple(ocsp_response(segw, V_OCSP_CERTSTATUS_GOOD, kNow - 2 * 86400, kNow - 86400));  // expired
    EXPECT_FALSE(p->connect());
    EXPECT_EQ(p->a.counter("ike.ocsp.staple_invalid"), 1u);

    staple(ocsp_response(henb, V_OCSP_CERTSTATUS_GOOD));  // about another certificate
    EXPECT_FALSE(p->connect());
    EXPECT_EQ(p->a.counter("ike.ocsp.staple_invalid"), 2u);

    staple(ocsp_response(segw, V_OCSP_CERTSTATUS_GOOD));  // the same engines, now a good response
    EXPECT_TRUE(p->connect()) << why_failed(p->a);
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
    EXPECT_TRUE(good->connect()) << why_failed(good->b);
    EXPECT_EQ(good->a.counter("ike.ocsp.staple_sent"), 1u);
    EXPECT_EQ(good->b.counter("ike.ocsp.staple_good"), 1u);
    EXPECT_EQ(http.requests(), 0u);

    auto revoked = make(ocsp_response(henb, V_OCSP_CERTSTATUS_REVOKED));
    EXPECT_FALSE(revoked->connect());
    EXPECT_EQ(failure_code(revoked->b), static_cast<int>(x509::VerifyFailure::Revoked)) << why_failed(revoked->b);
    EXPECT_EQ(revoked->b.counter("ike.ocsp.staple_revoked"), 1u);
    expect_refused_by_responder(*revoked);
}
