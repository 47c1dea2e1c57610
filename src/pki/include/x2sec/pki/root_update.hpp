// Root CA key update (RFC 4210 4.4, announced by CMP genm rootCaCert -> genp rootCaKeyUpdate,
// RFC 9483 4.3.2 / RFC 9480 2.14): a new root key, the new self-signed root (newWithNew) and the
// two link certificates, newWithOld (the new root's name and key signed by the old root key)
// and oldWithNew (the old root's name and key signed by the new key), so that a chain builds
// from either root to the other.  `x2sec pki root-update` writes them into
// <ca-dir>/root-update/ (where `x2sec ca serve` reads them); `--activate` then makes the new
// root the CA's root.
#pragma once

#include <optional>
#include <string>
#include <x2sec/common/result.hpp>
#include <x2sec/pki/pki.hpp>

namespace x2sec::pki {

// The files of <ca-dir>/root-update/ (the names ServerConfig::from_ca_dir reads).
inline constexpr const char* kRootUpdateDir = "root-update";
inline constexpr const char* kNewWithNewFile = "newwithnew.crt";
inline constexpr const char* kNewWithOldFile = "newwithold.crt";
inline constexpr const char* kOldWithNewFile = "oldwithnew.crt";
inline constexpr const char* kNewRootKeyFile = "root.key";  // the new root key (0600), or its pkcs11: URI
// Where --activate keeps the CA's previous root, root key, issuing CA certificate and chains.
inline constexpr const char* kRootOldDir = "root-old";

struct RootUpdate {
    X509Ptr new_with_new, new_with_old, old_with_new;
};

// The new root for `new_key` (subject of the old root unless `new_subject` is given; valid
// from now - 60 s for validity_days) and both link certificates (Profile::RootLink, SKI of
// their key, AKI of the signing key), valid from now - 60 s until the old root expires (at
// most until the new root expires: RFC 4210 4.4).  Errors: the old key not matching the old
// root, an old root that has expired, a bad subject.
Result<RootUpdate> make_root_update(X509* old_root, EVP_PKEY* old_key, EVP_PKEY* new_key,
                                    const std::string& new_subject, int64_t now, int64_t validity_days);

struct RootUpdateOptions {
    KeyAlg alg = KeyAlg::EcP256;
    std::string key_token;  // a pkcs11: URI: generate the new root key in that token
    std::string subject;    // the new root's subject; empty: the old root's
    int64_t validity_days = 7300;
    int64_t now = 0;  // unix seconds; 0: the clock
};

// Prepares a root key update of the CA directory `ca_dir` (written by init-operator-ca): the
// old root is root.crt, its key root.key (an intermediate set-up) or ca.key (the root issues
// directly).  Everything is built in memory, written into a fresh temporary directory beside
// root-update/ (the key 0600, atomically) and renamed to root-update/ as a unit; on any error
// the temporary directory is removed and the CA directory is as before.  Refuses when
// root-update/ exists.
Status create_root_update(const std::string& ca_dir, const RootUpdateOptions& opt);

// Switches an intermediate CA directory to the prepared new root: the issuing CA's key is
// certified again by the new root (same name, key and cRLDistributionPoints; valid until the
// earlier of its old notAfter and the new root's), root.crt/root.key become the new root and
// its key, chain.pem and ra.crt carry the new chain.  The previous files go to root-old/
// first (refused when it exists); each file is then replaced atomically.  root-update/ stays:
// the server keeps announcing the update to end entities that trust the old root, and sends
// newWithOld in its extraCerts so that they still validate its messages.  A CA without an
// intermediate (the root issues directly) is refused: its end-entity certificates and CRLs
// are signed by the root key itself (see docs/pki-cmp.md "Root CA key update").
Status activate_root_update(const std::string& ca_dir, int64_t now = 0);

}  // namespace x2sec::pki
