// x2sec::x509::OcspStapler — the OCSP responses about our own certificates that IKEv2 staples
// (RFC 4806 CERT encoding 14), fetched from the responder named in each certificate's
// authorityInfoAccess (id-ad-ocsp) by a background thread, cached, and refreshed before their
// nextUpdate.  The IKE loop only reads the cache (current()): it never waits for a fetch.
// The thread runs only after start(): the daemon's runtime calls it (IkeRuntime::create), so
// that loading a configuration (`ike check-config`, tests) fetches nothing and leaves no thread
// to wait for.  The destructor abandons a fetch in flight (OcspCancel: its connection is shut
// down) instead of waiting for the fetch timeout.
//
// Fetching: ocsp_lookup (ocsp.hpp) without a nonce (the response is replayed to every peer
// that asks, RFC 5019 style), verified against the certificate's issuer like any look-up.  A
// `good`, `revoked` or `unknown` answer is cached as it is: the peer decides.
// Schedule, per certificate: first fetch when added; after a success at time t, the next at
// the halfway point between thisUpdate and nextUpdate, at most refresh_s after t (no
// nextUpdate: t + refresh_s, and the response counts as current until then); after a failure,
// retry_s later, keeping the previous response while it is current (nextUpdate not passed).
// Counters (here and in revocation_counters()): x509.ocsp.staple_fetch_ok,
// x509.ocsp.staple_fetch_failed, x509.ocsp.staple_refreshed (a response replaced by a newer
// one), x509.ocsp.staple_kept (a failed refresh while the previous response is still current),
// x509.ocsp.staple_expired (the cached response passed its nextUpdate unreplaced).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <x2sec/common/counters.hpp>
#include <x2sec/common/result.hpp>
#include <x2sec/x509/ocsp.hpp>

namespace x2sec::x509 {

struct OcspStaplerConfig {
    int fetch_timeout_ms = 5000;  // one POST (whole seconds, >= 1 s)
    size_t max_size = 64 * 1024;
    int64_t refresh_s = 3600;  // refetch at least this often
    int64_t retry_s = 30;      // after a failed fetch
    int64_t max_skew_s = 300;
    bool background = true;  // false: no thread; poll() runs the due fetches (tests)
    // Wall clock for the schedule and the checks of fetched responses (tests); default time().
    std::function<int64_t()> unix_time;
};

struct OcspStaple {
    Bytes der;          // the whole OCSPResponse
    OcspAnswer answer;  // as verified when fetched
    int64_t fetched_at = 0;
    int64_t valid_until = 0;  // nextUpdate, or fetched_at + refresh_s without one
};

class OcspStapler {
public:
    explicit OcspStapler(OcspStaplerConfig cfg = {});
    ~OcspStapler();
    OcspStapler(const OcspStapler&) = delete;
    OcspStapler& operator=(const OcspStapler&) = delete;

    // Starts the background thread (cfg.background; nothing otherwise): the certificates added
    // so far and later ones are fetched from now on.  Calling it again changes nothing.
    void start();
    bool started() const;  // the thread runs

    // Registers one of our certificates (issued by `issuer`) and queues its first fetch.
    // url "": the certificate's http:// id-ad-ocsp URL; an error (naming the certificate) when
    // it has none.  Adding a certificate again changes nothing.
    Status add(const Certificate& cert, const Certificate& issuer, std::string url = {});
    // The cached response for `cert` when one is current at `now` (now <= valid_until + max
    // skew); never blocks.  nullopt: none yet, or it expired (last_error() says why).
    std::optional<OcspStaple> current(const Certificate& cert, int64_t now) const;
    // Why there is no current response: the last fetch error, "not fetched yet", or "" when
    // the certificate is not registered.
    std::string last_error(const Certificate& cert) const;
    bool has(const Certificate& cert) const;

    // Runs the fetches that are due now (inline mode; the thread does this by itself).
    void poll();
    // Waits until no fetch is due or running (tests), at most timeout_ms; true if idle.
    bool wait_idle(int timeout_ms) const;
    const Counters& counters() const;

    struct Impl;

private:
    std::unique_ptr<Impl> m_impl;
};

}  // namespace x2sec::x509
