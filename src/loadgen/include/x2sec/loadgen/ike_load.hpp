// x2sec::loadgen — an IKEv2 load generator in the spirit of strongSwan's load-tester plugin:
// many initiators (distinct identities, certificates or PSKs, source addresses and ports) in
// one process, driven by one sans-I/O ike::Engine holding one PeerConfig per initiator, on
// runtime::UdpSocket sockets in one poll() loop.  Each setup is IKE_SA_INIT + IKE_AUTH with the
// first Child SA, optionally followed by a Child SA rekey, an IKE SA rekey and a delete.
// docs/bench-ike.md ("x2sec ike load") describes the flags, the credential layout and the report.
#pragma once

#include <cstdint>
#include <iosfwd>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>
#include <x2sec/common/bytes.hpp>
#include <x2sec/common/child_sa.hpp>
#include <x2sec/common/result.hpp>
#include <x2sec/crypto/crypto.hpp>
#include <x2sec/ikev2/engine.hpp>
#include <x2sec/x509/x509.hpp>

namespace x2sec::loadgen {

enum class LoadAuth { Cert, Psk };

// The identity of initiator i: "n<i>.<realm>" (an FQDN; also the SAN dNSName of its certificate).
std::string initiator_identity(size_t i, const std::string& realm);

// PSK of one identity: HMAC-SHA256(key = base secret octets, data = the identity's FQDN text),
// 32 octets.  The responder config carries it as psk = "hex:<64 hex digits>".
SecureBytes derive_psk(BytesView base_secret, const std::string& identity);

// Certificates for the initiators and the responder, under one CA (ECDSA P-256).  Layout of
// the directory (written by prepare_certs, read back on the next run):
//   ca.pem, ca.key                      the CA (ca.key only needed to issue missing certificates)
//   responder.pem, responder.key        the responder's certificate (SAN dNSName = responder id)
//   initiators/<i>.pem, <i>.key         initiator i's certificate (SAN dNSName = its identity)
// Private keys are PKCS#8 PEM, mode 0600, written atomically.
struct Credentials {
    std::string dir;  // absolute
    std::shared_ptr<x509::TrustStore> trust;
    struct Initiator {
        std::string identity;
        std::shared_ptr<crypto::PrivateKey> key;
        x509::Certificate cert;
    };
    std::vector<Initiator> initiators;
    std::string responder_id;
};

// Loads `count` initiator certificates (and the CA) from dir, issuing whatever is missing with
// the CA key (a new CA and responder certificate when dir has none).  An existing certificate
// whose identity is not initiator_identity(i, realm) is an error naming the file.
Result<Credentials> prepare_certs(const std::string& dir, size_t count, const std::string& realm,
                                  const std::string& responder_id);

struct LoadOptions {
    ike::Endpoint target;  // the responder's IKE address and port
    uint16_t target_natt_port = 4500;
    std::vector<IpAddress> sources;   // local addresses (default: 127.0.0.1)
    unsigned ports_per_source = 256;  // UDP sockets per source address (ephemeral ports)
    size_t count = 100;               // total setups, one identity each
    size_t concurrency = 20;          // setups in flight at most
    double rate = 0;                  // setups started per second; 0 = as fast as concurrency allows
    double duration_s = 120;          // time bound: nothing starts after it, in-flight ones are "unfinished"
    LoadAuth auth = LoadAuth::Cert;
    const Credentials* certs = nullptr;  // LoadAuth::Cert
    SecureBytes psk_base;                // LoadAuth::Psk
    std::string realm = "load.x2sec.example";
    std::string responder_id = "responder.load.x2sec.example";
    std::string ike_proposal = "aes128gcm16-prfsha256-ecp256";
    std::string esp_proposal = "aes128gcm16";
    bool rekey_child = false, rekey_ike = false, delete_after = false;
    Millis retransmit_timeout_ms = 2000;
    unsigned retransmit_tries = 3;
    uint32_t retransmit_jitter_percent = 0;    // each wait shortened by U(0, this %) (RetransmitConfig)
    double hold_s = 0;                         // after every setup finished: keep the SAs this long (DPD, rekeys)
    uint32_t responder_cookie_threshold = 50;  // only written to the responder config
    std::ostream* progress = nullptr;          // one-line progress (\r-updated) when set
};

struct LoadReport {
    size_t attempted = 0, succeeded = 0, failed = 0, unfinished = 0;
    size_t child_rekeys = 0, ike_rekeys = 0, deletes = 0;   // completed post-setup operations
    double seconds = 0;                                     // first start to last setup completed
    double wall_seconds = 0;                                // whole run
    double setups_per_s = 0;                                // succeeded / seconds
    double generator_cpu_seconds = 0;                       // this process's CPU time during the run (getrusage)
    double p50_ms = 0, p90_ms = 0, p99_ms = 0, max_ms = 0;  // IKE_SA_INIT sent -> Child SA up
    struct Reason {
        size_t count = 0;
        std::string example;  // the first detail seen
    };
    std::map<std::string, Reason> failures;       // setup failures by reason
    std::map<std::string, Reason> post_failures;  // rekey/delete failures (the setup succeeded)
    std::map<std::string, uint64_t> engine_counters;
    nlohmann::json to_json() const;
    std::string to_text() const;
};

// Runs the load; errors only for set-up problems (bad options, sockets, proposals).
Result<LoadReport> run_load(const LoadOptions& o);

// The TOML an x2sec responder (`x2sec ike run --config FILE`) needs to accept this load:
// certificates: one wildcard peer trusting the CA, with the responder certificate; PSK: one
// peer per identity with its derived PSK (the file then holds secrets: write it 0600).
Result<std::string> responder_config_toml(const LoadOptions& o);

// The swanctl.conf a strongSwan charon responder needs to accept the same load (one connection
// "load" on the target address accepting any remote address and identity; rekeys and DPD off;
// the same Child SA selectors as the x2sec config).  Certificates: the responder presents
// certs = responder.pem (copy ca.pem to swanctl/x509ca/, responder.pem to swanctl/x509/ and
// responder.key to swanctl/private/); PSK: one secrets entry per identity with its derived PSK
// (the file then holds secrets: write it 0600).
Result<std::string> charon_swanctl_conf(const LoadOptions& o);

// Writes text to path atomically (temp file + rename), mode 0600.
Status write_private_file(const std::string& path, const std::string& text);

}  // namespace x2sec::loadgen
