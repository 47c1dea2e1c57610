#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <cstring>
#include <x2sec/esp/cipher.hpp>

namespace x2sec::esp {
namespace {

Error crypto_error(const std::string& what) {
    std::string detail = what;
    unsigned long e;
    char buf[256];
    while ((e = ERR_get_error()) != 0) {
        ERR_error_string_n(e, buf, sizeof(buf));
        detail += "; ";
        detail += buf;
    }
    return Error(ErrorDomain::Crypto, 0, detail);
}

const char* cipher_name(EspCipher c) {
    switch (c) {
        case EspCipher::AesGcm16_128:
            return "AES-128-GCM";
        case EspCipher::AesGcm16_256:
            return "AES-256-GCM";
        case EspCipher::AesCbc128_HmacSha256_128:
            return "AES-128-CBC";
        case EspCipher::AesCbc256_HmacSha256_128:
            return "AES-256-CBC";
    }
    return "";
}

// Fetched once per process and never freed (immutable, shared by every SA and thread): a fetch
// by name is a method-store lookup, and every SA install made two.  nullptr if unavailable.
const EVP_CIPHER* fetched_cipher(EspCipher c) {
    static const EVP_CIPHER* const t[4] = {
        EVP_CIPHER_fetch(nullptr, cipher_name(EspCipher::AesGcm16_128), nullptr),
        EVP_CIPHER_fetch(nullptr, cipher_name(EspCipher::AesGcm16_256), nullptr),
        EVP_CIPHER_fetch(nullptr, cipher_name(EspCipher::AesCbc128_HmacSha256_128), nullptr),
        EVP_CIPHER_fetch(nullptr, cipher_name(EspCipher::AesCbc256_HmacSha256_128), nullptr)};
    switch (c) {
        case EspCipher::AesGcm16_128:
            return t[0];
        case EspCipher::AesGcm16_256:
            return t[1];
        case EspCipher::AesCbc128_HmacSha256_128:
            return t[2];
        case EspCipher::AesCbc256_HmacSha256_128:
            return t[3];
    }
    return nullptr;
}

const EVP_MAC* fetched_hmac() {
    static const EVP_MAC* const mac = EVP_MAC_fetch(nullptr, "HMAC", nullptr);
    return mac;
}

bool is_gcm(EspCipher c) {
    return c == EspCipher::AesGcm16_128 || c == EspCipher::AesGcm16_256;
}

}  // namespace

Result<std::unique_ptr<SaCipher>> SaCipher::create(EspCipher cipher, const DirectionKeys& keys, bool encrypt) {
    if (keys.enc_key.size() != esp_encr_key_size(cipher))
        return Error(ErrorDomain::Esp, 0,
                     std::string("encryption key for ") + to_string(cipher) + " must be " +
                         std::to_string(esp_encr_key_size(cipher)) + " octets, got " +
                         std::to_string(keys.enc_key.size()));
    if (keys.integ_key.size() != esp_integ_key_size(cipher))
        return Error(ErrorDomain::Esp, 0,
                     std::string("integrity key for ") + to_string(cipher) + " must be " +
                         std::to_string(esp_integ_key_size(cipher)) + " octets, got " +
                         std::to_string(keys.integ_key.size()));
    std::unique_ptr<SaCipher> s(new SaCipher());
    s->m_cipher = cipher;
    s->m_aead = is_gcm(cipher);
    s->m_encrypt = encrypt;
    const EVP_CIPHER* evp = fetched_cipher(cipher);
    if (!evp) return crypto_error(std::string("fetching ") + cipher_name(cipher));
    s->m_ctx = EVP_CIPHER_CTX_new();
    if (!s->m_ctx || EVP_CipherInit_ex(s->m_ctx, evp, nullptr, keys.enc_key.data(), nullptr, encrypt ? 1 : 0) != 1)
        return crypto_error("initialising the ESP cipher");
    if (s->m_aead) {
        s->m_tag_param = new OSSL_PARAM[2];
        s->m_tag_param[0] = OSSL_PARAM_construct_octet_string(OSSL_CIPHER_PARAM_AEAD_TAG, s->m_tag, 16);
        s->m_tag_param[1] = OSSL_PARAM_construct_end();
        // Fixed field of the nonce = salt; the 8-octet invocation field is the explicit IV.
        OSSL_PARAM fixed[2] = {
            OSSL_PARAM_construct_octet_string(OSSL_CIPHER_PARAM_AEAD_TLS1_IV_FIXED,
                                              const_cast<uint8_t*>(keys.enc_key.data() + keys.enc_key.size() - 4), 4),
            OSSL_PARAM_construct_end()};
        if (EVP_CIPHER_CTX_set_params(s->m_ctx, fixed) != 1) return crypto_error("setting the GCM salt");
        s->m_ivgen_param = new OSSL_PARAM[2];
        s->m_ivgen_param[0] = OSSL_PARAM_construct_octet_string(OSSL_CIPHER_PARAM_AEAD_TLS1_GET_IV_GEN, s->m_iv, 8);
        s->m_ivgen_param[1] = OSSL_PARAM_construct_end();
        s->m_open_param = new OSSL_PARAM[3];
        s->m_open_param[0] = OSSL_PARAM_construct_octet_string(OSSL_CIPHER_PARAM_AEAD_TLS1_SET_IV_INV, s->m_iv, 8);
        s->m_open_param[1] = OSSL_PARAM_construct_octet_string(OSSL_CIPHER_PARAM_AEAD_TAG, s->m_tag, 16);
        s->m_open_param[2] = OSSL_PARAM_construct_end();
        std::memcpy(s->m_salt, keys.enc_key.data() + keys.enc_key.size() - 4, 4);
    } else {
        EVP_CIPHER_CTX_set_padding(s->m_ctx, 0);
        const EVP_MAC* mac = fetched_hmac();
        if (!mac) return crypto_error("fetching HMAC");
        s->m_mac = EVP_MAC_CTX_new(const_cast<EVP_MAC*>(mac));  // takes its own reference
        char digest[] = "SHA256";
        OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0),
                               OSSL_PARAM_construct_end()};
        if (!s->m_mac || EVP_MAC_init(s->m_mac, keys.integ_key.data(), keys.integ_key.size(), params) != 1)
            return crypto_error("initialising HMAC-SHA2-256");
    }
    return s;
}

SaCipher::~SaCipher() {
    EVP_CIPHER_CTX_free(m_ctx);  // cleanses the key schedule
    EVP_MAC_CTX_free(m_mac);
    delete[] m_tag_param;
    delete[] m_ivgen_param;
    delete[] m_open_param;
    secure_zero(m_salt, sizeof(m_salt));
}

bool SaCipher::gcm_seal(const uint8_t* aad, size_t aad_len, const uint8_t* iv, uint8_t* data, size_t len,
                        uint8_t* icv) {
    uint8_t nonce[12];
    std::memcpy(nonce, m_salt, 4);
    std::memcpy(nonce + 4, iv, 8);
    int outl = 0;
    if (EVP_CipherInit_ex(m_ctx, nullptr, nullptr, nullptr, nonce, -1) != 1) return false;
    if (EVP_CipherUpdate(m_ctx, nullptr, &outl, aad, static_cast<int>(aad_len)) != 1) return false;
    if (len && EVP_CipherUpdate(m_ctx, data, &outl, data, static_cast<int>(len)) != 1) return false;
    if (EVP_CipherFinal_ex(m_ctx, data + len, &outl) != 1) return false;
    if (EVP_CIPHER_CTX_get_params(m_ctx, m_tag_param) != 1) return false;
    std::memcpy(icv, m_tag, 16);
    return true;
}

bool SaCipher::gcm_seal_next(const uint8_t* aad, size_t aad_len, uint8_t* iv_out, uint8_t* data, size_t len,
                             uint8_t* icv) {
    int outl = 0;
    if (EVP_CIPHER_CTX_get_params(m_ctx, m_ivgen_param) != 1) return false;
    std::memcpy(iv_out, m_iv, 8);
    if (EVP_CipherUpdate(m_ctx, nullptr, &outl, aad, static_cast<int>(aad_len)) != 1) return false;
    if (len && EVP_CipherUpdate(m_ctx, data, &outl, data, static_cast<int>(len)) != 1) return false;
    if (EVP_CipherFinal_ex(m_ctx, data + len, &outl) != 1) return false;
    if (EVP_CIPHER_CTX_get_params(m_ctx, m_tag_param) != 1) return false;
    std::memcpy(icv, m_tag, 16);
    return true;
}

bool SaCipher::gcm_open(const uint8_t* aad, size_t aad_len, const uint8_t* iv, uint8_t* data, size_t len,
                        const uint8_t* icv) {
    int outl = 0;
    // IV (invocation field after the salt) and expected tag in one parameter call.
    std::memcpy(m_iv, iv, 8);
    std::memcpy(m_tag, icv, 16);
    if (EVP_CIPHER_CTX_set_params(m_ctx, m_open_param) != 1) return false;
    if (EVP_CipherUpdate(m_ctx, nullptr, &outl, aad, static_cast<int>(aad_len)) != 1) return false;
    if (len && EVP_CipherUpdate(m_ctx, data, &outl, data, static_cast<int>(len)) != 1) return false;
    return EVP_CipherFinal_ex(m_ctx, data + len, &outl) == 1;
}

bool SaCipher::cbc_crypt(const uint8_t* iv, uint8_t* data, size_t len) {
    int outl = 0;
    if (EVP_CipherInit_ex(m_ctx, nullptr, nullptr, nullptr, iv, -1) != 1) return false;
    if (len && EVP_CipherUpdate(m_ctx, data, &outl, data, static_cast<int>(len)) != 1) return false;
    return EVP_CipherFinal_ex(m_ctx, data + len, &outl) == 1;
}

bool SaCipher::hmac(const uint8_t* a, size_t a_len, const uint8_t* b, size_t b_len, uint8_t* icv16) {
    uint8_t full[32];
    size_t outl = 0;
    if (EVP_MAC_init(m_mac, nullptr, 0, nullptr) != 1) return false;
    if (EVP_MAC_update(m_mac, a, a_len) != 1) return false;
    if (b_len && EVP_MAC_update(m_mac, b, b_len) != 1) return false;
    if (EVP_MAC_final(m_mac, full, &outl, sizeof(full)) != 1 || outl != 32) return false;
    std::memcpy(icv16, full, 16);
    return true;
}

}  // namespace x2sec::esp
