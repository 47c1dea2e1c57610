// Parsing a DER certificate without OpenSSL 3.0's per-certificate decoder set-up.
//
// In OpenSSL 3.0, d2i_X509 decodes the SubjectPublicKeyInfo through the provider decoder
// framework: OSSL_DECODER_CTX_new_for_pkey walks every key manager and decoder of the loaded
// providers for each certificate, and the EC decoder then rebuilds the curve's EC_GROUP.  That
// is ~90-150 us per certificate, more than an ECDSA P-256 verify, and an IKE responder parses
// every peer's certificate (3.1+ caches decoder contexts; Debian 12 ships 3.0).
//
// Here the certificate is decoded in a library context whose only provider is a built-in one
// that hands out the default provider's message digests and nothing else (X509 code needs
// SHA-1 for its extension cache), so d2i_X509 finds no decoder and leaves the key unset (~10
// us).  The key is then attached from the SubjectPublicKeyInfo octets for the two key types
// whose legacy encoders reproduce the received encoding, EC on a named curve (P-256, P-384;
// uncompressed point; the legacy key lives on a per-process copy of the curve, affine_group())
// and rsaEncryption, through the legacy EC_KEY / RSA objects: in OpenSSL 3.0 X509_set_pubkey
// attaches a legacy key directly,
// while a provider key would go through an encoder and a decoder again.  These functions are
// deprecated in 3.0 but not removed, and this file is the only place that uses them.
//
// The result must be indistinguishable from d2i_X509 in the default context: the certificate
// is re-encoded and compared with the received DER octet for octet (X509_set_pubkey marks the
// TBSCertificate modified, so OpenSSL verifies its signature over the re-encoding, which is
// therefore the received one); the key is decoded by EC_KEY_oct2key (rejects a point off the
// curve) or d2i_RSAPublicKey.  Anything else -- another key type, explicit curve parameters, a
// compressed point, a non-DER encoding, a malformed certificate, and every CA certificate (its
// key verifies other certificates, in their context) -- is not handled here and the caller
// parses it the ordinary way.  Path validation is unchanged: X509_verify_cert runs on
// the result with the X509_STORE as before; the certificate's own signature is verified with
// the issuer's (provider) key, whose provider OpenSSL uses when this context has no signature
// algorithms.
#define OPENSSL_SUPPRESS_DEPRECATED 1

#include "der_parse.hpp"

#include <atomic>
#include <cstring>
#include <openssl/core_dispatch.h>
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/provider.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <x2sec/crypto/crypto.hpp>
#include <x2sec/crypto/ossl_ptr.hpp>

namespace x2sec::x509::detail {

std::atomic<uint64_t> g_fast{0}, g_fallback{0};

namespace {

OSSL_PROVIDER* g_default = nullptr;  // the default provider of the default library context

const OSSL_ALGORITHM kNoAlgorithms[] = {{nullptr, nullptr, nullptr, nullptr}};

const OSSL_ALGORITHM* digests_only(void* /*provctx*/, int operation_id, int* no_cache) {
    if (operation_id == OSSL_OP_DIGEST) return OSSL_PROVIDER_query_operation(g_default, operation_id, no_cache);
    *no_cache = 0;
    return kNoAlgorithms;
}

const OSSL_DISPATCH kDispatch[] = {{OSSL_FUNC_PROVIDER_QUERY_OPERATION, reinterpret_cast<void (*)()>(digests_only)},
                                   {0, nullptr}};

int digests_only_init(const OSSL_CORE_HANDLE* /*handle*/, const OSSL_DISPATCH* /*in*/, const OSSL_DISPATCH** out,
                      void** provctx) {
    *out = kDispatch;
    // The digest implementations run with the default provider's own context.
    *provctx = OSSL_PROVIDER_get0_provider_ctx(g_default);
    return 1;
}

// Built once, never freed (process lifetime, like OpenSSL's own provider store).  nullptr when
// the default provider cannot be loaded (e.g. a FIPS-only configuration): every certificate
// then takes the ordinary path.
OSSL_LIB_CTX* parse_libctx() {
    static OSSL_LIB_CTX* const ctx = []() -> OSSL_LIB_CTX* {
        ERR_set_mark();
        g_default = OSSL_PROVIDER_load(nullptr, "default");
        OSSL_LIB_CTX* c = g_default != nullptr ? OSSL_LIB_CTX_new() : nullptr;
        if (c != nullptr && (OSSL_PROVIDER_add_builtin(c, "x2sec-x509-digests", digests_only_init) != 1 ||
                             OSSL_PROVIDER_load(c, "x2sec-x509-digests") == nullptr)) {
            OSSL_LIB_CTX_free(c);
            c = nullptr;
        }
        ERR_pop_to_mark();
        return c;
    }();
    return ctx;
}

// The legacy key only carries the point for OpenSSL's chain bookkeeping and the certificate's
// re-encoding; no signature is ever checked with it (public_key() is the provider copy).  Its
// group is therefore built on OpenSSL's generic Montgomery method, whose points stay affine:
// decoding and re-encoding the point cost no field inversion (the optimised P-256 method
// inverts on every encoding, ~4 us per certificate).  Same curve, same name, same encoding.
// Built once per curve from the cached group, never freed; nullptr if anything fails (the
// cached group itself is used then).
const EC_GROUP* affine_group(int curve) {
    auto make = [](int nid) -> EC_GROUP* {
        const EC_GROUP* fast = crypto::cached_ec_group(nid);
        if (fast == nullptr) return nullptr;
        BIGNUM* p = BN_new();
        BIGNUM* a = BN_new();
        BIGNUM* b = BN_new();
        BIGNUM* x = BN_new();
        BIGNUM* y = BN_new();
        EC_GROUP* g = EC_GROUP_new(EC_GFp_mont_method());
        EC_POINT* gen = g != nullptr ? EC_POINT_new(g) : nullptr;
        bool ok = p && a && b && x && y && gen && EC_GROUP_get_curve(fast, p, a, b, nullptr) == 1 &&
                  EC_GROUP_set_curve(g, p, a, b, nullptr) == 1 &&
                  EC_POINT_get_affine_coordinates(fast, EC_GROUP_get0_generator(fast), x, y, nullptr) == 1 &&
                  EC_POINT_set_affine_coordinates(g, gen, x, y, nullptr) == 1 &&
                  EC_GROUP_set_generator(g, gen, EC_GROUP_get0_order(fast), EC_GROUP_get0_cofactor(fast)) == 1;
        if (ok) {
            EC_GROUP_set_curve_name(g, nid);
            EC_GROUP_set_asn1_flag(g, OPENSSL_EC_NAMED_CURVE);
            EC_GROUP_set_point_conversion_form(g, POINT_CONVERSION_UNCOMPRESSED);
        }
        EC_POINT_free(gen);
        BN_free(p);
        BN_free(a);
        BN_free(b);
        BN_free(x);
        BN_free(y);
        if (!ok) {
            EC_GROUP_free(g);
            return nullptr;
        }
        return g;
    };
    static const EC_GROUP* const p256 = make(NID_X9_62_prime256v1);
    static const EC_GROUP* const p384 = make(NID_secp384r1);
    const EC_GROUP* g = curve == NID_secp384r1 ? p384 : curve == NID_X9_62_prime256v1 ? p256 : nullptr;
    return g != nullptr ? g : crypto::cached_ec_group(curve);
}

using PkeyPtr = crypto::OsslPtr<EVP_PKEY, EVP_PKEY_free>;

// A legacy EVP_PKEY for the SubjectPublicKeyInfo, or nullptr when this path does not handle it.
// For EC keys also the provider-native key the AUTH check uses (a legacy EC key would be
// exported to the provider, rebuilding its EC_GROUP, on every use).
PkeyPtr legacy_key(const X509_PUBKEY* spki, PkeyPtr& provider_key) {
    ASN1_OBJECT* alg_oid = nullptr;
    const unsigned char* bits = nullptr;
    int bits_len = 0;
    X509_ALGOR* alg = nullptr;
    if (X509_PUBKEY_get0_param(&alg_oid, &bits, &bits_len, &alg, spki) != 1 || bits_len <= 0) return nullptr;
    int ptype = 0;
    const void* pval = nullptr;
    X509_ALGOR_get0(nullptr, &ptype, &pval, alg);
    PkeyPtr pkey(EVP_PKEY_new());
    if (!pkey) return nullptr;
    switch (OBJ_obj2nid(alg_oid)) {
        case NID_X9_62_id_ecPublicKey: {
            if (ptype != V_ASN1_OBJECT || bits[0] != 0x04) return nullptr;
            const int curve = OBJ_obj2nid(static_cast<const ASN1_OBJECT*>(pval));
            const EC_GROUP* group = affine_group(curve);  // nullptr: not a curve handled here
            if (group == nullptr) return nullptr;
            EC_KEY* ec = EC_KEY_new();
            if (ec == nullptr || EC_KEY_set_group(ec, group) != 1 ||
                EC_KEY_oct2key(ec, bits, static_cast<size_t>(bits_len), nullptr) != 1 ||
                EVP_PKEY_assign_EC_KEY(pkey.get(), ec) != 1) {
                EC_KEY_free(ec);
                return nullptr;
            }
            provider_key.reset(crypto::ec_public_key_from_point(curve, BytesView(bits, static_cast<size_t>(bits_len))));
            if (!provider_key) return nullptr;
            return pkey;
        }
        case NID_rsaEncryption: {
            if (ptype != V_ASN1_NULL) return nullptr;
            const unsigned char* p = bits;
            RSA* rsa = d2i_RSAPublicKey(nullptr, &p, bits_len);
            if (rsa == nullptr || p != bits + bits_len || EVP_PKEY_assign_RSA(pkey.get(), rsa) != 1) {
                RSA_free(rsa);
                return nullptr;
            }
            return pkey;
        }
        default:
            return nullptr;
    }
}

X509* parse_marked(BytesView der, EVP_PKEY** provider_key) {
    OSSL_LIB_CTX* ctx = parse_libctx();
    if (ctx == nullptr || der.empty()) return nullptr;
    X509* x = X509_new_ex(ctx, nullptr);
    if (x == nullptr) return nullptr;
    const unsigned char* p = der.data();
    if (d2i_X509(&x, &p, static_cast<long>(der.size())) == nullptr) return nullptr;  // d2i freed x
    std::unique_ptr<X509, decltype(&X509_free)> owned(x, &X509_free);
    if (p != der.data() + der.size() || X509_get0_pubkey(x) != nullptr) return nullptr;
    PkeyPtr auth_key;
    PkeyPtr key = legacy_key(X509_get_X509_PUBKEY(x), auth_key);
    if (!key || X509_set_pubkey(x, key.get()) != 1) return nullptr;
    unsigned char* re = nullptr;
    const int re_len = i2d_X509(x, &re);
    const bool same = re_len == static_cast<int>(der.size()) && std::memcmp(re, der.data(), der.size()) == 0;
    OPENSSL_free(re);
    if (!same) return nullptr;
    // Only end-entity certificates: a key that verifies other certificates must be the
    // provider's, since a legacy key cannot be exported into this context (no key managers).
    // OpenSSL accepts no certificate with X509_check_ca() == 0 as an issuer.
    if (X509_check_ca(x) != 0) return nullptr;
    *provider_key = auth_key.release();
    return owned.release();
}

}  // namespace

X509* parse_der_fast(BytesView der, EVP_PKEY** provider_key) {
    *provider_key = nullptr;
    ERR_set_mark();
    X509* x = parse_marked(der, provider_key);
    ERR_pop_to_mark();  // the expected "no decoder" errors, and those of a fallback
    (x != nullptr ? g_fast : g_fallback).fetch_add(1, std::memory_order_relaxed);
    return x;
}

}  // namespace x2sec::x509::detail

namespace x2sec::x509 {

ParseCounters parse_counters() {
    return ParseCounters{detail::g_fast.load(std::memory_order_relaxed),
                         detail::g_fallback.load(std::memory_order_relaxed)};
}

}  // namespace x2sec::x509
