// Internal: the one builder of the node agent's Operations for every harness.  The agent's
// four operations (backhaul IKE, CMPv2 enrolment, KDS key fetch, direct-interface IKE) do the
// same things in the loopback demo, the namespace lab and the virtual-clock simulator — check
// that the peer is ready, pick the certificate and key for the credential the decision chose,
// keep the enrolled operator certificate, time the phase, name it and its entities, mark the
// responder up — and differ only in how the messages are carried.  That part is a Fabric:
//   - loopback (demo_world.cpp: World): real sockets on 127.0.0.1, in-process engines;
//   - namespaces (lab.cpp: Lab): one x2sec process per end in its network namespace, driven
//     over its control socket, TUN devices and a packet tap;
//   - virtual clock (sim.cpp: SimWorld): in-memory datagrams, a clock only latency advances.
#pragma once

#include <string>
#include <vector>
#include <x2sec/common/bytes.hpp>
#include <x2sec/common/result.hpp>
#include <x2sec/common/time.hpp>
#include <x2sec/node/agent.hpp>
#include <x2sec/policy/config.hpp>
#include <x2sec/scenario/lab_pki.hpp>

namespace x2sec::scenario {

// A node's credentials: the vendor device certificate from the start, the operator
// certificate once CMPv2 enrolment issued one.
struct NodeKeys {
    LabCredential vendor;
    std::string op_cert_pem;  // operator certificate chain, leaf first
    SecureBytes op_key_pem;
    std::string op_serial_hex;
};

// What one exchange cost on the wire and a one-line detail for the report.  A zero time_ms is
// filled in by the builder (the fabric's clock from the start of the operation).
struct Carried {
    node::Measure measure;
    std::string detail;
};

struct Enrolled {
    SecureBytes key_pem;
    std::string cert_pem;  // leaf then chain
    std::string serial_hex;
    Carried carried;
};

struct FetchedKey {
    SecureBytes key;
    std::string key_id;  // hex
    Carried carried;
};

// One end of a direct-interface IKE attempt, with the certificate and key (or PSK) for the
// credential its decision chose.
struct IkeEnd {
    const policy::HenbConfig* henb = nullptr;  // nullptr for a neighbour that is not a [[henb]] here
    std::string name, identity;
    node::Credential cred = node::Credential::None;
    std::string cert_pem;
    SecureBytes key_pem;
    const SecureBytes* psk = nullptr;
};

struct IkeAttempt {
    IkeEnd initiator, responder;
    node::Agent& responder_agent;
    node::IkeFailure& failure;  // what the fabric learnt from a failed attempt
};

class Fabric {
public:
    virtual ~Fabric() = default;
    // The agents' clock, and the clock phase durations are measured on (ms).
    virtual Millis now() = 0;
    virtual double clock_ms() = 0;
    virtual node::Agent& agent(const std::string& henb) = 0;
    virtual NodeKeys& keys(const std::string& henb) = 0;
    virtual bool has_kds() const = 0;

    virtual Result<Carried> backhaul(const policy::HenbConfig& h) = 0;
    virtual Result<Enrolled> enrol(const policy::HenbConfig& h) = 0;
    virtual Result<FetchedKey> fetch_key(const policy::HenbConfig& h, const policy::NeighbourConfig& n) = 0;
    // Both ends' exchange; an error (with attempt.failure filled in) when the tunnel did not come up.
    virtual Result<Carried> ike(IkeAttempt& attempt) = 0;
};

// The agent's operations over `fabric` (which must outlive them).
node::Operations make_operations(Fabric& fabric);

}  // namespace x2sec::scenario
