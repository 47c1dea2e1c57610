// IKE_AUTH authentication, both roles: the ike_auth task (initiator: IDi, IDr, INITIAL_CONTACT,
// AUTH and the check of the responder's; responder: peer-config selection by identity, the
// check of the initiator's AUTH, unique identities, IDr and AUTH).  The exchange also carries
// the cert task (tasks/cert.cpp) and the first Child SA's child_create task
// (tasks/child_create.cpp).
#include "common.hpp"
#include "ocsp_content.hpp"

namespace x2sec::ike {

using namespace wire;
using namespace task_util;

namespace {

struct IkeAuthTask final : Task {
    Status verified;  // responder: the outcome of peer-config selection and of the peer's AUTH check
    bool initial_contact = false;
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
    Status build_i(EngineImpl& e, IkeSa& sa, std::vector<Payload>& out, Millis) override {
        const auto& p = e.peer(sa);
        out.push_back({PayloadType::IDi, false, IdPayload{static_cast<uint8_t>(p.local_id.type), p.local_id.data}});
        if (p.remote_id)
            out.push_back(
                {PayloadType::IDr, false, IdPayload{static_cast<uint8_t>(p.remote_id->type), p.remote_id->data}});
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
    Status process_i(EngineImpl& e, IkeSa& sa, const Checked& in, Millis now) override {
        if (in.notify(notify::AuthenticationFailed)) {
            e.event(sa, Event::Kind::AuthFailed, auth_failure::PeerRejected, "peer answered AUTHENTICATION_FAILED");
            e.destroy(sa, now, true, "authentication failed");
            return sa_gone();
        }
        if (!in.complete()) {  // an error answer (the rule: IDr and AUTH, or an error notify)
            const NotifyPayload* err = in.error();
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
        return e.transition(sa, SaState::Established, now);  // up: IkeSaUp, rekey timer
    }
    // Responder: the peer config by identity, then the initiator's AUTH (answered in build_r, after
    // the cert task noted the request's CERTREQ either way).
    Status process_r(EngineImpl& e, IkeSa& sa, const Request& req, Millis) override {
        verified = e.select_peer(sa, req.in);
        if (verified.ok()) verified = e.verify_auth(sa, req.in, true);
        initial_contact = req.in.notify(notify::InitialContact) != nullptr && e.peer(sa).unique != UniquePolicy::Never;
        return {};
    }
    Status build_r(EngineImpl& e, IkeSa& sa, const Request& req, std::vector<Payload>& out, Millis now) override {
        const auto& p = e.peer(sa);
        if (!verified.ok()) {
            const Error& why = verified.error();
            e.m_counters.inc("ike.auth.failed");
            e.m_log->warn("IKE SA #{} ({}): authentication of {} failed: {}", sa.id, p.name, sa.remote.to_string(),
                          why.detail());
            e.event(sa, Event::Kind::AuthFailed, why.code(), why.detail());
            return refuse_auth(e, sa, req, now, "authentication failed");
        }
        // Unique identities: with `keep`, a second IKE SA for the same identities is refused
        // unless the peer says (INITIAL_CONTACT) it holds no other.
        if (initial_contact) e.count("initial_contact");
        if (p.unique == UniquePolicy::Keep && !initial_contact) {
            auto others = e.same_identities(sa, false);
            if (!others.empty()) {
                e.m_counters.inc("ike.auth.unique_keep_refused");
                std::string why = fmt::format("IKE SA #{} already holds the identities {} <-> {} (unique = keep)",
                                              others.front(), sa.local_id_text, sa.remote_id_text);
                e.m_log->warn("IKE SA #{} ({}): refused: {} (ike.auth.unique_keep_refused)", sa.id, p.name, why);
                e.event(sa, Event::Kind::AuthFailed, auth_failure::PeerRejected, why);
                return refuse_auth(e, sa, req, now, "unique = keep");
            }
        }
        out.push_back({PayloadType::IDr, false, IdPayload{static_cast<uint8_t>(p.local_id.type), p.local_id.data}});
        auto ast = e.build_auth(sa, out);
        if (!ast.ok()) {
            e.event(sa, Event::Kind::AuthFailed, ast.error().code(), ast.error().detail());
            return refuse_auth(e, sa, req, now, "no credentials");
        }
        if (auto up = e.transition(sa, SaState::Established, now); !up.ok()) {  // up: IkeSaUp, rekey timer
            e.send_error_response(sa, ExchangeType::IkeAuth, req.mid, notify::InvalidSyntax);
            return up;
        }
        e.enforce_unique(sa, initial_contact, now);
        return {};
    }
    // AUTHENTICATION_FAILED alone, and the IKE SA goes.
    static Status refuse_auth(EngineImpl& e, IkeSa& sa, const Request& req, Millis now, const char* why) {
        e.send_error_response(sa, ExchangeType::IkeAuth, req.mid, notify::AuthenticationFailed);
        e.destroy(sa, now, true, why);
        return answered_nothing();
    }
};

}  // namespace

Status EngineImpl::build_auth(IkeSa& sa, std::vector<Payload>& out) const {
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
        if (!sa.peer_sent_hashes &&
            (scheme == crypto::SigScheme::RsaPssSha256 || scheme == crypto::SigScheme::RsaPkcs1Sha256)) {
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

Status EngineImpl::verify_auth(IkeSa& sa, const Checked& in, bool peer_is_initiator) {
    const auto& p = peer(sa);
    const auto& id = in.get<IdPayload>(peer_is_initiator ? PayloadType::IDi : PayloadType::IDr);
    const auto& auth = in.get<AuthPayload>(PayloadType::AUTH);
    Identity peer_id = identity_of(id);
    sa.remote_id_text = peer_id.to_string();
    if (p.remote_id && !(*p.remote_id == peer_id))
        return Error(ErrorDomain::Pki, static_cast<int>(x509::VerifyFailure::IdMismatch),
                     "peer identity " + peer_id.to_string() + " is not the configured " + p.remote_id->to_string());
    Bytes octets =
        signed_octets(*sa.prf, peer_is_initiator ? sa.sk_pi : sa.sk_pr, peer_is_initiator ? sa.init_req : sa.init_resp,
                      peer_is_initiator ? sa.nr : sa.ni, id.id_type, id.data);
    if (auth.method == 2) {
        if (p.remote_auth != AuthMethod::Psk)
            return Error(ErrorDomain::Pki, auth_failure::MethodMismatch,
                         "peer used a pre-shared key, a certificate is required");
        if (p.psk.empty()) return Error(ErrorDomain::Pki, auth_failure::NoCredentials, "no pre-shared key configured");
        SecureBytes expect = psk_auth(*sa.prf, p.psk, octets);
        if (!ct_equal(expect, auth.data))
            return Error(ErrorDomain::Pki, auth_failure::PskMismatch,
                         "pre-shared key mismatch: the peer's AUTH does not verify");
        sa.remote_auth_desc = "pre-shared key";
        return {};
    }
    if (auth.method != 1 && auth.method != 14)
        return Error(ErrorDomain::Pki, auth_failure::MethodMismatch,
                     "unsupported AUTH method " + std::to_string(auth.method));
    if (p.remote_auth != AuthMethod::Certificate)
        return Error(ErrorDomain::Pki, auth_failure::MethodMismatch,
                     "peer used a signature, a pre-shared key is required");
    std::vector<x509::Certificate> certs;
    for (const auto& pp : in.all())
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
        return Error(ErrorDomain::Pki, static_cast<int>(x509::VerifyFailure::UntrustedCa),
                     "no trust anchors configured");
    std::vector<x509::Certificate> inter(certs.begin() + 1, certs.end());
    auto chain = p.trust->verify(certs[0], inter, unix_now(), ocsp_content::settles_leaf(p, in.all()));
    if (!chain.ok()) {
        const Error& e = chain.error();
        return Error(ErrorDomain::Pki, e.code(), "certificate " + certs[0].subject() + ": " + e.detail());
    }
    X2SEC_TRY_STATUS(ocsp_content::check(*this, sa, p, *chain, in.all(), unix_now()));  // RFC 4806
    auto idm = x509::match_identity(certs[0], static_cast<x509::IdType>(id.id_type), id.data);
    if (!idm.ok())
        return Error(ErrorDomain::Pki, static_cast<int>(x509::VerifyFailure::IdMismatch), idm.error().detail());
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

Exchange make_ike_auth_exchange(size_t child_cfg) {
    if (child_cfg == SIZE_MAX)
        return exchange_of(ExchangeType::IkeAuth, std::make_unique<IkeAuthTask>(), make_cert_task(false));
    return exchange_of(ExchangeType::IkeAuth, std::make_unique<IkeAuthTask>(), make_cert_task(false),
                       make_child_task(child_cfg, true));
}

Exchange make_ike_auth_responder() {
    return exchange_of(ExchangeType::IkeAuth, std::make_unique<IkeAuthTask>(), make_cert_task(false),
                       make_child_task(0, true));
}

std::vector<uint64_t> EngineImpl::same_identities(const IkeSa& sa, bool responder_only) {
    std::vector<uint64_t> out;
    auto [b, e] = m_by_identities.equal_range(identities_hash(sa));
    for (auto it = b; it != e; ++it) {
        const uint64_t id = it->second;
        auto found = m_sas.find(id);
        if (id == sa.id || found == m_sas.end()) continue;
        const IkeSa& o = *found->second;
        if (!o.up() || (o.state != SaState::Established && o.state != SaState::Rekeying)) continue;
        if (responder_only && o.initiator) continue;
        if (o.local_id_text == sa.local_id_text && o.remote_id_text == sa.remote_id_text) out.push_back(id);
    }
    std::sort(out.begin(), out.end());  // oldest first, as the walk over m_sas gave them
    return out;
}

bool EngineImpl::has_contact(const IkeSa& sa) const {
    const size_t live = sa.peer_idx < m_live_by_peer.size() ? m_live_by_peer[sa.peer_idx] : 0;
    return live > (sa.state != SaState::Destroyed ? 1 : 0);
}

void EngineImpl::enforce_unique(IkeSa& sa, bool initial_contact, Millis now) {
    const auto& p = peer(sa);
    if (!initial_contact && p.unique != UniquePolicy::Replace) return;
    for (uint64_t id : same_identities(sa, !initial_contact)) {
        IkeSa* o = find_sa(id);
        if (!o) continue;
        if (initial_contact) {
            m_counters.inc("ike.auth.initial_contact_deleted");
            m_log->warn(
                "IKE SA #{} ({}): INITIAL_CONTACT from {} ({}): deleting IKE SA #{} and its {} Child SA(s) "
                "(ike.auth.initial_contact_deleted)",
                sa.id, p.name, sa.remote.to_string(), sa.remote_id_text, id, o->children.size());
        } else {
            m_counters.inc("ike.auth.unique_replaced");
            m_log->warn(
                "IKE SA #{} ({}): {} authenticated again from {}: replacing IKE SA #{} and its {} Child SA(s) "
                "(unique = replace, ike.auth.unique_replaced)",
                sa.id, p.name, sa.remote_id_text, sa.remote.to_string(), id, o->children.size());
            // The peer may still hold it (a second device with these identities): tell it.
            send_one_shot_request(*o, {Payload{PayloadType::Delete, false, DeletePayload{ProtocolId::Ike, 0, {}}}});
        }
        destroy(*o, now, true, initial_contact ? "INITIAL_CONTACT" : "replaced (unique)");
    }
}

// Like strongSwan: among the configs whose addresses matched the IKE_SA_INIT, the one whose
// remote_id is the peer's IDi (an unset remote_id matches any IDi, ranking below an exact
// match), preferring a local_id equal to the IDr the initiator sent, then the IKE_SA_INIT order.
Status EngineImpl::select_peer(IkeSa& sa, const Checked& in) {
    if (!sa.has_candidates) return {};  // not from IKE_SA_INIT (cannot happen): keep peer_idx
    Identity idi = identity_of(in.get<IdPayload>(PayloadType::IDi));
    std::optional<Identity> idr;
    if (const auto* idr_p = in.find<IdPayload>(PayloadType::IDr)) idr = identity_of(*idr_p);
    // Only the configs that can match IDi are looked at (PeerIndex): those requiring exactly it
    // and those requiring none.  Best is the lowest (rank, -address score, configuration order),
    // which is what walking the address-ranked candidates in order and keeping the first of the
    // lowest rank chose.
    std::optional<size_t> best;
    int best_rank = 0, best_score = 0;
    std::string no_proposal;
    auto consider = [&](size_t i, bool exact) {
        const auto& c = m_config.peers[i];
        int score = address_score(c, sa.candidate_local, sa.candidate_remote);
        if (score < 0) return;
        int rank = exact ? 0 : 2;
        // Like strongSwan: a candidate that would not have accepted the IKE proposal chosen at
        // IKE_SA_INIT (by the best address match) is ignored.
        if (!proposals_allow(c.ike_proposals, sa.algs)) {
            no_proposal += (no_proposal.empty() ? "" : ", ") + c.name;
            return;
        }
        if (idr && !(c.local_id == *idr)) rank += 1;
        if (!best || rank < best_rank ||
            (rank == best_rank && (score > best_score || (score == best_score && i < *best)))) {
            best = i;
            best_rank = rank;
            best_score = score;
        }
    };
    for (size_t i : m_peer_index.by_remote_id(idi)) consider(i, true);
    for (size_t i : m_peer_index.any_remote_id()) consider(i, false);
    // For the error messages only: the address candidates' names (at most 8).
    auto candidate_names = [&] {
        std::string names;
        size_t n = 0;
        for (size_t i = 0; i < m_config.peers.size(); ++i) {
            if (address_score(m_config.peers[i], sa.candidate_local, sa.candidate_remote) < 0) continue;
            if (n++ < 8) names += (names.empty() ? "" : ", ") + m_config.peers[i].name;
        }
        if (n > 8) names += ", and " + std::to_string(n - 8) + " more";
        return names;
    };
    if (!best && !no_proposal.empty()) {
        sa.remote_id_text = idi.to_string();
        m_counters.inc("ike.auth.proposal_mismatch");
        return Error(ErrorDomain::Ike, auth_failure::ProposalMismatch,
                     "peer config(s) " + no_proposal + " for identity " + idi.to_string() + " from " +
                         sa.remote.to_string() + " do not accept the IKE proposal " + ike_algs_name(sa.algs) +
                         " chosen at IKE_SA_INIT (candidates: " + candidate_names() + ")");
    }
    if (!best) {
        sa.remote_id_text = idi.to_string();
        m_counters.inc("ike.auth.no_peer_config");
        return Error(ErrorDomain::Pki, static_cast<int>(x509::VerifyFailure::IdMismatch),
                     "no peer config for identity " + idi.to_string() + " from " + sa.remote.to_string() +
                         " (candidates: " + candidate_names() + ")");
    }
    if (*best != sa.peer_idx) {
        m_log->info("IKE SA #{}: peer config {} selected for {} (was {})", sa.id, m_config.peers[*best].name,
                    idi.to_string(), peer(sa).name);
        set_peer_idx(sa, *best);
        sa.local_id_text = peer(sa).local_id.to_string();
    }
    return {};
}

}  // namespace x2sec::ike
