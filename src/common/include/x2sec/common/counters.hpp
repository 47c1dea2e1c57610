// Named event counters: every dropped or rejected input increments one, so `x2sec status`
// and tests can see what happened ("ike.rx.invalid_syntax", "esp.drop.replay", ...).
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>

namespace x2sec {

class Counters {
public:
    // Returns a stable reference; hot paths keep it and increment without the lock.
    std::atomic<uint64_t>& counter(std::string_view name);
    void inc(std::string_view name, uint64_t by = 1) { counter(name).fetch_add(by, std::memory_order_relaxed); }
    uint64_t get(std::string_view name) const;
    std::map<std::string, uint64_t> snapshot() const;

private:
    mutable std::mutex m_mutex;
    std::map<std::string, std::unique_ptr<std::atomic<uint64_t>>, std::less<>> m_counters;
};

}  // namespace x2sec
