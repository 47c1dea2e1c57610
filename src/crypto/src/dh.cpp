#include <openssl/core_names.h>
#include <openssl/dh.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/obj_mac.h>
#include <x2sec/crypto/crypto.hpp>

#include "ossl.hpp"

namespace x2sec::crypto {

using namespace detail;

const char* dh_group_name(DhGroup g) {
    switch (g) {
        case DhGroup::Modp2048:
            return "MODP_2048";
        case DhGroup::Ecp256:
            return "ECP_256";
        case DhGroup::Ecp384:
            return "ECP_384";
        case DhGroup::Curve25519:
            return "CURVE_25519";
    }
    return "?";
}

size_t dh_public_size(DhGroup g) {
    switch (g) {
        case DhGroup::Modp2048:
            return 256;
        case DhGroup::Ecp256:
            return 64;
        case DhGroup::Ecp384:
            return 96;
        case DhGroup::Curve25519:
            return 32;
    }
    return 0;
}

bool dh_group_supported(uint16_t iana_id) {
    return iana_id == 14 || iana_id == 19 || iana_id == 20 || iana_id == 31;
}

namespace {

const char* ec_curve(DhGroup g) {
    return g == DhGroup::Ecp256 ? "prime256v1" : "secp384r1";
}
int ec_nid(DhGroup g) {
    return g == DhGroup::Ecp256 ? NID_X9_62_prime256v1 : NID_secp384r1;
}
size_t ec_coord(DhGroup g) {
    return dh_public_size(g) / 2;
}

Error dh_error(DhGroup g, const std::string& what) {
    return crypto_error(std::string(dh_group_name(g)) + ": " + what);
}

Error unsupported_group(DhGroup g) {
    return Error(ErrorDomain::Crypto, 0, "unsupported DH group " + std::to_string(static_cast<unsigned>(g)));
}

Error dh_invalid(DhGroup g, const std::string& what) {
    openssl_errors();  // drop whatever OpenSSL queued while rejecting the value
    return Error(ErrorDomain::Crypto, 0, std::string(dh_group_name(g)) + ": invalid peer public value: " + what);
}

BnPtr rfc3526_prime() {
    return BnPtr(BN_get_rfc3526_prime_2048(nullptr));
}

// Builds an EVP_PKEY from OSSL params (KEYPAIR or PUBLIC_KEY selection).
PkeyPtr from_params(const char* alg, OSSL_PARAM* params, int selection, OSSL_LIB_CTX* libctx = nullptr) {
    PkeyCtxPtr ctx(EVP_PKEY_CTX_new_from_name(libctx, alg, nullptr));
    if (!ctx || EVP_PKEY_fromdata_init(ctx.get()) != 1) return nullptr;
    EVP_PKEY* pkey = nullptr;
    if (EVP_PKEY_fromdata(ctx.get(), &pkey, selection, params) != 1) return nullptr;
    return PkeyPtr(pkey);
}

PkeyPtr modp_key(const BIGNUM* priv, const BIGNUM* pub) {
    ParamBldPtr bld(OSSL_PARAM_BLD_new());
    if (!bld) return nullptr;
    if (OSSL_PARAM_BLD_push_utf8_string(bld.get(), OSSL_PKEY_PARAM_GROUP_NAME, "modp_2048", 0) != 1 ||
        OSSL_PARAM_BLD_push_BN(bld.get(), OSSL_PKEY_PARAM_PUB_KEY, pub) != 1)
        return nullptr;
    if (priv != nullptr && OSSL_PARAM_BLD_push_BN(bld.get(), OSSL_PKEY_PARAM_PRIV_KEY, priv) != 1) return nullptr;
    ParamPtr params(OSSL_PARAM_BLD_to_param(bld.get()));
    if (!params) return nullptr;
    return from_params("DH", params.get(), priv ? EVP_PKEY_KEYPAIR : EVP_PKEY_PUBLIC_KEY);
}

// A public EC key from its uncompressed point (EVP_PKEY_fromdata: rebuilds the EC_GROUP; only
// when the cached parameters key could not be made).
PkeyPtr ec_public_key(DhGroup g, BytesView uncompressed_point) {
    ParamBldPtr bld(OSSL_PARAM_BLD_new());
    if (!bld) return nullptr;
    if (OSSL_PARAM_BLD_push_utf8_string(bld.get(), OSSL_PKEY_PARAM_GROUP_NAME, ec_curve(g), 0) != 1 ||
        OSSL_PARAM_BLD_push_octet_string(bld.get(), OSSL_PKEY_PARAM_PUB_KEY, uncompressed_point.data(),
                                         uncompressed_point.size()) != 1)
        return nullptr;
    ParamPtr params(OSSL_PARAM_BLD_to_param(bld.get()));
    if (!params) return nullptr;
    return from_params("EC", params.get(), EVP_PKEY_PUBLIC_KEY);
}

// Per-curve objects built once per process and afterwards only read, so engines on several
// threads share them: the EC_GROUP (EC_GROUP_new_by_curve_name recomputes the Montgomery
// constants, about 10 us), on which our DH keys live as bare scalars (see DhKeyPair below), and
// a parameters-only EVP_PKEY used as a template for peers' signature keys
// (ec_public_key_from_point).
struct EcCurveCache {
    EC_GROUP* group = nullptr;
    EVP_PKEY* params = nullptr;
};

EcCurveCache make_curve_cache(DhGroup g) {
    EcCurveCache c;
    c.group = EC_GROUP_new_by_curve_name(ec_nid(g));
    OSSL_PARAM params[2] = {
        OSSL_PARAM_construct_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, const_cast<char*>(ec_curve(g)), 0),
        OSSL_PARAM_construct_end()};
    c.params = from_params("EC", params, EVP_PKEY_KEY_PARAMETERS).release();
    openssl_errors();
    return c;  // never freed: process-lifetime, like OpenSSL's own method caches
}

const EcCurveCache& curve_cache(DhGroup g) {
    static const EcCurveCache p256 = make_curve_cache(DhGroup::Ecp256);
    static const EcCurveCache p384 = make_curve_cache(DhGroup::Ecp384);
    return g == DhGroup::Ecp384 ? p384 : p256;
}

// A peer's public key from its uncompressed point: a copy of the cached parameters key with
// the point set on it.  EVP_PKEY_set1_encoded_public_key decodes with EC_POINT_oct2point,
// which rejects points that are not on the curve, exactly like EVP_PKEY_fromdata did; it only
// skips rebuilding the EC_GROUP from its name (EVP_PKEY_fromdata took ~18 us, this ~5 us).
PkeyPtr ec_peer_key(DhGroup g, BytesView uncompressed_point) {
    const EcCurveCache& c = curve_cache(g);
    if (c.params == nullptr) return ec_public_key(g, uncompressed_point);
    PkeyPtr k(EVP_PKEY_dup(c.params));
    if (!k || EVP_PKEY_set1_encoded_public_key(k.get(), uncompressed_point.data(), uncompressed_point.size()) != 1)
        return nullptr;
    return k;
}

}  // namespace

const EC_GROUP* cached_ec_group(int curve_nid) {
    if (curve_nid == NID_X9_62_prime256v1) return curve_cache(DhGroup::Ecp256).group;
    if (curve_nid == NID_secp384r1) return curve_cache(DhGroup::Ecp384).group;
    return nullptr;
}

EVP_PKEY* ec_public_key_from_point(int curve_nid, BytesView encoded_point) {
    if (cached_ec_group(curve_nid) == nullptr) return nullptr;
    const DhGroup g = curve_nid == NID_secp384r1 ? DhGroup::Ecp384 : DhGroup::Ecp256;
    if (curve_cache(g).params == nullptr) return nullptr;
    return ec_peer_key(g, encoded_point).release();
}

namespace {

// The KE payload encoding of our own public key (MODP, X25519: ECP keys are not EVP keys).
Result<Bytes> encode_public(DhGroup g, EVP_PKEY* key) {
    if (g == DhGroup::Modp2048) {
        BIGNUM* pub = nullptr;
        if (EVP_PKEY_get_bn_param(key, OSSL_PKEY_PARAM_PUB_KEY, &pub) != 1) return dh_error(g, "reading public key");
        BnPtr owned(pub);
        Bytes out(256);
        if (BN_bn2binpad(pub, out.data(), static_cast<int>(out.size())) != 256)
            return dh_error(g, "encoding public key");
        return out;
    }
    Bytes out(32);
    size_t len = out.size();
    if (EVP_PKEY_get_raw_public_key(key, out.data(), &len) != 1 || len != 32) return dh_error(g, "reading public key");
    return out;
}

}  // namespace

DhKeyPair::DhKeyPair(DhKeyPair&& o) noexcept
    : m_group(o.m_group), m_key(o.m_key), m_scalar(o.m_scalar), m_public(std::move(o.m_public)) {
    o.m_key = nullptr;
    o.m_scalar = nullptr;
}

DhKeyPair& DhKeyPair::operator=(DhKeyPair&& o) noexcept {
    if (this != &o) {
        EVP_PKEY_free(m_key);
        BN_clear_free(m_scalar);
        m_group = o.m_group;
        m_key = o.m_key;
        m_scalar = o.m_scalar;
        m_public = std::move(o.m_public);
        o.m_key = nullptr;
        o.m_scalar = nullptr;
    }
    return *this;
}

DhKeyPair::~DhKeyPair() {
    EVP_PKEY_free(m_key);
    BN_clear_free(m_scalar);
}

Result<DhKeyPair> DhKeyPair::generate(DhGroup g) {
    return generate(g, os_rng());
}

Result<DhKeyPair> DhKeyPair::generate(DhGroup g, Rng& rng) {
    switch (g) {
        case DhGroup::Curve25519: {
            SecureBytes priv(32);
            rng.fill(priv.span());
            return from_private(g, priv.view());
        }
        case DhGroup::Modp2048: {
            SecureBytes priv(32);
            rng.fill(priv.span());
            priv[0] |= 0x80;  // a full 256-bit exponent (never zero)
            return from_private(g, priv.view());
        }
        case DhGroup::Ecp256:
        case DhGroup::Ecp384: {
            const EC_GROUP* grp = curve_cache(g).group;
            if (!grp) return dh_error(g, "curve");
            SecureBytes priv(ec_coord(g));
            for (int attempt = 0; attempt < 128; ++attempt) {
                rng.fill(priv.span());
                BnPtr d(BN_bin2bn(priv.data(), static_cast<int>(priv.size()), nullptr));
                if (!d) return dh_error(g, "allocating");
                if (!BN_is_zero(d.get()) && BN_cmp(d.get(), EC_GROUP_get0_order(grp)) < 0)
                    return from_private(g, priv.view());
            }
            return Error(ErrorDomain::Crypto, 0,
                         std::string(dh_group_name(g)) + ": the Rng produced no valid scalar in 128 draws");
        }
    }
    return unsupported_group(g);
}

Result<DhKeyPair> DhKeyPair::from_private(DhGroup g, BytesView priv) {
    PkeyPtr key;
    switch (g) {
        case DhGroup::Modp2048: {
            BnPtr x(BN_bin2bn(priv.data(), static_cast<int>(priv.size()), nullptr));
            BnPtr p = rfc3526_prime();
            BnPtr two(BN_new());
            BnPtr y(BN_new());
            BnCtxPtr bctx(BN_CTX_secure_new());
            if (!x || !p || !two || !y || !bctx || BN_set_word(two.get(), 2) != 1) return dh_error(g, "allocating");
            if (BN_is_zero(x.get()) || BN_cmp(x.get(), p.get()) >= 0)
                return Error(ErrorDomain::Crypto, 0, "MODP_2048: private value out of range");
            BN_set_flags(x.get(), BN_FLG_CONSTTIME);
            if (BN_mod_exp_mont_consttime(y.get(), two.get(), x.get(), p.get(), bctx.get(), nullptr) != 1)
                return dh_error(g, "computing public value");
            key = modp_key(x.get(), y.get());
            break;
        }
        case DhGroup::Ecp256:
        case DhGroup::Ecp384: {
            // The key is the scalar d on the cached group and the KE value d*G, computed by
            // EC_POINT_mul as OpenSSL's own EC keygen does (ec_generate_key: the same call on a
            // copy of the same group, with d flagged constant-time), without an EVP_PKEY around
            // it: a provider key would copy the group into every key and every peer key.
            const EC_GROUP* grp = curve_cache(g).group;
            BnPtr d(BN_secure_new());
            BnCtxPtr bctx(BN_CTX_secure_new());
            if (!grp || !d || !bctx || BN_bin2bn(priv.data(), static_cast<int>(priv.size()), d.get()) == nullptr)
                return dh_error(g, "allocating");
            if (BN_is_zero(d.get()) || BN_cmp(d.get(), EC_GROUP_get0_order(grp)) >= 0)
                return Error(ErrorDomain::Crypto, 0, std::string(dh_group_name(g)) + ": private value out of range");
            BN_set_flags(d.get(), BN_FLG_CONSTTIME);
            EcPointPtr q(EC_POINT_new(grp));
            if (!q || EC_POINT_mul(grp, q.get(), d.get(), nullptr, nullptr, bctx.get()) != 1)
                return dh_error(g, "computing public value");
            uint8_t buf[1 + 2 * 66];
            size_t len = EC_POINT_point2oct(grp, q.get(), POINT_CONVERSION_UNCOMPRESSED, buf, sizeof(buf), bctx.get());
            if (len != 1 + dh_public_size(g) || buf[0] != 0x04) return dh_error(g, "encoding public value");
            DhKeyPair kp;
            kp.m_group = g;
            kp.m_scalar = d.release();
            kp.m_public.assign(buf + 1, buf + len);  // x || y without the 0x04 prefix (RFC 5903 7)
            return kp;
        }
        case DhGroup::Curve25519:
            if (priv.size() != 32) return Error(ErrorDomain::Crypto, 0, "CURVE_25519: private value must be 32 octets");
            key.reset(EVP_PKEY_new_raw_private_key(EVP_PKEY_X25519, nullptr, priv.data(), priv.size()));
            break;
        default:
            return unsupported_group(g);
    }
    return adopt(g, key.release(), "importing private value");
}

Result<DhKeyPair> DhKeyPair::adopt(DhGroup g, EVP_PKEY* key, const char* what) {
    PkeyPtr owned(key);
    if (!owned) return dh_error(g, what);
    X2SEC_TRY(Bytes pub, encode_public(g, owned.get()));
    DhKeyPair kp;
    kp.m_group = g;
    kp.m_key = owned.release();
    kp.m_public = std::move(pub);
    return kp;
}

Result<SecureBytes> DhKeyPair::derive(BytesView peer) const {
    const DhGroup g = m_group;
    if (m_key == nullptr && m_scalar == nullptr)
        return Error(ErrorDomain::Crypto, 0, "DH: key pair is empty (moved from)");
    if (peer.size() != dh_public_size(g))
        return dh_invalid(g,
                          "length " + std::to_string(peer.size()) + ", expected " + std::to_string(dh_public_size(g)));
    PkeyPtr peer_key;
    switch (g) {
        case DhGroup::Modp2048: {
            BnPtr y(BN_bin2bn(peer.data(), static_cast<int>(peer.size()), nullptr));
            BnPtr p = rfc3526_prime();
            BnPtr pm1(BN_new());
            if (!y || !p || !pm1 || BN_copy(pm1.get(), p.get()) == nullptr || BN_sub_word(pm1.get(), 1) != 1)
                return dh_error(g, "allocating");
            // 1 < y < p-1 (RFC 7296 / NIST SP 800-56A partial validation).
            if (BN_cmp(y.get(), BN_value_one()) <= 0 || BN_cmp(y.get(), pm1.get()) >= 0)
                return dh_invalid(g, "not in 1 < y < p-1");
            peer_key = modp_key(nullptr, y.get());
            if (!peer_key) return dh_invalid(g, "rejected by OpenSSL: " + openssl_errors());
            break;
        }
        case DhGroup::Ecp256:
        case DhGroup::Ecp384:
            return derive_ecp(peer);
        case DhGroup::Curve25519:
            peer_key.reset(EVP_PKEY_new_raw_public_key(EVP_PKEY_X25519, nullptr, peer.data(), peer.size()));
            if (!peer_key) return dh_invalid(g, "rejected by OpenSSL: " + openssl_errors());
            break;
    }
    PkeyCtxPtr ctx(EVP_PKEY_CTX_new_from_pkey(nullptr, m_key, nullptr));
    if (!ctx || EVP_PKEY_derive_init(ctx.get()) != 1) return dh_error(g, "derive init");
    if (g == DhGroup::Modp2048 && EVP_PKEY_CTX_set_dh_pad(ctx.get(), 1) != 1) return dh_error(g, "setting padding");
    // MODP: OpenSSL's full public-key check on top of our range check (y^q = 1 mod p, so y
    // is in the prime-order subgroup).  X25519: nothing to check besides the all-zero result
    // below.
    const int validate = g == DhGroup::Modp2048 ? 1 : 0;
    if (EVP_PKEY_derive_set_peer_ex(ctx.get(), peer_key.get(), validate) != 1)
        return dh_invalid(g, "public key check failed");
    size_t len = 0;
    if (EVP_PKEY_derive(ctx.get(), nullptr, &len) != 1) return dh_error(g, "derive (length)");
    SecureBytes secret(len);
    if (EVP_PKEY_derive(ctx.get(), secret.data(), &len) != 1) {
        if (g == DhGroup::Curve25519) return dh_invalid(g, "shared secret is all-zero");
        return dh_error(g, "derive");
    }
    secret.resize(len);
    const size_t want = g == DhGroup::Modp2048 ? 256 : 32;
    if (secret.size() != want)
        return Error(ErrorDomain::Crypto, 0, std::string(dh_group_name(g)) + ": unexpected shared secret length");
    uint8_t acc = 0;
    for (size_t i = 0; i < secret.size(); ++i) acc |= secret[i];
    if (acc == 0) return dh_invalid(g, "shared secret is all-zero");
    return secret;
}

// ECP: what OpenSSL's ECDH (ossl_ecdh_simple_compute_key) does, on the cached group: decode the
// peer's point with EC_POINT_oct2point, which rejects coordinates not below p and points off
// the curve (EC_POINT_set_affine_coordinates checks); P-256 and P-384 have cofactor 1, so a
// point on the curve is in the prime-order group and OpenSSL's order check (a second scalar
// multiplication) adds nothing.  Then d * Q (constant-time in d) and its x coordinate, padded to
// the field size (RFC 5903 9).
Result<SecureBytes> DhKeyPair::derive_ecp(BytesView peer) const {
    const DhGroup g = m_group;
    const EC_GROUP* grp = curve_cache(g).group;
    if (grp == nullptr || m_scalar == nullptr) return dh_error(g, "curve");
    uint8_t buf[1 + 2 * 66];
    if (peer.size() + 1 > sizeof(buf)) return dh_invalid(g, "length");
    buf[0] = 0x04;
    std::copy(peer.begin(), peer.end(), buf + 1);
    BnCtxPtr bctx(BN_CTX_secure_new());
    EcPointPtr q(EC_POINT_new(grp));
    EcPointPtr shared(EC_POINT_new(grp));
    BnPtr x(BN_secure_new());
    if (!bctx || !q || !shared || !x) return dh_error(g, "allocating");
    if (EC_POINT_oct2point(grp, q.get(), buf, peer.size() + 1, bctx.get()) != 1)
        return dh_invalid(g, "not a point on the curve");
    if (EC_POINT_mul(grp, shared.get(), nullptr, q.get(), m_scalar, bctx.get()) != 1) return dh_error(g, "derive");
    if (EC_POINT_is_at_infinity(grp, shared.get()) == 1) return dh_invalid(g, "shared point is at infinity");
    if (EC_POINT_get_affine_coordinates(grp, shared.get(), x.get(), nullptr, bctx.get()) != 1)
        return dh_error(g, "derive (affine coordinates)");
    SecureBytes secret(ec_coord(g));
    if (BN_bn2binpad(x.get(), secret.data(), static_cast<int>(secret.size())) != static_cast<int>(secret.size()))
        return dh_error(g, "encoding the shared secret");
    return secret;
}

}  // namespace x2sec::crypto
