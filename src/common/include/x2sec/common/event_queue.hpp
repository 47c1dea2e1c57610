// ChildSaEventQueue: how data-plane events reach a single-threaded IKE engine.  The data plane
// raises lifetime events on its own threads (ChildSaEvents callbacks); the queue takes them from
// any number of producer threads (mutex-guarded, nothing dropped: each Child SA expires at most
// twice, so the queue is bounded by the SAs the engine installed) and makes its eventfd readable,
// so a poll() loop wakes at once.  The loop that owns the engine drains it with take() or
// deliver() on its own thread, and the engine gets plain calls (child_sa_expired) with no lock.
//
//   ChildSaEventQueue q;
//   data_plane.set_events(q.events());        // producers: any thread
//   poll({q.fd(), POLLIN}, ...);              // the IKE loop
//   q.deliver(engine, now);                   // engine.child_sa_expired(spi, kind, now) per event
//
// The callbacks from events() share the queue's state, so a data plane that outlives the queue
// (or fires while it is destroyed) pushes into state nobody drains instead of freed memory.
#pragma once

#include <memory>
#include <vector>
#include <x2sec/common/child_sa.hpp>
#include <x2sec/common/time.hpp>

namespace x2sec {

class ChildSaEventQueue {
public:
    ChildSaEventQueue();
    ~ChildSaEventQueue();
    ChildSaEventQueue(const ChildSaEventQueue&) = delete;
    ChildSaEventQueue& operator=(const ChildSaEventQueue&) = delete;

    // Callbacks for ChildSaBackend::set_events: each pushes one event (thread-safe).
    ChildSaEvents events() const;
    void push(ChildSaExpired e);  // thread-safe
    // The consumer (one thread): every event pushed so far, in push order; resets the eventfd.
    std::vector<ChildSaExpired> take();
    size_t pending() const;
    // An eventfd, readable (POLLIN) while events are pending; made on the first call (a loop
    // that never polls holds none).  -1 if the system refuses one: the queue still works, only
    // nothing wakes a poll() (the runtime refuses to start then).
    int fd() const;

    // Takes the pending events and hands each to engine.child_sa_expired(spi, kind, now), on the
    // calling (the engine's) thread.  Returns the number delivered.
    template <typename Engine>
    size_t deliver(Engine& engine, Millis now) {
        auto v = take();
        for (const auto& e : v) engine.child_sa_expired(e.spi_in, e.kind, now);
        return v.size();
    }

private:
    struct State;
    std::shared_ptr<State> m_state;
};

}  // namespace x2sec
