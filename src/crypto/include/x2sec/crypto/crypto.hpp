// x2sec::crypto — RAII over OpenSSL 3 EVP for IKEv2 and ESP.  Every failure returns an Error
// with ErrorDomain::Crypto whose detail names the operation and carries the drained OpenSSL
// error queue.  Secrets are SecureBytes (zeroised).
//
// IANA numbers (RFC 7296 3.3.2, IKEv2 registry) are used as enum values.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <x2sec/common/bytes.hpp>
#include <x2sec/common/result.hpp>
#include <x2sec/common/rng.hpp>

typedef struct evp_pkey_st EVP_PKEY;
typedef struct ec_group_st EC_GROUP;
typedef struct bignum_st BIGNUM;

namespace x2sec::crypto {

// Drains OpenSSL's thread-local error queue into one line ("" when empty).
std::string openssl_errors();
// Error{Crypto, 0, what + ": " + openssl_errors()}
Error crypto_error(const std::string& what);

// ---------------------------------------------------------------- hashes, HMAC, PRF
enum class Hash : uint8_t { Sha1, Sha256, Sha384, Sha512 };
size_t hash_size(Hash h);
const char* hash_name(Hash h);  // "SHA256", ...
Bytes digest(Hash h, BytesView data);
SecureBytes hmac(Hash h, BytesView key, BytesView data);

// Transform Type 2 (PRF).
enum class PrfId : uint16_t { HmacSha2_256 = 5, HmacSha2_384 = 6, HmacSha2_512 = 7 };

class Prf {
public:
    static Result<Prf> create(PrfId id);
    PrfId id() const { return m_id; }
    size_t size() const;  // output length = preferred key length
    SecureBytes compute(BytesView key, BytesView data) const;
    // prf+ (RFC 7296 2.13): T1 | T2 | ... truncated to len; len <= 255 * size().
    Result<SecureBytes> plus(BytesView key, BytesView seed, size_t len) const;

private:
    explicit Prf(PrfId id) : m_id(id) {}
    PrfId m_id;
};

// ---------------------------------------------------------------- Diffie-Hellman
// Transform Type 4 (KE).
enum class DhGroup : uint16_t { Modp2048 = 14, Ecp256 = 19, Ecp384 = 20, Curve25519 = 31 };
const char* dh_group_name(DhGroup g);  // "MODP_2048", "ECP_256", "ECP_384", "CURVE_25519"
// Length of the Key Exchange Data in a KE payload: 256, 64, 96, 32.
size_t dh_public_size(DhGroup g);
bool dh_group_supported(uint16_t iana_id);

class DhKeyPair {
public:
    static Result<DhKeyPair> generate(DhGroup g);  // generate(g, os_rng())
    // The private value from an Rng (OsRng in production, a DeterministicRng in tests: one
    // path): X25519 32 octets; ECP a scalar in [1, n-1] by rejection sampling; MODP a 256-bit
    // exponent; then from_private.
    static Result<DhKeyPair> generate(DhGroup g, Rng& rng);
    // A key pair with this private value (big-endian scalar for MODP/ECP, 32-byte little-endian
    // X25519 scalar; vectors RFC 5903, 7748).  ECP: d * G on the cached curve (docs/crypto.md).
    static Result<DhKeyPair> from_private(DhGroup g, BytesView priv);
    DhGroup group() const { return m_group; }
    // KE payload encoding: MODP left-padded to the prime length; ECP x || y (RFC 5903 7);
    // X25519 the 32-byte u-coordinate (RFC 8031).
    const Bytes& public_value() const { return m_public; }
    // Validates the peer's value (length, on the curve / 1 < y < p-1, not all-zero output)
    // and returns the shared secret g^ir: MODP padded to the prime length, ECP the x
    // coordinate (RFC 5903), X25519 32 bytes.
    Result<SecureBytes> derive(BytesView peer_public) const;

    DhKeyPair(DhKeyPair&&) noexcept;
    DhKeyPair& operator=(DhKeyPair&&) noexcept;
    ~DhKeyPair();

private:
    DhKeyPair() = default;
    // Takes ownership of a key pair OpenSSL made or imported; its KE value read from the key.
    static Result<DhKeyPair> adopt(DhGroup g, EVP_PKEY* key, const char* what);
    Result<SecureBytes> derive_ecp(BytesView peer_public) const;
    DhGroup m_group = DhGroup::Ecp256;
    EVP_PKEY* m_key = nullptr;   // MODP, X25519
    BIGNUM* m_scalar = nullptr;  // ECP: the private scalar on the cached curve (secure heap, cleared on free)
    Bytes m_public;
};

// ---------------------------------------------------------------- SK payload ciphers (IKE)
// Transform Type 1 (ENCR) and 3 (INTEG).
enum class EncrId : uint16_t { AesCbc = 12, AesGcm16 = 20 };
enum class IntegId : uint16_t {
    None = 0,
    HmacSha2_256_128 = 12,
    HmacSha2_384_192 = 13,
    HmacSha2_512_256 = 14,
};
// Encryption key length in KEYMAT: for GCM key + 4-octet salt (RFC 5282 7.1).
size_t encr_keymat_size(EncrId e, unsigned key_bits);
size_t integ_key_size(IntegId i);  // 32, 48, 64
size_t integ_icv_size(IntegId i);  // 16, 24, 32

// Protects the SK payload (RFC 7296 3.14, RFC 5282).  seal() returns IV || ciphertext || ICV
// where the plaintext is padded (padding octets then the pad-length octet) to the block size;
// for CBC the ICV is HMAC over aad || IV || ciphertext (aad = IKE header through the SK
// payload header), for GCM aad is the AAD and the ICV is the 16-octet tag.  The GCM IV is a
// 64-bit counter per key (never reused); the CBC IV comes from the Rng.
class SkCipher {
public:
    static Result<SkCipher> create(EncrId e, unsigned key_bits, IntegId i, SecureBytes enc_key, SecureBytes integ_key);
    size_t iv_size() const;
    size_t icv_size() const;
    size_t block_size() const;
    // Total length of seal()'s output for a plaintext of this length.
    size_t sealed_size(size_t plaintext_len) const;
    Result<Bytes> seal(BytesView aad, BytesView plaintext, Rng& rng);
    // Verifies the ICV (constant time), decrypts and strips the padding; fails with a detail
    // saying which check failed ("ICV mismatch", "bad padding", "truncated").
    Result<Bytes> open(BytesView aad, BytesView sealed) const;

    SkCipher(SkCipher&&) noexcept;
    SkCipher& operator=(SkCipher&&) noexcept;
    ~SkCipher();

private:
    SkCipher();
    struct Impl;
    std::unique_ptr<Impl> m_impl;
};

// ---------------------------------------------------------------- keys and signatures
enum class KeyType : uint8_t { EcP256, EcP384, Rsa2048, Rsa3072, Ed25519 };
const char* key_type_name(KeyType t);

// Signature schemes of IKEv2 AUTH method 14 (RFC 7427) and method 1 (RSA PKCS#1 v1.5 SHA-1).
enum class SigScheme : uint8_t {
    EcdsaSha256,  // ecdsa-with-SHA256 (P-256)
    EcdsaSha384,  // ecdsa-with-SHA384 (P-384)
    EcdsaSha512,
    RsaPssSha256,  // RSASSA-PSS, MGF1 same hash, salt = hash length
    RsaPssSha384,
    RsaPkcs1Sha256,
    RsaPkcs1Sha384,
    RsaPkcs1Sha1,  // IKE method 1 only
    Ed25519,
};
const char* sig_scheme_name(SigScheme s);
Hash sig_scheme_hash(SigScheme s);
// The DER AlgorithmIdentifier carried in an RFC 7427 AUTH payload, produced by OpenSSL
// (X509_ALGOR), and the reverse mapping (fails for unknown/unsupported algorithms).
Result<Bytes> algorithm_identifier_der(SigScheme s);
Result<SigScheme> sig_scheme_from_algorithm_identifier(BytesView der);
// The default scheme for a key: P-256 -> ECDSA-SHA256, P-384 -> ECDSA-SHA384,
// RSA -> RSASSA-PSS-SHA256, Ed25519 -> Ed25519.
SigScheme default_sig_scheme(const EVP_PKEY* key);

// A private key behind a signing interface.  The PEM text is zeroised after parsing.  A key
// may live in a PKCS#11 token (x2sec/crypto/pkcs11.hpp): load() takes a file path or a
// `pkcs11:` URI, from_pem() PEM, DER or a URI (so a key file may hold a URI), and a token
// key's to_pem()/save() give its URI, never key material.
class Signer {
public:
    virtual ~Signer() = default;
    virtual Result<Bytes> sign(SigScheme s, BytesView data) const = 0;
    virtual const EVP_PKEY* public_key() const = 0;
};

class PrivateKey final : public Signer {
public:
    static Result<PrivateKey> generate(KeyType t);
    static Result<PrivateKey> from_pem(BytesView pem);
    static Result<PrivateKey> load(const std::string& path);
    // Takes ownership of an OpenSSL key (e.g. one made by the test PKI helper).
    static PrivateKey adopt(EVP_PKEY* key);
    // PKCS#8 PEM, written atomically with mode 0600.
    Status save(const std::string& path) const;
    SecureBytes to_pem() const;
    Result<Bytes> sign(SigScheme s, BytesView data) const override;
    const EVP_PKEY* public_key() const override { return m_key; }
    EVP_PKEY* get() const { return m_key; }

    PrivateKey(PrivateKey&&) noexcept;
    PrivateKey& operator=(PrivateKey&&) noexcept;
    ~PrivateKey();

private:
    PrivateKey() = default;
    EVP_PKEY* m_key = nullptr;
};

// The KeyType of a key (nullopt for other curves / sizes).
std::optional<KeyType> key_type_of(const EVP_PKEY* key);
// DER SubjectPublicKeyInfo of a key (i2d_PUBKEY), and back (caller owns the EVP_PKEY).
Result<Bytes> public_key_der(const EVP_PKEY* key);
Result<EVP_PKEY*> public_key_from_der(BytesView der);

// EC keys on the curves whose EC_GROUP the DH code builds once per process (P-256 and
// P-384), for certificate parsing without a per-key EC_GROUP rebuild: the shared, read-only
// group (nullptr for any other curve NID), and a provider-native public key from an encoded
// point (0x04 || x || y), copied from the cached parameters template (caller owns; nullptr if
// the curve is not cached or the point is not on it).
const EC_GROUP* cached_ec_group(int curve_nid);
EVP_PKEY* ec_public_key_from_point(int curve_nid, BytesView encoded_point);

// Verify a signature with a public key (from a certificate).  Detail names the scheme on
// failure ("ECDSA-SHA256 signature does not verify").
Status verify_signature(const EVP_PKEY* key, SigScheme s, BytesView data, BytesView signature);

}  // namespace x2sec::crypto
