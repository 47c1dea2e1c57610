// FileConfig -> validated ike::EngineConfig: proposals, identities, traffic selectors, and the
// files a peer needs (private key, certificate chain, trust anchors, CRLs, PSK file) are read
// and checked here, each failure reported as "file:line:col: what is wrong".
#pragma once

#include <string>
#include <x2sec/config/file_config.hpp>
#include <x2sec/ikev2/engine.hpp>

namespace x2sec::config {

struct LoadedConfig {
    ike::EngineConfig engine;
    RuntimeSection runtime;
    std::string path;
};

// Also checks that a certificate peer's local_id is in its own certificate.
Result<LoadedConfig> build_engine_config(const FileConfig& file);
// parse_file + build_engine_config.
Result<LoadedConfig> load(const std::string& path);

}  // namespace x2sec::config
