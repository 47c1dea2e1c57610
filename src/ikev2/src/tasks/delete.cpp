// INFORMATIONAL DELETE, both roles: the child_delete / ike_delete tasks (initiator) and
// respond_informational (responder: DELETE and error notifies; an empty request is a liveness
// check answered empty).
#include "common.hpp"

namespace x2sec::ike {

using namespace wire;
using namespace task_util;

namespace {

struct DeleteChildTask final : Task {
    std::vector<uint32_t> spis;
    const char* name() const override { return "child_delete"; }
    Status build(EngineImpl& e, IkeSa& sa, std::vector<Payload>& out, Millis) override {
        DeletePayload d;
        d.protocol = ProtocolId::Esp;
        d.spi_size = 4;
        for (uint32_t s : spis) {
            ChildSa* c = e.child_by_in(sa, s);
            if (!c) continue;
            if (c->st() == ChildSa::St::Installed) (void)e.set_child_state(sa, *c, ChildSa::St::Deleting);
            d.spis.push_back(spi4(s));
        }
        if (d.spis.empty()) return Error(ErrorDomain::Ike, 0, "Child SAs already gone");
        out.push_back({PayloadType::Delete, false, std::move(d)});
        return {};
    }
    Status process(EngineImpl& e, IkeSa&, const Checked&, Millis) override {
        for (uint32_t s : spis) {
            // The peer confirmed the delete.  An IKE rekey answered meanwhile may have moved the
            // Child SA to the new IKE SA: the owner index finds it wherever it is now.
            IkeSa* owner = e.child_owner(s);
            ChildSa* c = owner ? e.child_by_in(*owner, s) : nullptr;
            if (!c) continue;
            bool rekeyed = c->st() == ChildSa::St::Rekeyed;
            e.remove_child(*owner, s, !rekeyed && !c->down_reported, "deleted");
        }
        return {};
    }
    void abort(EngineImpl& e, IkeSa& sa, Millis now) override {
        for (uint32_t s : spis) {
            IkeSa* owner = e.child_owner(s);
            if (owner && owner != &sa && owner->state == SaState::Established) {
                // An IKE rekey moved the Child SA while its delete was pending on the old IKE
                // SA, which is now going away: delete it over the new one (a repeated delete of
                // an SPI the peer no longer has is answered with an empty DELETE).
                e.m_log->info("IKE SA #{}: delete of Child SA {:08x} moved to IKE SA #{}", sa.id, s, owner->id);
                e.queue_exchange(*owner, make_delete_child_exchange({s}), now);
                continue;
            }
            ChildSa* c = e.child_by_in(sa, s);
            e.remove_child(sa, s, !c || !c->down_reported, "deleted (no answer)");
        }
    }
};

// DELETE of inbound SPIs we proposed in a request whose response we refused: no Child SA of
// ours holds them, the peer's Child SA uses them as outbound SPIs.  The SPI stays reserved
// (reserved_child_spi) until the exchange ends, so no new Child SA reuses it meanwhile.
struct DeleteRefusedChildTask final : Task {
    uint32_t spi = 0;
    const char* name() const override { return "child_delete_refused"; }
    Status build(EngineImpl&, IkeSa&, std::vector<Payload>& out, Millis) override {
        DeletePayload d;
        d.protocol = ProtocolId::Esp;
        d.spi_size = 4;
        d.spis.push_back(spi4(spi));
        out.push_back({PayloadType::Delete, false, std::move(d)});
        return {};
    }
    Status process(EngineImpl& e, IkeSa& sa, const Checked&, Millis) override {
        e.m_log->info("IKE SA #{}: peer confirmed the delete of the refused Child SA (our SPI {:08x})", sa.id, spi);
        release(e);
        return {};
    }
    void abort(EngineImpl& e, IkeSa&, Millis) override { release(e); }
    uint32_t reserved_child_spi() const override { return spi; }
    void release(EngineImpl& e) {
        if (spi != 0 && e.child_owner(spi) == nullptr) e.release_child_spi(spi);
        spi = 0;
    }
};

struct DeleteIkeTask final : Task {
    const char* name() const override { return "ike_delete"; }
    Status build(EngineImpl& e, IkeSa& sa, std::vector<Payload>& out, Millis now) override {
        DeletePayload d;
        d.protocol = ProtocolId::Ike;
        d.spi_size = 0;
        out.push_back({PayloadType::Delete, false, std::move(d)});
        if (sa.state != SaState::Rekeyed) X2SEC_TRY_STATUS(e.transition(sa, SaState::Deleting, now));
        return {};
    }
    Status process(EngineImpl& e, IkeSa& sa, const Checked&, Millis now) override {
        e.destroy(sa, now, sa.state != SaState::Rekeyed, "deleted");
        return sa_gone();
    }
};

}  // namespace

Exchange make_delete_child_exchange(std::vector<uint32_t> spis_in) {
    auto t = std::make_unique<DeleteChildTask>();
    t->spis = std::move(spis_in);
    return exchange_of(ExchangeType::Informational, std::move(t));
}

Exchange make_delete_refused_child_exchange(std::vector<uint32_t> spis_in) {
    Exchange ex;
    ex.type = ExchangeType::Informational;
    for (uint32_t s : spis_in) {
        auto t = std::make_unique<DeleteRefusedChildTask>();
        t->spi = s;
        ex.tasks.push_back(std::move(t));
    }
    return ex;
}

void EngineImpl::queue_delete_spi(IkeSa& sa, uint32_t spi_in, Millis now) {
    m_counters.inc("ike.tx.delete_refused_child");
    m_log->warn(
        "IKE SA #{} ({}): asking {} to delete the Child SA it created for our refused request (our SPI "
        "{:08x}) (ike.tx.delete_refused_child)",
        sa.id, peer(sa).name, sa.remote.to_string(), spi_in);
    queue_exchange(sa, make_delete_refused_child_exchange({spi_in}), now);
}

Exchange make_delete_ike_exchange() {
    return exchange_of(ExchangeType::Informational, std::make_unique<DeleteIkeTask>());
}

void EngineImpl::send_one_shot_request(IkeSa& sa, const std::vector<Payload>& payloads) {
    Header h;
    h.spi_i = sa.spi_i;
    h.spi_r = sa.spi_r;
    h.exchange = ExchangeType::Informational;
    h.flags = sa.initiator ? kFlagInitiator : 0;
    h.message_id = sa.my_mid++;
    if (auto pk = protect(sa, h, payloads); pk.ok()) send_packets(sa, *pk);
}

void EngineImpl::respond_informational(IkeSa& sa, uint32_t mid, const Checked& req, Millis now) {
    std::vector<Payload> out;
    bool delete_ike = false;
    DeletePayload resp_del;
    resp_del.protocol = ProtocolId::Esp;
    resp_del.spi_size = 4;
    for (const auto& x : req.all()) {
        if (auto* n = x.as<NotifyPayload>(); n && notify::is_error(n->type)) {
            if (n->type == notify::AuthenticationFailed && sa.state == SaState::Established && sa.initiator == false) {
                event(sa, Event::Kind::AuthFailed, auth_failure::PeerRejected, "peer rejected our authentication");
                delete_ike = true;
            } else {
                event(sa, Event::Kind::PeerNotify, n->type, std::string("peer sent ") + notify::name(n->type));
            }
        }
        auto* d = x.as<DeletePayload>();
        if (!d) continue;
        if (d->protocol == ProtocolId::Ike) {
            delete_ike = true;
            continue;
        }
        if (d->protocol != ProtocolId::Esp) continue;
        for (const auto& s : d->spis) {
            // The peer names its inbound SPI (our outbound one), which the inbound owner index
            // cannot key (peers choose theirs freely); the Child SA is on this IKE SA or moved
            // with a rekey to its successor (followed; successors have strictly larger ids).
            IkeSa* owner = &sa;
            ChildSa* c = child_by_out(sa, read_spi4(s));
            while (!c && owner->children_moved_to) {
                IkeSa* next = find_sa(owner->children_moved_to);
                if (!next || next->state == SaState::Destroyed) break;
                owner = next;
                c = child_by_out(*owner, read_spi4(s));
            }
            touch(*owner);
            if (!c) continue;
            uint32_t in = c->spi_in;
            resp_del.spis.push_back(spi4(in));
            // A rekeyed child going away: switch outbound to its successor.
            for (auto& succ : owner->children)
                if (succ.replaces_spi_in == in && succ.spi_in != in && succ.st() != ChildSa::St::Deleting) {
                    (void)m_backend.set_outbound(in, succ.spi_in);
                    break;
                }
            bool quiet = c->st() == ChildSa::St::Rekeyed;
            // The successor of a rekey we answered, deleted while the Child SA it was to replace
            // is still here: the initiator refused our answer, so the old one stays in use.
            if (uint32_t old_in = c->replaces_spi_in; old_in != 0 && old_in != in)
                if (ChildSa* old = child_by_in(*owner, old_in); old && old->st() == ChildSa::St::Rekeyed) {
                    m_log->info("IKE SA #{}: rekeyed Child SA {:08x} deleted by the peer before {:08x}: {:08x} stays",
                                owner->id, in, old_in, old_in);
                    (void)set_child_state(*owner, *old, ChildSa::St::Installed);
                }
            remove_child(*owner, in, !quiet, "deleted by peer");
        }
    }
    if (!resp_del.spis.empty()) out.push_back({PayloadType::Delete, false, std::move(resp_del)});
    send_response(sa, ExchangeType::Informational, mid, out);
    if (delete_ike) {
        bool rekeyed = sa.state == SaState::Rekeyed;
        if (sa.state == SaState::Rekeying) {
            // The peer deletes this SA while our rekey is pending: if we answered theirs, it is the successor.
            adopt_peer_rekey(*this, sa, now);
            rekeyed = sa.state == SaState::Rekeyed;
        }
        destroy(sa, now, !rekeyed, "deleted by peer");
    }
}

}  // namespace x2sec::ike
