// Tasks (initiator side of each exchange) and the responder handlers for IKE_AUTH,
// CREATE_CHILD_SA and INFORMATIONAL.
#include <algorithm>

#include "engine_internal.hpp"

namespace x2sec::ike {

using namespace wire;

namespace {

Payload notify_payload(uint16_t type, Bytes data = {}, ProtocolId proto = ProtocolId::None, Bytes spi = {}) {
    return Payload{PayloadType::Notify, false, NotifyPayload{proto, std::move(spi), type, std::move(data)}};
}

Bytes spi4(uint32_t s) { return Bytes{uint8_t(s >> 24), uint8_t(s >> 16), uint8_t(s >> 8), uint8_t(s)}; }
Bytes spi8(uint64_t s) {
    Writer w;
    w.u64(s);
    return w.take();
}
uint32_t read_spi4(BytesView b) {
    return b.size() == 4 ? (uint32_t(b[0]) << 24) | (uint32_t(b[1]) << 16) | (uint32_t(b[2]) << 8) | b[3] : 0;
}
uint64_t read_spi8(BytesView b) {
    if (b.size() != 8) return 0;
    Reader r(b);
    return r.u64();
}

Error sa_gone() { return Error(ErrorDomain::Ike, -1, "IKE SA destroyed"); }

const NotifyPayload* first_error(const std::vector<Payload>& pl) {
    for (const auto& p : pl)
        if (auto* n = p.as<NotifyPayload>(); n && notify::is_error(n->type)) return n;
    return nullptr;
}

Identity identity_of(const IdPayload& id) {
    Identity i;
    i.type = static_cast<x509::IdType>(id.id_type);
    i.data = id.data;
    return i;
}

// Lowest of two nonces (byte-wise, a shorter prefix first).
const Bytes& lowest(const Bytes& a, const Bytes& b) {
    return std::lexicographical_compare(a.begin(), a.end(), b.begin(), b.end()) ? a : b;
}
bool less(const Bytes& a, const Bytes& b) { return std::lexicographical_compare(a.begin(), a.end(), b.begin(), b.end()); }

}  // namespace

// ---------------------------------------------------------------- auth helpers

Status EngineImpl::build_auth(IkeSa& sa, std::vector<Payload>& out) {
    const auto& p = peer(sa);
    Bytes octets = signed_octets(*sa.prf, sa.initiator ? sa.sk_pi : sa.sk_pr, sa.initiator ? sa.init_req : sa.init_resp,
                                 sa.initiator ? sa.nr : sa.ni, static_cast<uint8_t>(p.local_id.type), p.local_id.data);
    AuthPayload auth;
    if (p.local_auth == AuthMethod::Psk) {
        if (p.psk.empty()) return Error(ErrorDomain::Pki, auth_failure::NoCredentials, "no pre-shared key configured");
        auth.method = 2;
        SecureBytes mac = psk_auth(*sa.prf, p.psk, octets);
        auth.data.assign(mac.data(), mac.data() + mac.size());
        sa.local_auth_desc = "pre-shared key";
    } else {
        if (!p.private_key || p.cert_chain.empty())
            return Error(ErrorDomain::Pki, auth_failure::NoCredentials, "no private key or certificate configured");
        auto scheme = crypto::default_sig_scheme(p.private_key->public_key());
        if (!sa.peer_sent_hashes && (scheme == crypto::SigScheme::RsaPssSha256 || scheme == crypto::SigScheme::RsaPkcs1Sha256)) {
            // A peer without RFC 7427 support gets method 1 (RSA PKCS#1 v1.5 with SHA-1).
            auth.method = 1;
            X2SEC_TRY(auto sig, p.private_key->sign(crypto::SigScheme::RsaPkcs1Sha1, octets));
            auth.data = std::move(sig);
            sa.local_auth_desc = "RSA-SHA1 certificate";
        } else {
            auth.method = 14;
            X2SEC_TRY(auth.data, signature_auth_data(*p.private_key, scheme, octets));
            sa.local_auth_desc = std::string(crypto::sig_scheme_name(scheme)) + " certificate";
        }
    }
    out.push_back({PayloadType::AUTH, false, std::move(auth)});
    return {};
}

Status EngineImpl::verify_auth(IkeSa& sa, const std::vector<Payload>& pl, bool peer_is_initiator) {
    const auto& p = peer(sa);
    const char* where = peer_is_initiator ? "IKE_AUTH request" : "IKE_AUTH response";
    auto idp = require<IdPayload>(pl, peer_is_initiator ? PayloadType::IDi : PayloadType::IDr, where);
    auto authp = require<AuthPayload>(pl, PayloadType::AUTH, where);
    if (!idp.ok() || !authp.ok())
        return Error(ErrorDomain::Pki, static_cast<int>(x509::VerifyFailure::Other),
                     (idp.ok() ? authp.error() : idp.error()).detail());
    const auto& id = **idp;
    const auto& auth = **authp;
    Identity peer_id = identity_of(id);
    sa.remote_id_text = peer_id.to_string();
    if (p.remote_id && !(*p.remote_id == peer_id))
        return Error(ErrorDomain::Pki, static_cast<int>(x509::VerifyFailure::IdMismatch),
                     "peer identity " + peer_id.to_string() + " is not the configured " + p.remote_id->to_string());
    Bytes octets = signed_octets(*sa.prf, peer_is_initiator ? sa.sk_pi : sa.sk_pr,
                                 peer_is_initiator ? sa.init_req : sa.init_resp, peer_is_initiator ? sa.nr : sa.ni,
                                 id.id_type, id.data);
    if (auth.method == 2) {
        if (p.remote_auth != AuthMethod::Psk)
            return Error(ErrorDomain::Pki, auth_failure::MethodMismatch, "peer used a pre-shared key, a certificate is required");
        if (p.psk.empty()) return Error(ErrorDomain::Pki, auth_failure::NoCredentials, "no pre-shared key configured");
        SecureBytes expect = psk_auth(*sa.prf, p.psk, octets);
        if (!ct_equal(expect, auth.data))
            return Error(ErrorDomain::Pki, auth_failure::PskMismatch, "pre-shared key mismatch: the peer's AUTH does not verify");
        sa.remote_auth_desc = "pre-shared key";
        return {};
    }
    if (auth.method != 1 && auth.method != 14)
        return Error(ErrorDomain::Pki, auth_failure::MethodMismatch, "unsupported AUTH method " + std::to_string(auth.method));
    if (p.remote_auth != AuthMethod::Certificate)
        return Error(ErrorDomain::Pki, auth_failure::MethodMismatch, "peer used a signature, a pre-shared key is required");
    std::vector<x509::Certificate> certs;
    for (const auto& pp : pl)
        if (auto* c = pp.as<CertPayload>()) {
            if (c->encoding != 4) continue;
            // Parsed through the process-wide cache (a peer that presents the same certificate again
            // skips OpenSSL 3.0's costly d2i_X509); every check below still runs each time.
            auto cert = x509::CertificateCache::shared().parse(c->data);
            if (!cert.ok())
                return Error(ErrorDomain::Pki, static_cast<int>(x509::VerifyFailure::Other),
                             "peer certificate does not parse: " + cert.error().detail());
            certs.push_back(std::move(cert).value());
        }
    if (certs.empty())
        return Error(ErrorDomain::Pki, static_cast<int>(x509::VerifyFailure::UntrustedCa), "peer sent no certificate");
    if (!p.trust || p.trust->empty())
        return Error(ErrorDomain::Pki, static_cast<int>(x509::VerifyFailure::UntrustedCa), "no trust anchors configured");
    std::vector<x509::Certificate> inter(certs.begin() + 1, certs.end());
    auto chain = p.trust->verify(certs[0], inter, unix_now());
    if (!chain.ok()) {
        Error e = chain.error();
        return Error(ErrorDomain::Pki, e.code(), "certificate " + certs[0].subject() + ": " + e.detail());
    }
    auto idm = x509::match_identity(certs[0], static_cast<x509::IdType>(id.id_type), id.data);
    if (!idm.ok()) return Error(ErrorDomain::Pki, static_cast<int>(x509::VerifyFailure::IdMismatch), idm.error().detail());
    crypto::SigScheme scheme = crypto::SigScheme::RsaPkcs1Sha1;
    Bytes sig;
    if (auth.method == 14) {
        auto parsed = parse_signature_auth(auth.data);
        if (!parsed.ok())
            return Error(ErrorDomain::Pki, static_cast<int>(x509::VerifyFailure::BadSignature),
                         "AUTH payload: " + parsed.error().detail());
        scheme = parsed->scheme;
        sig = std::move(parsed->signature);
    } else {
        sig = auth.data;
    }
    auto v = crypto::verify_signature(certs[0].public_key(), scheme, octets, sig);
    if (!v.ok())
        return Error(ErrorDomain::Pki, static_cast<int>(x509::VerifyFailure::BadSignature),
                     "AUTH signature by " + certs[0].subject() + " does not verify: " + v.error().detail());
    sa.peer_cert_subject_der = certs[0].subject_der();
    sa.peer_cert_anchor = chain->anchor_label;
    sa.remote_auth_desc = std::string(crypto::sig_scheme_name(scheme)) + " certificate";
    m_log->info("IKE SA #{}: peer {} authenticated by {} (chains to '{}')", sa.id, sa.remote_id_text,
                sa.remote_auth_desc, chain->anchor_label);
    return {};
}

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

// ---------------------------------------------------------------- tasks

namespace {

struct IkeInitTask final : Task {
    SaPayload offered;  // our SA payload as sent, for check_chosen_proposal
    const char* name() const override { return "ike_init"; }
    std::optional<ResponsePurpose> purpose() const override { return ResponsePurpose::IkeSaInit; }
    void refuse(EngineImpl& e, IkeSa& sa, const Error& why, Millis now) override {
        e.event(sa, Event::Kind::NegotiationFailed, why.code(), why.detail());
        e.destroy(sa, now, true, why.detail());
    }
    Status build(EngineImpl& e, IkeSa& sa, std::vector<Payload>& out, Millis) override {
        const auto& p = e.peer(sa);
        crypto::DhGroup g = sa.dh ? sa.dh->group() : (sa.init_attempts ? sa.algs.dh : p.ike_proposals[0].dh[0]);
        if (!sa.dh || sa.dh->group() != g) {
            X2SEC_TRY(auto dh, e.make_dh(g));
            sa.dh = std::move(dh);
        }
        if (sa.ni.empty()) sa.ni = e.make_nonce();
        if (!sa.cookie.empty()) out.push_back(notify_payload(notify::Cookie, sa.cookie));
        SaPayload s;
        uint8_t n = 1;
        for (const auto& prop : p.ike_proposals) s.proposals.push_back(ike_proposal_to_wire(prop, n++, {}));
        offered = s;
        out.push_back({PayloadType::SA, false, std::move(s)});
        out.push_back({PayloadType::KE, false, KePayload{static_cast<uint16_t>(g), sa.dh->public_value()}});
        out.push_back({PayloadType::Nonce, false, NoncePayload{sa.ni}});
        // natd task: NAT_DETECTION_* with SPIr = 0.
        for (auto& x : e.natd_payloads(sa, sa.local, sa.remote)) out.push_back(std::move(x));
        if (p.fragmentation) out.push_back(notify_payload(notify::Ikev2FragmentationSupported));
        out.push_back(notify_payload(notify::SignatureHashAlgorithms, hex("000200030004")));
        return {};
    }
    Status process(EngineImpl& e, IkeSa& sa, const std::vector<Payload>& in, Millis now) override {
        const auto& p = e.peer(sa);
        auto refuse_as = [&](const Error& why) -> Status {
            e.refuse_response(sa, *this, ResponsePurpose::IkeSaInit, why, now);
            return sa_gone();
        };
        auto fail = [&](const std::string& why) {
            return refuse_as(Error(ErrorDomain::Ike, notify::NoProposalChosen, why));
        };
        const char* where = "IKE_SA_INIT response";
        auto sa_p = require<SaPayload>(in, PayloadType::SA, where);
        if (!sa_p.ok()) return refuse_as(sa_p.error());
        auto ke_p = require<KePayload>(in, PayloadType::KE, where);
        if (!ke_p.ok()) return refuse_as(ke_p.error());
        auto nonce_p = require<NoncePayload>(in, PayloadType::Nonce, where);
        if (!nonce_p.ok()) return refuse_as(nonce_p.error());
        if (auto chosen = check_chosen_proposal(offered, **sa_p, 0); !chosen.ok()) return refuse_as(chosen.error());
        Bytes spi;
        auto algs = parse_ike_choice(**sa_p, &spi);
        if (!algs) return fail("responder chose a malformed IKE proposal");
        if (!proposals_allow(p.ike_proposals, *algs)) return fail("responder chose an IKE proposal we did not offer");
        const KePayload* ke = *ke_p;
        if (!sa.dh || ke->group != static_cast<uint16_t>(sa.dh->group()) || algs->dh != sa.dh->group())
            return fail("responder's KE group does not match");
        sa.algs = *algs;
        sa.nr = (*nonce_p)->data;
        auto g_ir = sa.dh->derive(ke->data);
        if (!g_ir.ok())
            return refuse_as(syntax_error("IKE_SA_INIT response: KE data is invalid: " + g_ir.error().detail()));
        sa.peer_frag = p.fragmentation && find_notify(in, notify::Ikev2FragmentationSupported);
        if (auto* sh = find_notify(in, notify::SignatureHashAlgorithms)) {
            sa.peer_sent_hashes = true;
            for (size_t i = 0; i + 1 < sh->data.size(); i += 2)
                sa.peer_hashes.push_back(static_cast<uint16_t>((sh->data[i] << 8) | sh->data[i + 1]));
        }
        e.note_certreq(sa, in);
        e.process_natd(sa, in, sa.local, sa.remote);
        auto st = e.derive_ike(sa, *g_ir, nullptr, nullptr);
        if (!st.ok()) return fail("key derivation failed: " + st.error().detail());
        e.float_ports(sa);
        e.m_log->info("IKE SA #{} ({}): IKE_SA_INIT done: {}", sa.id, p.name, ike_algs_name(sa.algs));
        e.queue_exchange(sa, make_ike_auth_exchange(p.children.empty() ? SIZE_MAX : 0), now);
        return {};
    }
    void abort(EngineImpl&, IkeSa&, Millis) override {}
};

// cert + auth tasks of IKE_AUTH (initiator).
struct IkeAuthTask final : Task {
    const char* name() const override { return "ike_auth"; }
    std::optional<ResponsePurpose> purpose() const override { return ResponsePurpose::IkeAuth; }
    // The responder's IKE_AUTH is unusable: the IKE SA cannot be authenticated.  The peer is
    // told to delete it (a DELETE in a one-shot INFORMATIONAL request, not retransmitted), and
    // ours goes; the Child SA task that follows finds the SA gone.
    void refuse(EngineImpl& e, IkeSa& sa, const Error& why, Millis now) override {
        e.event(sa, Event::Kind::NegotiationFailed, why.code(), why.detail());
        e.send_one_shot_request(sa, {Payload{PayloadType::Delete, false, DeletePayload{ProtocolId::Ike, 0, {}}}});
        e.destroy(sa, now, true, "IKE_AUTH response refused");
    }
    Status build(EngineImpl& e, IkeSa& sa, std::vector<Payload>& out, Millis) override {
        const auto& p = e.peer(sa);
        out.push_back({PayloadType::IDi, false, IdPayload{static_cast<uint8_t>(p.local_id.type), p.local_id.data}});
        if (p.local_auth == AuthMethod::Certificate)
            for (const auto& c : p.cert_chain) out.push_back({PayloadType::CERT, false, CertPayload{4, c.der()}});
        if (p.remote_auth == AuthMethod::Certificate && p.send_certreq && p.trust && !p.trust->empty()) {
            CertReqPayload cr;
            for (const auto& h : p.trust->anchor_spki_sha1s()) cr.data.insert(cr.data.end(), h.begin(), h.end());
            out.push_back({PayloadType::CERTREQ, false, cr});
        }
        if (p.remote_id)
            out.push_back({PayloadType::IDr, false, IdPayload{static_cast<uint8_t>(p.remote_id->type), p.remote_id->data}});
        // RFC 7296 2.4, as strongSwan does: the first IKE SA to this peer says so.
        if (p.unique != UniquePolicy::Never && !e.has_contact(sa)) {
            out.push_back(notify_payload(notify::InitialContact));
            e.m_counters.inc("ike.tx.initial_contact");
        }
        auto st = e.build_auth(sa, out);
        if (!st.ok()) {
            e.event(sa, Event::Kind::AuthFailed, st.error().code(), st.error().detail());
            return st;
        }
        return {};
    }
    Status process(EngineImpl& e, IkeSa& sa, const std::vector<Payload>& in, Millis now) override {
        if (auto* n = find_notify(in, notify::AuthenticationFailed)) {
            (void)n;
            e.event(sa, Event::Kind::AuthFailed, auth_failure::PeerRejected, "peer answered AUTHENTICATION_FAILED");
            e.destroy(sa, now, true, "authentication failed");
            return sa_gone();
        }
        if (!find_payload(in, PayloadType::AUTH) || !find_payload(in, PayloadType::IDr)) {
            auto* err = first_error(in);
            int code = err ? err->type : notify::InvalidSyntax;
            e.event(sa, Event::Kind::NegotiationFailed, code,
                    std::string("IKE_AUTH answered ") + (err ? notify::name(err->type) : "without IDr/AUTH"));
            e.destroy(sa, now, true, "IKE_AUTH failed");
            return sa_gone();
        }
        auto st = e.verify_auth(sa, in, false);
        if (!st.ok()) {
            e.m_counters.inc("ike.auth.failed");
            e.event(sa, Event::Kind::AuthFailed, st.error().code(), st.error().detail());
            // Tell the peer (RFC 7296 2.21.2), then forget the SA.
            e.send_one_shot_request(sa, {notify_payload(notify::AuthenticationFailed)});
            e.destroy(sa, now, true, "authentication failed");
            return sa_gone();
        }
        e.transition(sa, SaState::Established);
        sa.established_at = now;
        e.schedule_rekeys(sa, now);
        e.event(sa, Event::Kind::IkeSaUp, 0, sa.local_id_text + " <-> " + sa.remote_id_text);
        return {};
    }
};

// child_create: the first Child SA in IKE_AUTH, another one, or a rekey (CREATE_CHILD_SA).
struct ChildCreateTask final : Task {
    size_t cfg = 0;
    bool in_auth = false;
    uint32_t rekey_of = 0;  // old child's inbound SPI
    uint32_t spi = 0;
    Bytes ni;
    std::optional<crypto::DhKeyPair> dh;
    std::optional<crypto::DhGroup> group_override;
    std::vector<TrafficSelector> tsi, tsr;
    SaPayload offered;  // our SA payload as sent, for check_chosen_proposal
    const char* name() const override { return rekey_of ? "child_rekey" : "child_create"; }
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

    Status build(EngineImpl& e, IkeSa& sa, std::vector<Payload>& out, Millis) override {
        const auto& p = e.peer(sa);
        if (rekey_of) {
            ChildSa* old = e.child_by_in(sa, rekey_of);
            if (!old || old->st != ChildSa::St::Installed)
                return Error(ErrorDomain::Ike, 0, "Child SA to rekey is gone or busy");
            cfg = old->cfg;
            old->st = ChildSa::St::Rekeying;
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
            if (ChildSa* old = e.child_by_in(sa, rekey_of); old && old->st == ChildSa::St::Rekeying) old->st = ChildSa::St::Installed;
        // The SPI reserved in build() goes back unless a Child SA was attached with it.
        if (spi != 0 && e.child_owner(spi) == nullptr) e.release_child_spi(spi);
        spi = 0;
    }

    uint32_t reserved_child_spi() const override { return spi; }

    Status process(EngineImpl& e, IkeSa& sa, const std::vector<Payload>& in, Millis now) override {
        const auto& p = e.peer(sa);
        const auto& c = p.children[cfg];
        if (auto* ike = find_notify(in, notify::InvalidKePayload); ike && !in_auth && !group_override) {
            auto g = static_cast<crypto::DhGroup>((ike->data[0] << 8) | ike->data[1]);
            bool ok = false;
            for (const auto& cp : c.proposals) ok |= std::find(cp.pfs.begin(), cp.pfs.end(), g) != cp.pfs.end();
            abort(e, sa, now);
            if (ok) {
                auto retry = rekey_of ? make_rekey_child_exchange(rekey_of) : make_create_child_exchange(cfg);
                static_cast<ChildCreateTask*>(retry.tasks[0].get())->group_override = g;
                e.queue_exchange(sa, std::move(retry), now);
                return {};
            }
            e.event(sa, Event::Kind::NegotiationFailed, notify::InvalidKePayload, "child " + c.name + ": unacceptable PFS group");
            return Error(ErrorDomain::Ike, notify::InvalidKePayload, "unacceptable PFS group");
        }
        if (auto* err = first_error(in)) {
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
        const char* where = in_auth ? "IKE_AUTH response" : "CREATE_CHILD_SA response";
        auto sa_p = require<SaPayload>(in, PayloadType::SA, where);
        if (!sa_p.ok()) return refused(sa_p.error());
        auto tsi_p = require<TsPayload>(in, PayloadType::TSi, where);
        if (!tsi_p.ok()) return refused(tsi_p.error());
        auto tsr_p = require<TsPayload>(in, PayloadType::TSr, where);
        if (!tsr_p.ok()) return refused(tsr_p.error());
        Bytes nr;
        if (in_auth) {
            nr = sa.nr;
        } else {
            auto nonce_p = require<NoncePayload>(in, PayloadType::Nonce, where);
            if (!nonce_p.ok()) return refused(nonce_p.error());
            nr = (*nonce_p)->data;
        }
        // RFC 7296 3.3.6: exactly one of the proposals we offered, one transform of each type
        // (ESN included) from that proposal.
        if (auto chosen = check_chosen_proposal(offered, **sa_p, 4); !chosen.ok()) return refused(chosen.error());
        auto choice = parse_child_choice(**sa_p);
        if (!choice)
            return refused(Error(ErrorDomain::Ike, notify::NoProposalChosen,
                                 std::string(where) + ": the chosen ESP proposal is not one we can use"));
        if (choice->peer_spi == 0)
            return refused(syntax_error(std::string(where) + ": the chosen ESP proposal has SPI 0"));
        // RFC 7296 2.9: the responder may only narrow what we proposed.
        const std::vector<TrafficSelector>& ts_l = (*tsi_p)->selectors;
        const std::vector<TrafficSelector>& ts_r = (*tsr_p)->selectors;
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
            auto ke = require<KePayload>(in, PayloadType::KE, where);
            if (!ke.ok()) return refused(ke.error());
            if ((*ke)->group != static_cast<uint16_t>(dh->group()))
                return refused(Error(ErrorDomain::Ike, notify::NoProposalChosen,
                                     std::string(where) + ": KE group " + std::to_string((*ke)->group) +
                                         " is not the chosen one"));
            auto sh = dh->derive((*ke)->data);
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
        ChildSa child;
        child.name = c.name;
        child.cfg = cfg;
        child.spi_in = spi;
        child.spi_out = choice->peer_spi;
        child.cipher = choice->cipher;
        child.esn = choice->esn;
        child.pfs = dh ? std::optional<crypto::DhGroup>(dh->group()) : std::nullopt;
        child.mode = (c.mode == IpsecMode::Transport && find_notify(in, notify::UseTransportMode)) ? IpsecMode::Transport
                                                                                                  : IpsecMode::Tunnel;
        child.ts_local = ts_l;
        child.ts_remote = ts_r;
        child.established_at = now;
        if (c.rekey_seconds) {
            Millis base = static_cast<Millis>(c.rekey_seconds) * 1000;
            child.rekey_at = now + base - static_cast<Millis>(e.m_rng.u32() % (base / 10 + 1));
        }
        ChildSa* old = rekey_of ? e.child_by_in(sa, rekey_of) : nullptr;
        child.reqid = old ? old->reqid : e.m_next_reqid++;
        child.replaces_spi_in = rekey_of;
        auto st = e.install_child(sa, child, *keys, true);
        if (!st.ok()) {
            e.event(sa, Event::Kind::NegotiationFailed, 0, "child " + c.name + ": install failed: " + st.error().detail());
            give_up(e, sa, now);
            return st;
        }
        if (!rekey_of) return {};
        old = e.child_by_in(sa, rekey_of);
        if (!old) return {};
        if (old->collision_spi_in) {
            // RFC 7296 2.8: the SA created with the lowest of the four nonces is redundant and is
            // closed by the endpoint that created it.
            const Bytes& ours = lowest(n_i, nr);
            const Bytes& theirs = lowest(old->collision_ni, old->collision_nr);
            if (less(ours, theirs)) {
                e.m_log->info("IKE SA #{}: Child rekey collision on {:08x}: ours has the lowest nonce, closing ours {:08x}",
                              sa.id, rekey_of, spi);
                old->st = ChildSa::St::Rekeyed;  // the peer deletes it
                e.event(sa, Event::Kind::ChildSaRekeyed, 0,
                        c.name + fmt::format(" {:08x} -> {:08x} (collision, peer's wins)", rekey_of, old->collision_spi_in));
                ChildSa* mine = e.child_by_in(sa, spi);
                if (mine) mine->st = ChildSa::St::Deleting;
                e.queue_exchange(sa, make_delete_child_exchange({spi}), now);
                return {};
            }
            e.m_log->info("IKE SA #{}: Child rekey collision on {:08x}: ours wins", sa.id, rekey_of);
        }
        (void)e.m_backend.set_outbound(rekey_of, spi);
        old->st = ChildSa::St::Rekeyed;
        e.event(sa, Event::Kind::ChildSaRekeyed, 0, c.name + fmt::format(" {:08x} -> {:08x}", rekey_of, spi));
        e.queue_exchange(sa, make_delete_child_exchange({rekey_of}), now);
        return {};
    }
};

struct IkeRekeyTask final : Task {
    SaPayload offered;  // our SA payload as sent, for check_chosen_proposal
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
    Status build(EngineImpl& e, IkeSa& sa, std::vector<Payload>& out, Millis) override {
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
        out.push_back({PayloadType::KE, false, KePayload{static_cast<uint16_t>(sa.algs.dh), sa.rekey.dh->public_value()}});
        e.transition(sa, SaState::Rekeying);
        return {};
    }
    void abort(EngineImpl& e, IkeSa& sa, Millis now) override {
        if (sa.state == SaState::Rekeying) {
            e.transition(sa, SaState::Established);
            adopt_theirs(e, sa, now);
        }
    }
    // Our rekey failed but we answered the peer's: theirs is the new IKE SA.
    static void adopt_theirs(EngineImpl& e, IkeSa& sa, Millis now) {
        if (!sa.rekey.theirs_id) return;
        IkeSa* theirs = e.find_sa(sa.rekey.theirs_id);
        sa.rekey.theirs_id = 0;
        if (theirs && theirs->state == SaState::Established) {
            e.move_children(sa, *theirs);
            e.transition(sa, SaState::Rekeyed);
            theirs->established_at = now;
            e.schedule_rekeys(*theirs, now);
            e.event(*theirs, Event::Kind::IkeSaRekeyed, 0, "replaces IKE SA #" + std::to_string(sa.id));
        }
    }
    Status process(EngineImpl& e, IkeSa& sa, const std::vector<Payload>& in, Millis now) override {
        if (auto* err = first_error(in)) {
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
        auto sa_p = require<SaPayload>(in, PayloadType::SA, where);
        if (!sa_p.ok()) return refused(sa_p.error());
        auto ke_p = require<KePayload>(in, PayloadType::KE, where);
        if (!ke_p.ok()) return refused(ke_p.error());
        auto nonce_p = require<NoncePayload>(in, PayloadType::Nonce, where);
        if (!nonce_p.ok()) return refused(nonce_p.error());
        Bytes spi;
        std::optional<IkeAlgorithms> algs = parse_ike_choice(**sa_p, &spi);
        if (!algs || read_spi8(spi) == 0)
            return refused(syntax_error(std::string(where) + ": malformed IKE proposal or SPI"));
        const KePayload* ke = *ke_p;
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
            ns.nr = (*nonce_p)->data;
            copy_context(sa, ns);
            return ns;
        };
        if (auto chosen = check_chosen_proposal(offered, **sa_p, 8); !chosen.ok() || algs->dh != sa.algs.dh) {
            Error why = chosen.ok() ? Error(ErrorDomain::Ike, notify::NoProposalChosen,
                                            std::string(where) + ": the chosen DH group is not the current one")
                                    : chosen.error();
            IkeSa& ns = new_rekeyed_sa();
            if (e.derive_ike(ns, *g_ir, &sa.sk_d, &*sa.prf).ok()) {
                e.transition(ns, SaState::Established);  // never up (established_at 0): no events
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
        e.transition(ns, SaState::Established);
        ns.rekeyed_from = sa.id;
        if (sa.rekey.theirs_id) {
            IkeSa* theirs = e.find_sa(sa.rekey.theirs_id);
            const Bytes& ours_low = lowest(ns.ni, ns.nr);
            const Bytes& theirs_low = lowest(sa.rekey.their_ni, sa.rekey.their_nr);
            if (theirs && less(ours_low, theirs_low)) {
                e.m_log->info("IKE SA #{}: IKE rekey collision: ours (#{}) has the lowest nonce and is closed", sa.id, ns.id);
                ns.established_at = now;
                e.transition(sa, SaState::Established);
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
            if (c->st == ChildSa::St::Installed) c->st = ChildSa::St::Deleting;
            d.spis.push_back(spi4(s));
        }
        if (d.spis.empty()) return Error(ErrorDomain::Ike, 0, "Child SAs already gone");
        out.push_back({PayloadType::Delete, false, std::move(d)});
        return {};
    }
    Status process(EngineImpl& e, IkeSa&, const std::vector<Payload>&, Millis) override {
        for (uint32_t s : spis) {
            // The peer confirmed the delete.  An IKE rekey answered meanwhile may have moved the
            // Child SA to the new IKE SA: the owner index finds it wherever it is now.
            IkeSa* owner = e.child_owner(s);
            ChildSa* c = owner ? e.child_by_in(*owner, s) : nullptr;
            if (!c) continue;
            bool rekeyed = c->st == ChildSa::St::Rekeyed;
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
    Status process(EngineImpl& e, IkeSa& sa, const std::vector<Payload>&, Millis) override {
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
    Status build(EngineImpl& e, IkeSa& sa, std::vector<Payload>& out, Millis) override {
        DeletePayload d;
        d.protocol = ProtocolId::Ike;
        d.spi_size = 0;
        out.push_back({PayloadType::Delete, false, std::move(d)});
        if (sa.state != SaState::Rekeyed) e.transition(sa, SaState::Deleting);
        return {};
    }
    Status process(EngineImpl& e, IkeSa& sa, const std::vector<Payload>&, Millis now) override {
        e.destroy(sa, now, sa.state != SaState::Rekeyed, "deleted");
        return sa_gone();
    }
};

struct DpdTask final : Task {
    const char* name() const override { return "dpd"; }
    Status build(EngineImpl&, IkeSa&, std::vector<Payload>&, Millis) override { return {}; }
    Status process(EngineImpl&, IkeSa&, const std::vector<Payload>&, Millis) override { return {}; }
};

// RFC 7296 2.3 / 3.10.1: an INVALID_MESSAGE_ID notify goes in a new INFORMATIONAL request of
// ours (never in a response: the invalid request is not acknowledged), with the offending
// four-octet Message ID as notification data.
struct InvalidMidNotifyTask final : Task {
    uint32_t bad_mid = 0;
    const char* name() const override { return "invalid_message_id"; }
    Status build(EngineImpl&, IkeSa&, std::vector<Payload>& out, Millis) override {
        Bytes data{static_cast<uint8_t>(bad_mid >> 24), static_cast<uint8_t>(bad_mid >> 16),
                   static_cast<uint8_t>(bad_mid >> 8), static_cast<uint8_t>(bad_mid)};
        out.push_back({PayloadType::Notify, false, NotifyPayload{ProtocolId::None, {}, notify::InvalidMessageId, data}});
        return {};
    }
    Status process(EngineImpl&, IkeSa& sa, const std::vector<Payload>&, Millis) override {
        sa.invalid_mid_pending = false;
        return {};
    }
    void abort(EngineImpl&, IkeSa& sa, Millis) override { sa.invalid_mid_pending = false; }
};

}  // namespace

namespace {
// An exchange of one type carrying the given tasks, in order.
template <typename... Tasks>
Exchange exchange_of(ExchangeType type, std::unique_ptr<Tasks>... tasks) {
    Exchange ex;
    ex.type = type;
    (ex.tasks.push_back(std::move(tasks)), ...);
    return ex;
}

std::unique_ptr<ChildCreateTask> child_task(size_t cfg, uint32_t rekey_of, bool in_auth) {
    auto t = std::make_unique<ChildCreateTask>();
    t->cfg = cfg;
    t->rekey_of = rekey_of;
    t->in_auth = in_auth;
    return t;
}
}  // namespace

Exchange make_ike_init_exchange() { return exchange_of(ExchangeType::IkeSaInit, std::make_unique<IkeInitTask>()); }

Exchange make_ike_auth_exchange(size_t child_cfg) {
    if (child_cfg == SIZE_MAX) return exchange_of(ExchangeType::IkeAuth, std::make_unique<IkeAuthTask>());
    return exchange_of(ExchangeType::IkeAuth, std::make_unique<IkeAuthTask>(), child_task(child_cfg, 0, true));
}

Exchange make_create_child_exchange(size_t child_cfg) {
    return exchange_of(ExchangeType::CreateChildSa, child_task(child_cfg, 0, false));
}

Exchange make_rekey_child_exchange(uint32_t old_spi_in) {
    return exchange_of(ExchangeType::CreateChildSa, child_task(0, old_spi_in, false));
}

Exchange make_rekey_ike_exchange() {
    return exchange_of(ExchangeType::CreateChildSa, std::make_unique<IkeRekeyTask>());
}

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
    m_log->warn("IKE SA #{} ({}): asking {} to delete the Child SA it created for our refused request (our SPI "
                "{:08x}) (ike.tx.delete_refused_child)",
                sa.id, peer(sa).name, sa.remote.to_string(), spi_in);
    queue_exchange(sa, make_delete_refused_child_exchange({spi_in}), now);
}

Exchange make_delete_ike_exchange() {
    return exchange_of(ExchangeType::Informational, std::make_unique<DeleteIkeTask>());
}

Exchange make_invalid_mid_exchange(uint32_t bad_mid) {
    auto t = std::make_unique<InvalidMidNotifyTask>();
    t->bad_mid = bad_mid;
    return exchange_of(ExchangeType::Informational, std::move(t));
}

Exchange make_dpd_exchange() { return exchange_of(ExchangeType::Informational, std::make_unique<DpdTask>()); }

void EngineImpl::send_one_shot_request(IkeSa& sa, const std::vector<Payload>& payloads) {
    Header h;
    h.spi_i = sa.spi_i;
    h.spi_r = sa.spi_r;
    h.exchange = ExchangeType::Informational;
    h.flags = sa.initiator ? kFlagInitiator : 0;
    h.message_id = sa.my_mid++;
    if (auto pk = protect(sa, h, payloads); pk.ok()) send_packets(sa, *pk);
}

std::vector<uint64_t> EngineImpl::same_identities(const IkeSa& sa, bool responder_only) {
    std::vector<uint64_t> out;
    for (const auto& [id, o] : m_sas) {
        if (id == sa.id || o->established_at == 0) continue;
        if (o->state != SaState::Established && o->state != SaState::Rekeying) continue;
        if (responder_only && o->initiator) continue;
        if (o->local_id_text == sa.local_id_text && o->remote_id_text == sa.remote_id_text) out.push_back(id);
    }
    return out;
}

bool EngineImpl::has_contact(const IkeSa& sa) const {
    for (const auto& [id, o] : m_sas)
        if (id != sa.id && o->peer_idx == sa.peer_idx && o->state != SaState::Destroyed) return true;
    return false;
}

void EngineImpl::enforce_unique(IkeSa& sa, bool initial_contact, Millis now) {
    const auto& p = peer(sa);
    if (!initial_contact && p.unique != UniquePolicy::Replace) return;
    for (uint64_t id : same_identities(sa, !initial_contact)) {
        IkeSa* o = find_sa(id);
        if (!o) continue;
        if (initial_contact) {
            m_counters.inc("ike.auth.initial_contact_deleted");
            m_log->warn("IKE SA #{} ({}): INITIAL_CONTACT from {} ({}): deleting IKE SA #{} and its {} Child SA(s) "
                        "(ike.auth.initial_contact_deleted)",
                        sa.id, p.name, sa.remote.to_string(), sa.remote_id_text, id, o->children.size());
        } else {
            m_counters.inc("ike.auth.unique_replaced");
            m_log->warn("IKE SA #{} ({}): {} authenticated again from {}: replacing IKE SA #{} and its {} Child SA(s) "
                        "(unique = replace, ike.auth.unique_replaced)",
                        sa.id, p.name, sa.remote_id_text, sa.remote.to_string(), id, o->children.size());
            // The peer may still hold it (a second device with these identities): tell it.
            send_one_shot_request(*o, {Payload{PayloadType::Delete, false, DeletePayload{ProtocolId::Ike, 0, {}}}});
        }
        destroy(*o, now, true, initial_contact ? "INITIAL_CONTACT" : "replaced (unique)");
    }
}

void EngineImpl::finish_ike_rekey(IkeSa& old_sa, IkeSa& ns, Millis now) {
    move_children(old_sa, ns);
    ns.established_at = now;
    schedule_rekeys(ns, now);
    transition(old_sa, SaState::Rekeyed);
    event(ns, Event::Kind::IkeSaRekeyed, 0, "replaces IKE SA #" + std::to_string(old_sa.id));
}

// ---------------------------------------------------------------- responders

// Like strongSwan: among the configs whose addresses matched the IKE_SA_INIT, the one whose
// remote_id is the peer's IDi (an unset remote_id matches any IDi, ranking below an exact
// match), preferring a local_id equal to the IDr the initiator sent, then the IKE_SA_INIT order.
Status EngineImpl::select_peer(IkeSa& sa, const std::vector<Payload>& pl) {
    if (sa.candidates.empty()) return {};  // not from IKE_SA_INIT (cannot happen): keep peer_idx
    auto idi_p = require<IdPayload>(pl, PayloadType::IDi, "IKE_AUTH request");
    if (!idi_p.ok()) return Error(ErrorDomain::Pki, static_cast<int>(x509::VerifyFailure::Other), idi_p.error().detail());
    Identity idi = identity_of(**idi_p);
    auto idr_p = find_body<IdPayload>(pl, PayloadType::IDr, "IKE_AUTH request");
    if (!idr_p.ok()) return Error(ErrorDomain::Pki, static_cast<int>(x509::VerifyFailure::Other), idr_p.error().detail());
    std::optional<Identity> idr;
    if (*idr_p) idr = identity_of(**idr_p);
    std::optional<size_t> best;
    int best_rank = 0;
    std::string names, no_proposal;
    for (size_t i : sa.candidates) {
        const auto& c = m_config.peers[i];
        names += (names.empty() ? "" : ", ") + c.name;
        int rank = 0;
        if (c.remote_id) {
            if (!(*c.remote_id == idi)) continue;
        } else {
            rank += 2;
        }
        // Like strongSwan: a candidate that would not have accepted the IKE proposal chosen at
        // IKE_SA_INIT (by the best address match) is ignored.
        if (!proposals_allow(c.ike_proposals, sa.algs)) {
            no_proposal += (no_proposal.empty() ? "" : ", ") + c.name;
            continue;
        }
        if (idr && !(c.local_id == *idr)) rank += 1;
        if (!best || rank < best_rank) {
            best = i;
            best_rank = rank;
        }
    }
    if (!best && !no_proposal.empty()) {
        sa.remote_id_text = idi.to_string();
        m_counters.inc("ike.auth.proposal_mismatch");
        return Error(ErrorDomain::Ike, auth_failure::ProposalMismatch,
                     "peer config(s) " + no_proposal + " for identity " + idi.to_string() + " from " +
                         sa.remote.to_string() + " do not accept the IKE proposal " + ike_algs_name(sa.algs) +
                         " chosen at IKE_SA_INIT (candidates: " + names + ")");
    }
    if (!best) {
        sa.remote_id_text = idi.to_string();
        m_counters.inc("ike.auth.no_peer_config");
        return Error(ErrorDomain::Pki, static_cast<int>(x509::VerifyFailure::IdMismatch),
                     "no peer config for identity " + idi.to_string() + " from " + sa.remote.to_string() +
                         " (candidates: " + names + ")");
    }
    if (*best != sa.peer_idx) {
        m_log->info("IKE SA #{}: peer config {} selected for {} (was {})", sa.id, m_config.peers[*best].name,
                    idi.to_string(), peer(sa).name);
        sa.peer_idx = *best;
        sa.local_id_text = peer(sa).local_id.to_string();
    }
    return {};
}

void EngineImpl::respond_ike_auth(IkeSa& sa, uint32_t mid, const std::vector<Payload>& pl, Millis now) {
    auto st = select_peer(sa, pl);
    const auto& p = peer(sa);
    // Before authentication, so the node agent learns the CAs even when authentication fails.
    note_certreq(sa, pl);
    if (st.ok()) st = verify_auth(sa, pl, true);
    if (!st.ok()) {
        m_counters.inc("ike.auth.failed");
        m_log->warn("IKE SA #{} ({}): authentication of {} failed: {}", sa.id, p.name, sa.remote.to_string(),
                    st.error().detail());
        event(sa, Event::Kind::AuthFailed, st.error().code(), st.error().detail());
        send_error_response(sa, ExchangeType::IkeAuth, mid, notify::AuthenticationFailed);
        destroy(sa, now, true, "authentication failed");
        return;
    }
    // Unique identities: with `keep`, a second IKE SA for the same identities is refused
    // unless the peer says (INITIAL_CONTACT) it holds no other.
    bool initial_contact = find_notify(pl, notify::InitialContact) != nullptr && p.unique != UniquePolicy::Never;
    if (initial_contact) count("initial_contact");
    if (p.unique == UniquePolicy::Keep && !initial_contact) {
        auto others = same_identities(sa, false);
        if (!others.empty()) {
            m_counters.inc("ike.auth.unique_keep_refused");
            std::string why = fmt::format("IKE SA #{} already holds the identities {} <-> {} (unique = keep)",
                                          others.front(), sa.local_id_text, sa.remote_id_text);
            m_log->warn("IKE SA #{} ({}): refused: {} (ike.auth.unique_keep_refused)", sa.id, p.name, why);
            event(sa, Event::Kind::AuthFailed, auth_failure::PeerRejected, why);
            send_error_response(sa, ExchangeType::IkeAuth, mid, notify::AuthenticationFailed);
            destroy(sa, now, true, "unique = keep");
            return;
        }
    }
    std::vector<Payload> out;
    out.push_back({PayloadType::IDr, false, IdPayload{static_cast<uint8_t>(p.local_id.type), p.local_id.data}});
    if (p.local_auth == AuthMethod::Certificate)
        for (const auto& c : p.cert_chain) out.push_back({PayloadType::CERT, false, CertPayload{4, c.der()}});
    auto ast = build_auth(sa, out);
    if (!ast.ok()) {
        event(sa, Event::Kind::AuthFailed, ast.error().code(), ast.error().detail());
        send_error_response(sa, ExchangeType::IkeAuth, mid, notify::AuthenticationFailed);
        destroy(sa, now, true, "no credentials");
        return;
    }
    transition(sa, SaState::Established);
    sa.established_at = now;
    schedule_rekeys(sa, now);
    event(sa, Event::Kind::IkeSaUp, 0, sa.local_id_text + " <-> " + sa.remote_id_text);
    enforce_unique(sa, initial_contact, now);

    // The first Child SA: SA, TSi and TSr together, or none of them.
    auto sa_r = find_body<SaPayload>(pl, PayloadType::SA, "IKE_AUTH request");
    auto tsi_r = find_body<TsPayload>(pl, PayloadType::TSi, "IKE_AUTH request");
    auto tsr_r = find_body<TsPayload>(pl, PayloadType::TSr, "IKE_AUTH request");
    const SaPayload* sa_p = sa_r.ok() ? *sa_r : nullptr;
    const TsPayload* tsi_p = tsi_r.ok() ? *tsi_r : nullptr;
    const TsPayload* tsr_p = tsr_r.ok() ? *tsr_r : nullptr;
    bool child_asked = sa_p || tsi_p || tsr_p || !sa_r.ok() || !tsi_r.ok() || !tsr_r.ok();
    if (child_asked && !(sa_p && tsi_p && tsr_p)) {
        count("invalid_syntax.ike_auth_request");
        m_log->error("IKE SA #{} ({}): IKE_AUTH request from {} asks for a Child SA without all of SA, TSi and TSr; "
                     "no Child SA (ike.rx.invalid_syntax.ike_auth_request)",
                     sa.id, p.name, sa.remote.to_string());
        event(sa, Event::Kind::NegotiationFailed, notify::InvalidSyntax, "first Child SA: SA, TSi or TSr missing");
        out.push_back(notify_payload(notify::InvalidSyntax));
    }
    if (sa_p && tsi_p && tsr_p) {
        const auto& tsi = tsi_p->selectors;
        const auto& tsr = tsr_p->selectors;
        uint16_t error = notify::TsUnacceptable;
        bool done = false;
        for (size_t i = 0; i < p.children.size() && !done; ++i) {
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
            ChildSa child;
            child.name = c.name;
            child.cfg = i;
            child.reqid = m_next_reqid++;
            child.spi_in = new_child_spi();
            child.spi_out = choice->peer_spi;
            child.cipher = choice->cipher;
            child.esn = choice->esn;
            bool transport = c.mode == IpsecMode::Transport && find_notify(pl, notify::UseTransportMode);
            child.mode = transport ? IpsecMode::Transport : IpsecMode::Tunnel;
            child.ts_local = nr;
            child.ts_remote = ni;
            child.established_at = now;
            if (c.rekey_seconds) {
                Millis base = static_cast<Millis>(c.rekey_seconds) * 1000;
                child.rekey_at = now + base - static_cast<Millis>(m_rng.u32() % (base / 10 + 1));
            }
            auto ist = install_child(sa, child, *keys, false);
            if (!ist.ok()) {
                release_child_spi(child.spi_in);
                error = notify::TemporaryFailure;
                m_log->error("IKE SA #{}: Child SA install failed: {}", sa.id, ist.error().to_string());
                break;
            }
            out.push_back({PayloadType::SA, false, SaPayload{{child_choice_to_wire(*choice, child.spi_in)}}});
            out.push_back({PayloadType::TSi, false, TsPayload{ni}});
            out.push_back({PayloadType::TSr, false, TsPayload{nr}});
            if (transport) out.push_back(notify_payload(notify::UseTransportMode));
            done = true;
        }
        if (!done) {
            m_log->warn("IKE SA #{}: first Child SA refused: {}", sa.id, notify::name(error));
            event(sa, Event::Kind::NegotiationFailed, error, std::string("first Child SA: ") + notify::name(error));
            out.push_back(notify_payload(error));
        }
    }
    send_response(sa, ExchangeType::IkeAuth, mid, out);
}

void EngineImpl::respond_create_child(IkeSa& sa, uint32_t mid, const std::vector<Payload>& pl, Millis now) {
    const auto& p = peer(sa);
    auto reply_error = [&](uint16_t code, Bytes data = {}) {
        m_log->info("IKE SA #{}: CREATE_CHILD_SA refused: {}", sa.id, notify::name(code));
        send_error_response(sa, ExchangeType::CreateChildSa, mid, code, std::move(data));
    };
    // RFC 7296 2.21: a request missing a payload it needs is answered INVALID_SYNTAX.
    auto invalid = [&](const Error& err) {
        count("invalid_syntax.create_child_request");
        m_log->error("IKE SA #{} ({}): {} (ike.rx.invalid_syntax.create_child_request)", sa.id, p.name, err.detail());
        reply_error(notify::InvalidSyntax);
    };
    const char* where = "CREATE_CHILD_SA request";
    auto sa_r = require<SaPayload>(pl, PayloadType::SA, where);
    if (!sa_r.ok()) return invalid(sa_r.error());
    auto ni_r = require<NoncePayload>(pl, PayloadType::Nonce, where);
    if (!ni_r.ok()) return invalid(ni_r.error());
    auto ke_r = find_body<KePayload>(pl, PayloadType::KE, where);
    if (!ke_r.ok()) return invalid(ke_r.error());
    const SaPayload* sa_p = *sa_r;
    const NoncePayload* ni_p = *ni_r;
    const KePayload* ke = *ke_r;
    bool ike_rekey = !sa_p->proposals.empty() && sa_p->proposals[0].protocol == ProtocolId::Ike;
    if (sa.state == SaState::Rekeyed || sa.state == SaState::Deleting) return reply_error(notify::TemporaryFailure);
    if (ike_rekey) {
        if (!ke) return invalid(syntax_error("CREATE_CHILD_SA request (IKE SA rekey): no KE payload"));
        if (sa.outstanding && sa.outstanding->exchange.type == ExchangeType::CreateChildSa && sa.state != SaState::Rekeying)
            return reply_error(notify::TemporaryFailure);  // a Child exchange of ours is in flight
        uint8_t number = 1;
        crypto::DhGroup w = static_cast<crypto::DhGroup>(0);
        auto algs = select_ike(p.ike_proposals, *sa_p, ke->group, &number, &w);
        if (!algs) {
            if (static_cast<uint16_t>(w)) {
                uint16_t g = static_cast<uint16_t>(w);
                return reply_error(notify::InvalidKePayload, Bytes{uint8_t(g >> 8), uint8_t(g)});
            }
            return reply_error(notify::NoProposalChosen);
        }
        uint64_t their_spi = 0;
        for (const auto& prop : sa_p->proposals)
            if (prop.number == number) their_spi = read_spi8(prop.spi);
        if (!their_spi) return reply_error(notify::InvalidSyntax);
        auto dh = make_dh(algs->dh);
        if (!dh.ok()) return reply_error(notify::TemporaryFailure);
        auto g_ir = dh->derive(ke->data);
        if (!g_ir.ok()) return reply_error(notify::InvalidSyntax);
        IkeSa& ns = new_sa(sa.peer_idx, false, now);
        ns.spi_i = their_spi;
        ns.spi_r = new_ike_spi();
        index_spi(ns);
        ns.algs = *algs;
        ns.ni = ni_p->data;
        ns.nr = make_nonce();
        ns.local = sa.local;
        ns.remote = sa.remote;
        ns.natt_port = sa.natt_port;
        ns.nat_local = sa.nat_local;
        ns.nat_remote = sa.nat_remote;
        ns.encap = sa.encap;
        ns.peer_frag = sa.peer_frag;
        ns.peer_sent_hashes = sa.peer_sent_hashes;
        ns.peer_hashes = sa.peer_hashes;
        ns.local_id_text = sa.local_id_text;
        ns.remote_id_text = sa.remote_id_text;
        ns.local_auth_desc = sa.local_auth_desc;
        ns.remote_auth_desc = sa.remote_auth_desc;
        ns.peer_cert_subject_der = sa.peer_cert_subject_der;
        ns.peer_cert_anchor = sa.peer_cert_anchor;
        ns.peer_certreq = sa.peer_certreq;
        ns.rekeyed_from = sa.id;
        auto st = derive_ike(ns, *g_ir, &sa.sk_d, &*sa.prf);
        if (!st.ok()) {
            destroy(ns, now, false, "key derivation failed");
            return reply_error(notify::TemporaryFailure);
        }
        transition(ns, SaState::Established);
        IkeProposal chosen;
        chosen.encr = {algs->encr};
        if (algs->integ != crypto::IntegId::None) chosen.integ = {algs->integ};
        chosen.prf = {algs->prf};
        chosen.dh = {algs->dh};
        std::vector<Payload> out;
        out.push_back({PayloadType::SA, false, SaPayload{{ike_proposal_to_wire(chosen, number, spi8(ns.spi_r))}}});
        out.push_back({PayloadType::Nonce, false, NoncePayload{ns.nr}});
        out.push_back({PayloadType::KE, false, KePayload{static_cast<uint16_t>(algs->dh), dh->public_value()}});
        if (sa.state == SaState::Rekeying) {
            // Collision: decide when our own rekey completes.
            m_log->info("IKE SA #{}: IKE rekey collision, answered the peer's (#{})", sa.id, ns.id);
            sa.rekey.theirs_id = ns.id;
            sa.rekey.their_ni = ns.ni;
            sa.rekey.their_nr = ns.nr;
            ns.established_at = now;
        } else {
            // Abandon our queued rekeys of this SA; the new one takes over.
            finish_ike_rekey(sa, ns, now);
        }
        send_response(sa, ExchangeType::CreateChildSa, mid, out);
        return;
    }

    // Child SA: new or rekey.
    ChildSa* old = nullptr;
    if (auto* rk = find_notify(pl, notify::RekeySa)) {
        if (rk->protocol != ProtocolId::Esp) return reply_error(notify::NoProposalChosen);
        old = child_by_out(sa, read_spi4(rk->spi));
        if (!old) {
            ChildSa* as_in = nullptr;
            (void)as_in;
            return reply_error(notify::ChildSaNotFound, {});
        }
        if (old->st == ChildSa::St::Rekeyed || old->st == ChildSa::St::Deleting) return reply_error(notify::TemporaryFailure);
    }
    auto tsi_p = require<TsPayload>(pl, PayloadType::TSi, where);
    if (!tsi_p.ok()) return invalid(tsi_p.error());
    auto tsr_p = require<TsPayload>(pl, PayloadType::TSr, where);
    if (!tsr_p.ok()) return invalid(tsr_p.error());
    const auto& tsi = (*tsi_p)->selectors;
    const auto& tsr = (*tsr_p)->selectors;
    uint16_t error = notify::TsUnacceptable;
    std::optional<crypto::DhGroup> wanted;
    for (size_t i = 0; i < p.children.size(); ++i) {
        if (old && i != old->cfg) continue;
        const auto& c = p.children[i];
        auto n_i = narrow(tsi, c.remote_ts), n_r = narrow(tsr, c.local_ts);
        if (n_i.empty() || n_r.empty()) continue;
        auto choice = select_child(c, *sa_p, true, ke ? std::optional<uint16_t>(ke->group) : std::nullopt, &wanted);
        if (!choice) {
            error = notify::NoProposalChosen;
            continue;
        }
        std::optional<crypto::DhKeyPair> dh;
        std::optional<SecureBytes> g_ir;
        if (choice->dh) {
            auto kp = make_dh(*choice->dh);
            if (!kp.ok()) return reply_error(notify::TemporaryFailure);
            auto s = kp->derive(ke->data);
            if (!s.ok()) return reply_error(notify::InvalidSyntax);
            dh = std::move(kp).value();
            g_ir = std::move(s).value();
        }
        Bytes nr = make_nonce();
        std::optional<BytesView> gv;
        if (g_ir) gv = g_ir->view();
        auto keys = derive_child_keys(*sa.prf, sa.sk_d, choice->cipher, gv, ni_p->data, nr);
        if (!keys.ok()) return reply_error(notify::TemporaryFailure);
        ChildSa child;
        child.name = c.name;
        child.cfg = i;
        child.reqid = old ? old->reqid : m_next_reqid++;
        child.spi_in = new_child_spi();
        child.spi_out = choice->peer_spi;
        child.cipher = choice->cipher;
        child.esn = choice->esn;
        child.pfs = choice->dh;
        bool transport = c.mode == IpsecMode::Transport && find_notify(pl, notify::UseTransportMode);
        child.mode = transport ? IpsecMode::Transport : IpsecMode::Tunnel;
        child.ts_local = n_r;
        child.ts_remote = n_i;
        child.established_at = now;
        if (c.rekey_seconds) {
            Millis base = static_cast<Millis>(c.rekey_seconds) * 1000;
            child.rekey_at = now + base - static_cast<Millis>(m_rng.u32() % (base / 10 + 1));
        }
        uint32_t old_spi = old ? old->spi_in : 0;
        child.replaces_spi_in = old_spi;
        auto ist = install_child(sa, child, *keys, false);
        if (!ist.ok()) {
            release_child_spi(child.spi_in);
            return reply_error(notify::TemporaryFailure);
        }
        if (old_spi) {
            old = child_by_in(sa, old_spi);
            if (old->st == ChildSa::St::Rekeying) {
                old->collision_spi_in = child.spi_in;
                old->collision_ni = ni_p->data;
                old->collision_nr = nr;
                m_log->info("IKE SA #{}: Child rekey collision on {:08x}", sa.id, old_spi);
            } else {
                old->st = ChildSa::St::Rekeyed;
                event(sa, Event::Kind::ChildSaRekeyed, 0, c.name + fmt::format(" {:08x} -> {:08x}", old_spi, child.spi_in));
            }
        }
        std::vector<Payload> out;
        out.push_back({PayloadType::SA, false, SaPayload{{child_choice_to_wire(*choice, child.spi_in)}}});
        out.push_back({PayloadType::Nonce, false, NoncePayload{nr}});
        if (dh) out.push_back({PayloadType::KE, false, KePayload{static_cast<uint16_t>(dh->group()), dh->public_value()}});
        out.push_back({PayloadType::TSi, false, TsPayload{n_i}});
        out.push_back({PayloadType::TSr, false, TsPayload{n_r}});
        if (transport) out.push_back(notify_payload(notify::UseTransportMode));
        send_response(sa, ExchangeType::CreateChildSa, mid, out);
        return;
    }
    if (wanted) {
        uint16_t g = static_cast<uint16_t>(*wanted);
        return reply_error(notify::InvalidKePayload, Bytes{uint8_t(g >> 8), uint8_t(g)});
    }
    reply_error(error);
}

void EngineImpl::respond_informational(IkeSa& sa, uint32_t mid, const std::vector<Payload>& pl, Millis now) {
    std::vector<Payload> out;
    bool delete_ike = false;
    DeletePayload resp_del;
    resp_del.protocol = ProtocolId::Esp;
    resp_del.spi_size = 4;
    for (const auto& x : pl) {
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
                if (succ.replaces_spi_in == in && succ.spi_in != in && succ.st != ChildSa::St::Deleting) {
                    (void)m_backend.set_outbound(in, succ.spi_in);
                    break;
                }
            bool quiet = c->st == ChildSa::St::Rekeyed;
            // The successor of a rekey we answered, deleted while the Child SA it was to replace
            // is still here: the initiator refused our answer, so the old one stays in use.
            if (uint32_t old_in = c->replaces_spi_in; old_in != 0 && old_in != in)
                if (ChildSa* old = child_by_in(*owner, old_in); old && old->st == ChildSa::St::Rekeyed) {
                    m_log->info("IKE SA #{}: rekeyed Child SA {:08x} deleted by the peer before {:08x}: {:08x} stays",
                                owner->id, in, old_in, old_in);
                    old->st = ChildSa::St::Installed;
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
            IkeRekeyTask::adopt_theirs(*this, sa, now);
            rekeyed = sa.state == SaState::Rekeyed;
        }
        destroy(sa, now, !rekeyed, "deleted by peer");
    }
}

}  // namespace x2sec::ike
