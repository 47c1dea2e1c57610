// The node agent driven with fake operations on a manual clock: ordering (backhaul first),
// re-decision after an untrusted-CA failure, RA/CA down with back-off, KDS refusal, no silent
// downgrade.
#include <gtest/gtest.h>

#include <algorithm>

#include <x2sec/node/agent.hpp>

using namespace x2sec;
using namespace x2sec::node;

namespace {

const char* kConfig = R"(
[[anchor]]
label = "vendor-a"
file = "a.pem"
[[anchor]]
label = "vendor-b"
file = "b.pem"
[[anchor]]
label = "operator"
file = "op.pem"
[segw]
address = "127.0.0.1:4500"
identity = "segw.operator.example"
[cmp]
url = "http://127.0.0.1:8829/.well-known/cmp/p/henb"
[kds]
address = "127.0.0.1:7443"
identity = "kds.operator.example"
[backoff]
initial_ms = 1000
max_ms = 8000

[[henb]]
name = "a1"
identity = "0023a1000001.henb.vendor-a.example"
address = "127.0.0.1:5101"
certificate_anchor = "vendor-a"
trust_anchors = ["vendor-a", "operator"]
cmp = true
  [[henb.neighbour]]
  name = "a2"
  [[henb.neighbour]]
  name = "b1"
  [[henb.neighbour]]
  name = "b2"
  auth = "psk-from-network"
  [[henb.neighbour]]
  name = "lab"
  identity = "0023a1000009.henb.vendor-a.example"
  address = "127.0.0.1:5109"
  ipsec = "off"

[[henb]]
name = "a2"
identity = "0023a1000002.henb.vendor-a.example"
address = "127.0.0.1:5102"
certificate_anchor = "vendor-a"
trust_anchors = ["vendor-a"]
[[henb]]
name = "b1"
identity = "0023b2000001.henb.vendor-b.example"
address = "127.0.0.1:5201"
certificate_anchor = "vendor-b"
trust_anchors = ["vendor-b", "operator"]
[[henb]]
name = "b2"
identity = "0023b2000002.henb.vendor-b.example"
address = "127.0.0.1:5202"
certificate_anchor = "vendor-b"
trust_anchors = ["vendor-b"]
)";

struct Fakes {
    int backhaul_calls = 0, enrol_calls = 0, kds_calls = 0, ike_calls = 0;
    bool backhaul_ok = true, enrol_ok = true, kds_ok = true;
    // When set: b1's IKE_SA_INIT response carries a CERTREQ naming these anchors; an attempt
    // with a credential chaining to none of them stops before IKE_AUTH (what
    // glue::CertreqGuard does with the real engine).
    std::optional<std::vector<std::string>> b1_certreq;
    std::vector<std::string> order;
    Operations ops() {
        Operations o;
        o.backhaul = [this](const policy::HenbConfig&) -> Result<PhaseRecord> {
            ++backhaul_calls;
            order.push_back("backhaul");
            if (!backhaul_ok) return Error(ErrorDomain::Io, 0, "SeGW not answering");
            return PhaseRecord{"backhaul", true, "IKE SA with SeGW", {}};
        };
        o.enrol = [this](const policy::HenbConfig&) -> Result<PhaseRecord> {
            ++enrol_calls;
            order.push_back("enrol");
            if (!enrol_ok) return Error(ErrorDomain::Io, 111, "connection refused by RA/CA");
            return PhaseRecord{"cmp-enrolment", true, "CN=operator cert", {}};
        };
        o.fetch_key = [this](const policy::HenbConfig&, const policy::NeighbourConfig&, SecureBytes& key,
                             std::string& id) -> Result<PhaseRecord> {
            ++kds_calls;
            order.push_back("kds");
            if (!kds_ok) return Error(ErrorDomain::Kds, 4, "UNAUTHORISED_PAIR: not neighbours");
            key = SecureBytes(Bytes(32, 7));
            id = "00ff";
            return PhaseRecord{"kds-fetch", true, "gen 1", {}};
        };
        o.ike = [this](const policy::HenbConfig&, const policy::NeighbourConfig& n, Credential c,
                       const SecureBytes& psk, IkeFailure& f) -> Result<PhaseRecord> {
            ++ike_calls;
            order.push_back("ike:" + n.name + ":" + to_string(c));
            if (n.name == "b1" && b1_certreq) {
                f.certreq_anchors = b1_certreq;
                std::string mine = c == Credential::OperatorCertificate ? "operator" : "vendor-a";
                if (std::find(b1_certreq->begin(), b1_certreq->end(), mine) == b1_certreq->end()) {
                    f.aborted_on_certreq = true;
                    return Error(ErrorDomain::Ike, 0, "the peer's CERTREQ does not name '" + mine + "'");
                }
            }
            if (n.name == "b1" && c == Credential::VendorCertificate) {
                f.untrusted_ca = true;
                return Error(ErrorDomain::Ike, 24, "AUTHENTICATION_FAILED: untrusted CA");
            }
            if (c == Credential::PairwiseKey && psk.size() != 32) return Error(ErrorDomain::Ike, 24, "no key");
            return PhaseRecord{"ike", true, std::string("IKE SA up with ") + to_string(c), {}};
        };
        return o;
    }
};

policy::DeploymentConfig cfg() {
    auto r = policy::parse_config(kConfig, "agent.toml", "/tmp");
    EXPECT_TRUE(r.ok()) << r.error().detail();
    return *r;
}

}  // namespace

TEST(Agent, EveryCaseFromOneRun) {
    Fakes f;
    Agent a(cfg(), "a1", f.ops());
    a.run(0);
    // same CA -> vendor certificates
    EXPECT_EQ(a.neighbour("a2")->state, LinkState::Up);
    EXPECT_EQ(a.neighbour("a2")->credential, Credential::VendorCertificate);
    // different CA discovered by AUTHENTICATION_FAILED -> enrol -> operator certificates
    auto* b1 = a.neighbour("b1");
    EXPECT_EQ(b1->state, LinkState::Up) << a.status_text();
    EXPECT_EQ(b1->credential, Credential::OperatorCertificate);
    EXPECT_TRUE(b1->observed_untrusted_ca);
    EXPECT_TRUE(a.holds_operator_cert());
    // Solution 2: KDS then PSK, key wiped after the SA is up
    auto* b2 = a.neighbour("b2");
    EXPECT_EQ(b2->state, LinkState::Up);
    EXPECT_EQ(b2->credential, Credential::PairwiseKey);
    EXPECT_TRUE(b2->psk.empty());
    // IPsec off -> plain X2 with a warning
    auto* lab = a.neighbour("lab");
    EXPECT_EQ(lab->state, LinkState::PlainX2);
    ASSERT_TRUE(lab->decision.warning.has_value());
    // Backhaul came first, exactly once, before the enrolment and the KDS fetch.
    EXPECT_EQ(f.backhaul_calls, 1);
    ASSERT_GE(f.order.size(), 3u);
    EXPECT_EQ(f.order[0], "ike:a2:vendor certificate");
    EXPECT_EQ(f.order[1], "ike:b1:vendor certificate");
    EXPECT_EQ(f.order[2], "backhaul");
    EXPECT_EQ(f.order[3], "enrol");
    EXPECT_EQ(f.order[4], "ike:b1:operator certificate");
    EXPECT_NE(a.status_text().find("WARNING: IPsec is OFF"), std::string::npos);
    EXPECT_NE(a.status_json().find("\"state\": \"UP\""), std::string::npos);
}

TEST(Agent, RaCaDownLeavesNeighbourDownWithBackoff) {
    Fakes f;
    f.enrol_ok = false;
    Agent a(cfg(), "a1", f.ops());
    a.run(0);
    auto* b1 = a.neighbour("b1");
    EXPECT_EQ(b1->state, LinkState::Down);
    EXPECT_NE(b1->reason.find("CMPv2 enrolment failed"), std::string::npos);
    EXPECT_NE(b1->reason.find("connection refused"), std::string::npos);
    EXPECT_EQ(b1->attempts, 1u);
    ASSERT_TRUE(b1->next_retry_at.has_value());
    EXPECT_EQ(*b1->next_retry_at, 1000);
    // No silent downgrade: no PSK, no plain X2 for b1.
    EXPECT_EQ(f.kds_calls, 1);  // only b2's own psk-from-network
    // Not due yet: nothing happens.
    a.run(500);
    EXPECT_EQ(f.enrol_calls, 1);
    a.run(1000);
    EXPECT_EQ(f.enrol_calls, 2);
    EXPECT_EQ(*b1->next_retry_at, 1000 + 2000);
    a.run(3000);
    EXPECT_EQ(*b1->next_retry_at, 3000 + 4000);
    a.run(7000);
    EXPECT_EQ(*b1->next_retry_at, 7000 + 8000);
    a.run(15000);
    EXPECT_EQ(*b1->next_retry_at, 15000 + 8000);  // capped
    EXPECT_EQ(b1->attempts, 5u);
    // RA/CA back: the next retry brings it up and resets the back-off.
    f.enrol_ok = true;
    a.run(23000);
    EXPECT_EQ(b1->state, LinkState::Up);
    EXPECT_EQ(b1->attempts, 0u);
    EXPECT_FALSE(b1->next_retry_at.has_value());
}

TEST(Agent, NoEnrolmentOrKeyFetchWithoutBackhaul) {
    Fakes f;
    f.backhaul_ok = false;
    Agent a(cfg(), "a1", f.ops());
    a.run(0);
    EXPECT_EQ(f.enrol_calls, 0);
    EXPECT_EQ(f.kds_calls, 0);
    EXPECT_EQ(a.neighbour("b1")->state, LinkState::Down);
    EXPECT_NE(a.neighbour("b1")->reason.find("RA/CA unreachable"), std::string::npos);
    EXPECT_NE(a.neighbour("b2")->reason.find("KDS unreachable"), std::string::npos);
    EXPECT_EQ(a.neighbour("a2")->state, LinkState::Up);  // same CA needs no operator entity
    EXPECT_NE(a.status_text().find("backhaul: DOWN"), std::string::npos);
}

TEST(Agent, KdsRefusalKeepsNeighbourDown) {
    Fakes f;
    f.kds_ok = false;
    Agent a(cfg(), "a1", f.ops());
    a.run(0);
    auto* b2 = a.neighbour("b2");
    EXPECT_EQ(b2->state, LinkState::Down);
    EXPECT_NE(b2->reason.find("UNAUTHORISED_PAIR"), std::string::npos);
    EXPECT_EQ(f.ike_calls, 3);  // a2, b1 twice; never b2 without a key
}

TEST(Agent, PeerWithoutUsableCertificateAndNoCmpIsDown) {
    // b2's own agent: vendor-b, no CMP, neighbour a1 (vendor-a) with auth = certificate.
    auto c = cfg();
    auto* b2 = const_cast<policy::HenbConfig*>(c.henb("b2"));
    policy::NeighbourConfig n;
    n.name = "a1";
    n.identity = c.henb("a1")->identity;
    n.address = c.henb("a1")->address;
    n.auth = policy::AuthMode::Certificate;
    n.peer_anchor = "vendor-a";
    b2->neighbours.push_back(n);
    Fakes f;
    Agent a(c, "b2", f.ops());
    a.run(0);
    auto* s = a.neighbour("a1");
    EXPECT_EQ(s->state, LinkState::Down);
    EXPECT_NE(s->reason.find("does not support CMPv2"), std::string::npos) << s->reason;
    EXPECT_EQ(f.ike_calls, 0);
    EXPECT_EQ(f.enrol_calls, 0);
}

// ---------------------------------------------------------------- what the peer shows
namespace {
bool has_step(const NeighbourStatus& n, const std::string& text, size_t* at = nullptr) {
    for (size_t i = 0; i < n.steps.size(); ++i)
        if (n.steps[i].text.find(text) != std::string::npos) {
            if (at) *at = i;
            return true;
        }
    return false;
}

// a2 (vendor-a, no CMPv2) with b1 (vendor-b) as a certificate neighbour and no hint.
policy::DeploymentConfig without_cmp() {
    auto c = cfg();
    auto* a2 = const_cast<policy::HenbConfig*>(c.henb("a2"));
    policy::NeighbourConfig n;
    n.name = "b1";
    n.identity = c.henb("b1")->identity;
    n.address = c.henb("b1")->address;
    n.auth = policy::AuthMode::Certificate;
    a2->neighbours.push_back(n);
    return c;
}
}  // namespace

TEST(Agent, CertreqWithoutOurAnchorEnrolsBeforeAnyIkeAuth) {
    Fakes f;
    f.b1_certreq = std::vector<std::string>{"unknown:0badc0de", "operator"};
    Agent a(cfg(), "a1", f.ops());
    a.run(0);
    auto* b1 = a.neighbour("b1");
    EXPECT_EQ(b1->state, LinkState::Up) << a.status_text();
    EXPECT_EQ(b1->credential, Credential::OperatorCertificate);
    EXPECT_FALSE(b1->observed_untrusted_ca);  // no AUTHENTICATION_FAILED was needed
    ASSERT_TRUE(b1->observed_certreq.has_value());
    size_t stopped = 0, enrolling = 0;
    ASSERT_TRUE(has_step(*b1, "IKE_AUTH not sent", &stopped)) << a.status_text();
    ASSERT_TRUE(has_step(*b1, "CMPv2: enrolling", &enrolling)) << a.status_text();
    EXPECT_LT(stopped, enrolling);
    EXPECT_TRUE(has_step(*b1, "names the operator root 'operator'")) << a.status_text();
    EXPECT_TRUE(has_step(*b1, "decided from the peer's CERTREQ")) << a.status_text();
    EXPECT_FALSE(has_step(*b1, "peer's CA not trusted")) << a.status_text();
    // The vendor attempt stopped after IKE_SA_INIT; the next one used the operator certificate.
    auto it = std::find(f.order.begin(), f.order.end(), "ike:b1:vendor certificate");
    ASSERT_NE(it, f.order.end());
    EXPECT_EQ(*(it + 1), "backhaul");
    EXPECT_EQ(*(it + 2), "enrol");
    EXPECT_EQ(*(it + 3), "ike:b1:operator certificate");
    EXPECT_NE(a.status_text().find("IKE_AUTH not sent"), std::string::npos);
}

TEST(Agent, CertreqNamingNoneOfOurAnchorsIsDownNotEnrolment) {
    // The peer trusts neither vendor-a nor the operator root: enrolling would not help either.
    Fakes f;
    f.b1_certreq = std::vector<std::string>{"unknown:0badc0de"};
    auto c = cfg();
    const_cast<policy::HenbConfig*>(c.henb("a1"))->neighbours[1].auth = policy::AuthMode::Certificate;
    Agent a(c, "a1", f.ops());
    a.run(0);
    auto* b1 = a.neighbour("b1");
    EXPECT_EQ(b1->state, LinkState::Down);
    EXPECT_NE(b1->reason.find("names neither our anchor 'vendor-a' nor the operator root"), std::string::npos)
        << b1->reason;
    EXPECT_EQ(f.enrol_calls, 0);
    EXPECT_EQ(f.kds_calls, 1);  // b2's own psk-from-network only: no fallback for b1 (auth = certificate)
}

TEST(Agent, AuthFailedUntrustedCaWithoutCmpIsDownWithBackoffAndReprobes) {
    Fakes f;
    Agent a(without_cmp(), "a2", f.ops());
    a.run(0);
    auto* b1 = a.neighbour("b1");
    EXPECT_EQ(b1->state, LinkState::Down);
    EXPECT_NE(b1->reason.find("this node does not support CMPv2"), std::string::npos) << b1->reason;
    EXPECT_TRUE(has_step(*b1, "peer's CA not trusted")) << a.status_text();
    EXPECT_TRUE(has_step(*b1, "a previous IKE_AUTH failed with an untrusted CA")) << a.status_text();
    EXPECT_EQ(b1->attempts, 1u);
    ASSERT_TRUE(b1->next_retry_at.has_value());
    EXPECT_EQ(*b1->next_retry_at, 1000);
    EXPECT_EQ(f.ike_calls, 1);
    // Each retry probes the peer again (it may have new anchors by now), then backs off more.
    a.run(1000);
    EXPECT_EQ(f.ike_calls, 2);
    EXPECT_TRUE(has_step(*b1, "forgetting earlier observations")) << a.status_text();
    EXPECT_EQ(*b1->next_retry_at, 1000 + 2000);
    a.run(2000);  // not due
    EXPECT_EQ(f.ike_calls, 2);
    a.run(3000);
    EXPECT_EQ(*b1->next_retry_at, 3000 + 4000);
    EXPECT_EQ(b1->attempts, 3u);
    EXPECT_EQ(b1->state, LinkState::Down);
    // Never a silent downgrade: no KDS key, no enrolment, no plain X2.
    EXPECT_EQ(f.kds_calls, 0);
    EXPECT_EQ(f.enrol_calls, 0);
    EXPECT_NE(a.status_text().find("next retry at t=7000 ms"), std::string::npos) << a.status_text();
}
