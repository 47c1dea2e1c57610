// OCSP in IKEv2 (RFC 4806), see ocsp_content.hpp.
#include "ocsp_content.hpp"

#include <openssl/x509v3.h>

#include <x2sec/common/file.hpp>
#include <x2sec/x509/ocsp.hpp>
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

// Looked-up responses for our own certificates (leaf DER -> answer), until their nextUpdate.
std::mutex g_cache_mu;
std::map<Bytes, x509::OcspAnswer> g_cache;

std::optional<x509::Certificate> own_issuer(const PeerConfig& p) {
    if (p.cert_chain.size() > 1) return p.cert_chain[1];
    if (p.trust)
        for (const auto& [label, a] : p.trust->anchors())
            if (X509_check_issued(a.get(), p.cert_chain[0].get()) == X509_V_OK) return a;
    return std::nullopt;
}

Result<Bytes> own_response(EngineImpl& e, const PeerConfig& p, int64_t now) {
    if (!p.ocsp_staple_file.empty()) return read_file(p.ocsp_staple_file, kMaxStaple);
    const auto& leaf = p.cert_chain[0];
    {
        std::lock_guard lk(g_cache_mu);
        auto it = g_cache.find(leaf.der());
        if (it != g_cache.end() && it->second.next_update > now) {
            e.m_counters.inc("ike.ocsp.staple_cache_hit");
            return it->second.response_der;
        }
    }
    std::string url = x509::ocsp_url(leaf);
    if (url.empty()) return Error(ErrorDomain::Pki, 0, "certificate has no OCSP URL (authorityInfoAccess)");
    auto issuer = own_issuer(p);
    if (!issuer) return Error(ErrorDomain::Pki, 0, "issuer of the own certificate is not known");
    x509::OcspOptions opt;
    if (p.trust && p.trust->revocation()) opt.timeout_ms = p.trust->revocation()->config().fetch_timeout_ms;
    X2SEC_TRY(auto ans, x509::ocsp_lookup(leaf, *issuer, url, opt, now));
    e.m_counters.inc("ike.ocsp.staple_fetched");
    if (ans.next_update > now) {
        std::lock_guard lk(g_cache_mu);
        g_cache[leaf.der()] = ans;
    }
    return ans.response_der;
}

Error fail(x509::VerifyFailure f, std::string why) {
    return Error(ErrorDomain::Pki, static_cast<int>(f), std::move(why));
}

}  // namespace

void add_certreq(const PeerConfig& p, std::vector<Payload>& out) {
    if (p.remote_auth != AuthMethod::Certificate || p.ocsp_stapling == OcspStapling::Off) return;
    CertReqPayload cr;
    cr.encoding = kEncoding;
    out.push_back({PayloadType::CERTREQ, false, cr});
}

bool asks(const std::vector<Payload>& in) {
    for (const auto& x : in)
        if (auto* cr = x.as<CertReqPayload>(); cr && cr->encoding == kEncoding) return true;
    return false;
}

void add_staple(EngineImpl& e, const IkeSa& sa, const PeerConfig& p, bool asked, std::vector<Payload>& out) {
    if (!asked || p.local_auth != AuthMethod::Certificate || p.cert_chain.empty()) return;
    auto der = own_response(e, p, e.unix_now());
    if (!der.ok() || der->empty()) {
        e.m_counters.inc("ike.ocsp.staple_unavailable");
        e.m_log->warn(
            "IKE SA #{} ({}): peer asks for our OCSP response, none to send: {} "
            "(ike.ocsp.staple_unavailable)",
            sa.id, p.name, der.ok() ? std::string("empty file") : der.error().detail());
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
    auto ans = x509::ocsp_verify_response(staple->data, leaf, issuer, opt, now);
    if (!ans.ok()) {
        e.m_counters.inc("ike.ocsp.staple_invalid");
        return fail(x509::VerifyFailure::CrlUnavailable,
                    name + ": stapled OCSP response (CERT encoding 14) refused: " + ans.error().detail());
    }
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
