// x2sec::x509::RevocationChecker — CRL-based revocation for TrustStore::verify (IKE daemon) and
// the KDS: CRLs from configured files (reloaded when they change) and fetched over HTTP from the
// certificates' cRLDistributionPoints or configured URLs (cached in memory and optionally in a
// directory, refetched at nextUpdate or after `refresh`).
//
// Which certificates are checked: every certificate of a verified chain but the anchor, when
// a CRL source applies to it: a configured CRL file of its issuer, an http:// distribution point
// in the certificate, or a configured CRL URL whose CRL its issuer signed.  A certificate
// without any source is accepted unchecked (counted `x509.crl.no_source`) unless `require`.
//
// A CRL is used only when the issuer certificate of the chain signed it (X509_CRL_verify) and
// its thisUpdate is not in the future.  Verdicts, in this order:
//   * the serial is listed in a usable CRL (fresh or stale)     -> Revoked (x509.crl.revoked_peer)
//   * a usable CRL is fresh (nextUpdate not passed)             -> accepted
//   * only stale CRLs (nextUpdate passed)                       -> x509.crl.stale, then per policy
//   * no usable CRL (fetch failed, unreachable, bad signature)  -> x509.crl.unavailable, per policy
// Policy hard: CrlUnavailable error naming the source; soft: accepted with a warning and
// x509.crl.soft_accepted.
//
// Blocking: fetches run on one background thread.  check() waits for a fetch (at most
// `max_wait_ms`) only when a URL has no usable CRL cached yet or its CRL is stale, and not
// again before `retry_s` after a failed fetch, so an unreachable CRL server costs one bounded
// wait per retry period, not one per authentication.  CRLs that are due (nextUpdate reached,
// or `refresh_s` since the fetch) are refetched in the background while the cached one is used.
// The background thread also checks the configured files once a second (mtime, size, inode).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>
#include <x2sec/common/counters.hpp>
#include <x2sec/common/result.hpp>
#include <x2sec/x509/x509.hpp>

namespace x2sec::x509 {

enum class CrlPolicy { Hard, Soft };
const char* to_string(CrlPolicy p);

// How a certificate's status is found: CRLs (as described above); OCSP (RFC 6960, x509/ocsp.hpp)
// at the responder of the certificate's authorityInfoAccess id-ad-ocsp URL; or OCSP first and
// the CRL sources when the responder gives no usable answer.  With Ocsp, a certificate without
// an OCSP URL is checked with its CRL sources; an `unknown` answer or an unreachable responder
// (x509.ocsp.unknown / x509.ocsp.unavailable) goes to `policy` (hard: CrlUnavailable; soft:
// accepted, x509.ocsp.soft_accepted).  Answers are cached per certificate until nextUpdate
// (at most refresh_s; without nextUpdate not cached).  A look-up blocks check() for at most
// fetch_timeout_ms.
enum class RevocationMethod { Crl, Ocsp, OcspThenCrl };
const char* to_string(RevocationMethod m);

struct RevocationConfig {
    std::vector<std::string> crl_files;     // PEM or DER, reloaded when they change
    std::vector<std::string> crl_urls;      // http:// URLs fetched for every chain (the KDS's RA/CA CRL)
    bool fetch_distribution_points = true;  // use the certificates' http:// cRLDistributionPoints
    bool require = false;                   // a certificate without any CRL source fails (CrlUnavailable)
    CrlPolicy policy = CrlPolicy::Hard;     // stale or unavailable CRL
    int fetch_timeout_ms = 5000;            // one HTTP GET, connect to last octet (whole seconds, >= 1 s)
    int max_wait_ms = 1000;                 // longest check() waits for a fetch (0: never waits)
    size_t max_crl_size = 1024 * 1024;      // larger responses are refused
    int64_t refresh_s = 3600;               // refetch a URL after this even before its nextUpdate
    int64_t retry_s = 30;                   // after a failed fetch, no new try (nor wait) before this
    std::string cache_dir;                  // "" = memory only; else one DER file per URL, written atomically
    bool background = true;                 // false: no thread (tests drive poll() / fetches inline)
    RevocationMethod method = RevocationMethod::Crl;
    bool ocsp_nonce = true;       // send a nonce and require it echoed
    int64_t ocsp_max_age_s = -1;  // refuse answers whose thisUpdate is older (-1: no limit)
};

// One HTTP/1.1 GET of a DER (or PEM) CRL, through OpenSSL's HTTP client (no proxy), bounded by
// timeout_ms and max_size.  Only http:// URLs.  Errors name the URL.
Result<Crl> fetch_crl_http(const std::string& url, int timeout_ms, size_t max_size);

class RevocationChecker {
public:
    explicit RevocationChecker(RevocationConfig cfg);
    ~RevocationChecker();
    RevocationChecker(const RevocationChecker&) = delete;
    RevocationChecker& operator=(const RevocationChecker&) = delete;

    // Loads the configured files (errors name the file; a file that cannot be loaded stays
    // without a CRL and is retried when it changes) and the cache directory, starts the thread.
    Status start();

    // chain: leaf first, anchor last (VerifiedChain::chain); now: unix seconds.  Errors:
    // ErrorDomain::Pki, code VerifyFailure::Revoked or CrlUnavailable, detail naming the
    // certificate, serial and CRL source.
    // `verdict` (optional) says why, for callers that count refusals by cause.
    enum class Verdict { Good, Revoked, Stale, Unavailable };
    Status check(const std::vector<Certificate>& chain, int64_t now, Verdict* verdict = nullptr) const;

    // Reloads every configured file that changed, and refetches every known URL now
    // (SIGHUP, control `reload-crls`).  Returns the first file error; the others are logged.
    Status reload() const;
    // Starts fetching these URLs (e.g. the distribution points of the daemon's own chain).
    void prefetch(const std::vector<std::string>& urls) const;
    // One pass of what the background thread does every second (file changes, due refetches).
    void poll() const;
    // Waits until no fetch is queued or running (tests), at most timeout_ms; true if idle.
    bool wait_idle(int timeout_ms) const;

    const RevocationConfig& config() const;
    // x509.crl.* counters of this checker (also added to revocation_counters()).
    const Counters& counters() const;

    struct Impl;

private:
    std::unique_ptr<Impl> m_impl;
};

// Process-wide sum of every checker's counters (for `x2sec ike counters`).
Counters& revocation_counters();

}  // namespace x2sec::x509
