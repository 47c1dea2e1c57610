// A complete in-memory lab PKI for tests, benchmarks and demos: two vendor roots with device
// certificates, an operator root with an issuing CA and a CMP RA certificate, and a
// ServerConfig ready for cmp::Server.  Keys are P-256 unless told otherwise.
#pragma once

#include <string>
#include <vector>
#include <x2sec/cmp/server.hpp>
#include <x2sec/pki/pki.hpp>

namespace x2sec::cmp {

struct LabCredential {
    pki::PkeyPtr key;
    pki::X509Ptr cert;
    std::vector<X509*> chain_ptrs() const;  // cert's issuers (not owned)
    std::vector<pki::X509Ptr> chain;        // issuers up to the root
};

struct LabCa {
    pki::PkeyPtr key;
    pki::X509Ptr cert;
};

struct LabPki {
    LabCa vendor_a, vendor_b, operator_root, operator_issuing;
    LabCredential ra;  // CMP protection certificate (server profile, SAN 127.0.0.1/localhost)

    // A device certificate of vendor_a (or b) for `<eui>.<realm>`; validity can be shifted to
    // make expired certificates.
    LabCredential device(const LabCa& vendor, const std::string& eui, const std::string& realm,
                         int64_t not_before_offset_s = -60, int64_t lifetime_s = 3650LL * 86400) const;
    // A server configuration trusting both vendors (or those given).
    ServerConfig server_config(bool with_vendor_b = true) const;
};

// Builds a fresh lab PKI (operator: root -> issuing CA -> RA).
LabPki make_lab_pki(pki::KeyAlg alg = pki::KeyAlg::EcP256);
// A self-signed "rogue" vendor root for negative tests.
LabCa make_root_ca(const std::string& name, pki::KeyAlg alg = pki::KeyAlg::EcP256);

}  // namespace x2sec::cmp
