// TOML -> FileConfig.  See file_config.hpp and docs/ikev2.md for the format.
#include <x2sec/config/file_config.hpp>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <climits>
#include <filesystem>
#include <set>
#include <sstream>
#include <toml++/toml.h>

namespace x2sec::config {

std::string Location::to_string() const {
    std::ostringstream os;
    os << file << ':' << line << ':' << column;
    return os.str();
}

void Diagnostics::error(const Location& where, std::string_view message) {
    m_lines.push_back(where.to_string() + ": " + std::string(message));
}

Error Diagnostics::to_error() const {
    std::string detail;
    for (const auto& l : m_lines) {
        if (!detail.empty()) detail += '\n';
        detail += l;
    }
    return Error(ErrorDomain::Config, 0, detail);
}

namespace {

std::string trim(std::string_view s) {
    size_t b = 0, e = s.size();
    while (b < e && std::isspace(static_cast<unsigned char>(s[b]))) ++b;
    while (e > b && std::isspace(static_cast<unsigned char>(s[e - 1]))) --e;
    return std::string(s.substr(b, e - b));
}

std::optional<uint64_t> to_u64(std::string_view s) {
    if (s.empty()) return std::nullopt;
    uint64_t v = 0;
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (ec != std::errc() || p != s.data() + s.size()) return std::nullopt;
    return v;
}

std::optional<uint8_t> protocol_number(std::string_view name) {
    std::string n(name);
    std::transform(n.begin(), n.end(), n.begin(), [](unsigned char c) { return std::tolower(c); });
    if (n == "any" || n == "*") return 0;
    if (n == "icmp") return 1;
    if (n == "tcp") return 6;
    if (n == "udp") return 17;
    if (n == "ipv6-icmp" || n == "icmpv6") return 58;
    if (n == "sctp") return 132;
    auto v = to_u64(n);
    if (v && *v <= 255) return static_cast<uint8_t>(*v);
    return std::nullopt;
}

}  // namespace

Result<TrafficSelector> parse_traffic_selector(std::string_view text_in) {
    std::string text = trim(text_in);
    std::string addr_part = text, proto_part;
    if (auto lb = text.find('['); lb != std::string::npos) {
        if (text.back() != ']') return Error(ErrorDomain::Config, 0, "traffic selector '" + text + "': missing ']'");
        addr_part = trim(text.substr(0, lb));
        proto_part = trim(text.substr(lb + 1, text.size() - lb - 2));
    }
    std::string host = addr_part;
    std::optional<unsigned> prefix;
    if (auto slash = addr_part.find('/'); slash != std::string::npos) {
        host = addr_part.substr(0, slash);
        auto p = to_u64(addr_part.substr(slash + 1));
        if (!p) return Error(ErrorDomain::Config, 0, "traffic selector '" + text + "': bad prefix length");
        prefix = static_cast<unsigned>(*p);
    }
    auto addr = IpAddress::parse(host);
    if (!addr)
        return Error(ErrorDomain::Config, 0,
                     "traffic selector '" + text + "': '" + host + "' is not an IPv4 or IPv6 address");
    unsigned max_len = addr->v6 ? 128 : 32;
    if (!prefix) prefix = max_len;
    if (*prefix > max_len)
        return Error(ErrorDomain::Config, 0,
                     "traffic selector '" + text + "': prefix length " + std::to_string(*prefix) + " exceeds " +
                         std::to_string(max_len));
    // Host bits set below the prefix are a typo more often than not.
    for (unsigned bit = *prefix; bit < max_len; ++bit) {
        if (addr->bytes[bit / 8] & (0x80u >> (bit % 8)))
            return Error(ErrorDomain::Config, 0,
                         "traffic selector '" + text + "': host bits set below /" + std::to_string(*prefix));
    }
    uint8_t proto = 0;
    uint16_t lo = 0, hi = 65535;
    if (!proto_part.empty()) {
        std::string pname = proto_part, ports;
        if (auto s = proto_part.find('/'); s != std::string::npos) {
            pname = proto_part.substr(0, s);
            ports = proto_part.substr(s + 1);
        }
        auto p = protocol_number(pname);
        if (!p)
            return Error(ErrorDomain::Config, 0, "traffic selector '" + text + "': unknown protocol '" + pname + "'");
        proto = *p;
        if (!ports.empty() && ports != "any" && ports != "*") {
            std::string a = ports, b = ports;
            if (auto d = ports.find('-'); d != std::string::npos) {
                a = ports.substr(0, d);
                b = ports.substr(d + 1);
            }
            auto pa = to_u64(a), pb = to_u64(b);
            if (!pa || !pb || *pa > 65535 || *pb > 65535 || *pa > *pb)
                return Error(ErrorDomain::Config, 0,
                             "traffic selector '" + text + "': bad port or port range '" + ports + "'");
            if (proto != 6 && proto != 17 && proto != 132 && proto != 0)
                return Error(ErrorDomain::Config, 0, "traffic selector '" + text + "': ports need tcp, udp or sctp");
            lo = static_cast<uint16_t>(*pa);
            hi = static_cast<uint16_t>(*pb);
        }
    }
    return TrafficSelector::from_prefix(*addr, *prefix, proto, lo, hi);
}

Result<int64_t> parse_duration_ms(std::string_view text_in) {
    std::string text = trim(text_in);
    size_t i = 0;
    while (i < text.size() && std::isdigit(static_cast<unsigned char>(text[i]))) ++i;
    auto num = to_u64(std::string_view(text).substr(0, i));
    std::string unit = text.substr(i);
    if (!num)
        return Error(ErrorDomain::Config, 0,
                     "duration '" + text + "': expected a number with an optional unit (ms, s, m, h, d)");
    int64_t mult;
    if (unit.empty() || unit == "s")
        mult = 1000;
    else if (unit == "ms")
        mult = 1;
    else if (unit == "m")
        mult = 60'000;
    else if (unit == "h")
        mult = 3'600'000;
    else if (unit == "d")
        mult = 86'400'000;
    else
        return Error(ErrorDomain::Config, 0, "duration '" + text + "': unknown unit '" + unit + "' (ms, s, m, h, d)");
    if (*num > uint64_t(INT64_MAX) / uint64_t(mult))
        return Error(ErrorDomain::Config, 0, "duration '" + text + "' is too large");
    return static_cast<int64_t>(*num) * mult;
}

namespace {

Location loc_of(const toml::node& n, const std::string& file) {
    const auto& s = n.source();
    return Location{file, s.begin.line, s.begin.column};
}

// Reads one TOML table: typed getters that report wrong types and ranges, and a check that
// no unknown key is left (typos are errors, not silently ignored).
class TableReader {
public:
    TableReader(const toml::table& t, std::string what, const std::string& file, Diagnostics& d)
        : m_t(t), m_what(std::move(what)), m_file(file), m_d(d) {}

    Location where() const { return loc_of(m_t, m_file); }
    Location where(std::string_view key) const {
        const toml::node* n = m_t.get(key);
        return n ? loc_of(*n, m_file) : where();
    }
    bool has(std::string_view key) {
        m_seen.insert(std::string(key));
        return m_t.contains(key);
    }
    const toml::node* node(std::string_view key) {
        m_seen.insert(std::string(key));
        return m_t.get(key);
    }
    void error(std::string_view key, const std::string& msg) { m_d.error(where(key), msg); }
    void missing(std::string_view key) {
        m_d.error(where(), m_what + ": missing required key '" + std::string(key) + "'");
    }

    std::optional<Located<std::string>> str(std::string_view key, bool required = false) {
        const toml::node* n = node(key);
        if (!n) {
            if (required) missing(key);
            return std::nullopt;
        }
        if (auto v = n->value<std::string>()) return Located<std::string>{*v, loc_of(*n, m_file)};
        m_d.error(loc_of(*n, m_file), "'" + std::string(key) + "' must be a string");
        return std::nullopt;
    }
    std::optional<bool> boolean(std::string_view key) {
        const toml::node* n = node(key);
        if (!n) return std::nullopt;
        if (auto v = n->value_exact<bool>()) return *v;
        m_d.error(loc_of(*n, m_file), "'" + std::string(key) + "' must be true or false");
        return std::nullopt;
    }
    std::optional<int64_t> integer(std::string_view key, int64_t lo, int64_t hi) {
        const toml::node* n = node(key);
        if (!n) return std::nullopt;
        auto v = n->value_exact<int64_t>();
        if (!v) {
            m_d.error(loc_of(*n, m_file), "'" + std::string(key) + "' must be an integer");
            return std::nullopt;
        }
        if (*v < lo || *v > hi) {
            m_d.error(loc_of(*n, m_file), "'" + std::string(key) + "' = " + std::to_string(*v) + " is out of range [" +
                                              std::to_string(lo) + ", " + std::to_string(hi) + "]");
            return std::nullopt;
        }
        return *v;
    }
    std::optional<uint16_t> port(std::string_view key) {
        auto v = integer(key, 1, 65535);
        if (!v) return std::nullopt;
        return static_cast<uint16_t>(*v);
    }
    std::optional<double> number(std::string_view key, double lo, double hi) {
        const toml::node* n = node(key);
        if (!n) return std::nullopt;
        auto v = n->value<double>();
        if (!v || (!n->is_floating_point() && !n->is_integer())) {
            m_d.error(loc_of(*n, m_file), "'" + std::string(key) + "' must be a number");
            return std::nullopt;
        }
        if (*v < lo || *v > hi) {
            m_d.error(loc_of(*n, m_file), "'" + std::string(key) + "' is out of range");
            return std::nullopt;
        }
        return *v;
    }
    // A duration: an integer (seconds) or a string with a unit ("4h", "500ms").
    std::optional<int64_t> duration_ms(std::string_view key) {
        const toml::node* n = node(key);
        if (!n) return std::nullopt;
        if (auto v = n->value_exact<int64_t>()) {
            if (*v < 0 || *v > INT64_MAX / 1000) {
                m_d.error(loc_of(*n, m_file), "'" + std::string(key) + "' must be a non-negative number of seconds");
                return std::nullopt;
            }
            return *v * 1000;
        }
        if (auto s = n->value<std::string>()) {
            auto r = parse_duration_ms(*s);
            if (r) return *r;
            m_d.error(loc_of(*n, m_file), r.error().detail());
            return std::nullopt;
        }
        m_d.error(loc_of(*n, m_file),
                  "'" + std::string(key) + "' must be a duration (seconds, or a string such as \"4h\")");
        return std::nullopt;
    }
    std::optional<IpAddress> address(std::string_view key, bool required) {
        auto s = str(key, required);
        if (!s) return std::nullopt;
        auto a = IpAddress::parse(s->value);
        if (!a) {
            m_d.error(s->where, "'" + std::string(key) + "' = '" + s->value + "' is not an IPv4 or IPv6 address");
            return std::nullopt;
        }
        return a;
    }
    // A string or an array of strings.
    std::vector<Located<std::string>> strings(std::string_view key) {
        std::vector<Located<std::string>> out;
        const toml::node* n = node(key);
        if (!n) return out;
        if (auto v = n->value<std::string>()) {
            out.push_back({*v, loc_of(*n, m_file)});
            return out;
        }
        const toml::array* arr = n->as_array();
        if (!arr) {
            m_d.error(loc_of(*n, m_file), "'" + std::string(key) + "' must be a string or an array of strings");
            return out;
        }
        for (const auto& e : *arr) {
            if (auto v = e.value<std::string>())
                out.push_back({*v, loc_of(e, m_file)});
            else
                m_d.error(loc_of(e, m_file), "'" + std::string(key) + "': every element must be a string");
        }
        return out;
    }
    // Sub-tables: an array of tables ([[x]]) or a single table ([x]).
    std::vector<const toml::table*> tables(std::string_view key) {
        std::vector<const toml::table*> out;
        const toml::node* n = node(key);
        if (!n) return out;
        if (const auto* t = n->as_table()) {
            out.push_back(t);
            return out;
        }
        if (const auto* arr = n->as_array()) {
            for (const auto& e : *arr) {
                if (const auto* t = e.as_table())
                    out.push_back(t);
                else
                    m_d.error(loc_of(e, m_file),
                              "'" + std::string(key) + "' must be a table ([[" + std::string(key) + "]])");
            }
            return out;
        }
        m_d.error(loc_of(*n, m_file), "'" + std::string(key) + "' must be a table ([[" + std::string(key) + "]])");
        return out;
    }
    void finish() {
        for (const auto& [k, v] : m_t) {
            if (!m_seen.count(std::string(k.str())))
                m_d.error(k.source().begin ? Location{m_file, k.source().begin.line, k.source().begin.column}
                                           : loc_of(v, m_file),
                          m_what + ": unknown key '" + std::string(k.str()) + "'");
        }
    }

private:
    const toml::table& m_t;
    std::string m_what;
    const std::string& m_file;
    Diagnostics& m_d;
    std::set<std::string> m_seen;
};

class Parser {
public:
    Parser(std::string file, std::string base_dir) : m_file(std::move(file)), m_base(std::move(base_dir)) {}

    std::string resolve(const std::string& p) const {
        std::filesystem::path fp(p);
        if (fp.is_absolute()) return p;
        return (std::filesystem::path(m_base) / fp).lexically_normal().string();
    }

    void parse(const toml::table& root, FileConfig& out) {
        TableReader r(root, "top level", m_file, m_d);
        for (const auto* t : r.tables("runtime")) runtime(*t, out.runtime);
        for (const auto* t : r.tables("engine")) engine(*t, out.engine);
        for (const auto* t : r.tables("metrics")) {
            TableReader m(*t, "[metrics]", m_file, m_d);
            out.metrics.where = m.where();
            if (auto l = m.str("listen")) {
                out.metrics.listen = l->value;
                out.metrics.where = l->where;
            }
            m.finish();
        }
        for (const auto* t : r.tables("trust_anchor")) {
            TableReader a(*t, "[[trust_anchor]]", m_file, m_d);
            TrustAnchorEntry e;
            e.where = a.where();
            if (auto l = a.str("label", true)) e.label = l->value;
            if (auto f = a.str("file", true)) e.file = resolve(f->value);
            a.finish();
            out.trust_anchors.push_back(std::move(e));
        }
        for (const auto* t : r.tables("crl")) {
            TableReader a(*t, "[[crl]]", m_file, m_d);
            CrlEntry e;
            e.where = a.where();
            if (auto f = a.str("file", true)) e.file = resolve(f->value);
            a.finish();
            out.crls.push_back(std::move(e));
        }
        if (auto b = r.boolean("crl_check")) {
            out.crl_check = *b;
            out.revocation.mode = *b ? RevocationMode::Require : RevocationMode::Off;
        }
        for (const auto* t : r.tables("revocation")) revocation(*t, out.revocation);
        for (const auto* t : r.tables("credential")) {
            TableReader a(*t, "[[credential]]", m_file, m_d);
            CredentialEntry e;
            e.where = a.where();
            if (auto n = a.str("name", true)) e.name = n->value;
            // A file path (relative to the config file) or a pkcs11: URI (a key in a token).
            if (auto k = a.str("key", true))
                e.key_file = k->value.rfind("pkcs11:", 0) == 0 ? k->value : resolve(k->value);
            auto certs = a.strings("certs");
            if (!a.has("certs")) a.missing("certs");
            for (auto& c : certs) e.cert_files.push_back(resolve(c.value));
            a.finish();
            for (const auto& prev : out.credentials)
                if (prev.name == e.name) m_d.error(e.where, "duplicate credential name '" + e.name + "'");
            out.credentials.push_back(std::move(e));
        }
        for (const auto* t : r.tables("peer")) out.peers.push_back(peer(*t, out));
        r.finish();
        // Cross references.
        std::set<std::string> labels;
        for (const auto& a : out.trust_anchors) labels.insert(a.label);
        for (const auto& p : out.peers) {
            if (p.credential) {
                bool found = std::any_of(out.credentials.begin(), out.credentials.end(),
                                         [&](const auto& c) { return c.name == p.credential->value; });
                if (!found)
                    m_d.error(p.credential->where,
                              "peer '" + p.name + "': no [[credential]] named '" + p.credential->value + "'");
            }
            for (const auto& l : p.trust)
                if (!labels.count(l.value))
                    m_d.error(l.where, "peer '" + p.name + "': no [[trust_anchor]] with label '" + l.value + "'");
        }
    }

    Diagnostics& diagnostics() { return m_d; }

private:
    void runtime(const toml::table& t, RuntimeSection& rt) {
        TableReader r(t, "[runtime]", m_file, m_d);
        if (auto p = r.port("ike_port")) rt.ike_port = *p;
        if (auto p = r.port("natt_port")) rt.natt_port = *p;
        for (auto& s : r.strings("listen")) {
            auto a = IpAddress::parse(s.value);
            if (!a)
                m_d.error(s.where, "'listen': '" + s.value + "' is not an IPv4 or IPv6 address");
            else
                rt.listen.push_back(*a);
        }
        if (auto s = r.str("control_socket")) rt.control_socket = resolve(s->value);
        if (auto s = r.str("log_level")) {
            static const std::set<std::string> levels{"trace", "debug", "info", "warn", "error", "critical", "off"};
            if (!levels.count(s->value))
                m_d.error(s->where, "'log_level' must be one of trace, debug, info, warn, error, critical, off");
            else
                rt.log_level = s->value;
        }
        if (auto s = r.str("log_file")) rt.log_file = resolve(s->value);
        r.finish();
    }

    void engine(const toml::table& t, EngineSection& e) {
        TableReader r(t, "[engine]", m_file, m_d);
        if (auto v = r.duration_ms("retransmit_timeout")) {
            if (*v <= 0)
                r.error("retransmit_timeout", "'retransmit_timeout' must be positive");
            else
                e.retransmit_timeout_ms = *v;
        }
        if (auto v = r.number("retransmit_backoff", 1.0, 10.0)) e.retransmit_backoff = *v;
        if (auto v = r.integer("retransmit_tries", 0, 100)) e.retransmit_tries = static_cast<uint32_t>(*v);
        if (auto v = r.integer("retransmit_jitter", 0, 100)) e.retransmit_jitter_percent = static_cast<uint32_t>(*v);
        if (auto v = r.integer("cookie_threshold", 0, 1'000'000)) e.cookie_threshold = static_cast<uint32_t>(*v);
        if (auto v = r.integer("max_half_open", 1, 10'000'000)) e.max_half_open = static_cast<uint32_t>(*v);
        if (auto v = r.integer("max_half_open_per_source", 1, 10'000'000))
            e.max_half_open_per_source = static_cast<uint32_t>(*v);
        if (auto v = r.integer("max_message_size", 1280, 1 << 20)) e.max_message_size = static_cast<uint32_t>(*v);
        if (auto v = r.duration_ms("half_open_timeout")) e.half_open_timeout_ms = *v;
        r.finish();
    }

    void revocation(const toml::table& t, RevocationSection& rv) {
        TableReader r(t, "[revocation]", m_file, m_d);
        rv.where = r.where();
        if (auto s = r.str("mode")) {
            if (s->value == "auto")
                rv.mode = RevocationMode::Auto;
            else if (s->value == "require")
                rv.mode = RevocationMode::Require;
            else if (s->value == "off")
                rv.mode = RevocationMode::Off;
            else
                m_d.error(s->where, "'mode' must be \"auto\", \"require\" or \"off\", not '" + s->value + "'");
        }
        if (auto s = r.str("crl_policy")) {
            if (s->value == "hard" || s->value == "soft")
                rv.policy_soft = s->value == "soft";
            else
                m_d.error(s->where, "'crl_policy' must be \"hard\" or \"soft\", not '" + s->value + "'");
        }
        if (auto b = r.boolean("fetch")) rv.fetch = *b;
        for (auto& u : r.strings("crl_urls")) {
            if (u.value.rfind("http://", 0) != 0)
                m_d.error(u.where, "'crl_urls': '" + u.value + "' is not an http:// URL");
            else
                rv.crl_urls.push_back(u.value);
        }
        auto positive = [&](const char* key, int64_t& out) {
            if (auto v = r.duration_ms(key)) {
                if (*v < 0)
                    r.error(key, std::string("'") + key + "' must not be negative");
                else
                    out = *v;
            }
        };
        positive("fetch_timeout", rv.fetch_timeout_ms);
        positive("max_wait", rv.max_wait_ms);
        positive("refresh", rv.refresh_ms);
        positive("retry", rv.retry_ms);
        if (rv.fetch_timeout_ms < 1000) r.error("fetch_timeout", "'fetch_timeout' must be at least 1s");
        if (auto v = r.integer("max_crl_size", 1024, 64 * 1024 * 1024)) rv.max_crl_size = static_cast<uint32_t>(*v);
        if (auto s = r.str("cache_dir")) rv.cache_dir = resolve(s->value);
        if (auto s = r.str("method")) {
            if (s->value == "crl" || s->value == "ocsp" || s->value == "ocsp-then-crl")
                rv.method = s->value;
            else
                m_d.error(s->where, "'method' must be \"crl\", \"ocsp\" or \"ocsp-then-crl\", not '" + s->value + "'");
        }
        if (auto b = r.boolean("ocsp_nonce")) rv.ocsp_nonce = *b;
        positive("ocsp_max_age", rv.ocsp_max_age_ms);
        r.finish();
    }

    AuthKind auth_kind(const Located<std::string>& s, const std::string& key) {
        if (s.value == "cert" || s.value == "pubkey" || s.value == "certificate") return AuthKind::Certificate;
        if (s.value == "psk") return AuthKind::Psk;
        m_d.error(s.where, "'" + key + "' must be \"cert\" or \"psk\", not '" + s.value + "'");
        return AuthKind::Certificate;
    }

    PeerEntry peer(const toml::table& t, const FileConfig& cfg) {
        PeerEntry p;
        p.where = loc_of(t, m_file);
        p.local_port = cfg.runtime.ike_port;
        p.local_natt_port = cfg.runtime.natt_port;
        std::string label = "[[peer]]";
        {
            // name first, so that later messages can name the peer
            const toml::node* n = t.get("name");
            if (n && n->value<std::string>()) label = "peer '" + *n->value<std::string>() + "'";
        }
        TableReader r(t, label, m_file, m_d);
        if (auto n = r.str("name", true)) p.name = n->value;
        if (auto a = r.address("local_addr", true)) p.local_addr = *a;
        if (auto a = r.address("remote_addr", true)) p.remote_addr = *a;
        if (r.has("local_addr") && r.has("remote_addr") && p.local_addr.v6 != p.remote_addr.v6)
            r.error("remote_addr", label + ": local_addr and remote_addr must be the same address family");
        if (auto v = r.port("local_port")) p.local_port = *v;
        if (auto v = r.port("remote_port")) p.remote_port = *v;
        if (auto v = r.port("local_natt_port")) p.local_natt_port = *v;
        if (auto v = r.port("remote_natt_port")) p.remote_natt_port = *v;
        if (p.local_port == p.local_natt_port)
            m_d.error(
                r.where("local_natt_port"),
                label + ": local_port and local_natt_port must differ (the NAT-T port carries the non-ESP marker)");
        if (auto s = r.str("local_id", true)) p.local_id = *s;
        if (auto s = r.str("remote_id")) p.remote_id = *s;
        auto auth = r.str("auth");
        if (auth) p.local_auth = p.remote_auth = auth_kind(*auth, "auth");
        if (auto s = r.str("local_auth")) p.local_auth = auth_kind(*s, "local_auth");
        if (auto s = r.str("remote_auth")) p.remote_auth = auth_kind(*s, "remote_auth");
        if (auto s = r.str("credential")) p.credential = *s;
        p.trust = r.strings("trust");
        if (auto s = r.str("psk")) {
            const std::string& v = s->value;
            if (v.rfind("hex:", 0) == 0)
                p.psk_hex = Located<std::string>{v.substr(4), s->where};
            else if (v.rfind("0x", 0) == 0)
                p.psk_hex = Located<std::string>{v.substr(2), s->where};
            else if (v.rfind("text:", 0) == 0)
                p.psk_text = Located<std::string>{v.substr(5), s->where};
            else
                m_d.error(s->where, label + ": 'psk' must start with \"hex:\", \"0x\" or \"text:\" (or use psk_file)");
        }
        if (auto s = r.str("psk_file")) p.psk_file = Located<std::string>{resolve(s->value), s->where};
        if (p.psk_file && (p.psk_hex || p.psk_text))
            m_d.error(p.psk_file->where, label + ": give either 'psk' or 'psk_file', not both");
        bool uses_psk = p.local_auth == AuthKind::Psk || p.remote_auth == AuthKind::Psk;
        bool uses_cert_local = p.local_auth == AuthKind::Certificate;
        bool uses_cert_remote = p.remote_auth == AuthKind::Certificate;
        if (uses_psk && !p.psk_file && !p.psk_hex && !p.psk_text)
            m_d.error(p.where, label + ": PSK authentication needs 'psk' or 'psk_file'");
        if (!uses_psk && (p.psk_file || p.psk_hex || p.psk_text))
            m_d.error(r.where(p.psk_file ? "psk_file" : "psk"),
                      label + ": a PSK is given but neither side authenticates with \"psk\"");
        if (uses_cert_local && !p.credential)
            m_d.error(p.where, label + ": certificate authentication needs 'credential' (a [[credential]] name)");
        if (uses_cert_remote && cfg.trust_anchors.empty())
            m_d.error(p.where,
                      label + ": the peer authenticates with a certificate but no [[trust_anchor]] is configured");
        if (auto b = r.boolean("send_certreq")) p.send_certreq = *b;
        if (auto s = r.str("unique")) p.unique = Located<std::string>{s->value, s->where};
        if (auto s = r.str("ocsp_stapling")) p.ocsp_stapling = Located<std::string>{s->value, s->where};
        if (auto s = r.str("ocsp_staple_file")) p.ocsp_staple_file = resolve(s->value);
        for (auto& f : r.strings("ocsp_responders")) p.ocsp_responders.push_back({resolve(f.value), f.where});
        p.ike_proposals = r.strings("ike_proposals");
        if (!r.has("ike_proposals")) p.ike_proposals.push_back({"aes128gcm16-prfsha256-ecp256", p.where});
        if (auto v = r.duration_ms("ike_rekey")) p.ike_rekey_seconds = static_cast<uint64_t>(*v / 1000);
        if (auto v = r.duration_ms("dpd_interval")) p.dpd_interval_ms = static_cast<uint64_t>(*v);
        if (auto v = r.integer("dpd_jitter", 0, 100)) p.dpd_jitter_percent = static_cast<uint32_t>(*v);
        if (auto b = r.boolean("fragmentation")) p.fragmentation = *b;
        if (auto v = r.integer("fragment_size", 576, 65535)) p.fragment_size = static_cast<uint32_t>(*v);
        if (auto b = r.boolean("force_encap")) p.force_encap = *b;
        if (auto b = r.boolean("auto_initiate")) p.auto_initiate = *b;
        for (const auto* ct : r.tables("child")) p.children.push_back(child(*ct, p));
        if (!r.has("child")) m_d.error(p.where, label + ": at least one [[peer.child]] is required");
        r.finish();
        for (const auto& prev : cfg.peers)
            if (prev.name == p.name) m_d.error(p.where, "duplicate peer name '" + p.name + "'");
        return p;
    }

    ChildEntry child(const toml::table& t, const PeerEntry& p) {
        ChildEntry c;
        c.where = loc_of(t, m_file);
        std::string label = "child of peer '" + p.name + "'";
        TableReader r(t, label, m_file, m_d);
        if (auto n = r.str("name", true)) c.name = n->value;
        auto ts_list = [&](const char* key, std::vector<TrafficSelector>& out) {
            auto items = r.strings(key);
            if (!r.has(key)) r.missing(key);
            for (auto& s : items) {
                auto ts = parse_traffic_selector(s.value);
                if (!ts)
                    m_d.error(s.where, ts.error().detail());
                else
                    out.push_back(*ts);
            }
        };
        ts_list("local_ts", c.local_ts);
        ts_list("remote_ts", c.remote_ts);
        c.esp_proposals = r.strings("esp_proposals");
        if (!r.has("esp_proposals")) c.esp_proposals.push_back({"aes128gcm16", c.where});
        if (auto s = r.str("mode")) {
            if (s->value == "tunnel")
                c.mode = IpsecMode::Tunnel;
            else if (s->value == "transport")
                c.mode = IpsecMode::Transport;
            else
                m_d.error(s->where, "'mode' must be \"tunnel\" or \"transport\"");
        }
        if (auto v = r.duration_ms("rekey")) c.rekey_seconds = static_cast<uint64_t>(*v / 1000);
        if (auto v = r.duration_ms("life_soft")) c.lifetime.soft_seconds = static_cast<uint64_t>(*v / 1000);
        if (auto v = r.duration_ms("life_hard")) c.lifetime.hard_seconds = static_cast<uint64_t>(*v / 1000);
        if (auto v = r.integer("life_bytes_soft", 0, INT64_MAX)) c.lifetime.soft_bytes = static_cast<uint64_t>(*v);
        if (auto v = r.integer("life_bytes_hard", 0, INT64_MAX)) c.lifetime.hard_bytes = static_cast<uint64_t>(*v);
        if (auto v = r.integer("life_packets_soft", 0, INT64_MAX)) c.lifetime.soft_packets = static_cast<uint64_t>(*v);
        if (auto v = r.integer("life_packets_hard", 0, INT64_MAX)) c.lifetime.hard_packets = static_cast<uint64_t>(*v);
        if (c.lifetime.hard_seconds && c.lifetime.soft_seconds > c.lifetime.hard_seconds)
            m_d.error(r.where("life_soft"), label + ": 'life_soft' must not exceed 'life_hard'");
        if (auto v = r.integer("replay_window", 0, 1 << 20)) c.replay_window = static_cast<uint32_t>(*v);
        r.finish();
        for (const auto& prev : p.children)
            if (prev.name == c.name) m_d.error(c.where, "peer '" + p.name + "': duplicate child name '" + c.name + "'");
        return c;
    }

    std::string m_file, m_base;
    Diagnostics m_d;
};

Result<FileConfig> parse_table(const toml::table& root, const std::string& name, const std::string& base) {
    FileConfig cfg;
    cfg.path = name;
    cfg.base_dir = base;
    Parser p(name, base);
    p.parse(root, cfg);
    if (!p.diagnostics().empty()) return p.diagnostics().to_error();
    if (cfg.peers.empty()) {
        Diagnostics d;
        d.error(Location{name, 1, 1}, "no [[peer]] configured");
        return d.to_error();
    }
    return cfg;
}

Error toml_error(const toml::parse_error& e, const std::string& name) {
    Diagnostics d;
    d.error(Location{name, e.source().begin.line, e.source().begin.column},
            "TOML syntax error: " + std::string(e.description()));
    return d.to_error();
}

}  // namespace

Result<FileConfig> parse_string(std::string_view text, const std::string& source_name, const std::string& base_dir) {
    try {
        toml::table root = toml::parse(text, source_name);
        return parse_table(root, source_name, base_dir);
    } catch (const toml::parse_error& e) {
        return toml_error(e, source_name);
    }
}

Result<FileConfig> parse_file(const std::string& path) {
    std::error_code ec;
    if (!std::filesystem::is_regular_file(path, ec))
        return Error(ErrorDomain::Config, 0, path + ": not a readable file");
    std::string base = std::filesystem::absolute(path, ec).parent_path().string();
    try {
        toml::table root = toml::parse_file(path);
        return parse_table(root, path, base);
    } catch (const toml::parse_error& e) {
        return toml_error(e, path);
    }
}

}  // namespace x2sec::config
