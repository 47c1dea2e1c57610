// `x2sec kds serve --config kds.toml`: the KDS's own configuration file (TOML).
//
//   [kds]
//   listen = "127.0.0.1"          # IPv4 address
//   port = 7443
//   certificate = "kds.pem"       # PEM chain, leaf first (paths relative to this file)
//   private_key = "kds.key"
//   client_anchors = ["vendor-a-root.pem", "operator-root.pem"]
//   key_lifetime = 3600           # seconds
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
    TransportLimits limits;
};

Result<ServeConfig> load_serve_config(const std::string& path);
Result<ServeConfig> parse_serve_config(std::string_view toml_text, const std::string& source_name,
                                       const std::string& base_dir);

}  // namespace x2sec::kds
