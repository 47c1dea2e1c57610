#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>
#include <cerrno>
#include <cstring>
#include <x2sec/cmp/http.hpp>
#include <x2sec/common/log.hpp>

namespace x2sec::cmp {
namespace {

struct Conn {
    int fd;
    SSL* ssl = nullptr;
    int timeout_ms;
    // Reads some bytes; 0 on EOF, -1 on error/timeout.
    long read_some(uint8_t* buf, size_t n) {
        for (;;) {
            if (ssl && SSL_pending(ssl) > 0) {
                int r = SSL_read(ssl, buf, static_cast<int>(n));
                return r > 0 ? r : -1;
            }
            pollfd p{fd, POLLIN, 0};
            int pr = ::poll(&p, 1, timeout_ms);
            if (pr <= 0) return -1;
            if (ssl) {
                int r = SSL_read(ssl, buf, static_cast<int>(n));
                if (r > 0) return r;
                int e = SSL_get_error(ssl, r);
                if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) continue;
                return e == SSL_ERROR_ZERO_RETURN ? 0 : -1;
            }
            ssize_t r = ::recv(fd, buf, n, 0);
            if (r < 0 && (errno == EINTR || errno == EAGAIN)) continue;
            return static_cast<long>(r);
        }
    }
    bool write_all(const uint8_t* p, size_t n) {
        while (n > 0) {
            long w;
            if (ssl) {
                int r = SSL_write(ssl, p, static_cast<int>(n));
                w = r > 0 ? r : -1;
            } else {
                w = static_cast<long>(::send(fd, p, n, MSG_NOSIGNAL));
                if (w < 0 && errno == EINTR) continue;
            }
            if (w <= 0) return false;
            p += w;
            n -= static_cast<size_t>(w);
        }
        return true;
    }
};

std::string lower(std::string s) {
    for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return s;
}
std::string trim(std::string s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.erase(s.begin());
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) s.pop_back();
    return s;
}

bool cmp_path(const std::string& target) {
    std::string path = target.substr(0, target.find('?'));
    if (path == "/.well-known/cmp" || path == "/.well-known/cmp/" || path == "/pkix/" || path == "/pkix") return true;
    const std::string pfx = "/.well-known/cmp/p/";
    if (path.rfind(pfx, 0) == 0) {
        std::string prof = path.substr(pfx.size());
        if (!prof.empty() && prof.back() == '/') prof.pop_back();
        if (prof.empty() || prof.size() > 64) return false;
        for (char c : prof)
            if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.')) return false;
        return true;
    }
    return false;
}

const char* reason_phrase(int code) {
    switch (code) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 411: return "Length Required";
    case 413: return "Payload Too Large";
    case 415: return "Unsupported Media Type";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    default: return "Error";
    }
}

}  // namespace

HttpServer::HttpServer(Server& server, HttpOptions opts) : m_server(server), m_opts(std::move(opts)) {}
HttpServer::~HttpServer() {
    stop();
    SSL_CTX_free(m_ssl_ctx);
}

Status HttpServer::start() {
    if (m_opts.tls_cert && m_opts.tls_key) {
        m_ssl_ctx = SSL_CTX_new(TLS_server_method());
        SSL_CTX_set_min_proto_version(m_ssl_ctx, TLS1_2_VERSION);
        if (SSL_CTX_use_certificate(m_ssl_ctx, m_opts.tls_cert) != 1 || SSL_CTX_use_PrivateKey(m_ssl_ctx, m_opts.tls_key) != 1)
            return pki::ossl_error(ErrorDomain::Crypto, "TLS server credential");
        for (X509* x : m_opts.tls_chain) {
            X509_up_ref(x);
            SSL_CTX_add1_chain_cert(m_ssl_ctx, x);
            X509_free(x);
        }
    }
    bool v6 = m_opts.bind.find(':') != std::string::npos;
    m_listen = ::socket(v6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (m_listen < 0) return Error(ErrorDomain::Io, errno, std::string("socket: ") + std::strerror(errno));
    int one = 1;
    ::setsockopt(m_listen, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_storage ss{};
    socklen_t len;
    if (v6) {
        auto* a = reinterpret_cast<sockaddr_in6*>(&ss);
        a->sin6_family = AF_INET6;
        a->sin6_port = htons(static_cast<uint16_t>(m_opts.port));
        if (inet_pton(AF_INET6, m_opts.bind.c_str(), &a->sin6_addr) != 1)
            return Error(ErrorDomain::Config, 0, "bad bind address " + m_opts.bind);
        len = sizeof(sockaddr_in6);
    } else {
        auto* a = reinterpret_cast<sockaddr_in*>(&ss);
        a->sin_family = AF_INET;
        a->sin_port = htons(static_cast<uint16_t>(m_opts.port));
        if (inet_pton(AF_INET, m_opts.bind.c_str(), &a->sin_addr) != 1)
            return Error(ErrorDomain::Config, 0, "bad bind address " + m_opts.bind);
        len = sizeof(sockaddr_in);
    }
    if (::bind(m_listen, reinterpret_cast<sockaddr*>(&ss), len) != 0 || ::listen(m_listen, 256) != 0) {
        auto e = Error(ErrorDomain::Io, errno, "cannot listen on " + m_opts.bind + ":" + std::to_string(m_opts.port) + ": " +
                                                   std::strerror(errno));
        ::close(m_listen);
        m_listen = -1;
        return e;
    }
    sockaddr_storage got{};
    socklen_t gl = sizeof got;
    ::getsockname(m_listen, reinterpret_cast<sockaddr*>(&got), &gl);
    m_port = ntohs(v6 ? reinterpret_cast<sockaddr_in6*>(&got)->sin6_port : reinterpret_cast<sockaddr_in*>(&got)->sin_port);
    m_stop = false;
    for (int i = 0; i < std::max(1, m_opts.threads); ++i) m_threads.emplace_back([this] { worker(); });
    log::get("cmp")->info("CMP {} server listening on {}:{}", m_ssl_ctx ? "HTTPS" : "HTTP", m_opts.bind, m_port);
    return ok_status();
}

void HttpServer::stop() {
    if (m_listen < 0) return;
    m_stop = true;
    ::shutdown(m_listen, SHUT_RDWR);
    for (auto& t : m_threads) t.join();
    m_threads.clear();
    ::close(m_listen);
    m_listen = -1;
}

void HttpServer::worker() {
    while (!m_stop) {
        pollfd p{m_listen, POLLIN, 0};
        int pr = ::poll(&p, 1, 200);
        if (m_stop) break;
        if (pr <= 0) continue;
        int fd = ::accept4(m_listen, nullptr, nullptr, SOCK_CLOEXEC);
        if (fd < 0) continue;
        int one = 1;
        ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        serve(fd);
        ::close(fd);
    }
}

void HttpServer::serve(int fd) {
    Counters& k = m_server.counters();
    Conn c{fd, nullptr, m_opts.io_timeout_ms};
    struct SslGuard {
        SSL* s;
        ~SslGuard() {
            if (s) {
                SSL_shutdown(s);
                SSL_free(s);
            }
        }
    } guard{nullptr};
    if (m_ssl_ctx) {
        c.ssl = SSL_new(m_ssl_ctx);
        guard.s = c.ssl;
        SSL_set_fd(c.ssl, fd);
        // blocking handshake bounded by a socket timeout
        timeval tv{m_opts.io_timeout_ms / 1000, (m_opts.io_timeout_ms % 1000) * 1000};
        ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        if (SSL_accept(c.ssl) != 1) {
            k.inc("http.reject.tls_handshake");
            ERR_clear_error();
            guard.s = nullptr;
            SSL_free(c.ssl);
            return;
        }
    }
    auto respond = [&](int code, std::string_view ctype, BytesView body, const char* counter) {
        if (counter) k.inc(counter);
        std::string h = "HTTP/1.1 " + std::to_string(code) + " " + reason_phrase(code) + "\r\n";
        if (code == 405) h += "Allow: POST\r\n";
        h += "Content-Type: " + std::string(ctype) + "\r\nContent-Length: " + std::to_string(body.size()) +
             "\r\nCache-Control: no-cache\r\nConnection: close\r\n\r\n";
        c.write_all(reinterpret_cast<const uint8_t*>(h.data()), h.size()) && c.write_all(body.data(), body.size());
    };
    auto text = [&](int code, const std::string& msg, const char* counter) {
        std::string b = msg + "\n";
        respond(code, "text/plain", as_bytes(b), counter);
    };

    // ---- request head
    std::string head;
    Bytes rest;
    uint8_t buf[16384];
    for (;;) {
        long n = c.read_some(buf, sizeof buf);
        if (n <= 0) {
            if (!head.empty()) k.inc("http.reject.truncated_head");
            return;
        }
        head.append(reinterpret_cast<char*>(buf), static_cast<size_t>(n));
        auto end = head.find("\r\n\r\n");
        if (end != std::string::npos) {
            rest.assign(head.begin() + static_cast<long>(end) + 4, head.end());
            head.resize(end + 2);
            break;
        }
        if (head.size() > 16384) return text(431, "request head too large", "http.reject.head_too_large");
    }
    k.inc("http.rx.requests");
    auto eol = head.find("\r\n");
    std::string line = head.substr(0, eol);
    auto sp1 = line.find(' '), sp2 = line.rfind(' ');
    if (sp1 == std::string::npos || sp2 == sp1) return text(400, "malformed request line", "http.reject.bad_request");
    std::string method = line.substr(0, sp1), target = line.substr(sp1 + 1, sp2 - sp1 - 1), version = line.substr(sp2 + 1);
    if (version != "HTTP/1.1" && version != "HTTP/1.0") return text(400, "unsupported HTTP version", "http.reject.bad_request");
    std::string ctype;
    long long clen = -1;
    bool chunked = false;
    size_t pos = eol + 2;
    while (pos < head.size()) {
        auto e = head.find("\r\n", pos);
        std::string h = head.substr(pos, e - pos);
        pos = e + 2;
        auto colon = h.find(':');
        if (colon == std::string::npos) return text(400, "malformed header line", "http.reject.bad_request");
        std::string name = lower(trim(h.substr(0, colon))), value = trim(h.substr(colon + 1));
        if (name == "content-type") ctype = lower(value);
        else if (name == "content-length") {
            char* endp = nullptr;
            errno = 0;
            clen = std::strtoll(value.c_str(), &endp, 10);
            if (value.empty() || *endp || errno || clen < 0) return text(400, "bad Content-Length", "http.reject.bad_request");
        } else if (name == "transfer-encoding" && lower(value) != "identity") chunked = true;
    }

    std::string path = target.substr(0, target.find('?'));
    if (path == m_opts.crl_path && (method == "GET" || method == "HEAD")) {
        auto crl = m_server.crl_der();
        if (!crl) return text(500, "CRL unavailable", "http.error.crl");
        if (method == "HEAD") return respond(200, "application/pkix-crl", {}, "http.ok.crl");
        return respond(200, "application/pkix-crl", *crl, "http.ok.crl");
    }
    if (!cmp_path(target)) return text(404, "no CMP endpoint at " + path, "http.reject.not_found");
    if (method != "POST") return text(405, "CMP requires POST", "http.reject.method");
    auto semi = ctype.find(';');
    if (trim(ctype.substr(0, semi)) != "application/pkixcmp")
        return text(415, "Content-Type must be application/pkixcmp", "http.reject.content_type");
    if (chunked) return text(411, "chunked bodies are not accepted; send Content-Length", "http.reject.length_required");
    if (clen < 0) return text(411, "Content-Length required", "http.reject.length_required");
    if (static_cast<unsigned long long>(clen) > m_opts.max_body)
        return text(413, "body exceeds " + std::to_string(m_opts.max_body) + " bytes", "http.reject.too_large");
    Bytes body = std::move(rest);
    if (body.size() > static_cast<size_t>(clen)) return text(400, "body longer than Content-Length", "http.reject.bad_request");
    while (body.size() < static_cast<size_t>(clen)) {
        long n = c.read_some(buf, std::min(sizeof buf, static_cast<size_t>(clen) - body.size()));
        if (n <= 0) return text(400, "truncated body", "http.reject.truncated");
        body.insert(body.end(), buf, buf + n);
    }
    auto rsp = m_server.handle(body);
    if (!rsp) return text(400, rsp.error().detail(), "http.reject.not_cmp");
    respond(200, "application/pkixcmp", *rsp, "http.ok.cmp");
}

}  // namespace x2sec::cmp
