#include <openssl/err.h>
#include <openssl/http.h>
#include <openssl/ocsp.h>
#include <openssl/x509v3.h>

#include <ctime>
#include <memory>
#include <x2sec/crypto/crypto.hpp>
#include <x2sec/x509/ocsp.hpp>

namespace x2sec::x509 {

namespace {

template <auto F>
struct Del {
    template <typename T>
    void operator()(T* p) const {
        F(p);
    }
};
using ReqPtr = std::unique_ptr<OCSP_REQUEST, Del<OCSP_REQUEST_free>>;
using RespPtr = std::unique_ptr<OCSP_RESPONSE, Del<OCSP_RESPONSE_free>>;
using BasicPtr = std::unique_ptr<OCSP_BASICRESP, Del<OCSP_BASICRESP_free>>;
using IdPtr = std::unique_ptr<OCSP_CERTID, Del<OCSP_CERTID_free>>;
using StorePtr = std::unique_ptr<X509_STORE, Del<X509_STORE_free>>;
using BioPtr = std::unique_ptr<BIO, Del<BIO_free_all>>;

Error unavailable(const std::string& what) {
    return Error(ErrorDomain::Pki, static_cast<int>(VerifyFailure::CrlUnavailable), "OCSP: " + what);
}

int64_t unix_of(const ASN1_GENERALIZEDTIME* t) {
    struct tm tm {};
    if (t == nullptr || ASN1_TIME_to_tm(t, &tm) != 1) return 0;
    return static_cast<int64_t>(timegm(&tm));
}

std::string cert_name(const Certificate& c) {
    char buf[256];
    X509_NAME_oneline(X509_get_subject_name(c.get()), buf, sizeof buf);
    return buf;
}

Result<OcspAnswer> verify(OCSP_RESPONSE* resp, OCSP_REQUEST* req, OCSP_CERTID* id, const Certificate& cert,
                          const Certificate& issuer, const OcspOptions& opt, int64_t now, const std::string& from) {
    const int rs = OCSP_response_status(resp);
    if (rs != OCSP_RESPONSE_STATUS_SUCCESSFUL)
        return unavailable(from + ": responseStatus " + OCSP_response_status_str(rs));
    BasicPtr bs(OCSP_response_get1_basic(resp));
    if (!bs) return unavailable(from + ": not a BasicOCSPResponse");
    if (req != nullptr) {
        const int n = OCSP_check_nonce(req, bs.get());
        if (n == 0) return unavailable(from + ": the response's nonce is not the request's");
        if (n == -1) return unavailable(from + ": a nonce in the response to a request without one");
        if (opt.nonce && opt.require_nonce && n != 1)
            return unavailable(from + ": the response does not echo the nonce");
    }
    // The signer must be the issuer, or a responder certificate the issuer issued for OCSP
    // signing; its chain is checked against the issuer alone (partial chain), at `now`.
    StorePtr store(X509_STORE_new());
    if (!store || X509_STORE_add_cert(store.get(), issuer.get()) != 1) return unavailable("store");
    X509_VERIFY_PARAM* vp = X509_STORE_get0_param(store.get());
    X509_VERIFY_PARAM_set_flags(vp, X509_V_FLAG_PARTIAL_CHAIN | X509_V_FLAG_USE_CHECK_TIME);
    X509_VERIFY_PARAM_set_time(vp, static_cast<time_t>(now));
    STACK_OF(X509)* extra = sk_X509_new_null();
    sk_X509_push(extra, issuer.get());
    ERR_clear_error();
    const int v = OCSP_basic_verify(bs.get(), extra, store.get(), 0);
    sk_X509_free(extra);
    if (v != 1) return unavailable(from + ": response signature or signer not authorised: " + crypto::openssl_errors());
    int status = -1, reason = -1;
    ASN1_GENERALIZEDTIME *rev = nullptr, *thisu = nullptr, *nextu = nullptr;
    if (OCSP_resp_find_status(bs.get(), id, &status, &reason, &rev, &thisu, &nextu) != 1)
        return unavailable(from + ": no answer for " + cert_name(cert) + " in the response");
    OcspAnswer a;
    a.this_update = unix_of(thisu);
    a.next_update = nextu ? unix_of(nextu) : 0;
    if (a.this_update == 0) return unavailable(from + ": bad thisUpdate");
    if (a.this_update > now + opt.max_skew_s) return unavailable(from + ": thisUpdate is in the future");
    if (a.next_update != 0 && now > a.next_update + opt.max_skew_s)
        return unavailable(from + ": the response expired (nextUpdate passed)");
    if (opt.max_age_s >= 0 && a.this_update < now - opt.max_age_s)
        return unavailable(from + ": the response is too old");
    switch (status) {
        case V_OCSP_CERTSTATUS_GOOD:
            a.status = OcspStatus::Good;
            break;
        case V_OCSP_CERTSTATUS_REVOKED:
            a.status = OcspStatus::Revoked;
            a.reason = reason;
            a.revoked_at = unix_of(rev);
            break;
        default:
            a.status = OcspStatus::Unknown;
            break;
    }
    unsigned char* der = nullptr;
    const int len = i2d_OCSP_RESPONSE(resp, &der);
    if (len > 0) a.response_der.assign(der, der + len);
    OPENSSL_free(der);
    return a;
}

IdPtr cert_id(const Certificate& cert, const Certificate& issuer) {
    return IdPtr(OCSP_cert_to_id(EVP_sha1(), cert.get(), issuer.get()));
}

}  // namespace

const char* to_string(OcspStatus s) {
    switch (s) {
        case OcspStatus::Good:
            return "good";
        case OcspStatus::Revoked:
            return "revoked";
        case OcspStatus::Unknown:
            return "unknown";
    }
    return "?";
}

std::string ocsp_url(const Certificate& cert) {
    STACK_OF(OPENSSL_STRING)* urls = X509_get1_ocsp(cert.get());
    std::string out;
    for (int i = 0; urls != nullptr && i < sk_OPENSSL_STRING_num(urls); ++i) {
        std::string u = sk_OPENSSL_STRING_value(urls, i);
        if (u.rfind("http://", 0) == 0) {
            out = u;
            break;
        }
    }
    X509_email_free(urls);
    return out;
}

Result<OcspAnswer> ocsp_lookup(const Certificate& cert, const Certificate& issuer, const std::string& url,
                               const OcspOptions& opt, int64_t now) {
    if (url.rfind("http://", 0) != 0) return unavailable("responder URL '" + url + "' is not a plain http:// URL");
    char *host = nullptr, *port = nullptr, *path = nullptr;
    int ssl = 0;
    if (OSSL_HTTP_parse_url(url.c_str(), &ssl, nullptr, &host, &port, nullptr, &path, nullptr, nullptr) != 1) {
        ERR_clear_error();
        return unavailable("malformed responder URL '" + url + "'");
    }
    std::string h(host), p(port), pa(path);
    OPENSSL_free(host);
    OPENSSL_free(port);
    OPENSSL_free(path);

    ReqPtr req(OCSP_REQUEST_new());
    IdPtr id = cert_id(cert, issuer);
    if (!req || !id) return unavailable("building the request: " + crypto::openssl_errors());
    OCSP_CERTID* id_for_req = OCSP_CERTID_dup(id.get());
    if (id_for_req == nullptr || OCSP_request_add0_id(req.get(), id_for_req) == nullptr) {
        OCSP_CERTID_free(id_for_req);
        return unavailable("building the request");
    }
    if (opt.nonce && OCSP_request_add1_nonce(req.get(), nullptr, 32) != 1) return unavailable("adding the nonce");

    BioPtr body(ASN1_item_i2d_mem_bio(ASN1_ITEM_rptr(OCSP_REQUEST), reinterpret_cast<const ASN1_VALUE*>(req.get())));
    if (!body) return unavailable("encoding the request");
    const int timeout_s = std::max(1, (opt.timeout_ms + 999) / 1000);
    ERR_clear_error();
    // proxy "" = no proxy (NULL would take http_proxy from the environment).
    BioPtr rsp(OSSL_HTTP_transfer(nullptr, h.c_str(), p.c_str(), pa.c_str(), 0, "", nullptr, nullptr, nullptr, nullptr,
                                  nullptr, 0, nullptr, "application/ocsp-request", body.get(),
                                  "application/ocsp-response", 1, opt.max_size, timeout_s, 0));
    if (!rsp) {
        std::string why = crypto::openssl_errors();
        return unavailable(url + ": " + (why.empty() ? "no response" : why));
    }
    RespPtr resp(d2i_OCSP_RESPONSE_bio(rsp.get(), nullptr));
    if (!resp) {
        ERR_clear_error();
        return unavailable(url + ": the response is not a DER OCSPResponse");
    }
    return verify(resp.get(), req.get(), id.get(), cert, issuer, opt, now, url);
}

Result<OcspAnswer> ocsp_verify_response(BytesView der, const Certificate& cert, const Certificate& issuer,
                                        const OcspOptions& opt, int64_t now) {
    const unsigned char* p = der.data();
    RespPtr resp(d2i_OCSP_RESPONSE(nullptr, &p, static_cast<long>(der.size())));
    if (!resp || p != der.data() + der.size()) {
        ERR_clear_error();
        return unavailable("not a DER OCSPResponse");
    }
    IdPtr id = cert_id(cert, issuer);
    if (!id) return unavailable("CertID");
    return verify(resp.get(), nullptr, id.get(), cert, issuer, opt, now, "stapled response");
}

}  // namespace x2sec::x509
