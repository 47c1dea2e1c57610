// `x2sec ca serve`: the operator RA/CA (CMPv2 over HTTP and HTTPS, CRL over HTTP).
// Configuration from --config <toml> and/or flags (flags win); see docs/pki-cmp.md.
#include <signal.h>
#include <fstream>
#include <iostream>
#include <toml++/toml.h>
#include <x2sec/cmp/http.hpp>
#include <x2sec/cmp/ocsp.hpp>
#include <x2sec/cmp/server.hpp>
#include <x2sec/common/file.hpp>
#include <x2sec/common/log.hpp>

#include "daemon_metrics.hpp"
#include "registry.hpp"

using namespace x2sec;

namespace {
struct CaOpts {
    std::string config, ca_dir, store = "ca.db", bind = "127.0.0.1", port_file, tls_cert, tls_key, crl_url;
    std::string metrics_listen;  // [metrics] listen / --metrics-listen: Prometheus /metrics ("" = off)
    std::vector<std::string> vendor_roots;
    int port = 8080, tls_port = -1, threads = 8;
    int64_t max_body = 64 * 1024, validity_days = 365, max_header = 16 * 1024;
    int max_connections = 512, max_per_source = 32, request_timeout_ms = 10000, write_timeout_ms = 10000;
    int keep_alive_idle_ms = 5000, max_keep_alive_requests = 100, session_timeout_s = 300;
    bool allow_mismatch = false, no_implicit = false;
    std::string log_level = "info";
    // OCSP responder (its own listener): off unless a port is given
    std::string ocsp_bind = "127.0.0.1", ocsp_path = "/ocsp", ocsp_url;
    int ocsp_port = -1, ocsp_signer_days = 30, ocsp_next_update_s = 3600;
} o;

int fail(const std::string& m) {
    std::cerr << "x2sec ca: " << m << "\n";
    return 1;
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
    set("--keep-alive-idle-ms", c.keep_alive_idle_ms, t["http"]["keep_alive_idle_ms"].value<int>());
    set("--max-keep-alive-requests", c.max_keep_alive_requests, t["http"]["max_keep_alive_requests"].value<int>());
    set("--tls-port", c.tls_port, t["https"]["port"].value<int>());
    set("--tls-cert", c.tls_cert, t["https"]["cert"].value<std::string>());
    set("--tls-key", c.tls_key, t["https"]["key"].value<std::string>());
    set("--crl-url", c.crl_url, t["policy"]["crl_url"].value<std::string>());
    set("--metrics-listen", c.metrics_listen, t["metrics"]["listen"].value<std::string>());
    set("--validity-days", c.validity_days, t["policy"]["validity_days"].value<int64_t>());
    set("--session-timeout-s", c.session_timeout_s, t["policy"]["session_timeout_s"].value<int>());
    set("--allow-identity-mismatch", c.allow_mismatch, t["policy"]["allow_identity_mismatch"].value<bool>());
    set("--ocsp-bind", c.ocsp_bind, t["ocsp"]["bind"].value<std::string>());
    set("--ocsp-port", c.ocsp_port, t["ocsp"]["port"].value<int>());
    set("--ocsp-path", c.ocsp_path, t["ocsp"]["path"].value<std::string>());
    set("--ocsp-url", c.ocsp_url, t["ocsp"]["url"].value<std::string>());
    set("--ocsp-signer-days", c.ocsp_signer_days, t["ocsp"]["signer_validity_days"].value<int>());
    set("--ocsp-next-update-s", c.ocsp_next_update_s, t["ocsp"]["next_update_s"].value<int>());
    if (auto ic = t["policy"]["implicit_confirm"].value<bool>(); ic && sub.count("--no-implicit-confirm") == 0)
        c.no_implicit = !*ic;
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
    serve->add_option("--keep-alive-idle-ms", o.keep_alive_idle_ms,
                      "HTTP keep-alive: idle time allowed between requests (0: one request per connection)");
    serve->add_option("--max-keep-alive-requests", o.max_keep_alive_requests, "requests per persistent connection");
    serve->add_option("--crl-url", o.crl_url, "cRLDistributionPoints URL written into issued certificates");
    serve->add_option("--validity-days", o.validity_days, "validity of issued certificates");
    serve->add_option("--session-timeout-s", o.session_timeout_s,
                      "unconfirmed certificates are revoked after this (also those of a dead instance)");
    serve->add_flag("--allow-identity-mismatch", o.allow_mismatch, "issue identities other than the vendor certificate's");
    serve->add_flag("--no-implicit-confirm", o.no_implicit, "always require certConf");
    serve->add_option("--ocsp-port", o.ocsp_port, "OCSP responder port (0: ephemeral; default: no OCSP)");
    serve->add_option("--ocsp-bind", o.ocsp_bind, "OCSP responder listen address");
    serve->add_option("--ocsp-path", o.ocsp_path, "OCSP responder path (POST; GET <path>/<base64>)");
    serve->add_option("--ocsp-url", o.ocsp_url, "authorityInfoAccess OCSP URL written into issued certificates");
    serve->add_option("--ocsp-signer-days", o.ocsp_signer_days, "validity of the delegated OCSP signer (<ca-dir>/ocsp.crt)");
    serve->add_option("--ocsp-next-update-s", o.ocsp_next_update_s, "nextUpdate of OCSP responses (0: none)");
    serve->add_option("--port-file", o.port_file, "write the bound HTTP port here once listening");
    serve->add_option("--log-level", o.log_level, "trace|debug|info|warn|error");
    serve->add_option("--metrics-listen", o.metrics_listen, "serve Prometheus /metrics on ADDRESS:PORT ([metrics] listen)");
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
        if (o.session_timeout_s < 1) return fail("--session-timeout-s must be positive");
        cfg->policy.session_timeout_s = o.session_timeout_s;
        if (!o.crl_url.empty()) cfg->policy.crl_urls = {o.crl_url};
        if (!o.ocsp_url.empty()) cfg->policy.ocsp_urls = {o.ocsp_url};
        cmp::OcspConfig ocsp_cfg;
        if (o.ocsp_port >= 0) {
            if (auto st = cmp::ensure_ocsp_signer(o.ca_dir, cfg->ca_cert.get(), cfg->ca_key.get(), ocsp_cfg,
                                                  o.ocsp_signer_days);
                !st)
                return fail("OCSP signer: " + st.error().detail());
            if (o.ocsp_next_update_s < 0) return fail("--ocsp-next-update-s must be 0 or positive");
            ocsp_cfg.next_update_s = o.ocsp_next_update_s;
        }
        auto store = cmp::open_store(o.store);
        if (!store) return fail(store.error().detail());
        // Block the signals before any thread starts so that only sigwait sees them.
        sigset_t set;
        sigemptyset(&set);
        sigaddset(&set, SIGINT);
        sigaddset(&set, SIGTERM);
        sigaddset(&set, SIGHUP);
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
        h.keep_alive_idle_ms = o.keep_alive_idle_ms;
        h.max_requests_per_connection = o.max_keep_alive_requests;
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
        Counters metrics_counters;
        auto metrics = app::start_metrics(
            o.metrics_listen, o.config.empty() ? std::string("--metrics-listen") : o.config + ": [metrics] listen",
            [&] {
                metrics::Exposition e;
                app::add_build_info(e, "ca");
                e.add("x2sec_cmp_open_transactions", metrics::Type::Gauge,
                      "CMP transactions waiting for certConf or polling", {}, double(server.open_sessions()));
                e.add_counters(server.counters(), app::metric_rules());
                e.add_counters(metrics_counters, app::metric_rules());
                e.add_registry(metrics::registry(), app::metric_rules());
                return e.text();
            },
            metrics_counters);
        if (!metrics) return fail(metrics.error().detail());
        std::unique_ptr<cmp::OcspResponder> ocsp;
        std::unique_ptr<cmp::HttpServer> ocsp_http;
        if (o.ocsp_port >= 0) {
            ocsp = std::make_unique<cmp::OcspResponder>(std::move(ocsp_cfg), **store, server.counters());
            cmp::HttpOptions oh = h;
            oh.bind = o.ocsp_bind;
            oh.port = o.ocsp_port;
            oh.ocsp = ocsp.get();
            oh.ocsp_path = o.ocsp_path;
            oh.serve_cmp = false;
            ocsp_http = std::make_unique<cmp::HttpServer>(server, oh);
            if (auto st = ocsp_http->start(); !st) return fail("OCSP: " + st.error().detail());
        }
        if (!o.port_file.empty()) (void)write_file_atomic(o.port_file, std::string_view(std::to_string(http.port()) + "\n"));
        std::cout << "x2sec ca: CMP on http://" << o.bind << ":" << http.port() << "/.well-known/cmp";
        if (https) std::cout << " and https://" << o.bind << ":" << https->port() << "/.well-known/cmp";
        if (ocsp_http) std::cout << ", OCSP on http://" << o.ocsp_bind << ":" << ocsp_http->port() << o.ocsp_path;
        std::cout << " (store " << (*store)->kind() << ")" << std::endl;
        int sig = 0;
        // SIGHUP must not end the RA/CA (the default action would): the CA key, certificates,
        // vendor roots and policy are read at start only, so a SIGHUP is logged and counted
        // (cmp.reload.unsupported) and the daemon goes on; restart it to apply changes.
        while (sigwait(&set, &sig) == 0 && sig == SIGHUP) {
            server.counters().inc("cmp.reload.unsupported");
            log::get("cmp")->warn("SIGHUP: ca serve has no live reload; restart it to apply a changed configuration");
        }
        http.stop();
        if (https) https->stop();
        if (ocsp_http) ocsp_http->stop();
        auto c = (*store)->counts();
        std::cout << "x2sec ca: stopped by signal " << sig;
        if (c) std::cout << "; store holds " << c->certificates << " certificates, " << c->revoked << " revoked";
        std::cout << std::endl;
        for (auto& [k, v] : server.counters().snapshot()) std::cout << "  " << k << " = " << v << "\n";
        return 0;
    };
});
