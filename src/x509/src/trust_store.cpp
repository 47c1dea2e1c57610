#include <algorithm>
#include <cctype>
#include <openssl/err.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>
#include <openssl/x509v3.h>
#include <x2sec/crypto/crypto.hpp>
#include <x2sec/crypto/ossl_ptr.hpp>
#include <x2sec/x509/revocation.hpp>
#include <x2sec/x509/x509.hpp>

namespace x2sec::x509 {

const char* to_string(VerifyFailure f) {
    switch (f) {
        case VerifyFailure::UntrustedCa:
            return "untrusted CA";
        case VerifyFailure::Expired:
            return "expired";
        case VerifyFailure::NotYetValid:
            return "not yet valid";
        case VerifyFailure::Revoked:
            return "revoked";
        case VerifyFailure::BadSignature:
            return "bad signature";
        case VerifyFailure::CrlUnavailable:
            return "CRL unavailable";
        case VerifyFailure::IdMismatch:
            return "ID/SAN mismatch";
        case VerifyFailure::BadUsage:
            return "bad key usage";
        case VerifyFailure::Other:
            return "other";
    }
    return "?";
}

namespace {

Error fail(VerifyFailure f, const std::string& detail) {
    return Error(ErrorDomain::Pki, static_cast<int>(f), std::string(to_string(f)) + ": " + detail);
}

VerifyFailure map_error(int err) {
    switch (err) {
        case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
        case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
        case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
        case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
        case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
        case X509_V_ERR_CERT_UNTRUSTED:
        case X509_V_ERR_CERT_REJECTED:
        case X509_V_ERR_INVALID_CA:
        case X509_V_ERR_PATH_LENGTH_EXCEEDED:
        case X509_V_ERR_KEYUSAGE_NO_CERTSIGN:
            return VerifyFailure::UntrustedCa;
        case X509_V_ERR_CERT_HAS_EXPIRED:
            return VerifyFailure::Expired;
        case X509_V_ERR_CERT_NOT_YET_VALID:
            return VerifyFailure::NotYetValid;
        case X509_V_ERR_CERT_REVOKED:
            return VerifyFailure::Revoked;
        case X509_V_ERR_CERT_SIGNATURE_FAILURE:
        case X509_V_ERR_UNABLE_TO_DECRYPT_CERT_SIGNATURE:
        case X509_V_ERR_UNABLE_TO_DECODE_ISSUER_PUBLIC_KEY:
            return VerifyFailure::BadSignature;
        case X509_V_ERR_UNABLE_TO_GET_CRL:
        case X509_V_ERR_UNABLE_TO_GET_CRL_ISSUER:
        case X509_V_ERR_CRL_HAS_EXPIRED:
        case X509_V_ERR_CRL_NOT_YET_VALID:
        case X509_V_ERR_CRL_SIGNATURE_FAILURE:
        case X509_V_ERR_UNABLE_TO_DECRYPT_CRL_SIGNATURE:
        case X509_V_ERR_KEYUSAGE_NO_CRL_SIGN:
        case X509_V_ERR_DIFFERENT_CRL_SCOPE:
            return VerifyFailure::CrlUnavailable;
        case X509_V_ERR_INVALID_PURPOSE:
            return VerifyFailure::BadUsage;
        default:
            return VerifyFailure::Other;
    }
}

std::string subject_of(X509* x) {
    if (x == nullptr) return "(unknown certificate)";
    X509_up_ref(x);
    return Certificate::adopt(x).subject();
}

struct StackFree {  // sk_X509_free is a macro: no function to hand to OsslDeleter
    void operator()(STACK_OF(X509) * s) const { sk_X509_free(s); }
};

}  // namespace

void TrustStore::add_anchor(const Certificate& root, std::string label) {
    m_anchors.emplace_back(std::move(label), root);
    // Hashed once here: i2d_PUBKEY goes through OpenSSL 3's encoder framework, which made the
    // CERTREQ of every IKE_SA_INIT response cost about as much as an ECDSA sign.
    m_anchor_spki_sha1s.push_back(root.spki_sha1());
    m_anchor_subjects.push_back(root.subject());  // formatted once, for CERTREQ reports
    rebuild_store();
}

void TrustStore::add_crl(const Crl& crl) {
    m_crls.push_back(crl);
    rebuild_store();
}

void TrustStore::rebuild_store() {
    m_store.reset();
    m_store_error.clear();
    std::shared_ptr<X509_STORE> store(X509_STORE_new(), crypto::OsslDeleter<X509_STORE_free>());
    if (!store) {
        m_store_error = "out of memory";
        return;
    }
    for (const auto& [label, cert] : m_anchors) {
        if (X509_STORE_add_cert(store.get(), cert.get()) != 1) {
            // Adding the same certificate twice under two labels is harmless.
            const unsigned long e = ERR_peek_last_error();
            if (ERR_GET_REASON(e) != X509_R_CERT_ALREADY_IN_HASH_TABLE) {
                m_store_error = "adding anchor '" + label + "': " + crypto::openssl_errors();
                return;
            }
            ERR_clear_error();
        }
    }
    for (const auto& crl : m_crls) {
        if (X509_STORE_add_crl(store.get(), crl.get()) != 1) ERR_clear_error();
    }
    m_store = std::move(store);
}

Result<VerifiedChain> TrustStore::verify(const Certificate& leaf, const std::vector<Certificate>& intermediates,
                                         int64_t unix_time, bool leaf_revocation_settled) const {
    if (leaf.get() == nullptr) return fail(VerifyFailure::Other, "no certificate");
    // Formatted only for an error (RFC 2253 formatting costs ~5 us on every verification).
    const auto leaf_name = [&leaf] { return "certificate '" + leaf.subject() + "'"; };
    if (m_anchors.empty()) return fail(VerifyFailure::UntrustedCa, leaf_name() + ": no trust anchors configured");

    if (!m_store) return fail(VerifyFailure::Other, m_store_error.empty() ? "trust store not built" : m_store_error);
    std::shared_ptr<X509_STORE> store = m_store;  // kept alive for this call
    crypto::OsslPtr<X509_STORE_CTX, X509_STORE_CTX_free> ctx(X509_STORE_CTX_new());
    std::unique_ptr<STACK_OF(X509), StackFree> untrusted(sk_X509_new_null());
    if (!ctx || !untrusted) return fail(VerifyFailure::Other, "out of memory");
    for (const auto& c : intermediates) {
        if (c.get() != nullptr) sk_X509_push(untrusted.get(), c.get());
    }
    if (X509_STORE_CTX_init(ctx.get(), store.get(), leaf.get(), untrusted.get()) != 1)
        return fail(VerifyFailure::Other, "X509_STORE_CTX_init: " + crypto::openssl_errors());
    X509_VERIFY_PARAM* param = X509_STORE_CTX_get0_param(ctx.get());
    X509_VERIFY_PARAM_set_time(param, static_cast<time_t>(unix_time));
    unsigned long flags = X509_VERIFY_PARAM_get_flags(param);
    flags &= ~static_cast<unsigned long>(X509_V_FLAG_PARTIAL_CHAIN);
    if (m_crl_check) flags |= X509_V_FLAG_CRL_CHECK | X509_V_FLAG_CRL_CHECK_ALL;
    X509_VERIFY_PARAM_clear_flags(param, X509_V_FLAG_PARTIAL_CHAIN);
    X509_VERIFY_PARAM_set_flags(param, flags);

    const int ok = X509_verify_cert(ctx.get());
    if (ok != 1) {
        const int err = X509_STORE_CTX_get_error(ctx.get());
        const int depth = X509_STORE_CTX_get_error_depth(ctx.get());
        X509* bad = X509_STORE_CTX_get_current_cert(ctx.get());
        ERR_clear_error();
        std::string where = depth == 0 || bad == nullptr ? leaf_name()
                                                         : leaf_name() + ", at chain depth " + std::to_string(depth) +
                                                               " '" + subject_of(bad) + "'";
        return fail(map_error(err), where + ": " + X509_verify_cert_error_string(err));
    }

    VerifiedChain out;
    STACK_OF(X509)* chain = X509_STORE_CTX_get0_chain(ctx.get());
    for (int i = 0; i < sk_X509_num(chain); ++i) {
        X509* x = sk_X509_value(chain, i);
        X509_up_ref(x);
        out.chain.push_back(Certificate::adopt(x));
    }
    if (out.chain.empty()) return fail(VerifyFailure::Other, leaf_name() + ": empty chain");
    out.anchor = out.chain.back();
    for (const auto& [label, cert] : m_anchors) {
        if (X509_cmp(cert.get(), out.anchor.get()) == 0) {
            out.anchor_label = label;
            break;
        }
    }

    // The leaf signs IKE AUTH payloads: if it restricts its key usage, digitalSignature must be
    // among the allowed ones.
    if ((X509_get_extension_flags(leaf.get()) & EXFLAG_KUSAGE) != 0 &&
        (X509_get_key_usage(leaf.get()) & KU_DIGITAL_SIGNATURE) == 0)
        return fail(VerifyFailure::BadUsage, leaf_name() + ": keyUsage lacks digitalSignature");
    if (m_revocation) {
        if (!leaf_revocation_settled)
            X2SEC_TRY_STATUS(m_revocation->check(out.chain, unix_time));
        else if (out.chain.size() > 2)
            X2SEC_TRY_STATUS(m_revocation->check({out.chain.begin() + 1, out.chain.end()}, unix_time));
    }
    return out;
}

std::vector<Bytes> TrustStore::anchor_spki_sha1s() const {
    std::vector<Bytes> out;
    for (const auto& h : m_anchor_spki_sha1s) {
        if (std::find(out.begin(), out.end(), h) == out.end()) out.push_back(h);
    }
    return out;
}

std::optional<Certificate> TrustStore::anchor_by_spki_sha1(BytesView hash) const {
    for (size_t i = 0; i < m_anchors.size(); ++i) {
        if (ct_equal(m_anchor_spki_sha1s[i], hash)) return m_anchors[i].second;
    }
    return std::nullopt;
}

// ---------------------------------------------------------------- identity

namespace {

bool iequal(std::string_view a, std::string_view b) {
    return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
               return std::tolower(static_cast<unsigned char>(x)) == std::tolower(static_cast<unsigned char>(y));
           });
}

std::string printable(BytesView id) {
    return printable_text(id);
}

std::string join(const std::vector<std::string>& v) {
    if (v.empty()) return "none";
    std::string s;
    for (const auto& x : v) s += (s.empty() ? "" : ", ") + x;
    return s;
}

Error mismatch(const Certificate& cert, const std::string& what) {
    std::vector<std::string> sans;
    for (const auto& d : cert.san_dns()) sans.push_back("DNS:" + d);
    for (const auto& a : cert.san_ip()) sans.push_back("IP:" + a.to_string());
    for (const auto& e : cert.san_email()) sans.push_back("email:" + e);
    return fail(VerifyFailure::IdMismatch,
                what + " is not in certificate '" + cert.subject() + "' (SANs: " + join(sans) + ")");
}

}  // namespace

Status match_identity(const Certificate& cert, IdType type, BytesView id) {
    if (cert.get() == nullptr) return fail(VerifyFailure::Other, "no certificate");
    switch (type) {
        case IdType::Fqdn: {
            std::string_view fqdn(reinterpret_cast<const char*>(id.data()), id.size());
            if (fqdn.empty()) return mismatch(cert, "empty ID_FQDN");
            for (const auto& d : cert.san_dns())
                if (iequal(d, fqdn)) return {};
            return mismatch(cert, "ID_FQDN '" + printable(id) + "'");
        }
        case IdType::Rfc822Addr: {
            std::string_view mail(reinterpret_cast<const char*>(id.data()), id.size());
            for (const auto& e : cert.san_email())
                if (iequal(e, mail)) return {};
            return mismatch(cert, "ID_RFC822_ADDR '" + printable(id) + "'");
        }
        case IdType::Ipv4Addr:
        case IdType::Ipv6Addr: {
            const bool v6 = type == IdType::Ipv6Addr;
            if (id.size() != (v6 ? 16u : 4u))
                return fail(VerifyFailure::IdMismatch, std::string(v6 ? "ID_IPV6_ADDR" : "ID_IPV4_ADDR") + " of " +
                                                           std::to_string(id.size()) + " octets");
            IpAddress want;
            want.v6 = v6;
            std::copy(id.begin(), id.end(), want.bytes.begin());
            for (const auto& a : cert.san_ip())
                if (a == want) return {};
            return mismatch(cert, std::string(v6 ? "ID_IPV6_ADDR " : "ID_IPV4_ADDR ") + want.to_string());
        }
        case IdType::DerAsn1Dn: {
            const Bytes subj = cert.subject_der();
            if (subj.size() == id.size() && std::equal(subj.begin(), subj.end(), id.begin())) return {};
            // Same name, different but equivalent encoding: compare canonically.
            const unsigned char* p = id.data();
            X509_NAME* n = d2i_X509_NAME(nullptr, &p, static_cast<long>(id.size()));
            if (n == nullptr) {
                ERR_clear_error();
                return fail(VerifyFailure::IdMismatch, "ID_DER_ASN1_DN is not a DER Name");
            }
            const bool same = p == id.data() + id.size() && X509_NAME_cmp(n, X509_get_subject_name(cert.get())) == 0;
            std::string text;
            if (!same) {
                X509* tmp = X509_new();
                if (tmp != nullptr && X509_set_subject_name(tmp, n) == 1)
                    text = Certificate::adopt(tmp).subject();
                else
                    X509_free(tmp);
            }
            X509_NAME_free(n);
            if (same) return {};
            return fail(VerifyFailure::IdMismatch,
                        "ID_DER_ASN1_DN '" + text + "' differs from the certificate subject '" + cert.subject() + "'");
        }
        case IdType::KeyId:
            return fail(VerifyFailure::IdMismatch, "ID_KEY_ID cannot name a certificate");
    }
    return fail(VerifyFailure::IdMismatch, "unsupported ID type " + std::to_string(static_cast<int>(type)));
}

}  // namespace x2sec::x509
