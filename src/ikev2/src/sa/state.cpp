// The IKE SA state machine: the legal transitions and what entering a state does.
#include <algorithm>

#include "../engine_internal.hpp"
#include "timer_jitter.hpp"

namespace x2sec::ike {

const char* state_name(SaState s) {
    switch (s) {
        case SaState::Created:
            return "CREATED";
        case SaState::Connecting:
            return "CONNECTING";
        case SaState::Established:
            return "ESTABLISHED";
        case SaState::Rekeying:
            return "REKEYING";
        case SaState::Rekeyed:
            return "REKEYED";
        case SaState::Deleting:
            return "DELETING";
        case SaState::Destroyed:
            return "DESTROYED";
    }
    return "?";
}

namespace {

// CREATED: a rekey successor (keys derived, not yet taking over) or an initiator about to send
// IKE_SA_INIT.  A successor we refuse, or that loses nothing yet, goes CREATED -> DELETING and
// never comes up.  DESTROYED is reachable from every state.
bool legal(SaState from, SaState to) {
    if (to == SaState::Destroyed) return true;
    switch (from) {
        case SaState::Created:
            return to == SaState::Connecting || to == SaState::Established || to == SaState::Deleting;
        case SaState::Connecting:
            return to == SaState::Established || to == SaState::Deleting;
        case SaState::Established:
            return to == SaState::Rekeying || to == SaState::Rekeyed || to == SaState::Deleting;
        case SaState::Rekeying:
            return to == SaState::Established || to == SaState::Rekeyed || to == SaState::Deleting;
        case SaState::Rekeyed:
            return to == SaState::Deleting;
        case SaState::Deleting:
        case SaState::Destroyed:
            return false;
    }
    return false;
}

}  // namespace

Status EngineImpl::transition(IkeSa& sa, SaState to, Millis now) {
    const SaState from = sa.state;
    if (from == to) return {};
    if (!legal(from, to)) {
        m_counters.inc("ike.sa.illegal_transition");
        std::string what = fmt::format("IKE SA #{} ({}): illegal transition {} -> {}", sa.id, peer(sa).name,
                                       state_name(from), state_name(to));
        m_log->error("{} refused (ike.sa.illegal_transition)", what);
        return Error(ErrorDomain::Ike, 0, what);
    }
    m_log->info("IKE SA #{} ({}): {} -> {}", sa.id, peer(sa).name, state_name(from), state_name(to));
    // Leaving / entering CONNECTING as responder: the half-open accounting (cookies, limits).
    if (!sa.initiator && from == SaState::Connecting) {
        --m_half_open;
        if (auto it = m_half_open_by_source.find(sa.half_open_source); it != m_half_open_by_source.end())
            if (--it->second == 0) m_half_open_by_source.erase(it);
        sa.half_open_source.clear();
        if (to == SaState::Established) m_half_open_order.served(now);
    }
    if (!sa.initiator && to == SaState::Connecting) {
        ++m_half_open;
        sa.half_open_source = source_key(sa.remote.addr);
        ++m_half_open_by_source[sa.half_open_source];
        sa.half_open_until = now + m_config.half_open_timeout_ms;
    }
    sa.state = to;
    touch(sa);
    // Entering ESTABLISHED the first time (from CONNECTING: IKE_AUTH done; from CREATED: a rekey
    // successor taking over) the SA is up: the time, its rekey timer, and for a new SA the event.
    // Back from REKEYING (our rekey failed) nothing changes.
    if (to == SaState::Established && (from == SaState::Connecting || from == SaState::Created)) {
        sa.m_up = true;
        sa.established_at = now;
        schedule_rekeys(sa, now);
        const auto& pc = peer(sa);
        sa.dpd_wait = jittered(static_cast<Millis>(pc.dpd_interval_ms), pc.dpd_jitter_percent, m_rng);
        if (from == SaState::Connecting)
            event(sa, Event::Kind::IkeSaUp, 0, sa.local_id_text + " <-> " + sa.remote_id_text);
        if (!sa.identities_hash) {
            sa.identities_hash = identities_hash(sa);
            m_by_identities.emplace(*sa.identities_hash, sa.id);
        }
    }
    if (to == SaState::Destroyed) {
        m_destroyed.push_back(sa.id);
        if (sa.identities_hash) {
            auto [b, e] = m_by_identities.equal_range(*sa.identities_hash);
            for (auto it = b; it != e; ++it)
                if (it->second == sa.id) {
                    m_by_identities.erase(it);
                    break;
                }
            sa.identities_hash.reset();
        }
        --m_live_by_peer[sa.peer_idx];
    }
    return {};
}

}  // namespace x2sec::ike
