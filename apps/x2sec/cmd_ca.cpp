// `x2sec ca serve`: the operator RA/CA (CMPv2 over HTTP and HTTPS, CRL over HTTP).
// Configuration from --config <toml> and/or flags (flags win); see docs/pki-cmp.md.
#include <signal.h>
#include <ctime>
#include <algorithm>
#include <cctype>
#include <map>
#include <optional>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
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
    int poll_interval_s = 5;
    // admin commands
    std::string id, actor, reason_text, out;
    int reason = 0;
    bool json = false, pending_only = false;
    int max_connections = 512, max_per_source = 32, request_timeout_ms = 10000, write_timeout_ms = 10000;
    int keep_alive_idle_ms = 5000, max_keep_alive_requests = 100, session_timeout_s = 300;
    bool allow_mismatch = false, no_implicit = false;
    std::string log_level = "info";
    // OCSP responder (its own listener): off unless a port is given
    std::string ocsp_bind = "127.0.0.1", ocsp_path = "/ocsp", ocsp_url;
    int ocsp_port = -1, ocsp_signer_days = 30, ocsp_next_update_s = 3600;
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
    if (name.empty() || name.size() > 64 || !std::all_of(name.begin(), name.end(), [](char ch) {
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
        if (key == "dns")
            X2SEC_TRY_STATUS(strings("dns", p.dns));
        else if (key == "ip")
            X2SEC_TRY_STATUS(strings("ip", p.ip));
        else if (key == "uri")
            X2SEC_TRY_STATUS(strings("uri", p.uri));
        else if (key == "required")
            X2SEC_TRY_STATUS(strings("required", p.required));
        else if (key == "key_types")
            X2SEC_TRY_STATUS(strings("key_types", p.key_types));
        else if (key == "validity_days") {
            auto d = v.value<int64_t>();
            if (!d) return Error(ErrorDomain::Config, 0, where + ": validity_days must be an integer");
            p.validity_days = *d;
        } else if (key == "approval") {
            auto a = v.value<std::string>();
            if (a && *a == "immediate")
                p.approval = cmp::Approval::Immediate;
            else if (a && *a == "manual")
                p.approval = cmp::Approval::Manual;
            else
                return Error(ErrorDomain::Config, 0, where + ": approval must be \"immediate\" or \"manual\"");
        } else {
            std::string msg = where;
            msg.append(": unknown key '")
                .append(key)
                .append("' (dns, ip, uri, required, key_types, validity_days, approval)");
            return Error(ErrorDomain::Config, 0, msg);
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
    set("--poll-interval", c.poll_interval_s, t["policy"]["poll_interval_s"].value<int>());
    if (auto* profs = t["profiles"].as_table()) {
        for (auto& [key, node] : *profs) {
            std::string name(key.str());
            X2SEC_TRY(auto prof, parse_profile(path, name, node));
            if (name == "default")
                c.default_profile = std::move(prof);
            else
                c.profiles[name] = std::move(prof);
        }
    } else if (t.contains("profiles")) {
        return Error(ErrorDomain::Config, 0, path + ": [profiles] must be a table of [profiles.<name>] tables");
    }
    return ok_status();
}
}  // namespace

namespace {

std::string when(int64_t t) {
    char buf[32];
    time_t tt = static_cast<time_t>(t);
    struct tm tm {};
    gmtime_r(&tt, &tm);
    strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return buf;
}

nlohmann::json cert_json(const cmp::CertRecord& c) {
    return {{"serial", to_hex(c.serial)},
            {"transaction_id", to_hex(c.transaction_id)},
            {"subject", c.subject},
            {"sans", c.sans},
            {"requester", c.requester},
            {"body", c.body},
            {"status", c.status},
            {"not_before", when(c.not_before)},
            {"not_after", when(c.not_after)},
            {"issued_at", when(c.issued_at)},
            {"revoked", c.revoked},
            {"revoked_at", c.revoked ? when(c.revoked_at) : ""},
            {"revocation_reason", c.revocation_reason}};
}

nlohmann::json pending_json(const cmp::PendingRequest& p) {
    return {{"transaction_id", to_hex(p.transaction_id)},
            {"profile", p.profile.empty() ? "default" : p.profile},
            {"body", p.body},
            {"subject", p.subject},
            {"sans", p.sans},
            {"requester", p.requester},
            {"created", when(p.created)},
            {"state", p.state},
            {"decided_by", p.decided_by},
            {"reason", p.reason},
            {"decided_at", p.decided_at ? when(p.decided_at) : ""}};
}

nlohmann::json audit_json(const cmp::AuditEntry& e) {
    return {{"seq", e.seq},
            {"at", when(e.at)},
            {"actor", e.actor},
            {"action", e.action},
            {"object", e.object},
            {"reason", e.reason},
            {"prev_hash", to_hex(e.prev_hash)},
            {"hash", to_hex(e.hash)}};
}

Result<Bytes> parse_hex(const std::string& s) {
    std::string h;
    for (char c : s)
        if (c != ':') h += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if (h.empty() || h.size() % 2 ||
        !std::all_of(h.begin(), h.end(), [](char c) { return std::isxdigit(static_cast<unsigned char>(c)); }))
        return Error(ErrorDomain::Config, 0, "'" + s + "' is not a hex serial / transactionID");
    Bytes b;
    for (size_t i = 0; i < h.size(); i += 2) b.push_back(static_cast<uint8_t>(std::stoi(h.substr(i, 2), nullptr, 16)));
    return b;
}

int run_admin(CLI::App* list, CLI::App* show, CLI::App* approve, CLI::App* reject, CLI::App* revoke, CLI::App* crl,
              CLI::App* audit, CLI::App* verify) {
    if (!o.config.empty()) {
        toml::table t;
        try {
            t = toml::parse_file(o.config);
        } catch (const toml::parse_error& e) {
            return fail(o.config + ": " + std::string(e.description()));
        }
        CLI::App* used = nullptr;
        for (auto* a : {list, show, approve, reject, revoke, crl, audit, verify})
            if (a->parsed()) used = a;
        if (used && used->count("--store") == 0)
            if (auto v = t["ca"]["store"].value<std::string>()) o.store = *v;
        if (o.ca_dir.empty())
            if (auto v = t["ca"]["dir"].value<std::string>()) o.ca_dir = *v;
    }
    auto st = cmp::open_store(o.store);
    if (!st) return fail(st.error().detail());
    cmp::Store& store = **st;
    const int64_t now = static_cast<int64_t>(std::time(nullptr));
    if (verify->parsed()) {
        auto log = store.audit_log();
        if (!log) return fail(log.error().detail());
        auto v = cmp::verify_audit_chain(*log);
        if (o.json) {
            std::cout << nlohmann::json{{"entries", log->size()},
                                        {"ok", v.ok()},
                                        {"error", v.ok() ? "" : v.error().detail()},
                                        {"head", log->empty() ? "" : to_hex(log->back().hash)}}
                             .dump(2)
                      << "\n";
        } else if (v) {
            std::cout << "audit log: " << log->size() << " entries, hash chain intact"
                      << (log->empty() ? "" : "; head " + to_hex(log->back().hash)) << "\n";
        } else {
            std::cerr << "x2sec ca: audit log BROKEN: " << v.error().detail() << "\n";
        }
        return v ? 0 : 3;
    }
    if (audit->parsed()) {
        auto log = store.audit_log();
        if (!log) return fail(log.error().detail());
        if (o.json) {
            auto a = nlohmann::json::array();
            for (auto& e : *log) a.push_back(audit_json(e));
            std::cout << a.dump(2) << "\n";
        } else {
            for (auto& e : *log)
                std::cout << e.seq << "  " << when(e.at) << "  " << e.actor << "  " << e.action << "  " << e.object
                          << "  " << e.reason << "\n";
        }
        return 0;
    }
    if (list->parsed()) {
        auto pend = store.list_pending();
        if (!pend) return fail(pend.error().detail());
        std::vector<cmp::CertRecord> certs;
        if (!o.pending_only) {
            auto all = store.list_certificates();
            if (!all) return fail(all.error().detail());
            certs = std::move(*all);
        }
        if (o.json) {
            nlohmann::json j{{"pending", nlohmann::json::array()}};
            for (auto& p : *pend)
                if (!o.pending_only || p.state == "pending") j["pending"].push_back(pending_json(p));
            if (!o.pending_only) {
                j["certificates"] = nlohmann::json::array();
                for (auto& c : certs) j["certificates"].push_back(cert_json(c));
            }
            std::cout << j.dump(2) << "\n";
            return 0;
        }
        std::cout << "requests held for approval:\n";
        for (auto& p : *pend)
            if (!o.pending_only || p.state == "pending")
                std::cout << "  " << to_hex(p.transaction_id) << "  " << p.state << "  " << p.body << "  profile "
                          << (p.profile.empty() ? "default" : p.profile) << "  " << p.subject << "  [" << p.sans
                          << "]  since " << when(p.created) << "\n";
        if (!o.pending_only) {
            std::cout << "certificates:\n";
            for (auto& c : certs)
                std::cout << "  " << to_hex(c.serial) << "  " << (c.revoked ? "revoked" : c.status) << "  " << c.subject
                          << "  [" << c.sans << "]  until " << when(c.not_after) << "\n";
        }
        return 0;
    }
    if (show->parsed()) {
        auto id = parse_hex(o.id);
        if (!id) return fail(id.error().detail());
        auto c = store.find_by_serial(*id);
        if (c && !c->has_value()) c = store.find_by_transaction(*id);
        if (!c) return fail(c.error().detail());
        auto p = store.find_pending(*id);
        if (!p) return fail(p.error().detail());
        if (!c->has_value() && !p->has_value()) return fail("no certificate or request " + o.id);
        nlohmann::json j;
        if (c->has_value()) j["certificate"] = cert_json(**c);
        if (p->has_value()) j["request"] = pending_json(**p);
        if (o.json) {
            std::cout << j.dump(2) << "\n";
        } else {
            for (auto& [k, v] : j.items()) {
                std::cout << k << ":\n";
                for (auto& [f, x] : v.items())
                    std::cout << "  " << f << ": " << (x.is_string() ? x.get<std::string>() : x.dump()) << "\n";
            }
        }
        return 0;
    }
    if (approve->parsed() || reject->parsed()) {
        bool yes = approve->parsed();
        auto id = parse_hex(o.id);
        if (!id) return fail(id.error().detail());
        auto r = store.decide_pending(*id, yes, o.actor, o.reason_text, now);
        if (!r) return fail(r.error().detail());
        if (o.json)
            std::cout
                << nlohmann::json{{"transaction_id", to_hex(*id)}, {"state", yes ? "approved" : "rejected"}}.dump()
                << "\n";
        else
            std::cout << "request " << to_hex(*id) << (yes ? " approved" : " rejected") << " by " << o.actor
                      << "; the client gets the answer at its next poll\n";
        return 0;
    }
    if (revoke->parsed()) {
        auto id = parse_hex(o.id);
        if (!id) return fail(id.error().detail());
        if (o.reason < 0 || o.reason > 10 || o.reason == 7 || o.reason == 8)
            return fail("--crl-reason must be 0-6, 9 or 10");
        auto r = store.revoke(*id, o.reason, now);
        if (!r) return fail(r.error().detail());
        (void)store.append_audit(
            {0,
             now,
             o.actor,
             "revoke",
             to_hex(*id),
             "CRLReason " + std::to_string(o.reason) + (o.reason_text.empty() ? "" : ": " + o.reason_text),
             {},
             {}});
        if (o.json)
            std::cout << nlohmann::json{{"serial", to_hex(*id)}, {"revoked", true}, {"reason", o.reason}}.dump()
                      << "\n";
        else
            std::cout << "serial " << to_hex(*id) << " revoked (CRLReason " << o.reason << ")\n";
        return 0;
    }
    if (crl->parsed()) {
        if (o.ca_dir.empty()) return fail("--ca-dir (or [ca] dir) is required");
        auto cert = pki::load_cert(o.ca_dir + "/ca.crt");
        if (!cert) return fail(cert.error().detail());
        auto key = pki::load_private_key(o.ca_dir + "/ca.key");
        if (!key) return fail(key.error().detail());
        auto rev = store.revoked();
        if (!rev) return fail(rev.error().detail());
        auto n = store.next_crl_number();
        if (!n) return fail(n.error().detail());
        auto c = pki::issue_crl(cert->get(), key->get(), *rev, *n, now - 60, now + 7 * 86400);
        if (!c) return fail(c.error().detail());
        bool pem = o.out.size() > 4 && o.out.substr(o.out.size() - 4) == ".pem";
        auto w = pem ? write_file_atomic(o.out, std::string_view(pki::crl_pem(c->get())), 0644)
                     : write_file_atomic(o.out, BytesView(pki::crl_der(c->get())), 0644);
        if (!w) return fail(w.error().detail());
        if (o.json)
            std::cout << nlohmann::json{{"crl_number", *n}, {"revoked", rev->size()}, {"file", o.out}}.dump() << "\n";
        else
            std::cout << "CRL number " << *n << " with " << rev->size() << " revoked certificate(s) written to "
                      << o.out << "\n";
        return 0;
    }
    return fail("no command");
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
    serve->add_flag("--allow-identity-mismatch", o.allow_mismatch,
                    "issue identities other than the vendor certificate's");
    serve->add_flag("--no-implicit-confirm", o.no_implicit, "always require certConf");
    serve->add_option("--ocsp-port", o.ocsp_port, "OCSP responder port (0: ephemeral; default: no OCSP)");
    serve->add_option("--ocsp-bind", o.ocsp_bind, "OCSP responder listen address");
    serve->add_option("--ocsp-path", o.ocsp_path, "OCSP responder path (POST; GET <path>/<base64>)");
    serve->add_option("--ocsp-url", o.ocsp_url, "authorityInfoAccess OCSP URL written into issued certificates");
    serve->add_option("--ocsp-signer-days", o.ocsp_signer_days,
                      "validity of the delegated OCSP signer (<ca-dir>/ocsp.crt)");
    serve->add_option("--ocsp-next-update-s", o.ocsp_next_update_s, "nextUpdate of OCSP responses (0: none)");
    serve->add_option("--port-file", o.port_file, "write the bound HTTP port here once listening");
    serve->add_option("--log-level", o.log_level, "trace|debug|info|warn|error");
    serve->add_option("--poll-interval", o.poll_interval_s,
                      "checkAfter (s) in pollRep while a request awaits approval");
    serve->add_option("--metrics-listen", o.metrics_listen,
                      "serve Prometheus /metrics on ADDRESS:PORT ([metrics] listen)");

    // Administration on the store (works while `serve` runs: each change is one transaction).
    auto store_opts = [](CLI::App* a) {
        a->add_option("--store", o.store, "sqlite:<file> | postgresql:<conninfo> | <file>");
        a->add_option("--config", o.config, "TOML configuration file ([ca] store, dir)");
        a->add_flag("--json", o.json, "machine-readable output");
    };
    auto* list = sub.add_subcommand("list", "List issued certificates and requests held for approval");
    store_opts(list);
    list->add_flag("--pending", o.pending_only, "only requests awaiting a decision");
    auto* show = sub.add_subcommand("show", "Show one certificate (serial) or request (transactionID), hex");
    store_opts(show);
    show->add_option("id", o.id, "serial or transactionID (hex)")->required();
    auto* approve = sub.add_subcommand("approve", "Approve a held request: issued at the client's next poll");
    auto* reject = sub.add_subcommand("reject", "Reject a held request: the client's next poll gets the rejection");
    for (auto* a : {approve, reject}) {
        store_opts(a);
        a->add_option("tid", o.id, "transactionID (hex), see `x2sec ca list --pending`")->required();
        a->add_option("--by", o.actor, "operator name recorded in the audit log")->required();
        a->add_option("--reason", o.reason_text, "why (audit log; a rejection's text for the client)");
    }
    reject->get_option("--reason")->required();
    auto* revoke = sub.add_subcommand("revoke", "Revoke a certificate (the CRL lists it from its next issue)");
    store_opts(revoke);
    revoke->add_option("serial", o.id, "serial (hex)")->required();
    revoke->add_option("--crl-reason", o.reason, "CRLReason 0-6, 9, 10 (default 0: unspecified)");
    revoke->add_option("--by", o.actor, "operator name recorded in the audit log")->required();
    revoke->add_option("--reason", o.reason_text, "why (audit log)");
    auto* crl = sub.add_subcommand("crl", "Issue the current CRL from the store (needs the CA key)");
    store_opts(crl);
    crl->add_option("--ca-dir", o.ca_dir, "operator CA directory");
    crl->add_option("--out", o.out, "output file (DER; .pem for PEM)")->required();
    auto* audit = sub.add_subcommand("audit", "Show the audit log; `audit verify` checks its hash chain");
    store_opts(audit);
    auto* verify = audit->add_subcommand("verify", "Verify the hash chain (a rewritten or removed entry is reported)");
    store_opts(verify);
    auto admin = [=]() -> int { return run_admin(list, show, approve, reject, revoke, crl, audit, verify); };
    return [serve, admin]() -> int {
        if (!serve->parsed()) return admin();
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
        if (o.default_profile) cfg->policy.default_profile = *o.default_profile;
        for (auto& [name, p] : o.profiles) cfg->policy.profiles[name] = p;  // over the built-in "henb"
        if (o.poll_interval_s < 1) return fail("poll_interval_s must be >= 1");
        cfg->policy.poll_interval_s = o.poll_interval_s;
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
        if (!o.port_file.empty())
            (void)write_file_atomic(o.port_file, std::string_view(std::to_string(http.port()) + "\n"));
        std::cout << "x2sec ca: CMP on http://" << o.bind << ":" << http.port() << "/.well-known/cmp";
        if (https) std::cout << " and https://" << o.bind << ":" << https->port() << "/.well-known/cmp";
        if (ocsp_http) std::cout << ", OCSP on http://" << o.ocsp_bind << ":" << ocsp_http->port() << o.ocsp_path;
        std::cout << " (store " << (*store)->kind() << ")";
        for (auto& [name, p] : server.config().policy.profiles)
            std::cout << "; profile " << name << " at /.well-known/cmp/p/" << name;
        std::cout << std::endl;
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
