// x2sec::metrics — histograms and the Prometheus text exposition format (version 0.0.4).
//
// The daemons keep their event counts in x2sec::Counters (named with dots: "esp.drop.replay"),
// their latencies and levels in the process's metrics::Registry (histograms and gauges, named
// the same way: "cmp.request_seconds").  At each scrape a daemon builds an Exposition: both mapped
// onto Prometheus families by a table of Rules ("esp.drop." -> x2sec_esp_drops_total with the
// label reason="replay"), plus live values (SAs by state, per-Child SA bytes).  Every family
// gets its # HELP and # TYPE lines once, its samples together; label values and HELP text are
// escaped as the format requires (backslash, double quote, line feed).  docs/metrics.md lists
// the series of every daemon.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace x2sec {
class Counters;
}

namespace x2sec::metrics {

using Labels = std::vector<std::pair<std::string, std::string>>;
enum class Type { Counter, Gauge, Histogram };
const char* to_string(Type t);  // "counter", "gauge", "histogram"

// The format's escapes: label values \ " and line feed; HELP text \ and line feed.
std::string escape_label_value(std::string_view v);
std::string escape_help(std::string_view v);
// A metric name [a-zA-Z_:][a-zA-Z0-9_:]*, a label name [a-zA-Z_][a-zA-Z0-9_]* (not "__..."):
// other characters become '_', a leading digit gets a '_' in front.
std::string sanitize_metric_name(std::string_view s);
std::string sanitize_label_name(std::string_view s);
bool valid_metric_name(std::string_view s);
bool valid_label_name(std::string_view s);
// Sample values as Prometheus reads them: integers without exponent, "+Inf", "-Inf", "NaN".
std::string format_value(double v);

// Upper bounds (seconds) for latencies from 1 ms to 30 s.
std::vector<double> latency_buckets();

// Cumulative histogram; observe() is lock-free and may be called from any thread.
class Histogram {
public:
    explicit Histogram(std::vector<double> upper_bounds = latency_buckets());
    void observe(double v);
    struct Snapshot {
        std::vector<double> bounds;     // ascending, without +Inf
        std::vector<uint64_t> buckets;  // cumulative count per bound, then +Inf (== count)
        uint64_t count = 0;
        double sum = 0;
    };
    Snapshot snapshot() const;

private:
    std::vector<double> m_bounds;
    std::unique_ptr<std::atomic<uint64_t>[]> m_counts;  // per bucket (not cumulative), last = +Inf
    std::atomic<uint64_t> m_count{0};
    std::atomic<double> m_sum{0};
};

// Histograms and gauges by dotted name, for the whole process (like the counters of a daemon's
// components, but shared: a latency is observed where it is measured, e.g. in the CMP HTTP
// layer, and exported by whichever daemon runs in the process).  Thread-safe; references are
// stable.
class Registry {
public:
    // Created with `bounds` on first use; later calls return the same histogram.
    Histogram& histogram(std::string_view name, const std::vector<double>& bounds = latency_buckets());
    void observe(std::string_view name, double v) { histogram(name).observe(v); }
    std::atomic<int64_t>& gauge(std::string_view name);
    void set_gauge(std::string_view name, int64_t v) { gauge(name).store(v, std::memory_order_relaxed); }
    std::map<std::string, Histogram::Snapshot> histograms() const;
    std::map<std::string, int64_t> gauges() const;

private:
    mutable std::mutex m_mutex;
    std::map<std::string, std::unique_ptr<Histogram>, std::less<>> m_histograms;
    std::map<std::string, std::unique_ptr<std::atomic<int64_t>>, std::less<>> m_gauges;
};
// The process's registry.
Registry& registry();

// Maps dotted Counters names onto Prometheus families.  A name equal to `prefix` (label
// empty), or `prefix` + a non-empty rest (label set: label=rest, dots in rest kept), belongs to
// `family`.  The first matching rule wins; names no rule matches become
// x2sec_<name with '.' -> '_'> (+ "_total" for counters) with a generic HELP.
struct Rule {
    std::string prefix;
    std::string family;
    std::string label;  // "" = exact match of prefix
    std::string help;
};

class Exposition {
public:
    // A sample of family `name` (HELP/TYPE taken from the first add for that name; a later add
    // with another type is ignored, so one family never mixes types).
    void add(std::string_view name, Type type, std::string_view help, const Labels& labels, double value);
    void add_histogram(std::string_view name, std::string_view help, const Labels& labels,
                       const Histogram::Snapshot& h);
    // Every counter of `c`, mapped by `rules`; `extra` labels on each sample.
    void add_counters(const Counters& c, const std::vector<Rule>& rules, const Labels& extra = {});
    // Every histogram and gauge of `r`, mapped by `rules`.
    void add_registry(const Registry& r, const std::vector<Rule>& rules, const Labels& extra = {});
    // The exposition text ("# HELP ...\n# TYPE ...\nname{l="v"} 1\n..."), families in the order
    // first added.
    std::string text() const;
    size_t families() const { return m_families.size(); }

private:
    struct Family {
        std::string name, help;
        Type type;
        std::vector<std::string> lines;
    };
    Family* family(std::string_view name, Type type, std::string_view help);
    std::vector<Family> m_families;
    std::map<std::string, size_t, std::less<>> m_index;
};

// Content-Type of the text format.
inline constexpr const char* kContentType = "text/plain; version=0.0.4; charset=utf-8";

}  // namespace x2sec::metrics
