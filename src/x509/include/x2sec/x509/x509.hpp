// x2sec::x509 — certificates, CRLs and path validation against several trust anchors at once
// (vendor roots and operator roots side by side), over OpenSSL's X509/X509_STORE.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>
#include <x2sec/common/bytes.hpp>
#include <x2sec/common/child_sa.hpp>
#include <x2sec/common/result.hpp>

typedef struct x509_st X509;
typedef struct X509_crl_st X509_CRL;
typedef struct evp_pkey_st EVP_PKEY;
typedef struct x509_store_st X509_STORE;

namespace x2sec::x509 {

class RevocationChecker;  // revocation.hpp

class Certificate {
public:
    static Result<Certificate> from_der(BytesView der);
    static Result<Certificate> from_pem(BytesView pem);
    // Every certificate of a PEM bundle, in file order.
    static Result<std::vector<Certificate>> load_pem_chain(const std::string& path);
    static Certificate adopt(X509* x);               // takes ownership
    Status save_pem(const std::string& path) const;  // atomic

    Bytes der() const;
    std::string pem() const;
    Bytes subject_der() const;    // DER Name, for ID_DER_ASN1_DN
    std::string subject() const;  // RFC 2253 "CN=...,O=..."
    std::string issuer() const;
    std::vector<std::string> san_dns() const;
    std::vector<IpAddress> san_ip() const;
    std::vector<std::string> san_email() const;
    Bytes serial() const;  // big-endian
    std::string serial_hex() const;
    int64_t not_before() const;  // unix seconds
    int64_t not_after() const;
    bool is_ca() const;
    bool self_signed() const;
    // SHA-1 of the DER SubjectPublicKeyInfo: what CERTREQ carries (RFC 7296 3.7).
    Bytes spki_sha1() const;
    Bytes subject_key_id() const;  // empty when absent
    std::vector<std::string> crl_distribution_points() const;
    EVP_PKEY* public_key() const;  // owned by the certificate
    X509* get() const { return m_x.get(); }

private:
    struct Free {
        void operator()(X509* x) const;
    };
    std::shared_ptr<X509> m_x;
    // from_der's provider-native copy of an EC key (public_key() returns it; the X509 holds a
    // legacy one that OpenSSL would export to the provider on every signature check).
    std::shared_ptr<EVP_PKEY> m_key;
};

// How from_der parsed certificates in this process: without the decoder set-up (EC P-256 /
// P-384 and RSA keys, DER as received) or the ordinary d2i_X509 way (anything else).
struct ParseCounters {
    uint64_t fast = 0;
    uint64_t fallback = 0;
};
ParseCounters parse_counters();

// A bounded, thread-safe cache of parsed certificates, keyed by the SHA-256 of their DER (the
// full DER is compared on a hit, so a hash collision cannot substitute a certificate).  It
// saves re-parsing a certificate a peer presents again: in OpenSSL 3.0 d2i_X509 costs about as
// much as an ECDSA verify (~90 us) when it sets up the provider decoder framework for the public
// key; Certificate::from_der avoids that for EC P-256/P-384 and RSA keys (~20 us), the cache
// saves the rest.  Only parsing is cached, never a verdict: TrustStore::verify (chain
// signatures, validity at the given time, CRLs), match_identity and the AUTH signature check
// run on every use, so a new CRL or anchor takes effect at once, and a changed certificate has
// a different DER and is parsed afresh.  Failures are not cached.  The least recently used entry
// is dropped when `capacity` is reached.  Entries share one immutable X509 (reference-counted;
// OpenSSL locks its lazily cached extension data), so the returned Certificates may be used on
// several threads at once.
class CertificateCache {
public:
    explicit CertificateCache(size_t capacity = 1024);
    ~CertificateCache();
    CertificateCache(const CertificateCache&) = delete;
    CertificateCache& operator=(const CertificateCache&) = delete;

    // Certificate::from_der(der), from the cache when the same DER was parsed before.
    Result<Certificate> parse(BytesView der);
    size_t size() const;
    size_t capacity() const { return m_capacity; }
    uint64_t hits() const;
    uint64_t misses() const;
    void clear();  // drops every entry (counters are kept)

    // The process-wide instance the IKE engine parses peer certificates with (capacity 1024).
    static CertificateCache& shared();

private:
    struct Impl;
    std::unique_ptr<Impl> m_impl;
    size_t m_capacity;
};

class Crl {
public:
    static Result<Crl> from_der(BytesView der);
    static Result<Crl> from_pem(BytesView pem);
    static Result<Crl> load(const std::string& path);  // PEM or DER
    static Crl adopt(X509_CRL* crl);                   // takes ownership
    Bytes der() const;
    std::string pem() const;
    X509_CRL* get() const { return m_crl.get(); }
    std::string issuer() const;
    int64_t next_update() const;

private:
    std::shared_ptr<X509_CRL> m_crl;
};

// Why a certificate was not accepted; AuthFailure::code() values.
enum class VerifyFailure : int {
    UntrustedCa = 1,  // no path to any configured anchor
    Expired = 2,      // leaf or chain outside its validity at the given time
    NotYetValid = 3,
    Revoked = 4,
    BadSignature = 5,    // a certificate signature in the chain does not verify
    CrlUnavailable = 6,  // CRL checking required but no CRL for an issuer
    IdMismatch = 7,      // the peer's IKE ID is not in the certificate
    BadUsage = 8,        // missing keyUsage digitalSignature / not an end-entity
    Other = 9,
};
const char* to_string(VerifyFailure f);

struct VerifiedChain {
    std::vector<Certificate> chain;  // leaf first, anchor last
    Certificate anchor;
    std::string anchor_label;  // the name the anchor was added with ("vendor-a", "operator")
};

// A set of trust anchors with labels, optional intermediates and CRLs.  verify() tries all
// anchors at once and says which one the leaf chains to.
class TrustStore {
public:
    void add_anchor(const Certificate& root, std::string label);
    void add_crl(const Crl& crl);
    void set_crl_check(bool on) { m_crl_check = on; }  // leaf + chain, fail if a CRL is missing
    // Revocation through a RevocationChecker (revocation.hpp): CRLs from files and from the
    // certificates' cRLDistributionPoints, reloaded and refetched while the store is in use.
    // verify() asks it about every certificate of the built chain but the anchor, after the
    // path and validity checks.  Shared: one checker serves every store of a daemon.
    void set_revocation(std::shared_ptr<const RevocationChecker> r) { m_revocation = std::move(r); }
    const std::shared_ptr<const RevocationChecker>& revocation() const { return m_revocation; }
    // Errors: ErrorDomain::Pki with code = VerifyFailure, detail names the certificate.
    // leaf_revocation_settled: the leaf's status comes from elsewhere (an OCSP response stapled
    // in IKEv2, RFC 4806, checked by the caller): the revocation checker is asked only about the
    // rest of the chain.
    Result<VerifiedChain> verify(const Certificate& leaf, const std::vector<Certificate>& intermediates,
                                 int64_t unix_time, bool leaf_revocation_settled = false) const;
    // SHA-1 SPKI hashes of the anchors (for CERTREQ) and lookup by such a hash.
    std::vector<Bytes> anchor_spki_sha1s() const;
    std::optional<Certificate> anchor_by_spki_sha1(BytesView hash) const;
    const std::vector<std::pair<std::string, Certificate>>& anchors() const { return m_anchors; }
    // The SPKI SHA-1 and the RFC 2253 subject of each anchors() entry, in the same order.
    const std::vector<Bytes>& anchor_spki_sha1_each() const { return m_anchor_spki_sha1s; }
    const std::vector<std::string>& anchor_subjects() const { return m_anchor_subjects; }
    bool empty() const { return m_anchors.empty(); }

private:
    // The X509_STORE holding every anchor and CRL is built here, on every change, never inside
    // the const verify(): a TrustStore shared between threads (shared_ptr<const TrustStore>)
    // only reads it, which OpenSSL allows concurrently.  Each rebuild makes a new store, so
    // copies of a TrustStore never see each other's later changes.  The verification time and
    // flags go on the per-call X509_STORE_CTX, not on this shared store.
    void rebuild_store();
    std::shared_ptr<X509_STORE> m_store;
    std::string m_store_error;  // why the last rebuild failed; reported by verify()
    std::vector<std::pair<std::string, Certificate>> m_anchors;
    std::vector<Bytes> m_anchor_spki_sha1s;      // one per m_anchors entry, computed in add_anchor
    std::vector<std::string> m_anchor_subjects;  // likewise
    std::vector<Crl> m_crls;
    bool m_crl_check = false;
    std::shared_ptr<const RevocationChecker> m_revocation;
};

// A DER Name (Certificate::subject_der()) as RFC 2253 text, like Certificate::subject(); ""
// for octets that do not decode as a Name.
std::string dn_to_string(BytesView name_der);

// IKEv2 identification types (RFC 7296 3.5).
enum class IdType : uint8_t { Ipv4Addr = 1, Fqdn = 2, Rfc822Addr = 3, Ipv6Addr = 5, DerAsn1Dn = 9, KeyId = 11 };
// Checks that an IKE ID names this certificate: FQDN against SAN dNSName (case-insensitive),
// IP against SAN iPAddress, RFC822 against SAN email, DN against the subject (DER equality).
// Error code VerifyFailure::IdMismatch with a detail quoting the ID and the SANs.
Status match_identity(const Certificate& cert, IdType type, BytesView id_data);

}  // namespace x2sec::x509
