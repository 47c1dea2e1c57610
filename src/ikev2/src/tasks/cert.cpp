// CERT and CERTREQ (RFC 7296 3.6, 3.7), both roles: the CERTREQ hashes a peer sends mapped to our
// trust anchors (note_certreq, map_certreq).
#include <algorithm>

#include "common.hpp"

namespace x2sec::ike {

using namespace wire;

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
    std::vector<const x509::TrustStore*> stores;
    auto add = [&](const std::shared_ptr<const x509::TrustStore>& t) {
        if (t && std::find(stores.begin(), stores.end(), t.get()) == stores.end()) stores.push_back(t.get());
    };
    add(peer(sa).trust);
    for (const auto& p : m_config.peers) add(p.trust);
    size_t unmatched = out.size();
    for (const auto* t : stores) {
        if (unmatched == 0) break;
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
    }
    return out;
}

}  // namespace x2sec::ike
