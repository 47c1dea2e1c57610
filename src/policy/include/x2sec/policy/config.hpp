// One TOML configuration file for a deployment of H(e)NBs (one or several nodes: the demo and
// the lab describe all of them in one file; a real H(e)NB has one [[henb]]).  toml++ parses it;
// this module validates it into plain structs.  Every error names file:line:col.
//
//   [[anchor]]                       # trust anchors, referred to by label
//   label = "vendor-a"
//   file = "vendor-a-root.pem"       # relative to the config file (or to base_dir)
//
//   [segw]    address = "127.0.0.1:4500"  identity = "segw.operator.example"
//   [cmp]     url = "http://127.0.0.1:8829/.well-known/cmp/p/henb"  profile = "henb"
//   [kds]     address = "127.0.0.1:7443"  identity = "kds.operator.example"
//   [backoff] initial_ms = 1000  max_ms = 300000  factor = 2.0
//
//   [[henb]]
//   name = "henb-a1"
//   identity = "0023a1000001.henb.vendor-a.example"   # EUI-48 FQDN (TS 23.003 4.10)
//   vendor = "vendor-a"
//   address = "127.0.0.1:5101"       # its IKE endpoint for the direct interface
//   certificate = "henb-a1.pem"      # optional in the demo (minted at start)
//   private_key = "henb-a1.key"
//   certificate_anchor = "vendor-a"  # the anchor its current certificate chains to
//   trust_anchors = ["vendor-a", "operator"]
//   direct_interface = true
//   cmp = true                       # supports CMPv2 (Proposal 4: optional)
//   [[henb.neighbour]]
//   name = "henb-b1"                 # another [[henb]] of this file, or give identity+address
//   ipsec = "required"               # or "off"
//   auth = "auto"                    # "certificate", "psk-from-network"
//   enabled = true
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>
#include <x2sec/common/result.hpp>
#include <x2sec/policy/decision.hpp>

namespace x2sec::policy {

struct HostPort {
    std::string host;
    uint16_t port = 0;
    std::string to_string() const { return host + ":" + std::to_string(port); }
};

struct AnchorConfig {
    std::string label;
    std::string file;  // absolute after loading
};

struct SegwConfig {
    HostPort address;
    std::string identity;
};
struct CmpConfig {
    std::string url;
    std::string profile = "henb";
};
struct KdsClientConfig {
    HostPort address;
    std::string identity;  // expected SAN of the KDS certificate
};

struct NeighbourConfig {
    std::string name;
    std::string identity;  // resolved from the [[henb]] of that name when omitted
    HostPort address;
    bool enabled = true;
    IpsecPolicy ipsec = IpsecPolicy::Required;
    AuthMode auth = AuthMode::Auto;
    std::optional<std::string> peer_anchor;  // hint: the anchor the neighbour's certificate chains to
    std::optional<bool> peer_cmp;            // hint: whether the neighbour supports CMPv2
    std::string where;                       // "file:line:col" of the table, for messages
};

struct HenbConfig {
    std::string name;
    std::string identity;
    std::string vendor;
    HostPort address;
    std::string certificate, private_key;  // may be empty (minted by the demo)
    std::string certificate_anchor;
    std::vector<std::string> trust_anchors;
    bool direct_interface = true;
    bool cmp = false;
    std::vector<NeighbourConfig> neighbours;
    std::string where;
};

struct DeploymentConfig {
    std::vector<AnchorConfig> anchors;
    std::optional<SegwConfig> segw;
    std::optional<CmpConfig> cmp;
    std::optional<KdsClientConfig> kds;
    Backoff backoff;
    std::vector<HenbConfig> henbs;

    const HenbConfig* henb(const std::string& name) const;
    const AnchorConfig* anchor(const std::string& label) const;
};

// Parses and validates.  base_dir resolves relative file names ("" = the file's directory).
Result<DeploymentConfig> parse_config(std::string_view toml_text, const std::string& source_name,
                                      const std::string& base_dir);
Result<DeploymentConfig> load_config(const std::string& path);

// The facts the decision needs, from configuration alone (the agent adds what the peer shows).
LocalFacts local_facts(const DeploymentConfig& d, const HenbConfig& h);
PeerFacts peer_facts(const DeploymentConfig& d, const HenbConfig& h, const NeighbourConfig& n);

}  // namespace x2sec::policy
