// The IKEv2 engine facade: construction, key-pair generation, tick() and next_deadline().
// The rest lives beside what it is about: sa/registry.cpp (SA bookkeeping), task_manager.cpp
// (message IDs, retransmission, response cache, fragmentation, dispatch), timers.cpp, the
// exchanges in tasks/, the operations in operations.cpp.
#include <algorithm>
#include <ctime>

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
    if (m_cookies.ready() && now - m_cookies.rotated_at() >= m_config.cookie_secret_lifetime_ms)
        m_cookies.rotate(m_rng, now);

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

std::optional<Millis> EngineImpl::next_deadline() const {
    std::optional<Millis> best;
    auto consider = [&](Millis t) {
        if (!best || t < *best) best = t;
    };
    if (!m_destroyed.empty()) consider(0);
    settle_timers();
    if (!m_timers.empty()) consider(m_timers.top().at);
    if (m_cookies.ready()) consider(m_cookies.rotated_at() + m_config.cookie_secret_lifetime_ms);
    return best;
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
Status Engine::create_child(uint64_t id, const std::string& child_name, Millis now) {
    return rearmed(m_impl->e.create_child(id, child_name, now));
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
CookieCheck Engine::check_init_cookie(const Datagram& d) const {
    return m_impl->e.check_init_cookie(d);
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
