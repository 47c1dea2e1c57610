// Time for sans-I/O engines: engines are handed the current time, they never read a clock.
// Millis is milliseconds on a monotonic clock (steady_clock in the runtime, a virtual clock in
// tests and the simulator).
#pragma once

#include <chrono>
#include <cstdint>

namespace x2sec {

using Millis = int64_t;

class Clock {
public:
    virtual ~Clock() = default;
    virtual Millis now() const = 0;            // monotonic, for timers
    virtual int64_t unix_seconds() const = 0;  // wall clock, for certificate validity
};

class SystemClock final : public Clock {
public:
    Millis now() const override;
    int64_t unix_seconds() const override;
};

// A clock tests and the simulator move by hand.
class ManualClock final : public Clock {
public:
    explicit ManualClock(Millis start = 0, int64_t unix_start = 1'800'000'000)
        : m_now(start), m_unix_base(unix_start), m_start(start) {}
    Millis now() const override { return m_now; }
    int64_t unix_seconds() const override { return m_unix_base + (m_now - m_start) / 1000; }
    void advance(Millis ms) { m_now += ms; }
    void set(Millis ms) { m_now = ms; }

private:
    Millis m_now;
    int64_t m_unix_base;
    Millis m_start;
};

}  // namespace x2sec
