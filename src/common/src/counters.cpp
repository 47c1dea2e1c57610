#include <x2sec/common/counters.hpp>

namespace x2sec {

std::atomic<uint64_t>& Counters::counter(std::string_view name) {
    std::lock_guard lock(m_mutex);
    auto it = m_counters.find(name);
    if (it == m_counters.end())
        it = m_counters.emplace(std::string(name), std::make_unique<std::atomic<uint64_t>>(0)).first;
    return *it->second;
}

uint64_t Counters::get(std::string_view name) const {
    std::lock_guard lock(m_mutex);
    auto it = m_counters.find(name);
    return it == m_counters.end() ? 0 : it->second->load(std::memory_order_relaxed);
}

std::map<std::string, uint64_t> Counters::snapshot() const {
    std::lock_guard lock(m_mutex);
    std::map<std::string, uint64_t> out;
    for (const auto& [k, v] : m_counters) out[k] = v->load(std::memory_order_relaxed);
    return out;
}

std::atomic<int64_t>& Counters::gauge(std::string_view name) {
    std::lock_guard lock(m_mutex);
    auto it = m_gauges.find(name);
    if (it == m_gauges.end()) it = m_gauges.emplace(std::string(name), std::make_unique<std::atomic<int64_t>>(0)).first;
    return *it->second;
}

std::map<std::string, int64_t> Counters::gauges() const {
    std::lock_guard lock(m_mutex);
    std::map<std::string, int64_t> out;
    for (const auto& [k, v] : m_gauges) out[k] = v->load(std::memory_order_relaxed);
    return out;
}

metrics::Histogram& Counters::histogram(std::string_view name, const std::vector<double>& bounds) {
    std::lock_guard lock(m_mutex);
    auto it = m_histograms.find(name);
    if (it == m_histograms.end())
        it = m_histograms.emplace(std::string(name), std::make_unique<metrics::Histogram>(bounds)).first;
    return *it->second;
}

std::map<std::string, metrics::Histogram::Snapshot> Counters::histograms() const {
    std::lock_guard lock(m_mutex);
    std::map<std::string, metrics::Histogram::Snapshot> out;
    for (const auto& [k, v] : m_histograms) out[k] = v->snapshot();
    return out;
}

}  // namespace x2sec
