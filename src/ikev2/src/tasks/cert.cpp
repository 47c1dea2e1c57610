// CERT and CERTREQ (RFC 7296 3.6, 3.7), both roles: the cert task (in IKE_SA_INIT the responder's
// CERTREQ; in IKE_AUTH the initiator's CERT and CERTREQ and the responder's CERT, with the RFC
// 4806 OCSP content of tasks/ocsp_content.*), and the CERTREQ hashes a peer sends mapped to our
// trust anchors (note_certreq, map_certreq).  The peer's CERTs are verified with its AUTH
// (verify_auth, tasks/ike_auth.cpp).
#include <algorithm>

#include "common.hpp"
#include "ocsp_content.hpp"

namespace x2sec::ike {

using namespace wire;

namespace {

// Our CERTREQ: the SHA-1 hashes of the trust anchors we accept the peer's certificate from.
void add_certreq(const PeerConfig& p, std::vector<Payload>& out) {
    if (p.remote_auth != AuthMethod::Certificate || !p.send_certreq || !p.trust || p.trust->empty()) return;
    CertReqPayload cr;
    for (const auto& h : p.trust->anchor_spki_sha1s()) cr.data.insert(cr.data.end(), h.begin(), h.end());
    out.push_back({PayloadType::CERTREQ, false, cr});
}

void add_certs(const PeerConfig& p, std::vector<Payload>& out) {
    if (p.local_auth == AuthMethod::Certificate)
        for (const auto& c : p.cert_chain) out.push_back({PayloadType::CERT, false, CertPayload{4, c.der()}});
}

struct CertTask final : Task {
    bool in_init = false;            // IKE_SA_INIT (CERTREQ only), else IKE_AUTH
    ocsp_content::Asked asked_ocsp;  // responder: the IKE_AUTH request's encoding-14 CERTREQ (its responder hashes)
    const char* name() const override { return "cert"; }
    Status build_i(EngineImpl& e, IkeSa& sa, std::vector<Payload>& out, Millis) override {
        if (in_init) return {};
        const auto& p = e.peer(sa);
        add_certs(p, out);
        ocsp_content::add_staple(e, sa, p, sa.peer_asked_ocsp, out);  // RFC 4806: the IKE_SA_INIT CERTREQ asked
        add_certreq(p, out);
        ocsp_content::add_certreq(p, out);  // RFC 4806
        return {};
    }
    Status process_i(EngineImpl& e, IkeSa& sa, const Checked& in, Millis) override {
        if (!in_init) return {};
        e.note_certreq(sa, in.all());
        sa.peer_asked_ocsp = ocsp_content::asks(in.all());  // RFC 4806: staple in IKE_AUTH
        return {};
    }
    Status process_r(EngineImpl& e, IkeSa& sa, const Request& req, Millis) override {
        if (in_init) return {};
        // Whether or not the peer authenticates, so the node agent learns the CAs it asks for.
        e.note_certreq(sa, req.in.all());
        asked_ocsp = ocsp_content::asks(req.in.all());
        return {};
    }
    Status build_r(EngineImpl& e, IkeSa& sa, const Request&, std::vector<Payload>& out, Millis) override {
        const auto& p = e.peer(sa);
        if (in_init) {
            add_certreq(p, out);
            ocsp_content::add_certreq(p, out);  // RFC 4806: the initiator's OCSP response
            return {};
        }
        add_certs(p, out);
        ocsp_content::add_staple(e, sa, p, asked_ocsp, out);  // RFC 4806: asked for by the CERTREQ
        return {};
    }
};

}  // namespace

std::unique_ptr<Task> make_cert_task(bool in_init) {
    auto t = std::make_unique<CertTask>();
    t->in_init = in_init;
    return t;
}

void EngineImpl::note_certreq(IkeSa& sa, const std::vector<Payload>& pl) {
    bool any = false;
    for (const auto& x : pl)
        if (auto* cr = x.as<CertReqPayload>()) {
            any = true;
            for (auto& h : cr->hashes())
                if (std::find(sa.peer_certreq.begin(), sa.peer_certreq.end(), h) == sa.peer_certreq.end())
                    sa.peer_certreq.push_back(std::move(h));
        }
    if (!any) return;
    auto anchors = map_certreq(sa);
    std::string detail = "peer asks for " + std::to_string(anchors.size()) + " CA(s):";
    for (const auto& a : anchors)
        detail += " " + (a.known() ? a.label : std::string("unknown")) + "(" + to_hex(a.spki_sha1) + ")";
    Event e;
    e.kind = Event::Kind::PeerCertReq;
    e.peer = peer(sa).name;
    e.ike_sa_id = sa.id;
    e.detail = std::move(detail);
    e.certreq = std::move(anchors);
    m_log->info("IKE SA #{} ({}): CERTREQ from {}: {}", sa.id, e.peer, sa.remote.to_string(), e.detail);
    m_events.push_back(std::move(e));
}

std::vector<CertReqAnchor> EngineImpl::map_certreq(const IkeSa& sa) const {
    std::vector<CertReqAnchor> out;
    if (sa.peer_certreq.empty()) return out;
    out.reserve(sa.peer_certreq.size());
    for (const auto& h : sa.peer_certreq) out.push_back(CertReqAnchor{h, {}, {}});
    // The SA's config's store first, then the other configs' in configuration order, each once;
    // the walk over the configs stops as soon as every hash is mapped (a load generator holds one
    // config per initiator, all with the same store: walking them all was 3 % of its setup).
    std::vector<const x509::TrustStore*> stores;
    size_t unmatched = out.size();
    auto search = [&](const std::shared_ptr<const x509::TrustStore>& store) {
        const x509::TrustStore* t = store.get();
        if (!t || std::find(stores.begin(), stores.end(), t) != stores.end()) return;
        stores.push_back(t);
        const auto& hashes = t->anchor_spki_sha1_each();  // indexed like anchors (not deduplicated)
        const auto& anchors = t->anchors();
        const auto& subjects = t->anchor_subjects();
        for (size_t i = 0; i < hashes.size() && i < anchors.size(); ++i)
            for (auto& a : out)
                if (!a.known() && a.spki_sha1 == hashes[i]) {
                    a.label = anchors[i].first.empty() ? subjects[i] : anchors[i].first;
                    a.subject = subjects[i];
                    --unmatched;
                }
    };
    search(peer(sa).trust);
    for (size_t i = 0; i < m_config.peers.size() && unmatched != 0; ++i) search(m_config.peers[i].trust);
    return out;
}

}  // namespace x2sec::ike
