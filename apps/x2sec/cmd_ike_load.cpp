// `x2sec ike load`: many IKEv2 initiators against one responder (src/loadgen), e.g.
//
//   x2sec ike load --target 127.0.0.1:500 --auth cert --certs /tmp/load --count 1000
//       --write-responder-config /tmp/load/responder.toml      # once: credentials + responder
//       config
//   x2sec ike run --config /tmp/load/responder.toml --control /tmp/load/ike.sock &
//   x2sec ike load --target 127.0.0.1:500 --auth cert --certs /tmp/load --count 1000 --concurrency
//   50
//
// The option set is added to the `ike` command's "load" subcommand by cmd_ike.cpp.
#include <unistd.h>

#include <fstream>
#include <iostream>
#include <memory>

#include "registry.hpp"

#include <x2sec/common/bytes.hpp>
#include <x2sec/common/log.hpp>
#include <x2sec/loadgen/ike_load.hpp>

namespace x2sec::app {

namespace {

struct LoadCli {
    std::string target = "127.0.0.1:500", auth = "cert", certs, psk_base, psk_base_file, write_config, write_charon;
    std::vector<std::string> sources;
    loadgen::LoadOptions o;
    bool json = false, quiet = false;
    std::string log_level = "error";
};

std::optional<ike::Endpoint> parse_endpoint(const std::string& s, uint16_t def_port) {
    std::string host = s, port;
    if (!s.empty() && s[0] == '[') {  // [v6]:port
        auto e = s.find(']');
        if (e == std::string::npos) return std::nullopt;
        host = s.substr(1, e - 1);
        if (e + 1 < s.size()) {
            if (s[e + 1] != ':') return std::nullopt;
            port = s.substr(e + 2);
        }
    } else if (std::count(s.begin(), s.end(), ':') == 1) {
        host = s.substr(0, s.find(':'));
        port = s.substr(s.find(':') + 1);
    }
    auto a = IpAddress::parse(host);
    if (!a) return std::nullopt;
    ike::Endpoint ep{*a, def_port};
    if (!port.empty()) {
        char* end = nullptr;
        unsigned long p = std::strtoul(port.c_str(), &end, 10);
        if (!end || *end || p == 0 || p > 65535) return std::nullopt;
        ep.port = static_cast<uint16_t>(p);
    }
    return ep;
}

// "127.0.0.2" or an IPv4 range "127.0.0.2-127.0.0.20".
bool parse_sources(const std::string& s, std::vector<IpAddress>& out) {
    auto dash = s.find('-');
    if (dash == std::string::npos) {
        auto a = IpAddress::parse(s);
        if (!a) return false;
        out.push_back(*a);
        return true;
    }
    auto a = IpAddress::parse(s.substr(0, dash)), b = IpAddress::parse(s.substr(dash + 1));
    if (!a || !b || a->v6 || b->v6) return false;
    auto num = [](const IpAddress& x) {
        return (uint32_t(x.bytes[0]) << 24) | (uint32_t(x.bytes[1]) << 16) | (uint32_t(x.bytes[2]) << 8) | x.bytes[3];
    };
    uint32_t lo = num(*a), hi = num(*b);
    if (hi < lo || hi - lo >= 65536) return false;
    for (uint64_t v = lo; v <= hi; ++v)
        out.push_back(IpAddress::v4(uint8_t(v >> 24), uint8_t(v >> 16), uint8_t(v >> 8), uint8_t(v)));
    return true;
}

int run(LoadCli& c) {
    const char* me = "x2sec ike load";
    log::set_level(c.log_level);
    auto ep = parse_endpoint(c.target, 500);
    if (!ep) {
        std::cerr << me << ": bad --target '" << c.target << "' (ADDR, ADDR:PORT or [V6]:PORT)\n";
        return 2;
    }
    c.o.target = *ep;
    for (const auto& s : c.sources)
        if (!parse_sources(s, c.o.sources)) {
            std::cerr << me << ": bad --source '" << s << "' (an address or an IPv4 range A-B)\n";
            return 2;
        }
    std::optional<loadgen::Credentials> creds;
    if (c.auth == "cert") {
        if (c.certs.empty()) {
            std::cerr << me << ": --auth cert needs --certs DIR (created and filled when missing)\n";
            return 2;
        }
        auto r = loadgen::prepare_certs(c.certs, c.o.count, c.o.realm, c.o.responder_id);
        if (!r) {
            std::cerr << me << ": " << r.error().detail() << "\n";
            return 1;
        }
        creds = std::move(*r);
        c.o.certs = &*creds;
        c.o.auth = loadgen::LoadAuth::Cert;
    } else {
        c.o.auth = loadgen::LoadAuth::Psk;
        std::string base = c.psk_base;
        if (!c.psk_base_file.empty()) {
            std::ifstream f(c.psk_base_file, std::ios::binary);
            if (!f) {
                std::cerr << me << ": cannot read " << c.psk_base_file << "\n";
                return 1;
            }
            base.assign(std::istreambuf_iterator<char>(f), {});
            if (!base.empty() && base.back() == '\n') base.pop_back();
        }
        if (base.empty()) {
            std::cerr << me << ": --auth psk needs --psk-base TEXT or --psk-base-file FILE\n";
            return 2;
        }
        c.o.psk_base = SecureBytes(BytesView(reinterpret_cast<const uint8_t*>(base.data()), base.size()));
        // The secret's plain copies are wiped (a store into memory about to be freed may be elided;
        // secure_zero's may not): the one read from the file and the option's own.
        secure_zero(base.data(), base.size());
        secure_zero(c.psk_base.data(), c.psk_base.size());
    }
    if (!c.write_config.empty() || !c.write_charon.empty()) {
        if (!c.write_charon.empty()) {
            auto t = loadgen::charon_swanctl_conf(c.o);
            if (!t) {
                std::cerr << me << ": " << t.error().detail() << "\n";
                return 1;
            }
            if (auto st = loadgen::write_private_file(c.write_charon, *t); !st) {
                std::cerr << me << ": " << st.error().detail() << "\n";
                return 1;
            }
            std::cout << "wrote " << c.write_charon << " (" << c.o.count << " initiators)\n";
            if (c.write_config.empty()) return 0;
        }
        auto t = loadgen::responder_config_toml(c.o);
        if (!t) {
            std::cerr << me << ": " << t.error().detail() << "\n";
            return 1;
        }
        if (auto st = loadgen::write_private_file(c.write_config, *t); !st) {
            std::cerr << me << ": " << st.error().detail() << "\n";
            return 1;
        }
        std::cout << "wrote " << c.write_config << " (" << c.o.count << " initiators)\n";
        return 0;
    }
    if (!c.quiet && ::isatty(STDERR_FILENO)) c.o.progress = &std::cerr;
    auto rep = loadgen::run_load(c.o);
    if (!rep) {
        std::cerr << me << ": " << rep.error().detail() << "\n";
        return 1;
    }
    if (c.json)
        std::cout << rep->to_json().dump(2) << "\n";
    else
        std::cout << rep->to_text();
    return rep->succeeded == rep->attempted && rep->attempted == c.o.count ? 0 : 3;
}

}  // namespace

// Adds the options to `sub` and returns the runner (cmd_ike.cpp calls this for "load").
Runner setup_ike_load(CLI::App* sub) {
    auto c = std::make_shared<LoadCli>();
    auto& o = c->o;
    sub->add_option("--target", c->target, "responder ADDR[:PORT] or [V6]:PORT")->capture_default_str();
    sub->add_option("--target-natt-port", o.target_natt_port,
                    "responder's NAT-T port (written to the responder config)")
        ->capture_default_str();
    sub->add_option("--source", c->sources, "local address or IPv4 range A-B (repeatable; default 127.0.0.1 / ::1)");
    sub->add_option("--ports", o.ports_per_source, "UDP source ports per source address")->capture_default_str();
    sub->add_option("--count", o.count, "total setups (one identity each)")->capture_default_str();
    sub->add_option("--concurrency", o.concurrency, "setups in flight at most")->capture_default_str();
    sub->add_option("--rate", o.rate, "setups started per second (0 = as fast as --concurrency allows)")
        ->capture_default_str();
    sub->add_option("--duration", o.duration_s, "time bound in seconds")->capture_default_str();
    sub->add_option("--auth", c->auth, "cert or psk")->check(CLI::IsMember({"cert", "psk"}))->capture_default_str();
    sub->add_option("--certs", c->certs,
                    "certificate directory (ca.pem, responder.pem, initiators/<i>.pem; missing ones issued)");
    sub->add_option("--psk-base", c->psk_base, "base secret: PSK of identity X = HMAC-SHA256(base, X)");
    sub->add_option("--psk-base-file", c->psk_base_file, "file holding the base secret (one trailing newline dropped)");
    sub->add_option("--realm", o.realm, "identities are n<i>.<realm>")->capture_default_str();
    sub->add_option("--responder-id", o.responder_id, "responder's FQDN identity")->capture_default_str();
    sub->add_option("--ike-proposal", o.ike_proposal, "IKE proposal")->capture_default_str();
    sub->add_option("--esp-proposal", o.esp_proposal, "ESP proposal")->capture_default_str();
    sub->add_flag("--rekey-child", o.rekey_child, "after setup: rekey the Child SA");
    sub->add_flag("--rekey-ike", o.rekey_ike, "after setup: rekey the IKE SA");
    sub->add_flag("--delete", o.delete_after, "after setup (and rekeys): delete the IKE SA");
    sub->add_option("--retransmit-timeout", o.retransmit_timeout_ms, "ms before the first retransmission")
        ->capture_default_str();
    sub->add_option("--retransmit-tries", o.retransmit_tries, "retransmissions before a setup times out")
        ->capture_default_str();
    sub->add_option("--retransmit-jitter", o.retransmit_jitter_percent,
                    "percent: each retransmission wait shortened by a random 0..N % (initiators out of step)")
        ->check(CLI::Range(0u, 100u));
    sub->add_option("--write-responder-config", c->write_config,
                    "write the x2sec responder TOML for these identities/credentials to FILE (0600) and exit");
    sub->add_option("--hold", o.hold_s, "seconds to keep the SAs after the last setup (answering DPD and rekeys)")
        ->capture_default_str();
    sub->add_option("--write-charon-config", c->write_charon,
                    "write the strongSwan swanctl.conf for the same load to FILE (0600) and exit "
                    "(docs/bench-ike.md)");
    sub->add_option("--responder-cookie-threshold", o.responder_cookie_threshold,
                    "cookie_threshold written to the x2sec responder config")
        ->capture_default_str();
    sub->add_flag("--json", c->json, "print the report as JSON");
    sub->add_flag("--quiet", c->quiet, "no progress line on stderr");
    sub->add_option("--log-level", c->log_level, "engine log level")->capture_default_str();
    return [c]() -> int { return run(*c); };
}

}  // namespace x2sec::app
