// x2sec::runtime::IkeRuntime — the sans-I/O IKEv2 engine on real UDP sockets.
//
// One thread runs the loop: poll() over the IKE sockets (port 500 style, plain), the NAT-T
// transports (port 4500 style, non-ESP marker), the control socket, a signalfd and a wake-up
// eventfd; engine.tick() runs at engine.next_deadline().  The data plane's lifetime events come
// through the runtime's ChildSaEventQueue (child_sa_events(), to be given to the data plane's
// set_events): its eventfd wakes the loop, which hands them to engine.child_sa_expired().  On SIGINT/SIGTERM (or
// stop()), every IKE SA is deleted with an INFORMATIONAL exchange, the loop waits for the peers' answers (at most
// shutdown_grace_ms) and returns.
//
// Sockets: for every peer, (local_addr, local_port) plain and (local_addr, local_natt_port)
// NAT-T; plus every `listen` address with the default ports.  The NAT-T transport is created by
// RuntimeOptions::natt_factory, so the ESP data plane can own the port-4500 socket (see
// NattTransport in udp.hpp).
#pragma once

#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <future>
#include <map>
#include <nlohmann/json.hpp>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>
#include <x2sec/common/child_sa.hpp>
#include <x2sec/common/counters.hpp>
#include <x2sec/common/event_queue.hpp>
#include <x2sec/common/rng.hpp>
#include <x2sec/common/time.hpp>
#include <x2sec/ikev2/engine.hpp>
#include <x2sec/runtime/engine_api.hpp>
#include <x2sec/runtime/keylog.hpp>
#include <x2sec/runtime/udp.hpp>

namespace x2sec::runtime {

using NattFactory = std::function<Result<std::unique_ptr<NattTransport>>(const ike::Endpoint& local, Counters*)>;

// The receive queue (docs/ikev2.md "Receive queue"): the IKE sockets are drained with
// recvmmsg into a user-space queue in two classes by the IKE header (classify_ike): messages of
// SAs that may exist (IKE_AUTH, CREATE_CHILD_SA, INFORMATIONAL, responses) are served before new
// IKE_SA_INITs, so a backlog of new initiators cannot make the kernel drop the IKE_AUTHs of the
// SAs already half open.  New IKE_SA_INITs beyond what the responder gets to are shed (counted).
// A third class between the two: a new IKE_SA_INIT whose COOKIE the engine verifies
// (EngineApi::check_init_cookie): its initiator has shown it receives at its address, so a
// spoofed flood of plain IKE_SA_INITs does not delay it.
struct RxPolicy {
    size_t serve_budget = 256;        // datagrams served per loop iteration, then timers and control run
    Millis serve_slice_ms = 50;       // and for at most this long
    Millis drain_every_ms = 2;        // while serving, the sockets are drained again this often
    size_t drain_budget = 1024;       // datagrams taken from the sockets per drain at most
    size_t max_queued_inits = 4096;   // new IKE_SA_INITs waiting; beyond it the oldest of the
                                      // source with the most waiting is shed (SourceFairQueue)
    Millis max_init_wait_ms = 1000;   // a new IKE_SA_INIT that waited longer is shed (the
                                      // initiator has retransmitted by then)
    size_t max_queued_known = 16384;  // messages of existing SAs waiting; the oldest beyond it is shed
    // IKE_SA_INITs with a valid COOKIE waiting; the oldest beyond it is shed (they go stale as above too)
    size_t max_queued_cookie_inits = 1024;
};

struct RuntimeOptions {
    std::vector<IpAddress> listen;              // extra local addresses (wildcards allowed)
    uint16_t ike_port = 500, natt_port = 4500;  // ports for `listen` addresses
    std::string control_socket;                 // "" = no control socket
    std::string keylog_dir;                     // "" = no key log (debug only)
    bool handle_signals = false;                // SIGINT/SIGTERM -> graceful stop (blocks them in this thread)
    Millis shutdown_grace_ms = 3000;
    NattFactory natt_factory;  // default: PlainNattTransport::bind
    // More counters for the control socket's "counters" reply (e.g. the ESP data plane's);
    // must outlive the runtime.
    std::vector<const Counters*> extra_counters;
    // More control commands ({"cmd": NAME} -> {"ok": true} or {"ok": false, "error": ...}),
    // run on the runtime's thread; e.g. "reload-crls".  Must not block.
    std::map<std::string, std::function<Status()>> extra_commands;
    RxPolicy rx;
};

class IkeRuntime {
public:
    // Binds every socket (for each peer of `config`: local_addr with local_port and
    // local_natt_port); fails naming the first address that cannot be bound.  `engine` is
    // usually EngineAdapter<ike::Engine> built from the same config.
    static Result<std::unique_ptr<IkeRuntime>> create(const ike::EngineConfig& config,
                                                      std::unique_ptr<EngineApi> engine, RuntimeOptions options,
                                                      const Clock& clock);
    ~IkeRuntime();

    // Runs until stop() or a signal; returns 0 after a clean shutdown.
    int run();
    // Thread-safe: ask the loop to delete all SAs and return.
    void stop();
    // Thread-safe: run fn on the loop thread with the engine (used by tests and the control
    // socket); blocks until it ran.  Must not be called from the loop thread.
    void call(const std::function<void(EngineApi&, Millis now)>& fn);
    // Thread-safe, non-blocking: run fn on the loop thread soon (e.g. data-plane lifetime
    // events that must reach the engine from the data plane's own thread).
    void post(std::function<void(EngineApi&, Millis now)> fn);
    // Callbacks for the data plane's ChildSaBackend::set_events: thread-safe and non-blocking,
    // they queue the event and wake the loop, which calls engine.child_sa_expired() on its
    // thread.  They stay safe to call after the runtime is gone (the event is dropped then).
    ChildSaEvents child_sa_events() const { return m_child_events.events(); }

    // Local endpoints bound (for tests that bind port 0).
    std::vector<ike::Endpoint> ike_endpoints() const;
    std::vector<ike::Endpoint> natt_endpoints() const;
    const Counters& counters() const { return m_counters; }

    // Handle one control request (JSON in, JSON out); on the loop thread.
    nlohmann::json handle_control(const nlohmann::json& request);
    static nlohmann::json extra_command(const std::function<Status()>& run);

private:
    IkeRuntime(const ike::EngineConfig& config, std::unique_ptr<EngineApi> engine, RuntimeOptions options,
               const Clock& clock);
    Status open_sockets();
    void send(const ike::Datagram& d);
    void flush_engine(Millis now);
    void enqueue_rx(ike::Datagram d);
    // The receive queue (see RxPolicy).  drain_rx() takes what the sockets (and the NAT-T
    // transports' queue m_rx) hold into it; serve_rx() hands it to the engine, known SAs first,
    // within the policy's budget, draining again as it goes.
    struct Queued {
        ike::Datagram d;
        Millis arrived = 0;
    };
    // The plain new IKE_SA_INITs, fair over source addresses: served round-robin, one request
    // per source with requests waiting per turn; over the bound the oldest request of the
    // source with the most waiting is shed.  A spoofed flood from many addresses then costs a
    // legitimate source (one or two requests waiting) its turn's wait, not its request.
    class SourceFairQueue {
    public:
        explicit SourceFairQueue(uint64_t seed) : m_seed(seed) {}
        bool empty() const { return m_size == 0; }
        size_t size() const { return m_size; }
        // Queues q; returns how many requests were shed to stay within cap.
        size_t push(Queued q, size_t cap);
        Queued pop();  // not empty()

    private:
        uint64_t key(const IpAddress& a) const;
        struct Flow {
            std::deque<Queued> q;
            uint64_t turn = 0;  // its entry in m_rr (entries of a source's earlier flows are stale)
        };
        // The source whose turn is next (dropping stale turns), or m_flows.end().
        std::unordered_map<uint64_t, Flow>::iterator front();
        uint64_t m_seed;
        std::unordered_map<uint64_t, Flow> m_flows;
        std::deque<std::pair<uint64_t, uint64_t>> m_rr;  // (source, turn) in turn order
        uint64_t m_next_turn = 1;
        uint64_t m_fat = 0;  // the source with the most waiting (approximately)
        size_t m_size = 0;
    };
    void drain_rx();
    void queue_rx(ike::Datagram d, Millis now);
    void serve_rx();
    bool rx_pending() const { return !m_rx_known.empty() || !m_rx_cookie.empty() || !m_rx_new.empty(); }
    void wake() const;
    void begin_shutdown(Millis now);
    // Control clients are served from the loop without blocking it: non-blocking sockets, a
    // request read and a reply written as far as the socket takes them, each connection closed
    // at its deadline (a client that never sends or never reads costs nothing but its slot).
    // A `list-sas` reply (which with 10,000 SAs is megabytes of JSON) is not built on the loop:
    // the loop takes the SA snapshot (engine.list_sas()) and the reply worker thread turns it
    // into JSON frames (as many as the SA count needs, control.hpp); the connection waits (not
    // polled, no deadline: the worker always answers) until the frames come back through
    // m_replies and the loop writes them, the deadline restarting with each write that goes
    // through.
    struct ControlConn {
        int fd = -1;
        uint64_t id = 0;
        std::string in, out;  // request bytes so far; the framed reply
        size_t sent = 0;
        bool replying = false;
        bool waiting = false;  // the reply worker is building `out`
        Millis deadline = 0;   // closed when passed (not while waiting)
    };
    void accept_control(Millis now);
    std::string control_reply(const std::string& request);
    // The framed reply (length prefix), or a framed "reply too large" error.
    std::string frame_reply(std::string payload);
    // A list-sas request: snapshot on the loop, reply built by the worker.  False when the
    // request is not list-sas (answered the ordinary way).
    bool defer_list_sas(ControlConn& c, const std::string& request);
    void start_reply_job(uint64_t conn_id, std::function<std::string()> job);
    void reply_worker();
    uint64_t m_next_conn_id = 1;
    std::thread m_worker;  // started with the first deferred reply
    std::condition_variable m_worker_cv;
    bool m_worker_stop = false;                                            // guarded by m_mutex
    std::deque<std::pair<uint64_t, std::function<std::string()>>> m_jobs;  // guarded by m_mutex
    std::vector<std::pair<uint64_t, std::string>> m_replies;               // guarded by m_mutex
    // Progress on one connection; false when it is finished (or failed) and is to be closed.
    bool service_control(ControlConn& c);
    std::vector<ControlConn> m_control_conns;

    std::vector<ike::PeerConfig> m_peers;  // addresses, ports, auto_initiate
    RuntimeOptions m_opts;
    const Clock& m_clock;
    std::unique_ptr<EngineApi> m_engine_ptr;
    EngineApi& m_engine;
    Counters m_counters;
    std::vector<UdpSocket> m_ike_sockets;
    BatchReceiver m_batch;
    std::vector<UdpSocket::Received> m_batch_out;  // reused by drain_rx()
    // The receive queue, loop thread only.
    std::deque<Queued> m_rx_known, m_rx_cookie;
    SourceFairQueue m_rx_new{OsRng().u64()};
    Millis m_last_drain = 0;
    std::vector<std::unique_ptr<NattTransport>> m_natt;
    std::unique_ptr<KeyLogWriter> m_keylog;
    int m_wake_fd = -1, m_signal_fd = -1, m_control_fd = -1;

    std::mutex m_mutex;  // guards m_rx, m_calls and the reply worker's queues
    std::deque<ike::Datagram> m_rx;
    struct PendingCall {
        std::function<void(EngineApi&, Millis)> fn;
        std::shared_ptr<std::promise<void>> done;
    };
    std::deque<PendingCall> m_calls;
    ChildSaEventQueue m_child_events;  // data plane -> engine, drained on the loop
    std::atomic<bool> m_stop_requested{false};
    bool m_stopping = false;
    Millis m_stop_deadline = 0;

    std::deque<std::pair<uint64_t, ike::Event>> m_events;  // recent events for the control socket
    uint64_t m_event_seq = 0;
};

}  // namespace x2sec::runtime
