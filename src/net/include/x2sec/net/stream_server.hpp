// x2sec::net::StreamServer — a bounded TCP (optionally TLS) request/response server shared by the
// CMP HTTP(S) server and the KDS.
//
// One event-loop thread (epoll, non-blocking sockets, non-blocking OpenSSL with
// WANT_READ/WANT_WRITE) accepts, runs TLS handshakes, reads requests and writes responses; a
// bounded pool of worker threads runs the protocol's handler on complete requests only, so
// expensive work (CMP signing, database) never blocks I/O and a slow client never holds a
// worker.  What a client can hold is bounded:
//
//  * connections overall (`max_connections`) and per source address (`max_per_source`):
//    a connection over a limit is accepted and closed at once (the protocol may give a refusal
//    to send first, e.g. HTTP 503 on plain HTTP), counted `<prefix>.rejected.too_many_connections`
//    / `<prefix>.rejected.per_source`;
//  * the time from accept to a complete request, TLS handshake included (`request_deadline_ms`):
//    a total deadline that traffic does not extend; on expiry the protocol's refusal is sent if
//    the connection can carry one (HTTP 408), counted `<prefix>.rejected.deadline`;
//  * the time to write the response (`write_deadline_ms`), `<prefix>.rejected.write_deadline`;
//  * the bytes of a request: the protocol's framer refuses a header or body over its limits
//    (counted by the protocol), and the server never buffers more than `max_request` octets.
//
// Each refusal is logged, rate-limited per kind (the first at once with its address and limit,
// then one line per 10 s with the number of further events), so a flood does not flood the log.
//
// Persistent connections (HTTP/1.1 keep-alive): when `keep_alive_idle_ms` > 0 the protocol may
// ask to keep a connection open after a response (Reply::keep_open, only offered while
// Request::may_keep_open: fewer than `max_requests_per_connection` requests so far).  The
// connection then waits for its next request for at most `keep_alive_idle_ms` (closed quietly
// after that, counted `<prefix>.keepalive.idle_closed`); the first octet of the next request
// starts a new `request_deadline_ms`.  The framing is per connection (`FrameState`) and octets
// after a request stay with the connection, so pipelined requests are answered in order, one at
// a time.  Requests on a reused connection are counted `<prefix>.keepalive.reused`.
//
// Live changes (a configuration reload): run_in_loop() runs a function on the event-loop thread
// between events; in it set_limits() and set_tls() replace the limits and the TLS context for
// what comes next (connections accepted, requests framed, deadlines started from then on).
// Open connections keep their TLS session; the number of workers and the backlog stay.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>
#include <x2sec/common/bytes.hpp>
#include <x2sec/common/result.hpp>

typedef struct ssl_ctx_st SSL_CTX;
typedef struct ssl_st SSL;
typedef struct x509_st X509;

namespace x2sec::net {

struct Limits {
    int max_connections = 512;              // concurrent connections, all sources
    int max_per_source = 32;                // concurrent connections from one source address
    int request_deadline_ms = 10000;        // accept -> complete request (incl. TLS handshake); not extended by traffic
    int write_deadline_ms = 10000;          // response ready -> written
    int linger_ms = 1000;                   // after the response: drain the client's unread bytes before closing
    size_t max_request = 1 << 20;           // hard cap on buffered request octets (the framer's limits are lower)
    int keep_alive_idle_ms = 0;             // > 0: persistent connections, idle at most this long between requests
    int max_requests_per_connection = 100;  // with keep-alive: the last one is answered and the connection closed
    int workers = 4;                        // handler threads
    int backlog = 1024;                     // listen(2) backlog
};
// Checks the limits are usable ("max_connections must be 1..65536", ...).
Status validate(const Limits& l);

// Why the server refuses a connection or a request (the protocol may answer with bytes).
enum class Refusal { TooManyConnections, PerSource, Deadline, Busy };
const char* to_string(Refusal r);  // "too_many_connections", "per_source", "deadline", "busy"

// Incremental framing state of one connection's current request.
struct FrameState {
    size_t scanned = 0;  // octets already searched (e.g. for the end of the HTTP header block)
    size_t need = 0;     // once known: the total size of the request
};

struct Frame {
    enum Kind { NeedMore, Complete, Reject } kind = NeedMore;
    size_t size = 0;      // Complete: octets of the request
    Bytes reply;          // Reject: sent before closing (may be empty)
    std::string counter;  // Reject: counter incremented (full name); empty: none
    std::string why;      // Reject: log text; empty: not logged
};

struct Request {
    Bytes data;                       // the complete request (Frame::size octets)
    std::string peer;                 // source address, e.g. "127.0.0.1" or "::1"
    std::shared_ptr<X509> peer_cert;  // TLS client certificate (verified by the handshake), if any
    // The handshake's verification outcome, for a protocol that authorises on it after the
    // handshake (a verify callback may let chosen errors through): X509_V_OK (0) or the error,
    // and the verified chain, leaf first (empty without a client certificate).
    long verify_result = 0;
    std::vector<std::shared_ptr<X509>> peer_chain;
    bool tls = false;
    bool may_keep_open = false;  // the protocol may keep the connection open after this request
    bool reused = false;         // not the first request on its connection
};

struct Reply {
    SecureBytes data;        // empty: close without answering
    bool keep_open = false;  // honoured only when the request's may_keep_open was set
};

class Protocol {
public:
    virtual ~Protocol() = default;
    // Examines everything received so far for the current request (`eof`: the client closed).
    virtual Frame frame(BytesView received, FrameState& st, bool eof) = 0;
    // On a worker thread: the response to a complete request.
    virtual SecureBytes handle(Request req) = 0;
    // As handle(), for a protocol that keeps connections open (default: handle(), then close).
    virtual Reply respond(Request req) { return Reply{handle(std::move(req)), false}; }
    // What to send when refusing (`tls`: the bytes go inside an established TLS session; a
    // refusal before or without a TLS session is never sent on a TLS listener).
    virtual Bytes refusal(Refusal, bool /*tls*/) { return {}; }
    // A TLS handshake failed: returns the log text (counted `<prefix>.tls.handshake_failed`).
    virtual std::string handshake_failed(SSL*) { return "TLS handshake failed"; }
};

struct ServerOptions {
    std::string bind = "127.0.0.1";  // IPv4 or IPv6 literal
    int port = 0;                    // 0: ephemeral, see port()
    Limits limits;
    SSL_CTX* tls = nullptr;          // TLS when set (the server takes a reference)
    std::string counter_prefix;      // e.g. "cmp.http", "kds.conn"
    std::string log_module = "net";  // logger name
    std::string name = "server";     // for log lines
};

class StreamServer {
public:
    // `count` increments a named counter (the owner's Counters).
    StreamServer(Protocol& proto, ServerOptions opts, std::function<void(std::string_view)> count);
    ~StreamServer();
    StreamServer(const StreamServer&) = delete;
    StreamServer& operator=(const StreamServer&) = delete;
    Status start();
    void stop();
    int port() const { return m_port; }
    size_t accepted() const { return m_accepted.load(); }
    size_t open_connections() const { return m_open.load(); }
    // Runs `fn` on the event-loop thread and returns once it ran (at once, on this thread, when
    // the server is not running).
    void run_in_loop(const std::function<void()>& fn);
    // Only inside run_in_loop (or before start): new limits (`workers` and `backlog` are kept)
    // and a new TLS context (a reference is taken) for new connections.
    Status set_limits(const Limits& l);
    void set_tls(SSL_CTX* ctx);

private:
    struct Conn;
    struct Job {
        uint64_t id;
        Request req;
    };
    void loop();
    void worker();
    void accept_all(int64_t now);
    void on_event(Conn& c, uint32_t ev, int64_t now);
    void do_handshake(Conn& c, int64_t now);
    void do_read(Conn& c, int64_t now);
    void process_input(Conn& c, int64_t now, bool eof);
    void do_write(Conn& c, int64_t now);
    void do_linger(Conn& c, int64_t now);
    void start_reply(Conn& c, Bytes reply, int64_t now, int deadline_ms);
    void start_write(Conn& c, SecureBytes data, int64_t now, int deadline_ms, bool keep_open = false);
    void finish(Conn& c, int64_t now);
    void want(Conn& c, uint32_t events);
    void close_conn(uint64_t id);
    void check_deadlines(int64_t now);
    void refuse_log(const std::string& kind, const std::string& text, int64_t now);
    void flush_log(int64_t now);
    void collect_done(int64_t now);

    Protocol& m_proto;
    ServerOptions m_opts;
    std::function<void(std::string_view)> m_count;
    int m_listen = -1, m_epoll = -1, m_wake = -1;
    int m_port = 0;
    std::atomic<bool> m_stop{false};
    std::thread m_loop;
    std::vector<std::thread> m_workers;
    // loop-thread state
    std::unordered_map<uint64_t, std::unique_ptr<Conn>> m_conns;
    std::unordered_map<std::string, int> m_per_source;
    uint64_t m_next_id = 1;
    int64_t m_accept_paused_until = 0;
    struct LogState {
        int64_t last = -1;
        uint64_t suppressed = 0;
    };
    std::map<std::string, LogState> m_log_state;
    // worker queue and results
    std::mutex m_mutex;
    std::condition_variable m_cv;
    std::deque<Job> m_jobs;
    std::vector<std::pair<uint64_t, Reply>> m_done;
    std::vector<std::function<void()>> m_posted;
    std::atomic<size_t> m_accepted{0}, m_open{0};
};

}  // namespace x2sec::net
