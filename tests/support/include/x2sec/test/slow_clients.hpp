// Slow and idle TCP clients for server load tests (loopback only).  Each connection comes from a
// source address 127.<net>.<a>.<b> (so per-source limits see many addresses), follows one of the
// given scripts (connection i uses scripts[i % n]): `upfront` is sent at once, then one `trickle`
// octet every `interval_ms` (none for an idle script), forever — a request that never completes.
// A thread polls every socket, keeps the first octets the server sends and notes when the server
// closes the connection.  Also: raise_nofile() for the descriptors such a test needs.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace x2sec::test {

// Raises the soft RLIMIT_NOFILE to at least `want` (up to the hard limit); returns the new soft limit.
inline rlim_t raise_nofile(rlim_t want) {
    rlimit rl{};
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return 0;
    if (rl.rlim_cur < want) {
        rl.rlim_cur = std::min(want, rl.rlim_max);
        setrlimit(RLIMIT_NOFILE, &rl);
        getrlimit(RLIMIT_NOFILE, &rl);
    }
    return rl.rlim_cur;
}

struct SlowScript {
    std::string upfront;          // sent right after connect
    std::optional<char> trickle;  // then this octet every interval (nullopt: idle)
};

class SlowClients {
public:
    // Connects `n` clients to 127.0.0.1:port, `per_source` from each source address
    // 127.<net>.x.y (x.y counting from 0.1).
    SlowClients(int port, int n, int per_source, int net, std::vector<SlowScript> scripts, int interval_ms)
        : m_scripts(std::move(scripts)), m_interval_ms(interval_ms) {
        for (int i = 0; i < n; ++i) {
            int src = 1 + i / per_source;
            int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
            if (fd < 0) break;
            sockaddr_in s{};
            s.sin_family = AF_INET;
            s.sin_addr.s_addr = htonl((127u << 24) | (uint32_t(net) << 16) | uint32_t(src));
            sockaddr_in d{};
            d.sin_family = AF_INET;
            d.sin_port = htons(static_cast<uint16_t>(port));
            d.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
            if (::bind(fd, reinterpret_cast<sockaddr*>(&s), sizeof s) != 0 ||
                ::connect(fd, reinterpret_cast<sockaddr*>(&d), sizeof d) != 0) {
                ::close(fd);
                break;
            }
            Conn c;
            c.fd = fd;
            c.script = static_cast<size_t>(i) % m_scripts.size();
            const auto& up = m_scripts[c.script].upfront;
            if (!up.empty()) (void)!::send(fd, up.data(), up.size(), MSG_NOSIGNAL);
            m_conns.push_back(c);
        }
        m_opened = static_cast<int>(m_conns.size());
        m_thread = std::thread([this] { run(); });
    }
    ~SlowClients() {
        m_stop = true;
        m_thread.join();
        for (auto& c : m_conns)
            if (c.fd >= 0) ::close(c.fd);
    }
    SlowClients(const SlowClients&) = delete;
    SlowClients& operator=(const SlowClients&) = delete;

    int opened() const { return m_opened; }
    int closed_by_server() const { return m_closed.load(); }
    int trickled_octets() const { return m_trickled.load(); }
    // How many connections received an answer starting with `prefix` before being closed.
    int answered_with(const std::string& prefix) const {
        std::lock_guard lock(m_mutex);
        int n = 0;
        for (auto& c : m_conns)
            if (c.reply.rfind(prefix, 0) == 0) ++n;
        return n;
    }
    // Waits until every connection is closed by the server, or `ms` pass.
    bool wait_all_closed(int ms) const {
        auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
        while (std::chrono::steady_clock::now() < end) {
            if (m_closed.load() >= m_opened) return true;
            std::this_thread::sleep_for(std::chrono::milliseconds(50));
        }
        return m_closed.load() >= m_opened;
    }

private:
    struct Conn {
        int fd = -1;
        size_t script = 0;
        std::string reply;
    };
    void run() {
        auto next = std::chrono::steady_clock::now() + std::chrono::milliseconds(m_interval_ms);
        std::vector<pollfd> pfds;
        std::vector<size_t> idx;
        while (!m_stop) {
            pfds.clear();
            idx.clear();
            for (size_t i = 0; i < m_conns.size(); ++i)
                if (m_conns[i].fd >= 0) {
                    pfds.push_back({m_conns[i].fd, POLLIN, 0});
                    idx.push_back(i);
                }
            int r = ::poll(pfds.data(), pfds.size(), 50);
            if (r > 0)
                for (size_t k = 0; k < pfds.size(); ++k) {
                    if (!(pfds[k].revents & (POLLIN | POLLHUP | POLLERR))) continue;
                    Conn& c = m_conns[idx[k]];
                    char buf[2048];
                    ssize_t n = ::recv(c.fd, buf, sizeof buf, MSG_DONTWAIT);
                    if (n > 0) {
                        std::lock_guard lock(m_mutex);
                        if (c.reply.size() < 512) c.reply.append(buf, static_cast<size_t>(n));
                        continue;
                    }
                    if (n < 0 && (errno == EAGAIN || errno == EINTR)) continue;
                    ::close(c.fd);
                    c.fd = -1;
                    ++m_closed;
                }
            if (std::chrono::steady_clock::now() >= next) {
                next += std::chrono::milliseconds(m_interval_ms);
                for (auto& c : m_conns) {
                    auto t = m_scripts[c.script].trickle;
                    if (c.fd < 0 || !t) continue;
                    char ch = *t;
                    if (::send(c.fd, &ch, 1, MSG_NOSIGNAL | MSG_DONTWAIT) == 1) ++m_trickled;
                }
            }
        }
    }
    std::vector<SlowScript> m_scripts;
    int m_interval_ms;
    std::vector<Conn> m_conns;
    int m_opened = 0;
    std::atomic<int> m_closed{0}, m_trickled{0};
    std::atomic<bool> m_stop{false};
    mutable std::mutex m_mutex;
    std::thread m_thread;
};

}  // namespace x2sec::test
