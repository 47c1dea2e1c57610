// The IKEv2 engine core: dispatch of received datagrams, the task manager (message IDs,
// retransmission, response cache, fragmentation), SA bookkeeping, timers.
#include <algorithm>
#include <cmath>
#include <ctime>
#include <x2sec/common/metrics.hpp>

#include "engine_internal.hpp"

namespace x2sec::ike {

using namespace wire;

EngineImpl::EngineImpl(EngineConfig config, ChildSaBackend& backend, Rng& rng)
    : m_config(std::move(config)),
      m_backend(backend),
      m_rng(rng),
      m_log(log::get("ike")),
      m_children(m_counters, m_log) {
    m_peer_index.rebuild(m_config.peers);
}

int64_t EngineImpl::unix_now() const {
    if (m_config.unix_time) return m_config.unix_time();
    return static_cast<int64_t>(::time(nullptr));
}

IkeSa* EngineImpl::find_sa(uint64_t id) {
    auto it = m_sas.find(id);
    if (it == m_sas.end()) return nullptr;
    touch(*it->second);  // the caller may change its timers
    return it->second.get();
}

IkeSa* EngineImpl::find_by_spi(uint64_t my_spi) {
    auto it = m_by_spi.find(my_spi);
    if (it == m_by_spi.end()) return nullptr;
    IkeSa* sa = find_sa(it->second);
    if (!sa || sa->state == SaState::Destroyed) return nullptr;
    uint64_t mine = sa->initiator ? sa->spi_i : sa->spi_r;
    return mine == my_spi ? sa : nullptr;
}

void EngineImpl::index_spi(IkeSa& sa) {
    uint64_t mine = sa.initiator ? sa.spi_i : sa.spi_r;
    if (mine) m_by_spi[mine] = sa.id;
}

std::string EngineImpl::source_key(const IpAddress& a) {
    std::string k(1, a.v6 ? '6' : '4');
    auto v = a.view();
    k.append(reinterpret_cast<const char*>(v.data()), v.size());
    return k;
}

std::string EngineImpl::init_key(uint64_t spi_i, const IpAddress& remote) {
    std::string k(reinterpret_cast<const char*>(&spi_i), sizeof spi_i);
    k.push_back(remote.v6 ? '6' : '4');
    auto v = remote.view();
    k.append(reinterpret_cast<const char*>(v.data()), v.size());
    return k;
}

IkeSa* EngineImpl::find_by_init(uint64_t spi_i, const IpAddress& remote) {
    auto it = m_by_init.find(init_key(spi_i, remote));
    if (it == m_by_init.end()) return nullptr;
    IkeSa* sa = find_sa(it->second);
    if (!sa || sa->initiator || sa->spi_i != spi_i || sa->remote.addr != remote) return nullptr;
    return sa;
}

void EngineImpl::reap(IkeSa& sa) {
    uint64_t mine = sa.initiator ? sa.spi_i : sa.spi_r;
    if (auto it = m_by_spi.find(mine); it != m_by_spi.end() && it->second == sa.id) m_by_spi.erase(it);
    if (!sa.initiator)
        if (auto it = m_by_init.find(init_key(sa.spi_i, sa.remote.addr)); it != m_by_init.end() && it->second == sa.id)
            m_by_init.erase(it);
    while (!sa.children.empty()) {
        uint32_t spi_in = sa.children.back().spi_in;
        detach_child(sa, std::prev(sa.children.end()));
        m_child_spis.erase(spi_in);
    }
}

ChildSa& EngineImpl::attach_child(IkeSa& sa, ChildSa child) {
    touch(sa);
    return m_children.attach(sa, std::move(child));
}

ChildSa EngineImpl::detach_child(IkeSa& sa, std::vector<ChildSa>::iterator it) {
    touch(sa);
    return m_children.detach(sa, it);
}

void EngineImpl::move_children(IkeSa& from, IkeSa& to) {
    while (!from.children.empty()) attach_child(to, detach_child(from, from.children.begin()));
    from.children_moved_to = to.id;
}

IkeSa* EngineImpl::child_owner(uint32_t spi_in) {
    auto id = m_children.owner(spi_in);
    return id ? find_sa(*id) : nullptr;
}

Status EngineImpl::check_indexes() const {
    auto bad = [](std::string what) { return Error(ErrorDomain::Ike, 0, std::move(what)); };
    const auto& owners = m_children.index();
    size_t held = 0;
    for (const auto& [id, sa] : m_sas)
        for (const auto& c : sa->children) {
            ++held;
            auto it = owners.find(c.spi_in);
            if (it == owners.end())
                return bad(fmt::format("Child SA {:08x} of IKE SA #{} is missing from the owner index", c.spi_in, id));
            if (it->second != id)
                return bad(
                    fmt::format("Child SA {:08x} of IKE SA #{} is indexed under IKE SA #{}", c.spi_in, id, it->second));
            if (!m_child_spis.count(c.spi_in))
                return bad(fmt::format("Child SA {:08x} of IKE SA #{} is not among the SPIs handed out", c.spi_in, id));
        }
    if (held != owners.size())
        for (const auto& [spi, id] : owners) {
            auto sa = m_sas.find(id);
            bool holds = sa != m_sas.end() && std::any_of(sa->second->children.begin(), sa->second->children.end(),
                                                          [&, s = spi](const ChildSa& c) { return c.spi_in == s; });
            if (!holds)
                return bad(
                    fmt::format("owner index entry {:08x} -> IKE SA #{}: that IKE SA holds no such Child SA", spi, id));
        }
    if (held != owners.size())
        return bad(fmt::format("{} Child SAs held but {} owner index entries", held, owners.size()));
    // Every SPI handed out is held by a Child SA or reserved by an exchange in flight.
    size_t reserved = 0;
    auto count_reserved = [&](const Exchange& ex) {
        for (const auto& t : ex.tasks)
            if (uint32_t s = t->reserved_child_spi(); s != 0 && !owners.count(s)) ++reserved;
    };
    for (const auto& [id, sa] : m_sas) {
        if (sa->outstanding) count_reserved(sa->outstanding->exchange);
        for (const auto& ex : sa->queue) count_reserved(ex);
    }
    if (m_child_spis.size() != held + reserved)
        return bad(fmt::format("{} inbound Child SPIs handed out, but {} Child SAs held and {} reserved in flight",
                               m_child_spis.size(), held, reserved));
    return {};
}

uint64_t EngineImpl::new_ike_spi() {
    // Also avoids the SPIs of destroyed SAs not reaped yet.
    for (;;) {
        uint64_t s = m_rng.u64();
        if (s != 0 && !m_by_spi.count(s)) return s;
    }
}

Result<crypto::DhKeyPair> EngineImpl::make_dh(crypto::DhGroup g) {
    // One path for every Rng: the private value is drawn from the injected Rng (OsRng, i.e.
    // OpenSSL's DRBG, in production; a seeded DeterministicRng in tests, so exchanges replay
    // exactly) and turned into a key pair by DhKeyPair::from_private, which for the EC groups
    // is OpenSSL's keygen from the cached curve fed that value (no EC_GROUP rebuild).
    size_t len = 32;
    if (g == crypto::DhGroup::Ecp384) len = 48;
    Error last = Error(ErrorDomain::Crypto, 0, "no DH key pair");
    for (int attempt = 0; attempt < 4; ++attempt) {
        SecureBytes priv(len);
        m_rng.fill(priv.span());
        if (g == crypto::DhGroup::Ecp256 || g == crypto::DhGroup::Ecp384) priv[0] &= 0x7f;  // below the group order
        if (g == crypto::DhGroup::Modp2048) priv[0] |= 0x80;                                // a full 256-bit exponent
        auto kp = crypto::DhKeyPair::from_private(g, priv);
        if (kp.ok()) return kp;
        last = std::move(kp).error();  // only an all-zero draw (or OpenSSL failing) gets here
    }
    m_counters.inc("ike.dh.keygen_failed");
    return last;
}

uint32_t EngineImpl::new_child_spi() {
    for (;;) {
        uint32_t s = m_rng.u32();
        if (s < 0x100) continue;
        if (m_child_spis.insert(s).second) return s;
    }
}

IkeSa& EngineImpl::new_sa(size_t peer_idx, bool initiator, Millis now) {
    auto sa = std::make_unique<IkeSa>();
    sa->id = m_next_id++;
    sa->peer_idx = peer_idx;
    sa->initiator = initiator;
    sa->created_at = now;
    sa->last_rx = now;
    const auto& p = m_config.peers[peer_idx];
    sa->local = Endpoint{p.local_addr, p.local_port};
    sa->remote = Endpoint{p.remote_addr, p.remote_port};
    sa->local_id_text = p.local_id.to_string();
    IkeSa& ref = *sa;
    m_sas.emplace(ref.id, std::move(sa));
    touch(ref);
    return ref;
}

void EngineImpl::event(const IkeSa& sa, Event::Kind k, int code, std::string detail) {
    Event e;
    e.kind = k;
    e.peer = peer(sa).name;
    e.ike_sa_id = sa.id;
    e.code = code;
    e.detail = std::move(detail);
    // The code only where it means something (a notify type, a failure reason).
    m_log->info("IKE SA #{} ({}): event {}{} {}", sa.id, e.peer, to_string(k),
                code ? fmt::format(" code {}", code) : "", e.detail);
    // For /metrics: every event by kind ("ike.event.IKE_SA_UP"), and the setup time of each IKE
    // SA from its first message to IKE_SA_UP.
    m_counters.inc(std::string("ike.event.") + to_string(k));
    if (k == Event::Kind::IkeSaUp && sa.established_at >= sa.created_at)
        metrics::registry().observe("ike.setup_seconds", double(sa.established_at - sa.created_at) / 1000.0);
    m_events.push_back(std::move(e));
}

void EngineImpl::drop(const Datagram& d, const std::string& counter, const std::string& why) {
    count(counter);
    // One warning per datagram let a power cut or a flood write tens of thousands of lines
    // (docs/bench-ike.md "A SeGW at scale"): warn at the 1st, 2nd, 4th, 8th ... drop of each
    // kind (with the running count), the rest at debug; the counter has every one.
    const uint64_t n = m_counters.get("ike.rx." + counter);
    if ((n & (n - 1)) == 0)
        m_log->warn("dropped message from {}: {} (ike.rx.{}, {} so far)", d.remote.to_string(), why, counter, n);
    else
        m_log->debug("dropped message from {}: {} (ike.rx.{}, {} so far)", d.remote.to_string(), why, counter, n);
}

void EngineImpl::remove_child(IkeSa& sa, uint32_t spi_in, bool notify_event, const std::string& why) {
    auto it =
        std::find_if(sa.children.begin(), sa.children.end(), [&](const ChildSa& c) { return c.spi_in == spi_in; });
    if (it == sa.children.end()) return;
    if (it->installed) {
        auto st = m_backend.remove(spi_in);
        if (!st.ok()) m_log->warn("Child SA {:08x}: backend remove failed: {}", spi_in, st.error().to_string());
    }
    if (notify_event) event(sa, Event::Kind::ChildSaDown, 0, it->name + " " + why);
    detach_child(sa, it);
    m_child_spis.erase(spi_in);
}

void EngineImpl::destroy(IkeSa& sa, Millis now, bool remove_children, const std::string& why) {
    if (sa.state == SaState::Destroyed) return;
    if (sa.outstanding) {
        for (auto& t : sa.outstanding->exchange.tasks) t->abort(*this, sa, now);
        sa.outstanding.reset();
    }
    for (auto& ex : sa.queue)
        for (auto& t : ex.tasks) t->abort(*this, sa, now);
    sa.queue.clear();
    if (remove_children) {
        std::vector<uint32_t> spis;
        for (auto& c : sa.children) spis.push_back(c.spi_in);
        for (auto s : spis) remove_child(sa, s, true, "(IKE SA gone)");
    }
    bool was_up = sa.up() && sa.state != SaState::Rekeyed;
    (void)transition(sa, SaState::Destroyed, now);  // legal from every state
    if (was_up) event(sa, Event::Kind::IkeSaDown, 0, why);
}

ChildSa* EngineImpl::child_by_in(IkeSa& sa, uint32_t spi_in) {
    for (auto& c : sa.children)
        if (c.spi_in == spi_in) return &c;
    return nullptr;
}
ChildSa* EngineImpl::child_by_out(IkeSa& sa, uint32_t spi_out) {
    for (auto& c : sa.children)
        if (c.spi_out == spi_out) return &c;
    return nullptr;
}

size_t EngineImpl::half_open_count() const {
    return m_half_open;
}

// ---------------------------------------------------------------- sending

void EngineImpl::send_packets(IkeSa& sa, const std::vector<Bytes>& packets) {
    for (const auto& p : packets) {
        Datagram d;
        d.local = sa.local;
        d.remote = sa.remote;
        d.data = p;
        d.non_esp_marker = sa.natt_port;
        m_out.push_back(std::move(d));
    }
}

Result<std::vector<Bytes>> EngineImpl::protect(IkeSa& sa, Header h, std::vector<Payload> payloads) {
    if (!sa.cipher_out) return Error(ErrorDomain::Ike, 0, "no keys to protect the message");
    // Written in the order of the exchange's rule (the tasks of an exchange append theirs).
    if (const MessageRule* rule = find_rule(h.exchange, (h.flags & kFlagResponse) != 0))
        order_payloads(*rule, payloads);
    Writer inner;
    uint8_t first = encode_chain(inner, payloads);
    const Bytes& pt = inner.data();
    auto& c = *sa.cipher_out;
    const auto& pc = peer(sa);
    size_t limit = pc.fragment_size;
    size_t overhead = (sa.remote.addr.v6 ? 40 : 20) + 8 + (sa.natt_port ? 4 : 0);
    limit = limit > overhead ? limit - overhead : 0;
    std::vector<Bytes> out;
    size_t whole = kHeaderSize + kGenericHeaderSize + c.sealed_size(pt.size());
    bool fragment = pc.fragmentation && sa.peer_frag && whole > limit && h.exchange != ExchangeType::IkeSaInit;
    if (!fragment) {
        Writer w;
        h.next_payload = static_cast<uint8_t>(PayloadType::SK);
        h.length = static_cast<uint32_t>(whole);
        h.encode(w);
        w.u8(first);
        w.u8(0);
        w.u16(static_cast<uint16_t>(kGenericHeaderSize + c.sealed_size(pt.size())));
        X2SEC_TRY(auto sealed, c.seal(w.data(), pt, m_rng));
        w.bytes(sealed);
        out.push_back(w.take());
        return out;
    }
    size_t avail = limit > kHeaderSize + 8 ? limit - kHeaderSize - 8 : 0;
    size_t chunk = avail;
    while (chunk > 0 && c.sealed_size(chunk) > avail) --chunk;
    if (chunk == 0) return Error(ErrorDomain::Ike, 0, "fragment size too small");
    size_t total = (pt.size() + chunk - 1) / chunk;
    if (total > 0xffff || total > m_config.max_fragments)
        return Error(ErrorDomain::Ike, 0, "message needs " + std::to_string(total) + " fragments");
    for (size_t i = 0; i < total; ++i) {
        size_t off = i * chunk, len = std::min(chunk, pt.size() - off);
        BytesView part(pt.data() + off, len);
        Writer w;
        h.next_payload = static_cast<uint8_t>(PayloadType::SKF);
        h.length = static_cast<uint32_t>(kHeaderSize + 8 + c.sealed_size(len));
        h.encode(w);
        w.u8(i == 0 ? first : 0);
        w.u8(0);
        w.u16(static_cast<uint16_t>(8 + c.sealed_size(len)));
        w.u16(static_cast<uint16_t>(i + 1));
        w.u16(static_cast<uint16_t>(total));
        X2SEC_TRY(auto sealed, c.seal(w.data(), part, m_rng));
        w.bytes(sealed);
        out.push_back(w.take());
    }
    m_counters.inc("ike.tx.fragments", out.size());
    return out;
}

void EngineImpl::send_response(IkeSa& sa, ExchangeType type, uint32_t mid, const std::vector<Payload>& payloads) {
    Header h;
    h.spi_i = sa.spi_i;
    h.spi_r = sa.spi_r;
    h.exchange = type;
    h.flags = static_cast<uint8_t>(kFlagResponse | (sa.initiator ? kFlagInitiator : 0));
    h.message_id = mid;
    auto packets = protect(sa, h, payloads);
    if (!packets.ok()) {
        m_log->error("IKE SA #{}: cannot protect {} response: {}", sa.id, to_string(type), packets.error().to_string());
        return;
    }
    sa.cached = CachedResponse{mid, *packets};
    send_packets(sa, *packets);
}

void EngineImpl::send_error_response(IkeSa& sa, ExchangeType type, uint32_t mid, uint16_t notify_type, Bytes data) {
    std::vector<Payload> pl;
    pl.push_back({PayloadType::Notify, false, NotifyPayload{ProtocolId::None, {}, notify_type, std::move(data)}});
    send_response(sa, type, mid, pl);
}

bool EngineImpl::allow_unprotected_answer(Millis now) {
    if (m_config.max_unprotected_notifies_per_s == 0) {
        count("unprotected_notify_disabled");
        return false;
    }
    if (m_unprot_window_start < 0 || now - m_unprot_window_start >= 1000) {
        m_unprot_window_start = now;
        m_unprot_in_window = 0;
    }
    if (m_unprot_in_window >= m_config.max_unprotected_notifies_per_s) {
        count("unprotected_notify_rate_limited");
        return false;
    }
    ++m_unprot_in_window;
    return true;
}

void EngineImpl::send_unprotected_notify(const Datagram& d, const Header& req, uint16_t notify_type, Bytes data) {
    Message m;
    m.header = req;
    m.header.version = 0x20;  // we speak IKEv2.0 (RFC 7296 2.5; also the answer to a higher major version)
    m.header.flags = static_cast<uint8_t>(kFlagResponse | (req.initiator() ? 0 : kFlagInitiator));
    m.header.exchange = req.exchange;
    m.payloads.push_back(
        {PayloadType::Notify, false, NotifyPayload{ProtocolId::None, {}, notify_type, std::move(data)}});
    Datagram out;
    out.local = d.local;
    out.remote = d.remote;
    out.non_esp_marker = d.non_esp_marker;
    out.data = m.encode();
    m_out.push_back(std::move(out));
}

// ---------------------------------------------------------------- task manager

void EngineImpl::queue_exchange(IkeSa& sa, Exchange ex, Millis now) {
    sa.queue.push_back(std::move(ex));
    start_next(sa, now);
}

void EngineImpl::start_next(IkeSa& sa, Millis now) {
    touch(sa);
    while (!sa.outstanding && !sa.queue.empty() && sa.state != SaState::Destroyed) {
        Exchange ex = std::move(sa.queue.front());
        sa.queue.pop_front();
        // An encrypted exchange needs keys; a rekeyed or deleting SA runs only deletes.
        std::vector<Payload> payloads;
        bool failed = false;
        for (auto& t : ex.tasks) {
            auto st = t->build(*this, sa, payloads, now);
            if (!st.ok()) {
                m_log->warn("IKE SA #{}: task {} not started: {}", sa.id, t->name(), st.error().to_string());
                failed = true;
                break;
            }
        }
        if (failed) {
            for (auto& t : ex.tasks) t->abort(*this, sa, now);
            continue;
        }
        if (sa.state == SaState::Destroyed) return;
        Header h;
        h.spi_i = sa.spi_i;
        h.spi_r = sa.spi_r;
        h.exchange = ex.type;
        h.flags = sa.initiator ? kFlagInitiator : 0;
        h.message_id = sa.my_mid;
        Outstanding o;
        o.mid = sa.my_mid;
        if (ex.type == ExchangeType::IkeSaInit) {
            Message m;
            m.header = h;
            m.payloads = std::move(payloads);
            order_payloads(*find_rule(ExchangeType::IkeSaInit, false), m.payloads);
            o.packets.push_back(m.encode());
            sa.init_req = o.packets.front();
            o.unprotected = true;
        } else {
            auto packets = protect(sa, h, std::move(payloads));
            if (!packets.ok()) {
                m_log->error("IKE SA #{}: cannot protect {} request: {}", sa.id, to_string(ex.type),
                             packets.error().to_string());
                for (auto& t : ex.tasks) t->abort(*this, sa, now);
                continue;
            }
            o.packets = std::move(packets).value();
        }
        o.exchange = std::move(ex);
        o.next_retransmit = now + m_config.retransmit.timeout_ms;
        m_log->debug("IKE SA #{}: sending {} request #{}", sa.id, to_string(o.exchange.type), o.mid);
        send_packets(sa, o.packets);
        sa.outstanding = std::move(o);
    }
}

void EngineImpl::fail_outstanding(IkeSa& sa, Millis now, const std::string& why) {
    if (!sa.outstanding) return;
    for (auto& t : sa.outstanding->exchange.tasks) t->abort(*this, sa, now);
    sa.outstanding.reset();
    m_log->warn("IKE SA #{}: exchange failed: {}", sa.id, why);
}

// ---------------------------------------------------------------- receiving

void EngineImpl::handle_datagram(const Datagram& d, Millis now) {
    if (d.data.size() > m_config.max_message_size) {
        drop(
            d, "oversized",
            std::to_string(d.data.size()) + " octets exceed the limit of " + std::to_string(m_config.max_message_size));
        return;
    }
    auto decoded = Message::decode(d.data);
    if (!decoded.ok()) {
        const auto& e = decoded.error();
        // Before the header is known we cannot answer safely; count and drop.  Unsupported
        // critical payloads in an IKE_SA_INIT request are answered below.
        auto hdr = Header::decode(d.data);
        if (hdr.ok() && e.code() == notify::UnsupportedCriticalPayload && hdr->exchange == ExchangeType::IkeSaInit &&
            !hdr->response() && hdr->spi_r == 0) {
            auto t = critical_payload_type(e);
            drop(d, "unsupported_critical_payload", e.detail());
            send_unprotected_notify(d, *hdr, notify::UnsupportedCriticalPayload, t ? Bytes{*t} : Bytes{});
            return;
        }
        if (e.code() == notify::InvalidMajorVersion) {
            drop(d, "invalid_major_version", e.detail());
            // RFC 7296 2.5: a request of a higher major version is answered (rate limited) with an
            // unauthenticated INVALID_MAJOR_VERSION carrying our version in the header.
            if (d.data.size() >= kHeaderSize && (d.data[17] >> 4) > 2 && !(d.data[19] & kFlagResponse)) {
                Bytes patched(d.data.begin(), d.data.end());
                patched[17] = 0x20;
                auto h = Header::decode(patched);
                if (h.ok() && allow_unprotected_answer(now))
                    send_unprotected_notify(d, *h, notify::InvalidMajorVersion, {});
            }
            return;
        }
        if (e.code() == notify::UnsupportedCriticalPayload)
            drop(d, "unsupported_critical_payload", e.detail());
        else
            drop(d, "invalid_syntax", e.detail());
        return;
    }
    auto& m = *decoded;
    uint8_t ex = static_cast<uint8_t>(m.header.exchange);
    if (ex < 34 || ex > 37) {
        drop(d, "unknown_exchange", "exchange type " + std::to_string(ex));
        return;
    }
    if (m.header.exchange == ExchangeType::IkeSaInit) {
        if (!m.header.response())
            handle_init_request(d, m, now);
        else
            handle_init_response(d, m, now);
        return;
    }
    handle_protected(d, m, now);
}

namespace {

struct Inbound {
    std::vector<Payload> payloads;
    bool complete = false;
};

}  // namespace

void EngineImpl::handle_protected(const Datagram& d, Message& m, Millis now) {
    const Header& h = m.header;
    uint64_t my_spi = h.initiator() ? h.spi_r : h.spi_i;
    IkeSa* sa = find_by_spi(my_spi);
    if (!sa || (h.initiator() ? sa->spi_i != h.spi_i : sa->spi_r != h.spi_r) || h.initiator() == sa->initiator ||
        !sa->cipher_in) {
        drop(d, "invalid_ike_spi", fmt::format("no IKE SA for SPIs {:016x}/{:016x}", h.spi_i, h.spi_r));
        if (!h.response() && !(sa && h.initiator() == sa->initiator) && allow_unprotected_answer(now))
            send_unprotected_notify(d, h, notify::InvalidIkeSpi, {});
        return;
    }
    if (m.payloads.empty() ||
        (m.payloads.back().type != PayloadType::SK && m.payloads.back().type != PayloadType::SKF) ||
        m.payloads.size() != 1) {
        drop(d, "invalid_syntax", std::string(to_string(h.exchange)) + " without a lone SK payload");
        return;
    }
    // Message ID window (RFC 7296 2.3, window size 1).
    bool response = h.response();
    if (!response) {
        if (h.message_id + 1 == sa->peer_mid && sa->cached && sa->cached->mid == h.message_id) {
            auto* skf = m.payloads.back().as<SkfPayload>();
            if (!skf || skf->number == 1) {
                count("retransmit");
                m_log->info("IKE SA #{}: retransmitted {} request #{} from {}, resending response", sa->id,
                            to_string(h.exchange), h.message_id, d.remote.to_string());
                send_packets(*sa, sa->cached->packets);
            }
            return;
        }
        if (h.message_id != sa->peer_mid) {
            out_of_window_request(*sa, d, m, now);
            return;
        }
    } else if (!sa->outstanding || sa->outstanding->mid != h.message_id ||
               sa->outstanding->exchange.type != h.exchange) {
        drop(d, "invalid_message_id", "unexpected response #" + std::to_string(h.message_id));
        return;
    }
    // Decrypt (one SK, or reassemble SKF fragments).
    size_t aad_len = kHeaderSize + (m.payloads.back().type == PayloadType::SKF ? 8 : kGenericHeaderSize);
    BytesView aad(d.data.data(), aad_len);
    std::vector<Payload> inner;
    // Decodes the decrypted inner payload chain; on failure drops the message, counts it and
    // answers a request with INVALID_SYNTAX or UNSUPPORTED_CRITICAL_PAYLOAD.
    auto decode_inner = [&](BytesView plain, uint8_t first_next) -> bool {
        auto chain = decode_chain(plain, first_next);
        if (!chain.ok()) {
            auto& e = chain.error();
            bool critical = e.code() == notify::UnsupportedCriticalPayload;
            drop(d, critical ? "unsupported_critical_payload" : "invalid_syntax", e.detail());
            if (!response) {
                sa->peer_mid++;
                auto t = critical_payload_type(e);
                send_error_response(*sa, h.exchange, h.message_id,
                                    critical ? notify::UnsupportedCriticalPayload : notify::InvalidSyntax,
                                    critical && t ? Bytes{*t} : Bytes{});
            }
            return false;
        }
        inner = std::move(chain).value();
        return true;
    };
    if (auto* sk = m.payloads.back().as<SkPayload>()) {
        auto pt = sa->cipher_in->open(aad, sk->data);
        if (!pt.ok()) {
            drop(d, "integrity_check_failed", pt.error().detail());
            return;
        }
        if (!decode_inner(*pt, sk->inner_next)) return;
    } else {
        auto* skf = m.payloads.back().as<SkfPayload>();
        if (!skf) {  // the lone payload is SK or SKF (checked above); never dereferenced unchecked
            drop(d, "invalid_syntax", std::string(to_string(h.exchange)) + " without a lone SK or SKF payload");
            return;
        }
        auto pt = sa->cipher_in->open(aad, skf->data);
        if (!pt.ok()) {
            drop(d, "integrity_check_failed", "fragment " + std::to_string(skf->number) + ": " + pt.error().detail());
            return;
        }
        Reassembly& r = response ? sa->frag_resp : sa->frag_req;
        if (!r.active || r.mid != h.message_id) {
            r.reset();
            r.active = true;
            r.mid = h.message_id;
            r.total = skf->total;
        }
        if (skf->total != r.total) {
            if (skf->total < r.total) {
                drop(d, "fragment_mismatch",
                     "fragment total " + std::to_string(skf->total) + " < " + std::to_string(r.total));
                return;
            }
            r.reset();
            r.active = true;
            r.mid = h.message_id;
            r.total = skf->total;
        }
        if (r.total > m_config.max_fragments) {
            drop(d, "fragment_limit", std::to_string(r.total) + " fragments announced");
            r.reset();
            return;
        }
        if (!r.parts.count(skf->number)) {
            r.bytes += pt->size();
            if (skf->number == 1) r.first_next = skf->inner_next;
            r.parts.emplace(skf->number, std::move(pt).value());
        }
        if (r.bytes > m_config.max_message_size) {
            drop(d, "fragment_limit", "reassembled message exceeds " + std::to_string(m_config.max_message_size));
            r.reset();
            return;
        }
        if (r.parts.size() < r.total) return;  // wait for more
        Bytes whole;
        for (auto& [n, part] : r.parts) whole.insert(whole.end(), part.begin(), part.end());
        uint8_t first = r.first_next;
        r.reset();
        m_counters.inc("ike.rx.reassembled");
        if (!decode_inner(whole, first)) return;
    }
    // Authenticated: track liveness and NAT mapping changes.
    sa->last_rx = now;
    bool floated = d.non_esp_marker && !sa->natt_port;
    if (floated) sa->natt_port = true;
    if ((floated || sa->nat_local || sa->nat_remote || sa->encap) && (d.remote != sa->remote || d.local != sa->local)) {
        m_log->info("IKE SA #{}: peer moved {} -> {}", sa->id, sa->remote.to_string(), d.remote.to_string());
        sa->remote = d.remote;
        sa->local = d.local;
    }
    const MessageRule* rule = find_rule(h.exchange, response);
    auto st = rule ? check_rules(*rule, inner) : Result<Checked>(syntax_error("no rule"));
    if (!st.ok()) {
        drop(d, "invalid_syntax", st.error().detail());
        if (!response) {
            sa->peer_mid++;
            send_error_response(*sa, h.exchange, h.message_id, notify::InvalidSyntax);
            if (h.exchange == ExchangeType::IkeAuth) destroy(*sa, now, true, "invalid IKE_AUTH request");
        } else {
            fail_outstanding(*sa, now, st.error().detail());
            if (h.exchange == ExchangeType::IkeAuth) destroy(*sa, now, true, "invalid IKE_AUTH response");
        }
        return;
    }
    if (!response)
        process_request(*sa, d, h, *st, now);
    else
        process_response(*sa, h, *st, now);
}

// RFC 7296 2.3 and 3.10.1: a request outside the window is never processed nor acknowledged.
// Sending INVALID_MESSAGE_ID is optional and must be rate limited; it goes in a new
// INFORMATIONAL request of ours.  To give no amplification to spoofed or replayed traffic it is
// sent only when the IKE SA is established, the Message ID is ahead of the window (a peer whose
// counter ran ahead; a lower one is a stale duplicate whose response the peer already had), the
// request passes the integrity check, no such notify is pending and none was sent on this SA
// within EngineConfig::invalid_mid_notify_interval_ms.  Everything else is dropped silently.
// Each case is counted (ike.rx.invalid_message_id, plus ike.tx.invalid_message_id when
// answered, ike.tx.invalid_message_id_suppressed when rate limited,
// ike.rx.invalid_message_id_unauthenticated when the ICV failed) and logged with the peer.
void EngineImpl::out_of_window_request(IkeSa& sa, const Datagram& d, const Message& m, Millis now) {
    const Header& h = m.header;
    count("invalid_message_id");
    std::string what = fmt::format("{} request #{} outside the window (expected #{}) on IKE SA #{}",
                                   to_string(h.exchange), h.message_id, sa.peer_mid, sa.id);
    std::string silent;
    bool established = sa.state == SaState::Established || sa.state == SaState::Rekeying;
    if (!established)
        silent = "IKE SA not established";
    else if (h.message_id < sa.peer_mid)
        silent = "behind the window (stale duplicate)";
    else if (m_config.invalid_mid_notify_interval_ms <= 0)
        silent = "INVALID_MESSAGE_ID notifies disabled";
    else if (sa.invalid_mid_pending)
        silent = "an INVALID_MESSAGE_ID notify is already pending";
    else if (sa.invalid_mid_notified_at &&
             now - *sa.invalid_mid_notified_at < m_config.invalid_mid_notify_interval_ms) {
        silent = "INVALID_MESSAGE_ID rate limit";
        m_counters.inc("ike.tx.invalid_message_id_suppressed");
    } else if (m.payloads.size() != 1 ||
               (m.payloads.back().type != PayloadType::SK && m.payloads.back().type != PayloadType::SKF)) {
        silent = "no lone SK payload";
    } else {
        const Payload& p = m.payloads.back();
        bool frag = p.type == PayloadType::SKF;
        size_t aad_len = kHeaderSize + (frag ? 8 : kGenericHeaderSize);
        const SkfPayload* skf = p.as<SkfPayload>();
        const SkPayload* sk = p.as<SkPayload>();
        const Bytes* sealed = skf ? &skf->data : sk ? &sk->data : nullptr;
        auto pt = sealed ? sa.cipher_in->open(BytesView(d.data.data(), aad_len), *sealed)
                         : Result<Bytes>(syntax_error("no SK or SKF body"));
        if (!pt.ok()) {
            count("invalid_message_id_unauthenticated");
            silent = "integrity check failed (" + pt.error().detail() + ")";
        }
    }
    if (!silent.empty()) {
        m_log->warn("dropped message from {}: {}; not answered: {} (invalid_message_id)", d.remote.to_string(), what,
                    silent);
        return;
    }
    m_log->warn("message from {}: {}; answering INVALID_MESSAGE_ID in an INFORMATIONAL request (invalid_message_id)",
                d.remote.to_string(), what);
    m_counters.inc("ike.tx.invalid_message_id");
    sa.invalid_mid_notified_at = now;
    sa.invalid_mid_pending = true;
    queue_exchange(sa, make_invalid_mid_exchange(h.message_id), now);
}

void EngineImpl::release_setup_state(IkeSa& sa) {
    // What only IKE_SA_INIT and IKE_AUTH needed (a SeGW holds tens of thousands of SAs; docs/
    // bench-ike.md "Heap per IKE SA"): our DH key pair (the keys are derived), the nonces and
    // the IKE_SA_INIT messages (AUTH is done; IKE SA rekeys bring their own), the candidate
    // peer configs (IKE_AUTH chose one).  The IKE_AUTH response stays cached for retransmits.
    sa.dh.reset();
    Bytes().swap(sa.ni);
    Bytes().swap(sa.nr);
    Bytes().swap(sa.init_req);
    Bytes().swap(sa.init_resp);
    Bytes().swap(sa.cookie);
}

void EngineImpl::process_request(IkeSa& sa, const Datagram&, const Header& h, const Checked& in, Millis now) {
    sa.peer_mid++;
    switch (h.exchange) {
        case ExchangeType::IkeAuth:
            if (sa.initiator || sa.state != SaState::Connecting) {
                m_log->warn("IKE SA #{}: unexpected IKE_AUTH request", sa.id);
                send_error_response(sa, h.exchange, h.message_id, notify::InvalidSyntax);
                return;
            }
            respond_ike_auth(sa, h.message_id, in, now);
            if (sa.state == SaState::Established) release_setup_state(sa);
            return;
        case ExchangeType::CreateChildSa:
            if (!sa.up()) {
                send_error_response(sa, h.exchange, h.message_id, notify::InvalidSyntax);
                return;
            }
            respond_create_child(sa, h.message_id, in, now);
            return;
        case ExchangeType::Informational:
            // Counted so a peer's liveness checks (RFC 7296 2.4: an empty INFORMATIONAL request)
            // are visible in the counters and the log.
            count("informational_request");
            if (in.all().empty()) {
                count("liveness_check");
                m_log->debug("IKE SA #{} ({}): liveness check (empty INFORMATIONAL request #{}) from {}, answering",
                             sa.id, peer(sa).name, h.message_id, sa.remote.to_string());
            }
            respond_informational(sa, h.message_id, in, now);
            return;
        default:
            return;
    }
}

namespace {
const char* purpose_counter(ResponsePurpose p) {
    switch (p) {
        case ResponsePurpose::IkeSaInit:
            return "ike_sa_init_response";
        case ResponsePurpose::IkeAuth:
            return "ike_auth_response";
        case ResponsePurpose::AuthChild:
            return "ike_auth_child_response";
        case ResponsePurpose::CreateChild:
            return "create_child_response";
        case ResponsePurpose::RekeyIke:
            return "rekey_ike_response";
        case ResponsePurpose::CreateChildRequest:
            return "create_child_request";
    }
    return "response";
}
}  // namespace

void EngineImpl::refuse_response(IkeSa& sa, Task& t, ResponsePurpose purpose, const Error& why, Millis now) {
    const char* kind = why.code() == notify::TsUnacceptable     ? "ts_unacceptable"
                       : why.code() == notify::NoProposalChosen ? "no_proposal_chosen"
                                                                : "invalid_syntax";
    std::string counter = std::string("ike.rx.") + kind + "." + purpose_counter(purpose);
    m_counters.inc(counter);
    m_log->error("IKE SA #{} ({}): {} from {} refused, {}: {}; giving up the exchange ({})", sa.id, peer(sa).name,
                 to_string(purpose), sa.remote.to_string(), notify::name(static_cast<uint16_t>(why.code())),
                 why.detail(), counter);
    t.refuse(*this, sa, why, now);
}

void EngineImpl::process_response(IkeSa& sa, const Header&, const Checked& in, Millis now) {
    Outstanding o = std::move(*sa.outstanding);
    sa.outstanding.reset();
    sa.my_mid++;
    uint64_t id = sa.id;
    size_t done = 0;  // tasks that ran (processed, refused or failed)
    for (; done < o.exchange.tasks.size(); ++done) {
        auto& t = o.exchange.tasks[done];
        IkeSa* cur = find_sa(id);
        if (!cur || cur->state == SaState::Destroyed) break;
        // What the task reads (its purpose's rule: required payloads, or an error answer) is
        // checked here, once, before the task reads any.
        std::optional<Result<Checked>> own;
        if (auto purpose = t->purpose()) {
            own = check_rules(purpose_rule(*purpose), in.all());
            if (!own->ok()) {
                refuse_response(*cur, *t, *purpose, own->error(), now);
                continue;
            }
        }
        auto st = t->process(*this, *cur, own ? **own : in, now);
        if (!st.ok() && !(st.error().domain() == ErrorDomain::Ike && st.error().code() == -1))  // -1: SA gone
            m_log->warn("IKE SA #{}: task {} failed: {}", id, t->name(), st.error().to_string());
    }
    // The SA went with a task (an IKE_AUTH refused, a response that ended it): the tasks after it
    // never ran; they give back what they hold (a Child SPI reserved for the IKE_AUTH Child SA).
    // destroy() could not reach them: the exchange had already left sa.outstanding.
    if (IkeSa* cur = find_sa(id))
        for (size_t j = done; j < o.exchange.tasks.size(); ++j) o.exchange.tasks[j]->abort(*this, *cur, now);
    if (IkeSa* cur = find_sa(id)) start_next(*cur, now);
}

// ---------------------------------------------------------------- timers

void EngineImpl::schedule_rekeys(IkeSa& sa, Millis now) {
    const auto& p = peer(sa);
    touch(sa);
    if (p.ike_rekey_seconds) {
        Millis base = static_cast<Millis>(p.ike_rekey_seconds) * 1000;
        Millis jitter = static_cast<Millis>(m_rng.u32() % (base / 10 + 1));
        sa.rekey_at = now + base - jitter;
    }
}

void EngineImpl::child_sa_expired(uint32_t spi, ChildSaExpiry kind, Millis now) {
    // Lifetime events from the data plane (delivered by the loop that drives the engine, on its
    // thread) name the inbound SPI: the owner index finds the IKE SA.  An SPI no IKE SA holds
    // (already deleted or rekeyed away, or never ours) is ignored, counted and logged.
    IkeSa* sa = child_owner(spi);
    ChildSa* c = sa ? child_by_in(*sa, spi) : nullptr;
    if (!c) {
        m_counters.inc("ike.child.expired_unknown_spi");
        m_log->warn(
            "data plane reported the {} lifetime of inbound SPI {:08x} expired: no such Child SA, ignored "
            "(ike.child.expired_unknown_spi)",
            to_string(kind), spi);
        return;
    }
    if (kind == ChildSaExpiry::Soft) {
        m_counters.inc("ike.child.soft_expired");
        if (c->st() != ChildSa::St::Installed || sa->state != SaState::Established) {
            m_log->info("IKE SA #{}: Child SA {} {:08x}: soft lifetime expired while {} / IKE SA {}, no rekey", sa->id,
                        c->name, spi, c->st() == ChildSa::St::Rekeying ? "rekeying" : "not installed",
                        state_name(sa->state));
            return;
        }
        m_log->info("IKE SA #{}: Child SA {} {:08x}: soft lifetime expired, rekeying", sa->id, c->name, spi);
        c->rekey_at = 0;
        (void)rekey_child(sa->id, spi, now);
        return;
    }
    m_counters.inc("ike.child.hard_expired");
    c->installed = false;  // the data plane removed it
    touch(*sa);
    if (sa->state != SaState::Established) {
        remove_child(*sa, spi, true, "(hard lifetime expired)");
        return;
    }
    // Tell the peer: the Child SA stays (uninstalled) until the delete is answered, so the
    // INFORMATIONAL exchange still finds it.
    event(*sa, Event::Kind::ChildSaDown, 0, c->name + " (hard lifetime expired)");
    c->down_reported = true;
    queue_exchange(*sa, make_delete_child_exchange({spi}), now);
}

void EngineImpl::tick(Millis now) {
    if (m_cookie_rotated_at >= 0 && now - m_cookie_rotated_at >= m_config.cookie_secret_lifetime_ms)
        rotate_cookie_secret(now);

    // The SAs with a due timer, each once per tick (timers it makes due again run next tick).
    std::vector<uint64_t> due;
    for (;;) {
        settle_timers();
        if (m_timers.empty() || m_timers.top().at > now) break;
        TimerEntry e = m_timers.top();
        m_timers.pop();
        m_sas.find(e.id)->second->armed_at = kNoTimer;  // settled: live and exact
        due.push_back(e.id);
    }
    for (uint64_t id : due) {
        IkeSa* sa = find_sa(id);  // touched: re-armed by rearm()
        if (!sa || sa->state == SaState::Destroyed) continue;
        run_timers(*sa, now);
    }
    // Reap destroyed SAs.
    for (uint64_t id : std::exchange(m_destroyed, {})) {
        auto it = m_sas.find(id);
        if (it == m_sas.end() || it->second->state != SaState::Destroyed) continue;
        reap(*it->second);
        m_sas.erase(it);
    }
}

void EngineImpl::run_timers(IkeSa& sa_ref, Millis now) {
    IkeSa* sa = &sa_ref;
    // Retransmissions.
    if (sa->outstanding && now >= sa->outstanding->next_retransmit) {
        auto& o = *sa->outstanding;
        if (o.tries >= m_config.retransmit.tries) {
            std::string what = to_string(o.exchange.type);
            m_log->warn("IKE SA #{} ({}): no response to {} #{} after {} retransmissions", sa->id, peer(*sa).name, what,
                        o.mid, o.tries);
            m_counters.inc("ike.tx.timeout");
            bool was_init = !sa->up();
            fail_outstanding(*sa, now, "retransmission timeout");
            event(
                *sa, was_init ? Event::Kind::NegotiationFailed : Event::Kind::PeerDead, 0,
                "no response to " + what + " after " + std::to_string(m_config.retransmit.tries) + " retransmissions");
            destroy(*sa, now, true, "peer unreachable");
            return;
        }
        ++o.tries;
        double factor = std::pow(m_config.retransmit.backoff, static_cast<double>(o.tries));
        o.next_retransmit = now + static_cast<Millis>(static_cast<double>(m_config.retransmit.timeout_ms) * factor);
        m_counters.inc("ike.tx.retransmit");
        m_log->info("IKE SA #{}: retransmit {} #{} (try {})", sa->id, to_string(o.exchange.type), o.mid, o.tries);
        send_packets(*sa, o.packets);
    }
    // Half-open expiry.
    if (sa->state == SaState::Connecting && !sa->initiator && now - sa->created_at >= m_config.half_open_timeout_ms) {
        m_counters.inc("ike.half_open_expired");
        destroy(*sa, now, true, "half-open timeout");
        return;
    }
    if (sa->state != SaState::Established) return;
    const auto& p = peer(*sa);
    if (sa->rekey_at && now >= sa->rekey_at) {
        sa->rekey_at = 0;
        (void)rekey_ike(sa->id, now);
        return;
    }
    for (auto& c : sa->children)
        if (c.rekey_at && now >= c.rekey_at && c.st() == ChildSa::St::Installed) {
            c.rekey_at = 0;
            uint32_t spi = c.spi_in;
            (void)rekey_child(sa->id, spi, now);
            break;  // children vector may change
        }
    if (p.dpd_interval_ms && !sa->outstanding && sa->queue.empty() &&
        now - sa->last_rx >= static_cast<Millis>(p.dpd_interval_ms)) {
        sa->last_rx = now;  // one DPD per interval
        queue_exchange(*sa, make_dpd_exchange(), now);
    }
}

std::optional<Millis> EngineImpl::sa_deadline(const IkeSa& sa) const {
    std::optional<Millis> best;
    auto consider = [&](Millis t) {
        if (!best || t < *best) best = t;
    };
    if (sa.state == SaState::Destroyed) return best;
    if (sa.outstanding) consider(sa.outstanding->next_retransmit);
    if (sa.state == SaState::Connecting && !sa.initiator) consider(sa.created_at + m_config.half_open_timeout_ms);
    if (sa.state != SaState::Established) return best;
    if (sa.rekey_at) consider(sa.rekey_at);
    for (const auto& c : sa.children)
        if (c.rekey_at && c.st() == ChildSa::St::Installed) consider(c.rekey_at);
    const auto& p = m_config.peers[sa.peer_idx];
    if (p.dpd_interval_ms && !sa.outstanding && sa.queue.empty())
        consider(sa.last_rx + static_cast<Millis>(p.dpd_interval_ms));
    return best;
}

void EngineImpl::rearm() {
    for (uint64_t id : std::exchange(m_touched, {})) {
        auto it = m_sas.find(id);
        if (it == m_sas.end()) continue;
        IkeSa& sa = *it->second;
        sa.touched = false;
        auto d = sa_deadline(sa);
        // A later deadline keeps the earlier entry (a harmless early wake-up re-arms it then).
        if (d && *d < sa.armed_at) {
            sa.armed_at = *d;
            m_timers.push(TimerEntry{*d, id});
        }
    }
}

void EngineImpl::settle_timers() const {
    while (!m_timers.empty()) {
        TimerEntry e = m_timers.top();
        auto it = m_sas.find(e.id);
        if (it == m_sas.end() || it->second->armed_at != e.at) {
            m_timers.pop();  // stale
            continue;
        }
        IkeSa& sa = *it->second;
        if (sa.touched) return;  // rearm() pending: keep the (early at worst) entry
        auto d = sa_deadline(sa);
        if (d && *d == e.at) return;  // exact
        m_timers.pop();
        sa.armed_at = d ? *d : kNoTimer;
        if (d) m_timers.push(TimerEntry{*d, e.id});
    }
}

std::optional<Millis> EngineImpl::next_deadline() const {
    std::optional<Millis> best;
    auto consider = [&](Millis t) {
        if (!best || t < *best) best = t;
    };
    if (!m_destroyed.empty()) consider(0);
    settle_timers();
    if (!m_timers.empty()) consider(m_timers.top().at);
    if (m_cookie_rotated_at >= 0) consider(m_cookie_rotated_at + m_config.cookie_secret_lifetime_ms);
    return best;
}

// ---------------------------------------------------------------- CERTREQ anchors

void EngineImpl::note_certreq(IkeSa& sa, const std::vector<Payload>& pl) {
    bool any = false;
    for (const auto& x : pl)
        if (auto* cr = x.as<CertReqPayload>()) {
            any = true;
            for (auto& h : cr->hashes())
                if (std::find(sa.peer_certreq.begin(), sa.peer_certreq.end(), h) == sa.peer_certreq.end())
                    sa.peer_certreq.push_back(std::move(h));
        }
    if (!any) return;
    auto anchors = map_certreq(sa);
    std::string detail = "peer asks for " + std::to_string(anchors.size()) + " CA(s):";
    for (const auto& a : anchors)
        detail += " " + (a.known() ? a.label : std::string("unknown")) + "(" + to_hex(a.spki_sha1) + ")";
    Event e;
    e.kind = Event::Kind::PeerCertReq;
    e.peer = peer(sa).name;
    e.ike_sa_id = sa.id;
    e.detail = std::move(detail);
    e.certreq = std::move(anchors);
    m_log->info("IKE SA #{} ({}): CERTREQ from {}: {}", sa.id, e.peer, sa.remote.to_string(), e.detail);
    m_events.push_back(std::move(e));
}

std::vector<CertReqAnchor> EngineImpl::map_certreq(const IkeSa& sa) const {
    std::vector<CertReqAnchor> out;
    if (sa.peer_certreq.empty()) return out;
    out.reserve(sa.peer_certreq.size());
    for (const auto& h : sa.peer_certreq) out.push_back(CertReqAnchor{h, {}, {}});
    std::vector<const x509::TrustStore*> stores;
    auto add = [&](const std::shared_ptr<const x509::TrustStore>& t) {
        if (t && std::find(stores.begin(), stores.end(), t.get()) == stores.end()) stores.push_back(t.get());
    };
    add(peer(sa).trust);
    for (const auto& p : m_config.peers) add(p.trust);
    size_t unmatched = out.size();
    for (const auto* t : stores) {
        if (unmatched == 0) break;
        const auto& hashes = t->anchor_spki_sha1_each();  // indexed like anchors (not deduplicated)
        const auto& anchors = t->anchors();
        const auto& subjects = t->anchor_subjects();
        for (size_t i = 0; i < hashes.size() && i < anchors.size(); ++i)
            for (auto& a : out)
                if (!a.known() && a.spki_sha1 == hashes[i]) {
                    a.label = anchors[i].first.empty() ? subjects[i] : anchors[i].first;
                    a.subject = subjects[i];
                    --unmatched;
                }
    }
    return out;
}

// ---------------------------------------------------------------- operations

Status EngineImpl::initiate(const std::string& name, Millis now) {
    for (size_t i = 0; i < m_config.peers.size(); ++i) {
        if (m_config.peers[i].name != name) continue;
        const auto& p = m_config.peers[i];
        if (p.ike_proposals.empty() || p.ike_proposals[0].dh.empty())
            return Error(ErrorDomain::Config, 0, "peer " + name + " has no IKE proposal");
        IkeSa& sa = new_sa(i, true, now);
        sa.spi_i = new_ike_spi();
        index_spi(sa);
        X2SEC_TRY_STATUS(transition(sa, SaState::Connecting, now));
        queue_exchange(sa, make_ike_init_exchange(), now);
        return {};
    }
    return Error(ErrorDomain::Config, 0, "no peer named '" + name + "'");
}

namespace {
Error not_found(uint64_t id) {
    return Error(ErrorDomain::Ike, 0, "no established IKE SA #" + std::to_string(id));
}
}  // namespace

Status EngineImpl::rekey_ike(uint64_t id, Millis now) {
    IkeSa* sa = find_sa(id);
    if (!sa || sa->state != SaState::Established) return not_found(id);
    queue_exchange(*sa, make_rekey_ike_exchange(), now);
    return {};
}

Status EngineImpl::rekey_child(uint64_t id, uint32_t spi_in, Millis now) {
    IkeSa* sa = find_sa(id);
    if (!sa || sa->state != SaState::Established) return not_found(id);
    ChildSa* c = child_by_in(*sa, spi_in);
    if (!c) return Error(ErrorDomain::Ike, 0, "no Child SA with inbound SPI " + std::to_string(spi_in));
    if (c->st() != ChildSa::St::Installed)
        return Error(ErrorDomain::Ike, 0, "Child SA is already rekeying or deleting");
    queue_exchange(*sa, make_rekey_child_exchange(spi_in), now);
    return {};
}

Status EngineImpl::create_child(uint64_t id, const std::string& name, Millis now) {
    IkeSa* sa = find_sa(id);
    if (!sa || sa->state != SaState::Established) return not_found(id);
    const auto& p = peer(*sa);
    for (size_t i = 0; i < p.children.size(); ++i)
        if (p.children[i].name == name) {
            queue_exchange(*sa, make_create_child_exchange(i), now);
            return {};
        }
    return Error(ErrorDomain::Config, 0, "peer " + p.name + " has no child '" + name + "'");
}

Status EngineImpl::delete_child(uint64_t id, uint32_t spi_in, Millis now) {
    IkeSa* sa = find_sa(id);
    if (!sa || sa->state != SaState::Established) return not_found(id);
    if (!child_by_in(*sa, spi_in))
        return Error(ErrorDomain::Ike, 0, "no Child SA with inbound SPI " + std::to_string(spi_in));
    queue_exchange(*sa, make_delete_child_exchange({spi_in}), now);
    return {};
}

Status EngineImpl::delete_ike(uint64_t id, Millis now) {
    IkeSa* sa = find_sa(id);
    if (!sa || sa->state == SaState::Destroyed) return not_found(id);
    if (!sa->up()) {
        destroy(*sa, now, true, "deleted before establishment");
        return {};
    }
    // A pending exchange is abandoned: the delete goes first.
    if (sa->outstanding) {
        for (auto& t : sa->outstanding->exchange.tasks) t->abort(*this, *sa, now);
        sa->outstanding.reset();
        sa->my_mid++;
    }
    for (auto& ex : sa->queue)
        for (auto& t : ex.tasks) t->abort(*this, *sa, now);
    sa->queue.clear();
    queue_exchange(*sa, make_delete_ike_exchange(), now);
    return {};
}

Status EngineImpl::send_dpd(uint64_t id, Millis now) {
    IkeSa* sa = find_sa(id);
    if (!sa || sa->state != SaState::Established) return not_found(id);
    queue_exchange(*sa, make_dpd_exchange(), now);
    return {};
}

Status EngineImpl::update_peer(const PeerConfig& p) {
    if (auto i = m_peer_index.by_name(p.name)) {
        PeerConfig old;  // only what the index keys on (no credentials copied)
        const auto& cur = m_config.peers[*i];
        old.name = cur.name;
        old.remote_id = cur.remote_id;
        old.local_addr = cur.local_addr;
        old.remote_addr = cur.remote_addr;
        old.local_port = cur.local_port;
        old.remote_port = cur.remote_port;
        old.local_natt_port = cur.local_natt_port;
        old.remote_natt_port = cur.remote_natt_port;
        m_config.peers[*i] = p;
        m_peer_index.add(m_config.peers, *i, &old);
        m_log->info("peer {}: configuration and credentials replaced", p.name);
        return {};
    }
    m_config.peers.push_back(p);
    m_peer_index.add(m_config.peers, m_config.peers.size() - 1);
    return {};
}

std::vector<IkeSaInfo> EngineImpl::list_sas() const {
    std::vector<IkeSaInfo> out;
    for (const auto& [id, sa] : m_sas) {
        if (sa->state == SaState::Destroyed) continue;
        IkeSaInfo i;
        i.id = sa->id;
        i.peer = m_config.peers[sa->peer_idx].name;
        switch (sa->state) {
            case SaState::Established:
                i.state = "ESTABLISHED";
                break;
            case SaState::Rekeying:
                i.state = "REKEYING";
                break;
            case SaState::Rekeyed:
                i.state = "REKEYED";
                break;
            case SaState::Deleting:
                i.state = "DELETING";
                break;
            default:
                i.state = "CONNECTING";
                break;
        }
        i.initiator = sa->initiator;
        i.spi_i = sa->spi_i;
        i.spi_r = sa->spi_r;
        i.local = sa->local;
        i.remote = sa->remote;
        i.local_id = sa->local_id_text;
        i.remote_id = sa->remote_id_text;
        i.local_auth = sa->local_auth_desc;
        i.remote_auth = sa->remote_auth_desc;
        if (sa->prf) {
            i.encr = encr_name(sa->algs.encr);
            i.integ = integ_name(sa->algs.integ);
            i.prf = prf_name(sa->algs.prf);
            i.dh = crypto::dh_group_name(sa->algs.dh);
        }
        i.nat_local = sa->nat_local;
        i.nat_remote = sa->nat_remote;
        i.encap = sa->encap;
        i.established_at = sa->established_at;
        if (!sa->peer_cert_subject_der.empty()) i.peer_cert_subject = x509::dn_to_string(sa->peer_cert_subject_der);
        i.peer_cert_anchor = sa->peer_cert_anchor;
        i.peer_certreq = map_certreq(*sa);
        for (const auto& c : sa->children) {
            ChildSaInfo ci;
            ci.name = c.name;
            ci.reqid = c.reqid;
            ci.spi_in = c.spi_in;
            ci.spi_out = c.spi_out;
            ci.cipher = x2sec::to_string(c.cipher);
            ci.esn = c.esn;
            ci.pfs = c.pfs ? crypto::dh_group_name(*c.pfs) : "";
            ci.ts_local = c.ts_local;
            ci.ts_remote = c.ts_remote;
            ci.established_at = c.established_at;
            ci.state = state_name(c.st());
            i.children.push_back(std::move(ci));
        }
        out.push_back(std::move(i));
    }
    return out;
}

// ---------------------------------------------------------------- facade

struct Engine::Impl {
    Impl(EngineConfig config, ChildSaBackend& backend, Rng& rng) : e(std::move(config), backend, rng) {}
    EngineImpl e;
};

Engine::Engine(EngineConfig config, ChildSaBackend& backend, Rng& rng)
    : m_impl(std::make_unique<Impl>(std::move(config), backend, rng)) {}
Engine::~Engine() = default;
Status Engine::initiate(const std::string& peer, Millis now) {
    return rearmed(m_impl->e.initiate(peer, now));
}
void Engine::handle_datagram(const Datagram& d, Millis now) {
    m_impl->e.handle_datagram(d, now);
    m_impl->e.rearm();
}
void Engine::tick(Millis now) {
    m_impl->e.tick(now);
    m_impl->e.rearm();
}
std::optional<Millis> Engine::next_deadline() const {
    return m_impl->e.next_deadline();
}
void Engine::child_sa_expired(uint32_t spi_in, ChildSaExpiry kind, Millis now) {
    m_impl->e.child_sa_expired(spi_in, kind, now);
    m_impl->e.rearm();
}
std::vector<Datagram> Engine::take_outgoing() {
    return std::exchange(m_impl->e.m_out, {});
}
std::vector<Event> Engine::take_events() {
    return std::exchange(m_impl->e.m_events, {});
}
Status Engine::rekey_ike(uint64_t id, Millis now) {
    return rearmed(m_impl->e.rekey_ike(id, now));
}
Status Engine::rekey_child(uint64_t id, uint32_t spi, Millis now) {
    return rearmed(m_impl->e.rekey_child(id, spi, now));
}
Status Engine::create_child(uint64_t id, const std::string& n, Millis now) {
    return rearmed(m_impl->e.create_child(id, n, now));
}
Status Engine::delete_child(uint64_t id, uint32_t spi, Millis now) {
    return rearmed(m_impl->e.delete_child(id, spi, now));
}
Status Engine::delete_ike(uint64_t id, Millis now) {
    return rearmed(m_impl->e.delete_ike(id, now));
}
Status Engine::send_dpd(uint64_t id, Millis now) {
    return rearmed(m_impl->e.send_dpd(id, now));
}
std::vector<IkeSaInfo> Engine::list_sas() const {
    return m_impl->e.list_sas();
}
const Counters& Engine::counters() const {
    return m_impl->e.m_counters;
}
Status Engine::check_indexes() const {
    return m_impl->e.check_indexes();
}
void Engine::set_key_logger(std::function<void(const IkeSaKeys&)> on_ike_keys,
                            std::function<void(const ChildSaParams&)> on_child_keys) {
    m_impl->e.m_on_ike_keys = std::move(on_ike_keys);
    m_impl->e.m_on_child_keys = std::move(on_child_keys);
}
Status Engine::update_peer(const PeerConfig& peer) {
    return rearmed(m_impl->e.update_peer(peer));
}
Status Engine::rearmed(Status st) {
    m_impl->e.rearm();
    return st;
}

}  // namespace x2sec::ike
