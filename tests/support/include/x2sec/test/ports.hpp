// Loopback TCP ports for tests that must name a port before a server binds it (a port written
// into a certificate's AIA, `openssl ocsp -port`), the C++ side of tests/support/ports.sh.
//
// Binding port 0 and closing the socket again hands out a port in Linux's ephemeral range
// (ip_local_port_range, 32768-60999 by default), where the port-0 sockets and outgoing
// connections of the tests that ctest runs at the same time take it again before our server
// binds it ("Address already in use").  The ports here lie below that range, derived from the
// PID and a slot, and skip every port some socket holds (any state, TCP or UDP, IPv4 or IPv6).
// Our own servers need none of this: they bind port 0 and report the port they got.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>

namespace x2sec::test {

// A port on 127.0.0.1 in 20000..(ephemeral start - 1) that no socket holds and that binds now.
// Distinct slots of one process give distinct ports.
uint16_t free_tcp_port(unsigned slot = 0);

// Runs start(port) on ports from free_tcp_port(slot), then other slots, until it returns true
// (the server runs) or `tries` ports failed (another process took the port between the pick and
// the server's bind): the port the server runs on, or nullopt.
std::optional<uint16_t> start_on_free_port(unsigned slot, const std::function<bool(uint16_t)>& start, int tries = 5);

// "http://127.0.0.1:<port>/" for a port where nothing listens (free_tcp_port(slot)).
std::string unused_http_url(unsigned slot = 0, const std::string& path = "/");

// A silent responder: a TCP listener on 127.0.0.1:port that never accepts, so connections
// complete in the kernel's backlog and every request goes unanswered.  Throws
// std::runtime_error when the port cannot be bound.
class SilentListener {
public:
    explicit SilentListener(uint16_t port);
    ~SilentListener();
    SilentListener(const SilentListener&) = delete;
    SilentListener& operator=(const SilentListener&) = delete;

    uint16_t port() const { return m_port; }
    std::string url() const { return "http://127.0.0.1:" + std::to_string(m_port) + "/"; }
    // Whether a connection waits in the backlog within timeout_ms (someone connected).
    bool connection_pending(int timeout_ms) const;

private:
    int m_fd = -1;
    uint16_t m_port = 0;
};

}  // namespace x2sec::test
