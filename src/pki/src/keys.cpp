#include <openssl/pem.h>
#include <x2sec/common/file.hpp>
#include <x2sec/crypto/pkcs11.hpp>
#include <x2sec/pki/pki.hpp>

namespace x2sec::pki {

const char* key_alg_name(KeyAlg a) {
    switch (a) {
        case KeyAlg::EcP256:
            return "ec-p256";
        case KeyAlg::EcP384:
            return "ec-p384";
        case KeyAlg::Rsa2048:
            return "rsa2048";
        case KeyAlg::Rsa3072:
            return "rsa3072";
    }
    return "?";
}

Result<KeyAlg> parse_key_alg(std::string_view s) {
    std::string l;
    for (char c : s)
        if (c != '-' && c != '_') l += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if (l == "p256" || l == "ecp256" || l == "ec" || l == "prime256v1" || l == "secp256r1") return KeyAlg::EcP256;
    if (l == "p384" || l == "ecp384" || l == "secp384r1") return KeyAlg::EcP384;
    if (l == "rsa2048" || l == "rsa") return KeyAlg::Rsa2048;
    if (l == "rsa3072") return KeyAlg::Rsa3072;
    return Error(ErrorDomain::Pki, 0,
                 "unknown key algorithm '" + std::string(s) + "' (use p256, p384, rsa2048 or rsa3072)");
}

Result<PkeyPtr> generate_key(KeyAlg alg) {
    EVP_PKEY* k = nullptr;
    switch (alg) {
        case KeyAlg::EcP256:
            k = EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256");
            break;
        case KeyAlg::EcP384:
            k = EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-384");
            break;
        case KeyAlg::Rsa2048:
            k = EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", size_t{2048});
            break;
        case KeyAlg::Rsa3072:
            k = EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", size_t{3072});
            break;
    }
    if (!k) return ossl_error(ErrorDomain::Crypto, std::string("generating ") + key_alg_name(alg) + " key");
    return PkeyPtr(k);
}

Result<PkeyPtr> generate_key(KeyAlg alg, const std::string& token_uri) {
    if (token_uri.empty()) return generate_key(alg);
    crypto::KeyType t = crypto::KeyType::EcP256;
    switch (alg) {
        case KeyAlg::EcP256:
            t = crypto::KeyType::EcP256;
            break;
        case KeyAlg::EcP384:
            t = crypto::KeyType::EcP384;
            break;
        case KeyAlg::Rsa2048:
            t = crypto::KeyType::Rsa2048;
            break;
        case KeyAlg::Rsa3072:
            t = crypto::KeyType::Rsa3072;
            break;
    }
    X2SEC_TRY(auto k, crypto::generate_token_key(token_uri, t));
    return PkeyPtr(k.key);
}

Result<SecureBytes> private_key_pem(EVP_PKEY* key) {
    // A key in a PKCS#11 token is written as its URI (the key never leaves the token).
    if (auto uri = crypto::token_key_uri(key)) return SecureBytes(as_bytes(std::string_view(*uri)));
    BioPtr b(BIO_new(BIO_s_secmem()));
    if (!b || !PEM_write_bio_PrivateKey(b.get(), key, nullptr, nullptr, 0, nullptr, nullptr))
        return ossl_error(ErrorDomain::Crypto, "encoding private key");
    char* p = nullptr;
    long n = BIO_get_mem_data(b.get(), &p);
    return SecureBytes(BytesView(reinterpret_cast<const uint8_t*>(p), static_cast<size_t>(n)));
}

Status save_private_key(const std::string& path, EVP_PKEY* key) {
    X2SEC_TRY(auto pem, private_key_pem(key));
    return write_file_atomic(path, pem.view(), 0600);
}

Result<PkeyPtr> private_key_from_pem(BytesView pem) {
    if (std::string_view text(reinterpret_cast<const char*>(pem.data()), pem.size()); crypto::is_pkcs11_uri(text)) {
        while (!text.empty() && (text.back() == '\n' || text.back() == '\r' || text.back() == ' '))
            text.remove_suffix(1);
        X2SEC_TRY(auto k, crypto::load_token_private_key(std::string(text)));
        return PkeyPtr(k);
    }
    BioPtr b(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
    EVP_PKEY* k = PEM_read_bio_PrivateKey(b.get(), nullptr, nullptr, nullptr);
    if (!k) return ossl_error(ErrorDomain::Pki, "not a PEM private key");
    return PkeyPtr(k);
}

Result<PkeyPtr> load_private_key(const std::string& path) {
    if (crypto::is_pkcs11_uri(path)) {
        X2SEC_TRY(auto k, crypto::load_token_private_key(path));
        return PkeyPtr(k);
    }
    auto data = read_file(path, 1 << 20);
    if (!data) return std::move(data).error();
    SecureBytes pem(*data);
    secure_zero(data->data(), data->size());
    auto k = private_key_from_pem(pem.view());
    if (!k) return Error(k.error()).context(path);
    return k;
}

}  // namespace x2sec::pki
