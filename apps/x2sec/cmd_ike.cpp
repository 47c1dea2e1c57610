// `x2sec ike`: the IKEv2 daemon and the commands that talk to it over its control socket.
//
//   x2sec ike run --config FILE [--control SOCK] [--debug-keylog DIR]
//   x2sec ike check-config --config FILE
//   x2sec ike list-sas (--control SOCK | --config FILE) [--json]
//   x2sec ike counters (--control SOCK | --config FILE)
//   x2sec ike reload-crls (--control SOCK | --config FILE)
//   x2sec ike initiate --peer NAME [--timeout S]
// Every control command takes the socket from --control, or from [runtime] control_socket of
// the daemon's --config file (only the file is parsed: keys and certificates are not read).
//   x2sec ike terminate (--peer NAME | --ike-sa ID) [--child NAME] [--timeout S]
//   x2sec ike rekey (--peer NAME | --ike-sa ID) [--child NAME] [--timeout S]
//   x2sec ike load --target ADDR[:PORT] ...    (cmd_ike_load.cpp: the load generator)
#include <pthread.h>
#include <sys/wait.h>

#include <algorithm>
#include <atomic>
#include <csignal>
#include <unistd.h>
#include <chrono>
#include <filesystem>
#include <future>
#include <iostream>
#include <mutex>
#include <optional>
#include <thread>
#include <x2sec/common/log.hpp>
#include <x2sec/runtime/control.hpp>

#include "daemon_metrics.hpp"
#include "ike_reload.hpp"
#include "registry.hpp"

#include <x2sec/config/engine_config.hpp>
#include <x2sec/runtime/ike_runtime.hpp>
#include <x2sec/esp/data_plane.hpp>
#include <x2sec/esp/natt_transport.hpp>
#include <x2sec/esp/tun_backend.hpp>

namespace x2sec::app {
Runner setup_ike_load(CLI::App* sub);
}

namespace {

using nlohmann::json;
using x2sec::app::CrlReloadOnHup;
using x2sec::app::CurrentRevocation;
using x2sec::app::PeerReload;
using x2sec::runtime::control_request;

const char* kDefaultControl = "/run/x2sec/ike.sock";

struct Options {
    std::string config, control, keylog, peer, child;
    std::string dataplane = "memory", tun = "x2s0", tun_addr;
    std::vector<std::string> routes;
    bool no_offload = false;
    int mtu = 1400;
    uint64_t ike_sa = 0;
    bool json_out = false;
    int timeout_s = 30;
    int grace_ms = 3000;
};

bool failed_event(const json& e) {
    std::string k = e.value("kind", "");
    return k == x2sec::ike::to_string(x2sec::ike::Event::Kind::AuthFailed) ||
           k == x2sec::ike::to_string(x2sec::ike::Event::Kind::NegotiationFailed) ||
           k == x2sec::ike::to_string(x2sec::ike::Event::Kind::PeerNotify) ||
           k == x2sec::ike::to_string(x2sec::ike::Event::Kind::PeerDead);
}

// The control socket of a control command: --control, else [runtime] control_socket of --config.
x2sec::Result<std::string> control_socket_of(const Options& o) {
    if (!o.control.empty()) return o.control;
    if (o.config.empty())
        return x2sec::Error(x2sec::ErrorDomain::Config, 0,
                            "give --control SOCKET or --config FILE (the daemon's configuration, whose [runtime] "
                            "control_socket names the socket)");
    auto fc = x2sec::config::parse_file(o.config);
    if (!fc) return fc.error();
    if (fc->runtime.control_socket.empty())
        return x2sec::Error(x2sec::ErrorDomain::Config, 0,
                            o.config + ": no [runtime] control_socket (the daemon then listens on " + kDefaultControl +
                                "): give --control SOCKET");
    return fc->runtime.control_socket;
}

// Request + error printing; nullopt on failure (already reported).
std::optional<json> request(const Options& o, const json& req) {
    auto sock = control_socket_of(o);
    if (!sock) {
        std::cerr << "x2sec ike " << req.value("cmd", "") << ": " << sock.error().detail() << "\n";
        return std::nullopt;
    }
    // list-sas: the daemon's worker builds every frame before the first is sent (~1.5 s per
    // 50,000 SAs on an idle core), so the first read may wait longer than other replies.
    const int timeout_ms = req.value("cmd", "") == "list-sas" ? 60000 : 10000;
    auto r = control_request(*sock, req, timeout_ms);
    if (!r) {
        std::cerr << "x2sec ike " << req.value("cmd", "") << ": " << r.error().detail() << "\n";
        return std::nullopt;
    }
    return *r;
}

json sas_of(const Options& o) {
    auto r = request(o, {{"cmd", "list-sas"}});
    return r ? (*r)["sas"] : json::array();
}

json selector(const Options& o) {
    json j = json::object();
    if (o.ike_sa)
        j["ike_sa_id"] = o.ike_sa;
    else
        j["peer"] = o.peer;
    if (!o.child.empty()) j["child"] = o.child;
    return j;
}

const json* find_sa(const json& sas, const Options& o) {
    for (const auto& s : sas) {
        if (o.ike_sa ? s.value("id", uint64_t(0)) == o.ike_sa : s.value("peer", "") == o.peer) return &s;
    }
    return nullptr;
}

// Polls until pred(sas) is true, a failure event for the peer arrives, or the timeout.
int wait_for(const Options& o, uint64_t events_since, const std::function<bool(const json&)>& pred,
             const std::string& what) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(o.timeout_s);
    for (;;) {
        auto sas = request(o, {{"cmd", "list-sas"}});
        if (!sas) return 1;
        if (pred((*sas)["sas"])) return 0;
        if (auto ev = request(o, {{"cmd", "events"}, {"since", events_since}})) {
            for (const auto& e : (*ev)["events"]) {
                if ((o.peer.empty() || e.value("peer", "") == o.peer) && failed_event(e)) {
                    std::cerr << "x2sec ike: " << what << " failed: " << e.value("kind", "") << " ("
                              << e.value("code", 0) << ") " << e.value("detail", "") << "\n";
                    return 1;
                }
            }
        }
        if (std::chrono::steady_clock::now() > deadline) {
            std::cerr << "x2sec ike: " << what << " did not complete within " << o.timeout_s << " s\n";
            return 1;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
}

uint64_t events_next(const Options& o) {
    auto r = request(o, {{"cmd", "events"}, {"since", UINT64_MAX}});
    return r ? r->value("next", uint64_t(0)) : 0;
}

int cmd_counters(const Options& o) {
    auto r = request(o, {{"cmd", "counters"}});
    if (!r) return 1;
    std::cout << (*r)["counters"].dump(2) << "\n";
    return 0;
}

int cmd_reload_crls(const Options& o) {
    if (!request(o, {{"cmd", "reload-crls"}})) return 1;  // request() printed the daemon's error
    std::cout << "CRL files reloaded, CRL URLs being refetched\n";
    return 0;
}

int cmd_list(const Options& o) {
    auto sas = request(o, {{"cmd", "list-sas"}});
    if (!sas) return 1;
    if (o.json_out)
        std::cout << (*sas)["sas"].dump(2) << "\n";
    else
        std::cout << x2sec::runtime::format_sas((*sas)["sas"]);
    return 0;
}

int cmd_initiate(const Options& o) {
    uint64_t since = events_next(o);
    if (!request(o, {{"cmd", "initiate"}, {"peer", o.peer}})) return 1;
    int rc = wait_for(
        o, since,
        [&](const json& sas) {
            const json* s = find_sa(sas, o);
            return s && (*s)["state"] == "ESTABLISHED" && !(*s)["children"].empty();
        },
        "initiate '" + o.peer + "'");
    if (rc == 0) {
        json sas = sas_of(o);
        json one = json::array();
        if (const json* s = find_sa(sas, o)) one.push_back(*s);
        std::cout << x2sec::runtime::format_sas(one);
    }
    return rc;
}

int cmd_terminate(const Options& o) {
    json sas = sas_of(o);
    const json* s = find_sa(sas, o);
    if (!s) {
        std::cerr << "x2sec ike terminate: no such IKE SA\n";
        return 1;
    }
    uint64_t id = s->value("id", uint64_t(0));
    std::string spi;
    if (!o.child.empty())
        for (const auto& c : (*s)["children"])
            if (c["name"] == o.child) spi = c["spi_in"];
    json req = selector(o);
    req["cmd"] = "terminate";
    uint64_t since = events_next(o);
    if (!request(o, req)) return 1;
    int rc = wait_for(
        o, since,
        [&](const json& now) {
            for (const auto& x : now) {
                if (x.value("id", uint64_t(0)) != id) continue;
                if (o.child.empty()) return false;
                for (const auto& c : x["children"])
                    if (c["spi_in"] == spi) return false;
            }
            return true;
        },
        "terminate");
    if (rc == 0)
        std::cout << (o.child.empty() ? "IKE SA #" + std::to_string(id) : "Child SA '" + o.child + "'") << " deleted\n";
    return rc;
}

int cmd_rekey(const Options& o) {
    json sas = sas_of(o);
    const json* s = find_sa(sas, o);
    if (!s) {
        std::cerr << "x2sec ike rekey: no such IKE SA\n";
        return 1;
    }
    std::string old_spi = s->value("spi_i", "") + s->value("spi_r", "");
    if (!o.child.empty()) {
        old_spi.clear();
        for (const auto& c : (*s)["children"])
            if (c["name"] == o.child) old_spi = c["spi_in"];
    }
    std::string peer = s->value("peer", "");
    json req = selector(o);
    req["cmd"] = "rekey";
    uint64_t since = events_next(o);
    if (!request(o, req)) return 1;
    std::string new_spi;
    Options by_peer = o;
    by_peer.ike_sa = 0;  // the rekeyed IKE SA has a new id
    by_peer.peer = peer;
    int rc = wait_for(
        by_peer, since,
        [&](const json& now) {
            for (const auto& x : now) {
                if (x.value("peer", "") != peer || x["state"] != "ESTABLISHED") continue;
                if (o.child.empty()) {
                    std::string spi = x.value("spi_i", "") + x.value("spi_r", "");
                    if (spi != old_spi) {
                        new_spi = spi;
                        return true;
                    }
                    continue;
                }
                bool old_gone = true;
                std::string cand;
                for (const auto& c : x["children"]) {
                    if (c["name"] != o.child) continue;
                    if (c["spi_in"] == old_spi)
                        old_gone = false;
                    else if (c["state"] == "INSTALLED")
                        cand = c["spi_in"];
                }
                if (old_gone && !cand.empty()) {
                    new_spi = cand;
                    return true;
                }
            }
            return false;
        },
        "rekey");
    if (rc == 0)
        std::cout << (o.child.empty() ? "IKE SA" : "Child SA '" + o.child + "'") << " rekeyed: " << old_spi << " -> "
                  << new_spi << "\n";
    return rc;
}

x2sec::Result<x2sec::config::LoadedConfig> load_config(const Options& o) {
    auto cfg = x2sec::config::load(o.config);
    if (!cfg) std::cerr << cfg.error().detail() << "\n";
    return cfg;
}

int cmd_check(const Options& o) {
    auto cfg = load_config(o);
    if (!cfg) return 1;
    std::cout << o.config << ": OK, " << cfg->engine.peers.size() << " peer(s)\n";
    if (const auto& rc = cfg->revocation) {
        const auto& c = rc->config();
        std::cout << "  revocation: " << (c.require ? "require" : "auto") << ", crl_policy "
                  << x2sec::x509::to_string(c.policy) << ", " << c.crl_files.size() << " CRL file(s), "
                  << c.crl_urls.size() << " CRL URL(s), distribution points "
                  << (c.fetch_distribution_points ? "fetched" : "ignored") << "\n";
    } else {
        std::cout << "  revocation: off\n";
    }
    for (const auto& p : cfg->engine.peers) {
        std::cout << "  " << p.name << ": " << p.local_addr.to_string() << "[" << p.local_port << "] -> "
                  << p.remote_addr.to_string() << "[" << p.remote_port << "], local "
                  << x2sec::ike::to_string(p.local_auth) << " '" << p.local_id.to_string() << "', remote "
                  << x2sec::ike::to_string(p.remote_auth);
        if (p.trust) std::cout << ", " << p.trust->anchors().size() << " trust anchor(s)";
        std::cout << ", " << p.children.size() << " child(ren)\n";
    }
    return 0;
}

int cmd_run(const Options& o) {
    CrlReloadOnHup::block_daemon_signals();  // before any thread starts (the CRL fetch thread blocks all signals)
    auto cfg = load_config(o);
    if (!cfg) return 1;
    if (cfg->runtime.log_level != "info") x2sec::log::set_level(cfg->runtime.log_level);
    if (!cfg->runtime.log_file.empty()) x2sec::log::to_file(cfg->runtime.log_file);
    auto lg = x2sec::log::get("runtime");
    x2sec::runtime::RuntimeOptions ro;
    ro.listen = cfg->runtime.listen;
    ro.ike_port = cfg->runtime.ike_port;
    ro.natt_port = cfg->runtime.natt_port;
    ro.control_socket = !o.control.empty()                     ? o.control
                        : !cfg->runtime.control_socket.empty() ? cfg->runtime.control_socket
                                                               : kDefaultControl;
    ro.keylog_dir = o.keylog;
    ro.handle_signals = true;
    ro.shutdown_grace_ms = o.grace_ms;
    auto current_revocation = std::make_shared<CurrentRevocation>(cfg->revocation);
    std::error_code ec;
    auto dir = std::filesystem::path(ro.control_socket).parent_path();
    if (!dir.empty() && !std::filesystem::exists(dir, ec)) {
        std::filesystem::create_directories(dir, ec);
        std::filesystem::permissions(dir, std::filesystem::perms::owner_all, ec);
    }
    // Revocation: its counters in `x2sec ike counters`, the CRLs named by our own chains
    // fetched before the first peer arrives, SIGHUP reloads.
    ro.extra_counters.push_back(&x2sec::x509::revocation_counters());
    if (cfg->revocation) {
        std::vector<std::string> urls;
        for (const auto& p : cfg->engine.peers)
            for (const auto& c : p.cert_chain)
                for (auto& u : c.crl_distribution_points()) urls.push_back(std::move(u));
        cfg->revocation->prefetch(urls);
        ro.extra_commands["reload-crls"] = [current_revocation] {
            auto rc = current_revocation->get();
            return rc ? rc->reload() : x2sec::ok_status();
        };
        lg->info(
            "revocation checking on (crl_policy = {}, CRL fetch wait at most {} ms); SIGHUP reloads CRLs and peers",
            x2sec::x509::to_string(cfg->revocation->config().policy), cfg->revocation->config().max_wait_ms);
    } else {
        lg->warn("revocation checking is off ([revocation] mode = \"off\" / crl_check = false)");
    }

    x2sec::MemoryChildSaBackend memory_backend;
    x2sec::ChildSaBackend* inner = &memory_backend;
    x2sec::Counters esp_counters;
    std::unique_ptr<x2sec::esp::DataPlane> dp;
    std::unique_ptr<x2sec::esp::TunBackend> tun_backend;
    if (o.dataplane == "tun") {
        dp = std::make_unique<x2sec::esp::DataPlane>(esp_counters);
        auto tun = x2sec::esp::TunDevice::open(o.tun, !o.no_offload);
        if (!tun) {
            std::cerr << "x2sec ike run: TUN " << o.tun << ": " << tun.error().detail() << "\n";
            return 1;
        }
        x2sec::Status st = tun->set_mtu(o.mtu);
        if (st && !o.tun_addr.empty()) {
            auto slash = o.tun_addr.find('/');
            auto a = x2sec::IpAddress::parse(o.tun_addr.substr(0, slash));
            if (!a) {
                std::cerr << "x2sec ike run: bad --tun-addr " << o.tun_addr << "\n";
                return 1;
            }
            st =
                tun->add_ipv4(*a, slash == std::string::npos ? 32 : unsigned(std::stoul(o.tun_addr.substr(slash + 1))));
        }
        if (st) st = tun->set_up();
        if (!st) {
            std::cerr << "x2sec ike run: TUN " << o.tun << ": " << st.error().detail() << "\n";
            return 1;
        }
        for (const auto& r : o.routes) {
            // `ip route replace PREFIX dev TUN` (iproute2 validates the prefix).
            pid_t pid = ::fork();
            if (pid == 0) {
                ::execlp("ip", "ip", "route", "replace", r.c_str(), "dev", tun->name().c_str(),
                         static_cast<char*>(nullptr));
                _exit(127);
            }
            int wst = 0;
            if (pid < 0 || ::waitpid(pid, &wst, 0) != pid || !WIFEXITED(wst) || WEXITSTATUS(wst) != 0) {
                std::cerr << "x2sec ike run: ip route replace " << r << " dev " << tun->name() << " failed\n";
                return 1;
            }
        }
        x2sec::esp::TunBackendOptions bo;
        bo.tun_name = tun->name();
        bo.udp_offload = !o.no_offload;
        if (!o.no_offload) bo.batch = 64;  // a TSO super-packet is ~48 segments
        bo.bind_addr = cfg->engine.peers.front().local_addr;
        bo.port = cfg->engine.peers.front().local_natt_port;
        auto b = x2sec::esp::TunBackend::create(*dp, std::move(*tun), bo);
        if (!b) {
            std::cerr << "x2sec ike run: ESP data plane: " << b.error().detail() << "\n";
            return 1;
        }
        tun_backend = std::move(*b);
        ro.natt_factory = x2sec::esp::make_natt_factory(*tun_backend);
        inner = dp.get();
        ro.extra_counters.push_back(&esp_counters);
        lg->info("ESP data plane on TUN {} (UDP {}:{} shared with IKE)", bo.tun_name, bo.bind_addr.to_string(),
                 bo.port);
    }
    if (inner == &memory_backend)
        lg->info("Child SAs are recorded in memory only (no ESP data plane; --dataplane tun adds one)");
    x2sec::SystemClock clock;
    auto engine =
        std::make_unique<x2sec::runtime::EngineAdapter<x2sec::ike::Engine>>(cfg->engine, *inner, x2sec::os_rng());
    const x2sec::Counters& engine_counters = engine->engine().counters();  // thread-safe, lives with the engine
    x2sec::ike::Engine* engine_ptr = &engine->engine();                    // for SIGHUP's update_peer, on the loop only
    auto rt = x2sec::runtime::IkeRuntime::create(cfg->engine, std::move(engine), ro, clock);
    if (!rt) {
        std::cerr << "x2sec ike run: " << rt.error().detail() << "\n";
        return 1;
    }
    auto* rtp = rt->get();
    x2sec::Counters reload_counters;
    PeerReload peer_reload{o.config, cfg->engine.peers, rtp, engine_ptr, &reload_counters, current_revocation};
    peer_reload.log_level = cfg->runtime.log_level;
    // Takes SIGHUP (CRLs, then the peers); declared after everything it uses, so it stops first.
    CrlReloadOnHup hup(current_revocation, peer_reload);
    // Data-plane lifetime events arrive on the data plane's threads; the runtime queues them and
    // its loop hands them to the (single-threaded) engine.
    inner->set_events(rtp->child_sa_events());
    // /metrics ([metrics] listen): counters read directly (thread-safe), the SA list taken on the
    // loop by a posted job that the scrape waits for at most 2 s, so a scrape never blocks the loop.
    x2sec::Counters metrics_counters;
    auto collect = [&, rtp]() {
        x2sec::metrics::Exposition e;
        x2sec::app::add_build_info(e, "ike");
        auto done = std::make_shared<std::promise<std::vector<x2sec::ike::IkeSaInfo>>>();
        auto sas = done->get_future();
        rtp->post([done](x2sec::runtime::EngineApi& api, x2sec::Millis) { done->set_value(api.list_sas()); });
        if (sas.wait_for(std::chrono::seconds(2)) == std::future_status::ready)
            x2sec::app::add_sa_gauges(e, sas.get());
        else
            metrics_counters.inc("metrics.ike.sa_list_timeout");
        const auto& rules = x2sec::app::metric_rules();
        e.add_counters(engine_counters, rules);
        e.add_counters(rtp->counters(), rules);
        for (const auto* c : ro.extra_counters) e.add_counters(*c, rules);
        if (dp) x2sec::app::add_child_sa_traffic(e, dp->status());
        e.add_counters(metrics_counters, rules);
        e.add_counters(reload_counters, rules);
        e.add_registry(x2sec::metrics::registry(), rules);
        return e.text();
    };
    auto metrics =
        x2sec::app::start_metrics(cfg->metrics.listen, cfg->path + ": [metrics] listen", collect, metrics_counters);
    if (!metrics) {
        std::cerr << "x2sec ike run: " << metrics.error().detail() << "\n";
        return 1;
    }
    if (tun_backend) {
        if (auto st = tun_backend->start(); !st) {
            std::cerr << "x2sec ike run: ESP data plane: " << st.error().detail() << "\n";
            return 1;
        }
    }
    lg->info("x2sec IKE daemon running with {} peer(s), control socket {}", cfg->engine.peers.size(),
             ro.control_socket);
    int rc = (*rt)->run();
    inner->set_events({});
    if (tun_backend) {
        tun_backend->stop();
        nlohmann::json c = nlohmann::json::object();
        for (const auto& [k, v] : esp_counters.snapshot()) c[k] = v;
        lg->info("ESP data plane counters at exit: {}", c.dump());
    }
    return rc;
}

x2sec::app::Command reg(
    "ike", "IKEv2 daemon (run) and its control commands (list-sas, initiate, terminate, rekey)",
    [](CLI::App& app) -> x2sec::app::Runner {
        auto o = std::make_shared<Options>();
        app.require_subcommand(1);
        auto add_control = [&](CLI::App* s) {
            auto* c = s->add_option("--control", o->control, "control socket of the daemon");
            auto* f = s->add_option("--config", o->config,
                                    "the daemon's configuration file: its [runtime] control_socket is used")
                          ->check(CLI::ExistingFile);
            c->excludes(f);
        };
        auto add_target = [&](CLI::App* s) {
            auto* peer = s->add_option("--peer", o->peer, "peer name from the configuration");
            auto* id = s->add_option("--ike-sa", o->ike_sa, "IKE SA number (as list-sas prints after '#')");
            peer->excludes(id);
            s->add_option("--child", o->child, "Child SA name (only this Child SA)");
            s->add_option("--timeout", o->timeout_s, "seconds to wait for completion")->capture_default_str();
        };
        auto* run =
            app.add_subcommand("run", "run the IKE daemon in the foreground (SIGINT/SIGTERM: delete SAs, exit)");
        run->add_option("--config", o->config, "configuration file (TOML)")->required()->check(CLI::ExistingFile);
        run->add_option(
            "--control", o->control,
            std::string("control socket (default: [runtime] control_socket, else ") + kDefaultControl + ")");
        run->add_option("--debug-keylog", o->keylog,
                        "DEBUG ONLY: write IKE/ESP keys to Wireshark's ikev2_decryption_table and esp_sa in DIR");
        run->add_option("--shutdown-grace", o->grace_ms, "ms to wait for peers to answer deletes on exit")
            ->capture_default_str();
        run->add_option("--dataplane", o->dataplane,
                        "memory: record Child SAs only; tun: user-space ESP on a TUN device")
            ->check(CLI::IsMember({"memory", "tun"}))
            ->capture_default_str();
        run->add_option("--tun", o->tun, "TUN device name (--dataplane tun)")->capture_default_str();
        run->add_option("--tun-addr", o->tun_addr, "IPv4 address/prefix for the TUN device (inner address)");
        run->add_option("--mtu", o->mtu, "TUN MTU")->capture_default_str();
        run->add_option("--route", o->routes, "prefix to route into the TUN device (repeatable; --dataplane tun)");
        run->add_flag("--no-offload", o->no_offload,
                      "plain TUN (no IFF_VNET_HDR/TSO) and no UDP GSO/GRO (--dataplane tun)");
        auto* check = app.add_subcommand("check-config", "load and validate a configuration file, then exit");
        check->add_option("--config", o->config, "configuration file (TOML)")->required();
        auto* list = app.add_subcommand("list-sas", "list IKE and Child SAs (like swanctl --list-sas)");
        add_control(list);
        list->add_flag("--json", o->json_out, "print JSON");
        auto* counters =
            app.add_subcommand("counters", "print the daemon's counters (IKE, runtime, ESP data plane) as JSON");
        add_control(counters);
        auto* reload_crls =
            app.add_subcommand("reload-crls", "reload changed CRL files and refetch the CRL URLs now (like SIGHUP)");
        add_control(reload_crls);
        auto* init = app.add_subcommand("initiate", "establish the IKE SA and first Child SA with a peer");
        add_control(init);
        init->add_option("--peer", o->peer, "peer name")->required();
        init->add_option("--timeout", o->timeout_s, "seconds to wait")->capture_default_str();
        auto* term = app.add_subcommand("terminate", "delete an IKE SA (with its Child SAs) or one Child SA");
        add_control(term);
        add_target(term);
        auto* rekey = app.add_subcommand("rekey", "rekey an IKE SA or one Child SA");
        add_control(rekey);
        add_target(rekey);
        auto* load =
            app.add_subcommand("load", "IKE load generator: many initiators against one responder, report setups/s");
        auto load_run = x2sec::app::setup_ike_load(load);
        return [=]() -> int {
            if (load->parsed()) return load_run();
            if (run->parsed()) return cmd_run(*o);
            if (check->parsed()) return cmd_check(*o);
            if (list->parsed()) return cmd_list(*o);
            if (counters->parsed()) return cmd_counters(*o);
            if (reload_crls->parsed()) return cmd_reload_crls(*o);
            if (init->parsed()) return cmd_initiate(*o);
            if ((term->parsed() || rekey->parsed()) && o->peer.empty() && !o->ike_sa) {
                std::cerr << "x2sec ike: give --peer or --ike-sa\n";
                return 2;
            }
            if (term->parsed()) return cmd_terminate(*o);
            if (rekey->parsed()) return cmd_rekey(*o);
            return 2;
        };
    });

}  // namespace
