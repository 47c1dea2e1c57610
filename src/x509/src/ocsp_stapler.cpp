// OcspStapler, see ocsp_stapler.hpp.
#include <pthread.h>
#include <csignal>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <ctime>
#include <map>
#include <mutex>
#include <thread>
#include <x2sec/common/log.hpp>
#include <x2sec/x509/ocsp_stapler.hpp>
#include <x2sec/x509/revocation.hpp>

namespace x2sec::x509 {

struct OcspStapler::Impl {
    OcspStaplerConfig cfg;
    Counters counters;

    struct Entry {
        Certificate cert, issuer;
        std::string url;
        std::optional<OcspStaple> staple;
        std::string error = "not fetched yet";
        int64_t next_fetch = 0;
        bool in_flight = false;
    };

    mutable std::mutex mu;
    std::condition_variable cv_work;          // a certificate added, or stop
    mutable std::condition_variable cv_done;  // a fetch finished
    std::map<Bytes, Entry> entries;           // by certificate DER
    bool stop = false;
    bool kicked = false;  // add(): look at the schedule again
    OcspCancel cancel;    // the destructor abandons the fetch in flight
    std::thread thread;

    int64_t now() const { return cfg.unix_time ? cfg.unix_time() : static_cast<int64_t>(::time(nullptr)); }

    void count(std::string_view n) {
        counters.inc(n);
        revocation_counters().inc(n);
    }

    bool due(const Entry& e, int64_t t) const { return !e.in_flight && e.next_fetch <= t; }

    // When to fetch again after a response fetched at `t`.
    int64_t next_after_success(const OcspAnswer& a, int64_t t) const {
        int64_t next = t + cfg.refresh_s;
        if (a.next_update > 0) {
            const int64_t half = a.this_update + (a.next_update - a.this_update) / 2;
            // Past halfway already (a responder handing out old responses): not in a tight loop.
            next = std::min(next, half > t ? half : t + std::clamp<int64_t>((a.next_update - t) / 2, 1, cfg.retry_s));
        }
        return std::max(next, t + 1);
    }

    // One fetch for `key`, called with `lk` held; releases it while the HTTP exchange runs.
    void fetch(std::unique_lock<std::mutex>& lk, const Bytes& key) {
        auto it = entries.find(key);
        if (it == entries.end()) return;
        it->second.in_flight = true;
        const Certificate cert = it->second.cert, issuer = it->second.issuer;
        const std::string url = it->second.url;
        lk.unlock();
        OcspOptions o;
        o.timeout_ms = cfg.fetch_timeout_ms;
        o.max_size = cfg.max_size;
        o.nonce = o.require_nonce = false;
        o.max_skew_s = cfg.max_skew_s;
        o.cancel = &cancel;
        const int64_t t = now();
        auto r = ocsp_lookup(cert, issuer, url, o, t);
        lk.lock();
        it = entries.find(key);
        if (it == entries.end()) return;
        Entry& e = it->second;
        e.in_flight = false;
        if (stop) {  // abandoned by the destructor: nothing to count or log
            cv_done.notify_all();
            return;
        }
        auto lg = log::get("x509");
        if (r.ok()) {
            count("x509.ocsp.staple_fetch_ok");
            if (e.staple) count("x509.ocsp.staple_refreshed");
            OcspStaple s;
            s.der = r->response_der;
            s.answer = std::move(r).value();
            s.fetched_at = t;
            s.valid_until = s.answer.next_update > 0 ? s.answer.next_update : t + cfg.refresh_s;
            e.next_fetch = next_after_success(s.answer, t);
            lg->info(
                "OCSP response for our certificate '{}' (serial {}) from {}: {}, valid until {}; next fetch in {} s",
                cert.subject(), cert.serial_hex(), url, to_string(s.answer.status), s.valid_until, e.next_fetch - t);
            e.staple = std::move(s);
            e.error.clear();
        } else {
            count("x509.ocsp.staple_fetch_failed");
            e.error = r.error().detail();
            e.next_fetch = t + std::max<int64_t>(1, cfg.retry_s);
            if (e.staple && t <= e.staple->valid_until + cfg.max_skew_s) {
                count("x509.ocsp.staple_kept");
                lg->warn(
                    "OCSP response for our certificate '{}': {}; keeping the previous one (valid until {}), "
                    "retry in {} s (x509.ocsp.staple_fetch_failed)",
                    cert.subject(), e.error, e.staple->valid_until, e.next_fetch - t);
            } else {
                if (e.staple) {
                    count("x509.ocsp.staple_expired");
                    e.staple.reset();
                }
                lg->warn("no OCSP response for our certificate '{}': {}; retry in {} s (x509.ocsp.staple_fetch_failed)",
                         cert.subject(), e.error, e.next_fetch - t);
            }
        }
        cv_done.notify_all();
    }

    // Runs every fetch that is due at the time of the call.
    void run_due(std::unique_lock<std::mutex>& lk) {
        const int64_t t = now();
        std::vector<Bytes> keys;
        for (const auto& [k, e] : entries)
            if (due(e, t)) keys.push_back(k);
        for (const auto& k : keys)
            if (!stop) fetch(lk, k);
    }

    void worker() {
        // Signals are for the daemon's own handlers (signalfd, sigwait), never this thread.
        sigset_t all;
        sigfillset(&all);
        pthread_sigmask(SIG_BLOCK, &all, nullptr);
        std::unique_lock lk(mu);
        while (!stop) {
            run_due(lk);
            if (stop) break;
            const int64_t t = now();
            int64_t wake = t + 1;  // at least once a second: the wall clock may jump
            for (const auto& [k, e] : entries) wake = std::min(wake, e.next_fetch);
            if (wake <= t) continue;
            cv_work.wait_for(lk, std::chrono::seconds(wake - t), [&] { return stop || kicked; });
            kicked = false;
        }
    }
};

OcspStapler::OcspStapler(OcspStaplerConfig cfg) : m_impl(std::make_unique<Impl>()) {
    m_impl->cfg = std::move(cfg);
}

OcspStapler::~OcspStapler() {
    {
        std::lock_guard lk(m_impl->mu);
        m_impl->stop = true;
    }
    m_impl->cancel.cancel();  // a fetch in flight fails now, not at its timeout
    m_impl->cv_work.notify_all();
    if (m_impl->thread.joinable()) m_impl->thread.join();
}

Status OcspStapler::add(const Certificate& cert, const Certificate& issuer, std::string url) {
    if (url.empty()) url = ocsp_url(cert);
    if (url.empty())
        return Error(ErrorDomain::Pki, static_cast<int>(VerifyFailure::CrlUnavailable),
                     "certificate '" + cert.subject() + "' has no http:// OCSP URL (authorityInfoAccess id-ad-ocsp)");
    auto& im = *m_impl;
    {
        std::lock_guard lk(im.mu);
        Bytes key = cert.der();
        if (im.entries.count(key) != 0) return {};
        Impl::Entry e{cert, issuer, std::move(url), std::nullopt, "not fetched yet", 0, false};
        im.entries.emplace(std::move(key), std::move(e));
        im.kicked = true;
    }
    im.cv_work.notify_all();
    return {};
}

void OcspStapler::start() {
    auto& im = *m_impl;
    std::lock_guard lk(im.mu);
    if (im.cfg.background && !im.thread.joinable() && !im.stop) im.thread = std::thread([&im] { im.worker(); });
}

bool OcspStapler::started() const {
    auto& im = *m_impl;
    std::lock_guard lk(im.mu);
    return im.thread.joinable();
}

std::optional<OcspStaple> OcspStapler::current(const Certificate& cert, int64_t now) const {
    auto& im = *m_impl;
    std::lock_guard lk(im.mu);
    auto it = im.entries.find(cert.der());
    if (it == im.entries.end() || !it->second.staple) return std::nullopt;
    const OcspStaple& s = *it->second.staple;
    if (now > s.valid_until + im.cfg.max_skew_s || s.answer.this_update > now + im.cfg.max_skew_s) return std::nullopt;
    return s;
}

std::string OcspStapler::last_error(const Certificate& cert) const {
    auto& im = *m_impl;
    std::lock_guard lk(im.mu);
    auto it = im.entries.find(cert.der());
    if (it == im.entries.end()) return "";
    if (it->second.error.empty() && it->second.staple)
        return "the cached response (valid until " + std::to_string(it->second.staple->valid_until) + ") expired";
    return it->second.error;
}

bool OcspStapler::has(const Certificate& cert) const {
    auto& im = *m_impl;
    std::lock_guard lk(im.mu);
    return im.entries.count(cert.der()) != 0;
}

void OcspStapler::poll() {
    auto& im = *m_impl;
    std::unique_lock lk(im.mu);
    im.run_due(lk);
}

bool OcspStapler::wait_idle(int timeout_ms) const {
    auto& im = *m_impl;
    std::unique_lock lk(im.mu);
    auto busy = [&] {
        const int64_t t = im.now();
        for (const auto& [k, e] : im.entries)
            if (e.in_flight || e.next_fetch <= t) return true;
        return false;
    };
    return im.cv_done.wait_for(lk, std::chrono::milliseconds(timeout_ms), [&] { return !busy(); });
}

const Counters& OcspStapler::counters() const {
    return m_impl->counters;
}

}  // namespace x2sec::x509
