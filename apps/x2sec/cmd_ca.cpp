// `x2sec ca serve`: the operator RA/CA (CMPv2 over HTTP and HTTPS, CRL over HTTP).
// Configuration from --config <toml> and/or flags (flags win); see docs/pki-cmp.md.
#include <signal.h>
#include <algorithm>
#include <cctype>
#include <map>
#include <optional>
#include <fstream>
#include <iostream>
#include <toml++/toml.h>
#include <x2sec/cmp/http.hpp>
#include <x2sec/cmp/server.hpp>
#include <x2sec/common/file.hpp>
#include <x2sec/common/log.hpp>

#include "registry.hpp"

using namespace x2sec;

namespace {
struct CaOpts {
    std::string config, ca_dir, store = "ca.db", bind = "127.0.0.1", port_file, tls_cert, tls_key, crl_url;
    std::vector<std::string> vendor_roots;
    int port = 8080, tls_port = -1, threads = 8;
    int64_t max_body = 64 * 1024, validity_days = 365, max_header = 16 * 1024;
    int max_connections = 512, max_per_source = 32, request_timeout_ms = 10000, write_timeout_ms = 10000;
    bool allow_mismatch = false, no_implicit = false;
    std::string log_level = "info";
    std::optional<cmp::IssuanceProfile> default_profile;
    std::map<std::string, cmp::IssuanceProfile> profiles;
} o;

int fail(const std::string& m) {
    std::cerr << "x2sec ca: " << m << "\n";
    return 1;
}

// [profiles.<name>] (docs/pki-cmp.md "Certificate profiles"); "default" configures the
// default path.  Unknown keys and wrong types are errors, not ignored.
Result<cmp::IssuanceProfile> parse_profile(const std::string& path, const std::string& name, const toml::node& node) {
    const std::string where = path + ": [profiles." + name + "]";
    const toml::table* tab = node.as_table();
    if (!tab) return Error(ErrorDomain::Config, 0, where + " must be a table");
    if (name.empty() || name.size() > 64 ||
        !std::all_of(name.begin(), name.end(), [](char ch) {
            return std::isalnum(static_cast<unsigned char>(ch)) || ch == '-' || ch == '_' || ch == '.';
        }))
        return Error(ErrorDomain::Config, 0, where + ": a profile name is 1-64 letters, digits, '-', '_', '.'");
    cmp::IssuanceProfile p;
    p.name = name == "default" ? "" : name;
    auto strings = [&](const char* key, std::vector<std::string>& dst) -> Status {
        const toml::node* n = tab->get(key);
        if (!n) return ok_status();
        const toml::array* arr = n->as_array();
        if (!arr) return Error(ErrorDomain::Config, 0, where + ": " + key + " must be an array of strings");
        dst.clear();
        for (auto& v : *arr) {
            auto sv = v.value<std::string>();
            if (!sv) return Error(ErrorDomain::Config, 0, where + ": " + key + " must be an array of strings");
            dst.push_back(*sv);
        }
        return ok_status();
    };
    for (auto& [k, v] : *tab) {
        std::string key(k.str());
        if (key == "dns") X2SEC_TRY_STATUS(strings("dns", p.dns));
        else if (key == "ip") X2SEC_TRY_STATUS(strings("ip", p.ip));
        else if (key == "uri") X2SEC_TRY_STATUS(strings("uri", p.uri));
        else if (key == "required") X2SEC_TRY_STATUS(strings("required", p.required));
        else if (key == "validity_days") {
            auto d = v.value<int64_t>();
            if (!d) return Error(ErrorDomain::Config, 0, where + ": validity_days must be an integer");
            p.validity_days = *d;
        } else if (key == "approval") {
            auto a = v.value<std::string>();
            if (a && *a == "immediate") p.approval = cmp::Approval::Immediate;
            else if (a && *a == "manual") p.approval = cmp::Approval::Manual;
            else return Error(ErrorDomain::Config, 0, where + ": approval must be \"immediate\" or \"manual\"");
        } else {
            return Error(ErrorDomain::Config, 0,
                         where + ": unknown key '" + key + "' (dns, ip, uri, required, validity_days, approval)");
        }
    }
    if (auto st = p.validate(); !st) return Error(ErrorDomain::Config, 0, path + ": " + st.error().detail());
    return p;
}

Status load_toml(CaOpts& c, const std::string& path, CLI::App& sub) {
    toml::table t;
    try {
        t = toml::parse_file(path);
    } catch (const toml::parse_error& e) {
        std::ostringstream os;
        os << path << ":" << e.source().begin.line << ":" << e.source().begin.column << ": " << e.description();
        return Error(ErrorDomain::Config, 0, os.str());
    }
    auto set = [&](const char* flag, auto& dst, auto node) {
        if (sub.count(flag) == 0 && node) dst = *node;
    };
    set("--ca-dir", c.ca_dir, t["ca"]["dir"].value<std::string>());
    set("--store", c.store, t["ca"]["store"].value<std::string>());
    if (sub.count("--vendor-root") == 0)
        if (auto* arr = t["ca"]["vendor_roots"].as_array())
            for (auto& v : *arr)
                if (auto s = v.value<std::string>()) c.vendor_roots.push_back(*s);
    set("--bind", c.bind, t["http"]["bind"].value<std::string>());
    set("--port", c.port, t["http"]["port"].value<int>());
    set("--threads", c.threads, t["http"]["threads"].value<int>());
    set("--max-body", c.max_body, t["http"]["max_body"].value<int64_t>());
    set("--max-header", c.max_header, t["http"]["max_header"].value<int64_t>());
    set("--max-connections", c.max_connections, t["http"]["max_connections"].value<int>());
    set("--max-per-source", c.max_per_source, t["http"]["max_per_source"].value<int>());
    set("--request-timeout-ms", c.request_timeout_ms, t["http"]["request_timeout_ms"].value<int>());
    set("--write-timeout-ms", c.write_timeout_ms, t["http"]["write_timeout_ms"].value<int>());
    set("--tls-port", c.tls_port, t["https"]["port"].value<int>());
    set("--tls-cert", c.tls_cert, t["https"]["cert"].value<std::string>());
    set("--tls-key", c.tls_key, t["https"]["key"].value<std::string>());
    set("--crl-url", c.crl_url, t["policy"]["crl_url"].value<std::string>());
    set("--validity-days", c.validity_days, t["policy"]["validity_days"].value<int64_t>());
    set("--allow-identity-mismatch", c.allow_mismatch, t["policy"]["allow_identity_mismatch"].value<bool>());
    if (auto ic = t["policy"]["implicit_confirm"].value<bool>(); ic && sub.count("--no-implicit-confirm") == 0)
        c.no_implicit = !*ic;
    if (auto* profs = t["profiles"].as_table()) {
        for (auto& [key, node] : *profs) {
            std::string name(key.str());
            X2SEC_TRY(auto prof, parse_profile(path, name, node));
            if (name == "default") c.default_profile = std::move(prof);
            else c.profiles[name] = std::move(prof);
        }
    } else if (t.contains("profiles")) {
        return Error(ErrorDomain::Config, 0, path + ": [profiles] must be a table of [profiles.<name>] tables");
    }
    return ok_status();
}
}  // namespace

static app::Command reg("ca", "Operator RA/CA: CMPv2 server (3GPP vendor-certificate mode)", [](CLI::App& sub) {
    sub.require_subcommand(1);
    auto* serve = sub.add_subcommand("serve", "Serve CMP over HTTP/HTTPS until SIGINT/SIGTERM");
    serve->add_option("--config", o.config, "TOML configuration file");
    serve->add_option("--ca-dir", o.ca_dir, "operator CA directory (x2sec pki init-operator-ca)");
    serve->add_option("--vendor-root", o.vendor_roots, "trusted vendor root (PEM), repeatable");
    serve->add_option("--store", o.store, "sqlite:<file> | postgresql:<conninfo> | <file>");
    serve->add_option("--bind", o.bind, "listen address");
    serve->add_option("--port", o.port, "HTTP port (0: ephemeral)");
    serve->add_option("--tls-port", o.tls_port, "HTTPS port (needs --tls-cert/--tls-key; default: RA credential)");
    serve->add_option("--tls-cert", o.tls_cert, "TLS server certificate chain (PEM)");
    serve->add_option("--tls-key", o.tls_key, "TLS server key");
    serve->add_option("--threads", o.threads, "worker threads per listener");
    serve->add_option("--max-body", o.max_body, "largest accepted request body (larger: 413)");
    serve->add_option("--max-header", o.max_header, "largest request line + header block (larger: 431)");
    serve->add_option("--max-connections", o.max_connections, "concurrent connections per listener (more: 503)");
    serve->add_option("--max-per-source", o.max_per_source, "concurrent connections from one address (more: 503)");
    serve->add_option("--request-timeout-ms", o.request_timeout_ms,
                      "total time from accept to a complete request, TLS handshake included (then 408)");
    serve->add_option("--write-timeout-ms", o.write_timeout_ms, "time to write a response");
    serve->add_option("--crl-url", o.crl_url, "cRLDistributionPoints URL written into issued certificates");
    serve->add_option("--validity-days", o.validity_days, "validity of issued certificates");
    serve->add_flag("--allow-identity-mismatch", o.allow_mismatch, "issue identities other than the vendor certificate's");
    serve->add_flag("--no-implicit-confirm", o.no_implicit, "always require certConf");
    serve->add_option("--port-file", o.port_file, "write the bound HTTP port here once listening");
    serve->add_option("--log-level", o.log_level, "trace|debug|info|warn|error");
    return [serve]() -> int {
        log::set_level(o.log_level);
        if (!o.config.empty())
            if (auto st = load_toml(o, o.config, *serve); !st) return fail(st.error().detail());
        if (o.ca_dir.empty()) return fail("--ca-dir (or [ca] dir) is required");
        auto cfg = cmp::ServerConfig::from_ca_dir(o.ca_dir, o.vendor_roots);
        if (!cfg) return fail(cfg.error().detail());
        cfg->policy.allow_identity_mismatch = o.allow_mismatch;
        cfg->policy.grant_implicit_confirm = !o.no_implicit;
        cfg->policy.validity_days = o.validity_days;
        if (!o.crl_url.empty()) cfg->policy.crl_urls = {o.crl_url};
        if (o.default_profile) cfg->policy.default_profile = *o.default_profile;
        cfg->policy.profiles = o.profiles;
        for (auto& [name, p] : o.profiles)
            if (p.approval == cmp::Approval::Manual)
                return fail("[profiles." + name + "]: approval = \"manual\" is not implemented yet");
        if (o.default_profile && o.default_profile->approval == cmp::Approval::Manual)
            return fail("[profiles.default]: approval = \"manual\" is not implemented yet");
        auto store = cmp::open_store(o.store);
        if (!store) return fail(store.error().detail());
        // Block the signals before any thread starts so that only sigwait sees them.
        sigset_t set;
        sigemptyset(&set);
        sigaddset(&set, SIGINT);
        sigaddset(&set, SIGTERM);
        pthread_sigmask(SIG_BLOCK, &set, nullptr);
        cmp::Server server(std::move(*cfg), **store);
        cmp::HttpOptions h;
        h.bind = o.bind;
        h.port = o.port;
        h.threads = o.threads;
        if (o.max_body < 1 || o.max_header < 1) return fail("--max-body and --max-header must be positive");
        h.max_body = static_cast<size_t>(o.max_body);
        h.max_header = static_cast<size_t>(o.max_header);
        h.max_connections = o.max_connections;
        h.max_per_source = o.max_per_source;
        h.request_timeout_ms = o.request_timeout_ms;
        h.write_timeout_ms = o.write_timeout_ms;
        cmp::HttpServer http(server, h);
        if (auto st = http.start(); !st) return fail(st.error().detail());
        std::unique_ptr<cmp::HttpServer> https;
        pki::X509Ptr tls_cert;
        pki::PkeyPtr tls_key;
        std::vector<pki::X509Ptr> tls_chain;
        if (o.tls_port >= 0) {
            auto certs = pki::load_certs_pem(o.tls_cert.empty() ? o.ca_dir + "/ra.crt" : o.tls_cert);
            if (!certs) return fail(certs.error().detail());
            auto key = pki::load_private_key(o.tls_key.empty() ? o.ca_dir + "/ra.key" : o.tls_key);
            if (!key) return fail(key.error().detail());
            tls_cert = std::move(certs->front());
            tls_key = std::move(*key);
            cmp::HttpOptions t = h;
            t.port = o.tls_port;
            t.tls_cert = tls_cert.get();
            t.tls_key = tls_key.get();
            for (size_t i = 1; i < certs->size(); ++i) {
                tls_chain.push_back(std::move((*certs)[i]));
                t.tls_chain.push_back(tls_chain.back().get());
            }
            https = std::make_unique<cmp::HttpServer>(server, t);
            if (auto st = https->start(); !st) return fail(st.error().detail());
        }
        if (!o.port_file.empty()) (void)write_file_atomic(o.port_file, std::string_view(std::to_string(http.port()) + "\n"));
        std::cout << "x2sec ca: CMP on http://" << o.bind << ":" << http.port() << "/.well-known/cmp";
        if (https) std::cout << " and https://" << o.bind << ":" << https->port() << "/.well-known/cmp";
        std::cout << " (store " << (*store)->kind() << ")";
        for (auto& [name, p] : server.config().policy.profiles) std::cout << "; profile " << name << " at /.well-known/cmp/p/" << name;
        std::cout << std::endl;
        int sig = 0;
        sigwait(&set, &sig);
        http.stop();
        if (https) https->stop();
        auto c = (*store)->counts();
        std::cout << "x2sec ca: stopped by signal " << sig;
        if (c) std::cout << "; store holds " << c->certificates << " certificates, " << c->revoked << " revoked";
        std::cout << std::endl;
        for (auto& [k, v] : server.counters().snapshot()) std::cout << "  " << k << " = " << v << "\n";
        return 0;
    };
});
