// `x2sec kds serve --config kds.toml`: the KDS's own configuration file (TOML).
//
//   [kds]
//   listen = "127.0.0.1"          # IPv4 address
//   port = 7443
//   certificate = "kds.pem"       # PEM chain, leaf first (paths relative to this file)
//   private_key = "kds.key"
//   client_anchors = ["vendor-a-root.pem", "operator-root.pem"]
//   key_lifetime = 3600           # seconds
//   crl_files = ["operator.crl"]  # CRLs of the client CAs (PEM/DER), reloaded when they change
//   crl_urls = ["http://ra.operator.example/crl"]  # the RA/CA's CRL, refetched at nextUpdate / crl_refresh
//   crl_policy = "hard"           # stale or unavailable CRL: refuse ("hard") or accept with a warning ("soft")
//   crl_refresh = 300             # seconds: refetch the URLs at least this often
//   crl_cache_dir = "crl-cache"   # optional on-disk copy of the fetched CRLs
//   [kds.limits]                  # optional, connection layer (defaults shown)
//   max_connections = 256         # concurrent connections
//   max_per_source = 16           # concurrent connections from one address
//   request_timeout_ms = 5000     # accept -> TLS handshake + whole request
//   write_timeout_ms = 5000
//   max_frame = 4104              # largest request frame (header + body)
//   workers = 2
//   [[kds.node]]
//   name = "henb-a1"
//   identity = "0023a1000001.henb.vendor-a.example"   # certificate SAN dNSName
//   [[kds.relation]]
//   nodes = ["henb-a1", "henb-b1"]
//
// Errors name the file, line and column ("kds.toml:7:1: ...").
#pragma once

#include <string>
#include <x2sec/common/result.hpp>
#include <x2sec/kds/server.hpp>
#include <x2sec/kds/tls.hpp>

namespace x2sec::kds {

struct ServeConfig {
    std::string listen = "127.0.0.1";
    uint16_t port = 7443;
    ServerConfig server;
    TlsCredentials tls;
    // Client certificate revocation (always on: also the clients' http:// distribution points).
    x509::RevocationConfig revocation;
    TransportLimits limits;
    // [metrics] listen = "127.0.0.1:9103": Prometheus /metrics ("" = off; docs/metrics.md).
    std::string metrics_listen;
};

Result<ServeConfig> load_serve_config(const std::string& path);
Result<ServeConfig> parse_serve_config(std::string_view text, const std::string& file, const std::string& base);

}  // namespace x2sec::kds
