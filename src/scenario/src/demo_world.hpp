// Internal: the demo's network entities and the agent operations wired to the real modules.
#pragma once

#include <chrono>
#include <map>
#include <memory>
#include <string>
#include <x2sec/common/child_sa.hpp>
#include <x2sec/common/rng.hpp>
#include <x2sec/common/time.hpp>
#include <x2sec/kds/server.hpp>
#include <x2sec/kds/tls.hpp>
#include <x2sec/node/agent.hpp>
#include <x2sec/scenario/demo.hpp>
#include <x2sec/scenario/lab_pki.hpp>

#include "operations.hpp"
#include <x2sec/policy/config.hpp>

#include <x2sec/pki/pki.hpp>

namespace x2sec::scenario {

using node::Agent;
using node::NeighbourStatus;

namespace detail {
Result<pki::X509Ptr> pem_to_x509(const std::string& pem);
// CMP over HTTP (RFC 6712), one POST per PKIMessage; counts the octets on the connection.
Result<Bytes> http_post_cmp(const std::string& url, BytesView body, size_t& wire_out, size_t& wire_in);
// An operator certificate enrolled with CMPv2 (ir signed with the vendor credential, fresh P-256
// key, the operator root checked) over HTTP to `url`, with what it cost on the wire.
struct OperatorEnrolment {
    SecureBytes key_pem;
    std::string cert_pem;  // leaf then chain
    std::string serial_hex;
    size_t messages = 0;
    size_t bytes = 0;  // HTTP requests and responses incl. headers
};
// key_token: a pkcs11: URI to generate the operator key in (empty: in memory).
Result<OperatorEnrolment> enrol_operator(const std::string& url, const LabCredential& vendor,
                                         const std::string& operator_root_pem, const std::string& identity,
                                         const std::string& key_token = "");
// --keys pkcs11 (demo_tokens.cpp): one SoftHSM2 token per H(e)NB under the work directory.
struct DemoTokens {
    std::string conf, pin_file;
    std::map<std::string, std::string> token;  // H(e)NB name -> token label
    std::string uri(const std::string& henb, const std::string& object) const;
};
Result<DemoTokens> make_demo_tokens(const std::string& dir, const std::vector<std::string>& henbs);
// A credential of `ca` whose key is generated in the token (key_pem: the key's URI).
Result<LabCredential> issue_in_token(LabCa& ca, const std::string& fqdn, int64_t nb, int days,
                                     const std::string& token_uri);
}  // namespace detail

namespace detail {
// The KDS's node list and authorised pairs for a deployment: every H(e)NB, and each neighbour
// relation whose authentication is psk-from-network (none when `refuse_pairs`, to show the KDS
// refusing an unauthorised pair).  Shared by the loopback demo and the namespace lab.
kds::ServerConfig kds_server_config(const policy::DeploymentConfig& cfg, bool refuse_pairs);

// Shared by the loopback demo's and the namespace lab's run_case:
// the two ends of a case, with the report's names filled in; {nullptr, nullptr}, and the report
// saying so, when the deployment has no neighbour relation a <-> b.
std::pair<Agent*, Agent*> case_agents(CaseReport& c, const std::string& id, const std::string& title,
                                      const std::string& a, const std::string& b,
                                      const std::map<std::string, std::unique_ptr<Agent>>& agents);
// What the two ends decided and measured: basis, warning, steps (b's, then a's), the protocol
// phases that completed (into c.phases and c.setup), both entities and both link states.
void record_negotiation(CaseReport& c, const NeighbourStatus& na, const NeighbourStatus& nb);
// "a STATE (reason), b STATE (reason)": the outcome of a case whose tunnel did not come up.
std::string down_outcome(const CaseReport& c, const NeighbourStatus& na, const NeighbourStatus& nb);
}  // namespace detail

struct NodeCreds : NodeKeys {
    IpAddress inner;           // inner (X2) address used in the traffic selectors
    std::string op_key_token;  // --keys pkcs11: where the operator key is generated
};

// The loopback fabric: every entity in this process on 127.0.0.1, real UDP sockets, the
// engines pumped until an exchange settles.
class World final : public Fabric {
public:
    World(std::string dir, std::map<std::string, uint16_t> ports, const DemoOptions& opt);
    ~World() override;
    Status create_pki();
    Status start(const policy::DeploymentConfig& cfg);
    void stop();
    std::map<std::string, std::unique_ptr<Agent>>& agents() { return m_agents; }
    CaseReport run_case(const std::string& id, const std::string& title, const std::string& a, const std::string& b,
                        Millis now);

    struct Impl;  // module glue (IKE / ESP / CMP), defined in demo_world.cpp

    // Fabric
    Millis now() override;
    double clock_ms() override;
    Agent& agent(const std::string& henb) override;
    NodeKeys& keys(const std::string& henb) override;
    bool has_kds() const override { return m_cfg.kds.has_value(); }
    Result<Carried> backhaul(const policy::HenbConfig& h) override;
    Result<Enrolled> enrol(const policy::HenbConfig& h) override;
    Result<FetchedKey> fetch_key(const policy::HenbConfig& h, const policy::NeighbourConfig& n) override;
    Result<Carried> ike(IkeAttempt& attempt) override;

private:
    void traffic(CaseReport& c, const std::string& a, const std::string& b);
    void plain_traffic(CaseReport& c, const std::string& a, const std::string& b);

    std::string m_dir;
    std::map<std::string, uint16_t> m_ports;
    DemoOptions m_opt;
    policy::DeploymentConfig m_cfg;
    std::unique_ptr<LabCa> m_vendor_a, m_vendor_b, m_infra;
    std::string m_operator_root_pem;
    std::map<std::string, NodeCreds> m_creds;
    LabCredential m_kds_cred, m_segw_cred;
    SystemClock m_clock;
    std::unique_ptr<kds::Server> m_kds;
    std::unique_ptr<kds::TlsServer> m_kds_tls;
    std::map<std::string, std::unique_ptr<Agent>> m_agents;
    Bytes m_crl_der;  // the operator CRL once a revocation happened (negative scenario)
    std::unique_ptr<Impl> m_impl;
    std::chrono::steady_clock::time_point m_epoch = std::chrono::steady_clock::now();
};

}  // namespace x2sec::scenario
