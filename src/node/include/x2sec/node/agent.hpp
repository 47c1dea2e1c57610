// x2sec::node — the H(e)NB node agent: for each configured neighbour it runs the policy
// decision, carries out what the decision asks for (CMPv2 enrolment, KDS key fetch, IKEv2),
// keeps per-neighbour state for `x2sec status`, and retries a neighbour that stays down with
// exponential back-off.  Before anything else it brings up the backhaul tunnel to the SeGW with
// its device certificate; the RA/CA and the KDS are reached only through the backhaul, so no
// enrolment or key fetch happens while the backhaul is down.
//
// The agent does not talk to the network itself: the operations (backhaul IKE, CMP, KDS, the
// direct-interface IKE, X2 traffic) are injected, so tests drive it with fakes on a manual
// clock and the demo/lab wire in the real modules.
#pragma once

#include <functional>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>
#include <x2sec/common/bytes.hpp>
#include <x2sec/common/result.hpp>
#include <x2sec/common/time.hpp>
#include <x2sec/policy/config.hpp>
#include <x2sec/policy/decision.hpp>

namespace x2sec::node {

// What one phase cost on the wire, measured by whoever performed it.
struct Measure {
    size_t messages = 0;  // protocol messages (IKE, CMP, KDS, X2) in both directions
    size_t bytes = 0;     // UDP/TCP payload octets in both directions
    size_t round_trips = 0;
    double time_ms = 0;
    std::set<std::string> entities;  // network entities involved ("H(e)NB A", "RA/CA", ...)
    Measure& operator+=(const Measure& o);
};

// Credentials a node uses on the direct interface.
enum class Credential { None, VendorCertificate, OperatorCertificate, PairwiseKey };
const char* to_string(Credential c);

enum class LinkState { Idle, Disabled, PlainX2, Ready, Up, Down };
const char* to_string(LinkState s);

struct StepRecord {
    Millis at = 0;
    std::string text;
};

struct PhaseRecord {
    std::string name;  // "backhaul", "cmp-enrolment", "kds-fetch", "ike", "x2-traffic"
    bool ok = false;
    std::string detail;
    Measure measure;
};

struct NeighbourStatus {
    std::string name, identity;
    policy::Decision decision;
    LinkState state = LinkState::Idle;
    Credential credential = Credential::None;
    std::string reason;     // why it is down / the last error
    unsigned attempts = 0;  // failed attempts since the last success
    std::optional<Millis> next_retry_at;
    std::vector<StepRecord> steps;
    std::vector<PhaseRecord> phases;
    // What the peer showed, fed back into the decision.
    bool observed_untrusted_ca = false;
    std::optional<std::vector<std::string>> observed_certreq;
    // Pairwise key (Solution 2): held only until the IKE SA is up, then wiped.
    SecureBytes psk;
    std::string psk_key_id;
    std::string tunnel_detail;  // e.g. negotiated algorithms
};

// Why an IKE attempt failed, as far as the decision is concerned.
struct IkeFailure {
    bool untrusted_ca = false;  // AUTHENTICATION_FAILED / chain to no anchor
    // The anchors the peer named in its CERTREQ (labels of our trust anchors; a CA that is not
    // ours reads "unknown:<8 hex>"), when the attempt saw one.
    std::optional<std::vector<std::string>> certreq_anchors;
    // The attempt was abandoned after IKE_SA_INIT, before IKE_AUTH, because the peer's CERTREQ
    // names no anchor the credential chains to (Agent::certreq_mismatch).
    bool aborted_on_certreq = false;
};

struct Operations {
    // Backhaul IKE SA to the SeGW with the device certificate.
    std::function<Result<PhaseRecord>(const policy::HenbConfig&)> backhaul;
    // CMPv2 enrolment of an operator certificate (ir/ip/certConf/pkiConf) via the backhaul.
    std::function<Result<PhaseRecord>(const policy::HenbConfig&)> enrol;
    // Pairwise key from the KDS via the backhaul; returns the phase and fills key + key id.
    std::function<Result<PhaseRecord>(const policy::HenbConfig&, const policy::NeighbourConfig&, SecureBytes& key,
                                      std::string& key_id)>
        fetch_key;
    // IKEv2 on the direct interface with the given credential.  On failure, `failure` says
    // whether the peer's CA was untrusted (the decision then changes).
    std::function<Result<PhaseRecord>(const policy::HenbConfig&, const policy::NeighbourConfig&, Credential,
                                      const SecureBytes& psk, IkeFailure& failure)>
        ike;
};

class Agent {
public:
    Agent(policy::DeploymentConfig config, const std::string& henb, Operations ops);

    // Brings up the backhaul (once; retried with back-off on failure).  true when up.
    bool ensure_backhaul(Millis now);
    // Decides and prepares every neighbour that is due (not waiting for a retry): runs the
    // decision, enrols / fetches keys as required.  Neighbours end Ready, PlainX2, Disabled or
    // Down.
    void prepare(Millis now);
    void prepare(const std::string& name, Millis now);
    // Runs IKEv2 with a Ready neighbour.  On an untrusted-CA failure the decision is re-run
    // with that observation (e.g. enrol, then try again with operator certificates) — once per
    // call.  Returns the final state.
    LinkState connect(const std::string& name, Millis now);
    // prepare + connect for every due neighbour.
    void run(Millis now);

    // The responder side saw the peer's certificate fail (e.g. untrusted CA): remember it so
    // the next decision takes it into account, and drop a Ready state built on it.
    void observe_peer_failure(const std::string& name, bool untrusted_ca, Millis now);
    // The peer named these anchors in a CERTREQ (e.g. in its IKE_AUTH request while we were
    // the responder): remember them for the next decision, and drop a Ready state that
    // presents a certificate the peer did not ask for.
    void observe_certreq(const std::string& name, const std::vector<std::string>& anchors, Millis now);
    // Before IKE_AUTH: nullopt when the peer's CERTREQ (anchor labels) names the anchor the
    // credential chains to (or the credential is a PSK, or the CERTREQ is empty); otherwise why
    // the attempt is pointless.  The IKE operation calls this after IKE_SA_INIT and abandons
    // the exchange (IkeFailure::aborted_on_certreq) rather than send a doomed IKE_AUTH.
    std::optional<std::string> certreq_mismatch(Credential c, const std::vector<std::string>& anchors) const;
    // Forget the tunnel (e.g. after a revocation or a deleted SA): the next run decides anew.
    void reset(const std::string& name);
    // Marks a neighbour Up from the responder side (the peer initiated).
    void mark_up(const std::string& name, Credential c, const std::string& detail, Millis now);

    const policy::HenbConfig& henb() const { return *m_henb; }
    bool backhaul_up() const { return m_backhaul_up; }
    bool holds_operator_cert() const { return m_operator_cert; }
    const std::vector<PhaseRecord>& node_phases() const { return m_node_phases; }
    const std::string& backhaul_reason() const { return m_backhaul_reason; }
    NeighbourStatus* neighbour(const std::string& name);
    const std::vector<NeighbourStatus>& neighbours() const { return m_neighbours; }
    std::optional<Millis> next_retry() const;
    // Human-readable status (`x2sec status`) and JSON.
    std::string status_text() const;
    std::string status_json() const;

private:
    void step(NeighbourStatus& n, Millis now, std::string text);
    void fail(NeighbourStatus& n, Millis now, std::string reason);
    const policy::NeighbourConfig& ncfg(const NeighbourStatus& n) const;

    policy::DeploymentConfig m_config;
    const policy::HenbConfig* m_henb = nullptr;
    Operations m_ops;
    bool m_backhaul_up = false;
    unsigned m_backhaul_attempts = 0;
    std::optional<Millis> m_backhaul_retry_at;
    std::string m_backhaul_reason;
    bool m_operator_cert = false;
    bool m_redeciding = false;               // connect() re-runs prepare() with new observations
    std::vector<PhaseRecord> m_node_phases;  // backhaul, enrolment (node-wide)
    std::vector<NeighbourStatus> m_neighbours;
};

}  // namespace x2sec::node
