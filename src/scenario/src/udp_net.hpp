// A tiny UDP switchboard on 127.0.0.1 for the demo: one socket per (node, port), polled in
// one thread, with per-link accounting (datagrams, octets, round trips = direction changes).
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <map>
#include <string>
#include <vector>
#include <x2sec/common/bytes.hpp>
#include <x2sec/common/result.hpp>

namespace x2sec::scenario {

class UdpNet {
public:
    struct Rx {
        uint16_t local_port;
        uint16_t remote_port;
        Bytes data;
    };
    struct LinkStats {
        size_t datagrams = 0, bytes = 0, round_trips = 0;
        int first_dir = 0, last_dir = 0;  // +1: low->high port, -1: high->low
    };

    ~UdpNet() {
        for (auto& [p, fd] : m_fds) ::close(fd);
    }

    // Binds 127.0.0.1:port (0 = an ephemeral port); returns the bound port.
    Result<uint16_t> open(uint16_t port) {
        if (port && m_fds.count(port)) return port;
        int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0) return Error(ErrorDomain::Io, errno, std::string("socket: ") + strerror(errno));
        sockaddr_in sa{};
        sa.sin_family = AF_INET;
        sa.sin_port = htons(port);
        sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        if (::bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) {
            int e = errno;
            ::close(fd);
            return Error(ErrorDomain::Io, e, "bind 127.0.0.1:" + std::to_string(port) + ": " + strerror(e));
        }
        socklen_t len = sizeof sa;
        getsockname(fd, reinterpret_cast<sockaddr*>(&sa), &len);
        port = ntohs(sa.sin_port);
        m_fds[port] = fd;
        return port;
    }

    bool send(uint16_t from, uint16_t to, BytesView data) {
        auto it = m_fds.find(from);
        if (it == m_fds.end()) return false;
        sockaddr_in sa{};
        sa.sin_family = AF_INET;
        sa.sin_port = htons(to);
        sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        ssize_t n = ::sendto(it->second, data.data(), data.size(), 0, reinterpret_cast<sockaddr*>(&sa), sizeof sa);
        if (n != ssize_t(data.size())) return false;
        auto key = from < to ? std::make_pair(from, to) : std::make_pair(to, from);
        auto& s = m_links[key];
        s.datagrams += 1;
        s.bytes += data.size();
        // A round trip completes each time the side that spoke first gets an answer.
        int dir = from < to ? 1 : -1;
        if (s.first_dir == 0) s.first_dir = dir;
        if (dir != s.first_dir && s.last_dir == s.first_dir) s.round_trips += 1;
        s.last_dir = dir;
        return true;
    }

    std::vector<Rx> poll(int timeout_ms) {
        std::vector<pollfd> pfds;
        std::vector<uint16_t> ports;
        for (auto& [p, fd] : m_fds) {
            pfds.push_back({fd, POLLIN, 0});
            ports.push_back(p);
        }
        std::vector<Rx> out;
        if (::poll(pfds.data(), pfds.size(), timeout_ms) <= 0) return out;
        for (size_t i = 0; i < pfds.size(); ++i) {
            if (!(pfds[i].revents & POLLIN)) continue;
            for (;;) {
                uint8_t buf[65536];
                sockaddr_in from{};
                socklen_t len = sizeof from;
                ssize_t n = ::recvfrom(pfds[i].fd, buf, sizeof buf, 0, reinterpret_cast<sockaddr*>(&from), &len);
                if (n < 0) break;
                out.push_back({ports[i], ntohs(from.sin_port), Bytes(buf, buf + n)});
            }
        }
        return out;
    }

    // Statistics of the link between two ports (in either direction); reset() starts afresh.
    LinkStats link(uint16_t a, uint16_t b) const {
        auto key = a < b ? std::make_pair(a, b) : std::make_pair(b, a);
        auto it = m_links.find(key);
        return it == m_links.end() ? LinkStats{} : it->second;
    }
    void reset(uint16_t a, uint16_t b) { m_links.erase(a < b ? std::make_pair(a, b) : std::make_pair(b, a)); }

private:
    std::map<uint16_t, int> m_fds;
    std::map<std::pair<uint16_t, uint16_t>, LinkStats> m_links;
};

}  // namespace x2sec::scenario
