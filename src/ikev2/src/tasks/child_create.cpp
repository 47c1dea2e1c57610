// Child SAs, both roles: the child_create task (the first Child SA in IKE_AUTH, another one in
// CREATE_CHILD_SA) and the child_rekey task (the rekey of a Child SA in CREATE_CHILD_SA), each
// as initiator (build_i / process_i) and responder (process_r / build_r) over the code they
// share (ChildTask); new_child_record and install_child, the one place a Child SA is assembled
// and installed for either role.
#include "common.hpp"

namespace x2sec::ike {

using namespace wire;
using namespace task_util;

namespace {

// What child_create and child_rekey share: as initiator a new Child SA (rekey_of 0) or the rekey
// of the one with inbound SPI rekey_of; as responder the Child SA the request asks for (a
// rekey when the request names one in REKEY_SA: the child_rekey task).
struct ChildTask : Task {
    size_t cfg = 0;
    bool in_auth = false;
    uint32_t rekey_of = 0;  // old child's inbound SPI
    uint32_t spi = 0;
    Bytes ni;
    std::optional<crypto::DhKeyPair> dh;
    std::optional<crypto::DhGroup> group_override;
    std::vector<TrafficSelector> tsi, tsr;
    SaPayload offered;  // our SA payload as sent, for check_chosen_proposal
    // responder: the Child SA being rekeyed (its inbound SPI, 0 for a new one) and the
    // request's selectors (process_r)
    bool rekey = false;  // the child_rekey task
    uint32_t old_spi = 0;
    std::vector<TrafficSelector> req_tsi, req_tsr;
    std::optional<ResponsePurpose> purpose() const override {
        return in_auth ? ResponsePurpose::AuthChild : ResponsePurpose::CreateChild;
    }
    // The responder accepted but its answer is unusable: nothing is installed, the Child SA
    // being rekeyed stays, and the peer is told to delete the Child SA it created (a DELETE
    // naming the inbound SPI we proposed, which its Child SA uses as outbound SPI).
    void refuse(EngineImpl& e, IkeSa& sa, const Error& why, Millis now) override {
        const auto& c = e.peer(sa).children[cfg];
        e.event(sa, Event::Kind::NegotiationFailed, why.code(), "child " + c.name + ": " + why.detail());
        give_up(e, sa, now);
    }
    // Undoes what build() started; the SPI we proposed goes to a DELETE for the peer.
    void give_up(EngineImpl& e, IkeSa& sa, Millis now) {
        uint32_t mine = spi;
        spi = 0;  // the delete exchange takes the reservation over
        abort(e, sa, now);
        if (mine != 0 && e.child_owner(mine) == nullptr) e.queue_delete_spi(sa, mine, now);
    }

    Status build_i(EngineImpl& e, IkeSa& sa, std::vector<Payload>& out, Millis) override {
        const auto& p = e.peer(sa);
        if (rekey_of) {
            ChildSa* old = e.child_by_in(sa, rekey_of);
            if (!old || old->st() != ChildSa::St::Installed)
                return Error(ErrorDomain::Ike, 0, "Child SA to rekey is gone or busy");
            cfg = old->cfg;
            X2SEC_TRY_STATUS(e.set_child_state(sa, *old, ChildSa::St::Rekeying));
            tsi = old->ts_local;
            tsr = old->ts_remote;
        } else {
            if (cfg >= p.children.size()) return Error(ErrorDomain::Config, 0, "no such child config");
            tsi = p.children[cfg].local_ts;
            tsr = p.children[cfg].remote_ts;
        }
        if (sa.state != SaState::Established && !in_auth) return Error(ErrorDomain::Ike, 0, "IKE SA not established");
        const auto& c = p.children[cfg];
        spi = e.new_child_spi();
        SaPayload s;
        s.proposals = child_proposals_to_wire(c, spi, !in_auth);
        if (s.proposals.empty()) return Error(ErrorDomain::Config, 0, "child " + c.name + " has no proposal");
        if (rekey_of) out.push_back(notify_payload(notify::RekeySa, {}, ProtocolId::Esp, spi4(rekey_of)));
        offered = s;
        out.push_back({PayloadType::SA, false, std::move(s)});
        if (!in_auth) {
            ni = e.make_nonce();
            out.push_back({PayloadType::Nonce, false, NoncePayload{ni}});
            std::optional<crypto::DhGroup> g = group_override;
            if (!g && !c.proposals.empty() && !c.proposals[0].pfs.empty()) g = c.proposals[0].pfs[0];
            if (g) {
                X2SEC_TRY(auto kp, e.make_dh(*g));
                dh = std::move(kp);
                out.push_back({PayloadType::KE, false, KePayload{static_cast<uint16_t>(*g), dh->public_value()}});
            }
        }
        out.push_back({PayloadType::TSi, false, TsPayload{tsi}});
        out.push_back({PayloadType::TSr, false, TsPayload{tsr}});
        if (c.mode == IpsecMode::Transport) out.push_back(notify_payload(notify::UseTransportMode));
        return {};
    }

    void abort(EngineImpl& e, IkeSa& sa, Millis) override {
        if (rekey_of)
            if (ChildSa* old = e.child_by_in(sa, rekey_of); old && old->st() == ChildSa::St::Rekeying)
                (void)e.set_child_state(sa, *old, ChildSa::St::Installed);
        // The SPI reserved in build() goes back unless a Child SA was attached with it.
        if (spi != 0 && e.child_owner(spi) == nullptr) e.release_child_spi(spi);
        spi = 0;
    }

    uint32_t reserved_child_spi() const override { return spi; }

    // Responder.  In IKE_AUTH the first Child SA is read and set up in build_r, after the ike_auth
    // task authenticated the peer; in CREATE_CHILD_SA (SA and Nonce required by the exchange's
    // rule) process_r checks the request and build_r selects and installs.
    Status process_r(EngineImpl& e, IkeSa& sa, const Request& req, Millis) override {
        if (in_auth) return {};
        if (rekey) {
            const NotifyPayload* rk = req.in.notify(notify::RekeySa);  // the dispatch's reason
            if (!rk || rk->protocol != ProtocolId::Esp) return e.answer_error(sa, req, notify::NoProposalChosen);
            ChildSa* old = e.child_by_out(sa, read_spi4(rk->spi));
            if (!old) return e.answer_error(sa, req, notify::ChildSaNotFound);
            if (old->st() == ChildSa::St::Rekeyed || old->st() == ChildSa::St::Deleting)
                return e.answer_error(sa, req, notify::TemporaryFailure);
            old_spi = old->spi_in;
        }
        // A Child SA request: its purpose rule adds TSi and TSr.
        auto child_in = check_rules(purpose_rule(ResponsePurpose::CreateChildRequest), req.in.all());
        if (!child_in.ok()) return e.answer_invalid(sa, req, child_in.error(), "create_child_request");
        req_tsi = child_in->get<TsPayload>(PayloadType::TSi).selectors;
        req_tsr = child_in->get<TsPayload>(PayloadType::TSr).selectors;
        return {};
    }

    Status build_r(EngineImpl& e, IkeSa& sa, const Request& req, std::vector<Payload>& out, Millis now) override {
        if (in_auth) return build_r_auth(e, sa, req, out, now);
        const auto& p = e.peer(sa);
        const auto& in = req.in;
        const SaPayload* sa_p = &in.get<SaPayload>(PayloadType::SA);
        const NoncePayload* ni_p = &in.get<NoncePayload>(PayloadType::Nonce);
        const KePayload* ke = in.find<KePayload>(PayloadType::KE);
        ChildSa* old = old_spi ? e.child_by_in(sa, old_spi) : nullptr;
        uint16_t error = notify::TsUnacceptable;
        std::optional<crypto::DhGroup> wanted;
        for (size_t i = 0; i < p.children.size(); ++i) {
            if (old && i != old->cfg) continue;
            const auto& c = p.children[i];
            auto n_i = narrow(req_tsi, c.remote_ts), n_r = narrow(req_tsr, c.local_ts);
            if (n_i.empty() || n_r.empty()) continue;
            auto choice = select_child(c, *sa_p, true, ke ? std::optional<uint16_t>(ke->group) : std::nullopt, &wanted);
            if (!choice) {
                error = notify::NoProposalChosen;
                continue;
            }
            std::optional<crypto::DhKeyPair> kp;
            std::optional<SecureBytes> g_ir;
            if (choice->dh) {
                auto made = e.make_dh(*choice->dh);
                if (!made.ok()) return e.answer_error(sa, req, notify::TemporaryFailure);
                auto shared = made->derive(ke->data);
                if (!shared.ok()) return e.answer_error(sa, req, notify::InvalidSyntax);
                kp = std::move(made).value();
                g_ir = std::move(shared).value();
            }
            Bytes nr = e.make_nonce();
            std::optional<BytesView> gv;
            if (g_ir) gv = g_ir->view();
            auto keys = derive_child_keys(*sa.prf, sa.sk_d, choice->cipher, gv, ni_p->data, nr);
            if (!keys.ok()) return e.answer_error(sa, req, notify::TemporaryFailure);
            uint32_t reqid = old ? old->reqid : 0;
            uint32_t spi_in = e.new_child_spi();
            bool transport = c.mode == IpsecMode::Transport && in.notify(notify::UseTransportMode);
            ChildSa child =
                new_child_record(e, sa, i, *choice, spi_in, transport, n_r, n_i, choice->dh, old_spi, reqid, now);
            auto ist = e.install_child(sa, child, *keys, false);
            if (!ist.ok()) {
                e.release_child_spi(child.spi_in);
                return e.answer_error(sa, req, notify::TemporaryFailure);
            }
            if (old_spi) {
                old = e.child_by_in(sa, old_spi);  // again: install_child() appended to sa.children
                if (!old) {
                    e.m_log->error("IKE SA #{}: Child SA {:08x} being rekeyed is gone", sa.id, old_spi);
                } else if (old->st() == ChildSa::St::Rekeying) {
                    old->collision_spi_in = child.spi_in;
                    old->collision_ni = ni_p->data;
                    old->collision_nr = nr;
                    e.m_log->info("IKE SA #{}: Child rekey collision on {:08x}", sa.id, old_spi);
                } else {
                    (void)e.set_child_state(sa, *old, ChildSa::St::Rekeyed);
                    e.event(sa, Event::Kind::ChildSaRekeyed, 0,
                            c.name + fmt::format(" {:08x} -> {:08x}", old_spi, child.spi_in));
                }
            }
            out.push_back({PayloadType::SA, false, SaPayload{{child_choice_to_wire(*choice, child.spi_in)}}});
            out.push_back({PayloadType::Nonce, false, NoncePayload{nr}});
            if (kp)
                out.push_back(
                    {PayloadType::KE, false, KePayload{static_cast<uint16_t>(kp->group()), kp->public_value()}});
            out.push_back({PayloadType::TSi, false, TsPayload{n_i}});
            out.push_back({PayloadType::TSr, false, TsPayload{n_r}});
            if (transport) out.push_back(notify_payload(notify::UseTransportMode));
            return {};
        }
        if (wanted) {
            uint16_t g = static_cast<uint16_t>(*wanted);
            return e.answer_error(sa, req, notify::InvalidKePayload, Bytes{uint8_t(g >> 8), uint8_t(g)});
        }
        return e.answer_error(sa, req, error);
    }

    // The first Child SA, in the IKE_AUTH response: SA, TSi and TSr together, or none of them.
    // What is refused is an error notify beside the authenticated IKE SA's payloads.
    static Status build_r_auth(EngineImpl& e, IkeSa& sa, const Request& req, std::vector<Payload>& out, Millis now) {
        const auto& p = e.peer(sa);
        const auto& in = req.in;
        const SaPayload* sa_p = in.find<SaPayload>(PayloadType::SA);
        const TsPayload* tsi_p = in.find<TsPayload>(PayloadType::TSi);
        const TsPayload* tsr_p = in.find<TsPayload>(PayloadType::TSr);
        bool child_asked = sa_p || tsi_p || tsr_p;
        if (child_asked && !(sa_p && tsi_p && tsr_p)) {
            e.count("invalid_syntax.ike_auth_request");
            e.m_log->error(
                "IKE SA #{} ({}): IKE_AUTH request from {} asks for a Child SA without all of SA, TSi and TSr; "
                "no Child SA (ike.rx.invalid_syntax.ike_auth_request)",
                sa.id, p.name, sa.remote.to_string());
            e.event(sa, Event::Kind::NegotiationFailed, notify::InvalidSyntax,
                    "first Child SA: SA, TSi or TSr missing");
            out.push_back(notify_payload(notify::InvalidSyntax));
        }
        if (!(sa_p && tsi_p && tsr_p)) return {};
        const auto& tsi = tsi_p->selectors;
        const auto& tsr = tsr_p->selectors;
        uint16_t error = notify::TsUnacceptable;
        for (size_t i = 0; i < p.children.size(); ++i) {
            const auto& c = p.children[i];
            auto ni = narrow(tsi, c.remote_ts), nr = narrow(tsr, c.local_ts);
            if (ni.empty() || nr.empty()) continue;
            auto choice = select_child(c, *sa_p, false, std::nullopt, nullptr);
            if (!choice) {
                error = notify::NoProposalChosen;
                continue;
            }
            auto keys = derive_child_keys(*sa.prf, sa.sk_d, choice->cipher, std::nullopt, sa.ni, sa.nr);
            if (!keys.ok()) break;
            uint32_t spi_in = e.new_child_spi();
            bool transport = c.mode == IpsecMode::Transport && in.notify(notify::UseTransportMode);
            ChildSa child = new_child_record(e, sa, i, *choice, spi_in, transport, nr, ni, std::nullopt, 0, 0, now);
            auto ist = e.install_child(sa, child, *keys, false);
            if (!ist.ok()) {
                e.release_child_spi(child.spi_in);
                error = notify::TemporaryFailure;
                e.m_log->error("IKE SA #{}: Child SA install failed: {}", sa.id, ist.error().to_string());
                break;
            }
            out.push_back({PayloadType::SA, false, SaPayload{{child_choice_to_wire(*choice, child.spi_in)}}});
            out.push_back({PayloadType::TSi, false, TsPayload{ni}});
            out.push_back({PayloadType::TSr, false, TsPayload{nr}});
            if (transport) out.push_back(notify_payload(notify::UseTransportMode));
            return {};
        }
        e.m_log->warn("IKE SA #{}: first Child SA refused: {}", sa.id, notify::name(error));
        e.event(sa, Event::Kind::NegotiationFailed, error, std::string("first Child SA: ") + notify::name(error));
        out.push_back(notify_payload(error));
        return {};
    }

    Status process_i(EngineImpl& e, IkeSa& sa, const Checked& in, Millis now) override {
        const auto& p = e.peer(sa);
        const auto& c = p.children[cfg];
        if (auto* ike = in.notify(notify::InvalidKePayload); ike && !in_auth && !group_override) {
            auto g = static_cast<crypto::DhGroup>((ike->data[0] << 8) | ike->data[1]);
            bool ok = false;
            for (const auto& cp : c.proposals) ok |= std::find(cp.pfs.begin(), cp.pfs.end(), g) != cp.pfs.end();
            abort(e, sa, now);
            if (ok) {
                auto retry = rekey_of ? make_rekey_child_exchange(rekey_of) : make_create_child_exchange(cfg);
                static_cast<ChildTask*>(retry.tasks[0].get())->group_override = g;
                e.queue_exchange(sa, std::move(retry), now);
                return {};
            }
            e.event(sa, Event::Kind::NegotiationFailed, notify::InvalidKePayload,
                    "child " + c.name + ": unacceptable PFS group");
            return Error(ErrorDomain::Ike, notify::InvalidKePayload, "unacceptable PFS group");
        }
        if (auto* err = in.error()) {
            abort(e, sa, now);
            e.event(sa, Event::Kind::NegotiationFailed, err->type, "child " + c.name + ": " + notify::name(err->type));
            return Error(ErrorDomain::Ike, err->type, "Child SA not created");
        }
        // Every payload through the checked accessors; what is wrong is refused (counted and
        // logged by refuse_response) and the peer's Child SA deleted.
        const ResponsePurpose why = *purpose();
        auto refused = [&](const Error& err) -> Status {
            e.refuse_response(sa, *this, why, err, now);
            return err;
        };
        // No error notify: the purpose rule guarantees SA, TSi and TSr (and Nonce outside IKE_AUTH).
        const char* where = in_auth ? "IKE_AUTH response" : "CREATE_CHILD_SA response";
        const auto& sa_p = in.get<SaPayload>(PayloadType::SA);
        const auto& tsi_p = in.get<TsPayload>(PayloadType::TSi);
        const auto& tsr_p = in.get<TsPayload>(PayloadType::TSr);
        Bytes nr = in_auth ? sa.nr : in.get<NoncePayload>(PayloadType::Nonce).data;
        // RFC 7296 3.3.6: exactly one of the proposals we offered, one transform of each type
        // (ESN included) from that proposal.
        if (auto chosen = check_chosen_proposal(offered, sa_p, 4); !chosen.ok()) return refused(chosen.error());
        auto choice = parse_child_choice(sa_p);
        if (!choice)
            return refused(Error(ErrorDomain::Ike, notify::NoProposalChosen,
                                 std::string(where) + ": the chosen ESP proposal is not one we can use"));
        if (choice->peer_spi == 0)
            return refused(syntax_error(std::string(where) + ": the chosen ESP proposal has SPI 0"));
        // RFC 7296 2.9: the responder may only narrow what we proposed.
        const std::vector<TrafficSelector>& ts_l = tsi_p.selectors;
        const std::vector<TrafficSelector>& ts_r = tsr_p.selectors;
        if (!ts_subset(ts_l, tsi) || !ts_subset(ts_r, tsr))
            return refused(Error(ErrorDomain::Ike, notify::TsUnacceptable,
                                 std::string(where) + ": the responder's selectors " + ts_text(ts_l) + " / " +
                                     ts_text(ts_r) + " are not within the proposed " + ts_text(tsi) + " / " +
                                     ts_text(tsr)));
        std::optional<SecureBytes> g_ir;
        std::optional<crypto::DhGroup> chosen_dh = choice->dh;
        if (chosen_dh != (dh ? std::optional<crypto::DhGroup>(dh->group()) : std::nullopt))
            return refused(Error(ErrorDomain::Ike, notify::NoProposalChosen,
                                 std::string(where) + ": the chosen DH group is not the one of our KE payload"));
        if (dh) {
            // KE is optional in the rule (PFS is this task's choice): absent, the response is refused.
            const KePayload* ke = in.find<KePayload>(PayloadType::KE);
            if (!ke) return refused(syntax_error(std::string(where) + ": no KE payload"));
            if (ke->group != static_cast<uint16_t>(dh->group()))
                return refused(
                    Error(ErrorDomain::Ike, notify::NoProposalChosen,
                          std::string(where) + ": KE group " + std::to_string(ke->group) + " is not the chosen one"));
            auto sh = dh->derive(ke->data);
            if (!sh.ok()) return refused(syntax_error(std::string(where) + ": KE data: " + sh.error().detail()));
            g_ir = std::move(sh).value();
        }
        Bytes n_i = in_auth ? sa.ni : ni;
        std::optional<BytesView> gv;
        if (g_ir) gv = g_ir->view();
        auto keys = derive_child_keys(*sa.prf, sa.sk_d, choice->cipher, gv, n_i, nr);
        if (!keys.ok()) {
            give_up(e, sa, now);
            return keys.error();
        }
        bool transport = c.mode == IpsecMode::Transport && in.notify(notify::UseTransportMode);
        std::optional<crypto::DhGroup> pfs = dh ? std::optional<crypto::DhGroup>(dh->group()) : std::nullopt;
        const ChildSa* replaced = rekey_of ? e.child_by_in(sa, rekey_of) : nullptr;
        ChildSa child = new_child_record(e, sa, cfg, *choice, spi, transport, ts_l, ts_r, pfs, rekey_of,
                                         replaced ? replaced->reqid : 0, now);
        auto st = e.install_child(sa, child, *keys, true);
        if (!st.ok()) {
            e.event(sa, Event::Kind::NegotiationFailed, 0,
                    "child " + c.name + ": install failed: " + st.error().detail());
            give_up(e, sa, now);
            return st;
        }
        if (!rekey_of) return {};
        ChildSa* old = e.child_by_in(sa, rekey_of);
        if (!old) return {};
        if (old->collision_spi_in) {
            // RFC 7296 2.8: the SA created with the lowest of the four nonces is redundant and is
            // closed by the endpoint that created it.
            const Bytes& ours = lowest(n_i, nr);
            const Bytes& theirs = lowest(old->collision_ni, old->collision_nr);
            if (less(ours, theirs)) {
                e.m_log->info(
                    "IKE SA #{}: Child rekey collision on {:08x}: ours has the lowest nonce, closing ours {:08x}",
                    sa.id, rekey_of, spi);
                (void)e.set_child_state(sa, *old, ChildSa::St::Rekeyed);  // the peer deletes it
                e.event(sa, Event::Kind::ChildSaRekeyed, 0,
                        c.name +
                            fmt::format(" {:08x} -> {:08x} (collision, peer's wins)", rekey_of, old->collision_spi_in));
                ChildSa* mine = e.child_by_in(sa, spi);
                if (mine) (void)e.set_child_state(sa, *mine, ChildSa::St::Deleting);
                e.queue_exchange(sa, make_delete_child_exchange({spi}), now);
                return {};
            }
            e.m_log->info("IKE SA #{}: Child rekey collision on {:08x}: ours wins", sa.id, rekey_of);
        }
        (void)e.m_backend.set_outbound(rekey_of, spi);
        (void)e.set_child_state(sa, *old, ChildSa::St::Rekeyed);
        e.event(sa, Event::Kind::ChildSaRekeyed, 0, c.name + fmt::format(" {:08x} -> {:08x}", rekey_of, spi));
        e.queue_exchange(sa, make_delete_child_exchange({rekey_of}), now);
        return {};
    }
};

struct ChildCreateTask final : ChildTask {
    const char* name() const override { return "child_create"; }
};

struct ChildRekeyTask final : ChildTask {
    ChildRekeyTask() { rekey = true; }
    const char* name() const override { return "child_rekey"; }
};

}  // namespace

Status EngineImpl::install_child(IkeSa& sa, ChildSa& child, const ChildKeys& keys, bool we_initiated) {
    touch(sa);
    const auto& cfg = peer(sa).children[child.cfg];
    ChildSaParams p;
    p.ike_sa_id = sa.id;
    p.reqid = child.reqid;
    p.spi_in = child.spi_in;
    p.spi_out = child.spi_out;
    p.cipher = child.cipher;
    p.esn = child.esn;
    p.mode = child.mode;
    p.local_addr = sa.local.addr;
    p.remote_addr = sa.remote.addr;
    p.local_port = sa.local.port;
    p.remote_port = sa.remote.port;
    p.udp_encap = sa.encap || sa.natt_port;
    p.ts_local = child.ts_local;
    p.ts_remote = child.ts_remote;
    p.keys_in = we_initiated ? keys.r_to_i : keys.i_to_r;
    p.keys_out = we_initiated ? keys.i_to_r : keys.r_to_i;
    p.lifetime = cfg.lifetime;
    p.replay_window = cfg.replay_window;
    p.name = child.name;
    auto st = m_backend.install(p);
    if (!st.ok()) return st;
    child.installed = true;
    if (m_on_child_keys) m_on_child_keys(p);
    m_log->info("IKE SA #{} ({}): Child SA {} installed, SPIs {:08x}_i {:08x}_o, {}", sa.id, peer(sa).name, child.name,
                child.spi_in, child.spi_out, x2sec::to_string(child.cipher));
    attach_child(sa, child);
    event(sa, Event::Kind::ChildSaUp, 0, child.name + " " + fmt::format("{:08x}/{:08x}", child.spi_in, child.spi_out));
    return {};
}

ChildSa new_child_record(EngineImpl& e, const IkeSa& sa, size_t cfg, const ChildChoice& choice, uint32_t spi_in,
                         bool transport, std::vector<TrafficSelector> ts_local, std::vector<TrafficSelector> ts_remote,
                         std::optional<crypto::DhGroup> pfs, uint32_t replaces_spi_in, uint32_t reqid, Millis now) {
    const auto& c = e.peer(sa).children[cfg];
    ChildSa child;
    child.name = c.name;
    child.cfg = cfg;
    child.reqid = reqid ? reqid : e.m_next_reqid++;
    child.spi_in = spi_in;
    child.spi_out = choice.peer_spi;
    child.cipher = choice.cipher;
    child.esn = choice.esn;
    child.pfs = pfs;
    child.mode = transport ? IpsecMode::Transport : IpsecMode::Tunnel;
    child.ts_local = std::move(ts_local);
    child.ts_remote = std::move(ts_remote);
    child.established_at = now;
    if (c.rekey_seconds) {
        Millis base = static_cast<Millis>(c.rekey_seconds) * 1000;
        child.rekey_at = now + base - static_cast<Millis>(e.m_rng.u32() % (base / 10 + 1));
    }
    child.replaces_spi_in = replaces_spi_in;
    return child;
}

std::unique_ptr<Task> make_child_task(size_t cfg, bool in_auth) {
    auto t = std::make_unique<ChildCreateTask>();
    t->cfg = cfg;
    t->in_auth = in_auth;
    return t;
}

std::unique_ptr<Task> make_child_rekey_responder() {
    return std::make_unique<ChildRekeyTask>();
}

Exchange make_create_child_exchange(size_t child_cfg) {
    return exchange_of(ExchangeType::CreateChildSa, make_child_task(child_cfg, false));
}

Exchange make_rekey_child_exchange(uint32_t old_spi_in) {
    auto t = std::make_unique<ChildRekeyTask>();
    t->rekey_of = old_spi_in;
    return exchange_of(ExchangeType::CreateChildSa, std::move(t));
}

// The CREATE_CHILD_SA request's task, by what it asks for.
Exchange make_create_child_responder(const Checked& in) {
    const auto& sa_p = in.get<SaPayload>(PayloadType::SA);  // required by the exchange's rule
    if (!sa_p.proposals.empty() && sa_p.proposals[0].protocol == ProtocolId::Ike)
        return exchange_of(ExchangeType::CreateChildSa, make_ike_rekey_responder());
    if (in.notify(notify::RekeySa)) return exchange_of(ExchangeType::CreateChildSa, make_child_rekey_responder());
    return exchange_of(ExchangeType::CreateChildSa, make_child_task(0, false));
}

}  // namespace x2sec::ike
