// x2sec::config — the IKE daemon's configuration file (TOML) as plain structs.
//
// Two stages, so that every mistake is reported with its place in the file:
//   parse_file()/parse_string(): TOML -> FileConfig (syntax, types, unknown keys, ranges,
//       addresses, traffic selectors, durations); nothing is read from disk but the file.
//   build_engine_config() (engine_config.hpp): FileConfig -> validated ike::EngineConfig
//       (proposals, identities, key/certificate/CRL/PSK files, trust anchors).
// Every error reads "file:line:col: what is wrong"; all errors found are reported at once,
// one per line.  docs/ikev2.md documents the format.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>
#include <x2sec/common/child_sa.hpp>
#include <x2sec/common/result.hpp>

namespace x2sec::config {

struct Location {
    std::string file;
    uint32_t line = 0, column = 0;
    std::string to_string() const;  // "file:line:col"
};

template <typename T>
struct Located {
    T value{};
    Location where;
};

// Collects errors "file:line:col: message"; converted to one Error(Config) at the end.
class Diagnostics {
public:
    void error(const Location& where, std::string_view message);
    bool empty() const { return m_lines.empty(); }
    const std::vector<std::string>& lines() const { return m_lines; }
    Error to_error() const;  // ErrorDomain::Config, detail = lines joined by '\n'

private:
    std::vector<std::string> m_lines;
};

struct TrustAnchorEntry {
    std::string label;  // "vendor-a", "operator", ...
    std::string file;   // PEM, may hold several roots (all get this label); absolute path
    Location where;
};

struct CrlEntry {
    std::string file;  // PEM or DER; absolute path
    Location where;
};

struct CredentialEntry {
    std::string name;
    std::string key_file;                 // PKCS#8/PEM private key; absolute path
    std::vector<std::string> cert_files;  // leaf first, then intermediates (PEM bundles allowed)
    Location where;
};

struct ChildEntry {
    std::string name;
    std::vector<TrafficSelector> local_ts, remote_ts;
    std::vector<Located<std::string>> esp_proposals;  // parsed by build_engine_config
    IpsecMode mode = IpsecMode::Tunnel;
    uint64_t rekey_seconds = 3600;
    Lifetime lifetime;
    uint32_t replay_window = 1024;
    Location where;
};

enum class AuthKind : uint8_t { Certificate, Psk };

struct PeerEntry {
    std::string name;
    IpAddress local_addr, remote_addr;
    uint16_t local_port = 500, remote_port = 500;
    uint16_t local_natt_port = 4500, remote_natt_port = 4500;
    Located<std::string> local_id;
    std::optional<Located<std::string>> remote_id;
    AuthKind local_auth = AuthKind::Certificate, remote_auth = AuthKind::Certificate;
    std::optional<Located<std::string>> credential;  // name of a [credential.X]
    std::vector<Located<std::string>> trust;         // anchor labels; empty = all anchors
    std::optional<Located<std::string>> psk_hex;     // psk = "hex:..." / "0x..."
    std::optional<Located<std::string>> psk_text;    // psk = "text:..." (UTF-8 octets)
    std::optional<Located<std::string>> psk_file;    // raw octets of a file (absolute path)
    bool send_certreq = true;
    std::optional<Located<std::string>> ocsp_stapling;  // "off" (default) | "request" | "require" (RFC 4806)
    std::string ocsp_staple_file;                       // our DER OCSPResponse to staple ("" = AIA look-up)
    // PEM files of OCSP responder certificates trusted for the peer's certificate (RFC 4806
    // CERTREQ hashes, RFC 6960 2.2 "Trusted Responder"); paths resolved.
    std::vector<Located<std::string>> ocsp_responders;
    std::optional<Located<std::string>> unique;  // "no" | "never" | "keep" | "replace" (default)
    std::vector<Located<std::string>> ike_proposals;
    uint64_t ike_rekey_seconds = 14400;
    uint64_t dpd_interval_ms = 30000;
    uint32_t dpd_jitter_percent = 10;  // dpd_jitter: each check dpd_interval - U(0, this % of it)
    bool fragmentation = true;
    uint32_t fragment_size = 1280;
    bool force_encap = false;
    bool auto_initiate = false;
    std::vector<ChildEntry> children;
    Location where;
};

struct RuntimeSection {
    uint16_t ike_port = 500;        // default local IKE port of every peer
    uint16_t natt_port = 4500;      // default local NAT-T port (non-ESP marker)
    std::vector<IpAddress> listen;  // extra local addresses to bind (peers' local addrs always)
    std::string control_socket;     // "" = none unless given on the command line
    std::string log_level = "info";
    std::string log_file;  // "" = stderr
};

struct EngineSection {
    int64_t retransmit_timeout_ms = 4000;
    double retransmit_backoff = 1.8;
    uint32_t retransmit_jitter_percent = 0;  // retransmit_jitter: each wait shortened by U(0, this %)
    uint32_t retransmit_tries = 5;
    uint32_t cookie_threshold = 50;
    uint32_t max_half_open = 5000;
    uint32_t max_half_open_per_source = 64;
    uint32_t max_message_size = 64 * 1024;
    int64_t half_open_timeout_ms = 30000;
};

// [revocation]: CRL checking of certificate peers (x509::RevocationChecker).
enum class RevocationMode { Auto, Require, Off };
struct RevocationSection {
    // auto: check every chain certificate a CRL applies to (a [[crl]] file of its issuer, an
    // http:// cRLDistributionPoint in it, or a crl_urls entry); require: also refuse a
    // certificate without any CRL source; off: no revocation checking.  The old top-level
    // `crl_check = true` means require, `crl_check = false` off.
    RevocationMode mode = RevocationMode::Auto;
    bool policy_soft = false;           // crl_policy = "hard" (default) | "soft"
    bool fetch = true;                  // fetch the certificates' http:// distribution points
    std::vector<std::string> crl_urls;  // fetched for every chain
    int64_t fetch_timeout_ms = 5000;
    int64_t max_wait_ms = 1000;
    int64_t refresh_ms = 3600 * 1000;
    int64_t retry_ms = 30 * 1000;
    uint32_t max_crl_size = 1024 * 1024;
    std::string cache_dir;  // absolute, "" = memory only
    // method = "crl" (default) | "ocsp" | "ocsp-then-crl": OCSP look-ups at the certificates'
    // authorityInfoAccess responders (see x509::RevocationMethod).
    std::string method = "crl";
    bool ocsp_nonce = true;        // send a nonce and require it echoed
    int64_t ocsp_max_age_ms = -1;  // refuse older answers (-1: no limit)
    Location where;
};

// [metrics]: the daemon's Prometheus endpoint (docs/metrics.md); off unless listen is set.
struct MetricsSection {
    std::string listen;  // "127.0.0.1:9101", "[::1]:9101"; "" = no /metrics
    Location where;
};

struct FileConfig {
    std::string path;      // as given
    std::string base_dir;  // relative file names are resolved against it
    RuntimeSection runtime;
    MetricsSection metrics;
    EngineSection engine;
    std::vector<TrustAnchorEntry> trust_anchors;
    std::vector<CrlEntry> crls;
    bool crl_check = false;  // the old switch, as given (see RevocationSection::mode)
    RevocationSection revocation;
    std::vector<CredentialEntry> credentials;
    std::vector<PeerEntry> peers;
};

Result<FileConfig> parse_file(const std::string& path);
// source_name is used in messages and base_dir is where relative file names point.
Result<FileConfig> parse_string(std::string_view text, const std::string& source_name,
                                const std::string& base_dir = ".");

// Helpers, exposed for tests and other config readers.
// "198.51.100.0/24", "2001:db8::/64", "192.0.2.7", with an optional "[proto/port]" suffix:
// "[sctp/36422]", "[udp/2152]", "[udp/2152-2153]", "[132]", "[tcp]", "[any/500]".
Result<TrafficSelector> parse_traffic_selector(std::string_view text);
// "90", "90s", "15m", "4h", "1d", "500ms" -> milliseconds.
Result<int64_t> parse_duration_ms(std::string_view text);

}  // namespace x2sec::config
