// Timers: the per-SA deadline (retransmission, half-open expiry, IKE and Child rekey, DPD), the
// min-heap of deadlines (rearm, settle_timers) and what runs when one is due (run_timers).
// tick() and next_deadline(), which drive them, are in engine.cpp.
#include <cmath>

#include "engine_internal.hpp"
#include "sa/timer_jitter.hpp"

namespace x2sec::ike {

using namespace wire;

void EngineImpl::schedule_rekeys(IkeSa& sa, Millis now) {
    const auto& p = peer(sa);
    touch(sa);
    if (p.ike_rekey_seconds) {
        Millis base = static_cast<Millis>(p.ike_rekey_seconds) * 1000;
        Millis jitter = static_cast<Millis>(m_rng.u32() % (base / 10 + 1));
        sa.rekey_at = now + base - jitter;
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
        o.next_retransmit =
            now + jittered(static_cast<Millis>(static_cast<double>(m_config.retransmit.timeout_ms) * factor),
                           m_config.retransmit.jitter_percent, m_rng);
        m_counters.inc("ike.tx.retransmit");
        m_log->info("IKE SA #{}: retransmit {} #{} (try {})", sa->id, to_string(o.exchange.type), o.mid, o.tries);
        send_packets(*sa, o.packets);
    }
    // Half-open expiry.
    if (sa->state == SaState::Connecting && !sa->initiator && now >= sa->half_open_until) {
        if (!m_half_open_order.expires(now, now - sa->created_at, m_config.half_open_timeout_ms,
                                       half_open_count() >= m_config.cookie_threshold)) {
            // The responder has not served the SAs ahead of it yet: counted once per SA.
            if (sa->half_open_until == sa->created_at + m_config.half_open_timeout_ms)
                m_counters.inc("ike.half_open_extended");
            sa->half_open_until = now + HalfOpenOrder::kRecheckMs;
            return;
        }
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
    if (p.dpd_interval_ms && !sa->outstanding && sa->queue.empty() && now - sa->last_rx >= sa->dpd_wait) {
        sa->last_rx = now;  // one DPD per interval, the next one with its own jitter
        sa->dpd_wait = jittered(static_cast<Millis>(p.dpd_interval_ms), p.dpd_jitter_percent, m_rng);
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
    if (sa.state == SaState::Connecting && !sa.initiator) consider(sa.half_open_until);
    if (sa.state != SaState::Established) return best;
    if (sa.rekey_at) consider(sa.rekey_at);
    for (const auto& c : sa.children)
        if (c.rekey_at && c.st() == ChildSa::St::Installed) consider(c.rekey_at);
    const auto& p = m_config.peers[sa.peer_idx];
    if (p.dpd_interval_ms && !sa.outstanding && sa.queue.empty()) consider(sa.last_rx + sa.dpd_wait);
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

}  // namespace x2sec::ike
