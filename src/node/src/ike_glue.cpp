#include <x2sec/node/ike_glue.hpp>

#include <algorithm>

#include <x2sec/crypto/crypto.hpp>
#include <x2sec/x509/x509.hpp>

namespace x2sec::node::glue {

Result<ike::PeerConfig> peer_config(const std::string& peer_name, const IkeSide& self, const IkeSide& other,
                                    Credential cred, const std::string& cert_pem, const SecureBytes& key_pem,
                                    const std::vector<std::pair<std::string, std::string>>& anchors,
                                    const SecureBytes& psk, const TrafficSelector& remote_ts) {
    ike::PeerConfig p;
    p.name = peer_name;
    p.local_addr = self.addr;
    p.remote_addr = other.addr;
    p.local_port = self.port;
    p.remote_port = other.port;
    p.local_natt_port = uint16_t(self.port + 1);
    p.remote_natt_port = uint16_t(other.port + 1);
    p.local_id = self.id;
    p.remote_id = other.id;
    if (cred == Credential::PairwiseKey) {
        p.local_auth = p.remote_auth = ike::AuthMethod::Psk;
        p.psk = psk;
    } else {
        p.local_auth = p.remote_auth = ike::AuthMethod::Certificate;
        X2SEC_TRY(auto key, crypto::PrivateKey::from_pem(key_pem.view()));
        p.private_key = std::make_shared<crypto::PrivateKey>(std::move(key));
        // Leaf first, then intermediates (the PEM bundle order).
        std::string rest = cert_pem;
        const std::string end = "-----END CERTIFICATE-----";
        for (size_t pos; (pos = rest.find(end)) != std::string::npos;) {
            std::string one = rest.substr(0, pos + end.size());
            rest = rest.substr(pos + end.size());
            X2SEC_TRY(auto c, x509::Certificate::from_pem(as_bytes(one)));
            if (!c.self_signed()) p.cert_chain.push_back(c);
        }
        auto trust = std::make_shared<x509::TrustStore>();
        for (auto& [label, pem] : anchors) {
            X2SEC_TRY(auto a, x509::Certificate::from_pem(as_bytes(pem)));
            trust->add_anchor(a, label);
        }
        p.trust = trust;
    }
    X2SEC_TRY(auto ikep, ike::parse_ike_proposal("aes128gcm16-prfsha256-ecp256"));
    p.ike_proposals = {ikep};
    ike::ChildConfig child;
    child.name = "x2";
    child.local_ts = {TrafficSelector::from_prefix(self.inner, 32)};
    child.remote_ts = {remote_ts};
    X2SEC_TRY(auto cp, ike::parse_child_proposal("aes128gcm16"));
    child.proposals = {cp};
    child.rekey_seconds = 0;
    p.children = {child};
    p.ike_rekey_seconds = 0;
    p.dpd_interval_ms = 0;
    return p;
}

std::vector<std::string> certreq_labels(const std::vector<ike::CertReqAnchor>& anchors) {
    std::vector<std::string> out;
    for (const auto& a : anchors) {
        std::string l = a.known() ? a.label : "unknown:" + to_hex(a.spki_sha1).substr(0, 8);
        if (std::find(out.begin(), out.end(), l) == out.end()) out.push_back(l);
    }
    return out;
}

std::optional<std::vector<std::string>> certreq_event(const std::vector<ike::Event>& ev, const std::string& peer) {
    for (auto& e : ev)
        if (e.peer == peer && e.kind == ike::Event::Kind::PeerCertReq) return certreq_labels(e.certreq);
    return std::nullopt;
}

bool has_event(const std::vector<ike::Event>& ev, const std::string& peer, ike::Event::Kind k) {
    for (auto& e : ev)
        if (e.peer == peer && e.kind == k) return true;
    return false;
}

const ike::Event* failure_event(const std::vector<ike::Event>& ev, const std::string& peer) {
    for (auto& e : ev)
        if (e.peer == peer &&
            (e.kind == ike::Event::Kind::AuthFailed || e.kind == ike::Event::Kind::NegotiationFailed ||
             e.kind == ike::Event::Kind::PeerDead || (e.kind == ike::Event::Kind::PeerNotify && e.code < 16384)))
            return &e;
    return nullptr;
}

std::vector<ike::Datagram> CertreqGuard::on_received(const ike::Datagram&, Millis now) {
    if (m_checked) return {};
    std::optional<uint64_t> sa_id;
    IpAddress peer_addr;
    for (const auto& sa : m_engine.list_sas())
        if (sa.peer == m_peer && sa.state == "CONNECTING" && !sa.peer_certreq.empty()) {
            sa_id = sa.id;
            peer_addr = sa.remote.addr;
            m_certreq = certreq_labels(sa.peer_certreq);
        }
    if (!sa_id) return {};
    m_checked = true;  // the IKE_SA_INIT response: the only CERTREQ an initiator receives
    auto why = m_agent.certreq_mismatch(m_cred, *m_certreq);
    if (!why) return {};
    m_aborted = true;
    m_reason = *why;
    (void)m_engine.delete_ike(*sa_id, now);  // before establishment: forgotten locally
    // The engine queued IKE_AUTH in the same call: take it back; keep anything else.
    std::vector<ike::Datagram> keep;
    for (auto& d : m_engine.take_outgoing())
        if (!(d.remote.addr == peer_addr)) keep.push_back(std::move(d));
    return keep;
}

bool both_child_up(const std::vector<ike::Event>& a_events, const std::string& a,
                   const std::vector<ike::Event>& b_events, const std::string& b) {
    return has_event(a_events, b, ike::Event::Kind::ChildSaUp) && has_event(b_events, a, ike::Event::Kind::ChildSaUp);
}

bool exchange_failed(const CertreqGuard& guard, const std::vector<ike::Event>& a_events, const std::string& a,
                     const std::vector<ike::Event>& b_events, const std::string& b) {
    return guard.aborted() || failure_event(a_events, b) || failure_event(b_events, a);
}

std::string classify_failure(const std::vector<ike::Event>& a_events, const std::vector<ike::Event>& b_events,
                             Credential cred, Credential b_cred, const CertreqGuard& guard, IkeFailure& failure,
                             Agent& b_agent, const std::string& a_name, const std::string& b_name, Millis now) {
    using K = ike::Event::Kind;
    const ike::Event* fa = failure_event(a_events, b_name);
    const ike::Event* fb = failure_event(b_events, a_name);
    // The responder saw the CAs our IKE_AUTH asked for (recorded before authentication).
    if (auto cr = certreq_event(b_events, a_name)) b_agent.observe_certreq(a_name, *cr, now);
    constexpr int kUntrusted = static_cast<int>(x509::VerifyFailure::UntrustedCa);
    failure.certreq_anchors = guard.certreq();
    if (guard.aborted()) {
        failure.aborted_on_certreq = true;
        return guard.reason();
    }
    // What the initiator can know: it rejected the responder's chain as untrusted, or the
    // responder answered AUTHENTICATION_FAILED to our vendor certificate.
    bool we_rejected = fa && fa->kind == K::AuthFailed && fa->code == kUntrusted;
    bool they_rejected = fa && ((fa->kind == K::AuthFailed && fa->code == ike::auth_failure::PeerRejected) ||
                                (fa->kind == K::PeerNotify && fa->code == 24 /* AUTHENTICATION_FAILED */));
    failure.untrusted_ca = we_rejected || (they_rejected && cred == Credential::VendorCertificate);
    // The responder saw our certificate fail, or was told that we rejected its vendor
    // certificate: its agent takes note.
    if (fb && fb->kind == K::AuthFailed)
        b_agent.observe_peer_failure(a_name,
                                     fb->code == kUntrusted || (fb->code == ike::auth_failure::PeerRejected &&
                                                                b_cred == Credential::VendorCertificate),
                                     now);
    if (fa && fb) return fa->detail + " (" + b_name + ": " + fb->detail + ")";
    return fa ? fa->detail : (fb ? b_name + ": " + fb->detail : "no answer from " + b_name);
}

}  // namespace x2sec::node::glue
