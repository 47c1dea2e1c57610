#include <openssl/cmp.h>
#include <openssl/cmp_util.h>
#include <arpa/inet.h>
#include <openssl/ssl.h>
#include <algorithm>
#include <cctype>
#include <filesystem>
#include <x2sec/cmp/client.hpp>
#include <x2sec/common/file.hpp>
#include <x2sec/common/log.hpp>

#include "cmp_util.hpp"

namespace x2sec::cmp {

using pki::X509Ptr;

Result<ServerUrl> parse_server_url(const std::string& url) {
    ServerUrl u;
    std::string rest;
    if (url.rfind("http://", 0) == 0) {
        rest = url.substr(7);
    } else if (url.rfind("https://", 0) == 0) {
        rest = url.substr(8);
        u.tls = true;
        u.port = 443;
    } else {
        return Error(ErrorDomain::Config, 0, "server URL '" + url + "' must start with http:// or https://");
    }
    auto slash = rest.find('/');
    std::string hostport = rest.substr(0, slash);
    if (slash != std::string::npos) u.path = rest.substr(slash);
    if (!hostport.empty() && hostport[0] == '[') {
        auto close = hostport.find(']');
        if (close == std::string::npos) return Error(ErrorDomain::Config, 0, "bad IPv6 literal in '" + url + "'");
        u.host = hostport.substr(1, close - 1);
        if (close + 1 < hostport.size() && hostport[close + 1] == ':') u.port = std::atoi(hostport.c_str() + close + 2);
    } else {
        auto colon = hostport.rfind(':');
        u.host = hostport.substr(0, colon);
        if (colon != std::string::npos) u.port = std::atoi(hostport.c_str() + colon + 1);
    }
    if (u.host.empty() || u.port <= 0 || u.port > 65535)
        return Error(ErrorDomain::Config, 0, "server URL '" + url + "' has no valid host:port");
    return u;
}

namespace {

int client_log_cb(const char*, const char*, int, OSSL_CMP_severity level, const char* msg) {
    auto lg = x2sec::log::get("cmp");
    if (level <= OSSL_CMP_LOG_WARNING)
        lg->debug("openssl cmp client: {}", msg);
    else
        lg->trace("openssl cmp client: {}", msg);
    return 1;
}

OSSL_CMP_MSG* transfer_cb(OSSL_CMP_CTX* ctx, const OSSL_CMP_MSG* req) {
    auto* t = static_cast<const Transfer*>(OSSL_CMP_CTX_get_transfer_cb_arg(ctx));
    unsigned char* der = nullptr;
    int n = i2d_OSSL_CMP_MSG(req, &der);
    if (n <= 0) return nullptr;
    auto rsp = (*t)(BytesView(der, static_cast<size_t>(n)));
    OPENSSL_free(der);
    if (!rsp) {
        ERR_raise_data(ERR_LIB_CMP, CMP_R_TRANSFER_ERROR, "%s", rsp.error().detail().c_str());
        return nullptr;
    }
    const unsigned char* p = rsp->data();
    return d2i_OSSL_CMP_MSG(nullptr, &p, static_cast<long>(rsp->size()));
}

struct TlsArg {
    SSL_CTX* ctx = nullptr;
    std::string host;
    ~TlsArg() { SSL_CTX_free(ctx); }
};

BIO* tls_http_cb(BIO* bio, void* arg, int connect, int detail) {
    auto* t = static_cast<TlsArg*>(arg);
    if (connect && detail) {  // connection established; switch to TLS
        BIO* sbio = BIO_new_ssl(t->ctx, 1);
        if (!sbio) return nullptr;
        SSL* ssl = nullptr;
        BIO_get_ssl(sbio, &ssl);
        SSL_set_tlsext_host_name(ssl, t->host.c_str());
        in6_addr a6{};
        if (inet_pton(AF_INET, t->host.c_str(), &a6) == 1 || inet_pton(AF_INET6, t->host.c_str(), &a6) == 1)
            X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), t->host.c_str());
        else
            SSL_set1_host(ssl, t->host.c_str());
        return BIO_push(sbio, bio);
    }
    if (!connect) {  // disconnecting: drop the TLS layer, hand back the socket BIO
        if (detail) BIO_ssl_shutdown(bio);
        BIO* cbio = BIO_pop(bio);
        BIO_free(bio);
        return cbio;
    }
    return bio;
}

struct Ctx {
    CtxPtr ctx;
    std::unique_ptr<TlsArg> tls;
    pki::StorePtr trusted;
    Transfer transfer;
    // for the certConf check
    EVP_PKEY* new_key = nullptr;
    std::vector<std::string> want_dns;
    std::vector<X509*> provisioned;
    bool in_band_ok = false;
    std::string check_error;
    X509Ptr anchor;
};

std::string lower(std::string s) {
    for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return s;
}

// Runs before certConf: the new certificate must carry our key and identity and chain to the
// operator root (provisioned, or the in-band root OpenSSL accepted under the 3GPP rule).
int certconf_cb(OSSL_CMP_CTX* ctx, X509* cert, int fail_info, const char** text) {
    auto* c = static_cast<Ctx*>(OSSL_CMP_CTX_get_certConf_cb_arg(ctx));
    if (fail_info != 0 || !cert) return fail_info;
    auto bad = [&](const std::string& why) {
        c->check_error = why;
        *text = c->check_error.c_str();
        return 1 << OSSL_CMP_PKIFAILUREINFO_incorrectData;
    };
    if (!pki::public_keys_equal(cert, c->new_key))
        return bad("new certificate does not carry the requested public key");
    auto have = pki::san_dns(cert);
    for (auto& d : have) d = lower(d);
    for (auto& w : c->want_dns)
        if (std::find(have.begin(), have.end(), lower(w)) == have.end())
            return bad("new certificate lacks the requested identity " + w);
    STACK_OF(X509)* extra = OSSL_CMP_CTX_get1_extraCertsIn(ctx);
    STACK_OF(X509)* capubs = OSSL_CMP_CTX_get1_caPubs(ctx);
    pki::CertStackPtr g1(extra), g2(capubs);
    std::vector<X509*> untrusted, anchors = c->provisioned;
    for (int i = 0; extra && i < sk_X509_num(extra); ++i) untrusted.push_back(sk_X509_value(extra, i));
    for (int i = 0; capubs && i < sk_X509_num(capubs); ++i) untrusted.push_back(sk_X509_value(capubs, i));
    if (anchors.empty() && c->in_band_ok) {
        // 3GPP: a self-signed certificate from extraCerts (and caPubs, which is protected)
        for (X509* x : untrusted)
            if (X509_check_issued(x, x) == X509_V_OK) anchors.push_back(x);
    }
    for (X509* a : anchors) {
        if (pki::verify_chain(cert, {a}, untrusted).ok()) {
            c->anchor = pki::up_ref(a);
            // From here on the RA/CA is authenticated against this root (pkiConf included):
            // OpenSSL 3.0 applies the 3GPP in-band rule to the ip only.
            if (X509_STORE* ts = OSSL_CMP_CTX_get0_trustedStore(ctx)) X509_STORE_add_cert(ts, a);
            ERR_clear_error();
            return 0;
        }
    }
    ERR_clear_error();
    return bad("new certificate does not chain to the operator root");
}

Result<Ctx> make_ctx(const ClientCommon& cc, EVP_PKEY* key, X509* cert, const std::vector<X509*>& chain) {
    Ctx c;
    c.ctx.reset(OSSL_CMP_CTX_new(nullptr, nullptr));
    OSSL_CMP_CTX* ctx = c.ctx.get();
    OSSL_CMP_CTX_set_log_cb(ctx, client_log_cb);
    if (cc.transfer) {
        c.transfer = cc.transfer;
    } else {
        X2SEC_TRY(auto u, parse_server_url(cc.server_url));
        OSSL_CMP_CTX_set1_server(ctx, u.host.c_str());
        OSSL_CMP_CTX_set_serverPort(ctx, u.port);
        OSSL_CMP_CTX_set1_serverPath(ctx, u.path.c_str());
        OSSL_CMP_CTX_set_option(ctx, OSSL_CMP_OPT_MSG_TIMEOUT, cc.timeout_s);
        // One message per connection unless asked (RFC 6712: the messages of a transaction
        // must not depend on the connection; keep-alive only saves the connection set-up).
        OSSL_CMP_CTX_set_option(ctx, OSSL_CMP_OPT_KEEP_ALIVE, cc.keep_alive ? 1 : 0);
        OSSL_CMP_CTX_set_option(ctx, OSSL_CMP_OPT_TOTAL_TIMEOUT, cc.timeout_s * 3);
        if (u.tls) {
            if (cc.tls.trust.empty())
                return Error(ErrorDomain::Config, 0, "https needs TLS trust anchors for the server certificate");
            c.tls = std::make_unique<TlsArg>();
            c.tls->host = u.host;
            c.tls->ctx = SSL_CTX_new(TLS_client_method());
            SSL_CTX_set_min_proto_version(c.tls->ctx, TLS1_2_VERSION);
            SSL_CTX_set_verify(c.tls->ctx, SSL_VERIFY_PEER, nullptr);
            X509_STORE* ts = SSL_CTX_get_cert_store(c.tls->ctx);
            for (X509* x : cc.tls.trust) X509_STORE_add_cert(ts, x);
            if ((cc.tls.client_cert == nullptr) != (cc.tls.client_key == nullptr))
                return Error(ErrorDomain::Config, 0, "a TLS client certificate needs its key and the other way round");
            if (cc.tls.client_cert) {
                if (SSL_CTX_use_certificate(c.tls->ctx, cc.tls.client_cert) != 1 ||
                    SSL_CTX_use_PrivateKey(c.tls->ctx, cc.tls.client_key) != 1 ||
                    SSL_CTX_check_private_key(c.tls->ctx) != 1)
                    return pki::ossl_error(ErrorDomain::Crypto, "TLS client certificate and key");
                for (X509* x : cc.tls.client_chain)
                    if (SSL_CTX_add1_chain_cert(c.tls->ctx, x) != 1)
                        return pki::ossl_error(ErrorDomain::Crypto, "TLS client chain");
            }
            OSSL_CMP_CTX_set_http_cb(ctx, tls_http_cb);
            OSSL_CMP_CTX_set_http_cb_arg(ctx, c.tls.get());
        }
    }
    if (!key || !cert) return Error(ErrorDomain::Config, 0, "a signing key and certificate are required");
    if (X509_check_private_key(cert, key) != 1) {
        ERR_clear_error();
        return Error(ErrorDomain::Config, 0, "the signing key does not match its certificate");
    }
    OSSL_CMP_CTX_set1_cert(ctx, cert);
    OSSL_CMP_CTX_set1_pkey(ctx, key);
    auto untrusted = pki::make_stack(chain);
    OSSL_CMP_CTX_set1_untrusted(ctx, untrusted.get());
    // Our own chain goes into extraCerts (signer first): TS 33.310 9.5.
    STACK_OF(X509)* own = sk_X509_new_null();
    for (X509* x : chain) {
        X509_up_ref(x);
        sk_X509_push(own, x);
    }
    pki::CertStackPtr own_guard(own);
    OSSL_CMP_CTX_set1_extraCertsOut(ctx, own);
    if (!cc.transaction_id.empty()) {
        ASN1_OCTET_STRING* os = ASN1_OCTET_STRING_new();
        ASN1_OCTET_STRING_set(os, cc.transaction_id.data(), static_cast<int>(cc.transaction_id.size()));
        OSSL_CMP_CTX_set1_transactionID(ctx, os);
        ASN1_OCTET_STRING_free(os);
    }
    c.trusted.reset(X509_STORE_new());
    for (X509* r : cc.operator_roots) X509_STORE_add_cert(c.trusted.get(), r);
    c.provisioned = cc.operator_roots;
    return c;
}

Error cmp_failure(OSSL_CMP_CTX* ctx, const std::string& what, const std::string& local_check) {
    int fi = OSSL_CMP_CTX_get_failInfoCode(ctx);
    int bit = -1;
    for (int b = 0; fi > 0 && b <= OSSL_CMP_PKIFAILUREINFO_MAX; ++b)
        if (fi & (1 << b)) {
            bit = b;
            break;
        }
    std::string detail = what + " failed";
    if (OSSL_CMP_CTX_get_status(ctx) >= 0) {
        char buf[OSSL_CMP_PKISI_BUFLEN];
        if (const char* s = OSSL_CMP_CTX_snprint_PKIStatus(ctx, buf, sizeof buf))
            detail += ": server said " + std::string(s);
    }
    if (!local_check.empty()) detail += ": " + local_check;
    auto q = pki::ossl_errors();
    if (!q.empty()) detail += " [" + q + "]";
    return Error(ErrorDomain::Cmp, bit, detail);
}

Result<Enrolled> collect(Ctx& c, X509* newcert) {
    OSSL_CMP_CTX* ctx = c.ctx.get();
    Enrolled e;
    e.cert = pki::up_ref(newcert);
    auto take = [](STACK_OF(X509) * sk) {
        std::vector<X509Ptr> v;
        for (int i = 0; sk && i < sk_X509_num(sk); ++i) v.push_back(pki::up_ref(sk_X509_value(sk, i)));
        sk_X509_pop_free(sk, X509_free);
        return v;
    };
    e.ca_pubs = take(OSSL_CMP_CTX_get1_caPubs(ctx));
    e.extra_certs = take(OSSL_CMP_CTX_get1_extraCertsIn(ctx));
    e.operator_root = std::move(c.anchor);
    if (!e.operator_root)
        return Error(ErrorDomain::Cmp, -1, "enrolled certificate was not validated against an operator root");
    // chain: issuing CA .. root, built from what the server sent
    std::vector<X509*> pool;
    for (auto& x : e.extra_certs) pool.push_back(x.get());
    for (auto& x : e.ca_pubs) pool.push_back(x.get());
    X509* cur = newcert;
    for (int depth = 0; depth < 8; ++depth) {
        if (X509_check_issued(cur, cur) == X509_V_OK) break;
        X509* issuer = nullptr;
        for (X509* p : pool)
            if (X509_check_issued(p, cur) == X509_V_OK) {
                issuer = p;
                break;
            }
        if (!issuer) break;
        e.chain.push_back(pki::up_ref(issuer));
        cur = issuer;
    }
    return e;
}

}  // namespace

Result<Enrolled> Client::enroll(const EnrollRequest& r) {
    if (!r.new_key) return Error(ErrorDomain::Config, 0, "enroll: new_key is required");
    std::vector<X509*> chain{r.auth_cert};
    chain.insert(chain.end(), r.auth_chain.begin(), r.auth_chain.end());
    X2SEC_TRY(auto c, make_ctx(r, r.auth_key, r.auth_cert, chain));
    OSSL_CMP_CTX* ctx = c.ctx.get();
    if (c.transfer) {
        OSSL_CMP_CTX_set_transfer_cb(ctx, transfer_cb);
        OSSL_CMP_CTX_set_transfer_cb_arg(ctx, &c.transfer);
    }
    OSSL_CMP_CTX_set0_trustedStore(ctx, c.trusted.release());
    c.in_band_ok = r.operator_roots.empty();
    if (c.in_band_ok) OSSL_CMP_CTX_set_option(ctx, OSSL_CMP_OPT_PERMIT_TA_IN_EXTRACERTS_FOR_IR, 1);
    EVP_PKEY_up_ref(r.new_key);
    OSSL_CMP_CTX_set0_newPkey(ctx, 1, r.new_key);
    if (!r.subject.empty()) {
        X2SEC_TRY(auto n, pki::parse_name(r.subject));
        OSSL_CMP_CTX_set1_subjectName(ctx, n.get());
    }
    for (auto& d : r.dns) {
        GENERAL_NAME* g = a2i_GENERAL_NAME(nullptr, nullptr, nullptr, GEN_DNS, d.c_str(), 0);
        if (!g) return Error(ErrorDomain::Config, 0, "invalid dNSName '" + d + "'");
        OSSL_CMP_CTX_push1_subjectAltName(ctx, g);
        GENERAL_NAME_free(g);
    }
    // Do not copy the vendor certificate's SANs into the template by default.
    OSSL_CMP_CTX_set_option(ctx, OSSL_CMP_OPT_SUBJECTALTNAME_NODEFAULT, 1);
    OSSL_CMP_CTX_set_option(ctx, OSSL_CMP_OPT_IMPLICIT_CONFIRM, r.implicit_confirm ? 1 : 0);
    c.new_key = r.new_key;
    c.want_dns = r.dns;
    OSSL_CMP_CTX_set_certConf_cb(ctx, certconf_cb);
    OSSL_CMP_CTX_set_certConf_cb_arg(ctx, &c);
    X509* cert = OSSL_CMP_exec_IR_ses(ctx);
    if (!cert) return cmp_failure(ctx, "ir", c.check_error);
    ERR_clear_error();
    return collect(c, cert);
}

Result<Enrolled> Client::renew(const RenewRequest& r) {
    if (r.operator_roots.empty()) return Error(ErrorDomain::Config, 0, "renew: the operator root must be provisioned");
    if (!r.new_key) return Error(ErrorDomain::Config, 0, "renew: new_key is required");
    std::vector<X509*> chain{r.current_cert};
    chain.insert(chain.end(), r.current_chain.begin(), r.current_chain.end());
    X2SEC_TRY(auto c, make_ctx(r, r.current_key, r.current_cert, chain));
    OSSL_CMP_CTX* ctx = c.ctx.get();
    if (c.transfer) {
        OSSL_CMP_CTX_set_transfer_cb(ctx, transfer_cb);
        OSSL_CMP_CTX_set_transfer_cb_arg(ctx, &c.transfer);
    }
    OSSL_CMP_CTX_set0_trustedStore(ctx, c.trusted.release());
    OSSL_CMP_CTX_set1_oldCert(ctx, r.current_cert);
    EVP_PKEY_up_ref(r.new_key);
    OSSL_CMP_CTX_set0_newPkey(ctx, 1, r.new_key);
    OSSL_CMP_CTX_set_option(ctx, OSSL_CMP_OPT_IMPLICIT_CONFIRM, r.implicit_confirm ? 1 : 0);
    c.new_key = r.new_key;
    c.want_dns = pki::san_dns(r.current_cert);
    OSSL_CMP_CTX_set_certConf_cb(ctx, certconf_cb);
    OSSL_CMP_CTX_set_certConf_cb_arg(ctx, &c);
    X509* cert = OSSL_CMP_exec_KUR_ses(ctx);
    if (!cert) return cmp_failure(ctx, "kur", c.check_error);
    ERR_clear_error();
    return collect(c, cert);
}

Status Client::revoke(const RevokeRequest& r) {
    if (r.operator_roots.empty()) return Error(ErrorDomain::Config, 0, "revoke: the operator root must be provisioned");
    std::vector<X509*> chain{r.cert};
    chain.insert(chain.end(), r.chain.begin(), r.chain.end());
    X2SEC_TRY(auto c, make_ctx(r, r.key, r.cert, chain));
    OSSL_CMP_CTX* ctx = c.ctx.get();
    if (c.transfer) {
        OSSL_CMP_CTX_set_transfer_cb(ctx, transfer_cb);
        OSSL_CMP_CTX_set_transfer_cb_arg(ctx, &c.transfer);
    }
    OSSL_CMP_CTX_set0_trustedStore(ctx, c.trusted.release());
    OSSL_CMP_CTX_set1_oldCert(ctx, r.cert);
    OSSL_CMP_CTX_set_option(ctx, OSSL_CMP_OPT_REVOCATION_REASON, r.reason);
    if (OSSL_CMP_exec_RR_ses(ctx) != 1) return cmp_failure(ctx, "rr", "");
    ERR_clear_error();
    return ok_status();
}

}  // namespace x2sec::cmp
