// `x2sec ca serve`: the operator RA/CA (CMPv2 over HTTP and HTTPS, CRL over HTTP).
// Configuration from --config <toml> and/or flags (flags win); see docs/pki-cmp.md.
#include <csignal>
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
    // TLS client authentication on the HTTPS listener ([https] client_auth, client_ca, verify_depth)
    std::string tls_client_auth = "none";
    std::vector<std::string> tls_client_ca;
    int tls_verify_depth = 4;
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
    set("--tls-client-auth", c.tls_client_auth, t["https"]["client_auth"].value<std::string>());
    set("--tls-verify-depth", c.tls_verify_depth, t["https"]["verify_depth"].value<int>());
    if (sub.count("--tls-client-ca") == 0) {
        if (auto one = t["https"]["client_ca"].value<std::string>()) {
            c.tls_client_ca = {*one};
        } else if (auto* arr = t["https"]["client_ca"].as_array()) {
            c.tls_client_ca.clear();
            for (auto& v : *arr) {
                auto f = v.value<std::string>();
                if (!f) return Error(ErrorDomain::Config, 0, path + ": [https] client_ca must be a file or files");
                c.tls_client_ca.push_back(*f);
            }
        } else if (t["https"]["client_ca"]) {
            return Error(ErrorDomain::Config, 0, path + ": [https] client_ca must be a file or files");
        }
    }
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

// The issuance policy the options give, over `base` (the CA directory's defaults).
Result<cmp::ServerPolicy> make_policy(const CaOpts& c, cmp::ServerPolicy p) {
    p.allow_identity_mismatch = c.allow_mismatch;
    p.grant_implicit_confirm = !c.no_implicit;
    if (c.validity_days < 1) return Error(ErrorDomain::Config, 0, "validity_days must be positive");
    p.validity_days = c.validity_days;
    if (c.session_timeout_s < 1) return Error(ErrorDomain::Config, 0, "--session-timeout-s must be positive");
    p.session_timeout_s = c.session_timeout_s;
    if (!c.crl_url.empty()) p.crl_urls = {c.crl_url};
    if (!c.ocsp_url.empty()) p.ocsp_urls = {c.ocsp_url};
    if (c.default_profile) p.default_profile = *c.default_profile;
    for (auto& [name, prof] : c.profiles) p.profiles[name] = prof;  // over the built-in "henb"
    if (c.poll_interval_s < 1) return Error(ErrorDomain::Config, 0, "poll_interval_s must be >= 1");
    p.poll_interval_s = c.poll_interval_s;
    return p;
}

// The HTTP listener options (limits) the options give.
Result<cmp::HttpOptions> make_http(const CaOpts& c) {
    cmp::HttpOptions h;
    h.bind = c.bind;
    h.port = c.port;
    h.threads = c.threads;
    if (c.max_body < 1 || c.max_header < 1)
        return Error(ErrorDomain::Config, 0, "max_body and max_header must be positive");
    h.max_body = static_cast<size_t>(c.max_body);
    h.max_header = static_cast<size_t>(c.max_header);
    h.max_connections = c.max_connections;
    h.max_per_source = c.max_per_source;
    h.request_timeout_ms = c.request_timeout_ms;
    h.write_timeout_ms = c.write_timeout_ms;
    h.keep_alive_idle_ms = c.keep_alive_idle_ms;
    h.max_requests_per_connection = c.max_keep_alive_requests;
    return h;
}

// The HTTPS listener's credential and client-CA, kept alive while a listener uses them.
struct TlsMaterial {
    pki::X509Ptr cert;
    pki::PkeyPtr key;
    std::vector<pki::X509Ptr> chain, client_ca;
};

// `t` (the HTTP options) with the HTTPS port, credential and client authentication.
Status make_https(const CaOpts& c, cmp::HttpOptions& t, TlsMaterial& m) {
    X2SEC_TRY(auto certs, pki::load_certs_pem(c.tls_cert.empty() ? c.ca_dir + "/ra.crt" : c.tls_cert));
    X2SEC_TRY(m.key, pki::load_private_key(c.tls_key.empty() ? c.ca_dir + "/ra.key" : c.tls_key));
    m.cert = std::move(certs.front());
    t.port = c.tls_port;
    t.tls_cert = m.cert.get();
    t.tls_key = m.key.get();
    for (size_t i = 1; i < certs.size(); ++i) {
        m.chain.push_back(std::move(certs[i]));
        t.tls_chain.push_back(m.chain.back().get());
    }
    X2SEC_TRY(t.client_auth, cmp::parse_client_auth(c.tls_client_auth));
    for (auto& f : c.tls_client_ca) {
        X2SEC_TRY(auto v, pki::load_certs_pem(f));
        for (auto& x : v) {
            t.client_ca.push_back(x.get());
            m.client_ca.push_back(std::move(x));
        }
    }
    t.verify_depth = c.tls_verify_depth;
    return ok_status();
}

// What a reload cannot change (reported, left as running).
std::vector<std::string> restart_needed(const CaOpts& a, const CaOpts& b) {
    std::vector<std::string> v;
    if (a.ca_dir != b.ca_dir) v.emplace_back("[ca] dir");
    if (a.store != b.store) v.emplace_back("[ca] store");
    if (a.vendor_roots != b.vendor_roots) v.emplace_back("[ca] vendor_roots");
    if (a.bind != b.bind || a.port != b.port || a.threads != b.threads) v.emplace_back("[http] bind/port/threads");
    if (a.tls_port != b.tls_port) v.emplace_back("[https] port");
    if (a.metrics_listen != b.metrics_listen) v.emplace_back("[metrics] listen");
    if (a.ocsp_bind != b.ocsp_bind || a.ocsp_port != b.ocsp_port || a.ocsp_path != b.ocsp_path ||
        a.ocsp_signer_days != b.ocsp_signer_days || a.ocsp_next_update_s != b.ocsp_next_update_s)
        v.emplace_back("[ocsp] bind/port/path/signer_validity_days/next_update_s");
    return v;
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
    serve->add_option("--tls-key", o.tls_key, "TLS server key (file or pkcs11: URI)");
    serve->add_option("--tls-client-auth", o.tls_client_auth,
                      "TLS client certificates on the HTTPS listener: none | optional | require");
    serve->add_option("--tls-client-ca", o.tls_client_ca,
                      "trust anchors for TLS client certificates (PEM), repeatable");
    serve->add_option("--tls-verify-depth", o.tls_verify_depth, "most intermediates in a TLS client chain");
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
        const CaOpts cli = o;  // the flags: a reload reads the file again under them
        if (!o.config.empty())
            if (auto st = load_toml(o, o.config, *serve); !st) return fail(st.error().detail());
        if (o.ca_dir.empty()) return fail("--ca-dir (or [ca] dir) is required");
        auto cfg = cmp::ServerConfig::from_ca_dir(o.ca_dir, o.vendor_roots);
        if (!cfg) return fail(cfg.error().detail());
        const cmp::ServerPolicy base_policy = cfg->policy;
        auto policy = make_policy(o, base_policy);
        if (!policy) return fail(policy.error().detail());
        cfg->policy = std::move(*policy);
        cmp::OcspConfig ocsp_cfg;
        if (o.ocsp_port >= 0) {
            if (auto st = cmp::ensure_ocsp_signer(o.ca_dir, cfg->ca_cert.get(), cfg->ca_key.get(), ocsp_cfg,
                                                  o.ocsp_signer_days);
                !st)
                return fail("OCSP signer: " + st.error().detail());
            if (o.ocsp_next_update_s < 0) return fail("--ocsp-next-update-s must be 0 or positive");
            ocsp_cfg.next_update_s = o.ocsp_next_update_s;
        }
        if (o.tls_client_auth != "none" && o.tls_port < 0)
            return fail("[https] client_auth needs the HTTPS listener ([https] port / --tls-port)");
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
        auto hopt = make_http(o);
        if (!hopt) return fail(hopt.error().detail());
        cmp::HttpOptions h = *hopt;
        cmp::HttpServer http(server, h);
        if (auto st = http.start(); !st) return fail(st.error().detail());
        std::unique_ptr<cmp::HttpServer> https;
        auto tls = std::make_unique<TlsMaterial>();
        if (o.tls_port >= 0) {
            cmp::HttpOptions t = h;
            if (auto st = make_https(o, t, *tls); !st) return fail(st.error().detail());
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
        auto ocsp_opts = [&](cmp::HttpOptions oh) {
            oh.bind = o.ocsp_bind;
            oh.port = o.ocsp_port;
            oh.ocsp = ocsp.get();
            oh.ocsp_path = o.ocsp_path;
            oh.serve_cmp = false;
            return oh;
        };
        if (o.ocsp_port >= 0) {
            ocsp = std::make_unique<cmp::OcspResponder>(std::move(ocsp_cfg), **store, server.counters());
            ocsp_http = std::make_unique<cmp::HttpServer>(server, ocsp_opts(h));
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
        // SIGHUP: the file is read again (under the same flags) and, if all of it is usable,
        // applied: the issuance policy and profiles (new transactions; open ones finish under
        // theirs), the HTTP limits of every listener and the HTTPS credential and client
        // authentication (new connections; open ones and their TLS sessions are kept).  A file
        // that does not load, or a part of it that does not work, changes nothing.
        auto reload = [&]() -> Status {
            CaOpts next = cli;
            if (!o.config.empty()) X2SEC_TRY_STATUS(load_toml(next, o.config, *serve));
            const auto needs_restart = restart_needed(o, next);  // before the running values are put back
            X2SEC_TRY(auto pol, make_policy(next, base_policy));
            X2SEC_TRY(auto nh, make_http(next));
            // What needs a restart stays as running (warned below).
            nh.bind = h.bind;
            nh.port = http.port();
            nh.threads = h.threads;
            auto next_tls = std::make_unique<TlsMaterial>();
            cmp::HttpOptions nt = nh;
            if (https) {
                next.tls_port = o.tls_port;
                X2SEC_TRY_STATUS(make_https(next, nt, *next_tls));
                nt.port = https->port();
            } else if (next.tls_client_auth != "none") {
                return Error(ErrorDomain::Config, 0, "[https] client_auth needs the HTTPS listener (restart)");
            }
            cmp::HttpOptions no = ocsp_opts(nh);
            if (ocsp_http) no.port = ocsp_http->port();
            X2SEC_TRY_STATUS(http.check_reload(nh));
            if (https) X2SEC_TRY_STATUS(https->check_reload(nt));
            if (ocsp_http) X2SEC_TRY_STATUS(ocsp_http->check_reload(no));
            X2SEC_TRY_STATUS(server.set_policy(std::move(pol)));
            X2SEC_TRY_STATUS(http.reload(nh));
            if (https) X2SEC_TRY_STATUS(https->reload(nt));
            if (ocsp_http) X2SEC_TRY_STATUS(ocsp_http->reload(no));
            if (https) tls = std::move(next_tls);  // the old credential: held by the old TLS context
            for (const auto& what : needs_restart)
                log::get("cmp")->warn("SIGHUP: {} changed: needs a restart, left as running", what);
            CaOpts applied = next;
            // remember what runs (restart-only settings as they were)
            applied.ca_dir = o.ca_dir;
            applied.store = o.store;
            applied.vendor_roots = o.vendor_roots;
            applied.bind = o.bind;
            applied.port = o.port;
            applied.threads = o.threads;
            applied.tls_port = o.tls_port;
            applied.metrics_listen = o.metrics_listen;
            applied.ocsp_bind = o.ocsp_bind;
            applied.ocsp_port = o.ocsp_port;
            applied.ocsp_path = o.ocsp_path;
            applied.ocsp_signer_days = o.ocsp_signer_days;
            applied.ocsp_next_update_s = o.ocsp_next_update_s;
            o = std::move(applied);
            return ok_status();
        };
        int sig = 0;
        while (sigwait(&set, &sig) == 0 && sig == SIGHUP) {
            if (auto st = reload(); !st) {
                server.counters().inc("cmp.reload.failed");
                log::get("cmp")->error("SIGHUP: configuration not reloaded, the running one is kept: {}",
                                       st.error().detail());
                continue;
            }
            server.counters().inc("cmp.reload.ok");
            auto pol = server.policy();
            log::get("cmp")->info("SIGHUP: configuration reloaded ({} profile(s), max_body {}, client_auth {})",
                                  pol->profiles.size(), o.max_body, o.tls_client_auth);
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
