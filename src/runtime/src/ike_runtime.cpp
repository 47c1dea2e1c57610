#include <x2sec/runtime/ike_runtime.hpp>

#include <cerrno>
#include <csignal>
#include <cstdint>
#include <cstring>
#include <fcntl.h>
#include <poll.h>
#include <set>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include <x2sec/common/log.hpp>
#include <x2sec/runtime/control.hpp>
#include <x2sec/x509/ocsp_stapler.hpp>

namespace x2sec::runtime {

namespace {

constexpr size_t kMaxEvents = 512;
constexpr Millis kMaxPollMs = 1000;
// A control client's idle bound: from its connect until the request is read, and from the reply
// being ready (and from each write that made progress) until the next write goes through.
constexpr Millis kControlDeadlineMs = 5000;

auto logger() {
    return log::get("runtime");
}

std::optional<uint64_t> find_sa(const EngineApi& e, const nlohmann::json& req, std::string& err) {
    auto sas = e.list_sas();
    if (req.contains("ike_sa_id")) {
        uint64_t id = req["ike_sa_id"].get<uint64_t>();
        for (const auto& s : sas)
            if (s.id == id) return id;
        err = "no IKE SA #" + std::to_string(id);
        return std::nullopt;
    }
    std::string peer = req.value("peer", std::string());
    if (peer.empty()) {
        err = "give 'peer' or 'ike_sa_id'";
        return std::nullopt;
    }
    std::optional<uint64_t> best;
    for (const auto& s : sas) {
        if (s.peer != peer) continue;
        if (s.state == "ESTABLISHED") return s.id;
        if (!best) best = s.id;
    }
    if (!best) err = "no IKE SA with peer '" + peer + "'";
    return best;
}

}  // namespace

IkeRuntime::IkeRuntime(const ike::EngineConfig& config, std::unique_ptr<EngineApi> engine, RuntimeOptions options,
                       const Clock& clock)
    : m_peers(config.peers),
      m_opts(std::move(options)),
      m_clock(clock),
      m_engine_ptr(std::move(engine)),
      m_engine(*m_engine_ptr) {}

IkeRuntime::~IkeRuntime() {
    if (m_worker.joinable()) {
        {
            std::lock_guard lock(m_mutex);
            m_worker_stop = true;
        }
        m_worker_cv.notify_all();
        m_worker.join();
    }
    for (const auto& c : m_control_conns) ::close(c.fd);
    for (int fd : {m_wake_fd, m_signal_fd, m_control_fd})
        if (fd >= 0) ::close(fd);
    if (m_control_fd >= 0 && !m_opts.control_socket.empty()) ::unlink(m_opts.control_socket.c_str());
}

Result<std::unique_ptr<IkeRuntime>> IkeRuntime::create(const ike::EngineConfig& config,
                                                       std::unique_ptr<EngineApi> engine, RuntimeOptions options,
                                                       const Clock& clock) {
    std::unique_ptr<IkeRuntime> rt(new IkeRuntime(config, std::move(engine), std::move(options), clock));
    X2SEC_TRY_STATUS(rt->open_sockets());
    // Our own OCSP responses (RFC 4806) are fetched by a running daemon only: loading a
    // configuration registers the certificates but starts no thread.
    for (const auto& p : config.peers)
        if (p.ocsp_stapler) p.ocsp_stapler->start();
    return rt;
}

Status IkeRuntime::open_sockets() {
    if (!m_opts.natt_factory)
        m_opts.natt_factory = [](const ike::Endpoint& local, Counters* c) -> Result<std::unique_ptr<NattTransport>> {
            auto t = PlainNattTransport::bind(local, c);
            if (!t) return std::move(t).error();
            return std::unique_ptr<NattTransport>(std::move(*t));
        };
    std::set<std::pair<IpAddress, uint16_t>> plain, natt;
    for (const auto& p : m_peers) {
        plain.insert({p.local_addr, p.local_port});
        natt.insert({p.local_addr, p.local_natt_port});
    }
    for (const auto& a : m_opts.listen) {
        plain.insert({a, m_opts.ike_port});
        natt.insert({a, m_opts.natt_port});
    }
    for (const auto& [addr, port] : plain) {
        auto s = UdpSocket::bind(ike::Endpoint{addr, port});
        if (!s) return std::move(s).error();
        logger()->info("listening for IKE on {}", s->local().to_string());
        m_ike_sockets.push_back(std::move(*s));
    }
    for (const auto& [addr, port] : natt) {
        auto t = m_opts.natt_factory(ike::Endpoint{addr, port}, &m_counters);
        if (!t) return std::move(t).error();
        logger()->info("listening for IKE (non-ESP marker) and ESP on {}", (*t)->local().to_string());
        (*t)->set_ike_receiver([this](ike::Datagram d) { enqueue_rx(std::move(d)); });
        m_natt.push_back(std::move(*t));
    }
    m_wake_fd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (m_wake_fd < 0) return Error(ErrorDomain::Io, errno, std::string("eventfd: ") + std::strerror(errno));
    if (m_child_events.fd() < 0)
        return Error(ErrorDomain::Io, 0, "eventfd for the data plane's Child SA events could not be created");
    if (m_opts.handle_signals) {
        sigset_t set;
        sigemptyset(&set);
        sigaddset(&set, SIGINT);
        sigaddset(&set, SIGTERM);
        pthread_sigmask(SIG_BLOCK, &set, nullptr);
        m_signal_fd = ::signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
        if (m_signal_fd < 0) return Error(ErrorDomain::Io, errno, std::string("signalfd: ") + std::strerror(errno));
    }
    if (!m_opts.control_socket.empty()) {
        const std::string& path = m_opts.control_socket;
        sockaddr_un sa{};
        sa.sun_family = AF_UNIX;
        if (path.size() >= sizeof sa.sun_path)
            return Error(ErrorDomain::Io, 0, "control socket path too long: " + path);
        std::memcpy(sa.sun_path, path.c_str(), path.size() + 1);
        // A stale socket from a crashed daemon: remove it, but never a live one.
        int probe = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (probe >= 0) {
            if (::connect(probe, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0) {
                ::close(probe);
                return Error(ErrorDomain::Io, 0, "another daemon is listening on " + path);
            }
            ::close(probe);
        }
        ::unlink(path.c_str());
        m_control_fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (m_control_fd < 0) return Error(ErrorDomain::Io, errno, std::string("socket: ") + std::strerror(errno));
        mode_t old = ::umask(0077);  // the control socket is for root (or the daemon's user) only
        int rc = ::bind(m_control_fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa);
        ::umask(old);
        if (rc != 0 || ::listen(m_control_fd, 16) != 0)
            return Error(ErrorDomain::Io, errno, "control socket " + path + ": " + std::strerror(errno));
        logger()->info("control socket {}", path);
    }
    if (!m_opts.keylog_dir.empty()) {
        auto kl = KeyLogWriter::open(m_opts.keylog_dir);
        if (!kl) return std::move(kl).error();
        m_keylog = std::move(*kl);
        m_engine.set_key_logger(
            [this](const ike::IkeSaKeys& k) {
                if (auto st = m_keylog->add_ike_sa(k); !st) logger()->error("debug key log: {}", st.error().detail());
            },
            [this](const ChildSaParams& p) {
                if (auto st = m_keylog->add_child_sa(p); !st) logger()->error("debug key log: {}", st.error().detail());
            });
    }
    return {};
}

std::vector<ike::Endpoint> IkeRuntime::ike_endpoints() const {
    std::vector<ike::Endpoint> v;
    for (const auto& s : m_ike_sockets) v.push_back(s.local());
    return v;
}

std::vector<ike::Endpoint> IkeRuntime::natt_endpoints() const {
    std::vector<ike::Endpoint> v;
    for (const auto& t : m_natt) v.push_back(t->local());
    return v;
}

void IkeRuntime::wake() const {
    uint64_t one = 1;
    [[maybe_unused]] auto n = ::write(m_wake_fd, &one, sizeof one);
}

void IkeRuntime::enqueue_rx(ike::Datagram d) {
    {
        std::lock_guard lock(m_mutex);
        if (m_rx.size() >= 4096) {
            m_counters.inc("runtime.rx.queue_full");
            return;
        }
        m_rx.push_back(std::move(d));
    }
    wake();
}

void IkeRuntime::queue_rx(ike::Datagram d, Millis now) {
    RxHeader h = classify_ike(d.data);
    if (h.cls == RxClass::NotIke) {
        m_counters.inc("runtime.rx.not_ike");
        logger()->debug("dropping {}-octet datagram from {}: shorter than the IKE header (28 octets)", d.data.size(),
                        d.remote.to_string());
        return;
    }
    if (h.cls == RxClass::NewInit) {
        // Whether it carries a COOKIE the engine handed out (a walk over the payload headers and
        // one SHA-256 at most; the engine checks it again when it handles the request).
        switch (m_engine.check_init_cookie(d)) {
            case ike::CookieCheck::Valid:
                h.cls = RxClass::CookieInit;
                m_counters.inc("runtime.rx.cookie_init");
                break;
            case ike::CookieCheck::Bad:
                m_counters.inc("runtime.rx.cookie_bad");
                break;
            case ike::CookieCheck::Malformed:
                m_counters.inc("runtime.rx.init_malformed");
                break;
            case ike::CookieCheck::None:
                break;
        }
    }
    if (h.cls == RxClass::NewInit) {
        size_t shed = m_rx_new.push({std::move(d), now}, std::max<size_t>(1, m_opts.rx.max_queued_inits));
        if (shed) m_counters.inc("runtime.rx.init_shed", shed);
    } else {
        bool known = h.cls == RxClass::Known;
        auto& q = known ? m_rx_known : m_rx_cookie;
        size_t cap = std::max<size_t>(1, known ? m_opts.rx.max_queued_known : m_opts.rx.max_queued_cookie_inits);
        // Over the bound the oldest goes: its initiator is the likeliest to have retransmitted.
        while (q.size() >= cap) {
            q.pop_front();
            m_counters.inc(known ? "runtime.rx.known_shed" : "runtime.rx.cookie_shed");
        }
        q.push_back({std::move(d), now});
    }
    auto& peak = m_counters.counter("runtime.rx.queue_peak");  // high-water mark, written on the loop only
    uint64_t waiting = m_rx_known.size() + m_rx_cookie.size() + m_rx_new.size();
    if (waiting > peak.load(std::memory_order_relaxed)) peak.store(waiting, std::memory_order_relaxed);
}

uint64_t IkeRuntime::SourceFairQueue::key(const IpAddress& a) const {
    auto mix = [](uint64_t z) {  // splitmix64's finaliser
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
        return z ^ (z >> 31);
    };
    uint64_t h = mix(m_seed ^ (a.v6 ? 6 : 4));
    BytesView b = a.view();
    for (size_t i = 0; i < b.size(); i += 8) {
        uint64_t w = 0;
        for (size_t k = i; k < std::min(b.size(), i + 8); ++k) w = (w << 8) | b[k];
        h = mix(h ^ w);
    }
    return h;
}

std::unordered_map<uint64_t, IkeRuntime::SourceFairQueue::Flow>::iterator IkeRuntime::SourceFairQueue::front() {
    while (!m_rr.empty()) {
        auto it = m_flows.find(m_rr.front().first);
        if (it != m_flows.end() && it->second.turn == m_rr.front().second) return it;
        m_rr.pop_front();  // the source's requests were all shed since
    }
    return m_flows.end();
}

size_t IkeRuntime::SourceFairQueue::push(Queued q, size_t cap) {
    size_t shed = 0;
    uint64_t k = key(q.d.remote.addr);
    Flow& f = m_flows[k];
    if (f.q.empty()) {
        f.turn = m_next_turn++;
        m_rr.emplace_back(k, f.turn);
    }
    f.q.push_back(std::move(q));
    ++m_size;
    auto fat = m_flows.find(m_fat);
    if (fat == m_flows.end() || f.q.size() > fat->second.q.size()) m_fat = k;
    while (m_size > cap) {
        fat = m_flows.find(m_fat);
        // Every source has one request waiting (a flood from as many addresses as the bound):
        // the one whose turn is next loses it, the oldest, as a plain FIFO would.
        if (fat == m_flows.end() || fat->second.q.size() <= 1) fat = front();
        fat->second.q.pop_front();
        --m_size;
        ++shed;
        if (fat->second.q.empty()) m_flows.erase(fat);  // its turn in m_rr is stale now
    }
    return shed;
}

IkeRuntime::Queued IkeRuntime::SourceFairQueue::pop() {
    auto it = front();
    m_rr.pop_front();
    Queued q = std::move(it->second.q.front());
    it->second.q.pop_front();
    --m_size;
    if (it->second.q.empty()) {
        m_flows.erase(it);
    } else {
        it->second.turn = m_next_turn++;  // its next request waits for the next round
        m_rr.emplace_back(it->first, it->second.turn);
    }
    return q;
}

void IkeRuntime::drain_rx() {
    Millis now = m_clock.now();
    m_last_drain = now;
    size_t budget = m_opts.rx.drain_budget;
    for (auto& s : m_ike_sockets) {
        while (budget > 0) {
            m_batch_out.clear();
            BatchReceiver::Stats st;
            auto r = m_batch.receive(s, m_batch_out, budget, st);
            if (!r) {
                m_counters.inc("runtime.rx.error");
                logger()->warn("IKE socket {}: {}", s.local().to_string(), r.error().detail());
                break;
            }
            if (st.calls) m_counters.inc("runtime.rx.recvmmsg");
            if (st.full) m_counters.inc("runtime.rx.batch_full");
            if (st.truncated) m_counters.inc("runtime.rx.truncated", st.truncated);
            budget -= std::min(budget, *r + st.truncated);
            for (auto& rx : m_batch_out) {
                m_counters.inc("runtime.rx.ike");
                queue_rx(ike::Datagram{rx.local, rx.remote, std::move(rx.data), false}, now);
            }
            if (!st.full) break;  // the socket is empty
        }
    }
    // The NAT-T transports the runtime polls itself hand their IKE messages to m_rx, as the data
    // plane's threads do.
    for (auto& t : m_natt)
        if (t->poll_fd() >= 0) t->service();
    std::deque<ike::Datagram> rx;
    {
        std::lock_guard lock(m_mutex);
        rx.swap(m_rx);
    }
    for (auto& d : rx) {
        m_counters.inc(d.non_esp_marker ? "runtime.rx.ike_natt" : "runtime.rx.ike");
        queue_rx(std::move(d), now);
    }
}

void IkeRuntime::serve_rx() {
    const RxPolicy& p = m_opts.rx;
    Millis start = m_clock.now();
    size_t served = 0;
    while (rx_pending() && served < p.serve_budget) {
        Millis now = m_clock.now();
        if (served > 0 && now - start >= p.serve_slice_ms) break;
        if (now - m_last_drain >= p.drain_every_ms) drain_rx();  // the kernel's queue must not overflow meanwhile
        Queued q;
        if (!m_rx_known.empty()) {
            q = std::move(m_rx_known.front());
            m_rx_known.pop_front();
        } else if (!m_rx_cookie.empty()) {
            q = std::move(m_rx_cookie.front());
            m_rx_cookie.pop_front();
            if (now - q.arrived > p.max_init_wait_ms) {
                m_counters.inc("runtime.rx.cookie_stale");
                continue;
            }
        } else {
            q = m_rx_new.pop();
            if (now - q.arrived > p.max_init_wait_ms) {
                m_counters.inc("runtime.rx.init_stale");
                continue;
            }
        }
        m_engine.handle_datagram(q.d, now);
        // The answer goes out now, not after the rest of the batch: a batch of IKE_AUTHs is
        // tens of milliseconds of signatures, which the peers would otherwise wait through with
        // nothing to do (docs/bench-ike.md "Side by side with charon").
        flush_engine(now);
        ++served;
    }
}

void IkeRuntime::stop() {
    m_stop_requested = true;
    wake();
}

void IkeRuntime::call(const std::function<void(EngineApi&, Millis)>& fn) {
    auto done = std::make_shared<std::promise<void>>();
    auto fut = done->get_future();
    {
        std::lock_guard lock(m_mutex);
        m_calls.push_back({fn, done});
    }
    wake();
    fut.wait();
}

void IkeRuntime::post(std::function<void(EngineApi&, Millis)> fn) {
    {
        std::lock_guard lock(m_mutex);
        m_calls.push_back({std::move(fn), nullptr});
    }
    wake();
}

void IkeRuntime::send(const ike::Datagram& d) {
    auto matches = [&](const ike::Endpoint& bound) {
        return bound.port == d.local.port && bound.addr.v6 == d.local.addr.v6 &&
               (bound.addr == d.local.addr || bound.addr == IpAddress{bound.addr.v6, {}});
    };
    if (d.non_esp_marker) {
        for (auto& t : m_natt) {
            if (!matches(t->local())) continue;
            if (auto st = t->send_ike(d); !st) {
                m_counters.inc("runtime.tx.error");
                logger()->warn("sending IKE to {}: {}", d.remote.to_string(), st.error().detail());
            } else {
                m_counters.inc("runtime.tx.ike_natt");
            }
            return;
        }
    } else {
        for (auto& s : m_ike_sockets) {
            if (!matches(s.local())) continue;
            if (auto st = s.send(d.local, d.remote, d.data); !st) {
                m_counters.inc("runtime.tx.error");
                logger()->warn("sending IKE to {}: {}", d.remote.to_string(), st.error().detail());
            } else {
                m_counters.inc("runtime.tx.ike");
            }
            return;
        }
    }
    m_counters.inc("runtime.tx.no_socket");
    logger()->warn("no socket bound to {}{} for a message to {}; dropped", d.local.to_string(),
                   d.non_esp_marker ? " (NAT-T)" : "", d.remote.to_string());
}

void IkeRuntime::flush_engine(Millis now) {
    (void)now;
    for (const auto& d : m_engine.take_outgoing()) send(d);
    for (auto& e : m_engine.take_events()) {
        auto lg = logger();
        switch (e.kind) {
            case ike::Event::Kind::AuthFailed:
            case ike::Event::Kind::NegotiationFailed:
            case ike::Event::Kind::PeerDead:
            case ike::Event::Kind::PeerNotify:
                lg->warn("peer '{}' IKE SA #{}: {} {} {}", e.peer, e.ike_sa_id, ike::to_string(e.kind), e.code,
                         e.detail);
                break;
            default:
                lg->info("peer '{}' IKE SA #{}: {} {}", e.peer, e.ike_sa_id, ike::to_string(e.kind), e.detail);
        }
        m_events.emplace_back(++m_event_seq, std::move(e));
        if (m_events.size() > kMaxEvents) m_events.pop_front();
    }
}

void IkeRuntime::begin_shutdown(Millis now) {
    if (m_stopping) return;
    m_stopping = true;
    m_stop_deadline = now + m_opts.shutdown_grace_ms;
    auto sas = m_engine.list_sas();
    logger()->info("shutting down: deleting {} IKE SA(s)", sas.size());
    for (const auto& s : sas) {
        if (auto st = m_engine.delete_ike(s.id, now); !st)
            logger()->warn("deleting IKE SA #{} with '{}': {}", s.id, s.peer, st.error().detail());
    }
}

nlohmann::json IkeRuntime::handle_control(const nlohmann::json& req) {
    Millis now = m_clock.now();
    std::string cmd = req.is_object() ? req.value("cmd", std::string()) : std::string();
    auto fail = [](const std::string& msg) { return nlohmann::json{{"ok", false}, {"error", msg}}; };
    auto status_reply = [&](const Status& st) { return st ? nlohmann::json{{"ok", true}} : fail(st.error().detail()); };
    try {
        if (cmd == "list-sas") return {{"ok", true}, {"sas", sas_to_json(m_engine.list_sas(), now)}};
        if (cmd == "initiate") {
            std::string peer = req.value("peer", std::string());
            if (peer.empty()) return fail("initiate needs 'peer'");
            return status_reply(m_engine.initiate(peer, now));
        }
        if (cmd == "terminate" || cmd == "rekey") {
            std::string err;
            auto id = find_sa(m_engine, req, err);
            if (!id) return fail(err);
            std::string child = req.value("child", std::string());
            if (child.empty())
                return status_reply(cmd == "terminate" ? m_engine.delete_ike(*id, now) : m_engine.rekey_ike(*id, now));
            for (const auto& s : m_engine.list_sas()) {
                if (s.id != *id) continue;
                for (const auto& c : s.children) {
                    if (c.name != child) continue;
                    return status_reply(cmd == "terminate" ? m_engine.delete_child(*id, c.spi_in, now)
                                                           : m_engine.rekey_child(*id, c.spi_in, now));
                }
            }
            return fail("IKE SA #" + std::to_string(*id) + " has no Child SA named '" + child + "'");
        }
        if (cmd == "events") {
            uint64_t since = req.value("since", uint64_t(0));
            nlohmann::json ev = nlohmann::json::array();
            for (const auto& [seq, e] : m_events)
                if (seq > since) ev.push_back(event_to_json(e, seq));
            return {{"ok", true}, {"events", ev}, {"next", m_event_seq}};
        }
        if (cmd == "counters") {
            nlohmann::json c = nlohmann::json::object();
            for (const auto& [k, v] : m_engine.counters().snapshot()) c[k] = v;
            for (const auto& [k, v] : m_counters.snapshot()) c[k] = v;
            for (const Counters* extra : m_opts.extra_counters)
                if (extra)
                    for (const auto& [k, v] : extra->snapshot()) c[k] = v;
            return {{"ok", true}, {"counters", c}};
        }
        if (cmd == "stop") {
            m_stop_requested = true;
            return {{"ok", true}};
        }
    } catch (const nlohmann::json::exception& e) {
        m_counters.inc("runtime.control.bad_request");
        return fail(std::string("bad request: ") + e.what());
    } catch (const std::exception& e) {
        // Whatever a request runs into, the daemon and its tunnels stay up.
        m_counters.inc("runtime.control.error");
        logger()->error("control request '{}' failed: {}", printable_text(cmd), e.what());
        return fail(std::string("internal error: ") + e.what());
    }
    if (auto it = m_opts.extra_commands.find(cmd); it != m_opts.extra_commands.end()) return extra_command(it->second);
    return fail("unknown command '" + cmd + "' (list-sas, initiate, terminate, rekey, events, counters, stop)");
}

nlohmann::json IkeRuntime::extra_command(const std::function<Status()>& run) {
    Status st = run ? run() : Status(Error(ErrorDomain::Config, 0, "command not available"));
    return st ? nlohmann::json{{"ok", true}} : nlohmann::json{{"ok", false}, {"error", st.error().detail()}};
}

std::string IkeRuntime::control_reply(const std::string& request) {
    // No exception may leave here: it would end the daemon (and every tunnel with it).
    try {
        auto j = nlohmann::json::parse(request, nullptr, false);
        if (j.is_discarded()) m_counters.inc("runtime.control.bad_request");
        nlohmann::json reply =
            j.is_discarded() ? nlohmann::json{{"ok", false}, {"error", "request is not JSON"}} : handle_control(j);
        return control_dump(reply);
    } catch (const std::exception& e) {
        m_counters.inc("runtime.control.error");
        logger()->error("control request failed: {}", e.what());
        return control_dump(nlohmann::json{{"ok", false}, {"error", std::string("internal error: ") + e.what()}});
    }
}

bool IkeRuntime::service_control(ControlConn& c) {
    constexpr size_t kMaxRequest = 64 * 1024;
    if (!c.replying) {
        for (;;) {
            char buf[4096];
            ssize_t r = ::recv(c.fd, buf, sizeof buf, 0);
            if (r < 0) {
                if (errno == EINTR) continue;
                if (errno == EAGAIN || errno == EWOULDBLOCK) break;
                m_counters.inc("runtime.control.bad_request");
                logger()->debug("control request: read: {}", std::strerror(errno));
                return false;
            }
            if (r == 0) {
                m_counters.inc("runtime.control.bad_request");
                logger()->debug("control request: closed after {} octets", c.in.size());
                return false;
            }
            c.in.append(buf, static_cast<size_t>(r));
            if (c.in.size() >= 4) break;
        }
        if (c.in.size() < 4) return true;
        auto u = [&](size_t i) { return static_cast<size_t>(static_cast<uint8_t>(c.in[i])); };
        size_t n = (u(0) << 24) | (u(1) << 16) | (u(2) << 8) | u(3);
        if (n > kMaxRequest) {
            m_counters.inc("runtime.control.bad_request");
            logger()->debug("control request of {} octets exceeds the limit", n);
            return false;
        }
        // Read the rest of the frame as far as it has arrived.
        while (c.in.size() < 4 + n) {
            char buf[4096];
            ssize_t r = ::recv(c.fd, buf, std::min(sizeof buf, 4 + n - c.in.size()), 0);
            if (r < 0 && errno == EINTR) continue;
            if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return true;
            if (r <= 0) {
                m_counters.inc("runtime.control.bad_request");
                return false;
            }
            c.in.append(buf, static_cast<size_t>(r));
        }
        std::string request = c.in.substr(4, n);
        std::string().swap(c.in);
        if (defer_list_sas(c, request)) return true;  // the worker builds the reply
        c.out = frame_reply(control_reply(request));
        c.replying = true;
    }
    if (c.waiting) return true;
    while (c.sent < c.out.size()) {
        ssize_t w = ::send(c.fd, c.out.data() + c.sent, c.out.size() - c.sent, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR) continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return true;  // the loop polls for POLLOUT
        if (w < 0) {
            logger()->debug("control reply: {}", std::strerror(errno));
            return false;
        }
        c.sent += static_cast<size_t>(w);
        c.deadline = m_clock.now() + kControlDeadlineMs;  // a client that keeps reading keeps its connection
    }
    return false;  // reply written
}

std::string IkeRuntime::frame_reply(std::string payload) {
    if (payload.size() > kMaxControlFrame) {
        m_counters.inc("runtime.control.error");
        payload = control_dump(nlohmann::json{{"ok", false}, {"error", "reply too large"}});
    }
    uint32_t len = static_cast<uint32_t>(payload.size());
    std::string out = {char(len >> 24), char(len >> 16), char(len >> 8), char(len)};
    out += payload;
    return out;
}

bool IkeRuntime::defer_list_sas(ControlConn& c, const std::string& request) {
    auto j = nlohmann::json::parse(request, nullptr, false);
    if (j.is_discarded() || !j.is_object()) return false;
    auto cmd = j.find("cmd");
    if (cmd == j.end() || !cmd->is_string() || cmd->get_ref<const std::string&>() != "list-sas") return false;
    // The snapshot is the only part on the loop: plain records, no JSON.
    std::vector<ike::IkeSaInfo> sas;
    try {
        sas = m_engine.list_sas();
    } catch (const std::exception&) {
        return false;  // answered the ordinary way, which reports the error
    }
    Millis now = m_clock.now();
    c.waiting = true;
    start_reply_job(c.id, [this, sas = std::move(sas), now]() -> std::string {
        try {
            // Any number of SAs: as many frames as it takes (control.hpp), written in one go.
            std::string out;
            for (auto& p : list_sas_payloads(sas, now)) out += frame_reply(std::move(p));
            return out;
        } catch (const std::exception& e) {
            m_counters.inc("runtime.control.error");
            logger()->error("control request 'list-sas' failed: {}", e.what());
            return frame_reply(
                control_dump(nlohmann::json{{"ok", false}, {"error", std::string("internal error: ") + e.what()}}));
        }
    });
    return true;
}

void IkeRuntime::start_reply_job(uint64_t conn_id, std::function<std::string()> job) {
    {
        std::lock_guard lock(m_mutex);
        m_jobs.emplace_back(conn_id, std::move(job));
    }
    if (!m_worker.joinable()) m_worker = std::thread([this] { reply_worker(); });
    m_worker_cv.notify_one();
}

void IkeRuntime::reply_worker() {
    std::unique_lock lock(m_mutex);
    for (;;) {
        m_worker_cv.wait(lock, [&] { return m_worker_stop || !m_jobs.empty(); });
        if (m_worker_stop) return;
        auto [id, job] = std::move(m_jobs.front());
        m_jobs.pop_front();
        lock.unlock();
        std::string out = job();
        lock.lock();
        m_replies.emplace_back(id, std::move(out));
        lock.unlock();
        wake();
        lock.lock();
    }
}

void IkeRuntime::accept_control(Millis now) {
    constexpr size_t kMaxControlClients = 16;
    for (;;) {
        int fd = ::accept4(m_control_fd, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (fd < 0) return;
        if (m_control_conns.size() >= kMaxControlClients) {
            m_counters.inc("runtime.control.refused");
            logger()->warn("control socket: {} clients already connected; refusing another (runtime.control.refused)",
                           kMaxControlClients);
            ::close(fd);
            continue;
        }
        ControlConn c;
        c.fd = fd;
        c.id = m_next_conn_id++;
        c.deadline = now + kControlDeadlineMs;
        if (service_control(c))
            m_control_conns.push_back(std::move(c));
        else
            ::close(fd);
    }
}

int IkeRuntime::run() {
    Millis now = m_clock.now();
    for (const auto& p : m_peers) {
        if (!p.auto_initiate) continue;
        if (auto st = m_engine.initiate(p.name, now); !st)
            logger()->error("initiating '{}': {}", p.name, st.error().detail());
    }
    std::vector<pollfd> fds;
    for (;;) {
        now = m_clock.now();
        // Calls from other threads and the replies the worker built.
        std::deque<PendingCall> calls;
        std::vector<std::pair<uint64_t, std::string>> replies;
        {
            std::lock_guard lock(m_mutex);
            calls.swap(m_calls);
            replies.swap(m_replies);
        }
        // Replies the worker built: written from here as the sockets take them (a connection
        // closed meanwhile, at its deadline, has its reply dropped).
        for (auto& [id, out] : replies)
            for (auto& c : m_control_conns)
                if (c.id == id && c.waiting) {  // ids are unique: one connection at most
                    c.out = std::move(out);
                    c.waiting = false;
                    c.replying = true;
                    c.deadline = now + kControlDeadlineMs;  // the worker's time is not the client's
                    break;
                }
        // Received datagrams, within the receive policy's budget (the rest waits for the next
        // round, after the timers and the control socket).
        bool thread_rx = false;
        {
            std::lock_guard lock(m_mutex);
            thread_rx = !m_rx.empty();
        }
        if (thread_rx) drain_rx();
        serve_rx();
        now = m_clock.now();
        for (auto& c : calls) {
            c.fn(m_engine, now);
            if (c.done) c.done->set_value();
        }
        // Lifetime events from the data plane's threads: soft -> rekey, hard -> delete, at once.
        if (size_t n = m_child_events.deliver(m_engine, now); n != 0) m_counters.inc("runtime.child_sa_events", n);
        if (m_stop_requested && !m_stopping) begin_shutdown(now);
        m_engine.tick(now);
        flush_engine(now);
        if (m_stopping) {
            if (m_engine.list_sas().empty()) break;
            if (now >= m_stop_deadline) {
                logger()->warn("shutdown: peers did not answer the deletes within {} ms; exiting anyway",
                               m_opts.shutdown_grace_ms);
                break;
            }
        }
        Millis timeout = kMaxPollMs;
        if (auto dl = m_engine.next_deadline()) timeout = std::clamp<Millis>(*dl - now, 0, kMaxPollMs);
        if (rx_pending()) timeout = 0;  // more queued than one round serves
        if (m_stopping) timeout = std::min<Millis>(timeout, std::max<Millis>(0, m_stop_deadline - now));
        for (const auto& c : m_control_conns)
            if (!c.waiting) timeout = std::min<Millis>(timeout, std::max<Millis>(0, c.deadline - now));

        fds.clear();
        fds.push_back({m_wake_fd, POLLIN, 0});
        fds.push_back({m_child_events.fd(), POLLIN, 0});  // drained at the top of the loop
        if (m_signal_fd >= 0) fds.push_back({m_signal_fd, POLLIN, 0});
        if (m_control_fd >= 0) fds.push_back({m_control_fd, POLLIN, 0});
        size_t first_ike = fds.size();
        for (const auto& s : m_ike_sockets) fds.push_back({s.fd(), POLLIN, 0});
        for (auto& t : m_natt)
            if (t->poll_fd() >= 0) fds.push_back({t->poll_fd(), POLLIN, 0});
        // Connections waiting for the reply worker are not polled (a hang-up would wake the loop
        // at once, again and again); their deadline still applies.
        size_t first_ctl = fds.size();
        std::vector<size_t> polled_ctl(m_control_conns.size(), SIZE_MAX);
        for (size_t k = 0; k < m_control_conns.size(); ++k) {
            const auto& c = m_control_conns[k];
            if (c.waiting) continue;
            polled_ctl[k] = fds.size() - first_ctl;
            fds.push_back({c.fd, static_cast<short>(c.replying ? POLLOUT : POLLIN), 0});
        }
        int n = ::poll(fds.data(), fds.size(), static_cast<int>(timeout));
        if (n < 0) {
            if (errno == EINTR) continue;
            logger()->error("poll: {}", std::strerror(errno));
            return 1;
        }
        {
            // Control connections: progress where the socket is ready, close the finished and
            // those past their deadline (runtime.control.timeout).
            Millis t = m_clock.now();
            std::vector<ControlConn> keep;
            for (size_t k = 0; k < m_control_conns.size(); ++k) {
                auto& c = m_control_conns[k];
                bool alive = true;
                if (n > 0 && polled_ctl[k] != SIZE_MAX && fds[first_ctl + polled_ctl[k]].revents != 0)
                    alive = service_control(c);
                if (alive && !c.waiting && t >= c.deadline) {
                    m_counters.inc("runtime.control.timeout");
                    logger()->debug("control client: deadline passed {}, closing", c.replying ? "writing" : "reading");
                    alive = false;
                }
                if (alive)
                    keep.push_back(std::move(c));
                else
                    ::close(c.fd);
            }
            m_control_conns.swap(keep);
        }
        if (n == 0) continue;
        size_t i = 0;
        if (fds[i++].revents & POLLIN) {
            uint64_t v;
            [[maybe_unused]] auto r = ::read(m_wake_fd, &v, sizeof v);
        }
        ++i;  // the Child SA event queue: take() at the top of the loop resets it
        if (m_signal_fd >= 0 && (fds[i++].revents & POLLIN)) {
            signalfd_siginfo si;
            if (::read(m_signal_fd, &si, sizeof si) == sizeof si) {
                logger()->info("signal {} received", si.ssi_signo == SIGINT ? "SIGINT" : "SIGTERM");
                if (m_stopping) {
                    logger()->warn("second signal: exiting without waiting for the peers");
                    return 0;
                }
                m_stop_requested = true;
            }
        }
        if (m_control_fd >= 0 && (fds[i++].revents & POLLIN)) accept_control(m_clock.now());
        // Readable sockets: drained into the receive queue (served at the top of the loop).
        bool readable = false;
        for (size_t k = first_ike; k < first_ctl; ++k) readable = readable || (fds[k].revents & POLLIN);
        if (readable) drain_rx();
    }
    logger()->info("stopped");
    return 0;
}

}  // namespace x2sec::runtime
