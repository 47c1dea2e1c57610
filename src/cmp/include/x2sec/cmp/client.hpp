// x2sec::cmp::Client — the H(e)NB side of TS 33.310 clause 9 on OpenSSL's CMP client
// (OSSL_CMP_CTX): `ir` authenticated with the vendor credential, `kur` renewal with the current
// operator credential, `rr` revocation.
//
//   cmp::EnrollRequest r;
//   r.server_url = "http://192.0.2.10:8080/.well-known/cmp";
//   r.auth_key = vendor_key; r.auth_cert = vendor_cert; r.auth_chain = {vendor_root};
//   r.new_key = fresh_key;   r.subject = "/O=Operator/CN=0023a1b2c3d4.henb.vendor-a.example";
//   r.dns = {"0023a1b2c3d4.henb.vendor-a.example"};
//   r.operator_roots = {provisioned_root};   // empty: 3GPP in-band rule (see below)
//   auto e = cmp::Client::enroll(r);          // Result<Enrolled>
//   cmp::install_credential("/var/lib/x2sec/op", fresh_key, *e);   // one atomic switch
//   ...
//   cmp::renew_if_due("/var/lib/x2sec/op", common, now);             // on a timer: kur when due
//
// Trust in the RA/CA: with operator_roots the responses must chain to one of them.  Without,
// the 3GPP rule applies (OSSL_CMP_OPT_PERMIT_TA_IN_EXTRACERTS_FOR_IR, RFC 4210 E.7): for the
// `ip` only, a self-signed certificate in extraCerts may serve as trust anchor provided it
// also validates the new certificate; it is then returned as Enrolled::operator_root and must
// be used (provisioned) for everything afterwards.  The new certificate is checked (key,
// identity, chain to that root) before certConf; a failed check sends a negative certConf.
#pragma once

#include <functional>
#include <string>
#include <string_view>
#include <vector>
#include <x2sec/common/bytes.hpp>
#include <x2sec/common/result.hpp>
#include <x2sec/pki/pki.hpp>

namespace x2sec::cmp {

// Message transport; default is HTTP(S) POST to server_url.  Tests plug a Server in here.
using Transfer = std::function<Result<Bytes>(BytesView request_der)>;

struct TlsOptions {
    std::vector<X509*> trust;     // roots for the server's TLS certificate (required for https)
    X509* client_cert = nullptr;  // optional TLS client authentication (key: a file key or a token key)
    EVP_PKEY* client_key = nullptr;
    std::vector<X509*> client_chain;  // intermediates sent after client_cert
};

struct ClientCommon {
    std::string server_url;  // http://host:port/path or https://...
    Transfer transfer;       // overrides server_url when set
    TlsOptions tls;
    int timeout_s = 30;
    std::vector<X509*> operator_roots;  // provisioned operator trust anchors
    Bytes transaction_id;               // fixed transactionID (tests, replays); empty: fresh random
    bool keep_alive = false;            // HTTP: one persistent connection for the transaction (ir + certConf)
};

struct EnrollRequest : ClientCommon {
    EVP_PKEY* auth_key = nullptr;   // vendor private key (signs the PKIMessages)
    X509* auth_cert = nullptr;      // vendor device certificate
    std::vector<X509*> auth_chain;  // vendor intermediates (+ root) for extraCerts
    EVP_PKEY* new_key = nullptr;    // key pair to certify (POP signs with it)
    std::string subject;            // "/O=Operator/CN=<identity>"; empty: none requested
    std::vector<std::string> dns;   // subjectAltName dNSNames (the node identity)
    bool implicit_confirm = false;  // ask for implicitConfirm (no certConf round trip)
};

struct RenewRequest : ClientCommon {
    EVP_PKEY* current_key = nullptr;  // current operator credential
    X509* current_cert = nullptr;
    std::vector<X509*> current_chain;
    EVP_PKEY* new_key = nullptr;
    bool implicit_confirm = false;
};

struct RevokeRequest : ClientCommon {
    EVP_PKEY* key = nullptr;
    X509* cert = nullptr;  // the certificate to revoke, also the signer
    std::vector<X509*> chain;
    int reason = 0;
};

struct Enrolled {
    pki::X509Ptr cert;
    std::vector<pki::X509Ptr> chain;  // issuing CA .. operator root
    pki::X509Ptr operator_root;       // the anchor the certificate was validated against
    std::vector<pki::X509Ptr> ca_pubs;
    std::vector<pki::X509Ptr> extra_certs;
};

class Client {
public:
    // Errors: ErrorDomain::Cmp with code = the PKIFailureInfo bit from the server when there
    // was one (-1 otherwise) and a detail quoting the server's status and OpenSSL's reason.
    static Result<Enrolled> enroll(const EnrollRequest& req);
    static Result<Enrolled> renew(const RenewRequest& req);
    static Status revoke(const RevokeRequest& req);
};

// ---------------------------------------------------------------- operator credential
// The operator credential (key + certificate chain + operator root) is installed as one unit:
//
//   <dir>/versions/<UTC time>-<serial>/operator.key (0600), operator.crt, operator-root.crt
//   <dir>/current -> versions/<...>          the only thing that changes, by rename(2)
//   <dir>/operator.key -> current/operator.key  (and .crt, -root.crt): compatibility names
//
// A new version is written and fsync'd completely in its own directory before `current` is
// switched to it with one atomic rename; a crash at any earlier point leaves `current` (the
// previous, consistent credential) untouched, and the half-written directory is removed by the
// next install.  The previous version is kept (rollback), older ones are zeroised and removed.
struct InstallOptions {
    // Test seam: called before each step ("version-dir", "key", "cert", "root", "switch",
    // "links", "prune"); a test may end the process there to simulate a crash.
    std::function<void(std::string_view step)> before_step;
};
Status install_credential(const std::string& dir, EVP_PKEY* key, const Enrolled& e, const InstallOptions& opt = {});

struct OperatorCredential {
    pki::PkeyPtr key;
    pki::X509Ptr cert;
    std::vector<pki::X509Ptr> chain;  // issuing CA(s), without the root
    pki::X509Ptr root;                // null when none was installed
    std::string version;              // versions/<...>, or "legacy" for the flat layout
};
// Reads <dir> as one unit: through `current` (resolved once, so a concurrent switch cannot mix
// versions), else the flat legacy files operator.key / operator.crt / operator-root.crt.
// Error when the key does not match the certificate.
Result<OperatorCredential> load_credential(const std::string& dir);

// ---------------------------------------------------------------- renewal before expiry
// When to renew: a number of days before notAfter, or a percentage of the lifetime left.
struct RenewalWindow {
    bool percent = true;
    double value = 20;  // default: renew once 80 % of the lifetime is used
};
// "30" or "30d" (days), "20%" (percent of the lifetime left).  Error on anything else.
Result<RenewalWindow> parse_renewal_window(std::string_view text);

struct RenewalCheck {
    bool due = false;      // inside the window (or expired)
    bool expired = false;  // past notAfter: kur is impossible, re-enrol with ir
    int64_t due_at = 0;    // when the window opens
    int64_t not_after = 0;
    std::string describe() const;  // "not due until 2027-09-01 12:00:00 UTC (...)" etc.
};
RenewalCheck renewal_check(X509* cert, int64_t unix_now, const RenewalWindow& w = {});
// True when now is past not_before + fraction * lifetime (default: 80 % of the lifetime used).
bool needs_renewal(X509* cert, int64_t unix_now, double fraction = 0.8);

// For the node agent's timer: reads the credential in dir; when it is inside the window, renews
// it with kur (fresh key of `alg`, the installed operator root as trust anchor unless
// common.operator_roots is set) and installs the result atomically.  An expired certificate
// is an Error (ErrorDomain::Pki): kur cannot authenticate with it.  next_check_at says when
// to call again.
struct RenewalOutcome {
    bool renewed = false;
    RenewalCheck check;     // of the certificate that was current before the call
    pki::X509Ptr new_cert;  // when renewed
    int64_t next_check_at = 0;
};
Result<RenewalOutcome> renew_if_due(const std::string& dir, const ClientCommon& common, int64_t unix_now,
                                    const RenewalWindow& w = {}, pki::KeyAlg alg = pki::KeyAlg::EcP256,
                                    bool implicit_confirm = false);

// "http://h:p/path" -> parts.  Error on anything else.
struct ServerUrl {
    bool tls = false;
    std::string host;
    int port = 80;
    std::string path = "/";
};
Result<ServerUrl> parse_server_url(const std::string& url);

}  // namespace x2sec::cmp
