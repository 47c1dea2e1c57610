// x2sec esp: run the user-space ESP data plane on a TUN device with manually keyed SAs (like
// `ip xfrm state add`, for labs and tests).  With --control, commands on stdin install,
// switch and delete SAs while traffic flows (see docs/esp.md):
//   add spi-in=HEX spi-out=HEX key-in=HEX key-out=HEX [integ-in=HEX integ-out=HEX]
//   switch OLD_SPI_IN NEW_SPI_IN        (outbound moves to the new SA)
//   del SPI_IN
//   status                              (one JSON line: SAs and counters)
//   quit
#include <fcntl.h>
#include <poll.h>
#include <csignal>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cstring>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <tuple>
#include <x2sec/common/log.hpp>
#include <x2sec/esp/tun_backend.hpp>
#include <x2sec/common/rng.hpp>
#include <x2sec/config/engine_config.hpp>
#include <x2sec/esp/natt_transport.hpp>
#include <x2sec/ikev2/engine.hpp>
#include <x2sec/runtime/engine_api.hpp>
#include <x2sec/runtime/ike_runtime.hpp>

#include "daemon_metrics.hpp"
#include "ike_reload.hpp"
#include "registry.hpp"

namespace {

using namespace x2sec;

struct EspOpts {
    std::string tun = "x2s0", tun_addr, local = "192.0.2.1", remote = "192.0.2.2";
    uint16_t port = 4500, remote_port = 4500;
    std::string spi_in, spi_out, cipher = "aes128gcm", key_in, key_out, integ_in, integ_out;
    std::vector<std::string> local_ts, remote_ts, routes;
    bool esn = false, control = false, no_offload = false, no_coalesce = false;
    std::string encap = "yes";  // static keys: ESP in UDP (yes) or raw ESP, IP protocol 50 (no)
    std::string mode = "tunnel";
    std::string ike_config;      // x2sec esp --ike-config: Child SAs from the IKE daemon
    std::string metrics_listen;  // --metrics-listen (else [metrics] listen of --ike-config): /metrics
    uint32_t replay_window = 1024;
    size_t batch = 32;
    int mtu = 1400;
    unsigned keepalive = 0;
    uint64_t soft_packets = 0, hard_packets = 0, soft_bytes = 0, hard_bytes = 0, soft_seconds = 0, hard_seconds = 0;
};

std::optional<EspCipher> parse_cipher(const std::string& s) {
    if (s == "aes128gcm" || s == "aes128gcm16") return EspCipher::AesGcm16_128;
    if (s == "aes256gcm" || s == "aes256gcm16") return EspCipher::AesGcm16_256;
    if (s == "aes128-sha256") return EspCipher::AesCbc128_HmacSha256_128;
    if (s == "aes256-sha256") return EspCipher::AesCbc256_HmacSha256_128;
    return std::nullopt;
}

std::optional<uint32_t> parse_spi(const std::string& s) {
    try {
        size_t pos = 0;
        unsigned long v = std::stoul(s, &pos, 16);
        if (pos != s.size() || v == 0 || v > 0xffffffffUL) return std::nullopt;
        return static_cast<uint32_t>(v);
    } catch (...) {
        return std::nullopt;
    }
}

std::optional<TrafficSelector> parse_prefix(const std::string& s) {
    auto slash = s.find('/');
    auto addr = IpAddress::parse(s.substr(0, slash));
    if (!addr) return std::nullopt;
    unsigned len = addr->v6 ? 128 : 32;
    if (slash != std::string::npos) {
        try {
            len = static_cast<unsigned>(std::stoul(s.substr(slash + 1)));
        } catch (...) {
            return std::nullopt;
        }
        if (len > (addr->v6 ? 128u : 32u)) return std::nullopt;
    }
    return TrafficSelector::from_prefix(*addr, len);
}

SecureBytes secret_hex(const std::string& h, const char* what) {
    auto b = from_hex(h);
    if (!b) throw std::runtime_error(std::string(what) + ": not hex");
    SecureBytes s(*b);
    secure_zero(b->data(), b->size());
    return s;
}

// Builds SA params from the command line, overridden by key=value pairs of an `add` command.
ChildSaParams make_params(const EspOpts& o, const std::map<std::string, std::string>& kv) {
    auto get = [&](const char* k, const std::string& dflt) {
        auto it = kv.find(k);
        return it == kv.end() ? dflt : it->second;
    };
    ChildSaParams p;
    p.reqid = 1;
    p.name = "manual";
    auto c = parse_cipher(get("cipher", o.cipher));
    if (!c) throw std::runtime_error("unknown cipher (aes128gcm, aes256gcm, aes128-sha256, aes256-sha256)");
    p.cipher = *c;
    auto si = parse_spi(get("spi-in", o.spi_in)), so = parse_spi(get("spi-out", o.spi_out));
    if (!si || !so) throw std::runtime_error("spi-in/spi-out: non-zero 32-bit hex values needed");
    p.spi_in = *si;
    p.spi_out = *so;
    p.esn = o.esn;
    p.mode = o.mode == "transport" ? IpsecMode::Transport : IpsecMode::Tunnel;
    auto la = IpAddress::parse(o.local), ra = IpAddress::parse(o.remote);
    if (!la || !ra) throw std::runtime_error("--local/--remote: bad address");
    p.local_addr = *la;
    p.remote_addr = *ra;
    p.local_port = o.port;
    p.remote_port = o.remote_port;
    p.udp_encap = o.encap == "yes";
    // `add ... local-ts=P[,P...] remote-ts=P[,P...] reqid=N` (control) override the command line's
    // selectors and reqid, so one process can hold many Child SAs with distinct policies.
    auto prefixes = [&](const char* key, const std::vector<std::string>& dflt) {
        auto it = kv.find(key);
        if (it == kv.end()) return dflt;
        std::vector<std::string> v;
        std::stringstream ss(it->second);
        for (std::string t; std::getline(ss, t, ',');) v.push_back(t);
        return v;
    };
    for (auto& s : prefixes("local-ts", o.local_ts)) {
        auto ts = parse_prefix(s);
        if (!ts) throw std::runtime_error("bad local-ts " + s);
        p.ts_local.push_back(*ts);
    }
    for (auto& s : prefixes("remote-ts", o.remote_ts)) {
        auto ts = parse_prefix(s);
        if (!ts) throw std::runtime_error("bad remote-ts " + s);
        p.ts_remote.push_back(*ts);
    }
    if (auto it = kv.find("reqid"); it != kv.end()) {
        char* end = nullptr;
        unsigned long r = std::strtoul(it->second.c_str(), &end, 10);
        if (!end || *end || r == 0 || r > 0xffffffffUL) throw std::runtime_error("bad reqid " + it->second);
        p.reqid = static_cast<uint32_t>(r);
    }
    p.keys_in.enc_key = secret_hex(get("key-in", o.key_in), "key-in");
    p.keys_out.enc_key = secret_hex(get("key-out", o.key_out), "key-out");
    p.keys_in.integ_key = secret_hex(get("integ-in", o.integ_in), "integ-in");
    p.keys_out.integ_key = secret_hex(get("integ-out", o.integ_out), "integ-out");
    p.replay_window = o.replay_window;
    p.lifetime = {o.soft_seconds, o.hard_seconds, o.soft_bytes, o.hard_bytes, o.soft_packets, o.hard_packets};
    return p;
}

int run_ip(const std::vector<std::string>& args) {
    pid_t pid = ::fork();
    if (pid == 0) {
        std::vector<char*> argv;
        argv.push_back(const_cast<char*>("ip"));
        for (auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
        argv.push_back(nullptr);
        ::execvp("ip", argv.data());
        _exit(127);
    }
    int st = 0;
    ::waitpid(pid, &st, 0);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 1;
}

nlohmann::json status_json(esp::DataPlane& dp) {
    nlohmann::json j;
    j["sas"] = nlohmann::json::array();
    for (auto& s : dp.status()) {
        char in[16], out[16];
        std::snprintf(in, sizeof(in), "%08x", s.spi_in);
        std::snprintf(out, sizeof(out), "%08x", s.spi_out);
        j["sas"].push_back({{"spi_in", in},
                            {"spi_out", out},
                            {"outbound", s.outbound_active},
                            {"in_packets", s.in_packets},
                            {"in_bytes", s.in_bytes},
                            {"out_packets", s.out_packets},
                            {"out_bytes", s.out_bytes},
                            {"replay_top", s.replay_top},
                            {"udp_encap", s.udp_encap}});
    }
    for (auto& [k, v] : dp.counters().snapshot()) j["counters"][k] = v;
    return j;
}

std::string handle_command(const std::string& line, const EspOpts& o, esp::DataPlane& dp, bool& quit) {
    std::istringstream in(line);
    std::string cmd;
    in >> cmd;
    if (cmd.empty()) return "";
    try {
        if (cmd == "add") {
            std::map<std::string, std::string> kv;
            std::string tok;
            while (in >> tok) {
                auto eq = tok.find('=');
                if (eq == std::string::npos) return "error: expected key=value, got " + tok;
                kv[tok.substr(0, eq)] = tok.substr(eq + 1);
            }
            auto st = dp.install(make_params(o, kv));
            return st.ok() ? "ok" : "error: " + st.error().to_string();
        }
        if (cmd == "switch" || cmd == "del") {
            std::string a, b;
            in >> a >> b;
            auto x = parse_spi(a);
            if (!x) return "error: bad SPI";
            if (cmd == "del") {
                auto st = dp.remove(*x);
                return st.ok() ? "ok" : "error: " + st.error().to_string();
            }
            auto y = parse_spi(b);
            if (!y) return "error: bad SPI";
            auto st = dp.set_outbound(*x, *y);
            return st.ok() ? "ok" : "error: " + st.error().to_string();
        }
        if (cmd == "status") return status_json(dp).dump();
        if (cmd == "quit") {
            quit = true;
            return "ok";
        }
        return "error: unknown command " + cmd;
    } catch (const std::exception& e) {
        return std::string("error: ") + e.what();
    }
}

int run_esp(const EspOpts& o) {
    // Signals go to the signalfd of this thread; block them before starting threads.
    // SIGHUP is blocked in every thread as well: with --ike-config it reloads the configuration
    // (app::CrlReloadOnHup takes it), with static keys it is logged and ignored (the keys are
    // command-line options: nothing to reload) instead of ending the tunnel.
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    sigset_t all = sigs;
    sigaddset(&all, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &all, nullptr);
    int sfd = ::signalfd(-1, o.ike_config.empty() ? &all : &sigs, SFD_CLOEXEC);

    Counters counters;
    esp::DataPlane dp(counters);
    dp.set_events(
        {[](uint32_t spi) { std::cout << "event soft_expired " << std::hex << spi << std::dec << std::endl; },
         [](uint32_t spi) { std::cout << "event hard_expired " << std::hex << spi << std::dec << std::endl; }});
    if (!o.spi_in.empty()) {
        auto st = dp.install(make_params(o, {}));
        if (!st.ok()) {
            std::cerr << "x2sec esp: " << st.error().to_string() << "\n";
            return 1;
        }
    }
    auto tun = esp::TunDevice::open(o.tun, !o.no_offload);
    if (!tun.ok()) {
        std::cerr << "x2sec esp: " << tun.error().to_string() << "\n";
        return 1;
    }
    Status st = tun->set_mtu(o.mtu);
    if (st.ok() && !o.tun_addr.empty()) {
        auto slash = o.tun_addr.find('/');
        auto a = IpAddress::parse(o.tun_addr.substr(0, slash));
        if (!a) {
            std::cerr << "x2sec esp: bad --tun-addr\n";
            return 1;
        }
        unsigned len = slash == std::string::npos ? 32 : unsigned(std::stoul(o.tun_addr.substr(slash + 1)));
        st = tun->add_ipv4(*a, len);
    }
    if (st.ok()) st = tun->set_up();
    if (!st.ok()) {
        std::cerr << "x2sec esp: " << st.error().to_string() << "\n";
        return 1;
    }
    std::string tun_name = tun->name();
    for (auto& r : o.routes) {
        if (!parse_prefix(r)) {
            std::cerr << "x2sec esp: bad --route " << r << "\n";
            return 1;
        }
        if (run_ip({"route", "replace", r, "dev", tun_name}) != 0) {
            std::cerr << "x2sec esp: ip route replace " << r << " dev " << tun_name << " failed\n";
            return 1;
        }
    }
    esp::TunBackendOptions bo;
    bo.tun_name = tun_name;
    bo.bind_addr = *IpAddress::parse(o.local);
    bo.port = o.port;
    bo.batch = o.batch;
    if (!o.no_offload && bo.batch < 64) bo.batch = 64;  // a TSO super-packet is ~48 segments
    bo.keepalive_ms = Millis(o.keepalive) * 1000;
    bo.udp_offload = !o.no_offload;
    bo.tun_coalesce = !o.no_coalesce;
    auto backend = esp::TunBackend::create(dp, std::move(*tun), bo);
    if (!backend.ok()) {
        std::cerr << "x2sec esp: " << backend.error().to_string() << "\n";
        return 1;
    }
    (void)(*backend)->start();
    // /metrics: the data plane's counters and per-Child SA traffic (DataPlane::status() is
    // thread-safe), collected on the metrics listener's own thread.
    Counters metrics_counters;
    Counters reload_counters;  // runtime.reload.* (SIGHUP with --ike-config)
    std::unique_ptr<net::MetricsServer> metrics;
    auto start_metrics = [&](const std::string& listen, const std::string& where) {
        auto m = app::start_metrics(
            listen, where,
            [&] {
                metrics::Exposition e;
                app::add_build_info(e, "esp");
                e.add("x2sec_esp_sas", metrics::Type::Gauge, "ESP SAs installed in the data plane", {},
                      double(dp.sa_count()));
                app::add_child_sa_traffic(e, dp.status());
                e.add_counters(counters, app::metric_rules());
                e.add_counters(metrics_counters, app::metric_rules());
                e.add_counters(reload_counters, app::metric_rules());
                e.add_registry(metrics::registry(), app::metric_rules());
                return e.text();
            },
            metrics_counters);
        if (!m) {
            std::cerr << "x2sec esp: " << m.error().detail() << "\n";
            return false;
        }
        metrics = std::move(*m);
        return true;
    };
    if (!o.metrics_listen.empty() && !start_metrics(o.metrics_listen, "--metrics-listen")) {
        (*backend)->stop();
        return 1;
    }
    std::cout << "ready " << tun_name << " " << o.local << ":" << (*backend)->local_port() << std::endl;
    if (!o.ike_config.empty()) {
        // IKE daemon on the same process: the engine installs Child SAs into this data plane
        // (ChildSaBackend) and shares the UDP 4500 socket through the NattTransport adapter.
        auto cfg = config::load(o.ike_config);
        if (!cfg) {
            std::cerr << "x2sec esp: " << cfg.error().detail() << "\n";
            (*backend)->stop();
            return 1;
        }
        if (!metrics && !start_metrics(cfg->metrics.listen, o.ike_config + ": [metrics] listen")) {
            (*backend)->stop();
            return 1;
        }
        pthread_sigmask(SIG_UNBLOCK, &sigs, nullptr);  // the runtime handles SIGINT/SIGTERM
        runtime::RuntimeOptions ro;
        ro.listen = cfg->runtime.listen;
        ro.ike_port = cfg->runtime.ike_port;
        ro.natt_port = cfg->runtime.natt_port;
        ro.control_socket = cfg->runtime.control_socket;  // `x2sec ike list-sas/initiate --control` reach it
        ro.handle_signals = true;
        ro.natt_factory = esp::make_natt_factory(**backend);
        SystemClock clock;
        ro.extra_counters.push_back(&counters);
        ro.extra_counters.push_back(&reload_counters);  // `x2sec ike counters`
        auto engine = std::make_unique<runtime::EngineAdapter<ike::Engine>>(cfg->engine, dp, os_rng());
        ike::Engine* engine_ptr = &engine->engine();  // SIGHUP's update_peer, on the runtime's loop only
        auto rt = runtime::IkeRuntime::create(cfg->engine, std::move(engine), ro, clock);
        if (!rt) {
            std::cerr << "x2sec esp: " << rt.error().detail() << "\n";
            (*backend)->stop();
            return 1;
        }
        // SIGHUP: CRLs, then the peers and their Child SA policies (as `ike run`); SAs kept.
        auto revocation = std::make_shared<app::CurrentRevocation>(cfg->revocation);
        app::PeerReload peer_reload{o.ike_config, cfg->engine.peers, rt->get(),
                                    engine_ptr,   &reload_counters,  revocation};
        peer_reload.log_level = cfg->runtime.log_level;
        app::CrlReloadOnHup hup(revocation, peer_reload);
        // Lifetime events from the data plane's threads are queued for the runtime's loop, which
        // wakes and hands them to the engine (soft -> CREATE_CHILD_SA rekey, hard -> delete).
        dp.set_events((*rt)->child_sa_events());
        int rc = (*rt)->run();
        dp.set_events({});
        (*backend)->stop();
        std::cerr << status_json(dp).dump() << "\n";
        return rc;
    }

    std::string pending;
    bool quit = false, stdin_open = o.control;
    while (!quit) {
        pollfd p[2] = {{sfd, POLLIN, 0}, {stdin_open ? 0 : -1, POLLIN, 0}};
        if (::poll(p, 2, -1) < 0) continue;
        if (p[0].revents) {
            signalfd_siginfo si{};
            if (::read(sfd, &si, sizeof si) == static_cast<ssize_t>(sizeof si) && si.ssi_signo == SIGHUP) {
                counters.inc("esp.reload.static_keys");
                log::get("esp")->info("SIGHUP: static keys from the command line, nothing to reload; SAs kept");
                continue;
            }
            break;
        }
        if (p[1].revents) {
            char buf[4096];
            ssize_t n = ::read(0, buf, sizeof(buf));
            if (n <= 0) {
                stdin_open = false;  // EOF: keep running until a signal
                continue;
            }
            pending.append(buf, size_t(n));
            size_t nl;
            while ((nl = pending.find('\n')) != std::string::npos) {
                std::string line = pending.substr(0, nl);
                pending.erase(0, nl + 1);
                std::string reply = handle_command(line, o, dp, quit);
                if (!reply.empty()) std::cout << reply << std::endl;
            }
            secure_zero(buf, sizeof(buf));
        }
    }
    (*backend)->stop();
    std::cerr << status_json(dp).dump() << "\n";
    return 0;
}

}  // namespace

static x2sec::app::Command reg(
    "esp", "User-space ESP tunnel on a TUN device with static keys (manual keying, labs and tests)", [](CLI::App& sub) {
        auto o = std::make_shared<EspOpts>();
        sub.add_option("--tun", o->tun, "TUN device name")->capture_default_str();
        sub.add_option("--tun-addr", o->tun_addr, "IPv4 address/prefix for the TUN device");
        sub.add_option("--mtu", o->mtu, "TUN MTU")->capture_default_str();
        sub.add_option("--local", o->local, "local outer address")->capture_default_str();
        sub.add_option("--remote", o->remote, "remote outer address")->capture_default_str();
        sub.add_option("--port", o->port, "local UDP encapsulation port")->capture_default_str();
        sub.add_option("--remote-port", o->remote_port, "remote UDP port")->capture_default_str();
        sub.add_option("--spi-in", o->spi_in, "inbound SPI (hex); omit to start without SAs");
        sub.add_option("--spi-out", o->spi_out, "outbound SPI (hex)");
        sub.add_option("--cipher", o->cipher, "aes128gcm, aes256gcm, aes128-sha256, aes256-sha256")
            ->capture_default_str();
        sub.add_option("--key-in", o->key_in, "inbound key hex (GCM: key || 4-octet salt)");
        sub.add_option("--key-out", o->key_out, "outbound key hex");
        sub.add_option("--integ-in", o->integ_in, "inbound HMAC key hex (CBC)");
        sub.add_option("--integ-out", o->integ_out, "outbound HMAC key hex (CBC)");
        sub.add_option("--local-ts", o->local_ts, "local traffic selector prefix (repeatable)");
        sub.add_option("--remote-ts", o->remote_ts, "remote traffic selector prefix (repeatable)");
        sub.add_option("--route", o->routes, "prefix to route into the TUN device (repeatable)");
        sub.add_flag("--esn", o->esn, "extended sequence numbers");
        sub.add_option("--encap", o->encap,
                       "static keys: yes = ESP in UDP (RFC 3948), no = raw ESP (IP protocol 50, root)")
            ->check(CLI::IsMember({"yes", "no"}))
            ->capture_default_str();
        sub.add_option("--mode", o->mode, "tunnel or transport")
            ->check(CLI::IsMember({"tunnel", "transport"}))
            ->capture_default_str();
        sub.add_option("--replay-window", o->replay_window, "anti-replay window")->capture_default_str();
        sub.add_option("--batch", o->batch, "packets per recvmmsg/sendmmsg")->capture_default_str();
        sub.add_option("--keepalive", o->keepalive, "NAT keepalive interval in seconds (0 = off)");
        // --soft-<unit> / --hard-<unit>: the static SA's lifetimes.
        for (auto [unit, soft, hard] : {std::tuple{"packets", &o->soft_packets, &o->hard_packets},
                                        std::tuple{"bytes", &o->soft_bytes, &o->hard_bytes},
                                        std::tuple{"seconds", &o->soft_seconds, &o->hard_seconds}}) {
            sub.add_option(std::string("--soft-") + unit, *soft, std::string("soft lifetime (") + unit + ")");
            sub.add_option(std::string("--hard-") + unit, *hard, std::string("hard lifetime (") + unit + ")");
        }
        sub.add_flag("--no-offload", o->no_offload, "no offloads: plain TUN (no IFF_VNET_HDR/TSO) and no UDP GSO/GRO");
        sub.add_flag("--no-coalesce", o->no_coalesce,
                     "write every decrypted packet to the TUN device on its own (no TSO super-packets)");
        sub.add_option("--ike-config", o->ike_config,
                       "run the IKE daemon with this configuration (TOML) on the data plane: "
                       "negotiated Child SAs carry traffic, --local must be the peer's local_addr");
        sub.add_flag("--control", o->control, "read add/switch/del/status/quit commands on stdin");
        sub.add_option("--metrics-listen", o->metrics_listen,
                       "serve Prometheus /metrics on ADDRESS:PORT (default: [metrics] listen of --ike-config)");
        return [o]() -> int { return run_esp(*o); };
    });
