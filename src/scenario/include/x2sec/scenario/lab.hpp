// `x2sec lab`: the demo's cases as root, with network namespaces, veth links, a bridge and TUN
// devices, carrying real IP traffic.  The operator core namespace runs the SeGW (`x2sec esp
// --ike-config`, user-space ESP on a TUN device), the RA/CA (CMPv2 over HTTP) and the KDS
// (mutual TLS), both bound to the core's inner address, reachable only through the backhaul
// tunnels; every H(e)NB namespace runs its backhaul IKE/ESP process (device certificate) and,
// per case, its direct-interface IKE/ESP process, started with the credential the node agent's
// decision produced.  X2 traffic (GTP-U datagrams to UDP 2152 and a TCP stream to 36422) goes
// through the TUN devices; a packet tap on the LAN counts what is on the wire.
#pragma once

#include <string>
#include <vector>
#include <x2sec/common/result.hpp>
#include <x2sec/policy/config.hpp>
#include <x2sec/scenario/demo.hpp>

namespace x2sec::scenario {

struct LabOptions {
    std::string x2sec_binary;        // the x2sec executable to run in the namespaces
    std::string workdir;             // empty: a fresh 0700 directory under /tmp
    bool keep = false;               // leave namespaces, processes and files up afterwards
    std::vector<std::string> cases;  // empty: all (scenario1, scenario2, solution2, ipsec-off)
    unsigned gtpu_datagrams = 8;     // GTP-U datagrams per direction per case
    size_t tcp_bytes = 1u << 20;     // TCP transfer per case (initiator -> responder)
    int wait_s = 15;                 // upper bound for one IKE exchange / process start
    // Faults (negative cases): the RA/CA is not running; the KDS has no authorised relation
    // for Solution 2's pair.  The neighbours must then stay DOWN with the reason — no plain X2.
    bool ra_down = false;
    bool kds_refuses = false;
    // A deployment TOML to use instead of the embedded one (same ${...} placeholders).
    std::string deployment;
};

// The lab names a network namespace x2slab<run_id>-<henb name> for every H(e)NB: an error
// naming the first H(e)NB name that cannot be one (ipcmd::check_netns_name), checked before
// the lab creates anything.
Status check_lab_names(const policy::DeploymentConfig& cfg, const std::string& run_id);

// Empty when this process can build the lab (root, /dev/net/tun, iproute2, netns); otherwise
// why not.
std::string lab_unavailable_reason();

// Builds the topology, runs the cases, tears everything down (unless keep).  Cleans up on
// SIGINT/SIGTERM/SIGHUP too (exits 128+signal from the signal thread).
Result<DemoReport> run_lab(const LabOptions& options);

// Removes what `x2sec lab --keep` left: namespaces x2s<pid>-* whose lab process is gone, and
// the processes inside them.  Returns the namespaces removed.
std::vector<std::string> lab_teardown();

// The report as JSON (for tests and scripts).
std::string report_json(const DemoReport& r);

}  // namespace x2sec::scenario
