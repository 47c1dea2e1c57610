// FileConfig -> validated ike::EngineConfig: proposals, identities, traffic selectors, and the
// files a peer needs (private key, certificate chain, trust anchors, CRLs, PSK file) are read
// and checked here, each failure reported as "file:line:col: what is wrong".
#pragma once

#include <memory>
#include <x2sec/x509/revocation.hpp>

#include <string>
#include <x2sec/config/file_config.hpp>
#include <x2sec/ikev2/engine.hpp>

namespace x2sec::config {

struct LoadedConfig {
    ike::EngineConfig engine;
    RuntimeSection runtime;
    MetricsSection metrics;
    std::string path;
    // The CRL checker every certificate peer's TrustStore asks (nullptr: [revocation] mode =
    // "off"); started: configured files loaded, its fetch thread running.
    std::shared_ptr<x509::RevocationChecker> revocation;
};

// Also checks that a certificate peer's local_id is in its own certificate.
Result<LoadedConfig> build_engine_config(const FileConfig& file);
// parse_file + build_engine_config.
Result<LoadedConfig> load(const std::string& path);

}  // namespace x2sec::config
