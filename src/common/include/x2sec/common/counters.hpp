// Named event counters: every dropped or rejected input increments one, so `x2sec status`
// and tests can see what happened ("ike.rx.invalid_syntax", "esp.drop.replay", ...).
// Gauges (a current level: "cmp.sessions.open") and histograms (latencies in seconds:
// "cmp.request_seconds") live beside them; /metrics exports all three (x2sec/common/metrics.hpp).
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>
#include <x2sec/common/metrics.hpp>

namespace x2sec {

class Counters {
public:
    // Returns a stable reference; hot paths keep it and increment without the lock.
    std::atomic<uint64_t>& counter(std::string_view name);
    void inc(std::string_view name, uint64_t by = 1) { counter(name).fetch_add(by, std::memory_order_relaxed); }
    uint64_t get(std::string_view name) const;
    std::map<std::string, uint64_t> snapshot() const;

    // Gauges: a stable reference, like counter().
    std::atomic<int64_t>& gauge(std::string_view name);
    void set_gauge(std::string_view name, int64_t v) { gauge(name).store(v, std::memory_order_relaxed); }
    std::map<std::string, int64_t> gauges() const;
    // Histograms: created with `bounds` on first use (later calls return the same one).
    metrics::Histogram& histogram(std::string_view name, const std::vector<double>& bounds = metrics::latency_buckets());
    void observe(std::string_view name, double v) { histogram(name).observe(v); }
    std::map<std::string, metrics::Histogram::Snapshot> histograms() const;

private:
    mutable std::mutex m_mutex;
    std::map<std::string, std::unique_ptr<std::atomic<uint64_t>>, std::less<>> m_counters;
    std::map<std::string, std::unique_ptr<std::atomic<int64_t>>, std::less<>> m_gauges;
    std::map<std::string, std::unique_ptr<metrics::Histogram>, std::less<>> m_histograms;
};

}  // namespace x2sec
