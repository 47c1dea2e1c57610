#include <openssl/evp.h>
#include <x2sec/crypto/crypto.hpp>

#include "ossl.hpp"

namespace x2sec::crypto {

using namespace detail;

namespace {

constexpr size_t kGcmSalt = 4;
constexpr size_t kGcmIv = 8;
constexpr size_t kGcmTag = 16;
constexpr size_t kCbcBlock = 16;

Hash integ_hash(IntegId i) {
    switch (i) {
        case IntegId::HmacSha2_384_192:
            return Hash::Sha384;
        case IntegId::HmacSha2_512_256:
            return Hash::Sha512;
        default:
            return Hash::Sha256;
    }
}

// Explicitly fetched ciphers, once per process (immutable, shared between threads): OpenSSL 3.0
// fetches the implementation of an EVP_aes_128_gcm()-style cipher from the method store on
// every EVP_EncryptInit_ex, i.e. on every SK payload.  The built-in object is the fallback.
const EVP_CIPHER* fetched(const char* name, const EVP_CIPHER* builtin) {
    EVP_CIPHER* c = EVP_CIPHER_fetch(nullptr, name, nullptr);
    return c != nullptr ? c : builtin;
}

const EVP_CIPHER* cipher_of(EncrId e, unsigned bits) {
    if (e == EncrId::AesGcm16) {
        static const EVP_CIPHER* const gcm[3] = {fetched("AES-128-GCM", EVP_aes_128_gcm()),
                                                 fetched("AES-192-GCM", EVP_aes_192_gcm()),
                                                 fetched("AES-256-GCM", EVP_aes_256_gcm())};
        switch (bits) {
            case 128:
                return gcm[0];
            case 192:
                return gcm[1];
            case 256:
                return gcm[2];
        }
    } else if (e == EncrId::AesCbc) {
        static const EVP_CIPHER* const cbc[3] = {fetched("AES-128-CBC", EVP_aes_128_cbc()),
                                                 fetched("AES-192-CBC", EVP_aes_192_cbc()),
                                                 fetched("AES-256-CBC", EVP_aes_256_cbc())};
        switch (bits) {
            case 128:
                return cbc[0];
            case 192:
                return cbc[1];
            case 256:
                return cbc[2];
        }
    }
    return nullptr;
}

}  // namespace

size_t encr_keymat_size(EncrId e, unsigned key_bits) {
    return key_bits / 8 + (e == EncrId::AesGcm16 ? kGcmSalt : 0);
}

size_t integ_key_size(IntegId i) {
    switch (i) {
        case IntegId::None:
            return 0;
        case IntegId::HmacSha2_256_128:
            return 32;
        case IntegId::HmacSha2_384_192:
            return 48;
        case IntegId::HmacSha2_512_256:
            return 64;
    }
    return 0;
}

size_t integ_icv_size(IntegId i) {
    switch (i) {
        case IntegId::None:
            return 0;
        case IntegId::HmacSha2_256_128:
            return 16;
        case IntegId::HmacSha2_384_192:
            return 24;
        case IntegId::HmacSha2_512_256:
            return 32;
    }
    return 0;
}

struct SkCipher::Impl {
    EncrId encr = EncrId::AesGcm16;
    unsigned bits = 128;
    IntegId integ = IntegId::None;
    const EVP_CIPHER* cipher = nullptr;
    SecureBytes key;   // AES key
    SecureBytes salt;  // GCM only
    SecureBytes integ_key;
    uint64_t counter = 0;  // next GCM IV
    bool exhausted = false;
    std::string name;

    bool gcm() const { return encr == EncrId::AesGcm16; }

    Error fail(const std::string& what) const {
        openssl_errors();  // drop queued OpenSSL errors: the detail says what failed
        return Error(ErrorDomain::Crypto, 0, name + ": " + what);
    }
};

SkCipher::SkCipher() : m_impl(std::make_unique<Impl>()) {}
SkCipher::SkCipher(SkCipher&&) noexcept = default;
SkCipher& SkCipher::operator=(SkCipher&&) noexcept = default;
SkCipher::~SkCipher() = default;

Result<SkCipher> SkCipher::create(EncrId e, unsigned key_bits, IntegId i, SecureBytes enc_key, SecureBytes integ_key) {
    const EVP_CIPHER* cipher = cipher_of(e, key_bits);
    if (cipher == nullptr)
        return Error(ErrorDomain::Crypto, 0,
                     "SK cipher: unsupported ENCR " + std::to_string(static_cast<unsigned>(e)) + " with " +
                         std::to_string(key_bits) + "-bit key");
    if (e == EncrId::AesGcm16 && i != IntegId::None)
        return Error(ErrorDomain::Crypto, 0, "SK cipher: AES-GCM takes no INTEG transform");
    if (e == EncrId::AesCbc && i == IntegId::None)
        return Error(ErrorDomain::Crypto, 0, "SK cipher: AES-CBC requires an INTEG transform");
    if (i != IntegId::None && integ_icv_size(i) == 0)
        return Error(ErrorDomain::Crypto, 0,
                     "SK cipher: unsupported INTEG " + std::to_string(static_cast<unsigned>(i)));
    if (enc_key.size() != encr_keymat_size(e, key_bits))
        return Error(ErrorDomain::Crypto, 0,
                     "SK cipher: encryption key is " + std::to_string(enc_key.size()) + " octets, expected " +
                         std::to_string(encr_keymat_size(e, key_bits)));
    if (integ_key.size() != integ_key_size(i))
        return Error(ErrorDomain::Crypto, 0,
                     "SK cipher: integrity key is " + std::to_string(integ_key.size()) + " octets, expected " +
                         std::to_string(integ_key_size(i)));
    SkCipher c;
    Impl& m = *c.m_impl;
    m.encr = e;
    m.bits = key_bits;
    m.integ = i;
    m.cipher = cipher;
    if (e == EncrId::AesGcm16) {
        m.key = enc_key.slice(0, key_bits / 8);
        m.salt = enc_key.slice(key_bits / 8, kGcmSalt);
        m.name = "AES-GCM-16-" + std::to_string(key_bits);
    } else {
        m.key = std::move(enc_key);
        m.name = "AES-CBC-" + std::to_string(key_bits) + "/HMAC-SHA2-" + std::to_string(hash_size(integ_hash(i)) * 8) +
                 "-" + std::to_string(integ_icv_size(i) * 8);
    }
    m.integ_key = std::move(integ_key);
    return c;
}

size_t SkCipher::iv_size() const {
    return m_impl->gcm() ? kGcmIv : kCbcBlock;
}
size_t SkCipher::icv_size() const {
    return m_impl->gcm() ? kGcmTag : integ_icv_size(m_impl->integ);
}
// GCM is a stream mode: RFC 5282 imposes no alignment, so only the pad-length octet is added.
size_t SkCipher::block_size() const {
    return m_impl->gcm() ? 1 : kCbcBlock;
}

size_t SkCipher::sealed_size(size_t plaintext_len) const {
    const size_t bs = block_size();
    const size_t padded = (plaintext_len + 1 + bs - 1) / bs * bs;
    return iv_size() + padded + icv_size();
}

Result<Bytes> SkCipher::seal(BytesView aad, BytesView plaintext, Rng& rng) {
    Impl& m = *m_impl;
    const size_t bs = block_size();
    const size_t padded_len = (plaintext.size() + 1 + bs - 1) / bs * bs;
    const size_t pad_len = padded_len - plaintext.size() - 1;
    Bytes out(sealed_size(plaintext.size()));
    uint8_t* iv = out.data();
    uint8_t* ct = iv + iv_size();
    uint8_t* icv = ct + padded_len;

    SecureBytes padded(padded_len);
    std::copy(plaintext.begin(), plaintext.end(), padded.data());
    padded[padded_len - 1] = static_cast<uint8_t>(pad_len);  // padding octets stay zero

    CipherCtxPtr ctx(EVP_CIPHER_CTX_new());
    if (!ctx) return m.fail("cipher context: " + openssl_errors());
    int len = 0;
    if (m.gcm()) {
        if (m.exhausted) return m.fail("IV counter exhausted; rekey");
        uint64_t c = m.counter++;
        if (m.counter == 0) m.exhausted = true;
        for (int k = 0; k < 8; ++k) iv[k] = static_cast<uint8_t>(c >> (56 - 8 * k));
        uint8_t nonce[kGcmSalt + kGcmIv];
        std::copy(m.salt.data(), m.salt.data() + kGcmSalt, nonce);
        std::copy(iv, iv + kGcmIv, nonce + kGcmSalt);
        if (EVP_EncryptInit_ex(ctx.get(), m.cipher, nullptr, nullptr, nullptr) != 1 ||
            EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_IVLEN, sizeof(nonce), nullptr) != 1 ||
            EVP_EncryptInit_ex(ctx.get(), nullptr, nullptr, m.key.data(), nonce) != 1)
            return m.fail("encrypt init");
        if (!aad.empty() && EVP_EncryptUpdate(ctx.get(), nullptr, &len, aad.data(), static_cast<int>(aad.size())) != 1)
            return m.fail("AAD");
        if (EVP_EncryptUpdate(ctx.get(), ct, &len, padded.data(), static_cast<int>(padded_len)) != 1 ||
            static_cast<size_t>(len) != padded_len)
            return m.fail("encrypt");
        if (EVP_EncryptFinal_ex(ctx.get(), ct + len, &len) != 1) return m.fail("encrypt final");
        if (EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_GET_TAG, kGcmTag, icv) != 1) return m.fail("reading tag");
        return out;
    }
    rng.fill(std::span<uint8_t>(iv, kCbcBlock));
    if (EVP_EncryptInit_ex(ctx.get(), m.cipher, nullptr, m.key.data(), iv) != 1 ||
        EVP_CIPHER_CTX_set_padding(ctx.get(), 0) != 1)
        return m.fail("encrypt init");
    if (EVP_EncryptUpdate(ctx.get(), ct, &len, padded.data(), static_cast<int>(padded_len)) != 1 ||
        static_cast<size_t>(len) != padded_len)
        return m.fail("encrypt");
    int fin = 0;
    if (EVP_EncryptFinal_ex(ctx.get(), ct + len, &fin) != 1 || fin != 0) return m.fail("encrypt final");
    Bytes mac_input = concat({aad, BytesView(iv, kCbcBlock + padded_len)});
    SecureBytes mac = hmac(integ_hash(m.integ), m.integ_key.view(), mac_input);
    std::copy(mac.data(), mac.data() + icv_size(), icv);
    return out;
}

Result<Bytes> SkCipher::open(BytesView aad, BytesView sealed) const {
    const Impl& m = *m_impl;
    const size_t ivs = iv_size();
    const size_t icvs = icv_size();
    const size_t bs = block_size();
    if (sealed.size() < ivs + bs + icvs)
        return m.fail("truncated (" + std::to_string(sealed.size()) + " octets, need at least " +
                      std::to_string(ivs + bs + icvs) + ")");
    const size_t ct_len = sealed.size() - ivs - icvs;
    if (ct_len % bs != 0)
        return m.fail("truncated (ciphertext of " + std::to_string(ct_len) +
                      " octets is not a multiple of the block size)");
    const uint8_t* iv = sealed.data();
    const uint8_t* ct = iv + ivs;
    const uint8_t* icv = ct + ct_len;

    CipherCtxPtr ctx(EVP_CIPHER_CTX_new());
    if (!ctx) return m.fail("cipher context: " + openssl_errors());
    SecureBytes plain(ct_len);
    int len = 0;
    if (m.gcm()) {
        uint8_t nonce[kGcmSalt + kGcmIv];
        std::copy(m.salt.data(), m.salt.data() + kGcmSalt, nonce);
        std::copy(iv, iv + kGcmIv, nonce + kGcmSalt);
        if (EVP_DecryptInit_ex(ctx.get(), m.cipher, nullptr, nullptr, nullptr) != 1 ||
            EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_IVLEN, sizeof(nonce), nullptr) != 1 ||
            EVP_DecryptInit_ex(ctx.get(), nullptr, nullptr, m.key.data(), nonce) != 1)
            return m.fail("decrypt init");
        if (!aad.empty() && EVP_DecryptUpdate(ctx.get(), nullptr, &len, aad.data(), static_cast<int>(aad.size())) != 1)
            return m.fail("AAD");
        if (EVP_DecryptUpdate(ctx.get(), plain.data(), &len, ct, static_cast<int>(ct_len)) != 1)
            return m.fail("decrypt");
        if (EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_TAG, kGcmTag, const_cast<uint8_t*>(icv)) != 1)
            return m.fail("setting tag");
        int fin = 0;
        // The tag comparison inside OpenSSL is constant time (CRYPTO_memcmp).
        if (EVP_DecryptFinal_ex(ctx.get(), plain.data() + len, &fin) != 1) return m.fail("ICV mismatch");
    } else {
        Bytes mac_input = concat({aad, BytesView(iv, ivs + ct_len)});
        SecureBytes mac = hmac(integ_hash(m.integ), m.integ_key.view(), mac_input);
        if (!ct_equal(mac.view().first(icvs), BytesView(icv, icvs))) return m.fail("ICV mismatch");
        if (EVP_DecryptInit_ex(ctx.get(), m.cipher, nullptr, m.key.data(), iv) != 1 ||
            EVP_CIPHER_CTX_set_padding(ctx.get(), 0) != 1)
            return m.fail("decrypt init");
        if (EVP_DecryptUpdate(ctx.get(), plain.data(), &len, ct, static_cast<int>(ct_len)) != 1 ||
            static_cast<size_t>(len) != ct_len)
            return m.fail("decrypt");
        int fin = 0;
        if (EVP_DecryptFinal_ex(ctx.get(), plain.data() + len, &fin) != 1) return m.fail("decrypt final");
    }
    const size_t pad_len = plain[ct_len - 1];
    if (pad_len + 1 > ct_len)
        return m.fail("bad padding (pad length " + std::to_string(pad_len) + " exceeds " + std::to_string(ct_len - 1) +
                      " octets of plaintext)");
    const size_t n = ct_len - 1 - pad_len;
    return Bytes(plain.data(), plain.data() + n);
}

}  // namespace x2sec::crypto
