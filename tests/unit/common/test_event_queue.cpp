// ChildSaEventQueue: data-plane events from many threads reach one consumer (the IKE loop),
// none lost, none duplicated, each producer's in order, and the eventfd wakes a poll().
#include <gtest/gtest.h>

#include <atomic>
#include <poll.h>
#include <thread>
#include <vector>
#include <x2sec/common/event_queue.hpp>

using namespace x2sec;

namespace {

bool readable(int fd, int timeout_ms) {
    pollfd p{fd, POLLIN, 0};
    return ::poll(&p, 1, timeout_ms) == 1 && (p.revents & POLLIN);
}

}  // namespace

TEST(ChildSaEventQueue, ManyProducersNothingLostAndTheLoopWakes) {
    ChildSaEventQueue q;
    const int fd = q.fd();
    ASSERT_GE(fd, 0);
    EXPECT_FALSE(readable(fd, 0));  // nothing queued: a poll() sleeps
    constexpr uint32_t kThreads = 8, kEach = 5000;
    ChildSaEvents ev = q.events();
    std::atomic<bool> go{false};
    std::vector<std::thread> producers;
    for (uint32_t t = 0; t < kThreads; ++t)
        producers.emplace_back([&, t] {
            while (!go) std::this_thread::yield();
            for (uint32_t i = 0; i < kEach; ++i) {
                uint32_t spi = (t + 1) << 16 | i;
                if (i % 3 == 0)
                    ev.hard_expired(spi);
                else
                    ev.soft_expired(spi);
            }
        });
    go = true;
    // The consumer: a poll() loop as the runtime's, woken by the eventfd only (a generous
    // timeout, so a missed wake-up fails the test instead of spinning on).
    std::vector<uint32_t> next(kThreads, 0);
    size_t got = 0, wakeups = 0;
    while (got < size_t{kThreads} * kEach) {
        ASSERT_TRUE(readable(fd, 10000)) << "events pending but the eventfd never woke the loop; got " << got;
        ++wakeups;
        for (const auto& e : q.take()) {
            uint32_t t = (e.spi_in >> 16) - 1, i = e.spi_in & 0xffff;
            ASSERT_LT(t, kThreads);
            ASSERT_EQ(i, next[t]) << "producer " << t << ": lost, duplicated or reordered";
            ++next[t];
            EXPECT_EQ(e.kind, i % 3 == 0 ? ChildSaExpiry::Hard : ChildSaExpiry::Soft);
            ++got;
        }
    }
    for (auto& p : producers) p.join();
    EXPECT_EQ(got, size_t{kThreads} * kEach);
    EXPECT_GE(wakeups, 1u);
    for (uint32_t t = 0; t < kThreads; ++t) EXPECT_EQ(next[t], kEach);
    // Drained: the eventfd is quiet again (a last wake-up may be spurious: take() says empty).
    if (readable(fd, 0)) {
        EXPECT_TRUE(q.take().empty());
    }
    EXPECT_FALSE(readable(fd, 0));
    EXPECT_EQ(q.pending(), 0u);
}

TEST(ChildSaEventQueue, EventsBeforeTheFirstPollStillWake) {
    ChildSaEventQueue q;
    q.push({7, ChildSaExpiry::Soft});
    q.events().hard_expired(8);
    EXPECT_EQ(q.pending(), 2u);
    ASSERT_GE(q.fd(), 0);  // made now, and readable at once since events wait
    EXPECT_TRUE(readable(q.fd(), 0));
    auto v = q.take();
    EXPECT_EQ(v, (std::vector<ChildSaExpired>{{7, ChildSaExpiry::Soft}, {8, ChildSaExpiry::Hard}}));
    EXPECT_FALSE(readable(q.fd(), 0));
}

TEST(ChildSaEventQueue, DeliverHandsEachEventToTheEngine) {
    struct Engine {
        std::vector<std::pair<uint32_t, ChildSaExpiry>> calls;
        Millis at = 0;
        void child_sa_expired(uint32_t spi, ChildSaExpiry k, Millis now) {
            calls.emplace_back(spi, k);
            at = now;
        }
    } engine;
    ChildSaEventQueue q;
    auto ev = q.events();
    ev.soft_expired(1);
    ev.hard_expired(1);
    EXPECT_EQ(q.deliver(engine, 42), 2u);
    EXPECT_EQ(engine.calls,
              (std::vector<std::pair<uint32_t, ChildSaExpiry>>{{1, ChildSaExpiry::Soft}, {1, ChildSaExpiry::Hard}}));
    EXPECT_EQ(engine.at, 42);
    EXPECT_EQ(q.deliver(engine, 43), 0u);
}

TEST(ChildSaEventQueue, CallbacksOutliveTheQueue) {
    ChildSaEvents ev;
    {
        ChildSaEventQueue q;
        ev = q.events();
    }
    ev.soft_expired(1);  // pushes into the shared state nobody drains: no crash, no leak
    ev.hard_expired(2);
    SUCCEED();
}
