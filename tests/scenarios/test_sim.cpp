// `x2sec sim` scenarios: real IKEv2 engines, in-memory ESP data planes, in-process RA/CA and
// KDS, the real node agents, on a virtual clock.  Small explicit topologies check what the
// decision does with what a peer shows (CERTREQ, AUTHENTICATION_FAILED); a generated mixed
// deployment with faults checks convergence, fault handling and determinism.
#include <gtest/gtest.h>

#include <x2sec/scenario/demo.hpp>
#include <x2sec/scenario/sim.hpp>

using namespace x2sec;
using namespace x2sec::node;
using namespace x2sec::scenario;

namespace {

size_t find_step(const std::vector<std::string>& steps, const std::string& text) {
    for (size_t i = 0; i < steps.size(); ++i)
        if (steps[i].find(text) != std::string::npos) return i;
    return std::string::npos;
}

std::string dump(const SimRelationResult& r) {
    std::string s = r.a_name + " <-> " + r.b_name + ": " + r.outcome + " " + r.reason + "\n";
    for (auto& x : r.steps_a) s += "  [a] " + x + "\n";
    for (auto& x : r.steps_b) s += "  [b] " + x + "\n";
    return s;
}

// Two H(e)NBs of different vendors, a certificate relation with no configured hint.
SimOptions pair(bool a_cmp, bool b_cmp, bool certreq, policy::AuthMode auth = policy::AuthMode::Auto) {
    SimOptions o;
    o.nodes = {SimNode{0, a_cmp}, SimNode{1, b_cmp}};
    SimRelation r;
    r.a = 0;
    r.b = 1;
    r.auth = auth;
    o.relations = {r};
    o.certreq = certreq;
    o.keep_steps = true;
    o.boot_spread_ms = 1;
    o.duration_ms = 20'000;
    o.backoff = {1000, 8000, 2.0};
    return o;
}

size_t counter(const SimReport& r, const std::string& k) {
    auto it = r.counters.find(k);
    return it == r.counters.end() ? 0 : it->second;
}

}  // namespace

TEST(SimDecision, CertreqWithoutOurAnchorEnrolsBeforeAnyVendorIkeAuth) {
    auto r = run_sim(pair(true, true, true));
    ASSERT_TRUE(r.ok()) << r.error().to_string();
    ASSERT_EQ(r->relations.size(), 1u);
    const auto& x = r->relations[0];
    EXPECT_EQ(x.outcome, "scenario2: CMPv2 enrolment, operator certificates (Proposal 3)") << dump(x);
    EXPECT_EQ(x.learnt, "CERTREQ") << dump(x);
    size_t stopped = find_step(x.steps_a, "IKE_AUTH not sent");
    size_t enrol = find_step(x.steps_a, "CMPv2: enrolling");
    ASSERT_NE(stopped, std::string::npos) << dump(x);
    ASSERT_NE(enrol, std::string::npos) << dump(x);
    EXPECT_LT(stopped, enrol) << dump(x);
    EXPECT_NE(find_step(x.steps_a, "decided from the peer's CERTREQ"), std::string::npos) << dump(x);
    // The initiator's vendor certificate never went out: nothing rejected it.
    EXPECT_EQ(find_step(x.steps_a, "peer answered AUTHENTICATION_FAILED"), std::string::npos) << dump(x);
    EXPECT_EQ(counter(*r, "ike stopped after IKE_SA_INIT (CERTREQ)"), 1u);
    EXPECT_EQ(counter(*r, "cmp enrolments"), 2u);
    // The responder learnt the initiator's CAs from its IKE_AUTH CERTREQ and decided with them.
    EXPECT_NE(find_step(x.steps_b, "decide: peer's CERTREQ names the operator root"), std::string::npos) << dump(x);
    EXPECT_EQ(r->x2_delivered, r->x2_sent);
    EXPECT_GT(r->x2_sent, 0u);
    EXPECT_TRUE(r->converged);
}

TEST(SimDecision, AuthFailedUntrustedCaLeadsToEnrolment) {
    auto r = run_sim(pair(true, true, /*certreq=*/false));
    ASSERT_TRUE(r.ok()) << r.error().to_string();
    const auto& x = r->relations[0];
    EXPECT_EQ(x.outcome, "scenario2: CMPv2 enrolment, operator certificates (Proposal 3)") << dump(x);
    EXPECT_EQ(x.learnt, "AUTH_FAILED") << dump(x);
    size_t failed = find_step(x.steps_a, "peer's CA not trusted");
    size_t enrol = find_step(x.steps_a, "CMPv2: enrolling");
    ASSERT_NE(failed, std::string::npos) << dump(x);
    ASSERT_NE(enrol, std::string::npos) << dump(x);
    EXPECT_LT(failed, enrol);
    EXPECT_EQ(find_step(x.steps_a, "IKE_AUTH not sent"), std::string::npos) << dump(x);
    EXPECT_EQ(counter(*r, "ike stopped after IKE_SA_INIT (CERTREQ)"), 0u);
    EXPECT_GE(counter(*r, "ike untrusted-CA failures"), 1u);
    EXPECT_EQ(counter(*r, "cmp enrolments"), 2u);
    EXPECT_EQ(r->x2_delivered, r->x2_sent);
}

TEST(SimDecision, AuthFailedWithoutCmpIsDownWithReasonAndBackoff) {
    auto r = run_sim(pair(false, false, /*certreq=*/false, policy::AuthMode::Certificate));
    ASSERT_TRUE(r.ok()) << r.error().to_string();
    const auto& x = r->relations[0];
    EXPECT_EQ(x.outcome, "down") << dump(x);
    EXPECT_NE(x.reason.find("does not support CMPv2"), std::string::npos) << dump(x);
    EXPECT_NE(find_step(x.steps_a, "a previous IKE_AUTH failed with an untrusted CA"), std::string::npos) << dump(x);
    // Retried with back-off over 20 virtual seconds (1, 2, 4, 8, 8 s): a handful of attempts,
    // not one per tick, and never a downgrade to a PSK or to plain X2.
    EXPECT_GE(counter(*r, "retries scheduled"), 3u);
    EXPECT_LE(counter(*r, "retries scheduled"), 6u);
    EXPECT_GE(x.failed_attempts, 2u);
    EXPECT_EQ(counter(*r, "kds requests"), 0u);
    EXPECT_EQ(counter(*r, "cmp enrolments"), 0u);
    EXPECT_EQ(r->x2_sent, 0u);
    EXPECT_EQ(r->down_reasons.count("different CAs, no CMPv2 on a side: no usable certificate"), 1u);
}

TEST(Sim, MixedDeploymentConvergesAndHandlesFaults) {
    SimOptions o;
    o.seed = 7;
    o.node_count = 40;
    o.degree = 4;
    o.vendors = 3;
    o.ra_down = std::make_pair(Millis(0), Millis(20'000));
    o.revoke = 1;
    o.revoke_at_ms = 120'000;
    o.kds_refuse = 1;
    o.duration_ms = 300'000;
    o.backoff = {1000, 30'000, 2.0};
    auto r = run_sim(o);
    ASSERT_TRUE(r.ok()) << r.error().to_string();
    std::string text = render_sim_report(*r);
    EXPECT_EQ(r->relations.size(), 80u) << text;
    EXPECT_TRUE(r->converged) << text;
    // Every case of the contribution occurs in the mix.
    for (const char* k : {"scenario1: same CA, vendor certificates (Proposal 2)",
                          "scenario2: CMPv2 enrolment, operator certificates (Proposal 3)",
                          "solution2: KDS pairwise key, IKEv2-PSK", "ipsec-off: plain X2 (Proposal 1)"})
        EXPECT_GE(r->cases.count(k) ? r->cases.at(k) : 0u, 1u) << k << "\n" << text;
    // RA/CA down for the first 20 s: enrolments failed, were retried, and all recovered.
    EXPECT_GE(counter(*r, "cmp enrolment failures"), 1u) << text;
    EXPECT_EQ(r->down_reasons.count("RA/CA unreachable / enrolment failed"), 0u) << text;
    for (auto& x : r->relations)
        if (x.outcome.rfind("scenario2", 0) == 0) {
            EXPECT_GE(x.settled_at, 20'000) << x.a_name << "-" << x.b_name;
        }
    // The KDS refuses one pair: that relation stays down with the reason.
    ASSERT_EQ(r->down_reasons.count("KDS refused the pair (UNAUTHORISED_PAIR)"), 1u) << text;
    EXPECT_EQ(r->down_reasons.at("KDS refused the pair (UNAUTHORISED_PAIR)"), 1u) << text;
    // A revoked operator certificate: its tunnels were torn down and do not come back.
    EXPECT_EQ(counter(*r, "operator certificates revoked"), 1u) << text;
    ASSERT_EQ(r->down_reasons.count("operator certificate revoked"), 1u) << text;
    for (auto& x : r->relations)
        if (x.reason.find("revoked") != std::string::npos) {
            EXPECT_GE(x.settled_at, 120'000) << x.reason;
        }
    // Traffic went through every tunnel, encrypted.
    EXPECT_GT(r->x2_sent, 0u);
    EXPECT_EQ(r->x2_delivered, r->x2_sent) << text;
    EXPECT_EQ(counter(*r, "x2 plaintext seen on an IPsec link"), 0u);
    for (const char* k : {"ike-backhaul", "ike-direct", "cmp", "kds", "x2-esp"}) {
        ASSERT_TRUE(r->traffic.count(k)) << k;
        EXPECT_GT(r->traffic.at(k).messages, 0u) << k;
    }
    EXPECT_EQ(r->traffic.at("ike-backhaul").messages, 40u * 4);  // IKE_SA_INIT + IKE_AUTH per node
}

TEST(Sim, SameSeedSameRun) {
    SimOptions o;
    o.seed = 3;
    o.node_count = 12;
    o.ra_down = std::make_pair(Millis(0), Millis(5'000));
    o.kds_refuse = 1;
    o.duration_ms = 120'000;
    auto a = run_sim(o);
    auto b = run_sim(o);
    ASSERT_TRUE(a.ok() && b.ok());
    EXPECT_EQ(a->cases, b->cases);
    EXPECT_EQ(a->down_reasons, b->down_reasons);
    EXPECT_EQ(a->counters, b->counters);
    EXPECT_EQ(a->converged_at_ms, b->converged_at_ms);
    for (auto& [k, v] : a->traffic) EXPECT_EQ(v.messages, b->traffic[k].messages) << k;
    o.seed = 4;
    auto c = run_sim(o);
    ASSERT_TRUE(c.ok());
    EXPECT_TRUE(c->cases != a->cases || c->counters != a->counters) << "another seed, another deployment";
}

TEST(Sim, RejectsOutOfBoundsOptions) {
    SimOptions o;
    o.node_count = 501;
    auto r = run_sim(o);
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.error().detail().find("2..500"), std::string::npos);
    o.node_count = 10;
    o.degree = 3;
    EXPECT_FALSE(run_sim(o).ok());
}
