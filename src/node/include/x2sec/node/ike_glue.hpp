// Internal: the IKEv2 glue shared by the loopback demo world and the simulator — peer
// configurations from the agent's credentials, the CERTREQ check before IKE_AUTH, and what an
// exchange's events mean for the two agents' decisions.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>
#include <x2sec/common/bytes.hpp>
#include <x2sec/common/result.hpp>
#include <x2sec/ikev2/engine.hpp>
#include <x2sec/node/agent.hpp>

namespace x2sec::node::glue {

struct IkeSide {
    std::string name;
    ike::Identity id;
    IpAddress addr;
    uint16_t port;
    IpAddress inner;
};

// One peer configuration for `self` talking to `other`: certificates (chain PEM leaf first,
// trust anchors as label/PEM) or a PSK; one tunnel-mode Child SA between the inner /32s;
// no rekey, no DPD (the demo and the simulator drive time themselves).
Result<ike::PeerConfig> peer_config(const std::string& peer_name, const IkeSide& self, const IkeSide& other,
                                    Credential cred, const std::string& cert_pem, const SecureBytes& key_pem,
                                    const std::vector<std::pair<std::string, std::string>>& anchors,
                                    const SecureBytes& psk, const TrafficSelector& remote_ts);

// The CAs of a peer's CERTREQ (ike::CertReqAnchor, mapped by the engine to our trust-anchor
// labels) as the labels the decision uses; a CA that is none of ours reads "unknown:<8 hex>".
std::vector<std::string> certreq_labels(const std::vector<ike::CertReqAnchor>& anchors);
// The labels of the PeerCertReq event for `peer` among `ev`, if there is one.
std::optional<std::vector<std::string>> certreq_event(const std::vector<ike::Event>& ev, const std::string& peer);

bool has_event(const std::vector<ike::Event>& ev, const std::string& peer, ike::Event::Kind k);
// The first event that ends an exchange with `peer` unsuccessfully.
const ike::Event* failure_event(const std::vector<ike::Event>& ev, const std::string& peer);

// Watches an initiator between IKE_SA_INIT and IKE_AUTH: once the engine holds the peer's
// CERTREQ anchors (IkeSaInfo::peer_certreq, from the IKE_SA_INIT response) and they name no
// anchor our credential chains to (Agent::certreq_mismatch), it deletes the half-open IKE SA
// and drops the IKE_AUTH request the engine queued, so no doomed IKE_AUTH is sent.
class CertreqGuard {
public:
    CertreqGuard(const Agent& agent, Credential cred, ike::Engine& engine, std::string peer_name)
        : m_agent(agent), m_cred(cred), m_engine(engine), m_peer(std::move(peer_name)) {}
    // Call after the engine handled `d`.  Returns the datagrams it took from the engine's
    // outgoing queue that must still be sent (those not addressed to the abandoned peer).
    std::vector<ike::Datagram> on_received(const ike::Datagram& d, Millis now);
    bool aborted() const { return m_aborted; }
    const std::string& reason() const { return m_reason; }
    const std::optional<std::vector<std::string>>& certreq() const { return m_certreq; }

private:
    const Agent& m_agent;
    Credential m_cred;
    ike::Engine& m_engine;
    std::string m_peer;
    bool m_checked = false;
    bool m_aborted = false;
    std::string m_reason;
    std::optional<std::vector<std::string>> m_certreq;
};

// A direct-interface exchange between initiator `a` and responder `b` (node names, which are
// also the peer-config names on the other side): done when both Child SAs are up; failed when
// either side reports a failure or `guard` stopped it before IKE_AUTH.
bool both_child_up(const std::vector<ike::Event>& a_events, const std::string& a,
                   const std::vector<ike::Event>& b_events, const std::string& b);
class CertreqGuard;
bool exchange_failed(const CertreqGuard& guard, const std::vector<ike::Event>& a_events, const std::string& a,
                     const std::vector<ike::Event>& b_events, const std::string& b);

// After a failed direct-interface exchange between initiator `a` (credential `cred`) and
// responder `b` (credential `b_cred`): fills what the initiator learnt (untrusted CA, CERTREQ)
// and tells the responder's agent what it saw (the CAs in our IKE_AUTH CERTREQ, its engine
// rejected our chain, or we rejected its chain and said so with AUTHENTICATION_FAILED).
// Returns a one-line reason with both sides' view.
std::string classify_failure(const std::vector<ike::Event>& a_events, const std::vector<ike::Event>& b_events,
                             Credential cred, Credential b_cred, const CertreqGuard& guard, IkeFailure& failure,
                             Agent& b_agent, const std::string& a_name, const std::string& b_name, Millis now);

}  // namespace x2sec::node::glue
