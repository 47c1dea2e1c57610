// `x2sec kds serve --config kds.toml`: the Key Distribution Service of Solution 2.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <csignal>
#include <iostream>
#include <thread>
#include <x2sec/common/bytes.hpp>
#include <x2sec/common/file.hpp>
#include <x2sec/common/log.hpp>
#include <x2sec/common/rng.hpp>
#include <x2sec/common/time.hpp>
#include <x2sec/kds/config.hpp>
#include <x2sec/kds/server.hpp>
#include <x2sec/kds/tls.hpp>

#include "daemon_metrics.hpp"
#include "registry.hpp"

namespace {
std::atomic<bool> g_stop{false}, g_reload{false};
void on_signal(int) {
    g_stop = true;
}
void on_hup(int) {
    g_reload = true;
}

// SIGHUP: the configuration file read again; nodes, relations, key lifetime and wipe policy
// applied (kds::Server::reload), the CRL files reloaded and the CRL URLs refetched.  The
// listener, TLS credentials, limits and [metrics] need a restart (a warning says so).  A file
// that does not load changes nothing (kds.reload.failed).
void reload(const std::string& path, const x2sec::kds::ServeConfig& running, x2sec::kds::Server& engine,
            x2sec::x509::RevocationChecker& revocation) {
    auto lg = x2sec::log::get("kds");
    auto cfg = x2sec::kds::load_serve_config(path);
    if (!cfg.ok()) {
        engine.count("kds.reload.failed");
        lg->error("SIGHUP: {} not reloaded, the running configuration stays: {}", path, cfg.error().detail());
        return;
    }
    if (auto st = engine.reload(cfg->server); !st.ok()) {
        engine.count("kds.reload.failed");
        lg->error("SIGHUP: {} not reloaded, the running configuration stays: {}", path, st.error().detail());
        return;
    }
    if (auto st = revocation.reload(); !st.ok()) lg->warn("SIGHUP: CRL reload: {}", st.error().detail());
    std::string restart;
    if (cfg->listen != running.listen || cfg->port != running.port) restart += " listen/port";
    if (cfg->tls.cert_pem != running.tls.cert_pem ||
        !std::equal(cfg->tls.key_pem.data(), cfg->tls.key_pem.data() + cfg->tls.key_pem.size(),
                    running.tls.key_pem.data(), running.tls.key_pem.data() + running.tls.key_pem.size()) ||
        cfg->tls.anchors_pem != running.tls.anchors_pem)
        restart += " certificate/private_key/client_anchors";
    if (cfg->metrics_listen != running.metrics_listen) restart += " [metrics]";
    if (!restart.empty()) lg->warn("SIGHUP: changed settings that take effect only after a restart:{}", restart);
    engine.count("kds.reload.ok");
}
}  // namespace

static x2sec::app::Command reg(
    "kds", "Key Distribution Service (Solution 2): serve pairwise keys over mutual TLS", [](CLI::App& app) {
        auto* serve = app.add_subcommand("serve", "Serve key requests from H(e)NBs");
        auto config = std::make_shared<std::string>();
        auto seconds = std::make_shared<int>(0);
        serve->add_option("--config,-c", *config, "KDS configuration file (TOML)")->required();
        serve->add_option("--duration", *seconds, "Stop after this many seconds (0 = until SIGINT/SIGTERM)");
        // `x2sec kds fetch-key`: one key request as an H(e)NB makes it (operators checking a KDS,
        // and the tests of a running `kds serve`).
        auto* fetch = app.add_subcommand("fetch-key", "Request the pairwise key for a neighbour (as an H(e)NB would)");
        struct FetchOpts {
            std::string server, name, cert, key, trust, requester, peer;
        };
        auto f = std::make_shared<FetchOpts>();
        fetch->add_option("--server", f->server, "KDS address HOST:PORT")->required();
        fetch->add_option("--server-name", f->name, "SAN dNSName the KDS certificate must carry")->required();
        fetch->add_option("--cert", f->cert, "own certificate chain (PEM, leaf first)")
            ->required()
            ->check(CLI::ExistingFile);
        fetch->add_option("--key", f->key, "own private key (PEM)")->required()->check(CLI::ExistingFile);
        fetch->add_option("--trust", f->trust, "trust anchor(s) for the KDS certificate (PEM)")
            ->required()
            ->check(CLI::ExistingFile);
        fetch->add_option("--requester", f->requester, "own identity (as in the certificate)")->required();
        fetch->add_option("--peer", f->peer, "the neighbour's identity")->required();
        app.require_subcommand(1);
        return [config, seconds, fetch, f]() -> int {
            using namespace x2sec;
            if (fetch->parsed()) {
                auto colon = f->server.rfind(':');
                int port = colon == std::string::npos ? 0 : std::atoi(f->server.c_str() + colon + 1);
                if (port < 1 || port > 65535) {
                    std::cerr << "x2sec kds fetch-key: --server must be HOST:PORT\n";
                    return 2;
                }
                kds::TlsCredentials creds;
                auto cert = read_file(f->cert), key = read_file(f->key), trust = read_file(f->trust);
                if (!cert.ok() || !key.ok() || !trust.ok()) {
                    std::cerr << "x2sec kds fetch-key: cannot read --cert/--key/--trust\n";
                    return 2;
                }
                creds.cert_pem.assign(cert->begin(), cert->end());
                creds.key_pem = SecureBytes(BytesView(key->data(), key->size()));
                creds.anchors_pem.assign(trust->begin(), trust->end());
                kds::KeyRequest req;
                req.request_id = 1;
                req.requester = f->requester;
                req.peer = f->peer;
                auto r = kds::fetch_key(f->server.substr(0, colon), uint16_t(port), f->name, creds, req);
                if (!r.ok()) {
                    std::cerr << "x2sec kds fetch-key: " << r.error().detail() << "\n";
                    return 1;
                }
                std::cout << "key " << to_hex(r->key_id) << " delivered\n";  // the key id only, never the key
                return 0;
            }
            using namespace x2sec;
            auto cfg = kds::load_serve_config(*config);
            if (!cfg.ok()) {
                std::cerr << "x2sec kds: " << cfg.error().detail() << "\n";
                return 2;
            }
            SystemClock clock;
            kds::Server engine(cfg->server, os_rng());
            kds::TlsServer server(engine, clock, cfg->limits);
            // Revoked or expired H(e)NB certificates get no keys; the checker reloads the CRL files
            // when they change and refetches the CRL URLs at nextUpdate / crl_refresh.
            auto revocation = std::make_shared<x509::RevocationChecker>(cfg->revocation);
            if (auto rst = revocation->start(); !rst.ok()) {
                std::cerr << "x2sec kds: " << rst.error().detail() << "\n";
                return 2;
            }
            server.set_revocation(revocation);
            auto st = server.start(cfg->listen, cfg->port, cfg->tls);
            if (!st.ok()) {
                std::cerr << "x2sec kds: " << st.error().detail() << "\n";
                return 1;
            }
            Counters metrics_counters;
            auto metrics = app::start_metrics(
                cfg->metrics_listen, *config + ": [metrics] listen",
                [&] {
                    metrics::Exposition e;
                    app::add_build_info(e, "kds");
                    e.add("x2sec_kds_pairs_with_key", metrics::Type::Gauge, "Neighbour pairs holding key material now",
                          {}, double(engine.pairs_with_key_material()));
                    e.add("x2sec_kds_open_connections", metrics::Type::Gauge, "TLS connections held now", {},
                          double(server.open_connections()));
                    e.add_counters(engine.counters(), app::metric_rules());
                    e.add_counters(revocation->counters(), app::metric_rules());
                    e.add_counters(metrics_counters, app::metric_rules());
                    e.add_registry(metrics::registry(), app::metric_rules());
                    return e.text();
                },
                metrics_counters);
            if (!metrics) {
                std::cerr << "x2sec kds: " << metrics.error().detail() << "\n";
                return 1;
            }
            std::cout << "KDS serving " << cfg->server.nodes.size() << " H(e)NBs, " << cfg->server.relations.size()
                      << " authorised neighbour relations on " << cfg->listen << ":" << server.port() << std::endl;
            std::signal(SIGINT, on_signal);
            std::signal(SIGTERM, on_signal);
            std::signal(SIGHUP, on_hup);
            auto start = std::chrono::steady_clock::now();
            while (!g_stop) {
                std::this_thread::sleep_for(std::chrono::milliseconds(100));
                engine.expire(clock.now());
                if (g_reload.exchange(false)) reload(*config, *cfg, engine, *revocation);
                if (*seconds > 0 && std::chrono::steady_clock::now() - start > std::chrono::seconds(*seconds)) break;
            }
            server.stop();
            for (auto& [k, v] : engine.counters().snapshot()) std::cout << "  " << k << " = " << v << "\n";
            for (auto& [k, v] : revocation->counters().snapshot()) std::cout << "  " << k << " = " << v << "\n";
            return 0;
        };
    });
