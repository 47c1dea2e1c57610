#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <x2sec/common/counters.hpp>
#include <x2sec/common/metrics.hpp>

namespace x2sec::metrics {

const char* to_string(Type t) {
    switch (t) {
        case Type::Counter:
            return "counter";
        case Type::Gauge:
            return "gauge";
        case Type::Histogram:
            return "histogram";
    }
    return "untyped";
}

std::string escape_label_value(std::string_view v) {
    std::string out;
    out.reserve(v.size());
    for (char c : v) {
        if (c == '\\')
            out += "\\\\";
        else if (c == '"')
            out += "\\\"";
        else if (c == '\n')
            out += "\\n";
        else
            out += c;
    }
    return out;
}

std::string escape_help(std::string_view v) {
    std::string out;
    out.reserve(v.size());
    for (char c : v) {
        if (c == '\\')
            out += "\\\\";
        else if (c == '\n')
            out += "\\n";
        else
            out += c;
    }
    return out;
}

namespace {
bool alpha(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}
bool digit(char c) {
    return c >= '0' && c <= '9';
}

std::string sanitize(std::string_view s, bool colon) {
    std::string out;
    for (char c : s) out += alpha(c) || digit(c) || (colon && c == ':') ? c : '_';
    if (out.empty() || digit(out[0])) out.insert(out.begin(), '_');
    return out;
}
}  // namespace

std::string sanitize_metric_name(std::string_view s) {
    return sanitize(s, true);
}

std::string sanitize_label_name(std::string_view s) {
    std::string out = sanitize(s, false);
    while (out.size() >= 2 && out[0] == '_' && out[1] == '_') out.erase(0, 1);  // "__" is reserved
    return out;
}

bool valid_metric_name(std::string_view s) {
    if (s.empty() || !(alpha(s[0]) || s[0] == ':')) return false;
    return std::all_of(s.begin(), s.end(), [](char c) { return alpha(c) || digit(c) || c == ':'; });
}

bool valid_label_name(std::string_view s) {
    if (s.empty() || !alpha(s[0]) || s.substr(0, 2) == "__") return false;
    return std::all_of(s.begin(), s.end(), [](char c) { return alpha(c) || digit(c); });
}

std::string format_value(double v) {
    if (std::isnan(v)) return "NaN";
    if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
    char buf[64];
    if (v == std::floor(v) && std::fabs(v) < 9.007199254740992e15)
        std::snprintf(buf, sizeof buf, "%.0f", v);
    else
        for (int prec = 15; prec <= 17; ++prec) {  // the shortest text that reads back as v
            std::snprintf(buf, sizeof buf, "%.*g", prec, v);
            if (std::strtod(buf, nullptr) == v) break;
        }
    return buf;
}

std::vector<double> latency_buckets() {
    return {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30};
}

Histogram::Histogram(std::vector<double> upper_bounds) : m_bounds(std::move(upper_bounds)) {
    std::sort(m_bounds.begin(), m_bounds.end());
    m_bounds.erase(std::unique(m_bounds.begin(), m_bounds.end()), m_bounds.end());
    std::erase_if(m_bounds, [](double b) { return std::isnan(b) || std::isinf(b); });
    m_counts = std::make_unique<std::atomic<uint64_t>[]>(m_bounds.size() + 1);
}

void Histogram::observe(double v) {
    if (std::isnan(v)) return;
    size_t i = static_cast<size_t>(std::lower_bound(m_bounds.begin(), m_bounds.end(), v) - m_bounds.begin());
    m_counts[i].fetch_add(1, std::memory_order_relaxed);
    m_sum.fetch_add(v, std::memory_order_relaxed);
    m_count.fetch_add(1, std::memory_order_relaxed);
}

Histogram::Snapshot Histogram::snapshot() const {
    Snapshot s;
    s.bounds = m_bounds;
    uint64_t cum = 0;
    for (size_t i = 0; i <= m_bounds.size(); ++i) {
        cum += m_counts[i].load(std::memory_order_relaxed);
        s.buckets.push_back(cum);
    }
    // Concurrent observe() calls may have bumped a bucket but not yet the count: the +Inf
    // bucket is the count, so the two always agree in the exposition.
    s.count = cum;
    s.sum = m_sum.load(std::memory_order_relaxed);
    return s;
}

Histogram& Registry::histogram(std::string_view name, const std::vector<double>& bounds) {
    std::lock_guard lock(m_mutex);
    auto it = m_histograms.find(name);
    if (it == m_histograms.end())
        it = m_histograms.emplace(std::string(name), std::make_unique<Histogram>(bounds)).first;
    return *it->second;
}

std::atomic<int64_t>& Registry::gauge(std::string_view name) {
    std::lock_guard lock(m_mutex);
    auto it = m_gauges.find(name);
    if (it == m_gauges.end()) it = m_gauges.emplace(std::string(name), std::make_unique<std::atomic<int64_t>>(0)).first;
    return *it->second;
}

std::map<std::string, Histogram::Snapshot> Registry::histograms() const {
    std::lock_guard lock(m_mutex);
    std::map<std::string, Histogram::Snapshot> out;
    for (const auto& [k, v] : m_histograms) out[k] = v->snapshot();
    return out;
}

std::map<std::string, int64_t> Registry::gauges() const {
    std::lock_guard lock(m_mutex);
    std::map<std::string, int64_t> out;
    for (const auto& [k, v] : m_gauges) out[k] = v->load(std::memory_order_relaxed);
    return out;
}

Registry& registry() {
    static Registry r;
    return r;
}

namespace {
std::string label_text(const Labels& labels) {
    if (labels.empty()) return {};
    std::string s = "{";
    for (size_t i = 0; i < labels.size(); ++i) {
        if (i) s += ',';
        s += sanitize_label_name(labels[i].first) + "=\"" + escape_label_value(labels[i].second) + "\"";
    }
    return s + "}";
}
}  // namespace

Exposition::Family* Exposition::family(std::string_view name, Type type, std::string_view help) {
    std::string n = sanitize_metric_name(name);
    auto it = m_index.find(n);
    if (it != m_index.end()) {
        Family& f = m_families[it->second];
        return f.type == type ? &f : nullptr;
    }
    m_index.emplace(n, m_families.size());
    m_families.push_back(Family{n, std::string(help), type, {}});
    return &m_families.back();
}

void Exposition::add(std::string_view name, Type type, std::string_view help, const Labels& labels, double value) {
    if (type == Type::Histogram) return;  // add_histogram
    Family* f = family(name, type, help);
    if (!f) return;
    f->lines.push_back(f->name + label_text(labels) + " " + format_value(value));
}

void Exposition::add_histogram(std::string_view name, std::string_view help, const Labels& labels,
                               const Histogram::Snapshot& h) {
    Family* f = family(name, Type::Histogram, help);
    if (!f) return;
    for (size_t i = 0; i < h.buckets.size(); ++i) {
        Labels l = labels;
        l.emplace_back("le", i < h.bounds.size() ? format_value(h.bounds[i]) : "+Inf");
        f->lines.push_back(f->name + "_bucket" + label_text(l) + " " + format_value(double(h.buckets[i])));
    }
    f->lines.push_back(f->name + "_sum" + label_text(labels) + " " + format_value(h.sum));
    f->lines.push_back(f->name + "_count" + label_text(labels) + " " + format_value(double(h.count)));
}

namespace {
// The rule for `name`, with the label value it gives; nullptr if none matches.
const Rule* match(const std::vector<Rule>& rules, const std::string& name, std::string& value) {
    for (const auto& r : rules) {
        if (r.label.empty() ? name == r.prefix
                            : name.size() > r.prefix.size() && name.compare(0, r.prefix.size(), r.prefix) == 0) {
            value = r.label.empty() ? std::string() : name.substr(r.prefix.size());
            return &r;
        }
    }
    return nullptr;
}
}  // namespace

namespace {
// Family, HELP and labels of the Counters/Registry entry `name`.
void place(const std::vector<Rule>& rules, const Labels& extra, const std::string& name, const char* suffix,
           const char* what, std::string& family, std::string& help, Labels& labels) {
    labels = extra;
    std::string value;
    if (const Rule* r = match(rules, name, value)) {
        family = r->family;
        help = r->help;
        if (!r->label.empty()) labels.emplace_back(r->label, value);
    } else {
        family = "x2sec_" + sanitize_metric_name(name) + suffix;
        help = std::string("x2sec ") + what + " '" + name + "'";
    }
}
}  // namespace

void Exposition::add_counters(const Counters& c, const std::vector<Rule>& rules, const Labels& extra) {
    std::string family, help;
    Labels labels;
    for (const auto& [name, v] : c.snapshot()) {
        place(rules, extra, name, "_total", "counter", family, help, labels);
        add(family, Type::Counter, help, labels, double(v));
    }
}

void Exposition::add_registry(const Registry& r, const std::vector<Rule>& rules, const Labels& extra) {
    std::string family, help;
    Labels labels;
    for (const auto& [name, v] : r.gauges()) {
        place(rules, extra, name, "", "gauge", family, help, labels);
        add(family, Type::Gauge, help, labels, double(v));
    }
    for (const auto& [name, h] : r.histograms()) {
        place(rules, extra, name, "", "histogram", family, help, labels);
        add_histogram(family, help, labels, h);
    }
}

std::string Exposition::text() const {
    std::string out;
    for (const auto& f : m_families) {
        out += "# HELP " + f.name + " " + escape_help(f.help) + "\n";
        out += "# TYPE " + f.name + " " + to_string(f.type) + "\n";
        for (const auto& l : f.lines) out += l + "\n";
    }
    return out;
}

}  // namespace x2sec::metrics
