// IKE_SA_INIT, both roles: the ike_init task (initiator: SA, KE, Nonce and the check of the
// responder's; responder: the new IKE SA's DH and keys, the chosen SA, KE and Nonce), what comes
// before it (initiator: COOKIE / INVALID_KE_PAYLOAD answers, handle_init_response; responder:
// retransmissions, cookies, half-open limits and proposal selection before any state is
// created, handle_init_request) and IKE key derivation.  The exchange also carries the natd
// task (tasks/natd.cpp) and the cert task's CERTREQ (tasks/cert.cpp).
#include "common.hpp"
#include "ocsp_content.hpp"

namespace x2sec::ike {

using namespace wire;
using namespace task_util;

Exchange make_ike_init_responder(const Datagram& d, const Header& h, uint8_t number);

namespace {

bool addr_matches(const IpAddress& configured, const IpAddress& actual) {
    if (configured == IpAddress{} || configured == IpAddress{true, {}}) return true;  // unspecified: any
    return configured == actual;
}

}  // namespace

int EngineImpl::address_score(const PeerConfig& p, const Endpoint& local, const Endpoint& remote) const {
    if (!addr_matches(p.remote_addr, remote.addr) || !addr_matches(p.local_addr, local.addr)) return -1;
    auto port_ok = [](uint16_t actual, uint16_t port, uint16_t natt) {
        return port == 0 || actual == port || actual == natt;
    };
    int score = 0;
    if (port_ok(remote.port, p.remote_port, p.remote_natt_port)) score += 8;
    if (port_ok(local.port, p.local_port, p.local_natt_port)) score += 4;
    if (!addr_matches(p.remote_addr, IpAddress{}) || !addr_matches(p.remote_addr, IpAddress{true, {}})) score += 2;
    if (!addr_matches(p.local_addr, IpAddress{}) || !addr_matches(p.local_addr, IpAddress{true, {}})) score += 1;
    return score;
}

Status EngineImpl::derive_ike(IkeSa& sa, BytesView g_ir, const SecureBytes* old_sk_d,
                              const crypto::Prf* old_prf) const {
    X2SEC_TRY(auto prf, crypto::Prf::create(sa.algs.prf));
    SecureBytes seed =
        old_sk_d ? rekey_skeyseed(*old_prf, *old_sk_d, g_ir, sa.ni, sa.nr) : skeyseed(prf, sa.ni, sa.nr, g_ir);
    X2SEC_TRY(auto keys, derive_ike_keys(sa.algs, seed, sa.ni, sa.nr, sa.spi_i, sa.spi_r));
    auto integ = sa.algs.integ;
    X2SEC_TRY(auto ci, crypto::SkCipher::create(sa.algs.encr.id, sa.algs.encr.key_bits, integ, keys.sk_ei, keys.sk_ai));
    X2SEC_TRY(auto cr, crypto::SkCipher::create(sa.algs.encr.id, sa.algs.encr.key_bits, integ, keys.sk_er, keys.sk_ar));
    if (m_on_ike_keys) {
        IkeSaKeys k;
        k.spi_i = sa.spi_i;
        k.spi_r = sa.spi_r;
        k.sk_ei = keys.sk_ei;
        k.sk_er = keys.sk_er;
        k.sk_ai = keys.sk_ai;
        k.sk_ar = keys.sk_ar;
        if (sa.algs.encr.id == crypto::EncrId::AesGcm16)
            k.encr_name = "AES-GCM-" + std::to_string(sa.algs.encr.key_bits) + " with 16 octet ICV [RFC5282]";
        else
            k.encr_name = "AES-CBC-" + std::to_string(sa.algs.encr.key_bits) + " [RFC3602]";
        switch (integ) {
            case crypto::IntegId::None:
                k.integ_name = "NONE [RFC4306]";
                break;
            case crypto::IntegId::HmacSha2_256_128:
                k.integ_name = "HMAC_SHA2_256_128 [RFC4868]";
                break;
            case crypto::IntegId::HmacSha2_384_192:
                k.integ_name = "HMAC_SHA2_384_192 [RFC4868]";
                break;
            case crypto::IntegId::HmacSha2_512_256:
                k.integ_name = "HMAC_SHA2_512_256 [RFC4868]";
                break;
        }
        m_on_ike_keys(k);
    }
    sa.prf = prf;
    sa.sk_d = std::move(keys.sk_d);
    sa.sk_pi = std::move(keys.sk_pi);
    sa.sk_pr = std::move(keys.sk_pr);
    if (sa.initiator) {
        sa.cipher_out = std::move(ci);
        sa.cipher_in = std::move(cr);
    } else {
        sa.cipher_out = std::move(cr);
        sa.cipher_in = std::move(ci);
    }
    return {};
}

// ---------------------------------------------------------------- cookies (RFC 7296 2.6)

// The secret and the COOKIE itself: CookieJar (cookie.cpp), shared with the runtime's receive
// queue, which asks check_init_cookie() before the request is queued.
CookieCheck EngineImpl::check_init_cookie(const Datagram& d) const {
    InitCookieFields f = peek_init_cookie(d.data);
    if (f.malformed) return CookieCheck::Malformed;
    if (f.cookie.empty()) return CookieCheck::None;
    return m_cookies.valid(f.cookie, f.nonce, d.remote.addr, f.spi_i) ? CookieCheck::Valid : CookieCheck::Bad;
}

// ---------------------------------------------------------------- responder

void EngineImpl::handle_init_request(const Datagram& d, Message& m, Millis now) {
    const Header& h = m.header;
    if (!h.initiator() || h.spi_r != 0 || h.message_id != 0 || h.spi_i == 0) {
        drop(d, "invalid_syntax", "IKE_SA_INIT request with bad SPIs, flags or Message ID");
        return;
    }
    // A retransmitted request gets the cached response.
    if (IkeSa* sa = find_by_init(h.spi_i, d.remote.addr)) {
        if (sa->init_resp.empty() && sa->state != SaState::Connecting) {
            // Established (the IKE_SA_INIT messages are released after IKE_AUTH): a late copy of
            // the request, which the initiator no longer waits for.
            count("retransmit_after_auth");
            return;
        }
        if (sa->init_req == d.data && !sa->init_resp.empty()) {
            count("retransmit");
            m_log->info("IKE SA #{}: retransmitted IKE_SA_INIT from {}, resending response", sa->id,
                        d.remote.to_string());
            Datagram out{d.local, d.remote, sa->init_resp, d.non_esp_marker};
            m_out.push_back(std::move(out));
        } else {
            drop(d, "invalid_ike_spi", "second IKE_SA_INIT with an SPI already in use");
        }
        return;
    }
    auto in = check_rules(*find_rule(ExchangeType::IkeSaInit, false), m.payloads);
    if (!in.ok()) {
        drop(d, "invalid_syntax", in.error().detail());
        send_unprotected_notify(d, h, notify::InvalidSyntax, {});
        return;
    }
    // Candidate peer configs: those whose addresses match, best first — matching ports (port 0
    // or the NAT-T port also match; a NAT may change the source port, so a port mismatch only
    // ranks lower), then specific addresses before wildcards, then configuration order.
    // IKE_AUTH re-selects among them by identity (select_peer).
    // Ranked over address classes (PeerIndex), not over every peer: a class's score is its
    // peers' score and its first peer the configuration-order tie-break.
    std::optional<size_t> idx;
    {
        int best = -1;
        for (const auto& [key, cls] : m_peer_index.addr_classes()) {
            int score = address_score(m_config.peers[cls.first], d.local, d.remote);
            if (score < 0) continue;
            if (score > best || (score == best && cls.first < *idx)) {
                best = score;
                idx = cls.first;
            }
        }
    }
    if (!idx) {
        drop(d, "no_peer_config", "no peer configured for " + d.remote.to_string());
        send_unprotected_notify(d, h, notify::NoProposalChosen, {});
        return;
    }
    const auto& pc = m_config.peers[*idx];
    // Required by the rule table (checked above).
    const NoncePayload* nonce = &in->get<NoncePayload>(PayloadType::Nonce);
    // Cookies above the half-open threshold.
    if (!m_cookies.ready()) m_cookies.rotate(m_rng, now);
    if (half_open_count() >= m_config.cookie_threshold) {
        const NotifyPayload* c = in->notify(notify::Cookie);
        bool valid = false;
        if (c) {
            valid = m_cookies.valid(c->data, nonce->data, d.remote.addr, h.spi_i);
            if (!valid) count("bad_cookie");
        }
        if (!valid) {
            m_counters.inc("ike.tx.cookie");
            // Logged at info level on the 1st, 2nd, 4th ... demand (a spoofed flood draws one each).
            if (uint64_t n = m_counters.get("ike.tx.cookie"); (n & (n - 1)) == 0)
                m_log->info("{} half-open IKE SAs: demanding a COOKIE from {} ({} COOKIEs sent so far)",
                            half_open_count(), d.remote.to_string(), n);
            else
                m_log->debug("{} half-open IKE SAs: demanding a COOKIE from {}", half_open_count(),
                             d.remote.to_string());
            send_unprotected_notify(d, h, notify::Cookie, m_cookies.make(nonce->data, d.remote.addr, h.spi_i));
            return;
        }
    }
    // Hard caps, after the COOKIE check: a spoofed flood is answered statelessly above the
    // threshold and never gets here; what does is held at the caps.
    // Under a flood the log would be the next thing to fill: logged at warn level on the 1st,
    // 2nd, 4th, 8th ... drop, else at debug level (every drop is counted).
    auto cap_drop = [&](const char* counter, const std::string& why) {
        std::string name = std::string("ike.rx.") + counter;
        m_counters.inc(name);
        uint64_t n = m_counters.get(name);
        if ((n & (n - 1)) == 0)
            m_log->warn("dropped IKE_SA_INIT from {}: {} ({}, {} so far)", d.remote.to_string(), why, name, n);
        else
            m_log->debug("dropped IKE_SA_INIT from {}: {} ({})", d.remote.to_string(), why, name);
    };
    if (half_open_count() >= m_config.max_half_open) {
        cap_drop("dropped.half_open_cap",
                 fmt::format("{} half-open IKE SAs, the cap (max_half_open)", half_open_count()));
        return;
    }
    if (auto it = m_half_open_by_source.find(source_key(d.remote.addr));
        it != m_half_open_by_source.end() && it->second >= m_config.max_half_open_per_source) {
        cap_drop("dropped.half_open_cap_per_source",
                 fmt::format("{} half-open IKE SAs from {}, the cap (max_half_open_per_source)", it->second,
                             d.remote.addr.to_string()));
        return;
    }
    const SaPayload* sa_pl = &in->get<SaPayload>(PayloadType::SA);
    const KePayload* ke = &in->get<KePayload>(PayloadType::KE);
    uint8_t number = 1;
    crypto::DhGroup wanted{};
    bool have_wanted = false;
    {
        crypto::DhGroup w = static_cast<crypto::DhGroup>(0);
        auto algs = select_ike(pc.ike_proposals, *sa_pl, ke->group, &number, &w);
        if (!algs) {
            have_wanted = static_cast<uint16_t>(w) != 0;
            wanted = w;
        } else {
            IkeSa& sa = new_sa(*idx, false, now);
            sa.spi_i = h.spi_i;
            sa.spi_r = new_ike_spi();
            sa.local = d.local;
            sa.remote = d.remote;
            index_spi(sa);
            m_by_init[init_key(sa.spi_i, sa.remote.addr)] = sa.id;
            sa.has_candidates = true;
            sa.candidate_local = d.local;
            sa.candidate_remote = d.remote;
            sa.natt_port = d.non_esp_marker;
            sa.algs = *algs;
            sa.ni = nonce->data;
            sa.nr = make_nonce();
            sa.init_req = d.data;
            // The tasks of the exchange: what they read, then what they write.
            const Request req{ExchangeType::IkeSaInit, 0, *in};
            Exchange ex = make_ike_init_responder(d, h, number);
            for (auto& t : ex.tasks)
                if (!t->process_r(*this, sa, req, now).ok()) return;  // answered, the SA destroyed
            Message r;
            r.header.spi_i = sa.spi_i;
            r.header.spi_r = sa.spi_r;
            r.header.exchange = ExchangeType::IkeSaInit;
            r.header.flags = kFlagResponse;
            r.header.message_id = 0;
            for (auto& t : ex.tasks)
                if (!t->build_r(*this, sa, req, r.payloads, now).ok()) return;
            order_payloads(*find_rule(ExchangeType::IkeSaInit, true), r.payloads);
            sa.init_resp = r.encode();
            sa.peer_mid = 1;
            Datagram out{d.local, d.remote, sa.init_resp, d.non_esp_marker};
            m_out.push_back(std::move(out));
            m_log->info("IKE SA #{} ({}): IKE_SA_INIT from {} accepted: {}", sa.id, pc.name, d.remote.to_string(),
                        ike_algs_name(sa.algs));
            return;
        }
    }
    if (have_wanted) {
        m_counters.inc("ike.tx.invalid_ke_payload");
        m_log->info("IKE_SA_INIT from {}: KE group {} not preferred, asking for {}", d.remote.to_string(), ke->group,
                    crypto::dh_group_name(wanted));
        uint16_t g = static_cast<uint16_t>(wanted);
        send_unprotected_notify(d, h, notify::InvalidKePayload, Bytes{uint8_t(g >> 8), uint8_t(g)});
        return;
    }
    count("no_proposal_chosen");
    m_log->warn("IKE_SA_INIT from {}: no acceptable proposal", d.remote.to_string());
    send_unprotected_notify(d, h, notify::NoProposalChosen, {});
}

// ---------------------------------------------------------------- initiator

void EngineImpl::handle_init_response(const Datagram& d, Message& m, Millis now) {
    const Header& h = m.header;
    IkeSa* sa = find_by_spi(h.spi_i);
    if (!sa || !sa->initiator || sa->state != SaState::Connecting || !sa->outstanding ||
        sa->outstanding->exchange.type != ExchangeType::IkeSaInit || h.message_id != 0 || !h.response() ||
        h.initiator()) {
        drop(d, "unexpected_response", "IKE_SA_INIT response without a matching request");
        return;
    }
    // Unprotected: a response we cannot use may be forged, so it is dropped and we keep waiting
    // (RFC 7296 2.4) rather than refused.
    auto rules_ok = check_rules(*find_rule(ExchangeType::IkeSaInit, true), m.payloads);
    if (!rules_ok.ok()) {
        drop(d, "invalid_syntax", rules_ok.error().detail());
        return;
    }
    auto in = check_rules(purpose_rule(ResponsePurpose::IkeSaInit), m.payloads);
    if (!in.ok()) {
        drop(d, "invalid_syntax", in.error().detail());
        return;
    }
    sa->last_rx = now;
    const auto& pc = peer(*sa);
    if (auto* c = in->notify(notify::Cookie)) {
        if (++sa->init_attempts > 5) {
            event(*sa, Event::Kind::NegotiationFailed, notify::Cookie, "too many COOKIE requests");
            destroy(*sa, now, true, "cookie loop");
            return;
        }
        m_log->info("IKE SA #{}: responder demands a COOKIE, retrying", sa->id);
        sa->cookie = c->data;
        Exchange ex = std::move(sa->outstanding->exchange);
        sa->outstanding.reset();
        sa->queue.push_front(std::move(ex));
        start_next(*sa, now);
        return;
    }
    if (auto* ike = in->notify(notify::InvalidKePayload)) {
        uint16_t g = static_cast<uint16_t>((ike->data[0] << 8) | ike->data[1]);
        bool acceptable = false;
        for (const auto& p : pc.ike_proposals)
            for (auto dh : p.dh) acceptable |= static_cast<uint16_t>(dh) == g;
        if (!acceptable || ++sa->init_attempts > 5 || (sa->dh && static_cast<uint16_t>(sa->dh->group()) == g)) {
            event(*sa, Event::Kind::NegotiationFailed, notify::InvalidKePayload,
                  "responder wants DH group " + std::to_string(g) + " which is not acceptable");
            destroy(*sa, now, true, "INVALID_KE_PAYLOAD");
            return;
        }
        m_log->info("IKE SA #{}: INVALID_KE_PAYLOAD, retrying with {}", sa->id,
                    crypto::dh_group_name(static_cast<crypto::DhGroup>(g)));
        m_counters.inc("ike.rx.invalid_ke_payload");
        sa->algs.dh = static_cast<crypto::DhGroup>(g);
        sa->dh.reset();
        Exchange ex = std::move(sa->outstanding->exchange);
        sa->outstanding.reset();
        sa->queue.push_front(std::move(ex));
        start_next(*sa, now);
        return;
    }
    if (const NotifyPayload* n = in->error()) {
        sa->outstanding.reset();
        event(*sa, Event::Kind::NegotiationFailed, n->type,
              std::string("IKE_SA_INIT answered ") + notify::name(n->type));
        destroy(*sa, now, true, notify::name(n->type));
        return;
    }
    if (h.spi_r == 0) {
        drop(d, "invalid_syntax", "IKE_SA_INIT response with SPIr 0");
        return;
    }
    sa->spi_r = h.spi_r;
    sa->init_resp = d.data;
    // A wildcard local address in the configuration: from now on use the one the peer reached.
    if (sa->local.addr == IpAddress{} || sa->local.addr == IpAddress{true, {}}) sa->local.addr = d.local.addr;
    process_response(*sa, h, *rules_ok, now);
}

namespace {

struct IkeInitTask final : Task {
    SaPayload offered;  // initiator: our SA payload as sent, for check_chosen_proposal
    // responder: the request's datagram and header (unprotected answers) and the number of the
    // proposal chosen (handle_init_request, before the SA was created)
    const Datagram* dgram = nullptr;
    const Header* hdr = nullptr;
    uint8_t number = 1;
    const char* name() const override { return "ike_init"; }
    std::optional<ResponsePurpose> purpose() const override { return ResponsePurpose::IkeSaInit; }
    void refuse(EngineImpl& e, IkeSa& sa, const Error& why, Millis now) override {
        e.event(sa, Event::Kind::NegotiationFailed, why.code(), why.detail());
        e.destroy(sa, now, true, why.detail());
    }
    Status build_i(EngineImpl& e, IkeSa& sa, std::vector<Payload>& out, Millis) override {
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
        if (p.fragmentation) out.push_back(notify_payload(notify::Ikev2FragmentationSupported));
        out.push_back(notify_payload(notify::SignatureHashAlgorithms, hex("000200030004")));
        return {};
    }
    Status process_i(EngineImpl& e, IkeSa& sa, const Checked& in, Millis now) override {
        const auto& p = e.peer(sa);
        auto refuse_as = [&](const Error& why) -> Status {
            e.refuse_response(sa, *this, ResponsePurpose::IkeSaInit, why, now);
            return sa_gone();
        };
        auto fail = [&](const std::string& why) {
            return refuse_as(Error(ErrorDomain::Ike, notify::NoProposalChosen, why));
        };
        // COOKIE and error answers are handled by handle_init_response.
        const auto& sa_p = in.get<SaPayload>(PayloadType::SA);
        if (auto chosen = check_chosen_proposal(offered, sa_p, 0); !chosen.ok()) return refuse_as(chosen.error());
        Bytes spi;
        auto algs = parse_ike_choice(sa_p, &spi);
        if (!algs) return fail("responder chose a malformed IKE proposal");
        if (!proposals_allow(p.ike_proposals, *algs)) return fail("responder chose an IKE proposal we did not offer");
        const KePayload* ke = &in.get<KePayload>(PayloadType::KE);
        if (!sa.dh || ke->group != static_cast<uint16_t>(sa.dh->group()) || algs->dh != sa.dh->group())
            return fail("responder's KE group does not match");
        sa.algs = *algs;
        sa.nr = in.get<NoncePayload>(PayloadType::Nonce).data;
        auto g_ir = sa.dh->derive(ke->data);
        if (!g_ir.ok())
            return refuse_as(syntax_error("IKE_SA_INIT response: KE data is invalid: " + g_ir.error().detail()));
        sa.peer_frag = p.fragmentation && in.notify(notify::Ikev2FragmentationSupported);
        if (auto* sh = in.notify(notify::SignatureHashAlgorithms)) {
            sa.peer_sent_hashes = true;
            for (size_t i = 0; i + 1 < sh->data.size(); i += 2)
                sa.peer_hashes.push_back(static_cast<uint16_t>((sh->data[i] << 8) | sh->data[i + 1]));
        }
        auto st = e.derive_ike(sa, *g_ir, nullptr, nullptr);
        if (!st.ok()) return fail("key derivation failed: " + st.error().detail());
        e.m_log->info("IKE SA #{} ({}): IKE_SA_INIT done: {}", sa.id, p.name, ike_algs_name(sa.algs));
        return {};  // IKE_AUTH, queued by initiate(), goes next
    }
    // Responder: the SA was created by handle_init_request with the chosen algorithms and both
    // nonces; its DH and keys.
    Status process_r(EngineImpl& e, IkeSa& sa, const Request& req, Millis now) override {
        const Datagram& d = *dgram;
        (void)e.transition(sa, SaState::Connecting, now);  // CREATED -> CONNECTING: half-open
        auto dh = e.make_dh(sa.algs.dh);
        if (!dh.ok()) {
            e.m_log->error("IKE SA #{}: DH generation failed: {}", sa.id, dh.error().to_string());
            e.destroy(sa, now, false, "internal error");
            return answered_nothing();
        }
        auto g_ir = dh->derive(req.in.get<KePayload>(PayloadType::KE).data);
        if (!g_ir.ok()) {
            e.drop(d, "invalid_ke_data", g_ir.error().detail());
            e.send_unprotected_notify(d, *hdr, notify::InvalidSyntax, {});
            e.destroy(sa, now, false, "bad KE data");
            return answered_nothing();
        }
        sa.dh = std::move(dh).value();
        sa.peer_frag = req.in.notify(notify::Ikev2FragmentationSupported) != nullptr;
        if (auto* sh = req.in.notify(notify::SignatureHashAlgorithms)) {
            sa.peer_sent_hashes = true;
            for (size_t i = 0; i + 1 < sh->data.size(); i += 2)
                sa.peer_hashes.push_back(static_cast<uint16_t>((sh->data[i] << 8) | sh->data[i + 1]));
        }
        auto st = e.derive_ike(sa, *g_ir, nullptr, nullptr);
        if (!st.ok()) {
            e.m_log->error("IKE SA #{}: key derivation failed: {}", sa.id, st.error().to_string());
            e.send_unprotected_notify(d, *hdr, notify::NoProposalChosen, {});
            e.destroy(sa, now, false, "key derivation failed");
            return answered_nothing();
        }
        return {};
    }
    Status build_r(EngineImpl& e, IkeSa& sa, const Request&, std::vector<Payload>& out, Millis) override {
        const auto& pc = e.peer(sa);
        IkeProposal chosen;
        chosen.encr = {sa.algs.encr};
        if (sa.algs.integ != crypto::IntegId::None) chosen.integ = {sa.algs.integ};
        chosen.prf = {sa.algs.prf};
        chosen.dh = {sa.algs.dh};
        SaPayload out_sa;
        out_sa.proposals.push_back(ike_proposal_to_wire(chosen, number, {}));
        out.push_back({PayloadType::SA, false, out_sa});
        out.push_back({PayloadType::KE, false, KePayload{static_cast<uint16_t>(sa.algs.dh), sa.dh->public_value()}});
        out.push_back({PayloadType::Nonce, false, NoncePayload{sa.nr}});
        if (pc.fragmentation && sa.peer_frag) out.push_back(notify_payload(notify::Ikev2FragmentationSupported));
        sa.peer_frag = sa.peer_frag && pc.fragmentation;
        out.push_back(notify_payload(notify::SignatureHashAlgorithms, hex("000200030004")));
        return {};
    }
    void abort(EngineImpl&, IkeSa&, Millis) override {}
};

}  // namespace

// natd first: its notifies precede the others in the request as they always have, and the
// float to the NAT-T ports happens before IKE_AUTH is built.
Exchange make_ike_init_exchange() {
    return exchange_of(ExchangeType::IkeSaInit, make_natd_task(), std::make_unique<IkeInitTask>(),
                       make_cert_task(true));
}

Exchange make_ike_init_responder(const Datagram& d, const Header& h, uint8_t number) {
    auto init = std::make_unique<IkeInitTask>();
    init->dgram = &d;
    init->hdr = &h;
    init->number = number;
    return exchange_of(ExchangeType::IkeSaInit, make_natd_task(), std::move(init), make_cert_task(true));
}

}  // namespace x2sec::ike
