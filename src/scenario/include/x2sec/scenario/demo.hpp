// The loopback demo world behind `x2sec demo` (and the scenario tests): two vendors' CAs, the
// operator's root, RA/CA (CMPv2 server), SeGW and KDS, and H(e)NBs of both vendors with
// EUI-48 FQDN identities, all on 127.0.0.1 with distinct ports, no root needed.  Every case of
// the contribution runs through the node agent with the real modules; a case whose module is
// not in this build says "not available: <reason>" instead of pretending.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>
#include <x2sec/common/result.hpp>
#include <x2sec/node/agent.hpp>

namespace x2sec::scenario {

// What one phase cost on the wire (the node agent's measure).
using node::Measure;

struct DemoOptions {
    std::string workdir;  // empty: a fresh directory under /tmp, removed afterwards
    bool keep_workdir = false;
    uint16_t base_port = 0;          // 0: derived from the process id
    unsigned x2_messages = 4;        // X2AP + GTP-U packets per direction per case
    std::vector<std::string> cases;  // empty: all ("scenario1", "scenario2", "solution2", "ipsec-off")
    // Fault injection for the negative scenario tests.
    bool ra_down = false;                    // the RA/CA is not running
    bool vendor_b_unknown_to_ra = false;     // the RA/CA is not configured with vendor B's root
    bool kds_without_relation = false;       // the KDS has no authorised relation for Solution 2's pair
    bool peer_without_cmp = false;           // Scenario 2's peer (henb-b1) has no CMPv2 support
    bool revoke_peer_operator_cert = false;  // revoke henb-b1's operator certificate after enrolment
    std::string config_override;             // a deployment TOML to use instead of the embedded one
    // Where the H(e)NBs' private keys live: in memory / files (default), or each H(e)NB's
    // vendor and operator keys generated in its own SoftHSM2 token (the TrE), never leaving it.
    enum class Keys { File, Pkcs11 } keys = Keys::File;
};

struct CaseReport {
    std::string id, title, basis;
    std::string a, b;  // the two H(e)NBs
    bool available = true;
    std::string not_available;  // reason when !available
    bool ok = false;
    std::string outcome;                    // one line
    std::string state_a, state_b;           // LinkState of each side for the other
    std::vector<std::string> steps;         // both agents' steps, prefixed with the node
    std::map<std::string, Measure> phases;  // "cmp-enrolment", "kds-fetch", "ike", ...
    Measure setup;                          // everything before traffic
    Measure traffic;                        // X2 packets on the wire (ESP or plain)
    size_t x2_sent = 0, x2_delivered_intact = 0;
    bool plaintext_on_wire = false;
    std::vector<std::string> warnings;
    // `x2sec lab` only: real IP traffic through the namespaces' TUN devices.
    size_t tcp_sent = 0, tcp_received = 0;                  // TCP transfer (X2AP-like stream), bytes
    bool tcp_intact = false;                                // received == sent, byte for byte
    size_t esp_packets_on_wire = 0, esp_bytes_on_wire = 0;  // ESP-in-UDP frames between the pair
    size_t clear_inner_frames_on_wire = 0;                  // frames with an inner (X2) address in the outer IP header
    std::vector<std::string> dataplane;                     // data-plane counters of both ends, one line each
};

struct DemoReport {
    std::vector<CaseReport> cases;
    Measure backhaul;  // all H(e)NBs' backhaul IKE SAs to the SeGW
    std::string backhaul_note;
    std::map<std::string, std::string> node_status;  // node -> status text
    std::string workdir;
    // `x2sec lab` only (empty for the loopback demo).
    std::string environment;            // first line under the title
    std::vector<std::string> topology;  // namespaces, links, addresses
    std::vector<std::string> notes;     // limits of this run (e.g. no SCTP in the kernel)
};

Result<DemoReport> run_demo(const DemoOptions& options);
std::string render_report(const DemoReport& r);
// The embedded default deployment (ports and file names filled in by run_demo).
std::string default_deployment_template();

}  // namespace x2sec::scenario
