// Per-SA, per-direction ESP transforms on OpenSSL EVP.  The contexts are created and keyed
// once at install time; sealing or opening a packet only sets the IV and runs the cipher,
// with no allocation (RFC 4106 AES-GCM-16, RFC 3602 + RFC 4868 AES-CBC + HMAC-SHA2-256-128).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <x2sec/common/child_sa.hpp>
#include <x2sec/common/result.hpp>

typedef struct evp_cipher_ctx_st EVP_CIPHER_CTX;
typedef struct evp_mac_ctx_st EVP_MAC_CTX;
typedef struct ossl_param_st OSSL_PARAM;

namespace x2sec::esp {

class SaCipher {
public:
    // encrypt: true for an outbound SA, false for an inbound one.
    static Result<std::unique_ptr<SaCipher>> create(EspCipher cipher, const DirectionKeys& keys, bool encrypt);
    ~SaCipher();
    SaCipher(const SaCipher&) = delete;
    SaCipher& operator=(const SaCipher&) = delete;

    EspCipher cipher() const { return m_cipher; }
    bool aead() const { return m_aead; }
    size_t iv_len() const { return m_aead ? 8 : 16; }
    size_t icv_len() const { return 16; }
    // Alignment of payload||padding||pad length||next header (4 for GCM, the AES block for CBC).
    size_t align() const { return m_aead ? 4 : 16; }

    // AEAD (GCM): nonce = salt || iv(8); encrypts/decrypts data in place; the AAD is
    // SPI || seq (8 octets) or SPI || ESN (12 octets).
    bool gcm_seal(const uint8_t* aad, size_t aad_len, const uint8_t* iv, uint8_t* data, size_t len, uint8_t* icv);
    bool gcm_open(const uint8_t* aad, size_t aad_len, const uint8_t* iv, uint8_t* data, size_t len, const uint8_t* icv);
    // Fast path for the data plane: the explicit IV comes from the provider's invocation
    // counter (RFC 4106 3.1: unique per key; random start, +1 per packet) and is written to
    // iv_out.  Avoids EVP_CipherInit_ex, whose parameter handling costs ~170 ns a packet on
    // OpenSSL 3.0.
    bool gcm_seal_next(const uint8_t* aad, size_t aad_len, uint8_t* iv_out, uint8_t* data, size_t len, uint8_t* icv);
    // CBC + HMAC: encrypt/decrypt in place with the given 16-octet IV; the ICV is computed
    // separately over the authenticated region (ESP header, IV, ciphertext, then the
    // high-order ESN octets if ESN is on).
    bool cbc_crypt(const uint8_t* iv, uint8_t* data, size_t len);
    bool hmac(const uint8_t* a, size_t a_len, const uint8_t* b, size_t b_len, uint8_t* icv16);

private:
    SaCipher() = default;
    EspCipher m_cipher = EspCipher::AesGcm16_128;
    bool m_aead = true;
    bool m_encrypt = true;
    uint8_t m_salt[4] = {};
    EVP_CIPHER_CTX* m_ctx = nullptr;
    EVP_MAC_CTX* m_mac = nullptr;
    // Pre-built parameter array for the GCM tag: EVP_CIPHER_CTX_ctrl(GET_TAG/SET_TAG) builds
    // one per call and costs ~200 ns a packet on OpenSSL 3.0.
    alignas(16) uint8_t m_tag[16] = {};
    OSSL_PARAM* m_tag_param = nullptr;
    alignas(16) uint8_t m_iv[8] = {};
    OSSL_PARAM* m_ivgen_param = nullptr;  // encrypt: "tlsivgen"
    OSSL_PARAM* m_open_param = nullptr;   // decrypt: "tlsivinv" + "tag" in one call
};

// Key lengths: x2sec::esp_encr_key_size / esp_integ_key_size (common/child_sa.hpp).

}  // namespace x2sec::esp
