// A small test PKI minted in-process with OpenSSL: roots, intermediates, end-entity
// certificates with subjectAltNames, CRLs.  For tests only; failures throw std::runtime_error.
//
//   auto root = test::make_root("Vendor A Root");
//   auto leaf = test::make_cert(root, "henb1.example.net", {"DNS:henb1.example.net", "IP:192.0.2.1"});
//   x509::TrustStore ts; ts.add_anchor(root.cert, "vendor-a");
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>
#include <x2sec/crypto/crypto.hpp>
#include <x2sec/x509/x509.hpp>

namespace x2sec::test {

struct Issued {
    x509::Certificate cert;
    crypto::PrivateKey key;
};

struct CertOptions {
    // "CN=henb1,O=Vendor A" (RFC 2253-ish, comma separated) or a bare name meaning CN=<name>.
    std::string subject;
    // "DNS:host", "IP:192.0.2.1", "IP:2001:db8::1", "email:a@b"; without a prefix: an IP
    // address if it parses as one, an email if it has '@', else a DNS name.
    std::vector<std::string> sans;
    crypto::KeyType key_type = crypto::KeyType::EcP256;
    // Unix seconds; 0 means now - 1 hour / now + 365 days.
    int64_t not_before = 0;
    int64_t not_after = 0;
    bool is_ca = false;
    std::optional<int> path_len;
    // OpenSSL keyUsage syntax ("critical,digitalSignature,keyEncipherment"); empty = default
    // (CA: keyCertSign,cRLSign; end entity: digitalSignature); "none" = no extension.
    std::string key_usage;
    std::string extended_key_usage;  // e.g. "serverAuth,clientAuth"; empty = none
    std::vector<std::string> crl_urls;
    std::vector<std::string> ocsp_urls;  // authorityInfoAccess id-ad-ocsp
    std::optional<uint64_t> serial;      // default: unique per process
    // Certify this existing key instead of generating one (Issued::key is then empty).
    const EVP_PKEY* subject_key = nullptr;
};

// A self-signed CA certificate.
Issued make_root(const std::string& name, crypto::KeyType type = crypto::KeyType::EcP256, int64_t not_before = 0,
                 int64_t not_after = 0);
Issued make_self_signed(const CertOptions& opts);
// A certificate issued by issuer/issuer_key.
Issued make_cert(const x509::Certificate& issuer, const crypto::PrivateKey& issuer_key, const std::string& subject,
                 const std::vector<std::string>& sans, crypto::KeyType type = crypto::KeyType::EcP256,
                 int64_t not_before = 0, int64_t not_after = 0, bool is_ca = false);
Issued make_cert(const Issued& issuer, const std::string& subject, const std::vector<std::string>& sans = {},
                 crypto::KeyType type = crypto::KeyType::EcP256, int64_t not_before = 0, int64_t not_after = 0,
                 bool is_ca = false);
Issued make_cert(const Issued& issuer, const CertOptions& opts);
Issued make_cert(const x509::Certificate& issuer, const crypto::PrivateKey& issuer_key, const CertOptions& opts);
// A v2 CRL signed by issuer listing these certificates as revoked.  0 = now / now + 7 days.
x509::Crl make_crl(const Issued& issuer, const std::vector<x509::Certificate>& revoked, int64_t this_update = 0,
                   int64_t next_update = 0);
// The DER X.509 Name for "CN=a,O=b" text (as make_cert parses subjects).
Bytes name_der(const std::string& subject);

}  // namespace x2sec::test
