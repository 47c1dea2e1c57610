// x2sec::crypto PKCS#11 keys (the H(e)NB's Trusted Environment, TS 33.320 4.4.x).
//
// A key reference is either a file path or a `pkcs11:` URI (RFC 7512), e.g.
//   pkcs11:token=henb1;object=device;type=private?pin-source=file:/etc/x2sec/henb1.pin
// Path attributes understood: token, manufacturer, serial, model, object (CKA_LABEL), id
// (CKA_ID), type.  Query attributes: pin-value, pin-source (a file holding the PIN, "file:"
// prefix optional) and module-path (the PKCS#11 module; default: $X2SEC_PKCS11_MODULE, else
// p11-kit's proxy module).  One module per process.
//
// Signing keys are opened through OpenSSL's ENGINE API with Debian's libp11 engine
// (libengine-pkcs11-openssl): the EVP_PKEY signs inside the token, so every OpenSSL use of a
// key (EVP_DigestSign, X509_sign, SSL_CTX_use_PrivateKey, OSSL_CMP_CTX_set1_pkey) works with
// it unchanged.  Key generation, certificate storage and attribute queries call the module's
// PKCS#11 functions directly (types from p11-kit's pkcs11.h; URIs parsed with p11-kit).
// Errors never carry the PIN: URIs in messages are redacted.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <x2sec/common/bytes.hpp>
#include <x2sec/common/result.hpp>
#include <x2sec/crypto/crypto.hpp>

namespace x2sec::crypto {

// True for "pkcs11:..." (case-insensitive scheme).
bool is_pkcs11_uri(std::string_view ref);
// The URI without pin-value (for messages and logs).
std::string redact_pkcs11_uri(std::string_view uri);

// Opens the private key the URI names (exactly one private key object must match).  The
// caller owns the EVP_PKEY; it remembers its URI (token_key_uri).
Result<EVP_PKEY*> load_token_private_key(const std::string& uri);
// The URI a key was loaded from; nullopt for a software key.
std::optional<std::string> token_key_uri(const EVP_PKEY* key);

// A key pair generated in the token: CKA_TOKEN, private key CKA_SENSITIVE=true,
// CKA_EXTRACTABLE=false, CKA_SIGN only.  The URI's `object` is the label (default "x2sec");
// a fresh random CKA_ID makes the pair unique, and the returned URI names it by that id (it
// keeps the token, PIN and module attributes of the given one).
struct TokenKey {
    std::string uri;
    EVP_PKEY* key = nullptr;  // opened through the engine; caller owns
};
Result<TokenKey> generate_token_key(const std::string& uri, KeyType type);

// Stores an X.509 certificate (DER) in the token beside the key the URI names (same CKA_ID
// and CKA_LABEL), replacing a certificate with that id.
Status store_token_certificate(const std::string& uri, BytesView cert_der);
// The certificate (DER) stored beside the key; an error when there is none.
Result<Bytes> load_token_certificate(const std::string& uri);

// What the token says about the private key the URI names.
struct TokenKeyAttributes {
    bool sensitive = false;          // CKA_SENSITIVE
    bool extractable = true;         // CKA_EXTRACTABLE
    bool always_sensitive = false;   // CKA_ALWAYS_SENSITIVE
    bool never_extractable = false;  // CKA_NEVER_EXTRACTABLE
    bool value_readable = true;      // C_GetAttributeValue(CKA_VALUE / CKA_PRIVATE_EXPONENT) answered
};
Result<TokenKeyAttributes> token_key_attributes(const std::string& uri);

}  // namespace x2sec::crypto
