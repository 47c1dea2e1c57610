// End-to-end scenarios on loopback through the demo world: real KDS (mutual TLS), real
// policy/agent, and the IKEv2 engine, ESP data plane and CMPv2 RA/CA when they are in the
// build (otherwise the test skips and says which module is missing).
#include <gtest/gtest.h>

#include <functional>
#include <cstdlib>
#include <filesystem>
#include <x2sec/common/file.hpp>
#include <x2sec/crypto/pkcs11.hpp>
#include <x2sec/scenario/demo.hpp>

using namespace x2sec;
using namespace x2sec::node;
using namespace x2sec::scenario;

namespace {

const CaseReport* find_case(const DemoReport& r, const std::string& id) {
    for (auto& c : r.cases)
        if (c.id == id) return &c;
    return nullptr;
}

bool any_step(const CaseReport& c, const std::string& text) {
    for (auto& s : c.steps)
        if (s.find(text) != std::string::npos) return true;
    return false;
}

std::string dump(const CaseReport& c) {
    std::string s = c.outcome + "\n";
    for (auto& st : c.steps) s += "  " + st + "\n";
    return s;
}

DemoReport run(const DemoOptions& o) {
    auto r = run_demo(o);
    EXPECT_TRUE(r.ok()) << (r.ok() ? "" : r.error().to_string());
    return r.ok() ? *r : DemoReport{};
}

// Runs only case `id`, with the options `tweak` sets (a fault, a configuration); the whole
// report is kept in `report` for the node status.  The returned case has an empty id when the
// demo did not run it (the test then fails on that).
CaseReport run_case(const std::string& id, const std::function<void(DemoOptions&)>& tweak = {},
                    DemoReport* report = nullptr) {
    DemoOptions o;
    o.cases = {id};
    if (tweak) tweak(o);
    DemoReport r = run(o);
    const CaseReport* c = find_case(r, id);
    EXPECT_NE(c, nullptr) << "case " << id << " missing from the report";
    CaseReport out = c ? *c : CaseReport{};
    if (report) *report = std::move(r);
    return out;
}

}  // namespace

TEST(Demo, IpsecOffCarriesPlainX2WithWarning) {
    DemoReport r;
    auto c = run_case("ipsec-off", {}, &r);
    ASSERT_EQ(c.id, "ipsec-off");
    EXPECT_TRUE(c.ok) << dump(c);
    EXPECT_EQ(c.x2_sent, 16u);
    EXPECT_EQ(c.x2_delivered_intact, 16u);
    EXPECT_TRUE(c.plaintext_on_wire);  // unprotected, as the policy says
    ASSERT_EQ(c.warnings.size(), 1u);
    EXPECT_NE(c.warnings[0].find("IPsec is OFF"), std::string::npos);
    EXPECT_EQ(c.phases.size(), 0u);
    EXPECT_NE(render_report(r).find("WARNING"), std::string::npos);
}

TEST(Demo, Scenario1SameCaWithCurrentCertificates) {
    auto c = run_case("scenario1");
    ASSERT_EQ(c.id, "scenario1");
    EXPECT_TRUE(c.ok) << dump(c);
    EXPECT_EQ(c.state_a, "UP");
    EXPECT_EQ(c.state_b, "UP");
    EXPECT_EQ(c.phases.count("cmp-enrolment"), 0u);
    EXPECT_EQ(c.phases.count("kds-fetch"), 0u);
    ASSERT_EQ(c.phases.count("ike"), 1u);
    EXPECT_GE(c.phases.at("ike").messages, 4u);  // IKE_SA_INIT + IKE_AUTH
    EXPECT_EQ(c.x2_delivered_intact, c.x2_sent);
    EXPECT_FALSE(c.plaintext_on_wire);
    EXPECT_NE(c.outcome.find("vendor certificate"), std::string::npos) << c.outcome;
}

TEST(Demo, Scenario2EnrolThenOperatorCertificates) {
    auto c = run_case("scenario2");
    ASSERT_EQ(c.id, "scenario2");
    EXPECT_TRUE(c.ok) << dump(c);
    ASSERT_EQ(c.phases.count("cmp-enrolment"), 1u) << dump(c);
    EXPECT_EQ(c.phases.at("cmp-enrolment").messages, 8u);  // ir/ip/certConf/pkiConf, two nodes
    EXPECT_TRUE(c.setup.entities.count("operator RA/CA (via SeGW)"));
    EXPECT_NE(c.outcome.find("operator certificate"), std::string::npos) << c.outcome;
    EXPECT_FALSE(c.plaintext_on_wire);
    EXPECT_EQ(c.x2_delivered_intact, c.x2_sent);
}

// `x2sec demo --keys pkcs11`: Scenario 2 with both H(e)NBs' vendor keys (ir protection, and
// IKE_AUTH until enrolled) and operator keys (generated at enrolment) in their SoftHSM2 tokens.
TEST(Demo, Scenario2WithBothHenbKeysInTokens) {
    if (::access("/usr/lib/softhsm/libsofthsm2.so", R_OK) != 0) GTEST_SKIP() << "softhsm2 not installed";
    char t[] = "/tmp/x2sec-demo-p11-XXXXXX";
    ASSERT_NE(mkdtemp(t), nullptr);
    const std::string dir = t;
    auto c = run_case("scenario2", [&](DemoOptions& o) {
        o.keys = DemoOptions::Keys::Pkcs11;
        o.workdir = dir;
        o.keep_workdir = true;
    });
    EXPECT_TRUE(c.ok) << dump(c);
    ASSERT_EQ(c.phases.count("cmp-enrolment"), 1u) << dump(c);
    EXPECT_NE(c.outcome.find("operator certificate"), std::string::npos) << c.outcome;
    EXPECT_EQ(c.x2_delivered_intact, c.x2_sent);
    for (const std::string& henb : {c.a, c.b}) {
        // The vendor key file holds the key's URI, and the token says the key never leaves.
        auto f = read_file(dir + "/" + henb + "-vendor.key");
        ASSERT_TRUE(f.ok()) << henb;
        const std::string vendor_uri(f->begin(), f->end());
        EXPECT_TRUE(crypto::is_pkcs11_uri(vendor_uri)) << vendor_uri;
        const std::string op_uri =
            "pkcs11:token=x2sec-" + henb + ";object=operator?pin-source=file:" + dir + "/token.pin";
        for (const std::string& u : {vendor_uri, op_uri}) {
            auto a = crypto::token_key_attributes(u);
            ASSERT_TRUE(a.ok()) << henb << ": " << a.error().detail();
            EXPECT_TRUE(a->sensitive);
            EXPECT_FALSE(a->extractable);
            EXPECT_FALSE(a->value_readable);
        }
    }
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
}

TEST(Demo, Solution2KdsKeyThenPsk) {
    auto c = run_case("solution2");
    ASSERT_EQ(c.id, "solution2");
    EXPECT_TRUE(c.ok) << dump(c);
    ASSERT_EQ(c.phases.count("kds-fetch"), 1u);
    EXPECT_EQ(c.phases.at("kds-fetch").messages, 4u);  // request + response, both nodes
    EXPECT_TRUE(c.setup.entities.count("KDS (via SeGW)"));
    EXPECT_NE(c.outcome.find("pairwise key"), std::string::npos) << c.outcome;
    EXPECT_EQ(c.x2_delivered_intact, c.x2_sent);
    EXPECT_FALSE(c.plaintext_on_wire);
}

// ---------------------------------------------------------------- negatives
TEST(Demo, PeerWithoutUsableCertificateAndNoCmpStaysDown) {
    auto c = run_case("scenario2", [](DemoOptions& o) { o.peer_without_cmp = true; });
    ASSERT_EQ(c.id, "scenario2");
    EXPECT_FALSE(c.ok);
    EXPECT_EQ(c.state_b, "DOWN");
    EXPECT_TRUE(any_step(c, "[henb-b1] DOWN: different CAs and this node does not support CMPv2")) << dump(c);
    EXPECT_FALSE(any_step(c, "[henb-b1] KDS")) << "no silent downgrade to a PSK";
    EXPECT_EQ(c.x2_sent, 0u);
}

TEST(Demo, KdsRefusesUnauthorisedPair) {
    auto c = run_case("solution2", [](DemoOptions& o) { o.kds_without_relation = true; });
    ASSERT_EQ(c.id, "solution2");
    EXPECT_FALSE(c.ok);
    EXPECT_TRUE(any_step(c, "UNAUTHORISED_PAIR")) << dump(c);
    EXPECT_EQ(c.state_a, "DOWN");
    EXPECT_EQ(c.x2_sent, 0u);
}

TEST(Demo, RaCaDownLeavesNeighbourDownWithBackoff) {
    DemoReport r;
    auto c = run_case(
        "scenario2", [](DemoOptions& o) { o.ra_down = true; }, &r);
    ASSERT_EQ(c.id, "scenario2");
    EXPECT_FALSE(c.ok);
    EXPECT_EQ(c.state_a, "DOWN");
    EXPECT_TRUE(any_step(c, "CMPv2 enrolment failed")) << dump(c);
    EXPECT_TRUE(any_step(c, "retry #1 in 1000 ms")) << dump(c);
    EXPECT_NE(r.node_status["henb-a1"].find("next retry"), std::string::npos) << r.node_status["henb-a1"];
}

TEST(Demo, VendorUnknownToRaRefused) {
    auto c = run_case("scenario2", [](DemoOptions& o) { o.vendor_b_unknown_to_ra = true; });
    ASSERT_EQ(c.id, "scenario2");
    EXPECT_FALSE(c.ok);
    EXPECT_EQ(c.state_b, "DOWN");
    EXPECT_TRUE(any_step(c, "[henb-b1] DOWN: CMPv2 enrolment failed")) << dump(c);
}

TEST(Demo, RevokedOperatorCertificateRefused) {
    auto c = run_case("scenario2", [](DemoOptions& o) { o.revoke_peer_operator_cert = true; });
    ASSERT_EQ(c.id, "scenario2");
    EXPECT_TRUE(any_step(c, "[operator] revoked henb-b1's operator certificate")) << dump(c);
    EXPECT_FALSE(c.ok) << dump(c);
    EXPECT_EQ(c.state_a, "DOWN");
    EXPECT_TRUE(any_step(c, "revoked")) << dump(c);
}

// ---------------------------------------------------------------- what the peer shows
// Scenario 2 with no configured hint about the neighbour's CA: henb-a1 learns from henb-b1's
// CERTREQ (IKE_SA_INIT response) that its vendor certificate would be rejected, stops before
// IKE_AUTH and enrols; henb-b1 learns from henb-a1's IKE_AUTH (CERTREQ, then the
// AUTHENTICATION_FAILED for its vendor certificate) and enrols too.
TEST(Demo, Scenario2WithoutHintsDecidesFromCertreq) {
    std::string toml = default_deployment_template();
    auto drop = [&](const std::string& after, const std::string& line) {
        auto at = toml.find(line, toml.find(after));
        ASSERT_NE(at, std::string::npos) << line;
        toml.erase(at, line.size());
    };
    drop("name = \"henb-b1\"\n  auth", "peer_anchor = \"vendor-b\"");    // henb-a1 -> henb-b1
    drop("name = \"henb-b1\"\nidentity", "peer_anchor = \"vendor-a\"");  // henb-b1 -> henb-a1
    auto c = run_case("scenario2", [&](DemoOptions& o) { o.config_override = toml; });
    ASSERT_EQ(c.id, "scenario2");
    EXPECT_TRUE(c.ok) << dump(c);
    EXPECT_NE(c.outcome.find("operator certificate"), std::string::npos) << c.outcome;
    // henb-a1 never sent IKE_AUTH with its vendor certificate: the CERTREQ settled it.
    EXPECT_TRUE(any_step(c, "[henb-a1] peer's CERTREQ names [")) << dump(c);
    EXPECT_TRUE(any_step(c, "IKE_AUTH not sent")) << dump(c);
    EXPECT_TRUE(any_step(c, "decided from the peer's CERTREQ")) << dump(c);
    EXPECT_FALSE(any_step(c, "[henb-a1] IKEv2 failed, peer's CA not trusted (peer answered")) << dump(c);
    // henb-b1 learnt henb-a1's CAs from its IKE_AUTH CERTREQ (engine's PeerCertReq) and
    // decided with them.
    EXPECT_TRUE(any_step(c, "[henb-b1] decide: peer's CERTREQ names the operator root")) << dump(c);
    ASSERT_EQ(c.phases.count("cmp-enrolment"), 1u) << dump(c);
    EXPECT_EQ(c.phases.at("cmp-enrolment").messages, 8u);  // both enrolled
    EXPECT_EQ(c.x2_delivered_intact, c.x2_sent);
    EXPECT_FALSE(c.plaintext_on_wire);
}
