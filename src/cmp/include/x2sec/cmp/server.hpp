// x2sec::cmp::Server — the operator RA/CA in 3GPP vendor-certificate mode (TS 33.310 clause 9)
// on OpenSSL's CMP server API (OSSL_CMP_SRV_CTX).  Sans-I/O: handle() takes one DER
// PKIMessage and returns the DER response; HttpServer (http.hpp) puts it on the network.
//
// What it enforces:
//  * ir/cr/p10cr must be signed by a device certificate chaining to one of the configured
//    vendor roots; kur/rr by a certificate this CA issued (operator root); the signer is
//    pinned for the rest of the transaction (certConf).
//  * POP (OpenSSL: badPOP), requested identity = the vendor certificate's `<EUI>.<realm>`
//    unless policy.allow_identity_mismatch, fresh transactionIDs (transactionIdInUse).
//  * The certificate is issued with the base-station profile (pki::Profile::BaseStation);
//    `ip` carries the operator root + CA chain in extraCerts and the operator root in caPubs.
//  * Failures: a protected response with PKIStatus rejection and the PKIFailureInfo bit
//    (ip/kup/rp for request-level failures, `error` for message-level ones); never a store
//    write for a rejected request.
#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <map>
#include <string_view>
#include <vector>
#include <x2sec/cmp/genm.hpp>
#include <x2sec/cmp/profile.hpp>
#include <x2sec/cmp/store.hpp>
#include <x2sec/common/counters.hpp>
#include <x2sec/pki/pki.hpp>

namespace x2sec::cmp {

struct ServerPolicy {
    bool allow_identity_mismatch = false;  // accept SANs other than the vendor identity
    bool grant_implicit_confirm = true;
    int64_t validity_days = 365;
    std::vector<std::string> crl_urls;      // cRLDistributionPoints in issued certificates
    std::vector<std::string> ocsp_urls;     // authorityInfoAccess id-ad-ocsp in issued certificates
    int session_timeout_s = 300;            // unconfirmed certificates are revoked after this
    int poll_interval_s = 5;                // checkAfter in pollRep while a request awaits approval
    int64_t pending_timeout_s = 7 * 86400;  // an in-memory polling session is dropped after this
    // Identity policy of /.well-known/cmp and /pkix/ (dNSName = the node identity only).
    IssuanceProfile default_profile;
    // /.well-known/cmp/p/<name>; a request to a name not here is refused (badRequest).  "henb"
    // (the 3GPP H(e)NB profile x2sec's node configuration points at) is built in with the
    // default identity policy; a configured [profiles.henb] replaces it.
    std::map<std::string, IssuanceProfile> profiles = {{"henb", henb_profile()}};
    static IssuanceProfile henb_profile() {
        IssuanceProfile p;
        p.name = "henb";
        return p;
    }
    // The profile a request path selects ("" = default); nullptr when unknown.
    const IssuanceProfile* find_profile(std::string_view name) const;
};

// What the caller (HTTP layer, tests) tells the server about one request.
struct RequestContext {
    std::string_view profile;  // from the path; "" = the default profile
    int64_t now = 0;           // unix seconds of the caller's clock: the server reads no clock
};

struct ServerConfig {
    pki::X509Ptr ca_cert;  // issuing CA
    pki::PkeyPtr ca_key;
    std::vector<pki::X509Ptr> ca_chain;  // issuing CA's issuers up to and including the operator root
    pki::X509Ptr ra_cert;                // CMP protection certificate (may be the CA itself)
    pki::PkeyPtr ra_key;
    std::vector<pki::X509Ptr> ra_chain;  // RA certificate's issuers (may repeat ca_chain)
    std::vector<pki::X509Ptr> vendor_roots;
    ServerPolicy policy;
    // A root CA key update to announce (genm rootCaCert -> genp rootCaKeyUpdate, RFC 9483
    // 4.3.2) to end entities trusting the old root (the one whose key signed newWithOld).
    std::optional<RootKeyUpdate> root_update;

    X509* operator_root() const;  // the self-signed end of ca_chain (or ca_cert)
    // Loads an operator CA directory written by `x2sec pki init-operator-ca` (ca.*, chain.pem,
    // ra.*) and vendor root files; a root key update from <dir>/root-update/newwithnew.crt,
    // newwithold.crt and (optional) oldwithnew.crt when newwithnew.crt exists (checked with
    // check_root_key_update).
    static Result<ServerConfig> from_ca_dir(const std::string& dir, const std::vector<std::string>& vendor_root_files);
};

class Server {
public:
    // The store must outlive the server.
    Server(ServerConfig cfg, Store& store);
    ~Server();
    Server(const Server&) = delete;
    Server& operator=(const Server&) = delete;

    // One DER PKIMessage in, one DER PKIMessage out.  An Error only when the input is not a
    // PKIMessage at all (the HTTP layer answers 400); every CMP-level failure is a response.
    // Thread-safe: transactions are independent.
    Result<Bytes> handle(BytesView request_der, const RequestContext& rc);

    // Current CRL of the issuing CA (DER) at `now`, regenerated when revocations changed.
    Result<Bytes> crl_der(int64_t now);
    // Revocation by the operator (CLI / tests), same bookkeeping as an rr.
    Status revoke(BytesView serial, int reason, int64_t now);
    Status revoke(BytesView serial, int reason);

    Counters& counters() { return m_counters; }
    // The configuration given at construction (its `policy` is the initial one).
    const ServerConfig& config() const;
    // The policy new transactions start under, and its replacement (a configuration reload):
    // transactions already open (certConf pending, held for approval in memory) finish under the
    // policy they started with; a request resumed from the store (approval) uses the current one.
    // Refused (nothing changed) when a profile or value is invalid.
    std::shared_ptr<const ServerPolicy> policy() const;
    Status set_policy(ServerPolicy p);
    size_t open_sessions() const;

    struct Impl;

private:
    std::unique_ptr<Impl> m_impl;
    Counters m_counters;
};

}  // namespace x2sec::cmp
