// x2sec::node sim — many H(e)NBs with neighbour relations of mixed vendors and policies on a
// virtual clock, each running the real node agent (the decision procedure per neighbour), the
// real IKEv2 engines with the in-memory ESP data plane, an in-process operator RA/CA (CMPv2
// server) and KDS, and a SeGW engine for every node's backhaul.  Datagrams travel through an
// in-memory network with a fixed one-way latency; nothing reads the wall clock for timing, so
// a seed fixes the topology, the policies, the faults, every decision and the counts.
//
// Faults: the RA/CA down for a window of virtual time (enrolments fail, neighbours go down and
// retry with back-off), operator certificates revoked at a given time (a CRL reaches every
// node; the tunnels using them are torn down and must not come back), the KDS refusing some
// pairs (UNAUTHORISED_PAIR: those neighbours stay down, never downgraded).
//
// What is not simulated: processing time (only message latency advances the clock), packet
// loss, the TLS layer of the KDS (the request is authenticated by the backhaul identity).
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>
#include <x2sec/common/result.hpp>
#include <x2sec/common/time.hpp>
#include <x2sec/policy/decision.hpp>

namespace x2sec::scenario {

// One H(e)NB of an explicit topology.
struct SimNode {
    unsigned vendor = 0;  // 0 = vendor-a, 1 = vendor-b, ...
    bool cmp = true;      // supports CMPv2 (Proposal 4)
};
// One neighbour relation of an explicit topology (the same policy on both sides).
struct SimRelation {
    unsigned a = 0, b = 0;  // node indexes; a initiates
    policy::IpsecPolicy ipsec = policy::IpsecPolicy::Required;
    policy::AuthMode auth = policy::AuthMode::Auto;
    bool hint = false;  // each side configured with the other's anchor and CMP support
    bool kds_authorised = true;
};

struct SimOptions {
    uint64_t seed = 1;
    // Generated topology (ignored when `nodes` below is non-empty).
    unsigned node_count = 50;      // 2 .. 500
    unsigned degree = 4;           // neighbour relations per node (even, 2 .. 16): a ring lattice
    unsigned vendors = 3;          // 1 .. 6
    double cmp_share = 0.7;        // share of nodes supporting CMPv2
    double ipsec_off_share = 0.1;  // share of relations with IPsec off (Proposal 1)
    double psk_share = 0.15;       // share of relations with auth = psk-from-network (Solution 2)
    double hint_share = 0.5;       // share of certificate relations configured with the peer's anchor
    // Explicit topology (tests): when non-empty, replaces the generated one.
    std::vector<SimNode> nodes;
    std::vector<SimRelation> relations;

    bool certreq = true;           // engines send CERTREQ (off: peers are learnt from AUTH_FAILED only)
    Millis latency_ms = 5;         // one way, H(e)NB <-> H(e)NB and H(e)NB <-> SeGW
    Millis core_latency_ms = 2;    // one way, SeGW <-> RA/CA or KDS
    Millis boot_spread_ms = 2000;  // nodes boot at seeded times in [0, spread)
    Millis duration_ms = 600'000;  // the run stops at this virtual time
    policy::Backoff backoff{1000, 60'000, 2.0};
    // Faults.
    std::optional<std::pair<Millis, Millis>> ra_down;  // [from, until) virtual ms
    unsigned revoke = 0;                               // operator certificates to revoke (first enrolled nodes)
    Millis revoke_at_ms = 120'000;
    unsigned kds_refuse = 0;  // PSK relations the KDS does not authorise (generated topology)
    bool keep_steps = false;  // keep every agent's steps in the report (tests)
};

struct SimTraffic {
    size_t messages = 0, bytes = 0;
};

struct SimRelationResult {
    unsigned a = 0, b = 0;
    std::string a_name, b_name;
    std::string outcome;  // case label, or "down"
    std::string state_a, state_b;
    std::string credential;  // what the tunnel uses
    std::string reason;      // when down: both sides' reasons
    std::string learnt;      // how the CA question was settled: "hint", "CERTREQ", "AUTH_FAILED", ""
    Millis settled_at = 0;   // virtual time the relation reached its final state
    unsigned failed_attempts = 0;
    std::vector<std::string> steps_a, steps_b;  // with keep_steps
};

struct SimReport {
    uint64_t seed = 0;
    unsigned nodes = 0;
    std::map<std::string, unsigned> cases;         // outcome label -> relations
    std::map<std::string, unsigned> down_reasons;  // reason class -> relations
    std::map<std::string, SimTraffic> traffic;     // "ike-backhaul", "ike-direct", "cmp", "kds", "x2-esp", "x2-plain"
    std::map<std::string, size_t> counters;        // enrolments, enrolment failures, kds keys, ...
    std::vector<std::string> faults;               // what was injected, when
    std::vector<SimRelationResult> relations;
    bool converged = false;      // every relation settled before the end of the run
    Millis converged_at_ms = 0;  // the last relation's settle time
    Millis ended_at_ms = 0;
    size_t x2_sent = 0, x2_delivered = 0;
};

Result<SimReport> run_sim(const SimOptions& options);
std::string render_sim_report(const SimReport& r);

}  // namespace x2sec::scenario
