// The SA registry: IKE SAs by id, by our SPI and by (SPIi, remote address) for IKE_SA_INIT,
// Child SA attach / detach through the Child SA table, SPI allocation, events, destroy.
#include <algorithm>
#include <ctime>
#include <x2sec/common/metrics.hpp>

#include "../engine_internal.hpp"

namespace x2sec::ike {

using namespace wire;

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
    // The identities index holds exactly the SAs that came up and are not DESTROYED, under the
    // hash of their identities; the per-config counts are those of the SAs not DESTROYED.
    size_t identified = 0;
    std::vector<size_t> live(m_config.peers.size(), 0);
    for (const auto& [id, sa] : m_sas) {
        if (sa->state != SaState::Destroyed) ++live.at(sa->peer_idx);
        const bool want = sa->up() && sa->state != SaState::Destroyed;
        if (want != sa->identities_hash.has_value())
            return bad(fmt::format("IKE SA #{} is {} the identities index", id, want ? "missing from" : "still in"));
        if (!want) continue;
        ++identified;
        if (*sa->identities_hash != identities_hash(*sa))
            return bad(fmt::format("IKE SA #{}: its identities changed after it came up", id));
        auto [b, e] = m_by_identities.equal_range(*sa->identities_hash);
        if (std::none_of(b, e, [&, i = id](const auto& kv) { return kv.second == i; }))
            return bad(fmt::format("IKE SA #{} has no entry in the identities index", id));
    }
    if (identified != m_by_identities.size())
        return bad(fmt::format("{} identities index entries for {} SAs up", m_by_identities.size(), identified));
    for (size_t i = 0; i < live.size(); ++i)
        if (live[i] != (i < m_live_by_peer.size() ? m_live_by_peer[i] : 0))
            return bad(fmt::format("peer config #{}: {} SAs counted, {} held", i,
                                   i < m_live_by_peer.size() ? m_live_by_peer[i] : 0, live[i]));
    return {};
}

uint64_t EngineImpl::new_ike_spi() {
    // Also avoids the SPIs of destroyed SAs not reaped yet.
    for (;;) {
        uint64_t s = m_rng.u64();
        if (s != 0 && !m_by_spi.count(s)) return s;
    }
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
    if (m_live_by_peer.size() < m_config.peers.size()) m_live_by_peer.resize(m_config.peers.size());
    ++m_live_by_peer[peer_idx];
    IkeSa& ref = *sa;
    m_sas.emplace(ref.id, std::move(sa));
    touch(ref);
    return ref;
}

void EngineImpl::set_peer_idx(IkeSa& sa, size_t peer_idx) {
    if (sa.peer_idx == peer_idx) return;
    if (sa.state != SaState::Destroyed) {
        if (m_live_by_peer.size() < m_config.peers.size()) m_live_by_peer.resize(m_config.peers.size());
        --m_live_by_peer[sa.peer_idx];
        ++m_live_by_peer[peer_idx];
    }
    sa.peer_idx = peer_idx;
}

uint64_t EngineImpl::identities_hash(const IkeSa& sa) {
    const uint64_t l = std::hash<std::string>{}(sa.local_id_text);
    const uint64_t r = std::hash<std::string>{}(sa.remote_id_text);
    return l ^ (r + 0x9e3779b97f4a7c15ULL + (l << 6) + (l >> 2));
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
    abandon_exchanges(sa, now);
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

}  // namespace x2sec::ike
