#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <stdexcept>
#include <x2sec/test/http_server.hpp>
#include <x2sec/test/ports.hpp>

namespace x2sec::test {

namespace {

int bind_loopback(uint16_t* port) {
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) throw std::runtime_error(std::string("socket: ") + std::strerror(errno));
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) {
        ::close(fd);
        throw std::runtime_error(std::string("bind: ") + std::strerror(errno));
    }
    socklen_t len = sizeof sa;
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&sa), &len);
    *port = ntohs(sa.sin_port);
    return fd;
}

}  // namespace

HttpBodyServer::HttpBodyServer() {
    m_listen = bind_loopback(&m_port);
    if (::listen(m_listen, 16) != 0) {
        ::close(m_listen);
        throw std::runtime_error(std::string("listen: ") + std::strerror(errno));
    }
    m_thread = std::thread([this] { run(); });
}

HttpBodyServer::~HttpBodyServer() {
    m_stop = true;
    if (m_thread.joinable()) m_thread.join();
    ::close(m_listen);
}

std::string HttpBodyServer::url(const std::string& path) const {
    return "http://127.0.0.1:" + std::to_string(m_port) + path;
}

void HttpBodyServer::set_body(Bytes body, std::string content_type) {
    std::lock_guard lk(m_mu);
    m_body = std::move(body);
    m_type = std::move(content_type);
    m_status = 200;
}

void HttpBodyServer::set_status(int status) {
    std::lock_guard lk(m_mu);
    m_status = status;
}

std::string HttpBodyServer::unreachable_url() {
    // Not a port-0 port bound and released: another test's socket may take that one meanwhile.
    return unused_http_url(900, "/crl");
}

void HttpBodyServer::run() {
    while (!m_stop) {
        pollfd p{m_listen, POLLIN, 0};
        if (::poll(&p, 1, 50) <= 0) continue;
        int fd = ::accept4(m_listen, nullptr, nullptr, SOCK_CLOEXEC);
        if (fd < 0) continue;
        timeval tv{2, 0};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
        std::string req;
        char buf[2048];
        while (req.find("\r\n\r\n") == std::string::npos && req.size() < 16384) {
            ssize_t n = ::recv(fd, buf, sizeof buf, 0);
            if (n <= 0) break;
            req.append(buf, size_t(n));
        }
        if (req.find("\r\n\r\n") != std::string::npos) {
            ++m_requests;
            Bytes body;
            std::string type;
            int status;
            {
                std::lock_guard lk(m_mu);
                body = m_status == 200 ? m_body : Bytes{};
                type = m_type;
                status = m_status;
            }
            std::string head = "HTTP/1.1 " + std::to_string(status) + (status == 200 ? " OK" : " Error") +
                               "\r\nContent-Type: " + type + "\r\nContent-Length: " + std::to_string(body.size()) +
                               "\r\nConnection: close\r\n\r\n";
            std::string out = head + std::string(body.begin(), body.end());
            size_t off = 0;
            while (off < out.size()) {
                ssize_t w = ::send(fd, out.data() + off, out.size() - off, MSG_NOSIGNAL);
                if (w <= 0) break;
                off += size_t(w);
            }
        }
        ::close(fd);
    }
}

}  // namespace x2sec::test
