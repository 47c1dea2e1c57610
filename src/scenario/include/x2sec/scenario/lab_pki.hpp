// Minimal certificate minting for the loopback demo, the lab and tests: a root CA per vendor
// (or per operator) and end-entity certificates with the H(e)NB's EUI-48 FQDN in
// subjectAltName dNSName.  EC P-256, SHA-256.  The operator certificates of Scenario 2 are not
// minted here: they come from the operator RA/CA over CMPv2.
#pragma once

#include <memory>
#include <string>
#include <vector>
#include <x2sec/common/bytes.hpp>
#include <x2sec/common/result.hpp>

typedef struct x509_st X509;
typedef struct evp_pkey_st EVP_PKEY;

namespace x2sec::scenario {

struct LabCredential {
    std::string cert_pem;   // leaf only
    std::string chain_pem;  // leaf then issuer chain (without the root)
    SecureBytes key_pem;    // PKCS#8 private key, or the pkcs11: URI of a key in a token
    std::string identity;   // SAN dNSName
};

class LabCa {
public:
    // A root CA: CN `cn`, O `org`, valid from `nb` (Unix seconds) for `days`.
    static Result<LabCa> create(const std::string& cn, const std::string& org, int64_t nb, int days);
    const std::string& root_pem() const { return m_root_pem; }
    const std::string& name() const { return m_cn; }
    // The CA's certificate and key (owned by the LabCa), e.g. for an RA/CA server.
    x509_st* cert() const;
    evp_pkey_st* key() const;
    // End-entity certificate (keyUsage digitalSignature, SAN dNSName = fqdn, CN = fqdn), valid
    // from `nb` (Unix seconds) for `days`.
    Result<LabCredential> issue(const std::string& fqdn, int64_t nb, int days, bool server_auth = true);
    // The same for an existing key (e.g. one in a PKCS#11 token): `key` gives the public key,
    // `key_ref` becomes the credential's key_pem (the key's PEM or its pkcs11: URI).
    Result<LabCredential> issue_for_key(const std::string& fqdn, EVP_PKEY* key, SecureBytes key_ref,
                                        int64_t not_before_unix, int days, bool server_auth = true);

    LabCa(LabCa&&) noexcept;
    LabCa& operator=(LabCa&&) noexcept;
    ~LabCa();

private:
    LabCa();
    struct Impl;
    std::unique_ptr<Impl> m_impl;
    std::string m_root_pem;
    std::string m_cn;
};

// EUI-48 FQDN per TS 23.003 4.10: "<12 hex digits>.<realm>".
std::string eui48_fqdn(uint64_t eui48, const std::string& realm);

}  // namespace x2sec::scenario
