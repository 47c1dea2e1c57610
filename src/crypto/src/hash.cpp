#include <cstdio>
#include <cstdlib>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <x2sec/crypto/crypto.hpp>

#include "ossl.hpp"

namespace x2sec::crypto {

namespace {

const EVP_MD* implicit_md(Hash h) {
    switch (h) {
        case Hash::Sha1:
            return EVP_sha1();
        case Hash::Sha256:
            return EVP_sha256();
        case Hash::Sha384:
            return EVP_sha384();
        case Hash::Sha512:
            return EVP_sha512();
    }
    return EVP_sha256();
}

// Explicitly fetched digests, once per process (immutable, shared between threads): OpenSSL 3.0
// fetches the implementation of an EVP_sha1()-style digest from the method store on every
// EVP_DigestInit, which doubles the cost of a short digest (NAT_DETECTION, CERTREQ hashes:
// 0.50 us against 0.24 us for SHA-1 of 64 octets).  The built-in object is the fallback.
const EVP_MD* fetch_md(Hash h, const char* name) {
    EVP_MD* md = EVP_MD_fetch(nullptr, name, nullptr);
    return md != nullptr ? md : implicit_md(h);
}

const EVP_MD* md_of(Hash h) {
    static const EVP_MD* const t[4] = {fetch_md(Hash::Sha1, "SHA1"), fetch_md(Hash::Sha256, "SHA256"),
                                       fetch_md(Hash::Sha384, "SHA384"), fetch_md(Hash::Sha512, "SHA512")};
    const auto i = static_cast<size_t>(h);
    return i < 4 ? t[i] : implicit_md(h);
}

// Fetched once per process; EVP_MAC objects are immutable and shareable between threads.
EVP_MAC* hmac_alg() {
    static EVP_MAC* mac = EVP_MAC_fetch(nullptr, "HMAC", nullptr);
    return mac;
}

[[noreturn]] void fatal(const char* what) {
    // hmac/digest have no error channel in the API: an OpenSSL failure here means the library
    // is unusable (no default provider), and silently returning garbage would be worse.
    std::string q = openssl_errors();
    std::fprintf(stderr, "x2sec::crypto: %s failed: %s\n", what, q.c_str());
    std::abort();
}

}  // namespace

const EVP_MD* detail::evp_md(Hash h) {
    return md_of(h);
}

size_t hash_size(Hash h) {
    switch (h) {
        case Hash::Sha1:
            return 20;
        case Hash::Sha256:
            return 32;
        case Hash::Sha384:
            return 48;
        case Hash::Sha512:
            return 64;
    }
    return 0;
}

const char* hash_name(Hash h) {
    switch (h) {
        case Hash::Sha1:
            return "SHA1";
        case Hash::Sha256:
            return "SHA256";
        case Hash::Sha384:
            return "SHA384";
        case Hash::Sha512:
            return "SHA512";
    }
    return "?";
}

Bytes digest(Hash h, BytesView data) {
    Bytes out(hash_size(h));
    unsigned int len = 0;
    if (EVP_Digest(data.data(), data.size(), out.data(), &len, md_of(h), nullptr) != 1 || len != out.size())
        fatal("EVP_Digest");
    return out;
}

namespace {

using MacCtxPtr = std::unique_ptr<EVP_MAC_CTX, detail::Deleter<EVP_MAC_CTX_free>>;

// One unkeyed HMAC context per hash with its digest set, built once and afterwards only copied
// (EVP_MAC_CTX_dup reads it; concurrent copies are safe).  A copy needs no digest fetch by name,
// which EVP_MAC_init with a digest parameter does on every call.
EVP_MAC_CTX* make_hmac_template(Hash h) {
    EVP_MAC* mac = hmac_alg();
    if (mac == nullptr) fatal("EVP_MAC_fetch(HMAC)");
    EVP_MAC_CTX* ctx = EVP_MAC_CTX_new(mac);
    if (ctx == nullptr) fatal("EVP_MAC_CTX_new");
    OSSL_PARAM params[2] = {OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, const_cast<char*>(hash_name(h)), 0),
                            OSSL_PARAM_construct_end()};
    if (EVP_MAC_CTX_set_params(ctx, params) != 1) fatal("EVP_MAC_CTX_set_params(HMAC digest)");
    return ctx;  // process lifetime
}

const EVP_MAC_CTX* hmac_template(Hash h) {
    static EVP_MAC_CTX* const t[4] = {make_hmac_template(Hash::Sha1), make_hmac_template(Hash::Sha256),
                                      make_hmac_template(Hash::Sha384), make_hmac_template(Hash::Sha512)};
    return t[static_cast<size_t>(h)];
}

// An HMAC context keyed with `key`, ready for update/final.
MacCtxPtr keyed_hmac(Hash h, BytesView key) {
    MacCtxPtr ctx(EVP_MAC_CTX_dup(hmac_template(h)));
    if (!ctx) fatal("EVP_MAC_CTX_dup");
    // An empty key is legal for HMAC (RFC 2104) but EVP_MAC_init rejects a null pointer.
    static const uint8_t empty = 0;
    const uint8_t* k = key.empty() ? &empty : key.data();
    if (EVP_MAC_init(ctx.get(), k, key.size(), nullptr) != 1) fatal("EVP_MAC_init(HMAC)");
    return ctx;
}

SecureBytes hmac_finish(EVP_MAC_CTX* ctx, Hash h, BytesView data) {
    if (!data.empty() && EVP_MAC_update(ctx, data.data(), data.size()) != 1) fatal("EVP_MAC_update");
    SecureBytes out(hash_size(h));
    size_t len = 0;
    if (EVP_MAC_final(ctx, out.data(), &len, out.size()) != 1 || len != out.size()) fatal("EVP_MAC_final");
    return out;
}

}  // namespace

SecureBytes hmac(Hash h, BytesView key, BytesView data) {
    MacCtxPtr ctx = keyed_hmac(h, key);
    return hmac_finish(ctx.get(), h, data);
}

// ---------------------------------------------------------------- PRF

namespace {
Hash prf_hash(PrfId id) {
    switch (id) {
        case PrfId::HmacSha2_256:
            return Hash::Sha256;
        case PrfId::HmacSha2_384:
            return Hash::Sha384;
        case PrfId::HmacSha2_512:
            return Hash::Sha512;
    }
    return Hash::Sha256;
}
}  // namespace

Result<Prf> Prf::create(PrfId id) {
    switch (id) {
        case PrfId::HmacSha2_256:
        case PrfId::HmacSha2_384:
        case PrfId::HmacSha2_512:
            return Prf(id);
    }
    return Error(ErrorDomain::Crypto, 0, "unsupported PRF transform " + std::to_string(static_cast<unsigned>(id)));
}

size_t Prf::size() const {
    return hash_size(prf_hash(m_id));
}

SecureBytes Prf::compute(BytesView key, BytesView data) const {
    return hmac(prf_hash(m_id), key, data);
}

Result<SecureBytes> Prf::plus(BytesView key, BytesView seed, size_t len) const {
    const size_t n = size();
    if (len > 255 * n)
        return Error(
            ErrorDomain::Crypto, 0,
            "prf+: " + std::to_string(len) + " octets requested, at most " + std::to_string(255 * n) + " possible");
    const Hash h = prf_hash(m_id);
    MacCtxPtr ctx = keyed_hmac(h, key);  // keyed once; each T(i) re-initialises it with the key
    SecureBytes out;
    SecureBytes t;  // T(i-1)
    SecureBytes input;
    for (unsigned i = 1; out.size() < len; ++i) {
        input.clear();
        input.append(t.view());
        input.append(seed);
        const uint8_t counter = static_cast<uint8_t>(i);
        input.append(BytesView(&counter, 1));
        // A null key restarts HMAC with the key already set (OpenSSL's HMAC_Init_ex reuse).
        if (i > 1 && EVP_MAC_init(ctx.get(), nullptr, 0, nullptr) != 1) fatal("EVP_MAC_init(HMAC, same key)");
        t = hmac_finish(ctx.get(), h, input.view());
        const size_t take = std::min(n, len - out.size());
        out.append(t.view().first(take));
    }
    return out;
}

}  // namespace x2sec::crypto
