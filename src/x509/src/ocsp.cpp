#include <openssl/err.h>
#include <openssl/http.h>
#include <openssl/ocsp.h>
#include <openssl/x509v3.h>
#include <sys/socket.h>

#include <ctime>
#include <memory>
#include <x2sec/crypto/crypto.hpp>
#include <x2sec/crypto/ossl_ptr.hpp>
#include <x2sec/x509/ocsp.hpp>

namespace x2sec::x509 {

namespace {

using crypto::OsslPtr;

void free_x509_stack(STACK_OF(X509) * s) {
    sk_X509_free(s);  // the stack only: its certificates are borrowed
}

using ReqPtr = OsslPtr<OCSP_REQUEST, OCSP_REQUEST_free>;
using RespPtr = OsslPtr<OCSP_RESPONSE, OCSP_RESPONSE_free>;
using BasicPtr = OsslPtr<OCSP_BASICRESP, OCSP_BASICRESP_free>;
using IdPtr = OsslPtr<OCSP_CERTID, OCSP_CERTID_free>;
using StorePtr = OsslPtr<X509_STORE, X509_STORE_free>;
using BioPtr = OsslPtr<BIO, BIO_free_all>;
using StackPtr = OsslPtr<STACK_OF(X509), free_x509_stack>;

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

// A stack borrowing `first` (if any) and `rest`.
StackPtr stack_of(const Certificate* first, const std::vector<Certificate>& rest) {
    StackPtr sk(sk_X509_new_null());
    if (!sk) return sk;
    if (first != nullptr) sk_X509_push(sk.get(), first->get());
    for (const auto& c : rest) sk_X509_push(sk.get(), c.get());
    return sk;
}

Certificate shared_cert(X509* x) {
    X509_up_ref(x);
    return Certificate::adopt(x);
}

// RFC 6960 2.2 (a) and (c): signed by the issuer, or by a responder certificate the issuer
// issued for OCSP signing; its chain is checked against the issuer alone (partial chain), at
// `now`.  On success `signer` is the signing certificate.
bool verify_by_issuer(OCSP_BASICRESP* bs, const Certificate& issuer, int64_t now, X509*& signer, std::string& why) {
    StorePtr store(X509_STORE_new());
    if (!store || X509_STORE_add_cert(store.get(), issuer.get()) != 1) {
        why = "cannot build the certificate store";
        return false;
    }
    X509_VERIFY_PARAM* vp = X509_STORE_get0_param(store.get());
    X509_VERIFY_PARAM_set_flags(vp, X509_V_FLAG_PARTIAL_CHAIN | X509_V_FLAG_USE_CHECK_TIME);
    X509_VERIFY_PARAM_set_time(vp, static_cast<time_t>(now));
    StackPtr extra = stack_of(&issuer, {});
    ERR_clear_error();
    if (!extra || OCSP_basic_verify(bs, extra.get(), store.get(), 0) != 1) {
        why = crypto::openssl_errors();
        return false;
    }
    signer = nullptr;
    return OCSP_resp_get0_signer(bs, &signer, extra.get()) == 1 && signer != nullptr;
}

// RFC 6960 2.2 (b): signed by one of `trusted`, looked up by the responderID among those only
// (never the response's own certificates), valid at `now`.
const Certificate* verify_by_trusted(OCSP_BASICRESP* bs, const std::vector<Certificate>& trusted, int64_t now,
                                     std::string& why) {
    StorePtr store(X509_STORE_new());
    if (!store) return nullptr;
    for (const auto& t : trusted) {
        StackPtr one = stack_of(&t, {});
        ERR_clear_error();
        if (!one || OCSP_basic_verify(bs, one.get(), store.get(), OCSP_NOINTERN | OCSP_TRUSTOTHER) != 1) continue;
        ERR_clear_error();
        if (now < t.not_before() || now > t.not_after()) {
            why = "the trusted responder certificate '" + t.subject() + "' is not valid now";
            return nullptr;
        }
        return &t;
    }
    ERR_clear_error();
    return nullptr;
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
    OcspAnswer a;
    X509* signer = nullptr;
    std::string why, trusted_why;
    if (verify_by_issuer(bs.get(), issuer, now, signer, why)) {
        a.signer = X509_cmp(signer, issuer.get()) == 0 ? OcspSigner::Issuer : OcspSigner::Delegated;
        a.signer_spki_sha1 = shared_cert(signer).spki_sha1();
    } else if (const Certificate* t = verify_by_trusted(bs.get(), opt.trusted_responders, now, trusted_why)) {
        a.signer = OcspSigner::Trusted;
        a.signer_spki_sha1 = t->spki_sha1();
    } else {
        std::string detail = from + ": response signature or signer not authorised: " + why;
        if (!opt.trusted_responders.empty())
            detail += trusted_why.empty() ? "; nor signed by a configured trusted responder" : "; " + trusted_why;
        return unavailable(detail);
    }
    int status = -1, reason = -1;
    ASN1_GENERALIZEDTIME *rev = nullptr, *thisu = nullptr, *nextu = nullptr;
    if (OCSP_resp_find_status(bs.get(), id, &status, &reason, &rev, &thisu, &nextu) != 1)
        return unavailable(from + ": no answer for " + cert_name(cert) + " in the response");
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

const char* to_string(OcspSigner s) {
    switch (s) {
        case OcspSigner::Issuer:
            return "issuer";
        case OcspSigner::Delegated:
            return "delegated responder";
        case OcspSigner::Trusted:
            return "trusted responder";
    }
    return "?";
}

void OcspCancel::cancel() {
    std::lock_guard lk(m_mu);
    m_cancelled = true;
    if (m_fd >= 0) ::shutdown(m_fd, SHUT_RDWR);  // the exchange's wait ends, its read fails
}

bool OcspCancel::cancelled() const {
    std::lock_guard lk(m_mu);
    return m_cancelled;
}

bool OcspCancel::attach(int fd) {
    std::lock_guard lk(m_mu);
    if (m_cancelled) return false;
    m_fd = fd;
    return true;
}

bool OcspCancel::detach() {
    std::lock_guard lk(m_mu);
    m_fd = -1;  // before the socket is closed: never a shutdown() of a reused descriptor
    return m_cancelled;
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
    BioPtr rsp;
    if (opt.cancel == nullptr) {
        // proxy "" = no proxy (NULL would take http_proxy from the environment).
        rsp.reset(OSSL_HTTP_transfer(nullptr, h.c_str(), p.c_str(), pa.c_str(), 0, "", nullptr, nullptr, nullptr,
                                     nullptr, nullptr, 0, nullptr, "application/ocsp-request", body.get(),
                                     "application/ocsp-response", 1, opt.max_size, timeout_s, 0));
    } else {
        // Our own connection (as OSSL_HTTP_open would make it; no proxy), so that cancel() can shut
        // its socket down while the exchange waits for the responder.
        if (opt.cancel->cancelled()) return unavailable(url + ": look-up cancelled");
        BioPtr conn(BIO_new_connect(h.c_str()));
        if (!conn || BIO_set_conn_port(conn.get(), p.c_str()) <= 0 || BIO_set_nbio(conn.get(), 1) <= 0)
            return unavailable(url + ": " + crypto::openssl_errors());
        if (BIO_do_connect_retry(conn.get(), timeout_s, -1) <= 0) {
            std::string why = crypto::openssl_errors();
            return unavailable(url + ": " + (why.empty() ? "cannot connect" : why));
        }
        int fd = -1;
        if (BIO_get_fd(conn.get(), &fd) < 0 || !opt.cancel->attach(fd)) return unavailable(url + ": look-up cancelled");
        rsp.reset(OSSL_HTTP_transfer(nullptr, h.c_str(), p.c_str(), pa.c_str(), 0, nullptr, nullptr, conn.get(),
                                     nullptr, nullptr, nullptr, 0, nullptr, "application/ocsp-request", body.get(),
                                     "application/ocsp-response", 1, opt.max_size, timeout_s, 0));
        if (opt.cancel->detach() && !rsp) {
            ERR_clear_error();
            return unavailable(url + ": look-up cancelled");
        }
    }
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

Result<OcspSignerInfo> ocsp_response_signer(BytesView der, const Certificate& issuer,
                                            const std::vector<Certificate>& known, int64_t now) {
    const unsigned char* p = der.data();
    RespPtr resp(d2i_OCSP_RESPONSE(nullptr, &p, static_cast<long>(der.size())));
    if (!resp || p != der.data() + der.size()) {
        ERR_clear_error();
        return unavailable("not a DER OCSPResponse");
    }
    const int rs = OCSP_response_status(resp.get());
    if (rs != OCSP_RESPONSE_STATUS_SUCCESSFUL)
        return unavailable(std::string("responseStatus ") + OCSP_response_status_str(rs));
    BasicPtr bs(OCSP_response_get1_basic(resp.get()));
    if (!bs) return unavailable("not a BasicOCSPResponse");
    StackPtr extra = stack_of(&issuer, known);
    X509* s = nullptr;
    if (!extra || OCSP_resp_get0_signer(bs.get(), &s, extra.get()) != 1 || s == nullptr)
        return unavailable(
            "the response's signer (responderID) is neither among its certificates nor the issuer "
            "nor a configured responder");
    OcspSignerInfo info;
    info.cert = shared_cert(s);
    // The signature with this key only (no chain: that is the question answered below).
    StorePtr none(X509_STORE_new());
    StackPtr one = stack_of(&*info.cert, {});
    ERR_clear_error();
    if (!none || !one || OCSP_basic_verify(bs.get(), one.get(), none.get(), OCSP_NOINTERN | OCSP_TRUSTOTHER) != 1) {
        ERR_clear_error();
        return unavailable("the response's signature does not verify with the key of its signer '" +
                           info.cert->subject() + "'");
    }
    info.spki_sha1 = info.cert->spki_sha1();
    info.by_issuer = X509_cmp(s, issuer.get()) == 0;
    X509* authorised = nullptr;
    std::string why;
    info.ca_authorised = verify_by_issuer(bs.get(), issuer, now, authorised, why);
    ERR_clear_error();
    return info;
}

}  // namespace x2sec::x509
