#include <mutex>
#include <sys/eventfd.h>
#include <unistd.h>
#include <x2sec/common/event_queue.hpp>

namespace x2sec {

// The eventfd is made on the first fd() call, so loops that never poll (the simulator with
// thousands of nodes, the exchange tests) hold no descriptor per queue.
struct ChildSaEventQueue::State {
    mutable std::mutex mutex;
    std::vector<ChildSaExpired> items;
    mutable int fd = -1;
    mutable bool fd_failed = false;
    State() = default;
    ~State() {
        if (fd >= 0) ::close(fd);
    }
    State(const State&) = delete;
    State& operator=(const State&) = delete;
    void signal() const {  // under the mutex
        if (fd < 0) return;
        uint64_t one = 1;
        [[maybe_unused]] auto n = ::write(fd, &one, sizeof one);
    }
    void push(ChildSaExpired e) {
        std::lock_guard lock(mutex);
        items.push_back(e);
        if (items.size() == 1) signal();  // the consumer takes all: one wake-up per batch
    }
};

ChildSaEventQueue::ChildSaEventQueue() : m_state(std::make_shared<State>()) {}

ChildSaEventQueue::~ChildSaEventQueue() = default;

ChildSaEvents ChildSaEventQueue::events() const {
    ChildSaEvents ev;
    ev.soft_expired = [s = m_state](uint32_t spi) { s->push({spi, ChildSaExpiry::Soft}); };
    ev.hard_expired = [s = m_state](uint32_t spi) { s->push({spi, ChildSaExpiry::Hard}); };
    return ev;
}

void ChildSaEventQueue::push(ChildSaExpired e) {
    m_state->push(e);
}

std::vector<ChildSaExpired> ChildSaEventQueue::take() {
    std::vector<ChildSaExpired> out;
    std::lock_guard lock(m_state->mutex);
    if (m_state->fd >= 0) {  // reset: the next push to the empty queue signals again
        uint64_t v = 0;
        [[maybe_unused]] auto n = ::read(m_state->fd, &v, sizeof v);
    }
    out.swap(m_state->items);
    return out;
}

size_t ChildSaEventQueue::pending() const {
    std::lock_guard lock(m_state->mutex);
    return m_state->items.size();
}

int ChildSaEventQueue::fd() const {
    std::lock_guard lock(m_state->mutex);
    if (m_state->fd < 0 && !m_state->fd_failed) {
        m_state->fd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        m_state->fd_failed = m_state->fd < 0;
        if (!m_state->items.empty()) m_state->signal();
    }
    return m_state->fd;
}

}  // namespace x2sec
