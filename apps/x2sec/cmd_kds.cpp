// `x2sec kds serve --config kds.toml`: the Key Distribution Service of Solution 2.
#include <atomic>
#include <chrono>
#include <csignal>
#include <iostream>
#include <thread>
#include <x2sec/common/log.hpp>
#include <x2sec/common/rng.hpp>
#include <x2sec/common/time.hpp>
#include <x2sec/kds/config.hpp>
#include <x2sec/kds/server.hpp>
#include <x2sec/kds/tls.hpp>

#include "registry.hpp"

namespace {
std::atomic<bool> g_stop{false};
void on_signal(int) { g_stop = true; }
}  // namespace

static x2sec::app::Command reg("kds", "Key Distribution Service (Solution 2): serve pairwise keys over mutual TLS",
                               [](CLI::App& app) {
    auto* serve = app.add_subcommand("serve", "Serve key requests from H(e)NBs");
    auto config = std::make_shared<std::string>();
    auto seconds = std::make_shared<int>(0);
    serve->add_option("--config,-c", *config, "KDS configuration file (TOML)")->required();
    serve->add_option("--duration", *seconds, "Stop after this many seconds (0 = until SIGINT/SIGTERM)");
    app.require_subcommand(1);
    return [config, seconds]() -> int {
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
        std::cout << "KDS serving " << cfg->server.nodes.size() << " H(e)NBs, " << cfg->server.relations.size()
                  << " authorised neighbour relations on " << cfg->listen << ":" << server.port() << std::endl;
        std::signal(SIGINT, on_signal);
        std::signal(SIGTERM, on_signal);
        auto start = std::chrono::steady_clock::now();
        while (!g_stop) {
            std::this_thread::sleep_for(std::chrono::milliseconds(100));
            engine.expire(clock.now());
            if (*seconds > 0 && std::chrono::steady_clock::now() - start > std::chrono::seconds(*seconds)) break;
        }
        server.stop();
        for (auto& [k, v] : engine.counters().snapshot()) std::cout << "  " << k << " = " << v << "\n";
        for (auto& [k, v] : revocation->counters().snapshot()) std::cout << "  " << k << " = " << v << "\n";
        return 0;
    };
});
