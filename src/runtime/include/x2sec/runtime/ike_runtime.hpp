// x2sec::runtime::IkeRuntime — the sans-I/O IKEv2 engine on real UDP sockets.
//
// One thread runs the loop: poll() over the IKE sockets (port 500 style, plain), the NAT-T
// transports (port 4500 style, non-ESP marker), the control socket, a signalfd and a wake-up
// eventfd; engine.tick() runs at engine.next_deadline().  On SIGINT/SIGTERM (or stop()), every
// IKE SA is deleted with an INFORMATIONAL exchange, the loop waits for the peers' answers (at
// most shutdown_grace_ms) and returns.
//
// Sockets: for every peer, (local_addr, local_port) plain and (local_addr, local_natt_port)
// NAT-T; plus every `listen` address with the default ports.  The NAT-T transport is created by
// RuntimeOptions::natt_factory, so the ESP data plane can own the port-4500 socket (see
// NattTransport in udp.hpp).
#pragma once

#include <atomic>
#include <deque>
#include <functional>
#include <future>
#include <map>
#include <nlohmann/json.hpp>
#include <memory>
#include <mutex>
#include <string>
#include <vector>
#include <x2sec/common/child_sa.hpp>
#include <x2sec/common/counters.hpp>
#include <x2sec/common/rng.hpp>
#include <x2sec/common/time.hpp>
#include <x2sec/ikev2/engine.hpp>
#include <x2sec/runtime/engine_api.hpp>
#include <x2sec/runtime/keylog.hpp>
#include <x2sec/runtime/udp.hpp>

namespace x2sec::runtime {

using NattFactory = std::function<Result<std::unique_ptr<NattTransport>>(const ike::Endpoint& local, Counters*)>;

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
    void wake();
    void begin_shutdown(Millis now);
    // Control clients are served from the loop without blocking it: non-blocking sockets, a
    // request read and a reply written as far as the socket takes them, each connection closed
    // at its deadline (a client that never sends or never reads costs nothing but its slot).
    struct ControlConn {
        int fd = -1;
        std::string in, out;  // request bytes so far; the framed reply
        size_t sent = 0;
        bool replying = false;
        Millis deadline = 0;
    };
    void accept_control(Millis now);
    std::string control_reply(const std::string& request);
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
    std::vector<std::unique_ptr<NattTransport>> m_natt;
    std::unique_ptr<KeyLogWriter> m_keylog;
    int m_wake_fd = -1, m_signal_fd = -1, m_control_fd = -1;

    std::mutex m_mutex;  // guards m_rx, m_calls
    std::deque<ike::Datagram> m_rx;
    struct PendingCall {
        std::function<void(EngineApi&, Millis)> fn;
        std::shared_ptr<std::promise<void>> done;
    };
    std::deque<PendingCall> m_calls;
    std::atomic<bool> m_stop_requested{false};
    bool m_stopping = false;
    Millis m_stop_deadline = 0;

    std::deque<std::pair<uint64_t, ike::Event>> m_events;  // recent events for the control socket
    uint64_t m_event_seq = 0;
};

}  // namespace x2sec::runtime
