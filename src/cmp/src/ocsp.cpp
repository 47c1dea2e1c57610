// RFC 6960 OCSP responder on OpenSSL's OCSP API, answering from the RA/CA store.
#include <openssl/ocsp.h>
#include <sys/stat.h>

#include <ctime>
#include <x2sec/cmp/ocsp.hpp>
#include <x2sec/common/log.hpp>

namespace x2sec::cmp {
namespace {

struct OcspFree {
    void operator()(OCSP_REQUEST* p) const { OCSP_REQUEST_free(p); }
    void operator()(OCSP_RESPONSE* p) const { OCSP_RESPONSE_free(p); }
    void operator()(OCSP_BASICRESP* p) const { OCSP_BASICRESP_free(p); }
    void operator()(OCSP_CERTID* p) const { OCSP_CERTID_free(p); }
    void operator()(ASN1_TIME* p) const { ASN1_TIME_free(p); }
};
using ReqPtr = std::unique_ptr<OCSP_REQUEST, OcspFree>;
using RspPtr = std::unique_ptr<OCSP_RESPONSE, OcspFree>;
using BasicPtr = std::unique_ptr<OCSP_BASICRESP, OcspFree>;
using CertIdPtr = std::unique_ptr<OCSP_CERTID, OcspFree>;
using TimePtr = std::unique_ptr<ASN1_TIME, OcspFree>;

constexpr int kMaxNonceExtValue = 2 + 32;  // RFC 8954: a nonce of 1..32 octets (in its OCTET STRING)

Bytes encode(OCSP_RESPONSE* r) {
    unsigned char* der = nullptr;
    int n = i2d_OCSP_RESPONSE(r, &der);
    if (n <= 0) return {};
    Bytes out(der, der + n);
    OPENSSL_free(der);
    return out;
}

// An unsigned OCSPResponse carrying only an error status (RFC 6960 4.2.1).
Bytes status_only(int status) {
    RspPtr r(OCSP_response_create(status, nullptr));
    return r ? encode(r.get()) : Bytes{};
}

}  // namespace

struct OcspResponder::Impl {
    OcspConfig cfg;
    Store& store;
    // The issuing CA's CertID (no serial) in each hash algorithm a request may use.
    std::vector<CertIdPtr> issuer_ids;
    pki::CertStackPtr extra;
    std::shared_ptr<spdlog::logger> lg = log::get("ocsp");

    Impl(OcspConfig c, Store& s) : cfg(std::move(c)), store(s) {
        for (const EVP_MD* md : {EVP_sha1(), EVP_sha256(), EVP_sha384(), EVP_sha512()})
            if (OCSP_CERTID* id = OCSP_cert_to_id(md, nullptr, cfg.ca_cert.get())) issuer_ids.emplace_back(id);
        std::vector<X509*> e;
        for (auto& x : cfg.extra) e.push_back(x.get());
        extra = pki::make_stack(e);
    }

    bool ours(const OCSP_CERTID* id) const {
        for (auto& mine : issuer_ids)
            if (OCSP_id_issuer_cmp(mine.get(), id) == 0) return true;
        return false;
    }
};

OcspResponder::OcspResponder(OcspConfig cfg, Store& store, Counters& counters)
    : m_impl(std::make_unique<Impl>(std::move(cfg), store)), m_counters(counters) {}
OcspResponder::~OcspResponder() = default;

Bytes OcspResponder::respond(BytesView der) {
    auto& im = *m_impl;
    m_counters.inc("ocsp.rx.requests");
    auto malformed = [&](const char* counter, const std::string& why) {
        m_counters.inc(std::string("ocsp.reject.") + counter);
        im.lg->debug("OCSP request refused (malformedRequest): {}", why);
        ERR_clear_error();
        return status_only(OCSP_RESPONSE_STATUS_MALFORMEDREQUEST);
    };
    const unsigned char* p = der.data();
    ReqPtr req(d2i_OCSP_REQUEST(nullptr, &p, static_cast<long>(der.size())));
    if (!req) return malformed("malformed", "not a DER OCSPRequest");
    if (p != der.data() + der.size()) return malformed("malformed", "trailing octets after the OCSPRequest");
    int n = OCSP_request_onereq_count(req.get());
    if (n <= 0) return malformed("malformed", "no CertID in the request");
    if (n > im.cfg.max_certs)
        return malformed("too_many", std::to_string(n) + " CertIDs (at most " + std::to_string(im.cfg.max_certs) + ")");
    int nonce_at = OCSP_REQUEST_get_ext_by_NID(req.get(), NID_id_pkix_OCSP_Nonce, -1);
    if (nonce_at >= 0) {
        ASN1_OCTET_STRING* v = X509_EXTENSION_get_data(OCSP_REQUEST_get_ext(req.get(), nonce_at));
        int len = v ? ASN1_STRING_length(v) : 0;
        if (len < 1 || len > kMaxNonceExtValue)
            return malformed("nonce", "nonce extension of " + std::to_string(len) + " octets (RFC 8954: 1..32)");
    }

    int64_t now = static_cast<int64_t>(std::time(nullptr));
    TimePtr this_update(ASN1_TIME_set(nullptr, static_cast<time_t>(now)));
    TimePtr next_update(
        im.cfg.next_update_s > 0 ? ASN1_TIME_set(nullptr, static_cast<time_t>(now + im.cfg.next_update_s)) : nullptr);
    BasicPtr bs(OCSP_BASICRESP_new());
    if (!bs || !this_update) return status_only(OCSP_RESPONSE_STATUS_INTERNALERROR);
    for (int i = 0; i < n; ++i) {
        OCSP_CERTID* cid = OCSP_onereq_get0_id(OCSP_request_onereq_get0(req.get(), i));
        ASN1_INTEGER* serial = nullptr;
        if (!cid || !OCSP_id_get0_info(nullptr, nullptr, nullptr, &serial, cid) || !serial)
            return malformed("malformed", "CertID without a serial number");
        int status = V_OCSP_CERTSTATUS_UNKNOWN, reason = OCSP_REVOKED_STATUS_NOSTATUS;
        TimePtr revoked_at;
        // A negative serial names nothing this CA issued (RFC 5280 4.1.2.2).
        if (im.ours(cid) && ASN1_STRING_type(serial) == V_ASN1_INTEGER) {
            auto rec = im.store.find_by_serial(pki::serial_bytes(serial));
            if (!rec) {
                m_counters.inc("ocsp.error.store");
                im.lg->warn("OCSP: store unavailable: {}", rec.error().detail());
                return status_only(OCSP_RESPONSE_STATUS_TRYLATER);
            }
            if (rec->has_value()) {
                const CertRecord& r = **rec;
                if (r.revoked) {
                    status = V_OCSP_CERTSTATUS_REVOKED;
                    revoked_at.reset(ASN1_TIME_set(nullptr, static_cast<time_t>(r.revoked_at)));
                    // unspecified (0) is written as no reason, as in the CRL (RFC 5280 5.3.1)
                    if (r.revocation_reason > 0) reason = r.revocation_reason;
                } else {
                    status = V_OCSP_CERTSTATUS_GOOD;
                }
            }
        }
        if (!OCSP_basic_add1_status(bs.get(), cid, status, reason, revoked_at.get(), this_update.get(),
                                    next_update.get())) {
            m_counters.inc("ocsp.error.sign");
            ERR_clear_error();
            return status_only(OCSP_RESPONSE_STATUS_INTERNALERROR);
        }
        m_counters.inc(status == V_OCSP_CERTSTATUS_GOOD      ? "ocsp.tx.good"
                       : status == V_OCSP_CERTSTATUS_REVOKED ? "ocsp.tx.revoked"
                                                             : "ocsp.tx.unknown");
    }
    if (nonce_at >= 0 && OCSP_copy_nonce(bs.get(), req.get()) != 1) {
        m_counters.inc("ocsp.error.sign");
        ERR_clear_error();
        return status_only(OCSP_RESPONSE_STATUS_INTERNALERROR);
    }
    if (!OCSP_basic_sign(bs.get(), im.cfg.signer_cert.get(), im.cfg.signer_key.get(), EVP_sha256(), im.extra.get(),
                         0)) {
        m_counters.inc("ocsp.error.sign");
        im.lg->error("OCSP: signing failed: {}", pki::ossl_errors());
        return status_only(OCSP_RESPONSE_STATUS_INTERNALERROR);
    }
    RspPtr rsp(OCSP_response_create(OCSP_RESPONSE_STATUS_SUCCESSFUL, bs.get()));
    if (!rsp) {
        ERR_clear_error();
        return status_only(OCSP_RESPONSE_STATUS_INTERNALERROR);
    }
    m_counters.inc("ocsp.tx.successful");
    return encode(rsp.get());
}

Status ensure_ocsp_signer(const std::string& ca_dir, X509* ca_cert, EVP_PKEY* ca_key, OcspConfig& out,
                          int validity_days) {
    if (validity_days < 1 || validity_days > 366)
        return Error(ErrorDomain::Config, 0, "OCSP signer validity must be 1..366 days");
    const std::string crt = ca_dir + "/ocsp.crt", key = ca_dir + "/ocsp.key";
    int64_t now = static_cast<int64_t>(std::time(nullptr));
    out.ca_cert = pki::up_ref(ca_cert);
    out.extra.clear();
    if (X509_check_issued(ca_cert, ca_cert) != X509_V_OK) out.extra.push_back(pki::up_ref(ca_cert));
    struct stat sb {};
    if (::stat(crt.c_str(), &sb) == 0 && ::stat(key.c_str(), &sb) == 0) {
        auto c = pki::load_cert(crt);
        auto k = pki::load_private_key(key);
        std::string why;
        if (!c || !k)
            why = "unreadable";
        else if (X509_check_issued(ca_cert, c->get()) != X509_V_OK ||
                 X509_verify(c->get(), X509_get0_pubkey(ca_cert)) != 1)
            why = "not issued by the issuing CA";
        else if (X509_check_private_key(c->get(), k->get()) != 1)
            why = "key does not match";
        else if (!(X509_get_extension_flags(c->get()) & EXFLAG_XKUSAGE) ||
                 !(X509_get_extended_key_usage(c->get()) & XKU_OCSP_SIGN))
            why = "no id-kp-OCSPSigning";
        else if (pki::not_after(c->get()) - now < static_cast<int64_t>(validity_days) * 86400 / 4)
            why = "expires soon";
        ERR_clear_error();
        if (why.empty()) {
            out.signer_cert = std::move(*c);
            out.signer_key = std::move(*k);
            return ok_status();
        }
        log::get("ocsp")->info("OCSP signer {}: {}; issuing a new one", crt, why);
    }
    X2SEC_TRY(auto k, pki::generate_key(pki::KeyAlg::EcP256));
    pki::NamePtr name(X509_NAME_dup(X509_get_subject_name(ca_cert)));
    for (int i; (i = X509_NAME_get_index_by_NID(name.get(), NID_commonName, -1)) >= 0;)
        X509_NAME_ENTRY_free(X509_NAME_delete_entry(name.get(), i));
    X509_NAME_add_entry_by_NID(name.get(), NID_commonName, MBSTRING_UTF8,
                               reinterpret_cast<const unsigned char*>("OCSP Responder"), -1, -1, 0);
    pki::IssueRequest r;
    r.profile = pki::Profile::OcspSigner;
    r.subject = name.get();
    r.public_key = k.get();
    r.validity_days = validity_days;
    X2SEC_TRY(auto cert, pki::issue_certificate(r, ca_cert, ca_key));
    // Key first: a crash between the two writes leaves a pair that does not match, which the
    // next start replaces.
    X2SEC_TRY_STATUS(pki::save_private_key(key, k.get()));
    X2SEC_TRY_STATUS(pki::save_certs_pem(crt, {cert.get()}));
    log::get("ocsp")->info("issued OCSP signer {} (serial {}, valid {} days)", crt, pki::serial_hex(cert.get()),
                           validity_days);
    out.signer_cert = std::move(cert);
    out.signer_key = std::move(k);
    return ok_status();
}

}  // namespace x2sec::cmp
