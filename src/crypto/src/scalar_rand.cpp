// A library context in which OpenSSL's EC key generation takes a private scalar we already
// have.  OpenSSL 3.0 has no cheap way to import an EC private key: EVP_PKEY_fromdata (and every
// decoder) rebuilds the EC_GROUP from the curve name, ~10 us per key, while keygen from a
// parameters template copies the cached group.  So DhKeyPair::from_private runs keygen in this
// context, whose DRBG is a built-in provider ("x2sec-scalar") that hands out the scalar the
// calling thread set up (ScalarFeed) for the first request, then fresh bytes from the process
// DRBG (point blinding in P-384's ladder asks for some).  Private DRBGs are per thread in
// OpenSSL, and the feed is thread-local, so engines on several threads do not interfere.
// The scalar is never copied: the provider reads the caller's buffer.
#include <cstring>
#include <openssl/core_dispatch.h>
#include <openssl/core_names.h>
#include <openssl/provider.h>
#include <openssl/rand.h>

#include "ossl.hpp"

namespace x2sec::crypto::detail {

namespace {

thread_local ScalarFeedState* t_feed = nullptr;

struct RandCtx {
    int state = EVP_RAND_STATE_UNINITIALISED;
};

void* rand_newctx(void*, void*, const OSSL_DISPATCH*) {
    return new (std::nothrow) RandCtx;
}
void rand_freectx(void* vctx) {
    delete static_cast<RandCtx*>(vctx);
}
int rand_instantiate(void* vctx, unsigned int, int, const unsigned char*, size_t, const OSSL_PARAM[]) {
    static_cast<RandCtx*>(vctx)->state = EVP_RAND_STATE_READY;
    return 1;
}
int rand_uninstantiate(void* vctx) {
    static_cast<RandCtx*>(vctx)->state = EVP_RAND_STATE_UNINITIALISED;
    return 1;
}
int rand_generate(void*, unsigned char* out, size_t outlen, unsigned int, int, const unsigned char*, size_t) {
    ScalarFeedState* f = t_feed;
    if (f != nullptr && !f->consumed && !f->mismatch) {
        if (outlen != f->size) {
            f->mismatch = true;  // keygen drew other than the scalar: from_private refuses the key
            return 0;
        }
        std::memcpy(out, f->data, outlen);
        f->consumed = true;
        return 1;
    }
    // Anything else (coordinate blinding): the process DRBG.
    return RAND_priv_bytes(out, static_cast<int>(outlen));
}
int rand_enable_locking(void*) {
    return 1;  // instances are per thread (private/public DRBGs) or never generate (primary)
}
int rand_get_ctx_params(void* vctx, OSSL_PARAM params[]) {
    OSSL_PARAM* p = OSSL_PARAM_locate(params, OSSL_RAND_PARAM_STATE);
    if (p != nullptr && !OSSL_PARAM_set_int(p, static_cast<RandCtx*>(vctx)->state)) return 0;
    p = OSSL_PARAM_locate(params, OSSL_RAND_PARAM_STRENGTH);
    if (p != nullptr && !OSSL_PARAM_set_uint(p, 256)) return 0;
    p = OSSL_PARAM_locate(params, OSSL_RAND_PARAM_MAX_REQUEST);
    if (p != nullptr && !OSSL_PARAM_set_size_t(p, 1u << 16)) return 0;
    return 1;
}
const OSSL_PARAM* rand_gettable_ctx_params(void*, void*) {
    static const OSSL_PARAM known[] = {OSSL_PARAM_int(OSSL_RAND_PARAM_STATE, nullptr),
                                       OSSL_PARAM_uint(OSSL_RAND_PARAM_STRENGTH, nullptr),
                                       OSSL_PARAM_size_t(OSSL_RAND_PARAM_MAX_REQUEST, nullptr), OSSL_PARAM_END};
    return known;
}

template <typename F>
void (*fn(F f))(void) {
    return reinterpret_cast<void (*)()>(f);
}

const OSSL_DISPATCH* rand_functions() {
    static const OSSL_DISPATCH d[] = {{OSSL_FUNC_RAND_NEWCTX, fn(&rand_newctx)},
                                      {OSSL_FUNC_RAND_FREECTX, fn(&rand_freectx)},
                                      {OSSL_FUNC_RAND_INSTANTIATE, fn(&rand_instantiate)},
                                      {OSSL_FUNC_RAND_UNINSTANTIATE, fn(&rand_uninstantiate)},
                                      {OSSL_FUNC_RAND_GENERATE, fn(&rand_generate)},
                                      {OSSL_FUNC_RAND_ENABLE_LOCKING, fn(&rand_enable_locking)},
                                      {OSSL_FUNC_RAND_GET_CTX_PARAMS, fn(&rand_get_ctx_params)},
                                      {OSSL_FUNC_RAND_GETTABLE_CTX_PARAMS, fn(&rand_gettable_ctx_params)},
                                      {0, nullptr}};
    return d;
}

const OSSL_ALGORITHM* provider_query(void*, int operation_id, int* no_cache) {
    *no_cache = 0;
    static const OSSL_ALGORITHM rands[] = {{"X2SEC-SCALAR", "provider=x2sec-scalar", rand_functions(), nullptr},
                                           {nullptr, nullptr, nullptr, nullptr}};
    return operation_id == OSSL_OP_RAND ? rands : nullptr;
}

int provider_init(const OSSL_CORE_HANDLE*, const OSSL_DISPATCH*, const OSSL_DISPATCH** out, void** provctx) {
    static const OSSL_DISPATCH d[] = {{OSSL_FUNC_PROVIDER_QUERY_OPERATION, fn(&provider_query)}, {0, nullptr}};
    *out = d;
    *provctx = nullptr;
    return 1;
}

OSSL_LIB_CTX* make_scalar_libctx() {
    OSSL_LIB_CTX* ctx = OSSL_LIB_CTX_new();
    if (ctx == nullptr) return nullptr;
    if (OSSL_PROVIDER_add_builtin(ctx, "x2sec-scalar", provider_init) != 1 ||
        OSSL_PROVIDER_load(ctx, "x2sec-scalar") == nullptr || OSSL_PROVIDER_load(ctx, "default") == nullptr ||
        RAND_set_DRBG_type(ctx, "X2SEC-SCALAR", "provider=x2sec-scalar", nullptr, nullptr) != 1) {
        OSSL_LIB_CTX_free(ctx);
        return nullptr;
    }
    return ctx;  // never freed: process-lifetime, like the curve caches
}

}  // namespace

OSSL_LIB_CTX* scalar_libctx() {
    static OSSL_LIB_CTX* const ctx = make_scalar_libctx();
    return ctx;
}

ScalarFeed::ScalarFeed(BytesView scalar) : m_state{scalar.data(), scalar.size()}, m_prev(t_feed) {
    t_feed = &m_state;
}

ScalarFeed::~ScalarFeed() {
    t_feed = m_prev;
}

}  // namespace x2sec::crypto::detail
