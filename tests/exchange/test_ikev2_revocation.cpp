// Revocation in IKE_AUTH (the "revoked" and "valid" H(e)NB certificates name the same identity,
// as an old and a re-issued certificate would): the responder's TrustStore asks an x509::RevocationChecker, which
// fetches the CRL named by the initiator's certificate (cRLDistributionPoints) from a local
// HTTP server on 127.0.0.1.  A revoked certificate is refused with AUTHENTICATION_FAILED and
// counted; a valid one of the same CA is accepted; stale and unreachable CRLs follow the policy.
#include <gtest/gtest.h>

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

Bytes crl_der(const std::vector<const Leaf*>& revoked, int64_t this_update = kNow - 3600,
              int64_t next_update = kNow + 86400) {
    std::vector<pki::Revoked> rv;
    for (const Leaf* l : revoked) {
        pki::Revoked r;
        r.serial = pki::serial_bytes(X509_get0_serialNumber(l->cert.get()));
        r.time = kNow - 7200;
        r.reason = 1;  // keyCompromise
        rv.push_back(r);
    }
    static int64_t number = 1;
    auto crl = pki::issue_crl(ca().cert.get(), ca().key.get(), rv, number++, this_update, next_update).value();
    return pki::crl_der(crl.get());
}

struct IkeRevocation : ::testing::Test {
    HttpBodyServer http;
    Leaf revoked = make_leaf_with_cdp(ca(), "a.henb.example", http.url());
    Leaf valid = make_leaf_with_cdp(ca(), "a.henb.example", http.url());
    Leaf segw = make_leaf_with_cdp(ca(), "b.henb.example", http.url());
    std::shared_ptr<x509::RevocationChecker> checker;

    std::shared_ptr<x509::TrustStore> trust(x509::CrlPolicy policy = x509::CrlPolicy::Hard) {
        x509::RevocationConfig c;
        c.policy = policy;
        c.max_wait_ms = 3000;
        c.fetch_timeout_ms = 2000;
        checker = std::make_shared<x509::RevocationChecker>(c);
        EXPECT_TRUE(checker->start().ok());
        auto t = std::make_shared<x509::TrustStore>();
        t->add_anchor(ca().certificate(), "operator");
        t->set_revocation(checker);
        return t;
    }
    // The H(e)NB (initiator, with `henb`) against the SeGW (responder) that checks revocation;
    // the H(e)NB trusts the CA without revocation checking.
    std::unique_ptr<Pair> pair(const Leaf& henb, std::shared_ptr<x509::TrustStore> segw_trust) {
        auto plain = std::make_shared<x509::TrustStore>();
        plain->add_anchor(ca().certificate(), "operator");
        auto pa = base_peer(true), pb = base_peer(false);
        use_cert(pa, henb, {}, plain);
        use_cert(pb, segw, {}, std::move(segw_trust));
        return std::make_unique<Pair>(pa, pb);
    }
    uint64_t counter(const std::string& n) const { return checker->counters().get(n); }
};

}  // namespace

TEST_F(IkeRevocation, RevokedPeerFailsAuthValidPeerOfTheSameCaSucceeds) {
    http.set_body(crl_der({&revoked}));
    auto t = trust();
    auto bad = pair(revoked, t);
    EXPECT_FALSE(bad->connect());
    EXPECT_EQ(failure_code(bad->b), static_cast<int>(x509::VerifyFailure::Revoked)) << why_failed(bad->b);
    EXPECT_NE(why_failed(bad->b).find("serial " + revoked.certificate().serial_hex() + ") revoked at"),
              std::string::npos)
        << why_failed(bad->b);
    expect_refused_by_responder(*bad);  // the initiator was sent AUTHENTICATION_FAILED
    EXPECT_EQ(counter("x509.crl.revoked_peer"), 1u);

    auto good = pair(valid, t);
    EXPECT_TRUE(good->connect()) << why_failed(good->b);
    EXPECT_EQ(counter("x509.crl.checked"), 1u);
    EXPECT_EQ(counter("x509.crl.fetch_ok"), 1u);  // one fetch served both authentications
}

TEST_F(IkeRevocation, CertificateRevokedLaterIsRefusedAfterTheCrlReload) {
    http.set_body(crl_der({}));
    auto t = trust();
    auto before = pair(revoked, t);
    ASSERT_TRUE(before->connect()) << why_failed(before->b);
    http.set_body(crl_der({&revoked}));   // the CA revokes it
    ASSERT_TRUE(checker->reload().ok());  // SIGHUP / reload-crls
    ASSERT_TRUE(checker->wait_idle(5000));
    auto after = pair(revoked, t);
    EXPECT_FALSE(after->connect());
    EXPECT_EQ(failure_code(after->b), static_cast<int>(x509::VerifyFailure::Revoked)) << why_failed(after->b);
    expect_refused_by_responder(*after);
    auto other = pair(valid, t);
    EXPECT_TRUE(other->connect()) << why_failed(other->b);
}

TEST_F(IkeRevocation, StaleCrlHardPolicyRefusesSoftPolicyAccepts) {
    http.set_body(crl_der({}, kNow - 2 * 86400, kNow - 86400));
    auto hard = pair(valid, trust(x509::CrlPolicy::Hard));
    EXPECT_FALSE(hard->connect());
    EXPECT_EQ(failure_code(hard->b), static_cast<int>(x509::VerifyFailure::CrlUnavailable)) << why_failed(hard->b);
    EXPECT_NE(why_failed(hard->b).find("stale"), std::string::npos) << why_failed(hard->b);
    expect_refused_by_responder(*hard);
    EXPECT_EQ(counter("x509.crl.stale"), 1u);

    auto soft = pair(valid, trust(x509::CrlPolicy::Soft));
    EXPECT_TRUE(soft->connect()) << why_failed(soft->b);
    EXPECT_EQ(counter("x509.crl.stale"), 1u);
    EXPECT_EQ(counter("x509.crl.soft_accepted"), 1u);
}

TEST_F(IkeRevocation, UnreachableCrlHardPolicyRefusesSoftPolicyAccepts) {
    Leaf far = make_leaf_with_cdp(ca(), "a.henb.example", HttpBodyServer::unreachable_url());
    auto hard = pair(far, trust(x509::CrlPolicy::Hard));
    EXPECT_FALSE(hard->connect());
    EXPECT_EQ(failure_code(hard->b), static_cast<int>(x509::VerifyFailure::CrlUnavailable)) << why_failed(hard->b);
    expect_refused_by_responder(*hard);
    // The refusal may come from the bounded wait (max_wait_ms) before the fetch itself has given
    // up (fetch_timeout_ms, later on a loaded machine): the fetch's counter is read once it has.
    ASSERT_TRUE(checker->wait_idle(10000));
    EXPECT_EQ(counter("x509.crl.fetch_failed"), 1u);
    EXPECT_EQ(counter("x509.crl.unavailable"), 1u);

    auto soft = pair(far, trust(x509::CrlPolicy::Soft));
    EXPECT_TRUE(soft->connect()) << why_failed(soft->b);
    EXPECT_EQ(counter("x509.crl.soft_accepted"), 1u);
}
