#include <filesystem>
#include <functional>
#include <set>
#include <toml++/toml.h>
#include <x2sec/common/file.hpp>
#include <x2sec/crypto/pkcs11.hpp>
#include <x2sec/kds/config.hpp>

namespace x2sec::kds {

namespace {

Error at(const std::string& file, const toml::source_region& r, const std::string& what) {
    return Error(ErrorDomain::Config, 0,
                 file + ":" + std::to_string(r.begin.line) + ":" + std::to_string(r.begin.column) + ": " + what);
}

Result<std::string> read_rel(const std::string& base, const std::string& p) {
    std::filesystem::path path(p);
    if (path.is_relative()) path = std::filesystem::path(base) / path;
    return read_text_file(path.string());
}

// [kds.limits]: the connection layer's bounds (see TransportLimits).
Status parse_limits(const toml::table& kds, const std::string& file, TransportLimits& l) {
    auto* node = kds.get("limits");
    if (!node) return {};
    auto* t = node->as_table();
    if (!t) return at(file, node->source(), "kds.limits must be a table");
    struct Key {
        const char* name;
        int64_t lo, hi;
        std::function<void(int64_t)> set;
    };
    const Key keys[] = {
        {"max_connections", 1, 65536, [&](int64_t v) { l.max_connections = int(v); }},
        {"max_per_source", 1, 65536, [&](int64_t v) { l.max_per_source = int(v); }},
        {"request_timeout_ms", 100, 3600000, [&](int64_t v) { l.request_timeout_ms = int(v); }},
        {"write_timeout_ms", 100, 3600000, [&](int64_t v) { l.write_timeout_ms = int(v); }},
        {"max_frame", int64_t(kHeaderSize), int64_t(kHeaderSize + kMaxBody),
         [&](int64_t v) { l.max_frame = size_t(v); }},
        {"workers", 1, 256, [&](int64_t v) { l.workers = int(v); }},
    };
    for (auto& [k, v] : *t) {
        const Key* key = nullptr;
        for (auto& c : keys)
            if (k.str() == c.name) key = &c;
        if (!key) return at(file, k.source(), "unknown key 'kds.limits." + std::string(k.str()) + "'");
        auto n = v.value<int64_t>();
        if (!n || *n < key->lo || *n > key->hi)
            return at(file, v.source(),
                      "kds.limits." + std::string(key->name) + " must be an integer " + std::to_string(key->lo) + ".." +
                          std::to_string(key->hi));
        key->set(*n);
    }
    auto st = validate(l);
    if (!st.ok()) return at(file, node->source(), "kds.limits: " + st.error().detail());
    return {};
}

}  // namespace

Result<ServeConfig> parse_serve_config(std::string_view text, const std::string& file, const std::string& base) {
    toml::table root;
    try {
        root = toml::parse(text, file);
    } catch (const toml::parse_error& e) {
        return at(file, e.source(), std::string(e.description()));
    }
    ServeConfig c;
    auto* kds = root["kds"].as_table();
    if (!kds) return Error(ErrorDomain::Config, 0, file + ": missing [kds] table");
    for (auto& [k, v] : *kds) {
        static const std::set<std::string> known = {
            "listen",       "port",       "certificate", "private_key",         "client_anchors",
            "key_lifetime", "node",       "relation",    "wipe_after_delivery", "crl_files",
            "crl_urls",     "crl_policy", "crl_refresh", "crl_cache_dir",       "limits"};
        if (!known.count(std::string(k.str())))
            return at(file, k.source(), "unknown key 'kds." + std::string(k.str()) + "'");
    }
    if (auto* m = root["metrics"].as_table()) {
        for (auto& [k, v] : *m)
            if (k.str() != "listen") return at(file, k.source(), "unknown key 'metrics." + std::string(k.str()) + "'");
        if (auto n = m->get("listen")) {
            auto s = n->value<std::string>();
            if (!s) return at(file, n->source(), "metrics.listen must be a string (\"127.0.0.1:9103\")");
            c.metrics_listen = *s;
        }
    }
    auto str = [&](const char* key, std::string& out, bool required) -> Status {
        auto n = kds->get(key);
        if (!n) {
            if (required) return at(file, kds->source(), std::string("missing kds.") + key);
            return {};
        }
        auto s = n->value<std::string>();
        if (!s) return at(file, n->source(), std::string("kds.") + key + " must be a string");
        out = *s;
        return {};
    };
    X2SEC_TRY_STATUS(str("listen", c.listen, false));
    if (auto n = kds->get("port")) {
        auto v = n->value<int64_t>();
        if (!v || *v < 1 || *v > 65535) return at(file, n->source(), "kds.port must be an integer 1..65535");
        c.port = uint16_t(*v);
    }
    if (auto n = kds->get("key_lifetime")) {
        auto v = n->value<int64_t>();
        if (!v || *v < 1 || *v > 7 * 86400) return at(file, n->source(), "kds.key_lifetime must be 1..604800 seconds");
        c.server.key_lifetime_s = uint32_t(*v);
    }
    if (auto n = kds->get("wipe_after_delivery")) {
        auto v = n->value<bool>();
        if (!v) return at(file, n->source(), "kds.wipe_after_delivery must be a boolean");
        c.server.wipe_after_delivery = *v;
    }
    X2SEC_TRY_STATUS(parse_limits(*kds, file, c.limits));
    std::string cert, key;
    X2SEC_TRY_STATUS(str("certificate", cert, true));
    X2SEC_TRY_STATUS(str("private_key", key, true));
    auto cert_text = read_rel(base, cert);
    if (!cert_text.ok())
        return at(file, kds->get("certificate")->source(), "cannot read certificate: " + cert_text.error().detail());
    c.tls.cert_pem = *cert_text;
    // A pkcs11: URI names a key in a token; anything else is a PEM file.
    auto key_text = crypto::is_pkcs11_uri(key) ? Result<std::string>(key) : read_rel(base, key);
    if (!key_text.ok())
        return at(file, kds->get("private_key")->source(), "cannot read private key: " + key_text.error().detail());
    c.tls.key_pem = SecureBytes(as_bytes(*key_text));
    secure_zero(key_text->data(), key_text->size());
    auto* anchors = kds->get("client_anchors") ? kds->get("client_anchors")->as_array() : nullptr;
    if (!anchors || anchors->empty())
        return at(file, kds->source(), "kds.client_anchors must be a non-empty array of PEM files");
    for (auto& a : *anchors) {
        auto s = a.value<std::string>();
        if (!s) return at(file, a.source(), "kds.client_anchors entries must be strings");
        auto t = read_rel(base, *s);
        if (!t.ok()) return at(file, a.source(), "cannot read anchor: " + t.error().detail());
        c.tls.anchors_pem += *t;
    }
    if (auto* nodes = kds->get("node") ? kds->get("node")->as_array() : nullptr) {
        for (auto& n : *nodes) {
            auto* t = n.as_table();
            if (!t) return at(file, n.source(), "[[kds.node]] must be a table");
            auto name = (*t)["name"].value<std::string>();
            auto id = (*t)["identity"].value<std::string>();
            if (!name || !id) return at(file, n.source(), "[[kds.node]] needs name and identity strings");
            c.server.nodes.push_back({*name, *id});
        }
    }
    if (auto* rels = kds->get("relation") ? kds->get("relation")->as_array() : nullptr) {
        for (auto& r : *rels) {
            auto* t = r.as_table();
            auto* nodes = t ? (*t)["nodes"].as_array() : nullptr;
            if (!nodes || nodes->size() != 2 || !(*nodes)[0].value<std::string>() || !(*nodes)[1].value<std::string>())
                return at(file, r.source(), "[[kds.relation]] needs nodes = [\"a\", \"b\"]");
            c.server.relations.emplace_back(*(*nodes)[0].value<std::string>(), *(*nodes)[1].value<std::string>());
        }
    }
    auto strings = [&](const char* name, std::vector<std::string>& out, bool path) -> Status {
        auto n = kds->get(name);
        if (!n) return {};
        auto* arr = n->as_array();
        if (!arr) return at(file, n->source(), std::string("kds.") + name + " must be an array of strings");
        for (auto& e : *arr) {
            auto v = e.value<std::string>();
            if (!v) return at(file, e.source(), std::string("kds.") + name + " entries must be strings");
            if (!path && v->rfind("http://", 0) != 0)
                return at(file, e.source(), std::string("kds.") + name + ": '" + *v + "' is not an http:// URL");
            std::filesystem::path fp(*v);
            out.push_back(path && fp.is_relative() ? (std::filesystem::path(base) / fp).string() : *v);
        }
        return {};
    };
    X2SEC_TRY_STATUS(strings("crl_files", c.revocation.crl_files, true));
    X2SEC_TRY_STATUS(strings("crl_urls", c.revocation.crl_urls, false));
    if (auto n = kds->get("crl_policy")) {
        auto v = n->value<std::string>();
        if (!v || (*v != "hard" && *v != "soft"))
            return at(file, n->source(), "kds.crl_policy must be \"hard\" or \"soft\"");
        c.revocation.policy = *v == "soft" ? x509::CrlPolicy::Soft : x509::CrlPolicy::Hard;
    }
    if (auto n = kds->get("crl_refresh")) {
        auto v = n->value<int64_t>();
        if (!v || *v < 1 || *v > 7 * 86400) return at(file, n->source(), "kds.crl_refresh must be 1..604800 seconds");
        c.revocation.refresh_s = *v;
    }
    if (auto n = kds->get("crl_cache_dir")) {
        auto v = n->value<std::string>();
        if (!v) return at(file, n->source(), "kds.crl_cache_dir must be a string");
        std::filesystem::path fp(*v);
        c.revocation.cache_dir = fp.is_relative() ? (std::filesystem::path(base) / fp).string() : *v;
    }
    auto st = validate(c.server);
    if (!st.ok()) return Error(ErrorDomain::Config, 0, file + ": " + st.error().detail());
    return c;
}

Result<ServeConfig> load_serve_config(const std::string& path) {
    X2SEC_TRY(std::string text, read_text_file(path));
    auto base = std::filesystem::path(path).parent_path().string();
    return parse_serve_config(text, path, base.empty() ? "." : base);
}

}  // namespace x2sec::kds
