// x2sec::policy — the per-neighbour decision procedure of the contribution, as a pure function.
//
//   IPsec off                      -> plain X2, with a visible warning           (Proposal 1)
//   same CA (chains share anchor)  -> IKEv2 with the current certificates        (Proposal 2)
//   different CAs                  -> enrol an operator certificate with CMPv2,
//                                     then IKEv2 with operator certificates      (Proposal 3)
//                                     only if this node supports CMP             (Proposal 4)
//   psk-from-network (Solution 2)  -> fetch a pairwise key from the KDS, then IKEv2-PSK
//
// The decision uses configuration and what the peer has shown (the anchors in its CERTREQ,
// an AUTHENTICATION_FAILED because of an untrusted CA).  It never downgrades silently: when a
// required tunnel cannot be built the neighbour stays down with the reason, and the agent
// retries with exponential back-off.  Every step of the reasoning is recorded in `steps`.
#pragma once

#include <optional>
#include <string>
#include <vector>
#include <x2sec/common/time.hpp>

namespace x2sec::policy {

enum class IpsecPolicy { Off, Required };
enum class AuthMode { Auto, Certificate, PskFromNetwork };
const char* to_string(IpsecPolicy p);
const char* to_string(AuthMode m);

enum class Action {
    Disabled,                  // the direct interface is not used with this neighbour
    PlainX2,                   // IPsec off by policy: unprotected X2 (warning)
    IkeCurrentCert,            // Scenario 1: IKEv2 with the certificates we hold now
    EnrolThenIkeOperatorCert,  // Scenario 2 / Solution 1: CMPv2 enrolment, then IKEv2
    IkeOperatorCert,           // Scenario 2 after enrolment: IKEv2 with operator certificates
    KdsPskThenIke,             // Solution 2: pairwise key from the KDS, then IKEv2-PSK
    Down,                      // required protection cannot be provided: neighbour down
};
const char* to_string(Action a);

// What this node knows about itself.
struct LocalFacts {
    bool direct_interface = true;  // node-level switch
    bool cmp_supported = false;    // Proposal 4: optional
    bool cmp_server_configured = false;
    bool kds_configured = false;
    std::string current_cert_anchor;   // label of the anchor our current certificate chains to
    bool holds_operator_cert = false;  // enrolled already
    std::string operator_anchor = "operator";
};

// What the neighbour's configuration says and what the peer has shown.
struct PeerFacts {
    bool direct_interface = true;  // per-neighbour switch
    IpsecPolicy ipsec = IpsecPolicy::Required;
    AuthMode auth = AuthMode::Auto;
    // Label of the anchor the peer's certificate chains to, if known (configured hint or
    // observed from a previous exchange).
    std::optional<std::string> peer_cert_anchor;
    // Anchors the peer asked for in CERTREQ (labels of our known anchors that matched the
    // SHA-1 SPKI hashes).  nullopt: no CERTREQ seen yet.
    std::optional<std::vector<std::string>> certreq_anchors;
    bool auth_failed_untrusted_ca = false;   // the peer or we rejected the chain: untrusted CA
    std::optional<bool> peer_cmp_supported;  // hint from configuration
    bool peer_holds_operator_cert = false;
};

struct Decision {
    Action action = Action::Down;
    std::string basis;                   // "Proposal 2 (same CA)", ...
    std::vector<std::string> steps;      // the reasoning, in order
    std::optional<std::string> warning;  // shown prominently (IPsec off, ...)
    std::string down_reason;             // for Action::Down
};

Decision decide(const LocalFacts& local, const PeerFacts& peer);

// Exponential back-off for a neighbour that stays down.
struct Backoff {
    Millis initial_ms = 1000;
    Millis max_ms = 300'000;
    double factor = 2.0;
};
// Delay before retry number `attempt` (1 = first retry): initial * factor^(attempt-1), capped.
Millis backoff_delay(const Backoff& b, unsigned attempt);

}  // namespace x2sec::policy
