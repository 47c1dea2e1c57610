// free_tcp_port(), see x2sec/test/ports.hpp.
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <set>
#include <sstream>
#include <stdexcept>
#include <x2sec/test/ports.hpp>

namespace x2sec::test {

namespace {

constexpr unsigned kLowest = 20000;
constexpr unsigned kSpan = 12000;

// The first port of the kernel's ephemeral range (32768 when it cannot be read).
unsigned ephemeral_start() {
    std::ifstream f("/proc/sys/net/ipv4/ip_local_port_range");
    unsigned lo = 0;
    if (f >> lo && lo > 0) return lo;
    return 32768;
}

// The local ports of every socket in /proc/net/{tcp,tcp6,udp,udp6}, in any state (a connected or
// TIME_WAIT socket on a port also makes a bind() without SO_REUSEADDR fail).
std::set<unsigned> ports_in_use() {
    std::set<unsigned> used;
    for (const char* file : {"/proc/net/tcp", "/proc/net/tcp6", "/proc/net/udp", "/proc/net/udp6"}) {
        std::ifstream f(file);
        std::string line;
        std::getline(f, line);  // the header
        while (std::getline(f, line)) {
            std::istringstream in(line);
            std::string slot, local;
            if (!(in >> slot >> local)) continue;
            const auto colon = local.rfind(':');
            if (colon == std::string::npos) continue;
            unsigned port = 0;
            if (std::sscanf(local.c_str() + colon + 1, "%x", &port) == 1) used.insert(port);
        }
    }
    return used;
}

bool binds(unsigned port) {
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return false;
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(static_cast<uint16_t>(port));
    const bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
    ::close(fd);
    return ok;
}

}  // namespace

uint16_t free_tcp_port(unsigned slot) {
    unsigned span = kSpan;
    const unsigned eph = ephemeral_start();
    if (eph <= kLowest + span) span = eph > kLowest + 1 ? eph - kLowest - 1 : 1;
    const unsigned pid = static_cast<unsigned>(::getpid());
    unsigned offset = (pid * 7U + slot * 131U) % span;
    const auto used = ports_in_use();
    for (unsigned i = 0; i < span; ++i, offset = (offset + 1) % span) {
        const unsigned p = kLowest + offset;
        if (used.count(p) == 0 && binds(p)) return static_cast<uint16_t>(p);
    }
    return static_cast<uint16_t>(kLowest + offset);  // all taken: let the server's bind say so
}

std::optional<uint16_t> start_on_free_port(unsigned slot, const std::function<bool(uint16_t)>& start, int tries) {
    for (int i = 0; i < tries; ++i) {
        const uint16_t port = free_tcp_port(slot + static_cast<unsigned>(i) * 37U);
        if (start(port)) return port;
    }
    return std::nullopt;
}

std::string unused_http_url(unsigned slot, const std::string& path) {
    return "http://127.0.0.1:" + std::to_string(free_tcp_port(slot)) + path;
}

SilentListener::SilentListener(uint16_t port) : m_port(port) {
    m_fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(port);
    if (m_fd < 0 || ::bind(m_fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(m_fd, 4) != 0) {
        const std::string why = std::strerror(errno);
        if (m_fd >= 0) ::close(m_fd);
        throw std::runtime_error("silent listener on 127.0.0.1:" + std::to_string(port) + ": " + why);
    }
}

SilentListener::~SilentListener() {
    ::close(m_fd);
}

bool SilentListener::connection_pending(int timeout_ms) const {
    pollfd p{m_fd, POLLIN, 0};
    return ::poll(&p, 1, timeout_ms) == 1;
}

}  // namespace x2sec::test
