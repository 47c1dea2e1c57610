#include <arpa/inet.h>
#include <pthread.h>
#include <csignal>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <limits>
#include <optional>
#include <x2sec/common/log.hpp>
#include <x2sec/net/stream_server.hpp>

namespace x2sec::net {

namespace {

constexpr uint64_t kListenId = 0;
constexpr uint64_t kWakeId = std::numeric_limits<uint64_t>::max();
constexpr int64_t kNever = std::numeric_limits<int64_t>::max();
constexpr int kTickMs = 100;            // deadline granularity
constexpr int kRefusalWriteMs = 1000;   // time to write a refusal
constexpr int64_t kLogEveryMs = 10000;  // one line per refusal kind per 10 s
constexpr int kAcceptPauseMs = 100;     // after EMFILE and friends

int64_t now_ms() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now().time_since_epoch())
        .count();
}

std::string address_of(const sockaddr_storage& ss) {
    char buf[INET6_ADDRSTRLEN] = {};
    if (ss.ss_family == AF_INET)
        inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in*>(&ss)->sin_addr, buf, sizeof buf);
    else if (ss.ss_family == AF_INET6)
        inet_ntop(AF_INET6, &reinterpret_cast<const sockaddr_in6*>(&ss)->sin6_addr, buf, sizeof buf);
    return buf[0] ? buf : "?";
}

}  // namespace

Status validate(const Limits& l) {
    auto bad = [](const std::string& m) { return Error(ErrorDomain::Config, 0, m); };
    if (l.max_connections < 1 || l.max_connections > 65536) return bad("max_connections must be 1..65536");
    if (l.max_per_source < 1 || l.max_per_source > l.max_connections)
        return bad("max_per_source must be 1..max_connections");
    if (l.request_deadline_ms < 100 || l.request_deadline_ms > 3600000)
        return bad("request deadline must be 100 ms..1 h");
    if (l.write_deadline_ms < 100 || l.write_deadline_ms > 3600000) return bad("write deadline must be 100 ms..1 h");
    if (l.linger_ms < 0 || l.linger_ms > 60000) return bad("linger must be 0..60 s");
    if (l.workers < 1 || l.workers > 256) return bad("workers must be 1..256");
    if (l.max_request < 64) return bad("max_request must be at least 64 octets");
    if (l.backlog < 1) return bad("backlog must be positive");
    if (l.keep_alive_idle_ms < 0 || l.keep_alive_idle_ms > 3600000) return bad("keep-alive idle time must be 0..1 h");
    if (l.max_requests_per_connection < 1) return bad("max_requests_per_connection must be positive");
    return ok_status();
}

const char* to_string(Refusal r) {
    switch (r) {
        case Refusal::TooManyConnections:
            return "too_many_connections";
        case Refusal::PerSource:
            return "per_source";
        case Refusal::Deadline:
            return "deadline";
        case Refusal::Busy:
            return "busy";
    }
    return "?";
}

struct StreamServer::Conn {
    enum State { Handshake, Reading, Processing, Writing, Lingering };
    uint64_t id = 0;
    int fd = -1;
    SSL* ssl = nullptr;
    std::string peer;
    bool counted = false;  // holds a slot of max_connections / max_per_source
    State state = Reading;
    int64_t deadline = kNever;
    bool registered = false;
    uint32_t events = 0;
    Bytes in;
    FrameState fs;
    SecureBytes out;
    size_t out_off = 0;
    bool refusing = false;   // the write is a refusal
    bool keep_open = false;  // after this write, wait for the next request
    bool idle = false;       // kept open, no octet of the next request yet
    int requests = 0;        // requests taken from this connection
    std::shared_ptr<X509> cert;
    long verify_result = X509_V_OK;
    std::vector<std::shared_ptr<X509>> chain;  // verified chain, leaf first
    ~Conn() {
        if (ssl) SSL_free(ssl);
        if (fd >= 0) ::close(fd);
    }
};

StreamServer::StreamServer(Protocol& proto, ServerOptions opts, std::function<void(std::string_view)> count)
    : m_proto(proto), m_opts(std::move(opts)), m_count(std::move(count)) {
    if (m_opts.tls) SSL_CTX_up_ref(m_opts.tls);
}

StreamServer::~StreamServer() {
    stop();
    if (m_opts.tls) SSL_CTX_free(m_opts.tls);
}

Status StreamServer::start() {
    X2SEC_TRY_STATUS(validate(m_opts.limits));
    bool v6 = m_opts.bind.find(':') != std::string::npos;
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
    int fd = ::socket(v6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) return Error(ErrorDomain::Io, errno, std::string("socket: ") + std::strerror(errno));
    int one = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (::bind(fd, reinterpret_cast<sockaddr*>(&ss), len) != 0 || ::listen(fd, m_opts.limits.backlog) != 0) {
        int e = errno;
        ::close(fd);
        return Error(ErrorDomain::Io, e,
                     "cannot listen on " + m_opts.bind + ":" + std::to_string(m_opts.port) + ": " + std::strerror(e));
    }
    sockaddr_storage got{};
    socklen_t gl = sizeof got;
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&got), &gl);
    m_port =
        ntohs(v6 ? reinterpret_cast<sockaddr_in6*>(&got)->sin6_port : reinterpret_cast<sockaddr_in*>(&got)->sin_port);
    m_epoll = ::epoll_create1(EPOLL_CLOEXEC);
    m_wake = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (m_epoll < 0 || m_wake < 0) {
        int e = errno;
        ::close(fd);
        if (m_epoll >= 0) ::close(m_epoll);
        if (m_wake >= 0) ::close(m_wake);
        m_epoll = m_wake = -1;
        return Error(ErrorDomain::Io, e, std::string("epoll/eventfd: ") + std::strerror(e));
    }
    m_listen = fd;
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = kListenId;
    ::epoll_ctl(m_epoll, EPOLL_CTL_ADD, m_listen, &ev);
    ev.data.u64 = kWakeId;
    ::epoll_ctl(m_epoll, EPOLL_CTL_ADD, m_wake, &ev);
    m_stop = false;
    m_loop = std::thread([this] { loop(); });
    for (int i = 0; i < m_opts.limits.workers; ++i) m_workers.emplace_back([this] { worker(); });
    return ok_status();
}

void StreamServer::stop() {
    if (m_listen < 0) return;
    m_stop = true;
    uint64_t one = 1;
    (void)!::write(m_wake, &one, sizeof one);
    m_cv.notify_all();
    if (m_loop.joinable()) m_loop.join();
    for (auto& t : m_workers) t.join();
    m_workers.clear();
    m_conns.clear();
    m_per_source.clear();
    m_jobs.clear();
    m_done.clear();
    m_posted.clear();
    m_open = 0;
    ::close(m_listen);
    ::close(m_epoll);
    ::close(m_wake);
    m_listen = m_epoll = m_wake = -1;
}

void StreamServer::run_in_loop(const std::function<void()>& fn) {
    if (m_listen < 0 || !m_loop.joinable()) return fn();
    std::mutex done_mu;
    std::condition_variable done_cv;
    bool done = false;
    {
        std::lock_guard lock(m_mutex);
        m_posted.emplace_back([&] {
            fn();
            std::lock_guard l2(done_mu);
            done = true;
            done_cv.notify_all();
        });
    }
    uint64_t one = 1;
    (void)!::write(m_wake, &one, sizeof one);
    std::unique_lock lock(done_mu);
    while (!done && !m_stop.load()) done_cv.wait_for(lock, std::chrono::milliseconds(kTickMs));
}

Status StreamServer::set_limits(const Limits& l) {
    Limits next = l;
    next.workers = m_opts.limits.workers;
    next.backlog = m_opts.limits.backlog;
    X2SEC_TRY_STATUS(validate(next));
    m_opts.limits = next;
    return ok_status();
}

void StreamServer::set_tls(SSL_CTX* ctx) {
    if (ctx == nullptr || ctx == m_opts.tls) return;
    SSL_CTX_up_ref(ctx);
    if (m_opts.tls) SSL_CTX_free(m_opts.tls);  // connections hold their own reference (SSL_new)
    m_opts.tls = ctx;
}

void StreamServer::worker() {
    for (;;) {
        Job job;
        {
            std::unique_lock lock(m_mutex);
            m_cv.wait(lock, [&] { return m_stop.load() || !m_jobs.empty(); });
            if (m_stop) return;
            job = std::move(m_jobs.front());
            m_jobs.pop_front();
        }
        Reply rsp;
        try {
            rsp = m_proto.respond(std::move(job.req));
        } catch (const std::exception& e) {
            m_count(m_opts.counter_prefix + ".handler_exception");
            log::get(m_opts.log_module)->error("{}: request handler failed: {}", m_opts.name, e.what());
        }
        {
            std::lock_guard lock(m_mutex);
            m_done.emplace_back(job.id, std::move(rsp));
        }
        uint64_t one = 1;
        (void)!::write(m_wake, &one, sizeof one);
    }
}

void StreamServer::refuse_log(const std::string& kind, const std::string& text, int64_t now) {
    auto& st = m_log_state[kind];
    if (st.last >= 0 && now - st.last < kLogEveryMs) {
        ++st.suppressed;
        return;
    }
    if (st.suppressed)
        log::get(m_opts.log_module)
            ->warn("{}: {} ({} more '{}' events in the last {} s)", m_opts.name, text, st.suppressed, kind,
                   (now - st.last) / 1000);
    else
        log::get(m_opts.log_module)->warn("{}: {}", m_opts.name, text);
    st.last = now;
    st.suppressed = 0;
}

void StreamServer::flush_log(int64_t now) {
    // The events suppressed by refuse_log are reported once their window has passed, even if no
    // further event comes to carry the count.
    for (auto& [kind, st] : m_log_state)
        if (st.suppressed && now - st.last >= kLogEveryMs) {
            log::get(m_opts.log_module)
                ->warn("{}: {} more '{}' events in the last {} s", m_opts.name, st.suppressed, kind,
                       (now - st.last) / 1000);
            st.last = now;
            st.suppressed = 0;
        }
}

// NOLINTNEXTLINE(readability-make-member-function-const): it changes the epoll set
void StreamServer::want(Conn& c, uint32_t events) {
    if (events == 0) {
        if (c.registered) ::epoll_ctl(m_epoll, EPOLL_CTL_DEL, c.fd, nullptr);
        c.registered = false;
        c.events = 0;
        return;
    }
    if (c.registered && c.events == events) return;
    epoll_event ev{};
    ev.events = events;
    ev.data.u64 = c.id;
    ::epoll_ctl(m_epoll, c.registered ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, c.fd, &ev);
    c.registered = true;
    c.events = events;
}

void StreamServer::close_conn(uint64_t id) {
    auto it = m_conns.find(id);
    if (it == m_conns.end()) return;
    Conn& c = *it->second;
    if (c.registered) ::epoll_ctl(m_epoll, EPOLL_CTL_DEL, c.fd, nullptr);
    if (c.counted) {
        auto ps = m_per_source.find(c.peer);
        if (ps != m_per_source.end() && --ps->second <= 0) m_per_source.erase(ps);
        --m_open;
    }
    m_conns.erase(it);
}

void StreamServer::accept_all(int64_t now) {
    const Limits& L = m_opts.limits;
    for (;;) {
        sockaddr_storage ss{};
        socklen_t sl = sizeof ss;
        int fd = ::accept4(m_listen, reinterpret_cast<sockaddr*>(&ss), &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) return;
            // Out of descriptors or memory: stop accepting for a moment instead of spinning.
            m_count(m_opts.counter_prefix + ".accept_failed");
            refuse_log("accept_failed", std::string("accept: ") + std::strerror(errno) + "; pausing accept", now);
            ::epoll_ctl(m_epoll, EPOLL_CTL_DEL, m_listen, nullptr);
            m_accept_paused_until = now + kAcceptPauseMs;
            return;
        }
        ++m_accepted;
        int one = 1;
        ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        auto c = std::make_unique<Conn>();
        c->id = m_next_id++;
        c->fd = fd;
        c->peer = address_of(ss);
        size_t active = m_open.load();
        std::optional<Refusal> refuse;
        if (active >= static_cast<size_t>(L.max_connections))
            refuse = Refusal::TooManyConnections;
        else if (m_per_source[c->peer] >= L.max_per_source)
            refuse = Refusal::PerSource;
        if (refuse) {
            if (m_per_source[c->peer] == 0) m_per_source.erase(c->peer);
            m_count(m_opts.counter_prefix + ".rejected." + to_string(*refuse));
            refuse_log(to_string(*refuse),
                       *refuse == Refusal::PerSource
                           ? "refused a connection from " + c->peer + ": " + std::to_string(L.max_per_source) +
                                 " connections from that address are open (max_per_source)"
                           : "refused a connection from " + c->peer + ": " + std::to_string(L.max_connections) +
                                 " connections are open (max_connections)",
                       now);
            // A refusal is only sent on plain listeners (on TLS it would cost a handshake), and
            // refused connections waiting for their answer to drain are bounded too.
            Bytes reply = m_opts.tls ? Bytes{} : m_proto.refusal(*refuse, false);
            if (reply.empty() || m_conns.size() >= 2 * static_cast<size_t>(L.max_connections)) continue;  // closes
            uint64_t id = c->id;
            m_conns.emplace(id, std::move(c));
            start_reply(*m_conns[id], std::move(reply), now, kRefusalWriteMs);
            continue;
        }
        c->counted = true;
        ++m_per_source[c->peer];
        ++m_open;
        c->deadline = now + L.request_deadline_ms;
        uint64_t id = c->id;
        Conn& ref = *c;
        m_conns.emplace(id, std::move(c));
        if (m_opts.tls) {
            ref.ssl = SSL_new(m_opts.tls);
            if (!ref.ssl) {
                ERR_clear_error();
                close_conn(id);
                continue;
            }
            SSL_set_fd(ref.ssl, ref.fd);
            SSL_set_mode(ref.ssl, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
            ref.state = Conn::Handshake;
            do_handshake(ref, now);
        } else {
            ref.state = Conn::Reading;
            want(ref, EPOLLIN);
        }
    }
}

void StreamServer::do_handshake(Conn& c, int64_t now) {
    int r = SSL_accept(c.ssl);
    if (r == 1) {
        c.state = Conn::Reading;
        if (X509* x = SSL_get1_peer_certificate(c.ssl)) c.cert = std::shared_ptr<X509>(x, X509_free);
        c.verify_result = SSL_get_verify_result(c.ssl);
        STACK_OF(X509)* sk = SSL_get0_verified_chain(c.ssl);
        for (int i = 0; sk != nullptr && i < sk_X509_num(sk); ++i) {
            X509* x = sk_X509_value(sk, i);
            X509_up_ref(x);
            c.chain.emplace_back(x, X509_free);
        }
        do_read(c, now);
        return;
    }
    int e = SSL_get_error(c.ssl, r);
    if (e == SSL_ERROR_WANT_READ) return want(c, EPOLLIN);
    if (e == SSL_ERROR_WANT_WRITE) return want(c, EPOLLOUT);
    m_count(m_opts.counter_prefix + ".tls.handshake_failed");
    std::string why = m_proto.handshake_failed(c.ssl);
    ERR_clear_error();
    refuse_log("tls_handshake " + why, why + " (from " + c.peer + ")", now);  // rate-limited per reason
    close_conn(c.id);
}

void StreamServer::do_read(Conn& c, int64_t now) {
    uint8_t buf[16384];
    bool eof = false, progressed = false;
    for (;;) {
        if (c.in.size() > m_opts.limits.max_request) break;
        if (c.ssl) {
            int r = SSL_read(c.ssl, buf, sizeof buf);
            if (r > 0) {
                c.in.insert(c.in.end(), buf, buf + r);
                progressed = true;
                continue;
            }
            int e = SSL_get_error(c.ssl, r);
            if (e == SSL_ERROR_WANT_READ) {
                want(c, EPOLLIN);
                break;
            }
            if (e == SSL_ERROR_WANT_WRITE) {
                want(c, EPOLLOUT);
                break;
            }
            ERR_clear_error();
            if (e != SSL_ERROR_ZERO_RETURN) return close_conn(c.id);  // reset, bad record: nothing to answer
            eof = true;
            break;
        }
        ssize_t n = ::recv(c.fd, buf, sizeof buf, 0);
        if (n > 0) {
            c.in.insert(c.in.end(), buf, buf + n);
            progressed = true;
            continue;
        }
        if (n == 0) {
            eof = true;
            break;
        }
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            want(c, EPOLLIN);
            break;
        }
        return close_conn(c.id);
    }
    if (!progressed && !eof) return;
    process_input(c, now, eof);
}

void StreamServer::process_input(Conn& c, int64_t now, bool eof) {
    if (c.idle) {
        if (c.in.empty()) {
            if (eof) close_conn(c.id);  // the client closed a kept-open connection: nothing to answer
            return;
        }
        c.idle = false;  // the next request has begun: it has the whole request deadline
        c.deadline = now + m_opts.limits.request_deadline_ms;
    }
    Frame f = m_proto.frame(c.in, c.fs, eof);
    if (f.kind == Frame::NeedMore && c.in.size() > m_opts.limits.max_request) {  // the framer's limits failed
        f.kind = Frame::Reject;
        f.counter = m_opts.counter_prefix + ".rejected.too_large";
        f.why = "request over " + std::to_string(m_opts.limits.max_request) + " octets";
    }
    switch (f.kind) {
        case Frame::NeedMore:
            if (eof) close_conn(c.id);
            return;
        case Frame::Reject:
            if (!f.counter.empty()) m_count(f.counter);
            if (!f.why.empty())
                refuse_log(f.counter.empty() ? "reject" : f.counter, f.why + " (from " + c.peer + ")", now);
            start_reply(c, std::move(f.reply), now, kRefusalWriteMs);
            return;
        case Frame::Complete:
            break;
    }
    size_t size = std::min(f.size, c.in.size());
    Request req;
    req.data.assign(c.in.begin(), c.in.begin() + static_cast<long>(size));
    c.in.erase(c.in.begin(), c.in.begin() + static_cast<long>(size));  // kept for a later request on this connection
    req.peer = c.peer;
    req.peer_cert = c.cert;
    req.verify_result = c.verify_result;
    req.peer_chain = c.chain;
    req.tls = c.ssl != nullptr;
    req.reused = c.requests > 0;
    if (req.reused) m_count(m_opts.counter_prefix + ".keepalive.reused");
    ++c.requests;
    req.may_keep_open = m_opts.limits.keep_alive_idle_ms > 0 && c.requests < m_opts.limits.max_requests_per_connection;
    c.fs = FrameState{};
    {
        std::lock_guard lock(m_mutex);
        if (m_jobs.size() >= static_cast<size_t>(m_opts.limits.max_connections)) {
            m_count(m_opts.counter_prefix + ".rejected.busy");
            refuse_log("busy", "request queue full, refusing a request from " + c.peer, now);
            start_reply(c, m_proto.refusal(Refusal::Busy, req.tls), now, kRefusalWriteMs);
            return;
        }
        m_jobs.push_back(Job{c.id, std::move(req)});
    }
    c.state = Conn::Processing;
    c.deadline = kNever;
    want(c, 0);
    m_cv.notify_one();
}

void StreamServer::start_reply(Conn& c, Bytes reply, int64_t now, int deadline_ms) {
    if (reply.empty() || (c.ssl && c.state == Conn::Handshake)) return close_conn(c.id);
    c.refusing = true;
    start_write(c, SecureBytes(BytesView(reply)), now, deadline_ms);
}

void StreamServer::start_write(Conn& c, SecureBytes data, int64_t now, int deadline_ms, bool keep_open) {
    if (data.empty()) return close_conn(c.id);
    c.keep_open = keep_open && !c.refusing;
    c.state = Conn::Writing;
    c.out = std::move(data);
    c.out_off = 0;
    c.deadline = now + deadline_ms;
    do_write(c, now);
}

void StreamServer::do_write(Conn& c, int64_t now) {
    while (c.out_off < c.out.size()) {
        size_t left = c.out.size() - c.out_off;
        if (c.ssl) {
            int r = SSL_write(c.ssl, c.out.data() + c.out_off, static_cast<int>(std::min<size_t>(left, 1 << 20)));
            if (r > 0) {
                c.out_off += static_cast<size_t>(r);
                continue;
            }
            int e = SSL_get_error(c.ssl, r);
            if (e == SSL_ERROR_WANT_WRITE) return want(c, EPOLLOUT);
            if (e == SSL_ERROR_WANT_READ) return want(c, EPOLLIN);
            ERR_clear_error();
            return close_conn(c.id);
        }
        ssize_t n = ::send(c.fd, c.out.data() + c.out_off, left, MSG_NOSIGNAL);
        if (n > 0) {
            c.out_off += static_cast<size_t>(n);
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return want(c, EPOLLOUT);
        return close_conn(c.id);
    }
    finish(c, now);
}

void StreamServer::finish(Conn& c, int64_t now) {
    c.out.clear();
    if (c.keep_open) {
        // Persistent: wait for the next request (it may already be buffered: pipelining).
        c.keep_open = false;
        c.state = Conn::Reading;
        c.idle = true;
        c.deadline = now + m_opts.limits.keep_alive_idle_ms;
        want(c, EPOLLIN);
        if (!c.in.empty() || (c.ssl && SSL_pending(c.ssl) > 0)) {
            if (c.ssl && SSL_pending(c.ssl) > 0) return do_read(c, now);
            return process_input(c, now, false);
        }
        return;
    }
    // Last request: send close_notify / FIN, then drain what the client still sends (so that
    // closing does not reset the connection before it read the answer).
    if (c.ssl) {
        (void)SSL_shutdown(c.ssl);
        ERR_clear_error();
    }
    ::shutdown(c.fd, SHUT_WR);
    if (m_opts.limits.linger_ms == 0) return close_conn(c.id);
    c.state = Conn::Lingering;
    c.deadline = now + m_opts.limits.linger_ms;
    want(c, EPOLLIN);
    do_linger(c, now);
}

void StreamServer::do_linger(Conn& c, int64_t) {
    uint8_t buf[4096];
    for (;;) {
        ssize_t n = ::recv(c.fd, buf, sizeof buf, 0);
        if (n > 0) continue;
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
        return close_conn(c.id);
    }
}

void StreamServer::on_event(Conn& c, uint32_t, int64_t now) {
    switch (c.state) {
        case Conn::Handshake:
            return do_handshake(c, now);
        case Conn::Reading:
            return do_read(c, now);
        case Conn::Writing:
            return do_write(c, now);
        case Conn::Lingering:
            return do_linger(c, now);
        case Conn::Processing:
            return;  // not registered
    }
}

void StreamServer::collect_done(int64_t now) {
    std::vector<std::pair<uint64_t, Reply>> done;
    {
        std::lock_guard lock(m_mutex);
        done.swap(m_done);
    }
    for (auto& [id, rsp] : done) {
        auto it = m_conns.find(id);
        if (it == m_conns.end()) continue;
        Conn& c = *it->second;
        start_write(c, std::move(rsp.data), now, m_opts.limits.write_deadline_ms,
                    rsp.keep_open && m_opts.limits.keep_alive_idle_ms > 0 &&
                        c.requests < m_opts.limits.max_requests_per_connection);
    }
}

void StreamServer::check_deadlines(int64_t now) {
    std::vector<uint64_t> expired;
    for (auto& [id, c] : m_conns)
        if (c->deadline <= now) expired.push_back(id);
    for (uint64_t id : expired) {
        auto it = m_conns.find(id);
        if (it == m_conns.end()) continue;
        Conn& c = *it->second;
        switch (c.state) {
            case Conn::Reading:
                if (c.idle) {  // a kept-open connection without a next request: closed quietly
                    m_count(m_opts.counter_prefix + ".keepalive.idle_closed");
                    if (c.ssl) {
                        (void)SSL_shutdown(c.ssl);
                        ERR_clear_error();
                    }
                    close_conn(id);
                    break;
                }
                [[fallthrough]];
            case Conn::Handshake: {
                m_count(m_opts.counter_prefix + ".rejected.deadline");
                refuse_log("deadline",
                           "closing a connection from " + c.peer + ": no complete request within " +
                               std::to_string(m_opts.limits.request_deadline_ms) + " ms (" +
                               (c.state == Conn::Handshake ? "in the TLS handshake"
                                                           : std::to_string(c.in.size()) + " octets received") +
                               ")",
                           now);
                bool in_tls = c.ssl != nullptr;
                if (c.state == Conn::Handshake)
                    close_conn(id);
                else
                    start_reply(c, m_proto.refusal(Refusal::Deadline, in_tls), now, kRefusalWriteMs);
                break;
            }
            case Conn::Writing:
                if (!c.refusing) {
                    m_count(m_opts.counter_prefix + ".rejected.write_deadline");
                    refuse_log("write_deadline",
                               "closing a connection to " + c.peer + ": the response was not read in time", now);
                }
                close_conn(id);
                break;
            case Conn::Lingering:
            case Conn::Processing:
                close_conn(id);
                break;
        }
    }
}

void StreamServer::loop() {
    // OpenSSL writes to the socket with write(2): a client that is gone must give EPIPE on this
    // thread, not a SIGPIPE that ends the process.  (Blocked and left pending, it does nothing.)
    sigset_t pipe;
    sigemptyset(&pipe);
    sigaddset(&pipe, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe, nullptr);
    std::vector<epoll_event> evs(256);
    int64_t next_check = now_ms() + kTickMs;
    while (!m_stop) {
        int n = ::epoll_wait(m_epoll, evs.data(), static_cast<int>(evs.size()), kTickMs);
        int64_t now = now_ms();
        for (int i = 0; i < n && !m_stop; ++i) {
            uint64_t id = evs[i].data.u64;
            if (id == kListenId) {
                accept_all(now);
            } else if (id == kWakeId) {
                uint64_t v;
                (void)!::read(m_wake, &v, sizeof v);
                std::vector<std::function<void()>> posted;
                {
                    std::lock_guard lock(m_mutex);
                    posted.swap(m_posted);
                }
                for (auto& fn : posted) fn();
                collect_done(now);
            } else {
                auto it = m_conns.find(id);
                if (it != m_conns.end()) on_event(*it->second, evs[i].events, now);
            }
        }
        if (m_accept_paused_until && now >= m_accept_paused_until) {
            m_accept_paused_until = 0;
            epoll_event ev{};
            ev.events = EPOLLIN;
            ev.data.u64 = kListenId;
            ::epoll_ctl(m_epoll, EPOLL_CTL_ADD, m_listen, &ev);
        }
        if (now >= next_check) {
            check_deadlines(now);
            flush_log(now);
            next_check = now + kTickMs;
        }
    }
    while (!m_conns.empty()) close_conn(m_conns.begin()->first);
}

}  // namespace x2sec::net
