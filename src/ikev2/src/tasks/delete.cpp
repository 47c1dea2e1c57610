// INFORMATIONAL DELETE, both roles: the child_delete task (initiator: our DELETE of Child SAs;
// responder: the peer's, answered with the DELETE of ours paired with them), the refused-child
// delete (initiator only: a DELETE for a Child SA the peer created for a response we refused)
// and the ike_delete task (initiator: our IKE DELETE; responder: the peer's, the SA goes once
// answered).  Error notifies and empty requests in the same exchange: tasks/dpd.cpp.
#include "common.hpp"

namespace x2sec::ike {

using namespace wire;
using namespace task_util;

namespace {

struct DeleteChildTask final : Task {
    std::vector<uint32_t> spis;
    DeletePayload resp_del{ProtocolId::Esp, 4, {}};  // responder: our SPIs of the Child SAs deleted
    const char* name() const override { return "child_delete"; }
    Status build_i(EngineImpl& e, IkeSa& sa, std::vector<Payload>& out, Millis) override {
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
    Status process_i(EngineImpl& e, IkeSa&, const Checked&, Millis) override {
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
    Status process_r(EngineImpl& e, IkeSa& sa, const Request& req, Millis) override {
        for (const auto& x : req.in.all()) {
            auto* d = x.as<DeletePayload>();
            if (!d || d->protocol != ProtocolId::Esp) continue;
            for (const auto& s : d->spis) {
                // The peer names its inbound SPI (our outbound one), which the inbound owner index
                // cannot key (peers choose theirs freely); the Child SA is on this IKE SA or moved
                // with a rekey to its successor (followed; successors have strictly larger ids).
                IkeSa* owner = &sa;
                ChildSa* c = e.child_by_out(sa, read_spi4(s));
                while (!c && owner->children_moved_to) {
                    IkeSa* next = e.find_sa(owner->children_moved_to);
                    if (!next || next->state == SaState::Destroyed) break;
                    owner = next;
                    c = e.child_by_out(*owner, read_spi4(s));
                }
                e.touch(*owner);
                if (!c) continue;
                uint32_t in = c->spi_in;
                resp_del.spis.push_back(spi4(in));
                // A rekeyed child going away: switch outbound to its successor.
                for (auto& succ : owner->children)
                    if (succ.replaces_spi_in == in && succ.spi_in != in && succ.st() != ChildSa::St::Deleting) {
                        (void)e.m_backend.set_outbound(in, succ.spi_in);
                        break;
                    }
                bool quiet = c->st() == ChildSa::St::Rekeyed;
                // The successor of a rekey we answered, deleted while the Child SA it was to replace
                // is still here: the initiator refused our answer, so the old one stays in use.
                if (uint32_t old_in = c->replaces_spi_in; old_in != 0 && old_in != in)
                    if (ChildSa* old = e.child_by_in(*owner, old_in); old && old->st() == ChildSa::St::Rekeyed) {
                        e.m_log->info(
                            "IKE SA #{}: rekeyed Child SA {:08x} deleted by the peer before {:08x}: {:08x} stays",
                            owner->id, in, old_in, old_in);
                        (void)e.set_child_state(*owner, *old, ChildSa::St::Installed);
                    }
                e.remove_child(*owner, in, !quiet, "deleted by peer");
            }
        }
        return {};
    }
    Status build_r(EngineImpl&, IkeSa&, const Request&, std::vector<Payload>& out, Millis) override {
        if (!resp_del.spis.empty()) out.push_back({PayloadType::Delete, false, std::move(resp_del)});
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
    Status build_i(EngineImpl&, IkeSa&, std::vector<Payload>& out, Millis) override {
        DeletePayload d;
        d.protocol = ProtocolId::Esp;
        d.spi_size = 4;
        d.spis.push_back(spi4(spi));
        out.push_back({PayloadType::Delete, false, std::move(d)});
        return {};
    }
    // Initiator only: a peer's DELETE is the child_delete task's.
    Status process_r(EngineImpl&, IkeSa&, const Request&, Millis) override { return {}; }
    Status build_r(EngineImpl&, IkeSa&, const Request&, std::vector<Payload>&, Millis) override { return {}; }
    Status process_i(EngineImpl& e, IkeSa& sa, const Checked&, Millis) override {
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
    bool deleted = false;  // responder: the request deletes the IKE SA
    const char* name() const override { return "ike_delete"; }
    Status build_i(EngineImpl& e, IkeSa& sa, std::vector<Payload>& out, Millis now) override {
        DeletePayload d;
        d.protocol = ProtocolId::Ike;
        d.spi_size = 0;
        out.push_back({PayloadType::Delete, false, std::move(d)});
        if (sa.state != SaState::Rekeyed) X2SEC_TRY_STATUS(e.transition(sa, SaState::Deleting, now));
        return {};
    }
    Status process_i(EngineImpl& e, IkeSa& sa, const Checked&, Millis now) override {
        e.destroy(sa, now, sa.state != SaState::Rekeyed, "deleted");
        return sa_gone();
    }
    Status process_r(EngineImpl&, IkeSa&, const Request& req, Millis) override {
        for (const auto& x : req.in.all())
            if (auto* d = x.as<DeletePayload>(); d && d->protocol == ProtocolId::Ike) deleted = true;
        return {};
    }
    // The response to an IKE DELETE is empty (RFC 7296 1.4.1).
    Status build_r(EngineImpl&, IkeSa&, const Request&, std::vector<Payload>&, Millis) override { return {}; }
    void responded(EngineImpl& e, IkeSa& sa, Millis now) override {
        if (deleted) ike_deleted_by_peer(e, sa, now);
    }
};

}  // namespace

Exchange make_delete_child_exchange(std::vector<uint32_t> spis_in) {
    auto t = std::make_unique<DeleteChildTask>();
    t->spis = std::move(spis_in);
    return exchange_of(ExchangeType::Informational, std::move(t));
}

Exchange make_delete_refused_child_exchange(const std::vector<uint32_t>& spis_in) {
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

void ike_deleted_by_peer(EngineImpl& e, IkeSa& sa, Millis now) {
    if (sa.state == SaState::Destroyed) return;
    bool rekeyed = sa.state == SaState::Rekeyed;
    if (sa.state == SaState::Rekeying) {
        // The peer deletes this SA while our rekey is pending: if we answered theirs, it is the successor.
        adopt_peer_rekey(e, sa, now);
        rekeyed = sa.state == SaState::Rekeyed;
    }
    e.destroy(sa, now, !rekeyed, "deleted by peer");
}

// The tasks answering an INFORMATIONAL request, each reading its payloads: error notifies,
// Child SA DELETEs, the IKE DELETE, and an empty request (liveness check).
Exchange make_informational_responder() {
    return exchange_of(ExchangeType::Informational, make_notify_task(), std::make_unique<DeleteChildTask>(),
                       std::make_unique<DeleteIkeTask>(), make_dpd_task());
}

}  // namespace x2sec::ike
