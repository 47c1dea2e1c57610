#include <filesystem>
#include <set>
#include <toml++/toml.h>
#include <x2sec/common/file.hpp>
#include <x2sec/policy/config.hpp>

namespace x2sec::policy {

const HenbConfig* DeploymentConfig::henb(const std::string& name) const {
    for (auto& h : henbs)
        if (h.name == name) return &h;
    return nullptr;
}

const AnchorConfig* DeploymentConfig::anchor(const std::string& label) const {
    for (auto& a : anchors)
        if (a.label == label) return &a;
    return nullptr;
}

namespace {

class Parser {
public:
    Parser(std::string file, std::string base) : m_file(std::move(file)), m_base(std::move(base)) {}

    std::string where(const toml::source_region& r) const {
        return m_file + ":" + std::to_string(r.begin.line) + ":" + std::to_string(r.begin.column);
    }
    Error err(const toml::source_region& r, const std::string& what) const {
        return Error(ErrorDomain::Config, 0, where(r) + ": " + what);
    }
    Status known_keys(const toml::table& t, const std::string& prefix, const std::set<std::string>& keys) const {
        for (auto& [k, v] : t)
            if (!keys.count(std::string(k.str())))
                return err(k.source(), "unknown key '" + prefix + std::string(k.str()) + "'");
        return {};
    }
    Result<std::optional<std::string>> opt_str(const toml::table& t, const char* key, const std::string& prefix) const {
        auto* n = t.get(key);
        if (!n) return std::optional<std::string>{};
        auto s = n->value<std::string>();
        if (!s) return err(n->source(), prefix + key + " must be a string");
        if (s->empty()) return err(n->source(), prefix + key + " must not be empty");
        return std::optional<std::string>{*s};
    }
    Result<std::string> req_str(const toml::table& t, const char* key, const std::string& prefix) const {
        X2SEC_TRY(auto v, opt_str(t, key, prefix));
        if (!v) return err(t.source(), "missing " + prefix + key);
        return *v;
    }
    Result<std::optional<bool>> opt_bool(const toml::table& t, const char* key, const std::string& prefix) const {
        auto* n = t.get(key);
        if (!n) return std::optional<bool>{};
        auto b = n->value<bool>();
        if (!b) return err(n->source(), prefix + key + " must be true or false");
        return std::optional<bool>{*b};
    }
    Result<HostPort> host_port(const toml::table& t, const char* key, const std::string& prefix) const {
        X2SEC_TRY(std::string s, req_str(t, key, prefix));
        auto colon = s.rfind(':');
        auto* n = t.get(key);
        if (colon == std::string::npos || colon == 0)
            return err(n->source(), prefix + key + " must be host:port, got '" + s + "'");
        HostPort hp;
        hp.host = s.substr(0, colon);
        try {
            size_t used = 0;
            long p = std::stol(s.substr(colon + 1), &used);
            if (used != s.size() - colon - 1 || p < 1 || p > 65535) throw std::out_of_range("port");
            hp.port = uint16_t(p);
        } catch (const std::exception&) {
            return err(n->source(), prefix + key + ": port must be 1..65535 in '" + s + "'");
        }
        return hp;
    }
    std::string path(const std::string& p) const {
        std::filesystem::path fp(p);
        if (fp.is_relative()) fp = std::filesystem::path(m_base) / fp;
        return fp.lexically_normal().string();
    }
    template <typename E>
    Result<E> enum_value(const toml::table& t, const char* key, const std::string& prefix,
                         std::initializer_list<std::pair<const char*, E>> values, E dflt) const {
        auto* n = t.get(key);
        if (!n) return dflt;
        auto s = n->value<std::string>();
        std::string allowed;
        for (auto& [name, v] : values) {
            if (s && *s == name) return v;
            allowed += std::string(allowed.empty() ? "" : ", ") + "'" + name + "'";
        }
        return err(n->source(), prefix + key + " must be one of " + allowed + (s ? ", got '" + *s + "'" : ""));
    }

    Result<DeploymentConfig> parse(std::string_view text);

private:
    std::string m_file, m_base;
};

Result<DeploymentConfig> Parser::parse(std::string_view text) {
    toml::table root;
    try {
        root = toml::parse(text, m_file);
    } catch (const toml::parse_error& e) {
        return err(e.source(), std::string(e.description()));
    }
    DeploymentConfig d;
    X2SEC_TRY_STATUS(known_keys(root, "", {"anchor", "segw", "cmp", "kds", "backoff", "henb"}));

    if (auto* n = root.get("anchor")) {
        auto* arr = n->as_array();
        if (!arr) return err(n->source(), "anchor must be an array of tables ([[anchor]])");
        for (auto& e : *arr) {
            auto* t = e.as_table();
            if (!t) return err(e.source(), "[[anchor]] entries must be tables");
            X2SEC_TRY_STATUS(known_keys(*t, "anchor.", {"label", "file"}));
            AnchorConfig a;
            X2SEC_TRY(a.label, req_str(*t, "label", "anchor."));
            X2SEC_TRY(std::string f, req_str(*t, "file", "anchor."));
            a.file = path(f);
            if (d.anchor(a.label)) return err(t->source(), "duplicate anchor label '" + a.label + "'");
            d.anchors.push_back(std::move(a));
        }
    }
    auto table = [&](const char* key) -> Result<const toml::table*> {
        auto* n = root.get(key);
        if (!n) return static_cast<const toml::table*>(nullptr);
        auto* t = n->as_table();
        if (!t) return err(n->source(), std::string(key) + " must be a table");
        return t;
    };
    X2SEC_TRY(auto segw, table("segw"));
    if (segw) {
        X2SEC_TRY_STATUS(known_keys(*segw, "segw.", {"address", "identity"}));
        SegwConfig s;
        X2SEC_TRY(s.address, host_port(*segw, "address", "segw."));
        X2SEC_TRY(s.identity, req_str(*segw, "identity", "segw."));
        d.segw = s;
    }
    X2SEC_TRY(auto cmp, table("cmp"));
    if (cmp) {
        X2SEC_TRY_STATUS(known_keys(*cmp, "cmp.", {"url", "profile"}));
        CmpConfig c;
        X2SEC_TRY(c.url, req_str(*cmp, "url", "cmp."));
        if (c.url.rfind("http://", 0) != 0 && c.url.rfind("https://", 0) != 0)
            return err(cmp->get("url")->source(), "cmp.url must start with http:// or https://");
        X2SEC_TRY(auto prof, opt_str(*cmp, "profile", "cmp."));
        if (prof) c.profile = *prof;
        d.cmp = c;
    }
    X2SEC_TRY(auto kds, table("kds"));
    if (kds) {
        X2SEC_TRY_STATUS(known_keys(*kds, "kds.", {"address", "identity"}));
        KdsClientConfig k;
        X2SEC_TRY(k.address, host_port(*kds, "address", "kds."));
        X2SEC_TRY(k.identity, req_str(*kds, "identity", "kds."));
        d.kds = k;
    }
    X2SEC_TRY(auto bo, table("backoff"));
    if (bo) {
        X2SEC_TRY_STATUS(known_keys(*bo, "backoff.", {"initial_ms", "max_ms", "factor"}));
        if (auto* n = bo->get("initial_ms")) {
            auto v = n->value<int64_t>();
            if (!v || *v < 1) return err(n->source(), "backoff.initial_ms must be a positive integer");
            d.backoff.initial_ms = *v;
        }
        if (auto* n = bo->get("max_ms")) {
            auto v = n->value<int64_t>();
            if (!v || *v < d.backoff.initial_ms) return err(n->source(), "backoff.max_ms must be >= initial_ms");
            d.backoff.max_ms = *v;
        }
        if (auto* n = bo->get("factor")) {
            auto v = n->value<double>();
            if (!v || *v < 1.0 || *v > 10.0) return err(n->source(), "backoff.factor must be a number in 1..10");
            d.backoff.factor = *v;
        }
    }

    auto* hn = root.get("henb");
    if (!hn) return Error(ErrorDomain::Config, 0, m_file + ": no [[henb]] defined");
    auto* harr = hn->as_array();
    if (!harr) return err(hn->source(), "henb must be an array of tables ([[henb]])");
    std::vector<std::pair<const toml::table*, HenbConfig>> parsed;
    for (auto& e : *harr) {
        auto* t = e.as_table();
        if (!t) return err(e.source(), "[[henb]] entries must be tables");
        X2SEC_TRY_STATUS(known_keys(*t, "henb.",
                                    {"name", "identity", "vendor", "address", "certificate", "private_key",
                                     "certificate_anchor", "trust_anchors", "direct_interface", "cmp", "neighbour"}));
        HenbConfig h;
        h.where = where(t->source());
        X2SEC_TRY(h.name, req_str(*t, "name", "henb."));
        X2SEC_TRY(h.identity, req_str(*t, "identity", "henb."));
        X2SEC_TRY(auto vendor, opt_str(*t, "vendor", "henb."));
        h.vendor = vendor.value_or("");
        X2SEC_TRY(h.address, host_port(*t, "address", "henb."));
        X2SEC_TRY(auto cert, opt_str(*t, "certificate", "henb."));
        X2SEC_TRY(auto key, opt_str(*t, "private_key", "henb."));
        if (cert.has_value() != key.has_value())
            return err(t->source(), "henb '" + h.name + "': certificate and private_key go together");
        if (cert) h.certificate = path(*cert);
        if (key) h.private_key = path(*key);
        X2SEC_TRY(h.certificate_anchor, req_str(*t, "certificate_anchor", "henb."));
        if (!d.anchor(h.certificate_anchor))
            return err(t->get("certificate_anchor")->source(), "unknown anchor label '" + h.certificate_anchor + "'");
        if (auto* ta = t->get("trust_anchors")) {
            auto* arr = ta->as_array();
            if (!arr || arr->empty())
                return err(ta->source(), "henb.trust_anchors must be a non-empty array of anchor labels");
            for (auto& a : *arr) {
                auto s = a.value<std::string>();
                if (!s) return err(a.source(), "trust anchor labels must be strings");
                if (!d.anchor(*s)) return err(a.source(), "unknown anchor label '" + *s + "'");
                h.trust_anchors.push_back(*s);
            }
        } else {
            return err(t->source(), "henb '" + h.name + "': missing trust_anchors");
        }
        X2SEC_TRY(auto di, opt_bool(*t, "direct_interface", "henb."));
        h.direct_interface = di.value_or(true);
        X2SEC_TRY(auto cm, opt_bool(*t, "cmp", "henb."));
        h.cmp = cm.value_or(false);
        if (h.cmp && !d.cmp)
            return err(t->get("cmp")->source(), "henb '" + h.name + "' has cmp = true but there is no [cmp] server");
        for (auto& o : parsed)
            if (o.second.name == h.name) return err(t->source(), "duplicate henb name '" + h.name + "'");
        parsed.emplace_back(t, std::move(h));
    }
    for (auto& [t, h] : parsed) d.henbs.push_back(h);
    // Neighbours (second pass: they may refer to later [[henb]] entries).
    for (size_t i = 0; i < parsed.size(); ++i) {
        const toml::table& t = *parsed[i].first;
        HenbConfig& h = d.henbs[i];
        auto* nn = t.get("neighbour");
        if (!nn) continue;
        auto* arr = nn->as_array();
        if (!arr) return err(nn->source(), "neighbour must be an array of tables ([[henb.neighbour]])");
        for (auto& e : *arr) {
            auto* nt = e.as_table();
            if (!nt) return err(e.source(), "[[henb.neighbour]] entries must be tables");
            std::string pre = "henb.neighbour.";
            X2SEC_TRY_STATUS(known_keys(
                *nt, pre, {"name", "identity", "address", "enabled", "ipsec", "auth", "peer_anchor", "peer_cmp"}));
            NeighbourConfig n;
            n.where = where(nt->source());
            X2SEC_TRY(n.name, req_str(*nt, "name", pre));
            if (n.name == h.name) return err(nt->source(), "henb '" + h.name + "' lists itself as a neighbour");
            X2SEC_TRY(auto id, opt_str(*nt, "identity", pre));
            const HenbConfig* other = d.henb(n.name);
            if (id)
                n.identity = *id;
            else if (other)
                n.identity = other->identity;
            else
                return err(nt->source(),
                           "neighbour '" + n.name + "' is not a [[henb]] here: give identity and address");
            if (nt->get("address")) {
                X2SEC_TRY(n.address, host_port(*nt, "address", pre));
            } else if (other) {
                n.address = other->address;
            } else {
                return err(nt->source(), "neighbour '" + n.name + "': missing address");
            }
            X2SEC_TRY(auto en, opt_bool(*nt, "enabled", pre));
            n.enabled = en.value_or(true);
            X2SEC_TRY(n.ipsec, enum_value<IpsecPolicy>(*nt, "ipsec", pre,
                                                       {{"off", IpsecPolicy::Off}, {"required", IpsecPolicy::Required}},
                                                       IpsecPolicy::Required));
            X2SEC_TRY(n.auth, enum_value<AuthMode>(*nt, "auth", pre,
                                                   {{"auto", AuthMode::Auto},
                                                    {"certificate", AuthMode::Certificate},
                                                    {"psk-from-network", AuthMode::PskFromNetwork}},
                                                   AuthMode::Auto));
            if (n.auth == AuthMode::PskFromNetwork && !d.kds)
                return err(nt->get("auth")->source(), "auth = \"psk-from-network\" needs a [kds] section");
            X2SEC_TRY(n.peer_anchor, opt_str(*nt, "peer_anchor", pre));
            if (n.peer_anchor && !d.anchor(*n.peer_anchor))
                return err(nt->get("peer_anchor")->source(), "unknown anchor label '" + *n.peer_anchor + "'");
            X2SEC_TRY(n.peer_cmp, opt_bool(*nt, "peer_cmp", pre));
            for (auto& o : h.neighbours)
                if (o.name == n.name)
                    return err(nt->source(), "duplicate neighbour '" + n.name + "' of '" + h.name + "'");
            h.neighbours.push_back(std::move(n));
        }
    }
    return d;
}

}  // namespace

Result<DeploymentConfig> parse_config(std::string_view text, const std::string& source, const std::string& base) {
    Parser p(source, base.empty() ? "." : base);
    return p.parse(text);
}

Result<DeploymentConfig> load_config(const std::string& path) {
    X2SEC_TRY(std::string text, read_text_file(path));
    auto base = std::filesystem::path(path).parent_path().string();
    return parse_config(text, path, base);
}

LocalFacts local_facts(const DeploymentConfig& d, const HenbConfig& h) {
    LocalFacts f;
    f.direct_interface = h.direct_interface;
    f.cmp_supported = h.cmp;
    f.cmp_server_configured = d.cmp.has_value();
    f.kds_configured = d.kds.has_value();
    f.current_cert_anchor = h.certificate_anchor;
    return f;
}

PeerFacts peer_facts(const DeploymentConfig&, const HenbConfig&, const NeighbourConfig& n) {
    PeerFacts p;
    p.direct_interface = n.enabled;
    p.ipsec = n.ipsec;
    p.auth = n.auth;
    p.peer_cert_anchor = n.peer_anchor;
    p.peer_cmp_supported = n.peer_cmp;
    return p;
}

}  // namespace x2sec::policy
