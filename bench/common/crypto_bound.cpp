#include <cstdio>
#include <cstdlib>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/objects.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <stdexcept>
#include <vector>
#include <x2sec/bench/crypto_bound.hpp>

namespace x2sec::bench {

namespace {

void check(bool ok, const char* what) {
    if (!ok) throw std::runtime_error(std::string("crypto bound: ") + what + " failed");
}

EVP_PKEY* keygen(const char* alg, const char* group) {
    EVP_PKEY* k = group ? EVP_PKEY_Q_keygen(nullptr, nullptr, alg, group) : EVP_PKEY_Q_keygen(nullptr, nullptr, alg);
    check(k != nullptr, "keygen");
    return k;
}

// The EC primitives the cheapest way OpenSSL offers, which is how x2sec's DhKeyPair does them
// since 2026-12-08: the key is a scalar on one cached EC_GROUP, keygen d*G plus its
// uncompressed encoding, derive the peer's point decoded (EC_POINT_oct2point: rejects points
// off the curve) times d and its x coordinate (no EVP_PKEY: each would copy the group).  Until
// then DhKeyPair and this bound used EVP keys from a cached parameters key (keygen context,
// EVP_PKEY_dup + set1_encoded_public_key), ~4 us (keygen) and ~7 us (derive) more each.
struct EcCurve {
    EC_GROUP* group = nullptr;
    BIGNUM* d = nullptr;
    BN_CTX* bctx = nullptr;
    explicit EcCurve(const char* name) {
        const int nist = EC_curve_nist2nid(name);
        group = EC_GROUP_new_by_curve_name(nist != NID_undef ? nist : OBJ_sn2nid(name));
        d = BN_secure_new();
        bctx = BN_CTX_secure_new();
        check(group && d && bctx && BN_rand_range(d, EC_GROUP_get0_order(group)) == 1 && !BN_is_zero(d), "EC curve");
        BN_set_flags(d, BN_FLG_CONSTTIME);
    }
    ~EcCurve() {
        BN_CTX_free(bctx);
        BN_clear_free(d);
        EC_GROUP_free(group);
    }
    EcCurve(const EcCurve&) = delete;
    EcCurve& operator=(const EcCurve&) = delete;
    size_t encode(const EC_POINT* p, unsigned char* out, size_t cap) const {
        return EC_POINT_point2oct(group, p, POINT_CONVERSION_UNCOMPRESSED, out, cap, bctx);
    }
};

// An ephemeral key pair: EVP for X25519 / MODP, d*G on a cached curve for EC (above).
double keygen_rate(const char* alg, const char* group, double seconds) {
    if (group == nullptr) return ops_per_second([&] { EVP_PKEY_free(keygen(alg, group)); }, seconds);
    EcCurve c(group);
    unsigned char out[1 + 2 * 66];
    return ops_per_second(
        [&] {
            BIGNUM* k = BN_secure_new();
            EC_POINT* q = EC_POINT_new(c.group);
            check(k && q && BN_rand_range(k, EC_GROUP_get0_order(c.group)) == 1, "keygen scalar");
            BN_set_flags(k, BN_FLG_CONSTTIME);
            check(EC_POINT_mul(c.group, q, k, nullptr, nullptr, c.bctx) == 1 && c.encode(q, out, sizeof(out)) > 0,
                  "keygen");
            EC_POINT_free(q);
            BN_clear_free(k);
        },
        seconds);
}

// A responder's share of the key exchange: decode the peer's public value from its wire form
// (for EC, which includes OpenSSL's on-curve check) and derive the shared secret.
double derive_rate(const char* alg, const char* group, double seconds) {
    if (group != nullptr) {
        EcCurve c(group);
        unsigned char pub[1 + 2 * 66];
        EC_POINT* peer_pub = EC_POINT_new(c.group);
        check(peer_pub && EC_POINT_mul(c.group, peer_pub, c.d, nullptr, nullptr, c.bctx) == 1, "peer key");
        const size_t pub_len = c.encode(peer_pub, pub, sizeof(pub));
        EC_POINT_free(peer_pub);
        check(pub_len > 0, "encoding public key");
        const double r = ops_per_second(
            [&] {
                EC_POINT* q = EC_POINT_new(c.group);
                EC_POINT* shared = EC_POINT_new(c.group);
                BIGNUM* x = BN_secure_new();
                check(q && shared && x && EC_POINT_oct2point(c.group, q, pub, pub_len, c.bctx) == 1 &&
                          EC_POINT_mul(c.group, shared, nullptr, q, c.d, c.bctx) == 1 &&
                          EC_POINT_get_affine_coordinates(c.group, shared, x, nullptr, c.bctx) == 1,
                      "derive");
                BN_clear_free(x);
                EC_POINT_free(shared);
                EC_POINT_free(q);
            },
            seconds);
        return r;
    }
    EVP_PKEY* a = keygen(alg, group);
    EVP_PKEY* b = keygen(alg, group);
    unsigned char pub[200];
    size_t pub_len = sizeof(pub);
    check(EVP_PKEY_get_raw_public_key(b, pub, &pub_len) == 1, "encoding public key");
    unsigned char out[64];
    const double r = ops_per_second(
        [&] {
            EVP_PKEY* peer = EVP_PKEY_new_raw_public_key(EVP_PKEY_get_base_id(b), nullptr, pub, pub_len);
            check(peer != nullptr, "decoding peer key");
            EVP_PKEY_CTX* ctx = EVP_PKEY_CTX_new_from_pkey(nullptr, a, nullptr);
            size_t len = sizeof(out);
            check(ctx && EVP_PKEY_derive_init(ctx) == 1 && EVP_PKEY_derive_set_peer_ex(ctx, peer, 0) == 1 &&
                      EVP_PKEY_derive(ctx, out, &len) == 1,
                  "derive");
            EVP_PKEY_CTX_free(ctx);
            EVP_PKEY_free(peer);
        },
        seconds);
    EVP_PKEY_free(a);
    EVP_PKEY_free(b);
    return r;
}

}  // namespace

double measure_aes_gcm_bytes_per_s(size_t packet_size, unsigned key_bits, double seconds) {
    unsigned char key[32], nonce[12], tag[16];
    RAND_bytes(key, sizeof(key));
    RAND_bytes(nonce, sizeof(nonce));
    std::vector<unsigned char> in(packet_size, 0x5a), out(packet_size + 16);
    EVP_CIPHER_CTX* ctx = EVP_CIPHER_CTX_new();
    const EVP_CIPHER* cipher = key_bits == 256 ? EVP_aes_256_gcm() : EVP_aes_128_gcm();
    check(ctx && EVP_EncryptInit_ex(ctx, cipher, nullptr, key, nullptr) == 1, "GCM init");
    uint64_t counter = 0;
    const double ops = ops_per_second(
        [&] {
            ++counter;
            for (int i = 0; i < 8; ++i) nonce[4 + i] = static_cast<unsigned char>(counter >> (56 - 8 * i));
            int len = 0;
            int fin = 0;
            check(EVP_EncryptInit_ex(ctx, nullptr, nullptr, nullptr, nonce) == 1 &&
                      EVP_EncryptUpdate(ctx, nullptr, &len, nonce, 8) == 1 &&  // 8-octet AAD, ESP-like
                      EVP_EncryptUpdate(ctx, out.data(), &len, in.data(), static_cast<int>(in.size())) == 1 &&
                      EVP_EncryptFinal_ex(ctx, out.data() + len, &fin) == 1 &&
                      EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, 16, tag) == 1,
                  "GCM seal");
        },
        seconds);
    EVP_CIPHER_CTX_free(ctx);
    return ops * static_cast<double>(packet_size);
}

CryptoBound measure_crypto_bound(const BoundOptions& opts) {
    CryptoBound b;
    const double s = opts.seconds_per_item;
    b.packet_size = opts.packet_size;
    b.ecdh_p256_keygen_per_s = keygen_rate("EC", "P-256", s);
    b.ecdh_p256_derive_per_s = derive_rate("EC", "P-256", s);
    b.x25519_keygen_per_s = keygen_rate("X25519", nullptr, s);
    b.x25519_derive_per_s = derive_rate("X25519", nullptr, s);

    EVP_PKEY* key = keygen("EC", "P-256");
    unsigned char msg[512];
    RAND_bytes(msg, sizeof(msg));  // about the size of the octets an IKE AUTH signs
    std::vector<unsigned char> sig(128);
    size_t sig_len = sig.size();
    {
        EVP_MD_CTX* m = EVP_MD_CTX_new();
        check(m && EVP_DigestSignInit_ex(m, nullptr, "SHA256", nullptr, nullptr, key, nullptr) == 1 &&
                  EVP_DigestSign(m, sig.data(), &sig_len, msg, sizeof(msg)) == 1,
              "sign");
        EVP_MD_CTX_free(m);
    }
    b.ecdsa_p256_sign_per_s = ops_per_second(
        [&] {
            EVP_MD_CTX* m = EVP_MD_CTX_new();
            unsigned char out[128];
            size_t len = sizeof(out);
            check(m && EVP_DigestSignInit_ex(m, nullptr, "SHA256", nullptr, nullptr, key, nullptr) == 1 &&
                      EVP_DigestSign(m, out, &len, msg, sizeof(msg)) == 1,
                  "sign");
            EVP_MD_CTX_free(m);
        },
        s);
    b.ecdsa_p256_verify_per_s = ops_per_second(
        [&] {
            EVP_MD_CTX* m = EVP_MD_CTX_new();
            check(m && EVP_DigestVerifyInit_ex(m, nullptr, "SHA256", nullptr, nullptr, key, nullptr) == 1 &&
                      EVP_DigestVerify(m, sig.data(), sig_len, msg, sizeof(msg)) == 1,
                  "verify");
            EVP_MD_CTX_free(m);
        },
        s);
    EVP_PKEY_free(key);

    b.aes128_gcm_bytes_per_s = measure_aes_gcm_bytes_per_s(opts.packet_size, 128, s);
    b.aes128_gcm_packets_per_s = b.aes128_gcm_bytes_per_s / static_cast<double>(opts.packet_size);
    return b;
}

double CryptoBound::ike_responder_bound(unsigned verifies) const {
    if (ecdh_p256_keygen_per_s <= 0 || ecdh_p256_derive_per_s <= 0 || ecdsa_p256_sign_per_s <= 0 ||
        ecdsa_p256_verify_per_s <= 0)
        return 0;
    const double t = 1.0 / ecdh_p256_keygen_per_s + 1.0 / ecdh_p256_derive_per_s + 1.0 / ecdsa_p256_sign_per_s +
                     verifies / ecdsa_p256_verify_per_s;
    return 1.0 / t;
}

std::string CryptoBound::to_text() const {
    char buf[1024];
    std::snprintf(buf, sizeof(buf),
                  "crypto bound (OpenSSL %s, this process, per CPU-second of one thread):\n"
                  "  ECDH P-256 keygen      %12.0f /s\n"
                  "  ECDH P-256 derive      %12.0f /s\n"
                  "  ECDSA P-256 sign       %12.0f /s\n"
                  "  ECDSA P-256 verify     %12.0f /s\n"
                  "  X25519 keygen          %12.0f /s\n"
                  "  X25519 derive          %12.0f /s\n"
                  "  AES-128-GCM %5zu B     %12.0f pkt/s  %8.1f MB/s\n"
                  "  => IKE responder bound %12.0f setups/s (keygen+derive+sign+2 verify)\n",
                  OpenSSL_version(OPENSSL_VERSION_STRING), ecdh_p256_keygen_per_s, ecdh_p256_derive_per_s,
                  ecdsa_p256_sign_per_s, ecdsa_p256_verify_per_s, x25519_keygen_per_s, x25519_derive_per_s, packet_size,
                  aes128_gcm_packets_per_s, aes128_gcm_bytes_per_s / 1e6, ike_responder_bound(2));
    return buf;
}

std::string versus(const std::string& name, double ours, double bound) {
    char buf[256];
    const double pct = bound > 0 ? 100.0 * ours / bound : 0.0;
    std::snprintf(buf, sizeof(buf), "%s: %.1f (%.1f%% of bound %.1f)", name.c_str(), ours, pct, bound);
    return buf;
}

}  // namespace x2sec::bench
