// The engine operations (initiate, rekey, create / delete Child SA, delete IKE SA, DPD, peer
// updates, list); the Engine facade (engine.cpp) forwards to them.
#include <algorithm>

#include "engine_internal.hpp"

namespace x2sec::ike {

using namespace wire;

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
        // Both exchanges of the setup, as strongSwan queues its tasks: IKE_AUTH (with the first
        // Child SA when the peer has one) goes once IKE_SA_INIT is done.
        queue_exchange(sa, make_ike_init_exchange(), now);
        queue_exchange(sa, make_ike_auth_exchange(p.children.empty() ? SIZE_MAX : 0), now);
        return {};
    }
    return Error(ErrorDomain::Config, 0, "no peer named '" + name + "'");
}

namespace {
Error not_found(uint64_t id) {
    return Error(ErrorDomain::Ike, 0, "no established IKE SA #" + std::to_string(id));
}
Error no_child(uint32_t spi_in) {
    return Error(ErrorDomain::Ike, 0, "no Child SA with inbound SPI " + std::to_string(spi_in));
}
}  // namespace

// What every operation on an established IKE SA does: find it, have `make` build the initiator
// exchange (or refuse), queue it.
Status EngineImpl::queue_on(uint64_t id, Millis now, const std::function<Result<Exchange>(IkeSa&)>& make) {
    IkeSa* sa = find_sa(id);
    if (!sa || sa->state != SaState::Established) return not_found(id);
    X2SEC_TRY(auto ex, make(*sa));
    queue_exchange(*sa, std::move(ex), now);
    return {};
}

Status EngineImpl::rekey_ike(uint64_t id, Millis now) {
    return queue_on(id, now, [](IkeSa&) -> Result<Exchange> { return make_rekey_ike_exchange(); });
}

Status EngineImpl::rekey_child(uint64_t id, uint32_t spi_in, Millis now) {
    return queue_on(id, now, [&](IkeSa& sa) -> Result<Exchange> {
        ChildSa* c = child_by_in(sa, spi_in);
        if (!c) return no_child(spi_in);
        if (c->st() != ChildSa::St::Installed)
            return Error(ErrorDomain::Ike, 0, "Child SA is already rekeying or deleting");
        return make_rekey_child_exchange(spi_in);
    });
}

Status EngineImpl::create_child(uint64_t id, const std::string& name, Millis now) {
    return queue_on(id, now, [&](IkeSa& sa) -> Result<Exchange> {
        const auto& p = peer(sa);
        for (size_t i = 0; i < p.children.size(); ++i)
            if (p.children[i].name == name) return make_create_child_exchange(i);
        return Error(ErrorDomain::Config, 0, "peer " + p.name + " has no child '" + name + "'");
    });
}

Status EngineImpl::delete_child(uint64_t id, uint32_t spi_in, Millis now) {
    return queue_on(id, now, [&](IkeSa& sa) -> Result<Exchange> {
        if (!child_by_in(sa, spi_in)) return no_child(spi_in);
        return make_delete_child_exchange({spi_in});
    });
}

Status EngineImpl::send_dpd(uint64_t id, Millis now) {
    return queue_on(id, now, [](IkeSa&) -> Result<Exchange> { return make_dpd_exchange(); });
}

Status EngineImpl::delete_ike(uint64_t id, Millis now) {
    IkeSa* sa = find_sa(id);
    if (!sa || sa->state == SaState::Destroyed) return not_found(id);
    if (!sa->up()) {
        destroy(*sa, now, true, "deleted before establishment");
        return {};
    }
    // A pending exchange is abandoned (its Message ID used up): the delete goes first.
    if (abandon_exchanges(*sa, now)) sa->my_mid++;
    queue_exchange(*sa, make_delete_ike_exchange(), now);
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

}  // namespace x2sec::ike
