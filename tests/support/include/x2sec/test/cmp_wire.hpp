// An OpenSSL CMP client context talking to an in-process cmp::Server, for the CMP server
// tests: a transfer callback that carries each request to `handle` and keeps the last DER
// request and response, and the client trust of the lab PKI's operator CA.  Header only, for
// tests that link x2sec::cmp.
//
//   test::CmpWire wire;
//   wire.handle = [&](BytesView b) { return server.handle(b); };
//   OSSL_CMP_CTX* ctx = OSSL_CMP_CTX_new(nullptr, nullptr);
//   test::attach(ctx, wire);
//   test::trust_operator_ca(ctx, lab);
#pragma once

#include <openssl/cmp.h>
#include <openssl/x509.h>

#include <functional>
#include <vector>
#include <x2sec/cmp/lab_pki.hpp>
#include <x2sec/common/bytes.hpp>
#include <x2sec/common/result.hpp>

namespace x2sec::test {

struct CmpWire {
    std::function<Result<Bytes>(BytesView)> handle;  // the server (a failure: no response)
    Bytes last_request, last_response;
};

// The transfer callback: `ctx`'s transfer-callback argument is a CmpWire.
inline OSSL_CMP_MSG* cmp_wire_transfer(OSSL_CMP_CTX* ctx, const OSSL_CMP_MSG* req) {
    auto* w = static_cast<CmpWire*>(OSSL_CMP_CTX_get_transfer_cb_arg(ctx));
    unsigned char* der = nullptr;
    const int n = i2d_OSSL_CMP_MSG(req, &der);
    if (n <= 0) return nullptr;
    w->last_request.assign(der, der + n);
    OPENSSL_free(der);
    auto rsp = w->handle(w->last_request);
    if (!rsp) return nullptr;
    w->last_response = *rsp;
    const unsigned char* p = rsp->data();
    return d2i_OSSL_CMP_MSG(nullptr, &p, static_cast<long>(rsp->size()));
}

inline void attach(OSSL_CMP_CTX* ctx, CmpWire& w) {
    OSSL_CMP_CTX_set_transfer_cb(ctx, cmp_wire_transfer);
    OSSL_CMP_CTX_set_transfer_cb_arg(ctx, &w);
}

// A new stack holding a reference to each of `certs` (free with sk_X509_pop_free(s, X509_free)).
inline STACK_OF(X509) * x509_stack(const std::vector<X509*>& certs) {
    STACK_OF(X509)* sk = sk_X509_new_null();
    for (X509* x : certs) {
        X509_up_ref(x);
        sk_X509_push(sk, x);
    }
    return sk;
}

// The client trusts the operator root and may build the RA's chain through the operator's
// issuing CA (replaces the context's untrusted certificates).
inline void trust_operator_ca(OSSL_CMP_CTX* ctx, const cmp::LabPki& lab) {
    X509_STORE* ts = X509_STORE_new();
    X509_STORE_add_cert(ts, lab.operator_root.cert.get());
    OSSL_CMP_CTX_set0_trustedStore(ctx, ts);
    STACK_OF(X509)* un = x509_stack({lab.operator_issuing.cert.get()});
    OSSL_CMP_CTX_set1_untrusted(ctx, un);
    sk_X509_pop_free(un, X509_free);
}

}  // namespace x2sec::test
