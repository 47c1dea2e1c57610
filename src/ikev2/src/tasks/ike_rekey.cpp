// IKE SA rekey (CREATE_CHILD_SA), both roles: the ike_rekey task (initiator: our rekey, and
// collisions per RFC 7296 2.8; responder: the peer's rekey, a new IKE SA that takes over at once
// or after our own in a collision) and finish_ike_rekey.
#include "common.hpp"

namespace x2sec::ike {

using namespace wire;
using namespace task_util;

namespace {

struct IkeRekeyTask final : Task {
    SaPayload offered;  // initiator: our SA payload as sent, for check_chosen_proposal
    // responder: what process_r chose from the request
    IkeAlgorithms chosen_algs;
    uint8_t number = 1;
    uint64_t their_spi = 0;
    const char* name() const override { return "ike_rekey"; }
    std::optional<ResponsePurpose> purpose() const override { return ResponsePurpose::RekeyIke; }
    // Our rekey failed: the old IKE SA stays (or the peer's rekey we answered takes over), and
    // a new attempt is made later.
    // The responder moved its Child SAs to the IKE SA it created when it answered, which we do
    // not take: the old IKE SA cannot go on either, it is deleted with its Child SAs (after
    // the new one, when we could set that up: process()).
    void refuse(EngineImpl& e, IkeSa& sa, const Error& why, Millis now) override {
        sa.rekey.dh.reset();
        abort(e, sa, now);
        e.event(sa, Event::Kind::NegotiationFailed, why.code(), "IKE rekey refused: " + why.detail());
        if (sa.state != SaState::Destroyed) e.queue_exchange(sa, make_delete_ike_exchange(), now);
    }
    Status build_i(EngineImpl& e, IkeSa& sa, std::vector<Payload>& out, Millis now) override {
        if (sa.state != SaState::Established) return Error(ErrorDomain::Ike, 0, "IKE SA not established");
        const auto& p = e.peer(sa);
        sa.rekey.new_spi = e.new_ike_spi();
        sa.rekey.ni = e.make_nonce();
        X2SEC_TRY(auto dh, e.make_dh(sa.algs.dh));
        sa.rekey.dh = std::move(dh);
        SaPayload s;
        uint8_t n = 1;
        Bytes spi = spi8(sa.rekey.new_spi);
        for (const auto& prop : p.ike_proposals) {
            // The current group first so our KE matches.
            IkeProposal q = prop;
            auto it = std::find(q.dh.begin(), q.dh.end(), sa.algs.dh);
            if (it != q.dh.end()) std::rotate(q.dh.begin(), it, it + 1);
            s.proposals.push_back(ike_proposal_to_wire(q, n++, spi));
        }
        offered = s;
        out.push_back({PayloadType::SA, false, std::move(s)});
        out.push_back({PayloadType::Nonce, false, NoncePayload{sa.rekey.ni}});
        out.push_back(
            {PayloadType::KE, false, KePayload{static_cast<uint16_t>(sa.algs.dh), sa.rekey.dh->public_value()}});
        return e.transition(sa, SaState::Rekeying, now);
    }
    void abort(EngineImpl& e, IkeSa& sa, Millis now) override {
        if (sa.state == SaState::Rekeying) {
            (void)e.transition(sa, SaState::Established, now);  // legal from REKEYING
            adopt_theirs(e, sa, now);
        }
    }
    // Our rekey failed but we answered the peer's: theirs is the new IKE SA.
    static void adopt_theirs(EngineImpl& e, IkeSa& sa, Millis now) {
        if (!sa.rekey.theirs_id) return;
        IkeSa* theirs = e.find_sa(sa.rekey.theirs_id);
        sa.rekey.theirs_id = 0;
        if (theirs && theirs->state == SaState::Established) {
            // theirs came up (and got its rekey timer) when we answered.
            e.move_children(sa, *theirs);
            (void)e.transition(sa, SaState::Rekeyed, now);  // legal from ESTABLISHED
            e.event(*theirs, Event::Kind::IkeSaRekeyed, 0, "replaces IKE SA #" + std::to_string(sa.id));
        }
    }
    Status process_i(EngineImpl& e, IkeSa& sa, const Checked& in, Millis now) override {
        if (auto* err = in.error()) {
            e.m_log->warn("IKE SA #{}: IKE rekey failed: {}", sa.id, notify::name(err->type));
            sa.rekey.dh.reset();
            abort(e, sa, now);
            if (err->type != notify::TemporaryFailure)
                e.event(sa, Event::Kind::NegotiationFailed, err->type, "IKE rekey failed");
            if (sa.state == SaState::Established && !sa.rekey_at) sa.rekey_at = now + 10000;  // retry later
            return {};
        }
        const char* where = "CREATE_CHILD_SA response (IKE SA rekey)";
        auto refused = [&](const Error& err) -> Status {
            e.refuse_response(sa, *this, ResponsePurpose::RekeyIke, err, now);
            return {};
        };
        // No error notify: the purpose rule guarantees SA, KE and Nonce.
        const auto& sa_p = in.get<SaPayload>(PayloadType::SA);
        const auto& nonce_p = in.get<NoncePayload>(PayloadType::Nonce);
        Bytes spi;
        std::optional<IkeAlgorithms> algs = parse_ike_choice(sa_p, &spi);
        if (!algs || read_spi8(spi) == 0)
            return refused(syntax_error(std::string(where) + ": malformed IKE proposal or SPI"));
        const KePayload* ke = &in.get<KePayload>(PayloadType::KE);
        if (ke->group != static_cast<uint16_t>(sa.algs.dh))
            return refused(Error(ErrorDomain::Ike, notify::NoProposalChosen,
                                 std::string(where) + ": KE group " + std::to_string(ke->group) + " is not ours"));
        auto g_ir = sa.rekey.dh->derive(ke->data);
        if (!g_ir.ok()) return refused(syntax_error(std::string(where) + ": KE data: " + g_ir.error().detail()));
        // RFC 7296 3.3.6: one of the proposals we offered, one transform of each type from it.
        // The peer has created the new IKE SA: when its algorithms are ones we can run, it is
        // set up and deleted at once (the peer learns of our refusal); otherwise it expires
        // at the peer.
        auto new_rekeyed_sa = [&]() -> IkeSa& {
            IkeSa& ns = e.new_sa(sa.peer_idx, true, now);
            ns.spi_i = sa.rekey.new_spi;
            ns.spi_r = read_spi8(spi);
            e.index_spi(ns);
            ns.algs = *algs;
            ns.ni = sa.rekey.ni;
            ns.nr = nonce_p.data;
            copy_context(sa, ns);
            return ns;
        };
        if (auto chosen = check_chosen_proposal(offered, sa_p, 8); !chosen.ok() || algs->dh != sa.algs.dh) {
            Error why = chosen.ok() ? Error(ErrorDomain::Ike, notify::NoProposalChosen,
                                            std::string(where) + ": the chosen DH group is not the current one")
                                    : chosen.error();
            IkeSa& ns = new_rekeyed_sa();
            if (e.derive_ike(ns, *g_ir, &sa.sk_d, &*sa.prf).ok()) {
                // Stays CREATED, never up (no events): the delete takes it to DELETING.
                e.m_log->info("IKE SA #{}: deleting the refused rekeyed IKE SA #{} the peer created", sa.id, ns.id);
                e.queue_exchange(ns, make_delete_ike_exchange(), now);
            } else {
                e.destroy(ns, now, false, "refused rekey: key derivation failed");
            }
            return refused(why);
        }
        IkeSa& ns = new_rekeyed_sa();
        auto st = e.derive_ike(ns, *g_ir, &sa.sk_d, &*sa.prf);
        sa.rekey.dh.reset();
        if (!st.ok()) {
            e.destroy(ns, now, false, "key derivation failed");
            abort(e, sa, now);
            return st;
        }
        ns.rekeyed_from = sa.id;  // CREATED until it takes over (finish_ike_rekey)
        if (sa.rekey.theirs_id) {
            IkeSa* theirs = e.find_sa(sa.rekey.theirs_id);
            const Bytes& ours_low = lowest(ns.ni, ns.nr);
            const Bytes& theirs_low = lowest(sa.rekey.their_ni, sa.rekey.their_nr);
            if (theirs && less(ours_low, theirs_low)) {
                e.m_log->info("IKE SA #{}: IKE rekey collision: ours (#{}) has the lowest nonce and is closed", sa.id,
                              ns.id);
                (void)e.transition(ns, SaState::Established, now);  // up (announced down when deleted)
                (void)e.transition(sa, SaState::Established, now);  // legal from REKEYING
                adopt_theirs(e, sa, now);
                e.queue_exchange(ns, make_delete_ike_exchange(), now);
                return {};
            }
            e.m_log->info("IKE SA #{}: IKE rekey collision: ours (#{}) wins", sa.id, ns.id);
            sa.rekey.theirs_id = 0;  // the peer deletes its redundant SA
        }
        e.finish_ike_rekey(sa, ns, now);
        e.queue_exchange(sa, make_delete_ike_exchange(), now);
        return {};
    }
    // The peer's IKE SA rekey (RFC 7296 1.3.2): SA and Nonce are required by the exchange's rule.
    Status process_r(EngineImpl& e, IkeSa& sa, const Request& req, Millis) override {
        const KePayload* ke = req.in.find<KePayload>(PayloadType::KE);
        if (!ke)
            return e.answer_invalid(sa, req, syntax_error("CREATE_CHILD_SA request (IKE SA rekey): no KE payload"),
                                    "create_child_request");
        if (sa.outstanding && sa.outstanding->exchange.type == ExchangeType::CreateChildSa &&
            sa.state != SaState::Rekeying)
            return e.answer_error(sa, req, notify::TemporaryFailure);  // a Child exchange of ours is in flight
        const auto& sa_p = req.in.get<SaPayload>(PayloadType::SA);
        crypto::DhGroup w = static_cast<crypto::DhGroup>(0);
        auto algs = select_ike(e.peer(sa).ike_proposals, sa_p, ke->group, &number, &w);
        if (!algs) {
            if (static_cast<uint16_t>(w)) {
                uint16_t g = static_cast<uint16_t>(w);
                return e.answer_error(sa, req, notify::InvalidKePayload, Bytes{uint8_t(g >> 8), uint8_t(g)});
            }
            return e.answer_error(sa, req, notify::NoProposalChosen);
        }
        for (const auto& prop : sa_p.proposals)
            if (prop.number == number) their_spi = read_spi8(prop.spi);
        if (!their_spi) return e.answer_error(sa, req, notify::InvalidSyntax);
        chosen_algs = *algs;
        return {};
    }
    // The new IKE SA, CREATED until it takes over (at once, or after our own rekey in a collision).
    Status build_r(EngineImpl& e, IkeSa& sa, const Request& req, std::vector<Payload>& out, Millis now) override {
        const KePayload& ke = *req.in.find<KePayload>(PayloadType::KE);  // present: process_r
        auto dh = e.make_dh(chosen_algs.dh);
        if (!dh.ok()) return e.answer_error(sa, req, notify::TemporaryFailure);
        auto g_ir = dh->derive(ke.data);
        if (!g_ir.ok()) return e.answer_error(sa, req, notify::InvalidSyntax);
        IkeSa& ns = e.new_sa(sa.peer_idx, false, now);
        ns.spi_i = their_spi;
        ns.spi_r = e.new_ike_spi();
        e.index_spi(ns);
        ns.algs = chosen_algs;
        ns.ni = req.in.get<NoncePayload>(PayloadType::Nonce).data;
        ns.nr = e.make_nonce();
        copy_context(sa, ns);
        ns.rekeyed_from = sa.id;
        auto st = e.derive_ike(ns, *g_ir, &sa.sk_d, &*sa.prf);
        if (!st.ok()) {
            e.destroy(ns, now, false, "key derivation failed");
            return e.answer_error(sa, req, notify::TemporaryFailure);
        }
        IkeProposal chosen;
        chosen.encr = {chosen_algs.encr};
        if (chosen_algs.integ != crypto::IntegId::None) chosen.integ = {chosen_algs.integ};
        chosen.prf = {chosen_algs.prf};
        chosen.dh = {chosen_algs.dh};
        out.push_back({PayloadType::SA, false, SaPayload{{ike_proposal_to_wire(chosen, number, spi8(ns.spi_r))}}});
        out.push_back({PayloadType::Nonce, false, NoncePayload{ns.nr}});
        out.push_back({PayloadType::KE, false, KePayload{static_cast<uint16_t>(chosen_algs.dh), dh->public_value()}});
        if (sa.state == SaState::Rekeying) {
            // Collision: decide when our own rekey completes.
            e.m_log->info("IKE SA #{}: IKE rekey collision, answered the peer's (#{})", sa.id, ns.id);
            sa.rekey.theirs_id = ns.id;
            sa.rekey.their_ni = ns.ni;
            sa.rekey.their_nr = ns.nr;
            (void)e.transition(ns, SaState::Established, now);  // CREATED -> ESTABLISHED: up
        } else {
            // Abandon our queued rekeys of this SA; the new one takes over.
            e.finish_ike_rekey(sa, ns, now);
        }
        return {};
    }
    static void copy_context(const IkeSa& from, IkeSa& to) {
        to.local = from.local;
        to.remote = from.remote;
        to.natt_port = from.natt_port;
        to.nat_local = from.nat_local;
        to.nat_remote = from.nat_remote;
        to.encap = from.encap;
        to.peer_frag = from.peer_frag;
        to.peer_sent_hashes = from.peer_sent_hashes;
        to.peer_hashes = from.peer_hashes;
        to.local_id_text = from.local_id_text;
        to.remote_id_text = from.remote_id_text;
        to.local_auth_desc = from.local_auth_desc;
        to.remote_auth_desc = from.remote_auth_desc;
        to.peer_cert_subject_der = from.peer_cert_subject_der;
        to.peer_cert_anchor = from.peer_cert_anchor;
        to.peer_certreq = from.peer_certreq;
    }
};

}  // namespace

Exchange make_rekey_ike_exchange() {
    return exchange_of(ExchangeType::CreateChildSa, std::make_unique<IkeRekeyTask>());
}

std::unique_ptr<Task> make_ike_rekey_responder() {
    return std::make_unique<IkeRekeyTask>();
}

void adopt_peer_rekey(EngineImpl& e, IkeSa& sa, Millis now) {
    IkeRekeyTask::adopt_theirs(e, sa, now);
}

void EngineImpl::finish_ike_rekey(IkeSa& old_sa, IkeSa& ns, Millis now) {
    move_children(old_sa, ns);
    (void)transition(ns, SaState::Established, now);  // CREATED -> ESTABLISHED: up, rekey timer
    (void)transition(old_sa, SaState::Rekeyed, now);
    event(ns, Event::Kind::IkeSaRekeyed, 0, "replaces IKE SA #" + std::to_string(old_sa.id));
}

}  // namespace x2sec::ike
