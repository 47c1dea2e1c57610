// OCSP in IKEv2 (RFC 4806), see ocsp_content.hpp.
#include "ocsp_content.hpp"

#include <openssl/x509v3.h>

#include <algorithm>

#include <x2sec/common/file.hpp>
#include <x2sec/x509/ocsp.hpp>
#include <x2sec/x509/ocsp_stapler.hpp>
#include <x2sec/x509/revocation.hpp>

namespace x2sec::ike {

const char* to_string(OcspStapling s) {
    switch (s) {
        case OcspStapling::Off:
            return "off";
        case OcspStapling::Request:
            return "request";
        case OcspStapling::Require:
            return "require";
    }
    return "?";
}

Result<OcspStapling> parse_ocsp_stapling(const std::string& text) {
    if (text == "off") return OcspStapling::Off;
    if (text == "request") return OcspStapling::Request;
    if (text == "require") return OcspStapling::Require;
    return Error(ErrorDomain::Config, 0, "ocsp_stapling '" + text + "' is not off, request or require");
}

namespace ocsp_content {

using namespace wire;

namespace {

constexpr size_t kMaxStaple = 64 * 1024;

std::optional<x509::Certificate> own_issuer(const PeerConfig& p) {
    if (p.cert_chain.size() > 1) return p.cert_chain[1];
    if (p.trust)
        for (const auto& [label, a] : p.trust->anchors())
            if (X509_check_issued(a.get(), p.cert_chain[0].get()) == X509_V_OK) return a;
    return std::nullopt;
}

// Our response as it stands now: the file, or the stapler's cache (never a fetch).
Result<Bytes> own_response(const PeerConfig& p, const std::optional<x509::Certificate>& issuer, int64_t now) {
    if (!p.ocsp_staple_file.empty()) return read_file(p.ocsp_staple_file, kMaxStaple);
    if (!p.ocsp_stapler)
        return Error(ErrorDomain::Pki, 0, "neither ocsp_staple_file nor an AIA OCSP look-up is configured");
    const auto& leaf = p.cert_chain[0];
    if (!p.ocsp_stapler->has(leaf)) {  // not registered by the configuration: from now on
        if (!issuer) return Error(ErrorDomain::Pki, 0, "the issuer of our certificate is not known");
        X2SEC_TRY_STATUS(p.ocsp_stapler->add(leaf, *issuer));
    }
    if (auto s = p.ocsp_stapler->current(leaf, now)) return std::move(s->der);
    return Error(ErrorDomain::Pki, 0,
                 "no current OCSP response for our certificate: " + p.ocsp_stapler->last_error(leaf));
}

Error fail(x509::VerifyFailure f, std::string why) {
    return Error(ErrorDomain::Pki, static_cast<int>(f), std::move(why));
}

}  // namespace

void add_certreq(const PeerConfig& p, std::vector<Payload>& out) {
    if (p.remote_auth != AuthMethod::Certificate || p.ocsp_stapling == OcspStapling::Off) return;
    CertReqPayload cr;
    cr.encoding = kEncoding;
    for (const auto& r : p.ocsp_responders) {  // RFC 4806 3.1: the responders we trust, case (b)
        Bytes h = r.spki_sha1();
        if (h.size() == 20) cr.data.insert(cr.data.end(), h.begin(), h.end());
    }
    out.push_back({PayloadType::CERTREQ, false, cr});
}

Asked asks(const std::vector<Payload>& in) {
    Asked out;
    for (const auto& x : in) {
        auto* cr = x.as<CertReqPayload>();
        if (!cr || cr->encoding != kEncoding) continue;
        if (!out) out.emplace();
        // validate() made the data a whole number of 20-octet hashes.
        for (size_t i = 0; i + 20 <= cr->data.size(); i += 20) {
            Bytes h(cr->data.begin() + long(i), cr->data.begin() + long(i) + 20);
            if (std::find(out->begin(), out->end(), h) == out->end()) out->push_back(std::move(h));
        }
    }
    return out;
}

void add_staple(EngineImpl& e, const IkeSa& sa, const PeerConfig& p, const Asked& asked, std::vector<Payload>& out) {
    if (!asked || p.local_auth != AuthMethod::Certificate || p.cert_chain.empty()) return;
    const int64_t now = e.unix_now();
    const auto issuer = own_issuer(p);
    auto der = own_response(p, issuer, now);
    if (!der.ok() || der->empty()) {
        e.m_counters.inc("ike.ocsp.staple_unavailable");
        e.m_log->warn(
            "IKE SA #{} ({}): peer asks for our OCSP response, none to send: {} "
            "(ike.ocsp.staple_unavailable)",
            sa.id, p.name, der.ok() ? std::string("empty file") : der.error().detail());
        return;
    }
    // RFC 4806 3.1 / RFC 6960 2.2: the peer accepts a response signed by our CA or a responder
    // our CA authorised (no hash needed), or by a responder whose key hash it listed.
    if (!issuer) {
        e.m_counters.inc("ike.ocsp.staple_signer_unknown");
        e.m_log->warn(
            "IKE SA #{} ({}): OCSP response not sent: the issuer of our certificate is not known "
            "(ike.ocsp.staple_signer_unknown)",
            sa.id, p.name);
        return;
    }
    auto who = x509::ocsp_response_signer(*der, *issuer, p.ocsp_responders, now);
    if (!who.ok()) {
        e.m_counters.inc("ike.ocsp.staple_signer_unknown");
        e.m_log->warn("IKE SA #{} ({}): OCSP response not sent: {} (ike.ocsp.staple_signer_unknown)", sa.id, p.name,
                      who.error().detail());
        return;
    }
    const bool listed = std::find(asked->begin(), asked->end(), who->spki_sha1) != asked->end();
    const std::string signer = "'" + who->cert->subject() + "' (key hash " + to_hex(who->spki_sha1) + ")";
    if (listed) {
        e.m_counters.inc("ike.ocsp.staple_signer_listed");
        e.m_log->debug("IKE SA #{} ({}): our OCSP response is signed by {}, which the peer lists", sa.id, p.name,
                       signer);
    } else if (who->ca_authorised) {
        e.m_counters.inc(who->by_issuer ? "ike.ocsp.staple_signer_ca" : "ike.ocsp.staple_signer_delegated");
        e.m_log->debug("IKE SA #{} ({}): our OCSP response is signed by {}, {}", sa.id, p.name, signer,
                       who->by_issuer ? "our CA" : "a responder our CA authorised");
    } else {
        e.m_counters.inc("ike.ocsp.staple_signer_not_listed");
        e.m_log->warn(
            "IKE SA #{} ({}): OCSP response not sent: its signer {} is neither listed in the peer's CERTREQ ({} "
            "responder hash(es)) nor authorised by our CA (ike.ocsp.staple_signer_not_listed)",
            sa.id, p.name, signer, asked->size());
        return;
    }
    e.m_counters.inc("ike.ocsp.staple_sent");
    out.push_back({PayloadType::CERT, false, CertPayload{kEncoding, std::move(der).value()}});
}

bool settles_leaf(const PeerConfig& p, const std::vector<Payload>& in) {
    if (p.ocsp_stapling == OcspStapling::Off) return false;
    if (p.ocsp_stapling == OcspStapling::Require) return true;  // only a staple can settle it
    for (const auto& x : in)
        if (auto* c = x.as<CertPayload>(); c && c->encoding == kEncoding) return true;
    return false;
}

Status check(EngineImpl& e, const IkeSa& sa, const PeerConfig& p, const x509::VerifiedChain& chain,
             const std::vector<Payload>& in, int64_t now) {
    if (p.ocsp_stapling == OcspStapling::Off || chain.chain.size() < 2) return {};
    const auto& leaf = chain.chain[0];
    const auto& issuer = chain.chain[1];
    const std::string name = "certificate '" + leaf.subject() + "' (serial " + leaf.serial_hex() + ")";
    const CertPayload* staple = nullptr;
    for (const auto& x : in)
        if (auto* c = x.as<CertPayload>(); c && c->encoding == kEncoding) {
            staple = c;  // RFC 4806: one response, for the end-entity certificate
            break;
        }
    auto fallback = [&](const std::string& why) -> Status {
        if (p.ocsp_stapling == OcspStapling::Require)
            return fail(x509::VerifyFailure::CrlUnavailable, name + ": " + why + " (ocsp_stapling = require)");
        if (!staple) return {};  // the trust store's revocation check already ran for the leaf
        e.m_log->info("IKE SA #{} ({}): {}: {}; revocation checked as configured", sa.id, p.name, name, why);
        if (p.trust && p.trust->revocation()) return p.trust->revocation()->check({leaf, issuer}, now);
        return {};
    };
    if (!staple) {
        e.m_counters.inc("ike.ocsp.staple_missing");
        return fallback("peer sent no OCSP response (CERT encoding 14)");
    }
    x509::OcspOptions opt;
    opt.nonce = false;
    opt.require_nonce = false;
    if (p.trust && p.trust->revocation()) opt.max_age_s = p.trust->revocation()->config().ocsp_max_age_s;
    opt.trusted_responders = p.ocsp_responders;
    auto ans = x509::ocsp_verify_response(staple->data, leaf, issuer, opt, now);
    if (!ans.ok()) {
        e.m_counters.inc("ike.ocsp.staple_invalid");
        return fail(x509::VerifyFailure::CrlUnavailable,
                    name + ": stapled OCSP response (CERT encoding 14) refused: " + ans.error().detail());
    }
    if (ans->signer == x509::OcspSigner::Trusted) e.m_counters.inc("ike.ocsp.staple_trusted_responder");
    switch (ans->status) {
        case x509::OcspStatus::Good:
            e.m_counters.inc("ike.ocsp.staple_good");
            return {};
        case x509::OcspStatus::Revoked: {
            e.m_counters.inc("ike.ocsp.staple_revoked");
            std::string why = name + ": revoked (stapled OCSP response, revocationTime " +
                              std::to_string(ans->revoked_at) + ", reason " + std::to_string(ans->reason) + ")";
            return fail(x509::VerifyFailure::Revoked, why);
        }
        case x509::OcspStatus::Unknown:
            break;
    }
    e.m_counters.inc("ike.ocsp.staple_unknown");
    return fallback("stapled OCSP response says 'unknown'");
}

}  // namespace ocsp_content
}  // namespace x2sec::ike
