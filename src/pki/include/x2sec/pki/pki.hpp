// x2sec::pki — factory and operator PKI tooling: key generation, certificate issuance with
// the profiles of TS 33.310 (SPEC.md "Certificate profile"), CRLs and the H(e)NB identity
// `<EUI-48 hex>.<realm>` (TS 23.003 4.10) carried as subjectAltName dNSName.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>
#include <x2sec/common/bytes.hpp>
#include <x2sec/common/result.hpp>
#include <x2sec/pki/ossl.hpp>

namespace x2sec::pki {

// ---------------------------------------------------------------- keys
enum class KeyAlg { EcP256, EcP384, Rsa2048, Rsa3072 };
const char* key_alg_name(KeyAlg a);
// "p256"/"ec-p256"/"P-256", "p384", "rsa2048", "rsa3072".
Result<KeyAlg> parse_key_alg(std::string_view s);

Result<PkeyPtr> generate_key(KeyAlg alg);
// A new key pair inside the PKCS#11 token a `pkcs11:` URI names (sensitive, non-extractable;
// the URI's object is the label, a fresh id makes it unique: see crypto::generate_token_key);
// an empty reference generates in memory as above.
Result<PkeyPtr> generate_key(KeyAlg alg, const std::string& token_uri);
// Key files and references: load_private_key takes a path or a `pkcs11:` URI, and a file (or
// PEM buffer) may hold a URI instead of a key; private_key_pem/save_private_key of a token key
// write its URI.
// PKCS#8 PEM, mode 0600, written atomically (temp file + rename); the PEM buffer is zeroised.
Status save_private_key(const std::string& path, EVP_PKEY* key);
Result<PkeyPtr> load_private_key(const std::string& path);
// PEM of the private key in a zeroising buffer (for tests and in-memory credentials).
Result<SecureBytes> private_key_pem(EVP_PKEY* key);
Result<PkeyPtr> private_key_from_pem(BytesView pem);

// ---------------------------------------------------------------- certificates
enum class Profile {
    RootCa,          // self-signed; basicConstraints cA critical; keyCertSign + cRLSign
    IntermediateCa,  // as RootCa, pathLen 0, signed by a root
    Device,          // vendor-issued H(e)NB certificate (digitalSignature, SAN = identity)
    BaseStation,     // operator-issued H(e)NB certificate (TS 33.310 profile)
    Server,          // SeGW / RA / TLS server: digitalSignature, serverAuth + clientAuth
    OcspSigner,      // delegated OCSP responder (RFC 6960 4.2.2.2): digitalSignature, id-kp-OCSPSigning,
                     // id-pkix-ocsp-nocheck (so keep it short-lived)
    RootLink,        // root CA key update link certificate (RFC 4210 4.4: newWithOld / oldWithNew): as
                     // RootCa (no pathLen), one root's name and key signed by the other root's key
};
const char* profile_name(Profile p);

struct IssueRequest {
    Profile profile = Profile::BaseStation;
    X509_NAME* subject = nullptr;    // borrowed
    EVP_PKEY* public_key = nullptr;  // borrowed (a private key works as well)
    // The DER SubjectPublicKeyInfo to certify, when the caller has it (a CMP request's certificate
    // template): copied into the certificate as it is, and public_key is not needed.  OpenSSL 3.0
    // re-encodes and re-decodes an EVP_PKEY through its provider coders to set it (~0.5 ms).
    BytesView public_key_spki;
    std::vector<std::string> dns;   // subjectAltName dNSName
    std::vector<std::string> ips;   // subjectAltName iPAddress (text form)
    std::vector<std::string> uris;  // subjectAltName uniformResourceIdentifier
    int64_t validity_days = 365;
    std::optional<int64_t> not_before;   // unix seconds; default now - 60 s
    std::optional<int64_t> not_after;    // overrides validity_days
    std::vector<std::string> crl_urls;   // cRLDistributionPoints (URI)
    std::vector<std::string> ocsp_urls;  // authorityInfoAccess id-ad-ocsp (URI)
    Bytes serial;                        // empty: random 16 bytes, positive
};

// Issues a certificate signed by issuer_key; issuer_cert null means self-signed (the subject
// is the issuer, the key signs itself).  SHA-256 for P-256/RSA, SHA-384 for P-384.
Result<X509Ptr> issue_certificate(const IssueRequest& req, X509* issuer_cert, EVP_PKEY* issuer_key);
// subjectAltName value syntax accepted by issue_certificate: a dNSName of letters, digits,
// '-', '.' (and '*'), at most 253 octets; an absolute URI (scheme ':' ...) of printable ASCII.
bool valid_dns_name(std::string_view d);
bool valid_uri(std::string_view u);

// 16 random bytes with the top bit cleared (positive, non-zero): RFC 5280 4.1.2.2.
Bytes random_serial();

Status save_certs_pem(const std::string& path, const std::vector<X509*>& certs);
Result<std::vector<X509Ptr>> load_certs_pem(const std::string& path);
Result<X509Ptr> load_cert(const std::string& path);  // first certificate of a PEM file
std::string cert_pem(X509* x);
Bytes cert_der(X509* x);
Result<X509Ptr> cert_from_der(BytesView der);

// Human-readable summary: subject, issuer, serial, validity, SANs, key, extensions.
std::string describe(X509* x);
std::vector<std::string> san_dns(X509* x);
std::string serial_hex(X509* x);
Bytes serial_bytes(const ASN1_INTEGER* serial);
int64_t not_after(X509* x);
int64_t not_before(X509* x);
bool public_keys_equal(X509* x, EVP_PKEY* key);

// Strict path validation at unix_time (0 = now): leaf against the anchors, with untrusted
// intermediates.  On failure the Error code is the X509_V_ERR_* value and the detail names
// the certificate and the reason.
Status verify_chain(X509* leaf, const std::vector<X509*>& anchors, const std::vector<X509*>& untrusted,
                    int64_t unix_time = 0);
// The same against a trust store built once (make_trust_store) and shared: X509_STORE is
// only read during verification (a fresh X509_STORE_CTX per call), so threads may share it
// as long as nobody adds to it.
StorePtr make_trust_store(const std::vector<X509*>& anchors);
Status verify_chain(X509* leaf, X509_STORE* store, const std::vector<X509*>& untrusted, int64_t unix_time = 0);

// ---------------------------------------------------------------- CRL
struct Revoked {
    Bytes serial;
    int64_t time = 0;
    int reason = 0;  // CRLReason; 0 = unspecified
};
Result<CrlPtr> issue_crl(X509* issuer_cert, EVP_PKEY* issuer_key, const std::vector<Revoked>& revoked,
                         int64_t crl_number, int64_t this_update, int64_t next_update);
Bytes crl_der(X509_CRL* crl);
std::string crl_pem(X509_CRL* crl);

// ---------------------------------------------------------------- identity
// "0023a1b2c3d4" or "00:23:A1:B2:C3:D4" + realm -> "0023a1b2c3d4.henb.vendor-a.example".
Result<std::string> make_identity(std::string_view eui48, std::string_view realm);
// True for `<12 or 16 lowercase hex>.<realm>` with a syntactically valid realm.
bool is_node_identity(std::string_view fqdn);
// The node identities (SAN dNSNames that are node identities) of a certificate.
std::vector<std::string> node_identities(X509* x);

}  // namespace x2sec::pki
