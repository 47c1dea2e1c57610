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

}  // namespace x2sec
