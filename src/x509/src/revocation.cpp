#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/http.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <pthread.h>
#include <sys/stat.h>

#include <csignal>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <condition_variable>
#include <ctime>
#include <deque>
#include <filesystem>
#include <map>
#include <mutex>
#include <optional>
#include <thread>
#include <x2sec/common/file.hpp>
#include <x2sec/common/log.hpp>
#include <x2sec/crypto/crypto.hpp>
#include <x2sec/crypto/ossl_ptr.hpp>
#include <x2sec/x509/ocsp.hpp>
#include <x2sec/x509/revocation.hpp>

namespace x2sec::x509 {

const char* to_string(CrlPolicy p) {
    return p == CrlPolicy::Hard ? "hard" : "soft";
}

Counters& revocation_counters() {
    static Counters c;
    return c;
}

namespace {

Error crl_error(VerifyFailure f, const std::string& detail) {
    return Error(ErrorDomain::Pki, static_cast<int>(f), std::string(to_string(f)) + ": " + detail);
}

int64_t real_now() {
    return static_cast<int64_t>(::time(nullptr));
}

std::string time_text(int64_t t) {
    std::time_t tt = static_cast<std::time_t>(t);
    std::tm tm{};
    gmtime_r(&tt, &tm);
    char buf[32];
    std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return buf;
}

int64_t asn1_unix(const ASN1_TIME* t) {
    std::tm tm{};
    if (t == nullptr || ASN1_TIME_to_tm(t, &tm) != 1) return 0;
    return static_cast<int64_t>(timegm(&tm));
}

// A URL from a certificate is attacker-influenced text: only plain http:// URLs of printable
// ASCII are fetched (RFC 5280 4.2.1.13: CRLs over HTTP are DER, no TLS needed: they are signed).
bool fetchable_url(std::string_view u) {
    if (u.size() < 8 || u.size() > 512 || u.substr(0, 7) != "http://") return false;
    for (char c : u)
        if (c <= 0x20 || c >= 0x7f) return false;
    return true;
}

}  // namespace

Result<Crl> fetch_crl_http(const std::string& url, int timeout_ms, size_t max_size) {
    if (!fetchable_url(url))
        return Error(ErrorDomain::Pki, static_cast<int>(VerifyFailure::CrlUnavailable),
                     "CRL URL '" + url + "' is not a plain http:// URL");
    const int timeout_s = std::max(1, (timeout_ms + 999) / 1000);
    ERR_clear_error();
    // proxy "" = no proxy (NULL would take http_proxy from the environment).
    crypto::OsslPtr<BIO, BIO_free_all> body(OSSL_HTTP_get(url.c_str(), "", nullptr, nullptr, nullptr, nullptr, nullptr,
                                                          0, nullptr, nullptr, 1 /* expect ASN.1 */, max_size,
                                                          timeout_s));
    if (!body) {
        std::string why = crypto::openssl_errors();
        return Error(ErrorDomain::Pki, static_cast<int>(VerifyFailure::CrlUnavailable),
                     "fetching CRL " + url + ": " + (why.empty() ? "no response" : why));
    }
    X509_CRL* c = d2i_X509_CRL_bio(body.get(), nullptr);
    if (c == nullptr) {
        ERR_clear_error();
        return Error(ErrorDomain::Pki, static_cast<int>(VerifyFailure::CrlUnavailable),
                     "fetching CRL " + url + ": the response is not a DER CRL");
    }
    return Crl::adopt(c);
}

struct RevocationChecker::Impl {
    RevocationConfig cfg;
    Counters counters;

    struct Source {
        std::string name;  // path or URL
        std::optional<Crl> crl;
        std::string error;      // last load / fetch error ("" after a success)
        int64_t loaded_at = 0;  // real time of the last successful load / fetch
        int64_t next_try = 0;   // URL: no fetch (nor wait) before this after a failure
        bool queued = false, in_flight = false, configured = false;
        uint64_t attempts = 0;
        // file identity at the last load
        int64_t mtime_ns = -1;
        int64_t size = -1;
        uint64_t ino = 0;
    };

    mutable std::mutex mu;
    std::condition_variable cv_work;  // queue or stop
    std::condition_variable cv_done;  // a fetch finished
    std::vector<Source> files;
    std::map<std::string, Source> urls;
    std::deque<std::string> queue;
    bool stop = false;
    std::thread thread;

    void count(std::string_view n) {
        counters.inc(n);
        revocation_counters().inc(n);
    }

    // OCSP answers by "issuer subject#serial", usable until valid_until.
    struct OcspCached {
        OcspAnswer answer;
        int64_t valid_until = 0;
    };
    std::map<std::string, OcspCached> ocsp_cache;  // guarded by mu
    enum class OcspOutcome { Decided, Fallback };
    OcspOutcome ocsp_check(const Certificate& cert, const Certificate& issuer, int64_t now, Verdict& v, Status& st);

    std::string cache_path(const std::string& url) const {
        Bytes h = crypto::digest(crypto::Hash::Sha256, as_bytes(url));
        h.resize(16);
        return (std::filesystem::path(cfg.cache_dir) / ("crl-" + to_hex(h) + ".der")).string();
    }

    // Loads or reloads one configured file if it changed; lock held.
    Status load_file(Source& s, bool force) {
        struct stat st {};
        if (::stat(s.name.c_str(), &st) != 0) {
            std::string e = "CRL file '" + s.name + "': " + std::strerror(errno);
            if (s.error != e) {
                log::get("x509")->warn("{} (keeping the CRL loaded before, if any)", e);
                count("x509.crl.load_failed");
            }
            s.error = e;
            return crl_error(VerifyFailure::CrlUnavailable, e);
        }
        const int64_t mt = int64_t(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
        if (!force && mt == s.mtime_ns && int64_t(st.st_size) == s.size && uint64_t(st.st_ino) == s.ino) return {};
        s.mtime_ns = mt;
        s.size = int64_t(st.st_size);
        s.ino = uint64_t(st.st_ino);
        auto c = Crl::load(s.name);
        if (!c) {
            // A file caught half-written by a non-atomic writer, or broken: the previous CRL
            // stays in force (dropping it would accept revoked certificates under soft policy).
            s.error = "CRL file '" + s.name + "': " + c.error().detail();
            log::get("x509")->warn("{} (keeping the CRL loaded before, if any)", s.error);
            count("x509.crl.load_failed");
            return crl_error(VerifyFailure::CrlUnavailable, s.error);
        }
        const bool had = s.crl.has_value();
        s.crl = std::move(*c);
        s.error.clear();
        s.loaded_at = real_now();
        if (had) {
            count("x509.crl.file_reloaded");
            log::get("x509")->info("reloaded CRL file '{}' (issuer '{}', next update {})", s.name, s.crl->issuer(),
                                   time_text(s.crl->next_update()));
        }
        return {};
    }

    Source& url_source(const std::string& url) {
        auto [it, inserted] = urls.try_emplace(url);
        if (inserted) {
            it->second.name = url;
            if (!cfg.cache_dir.empty()) {
                auto c = Crl::load(cache_path(url));
                if (c) {
                    it->second.crl = std::move(*c);
                    struct stat st {};
                    it->second.loaded_at = ::stat(cache_path(url).c_str(), &st) == 0 ? int64_t(st.st_mtime) : 0;
                    count("x509.crl.cache_loaded");
                }
            }
        }
        return it->second;
    }

    bool due(const Source& s, int64_t now) const {
        if (!s.crl) return true;
        const int64_t nu = s.crl->next_update();
        if (nu != 0 && nu <= now) return true;
        return s.loaded_at + cfg.refresh_s <= now;
    }

    // Queues a fetch of the URL if it is due and allowed; lock held.
    void schedule(Source& s, bool force) {
        const int64_t now = real_now();
        if (s.queued || s.in_flight) return;
        if (!force && (now < s.next_try || !due(s, now))) return;
        s.queued = true;
        queue.push_back(s.name);
        cv_work.notify_all();
    }

    // Runs one queued fetch; called without the lock.
    void fetch_one(const std::string& url) {
        auto r = fetch_crl_http(url, cfg.fetch_timeout_ms, cfg.max_crl_size);
        if (r && !cfg.cache_dir.empty()) {
            std::error_code ec;
            std::filesystem::create_directories(cfg.cache_dir, ec);
            auto st = write_file_atomic(cache_path(url), BytesView(r->der()));
            if (!st) log::get("x509")->warn("CRL cache: {}", st.error().detail());
        }
        std::lock_guard lk(mu);
        Source& s = urls[url];
        s.in_flight = false;
        ++s.attempts;
        const int64_t now = real_now();
        if (r) {
            count("x509.crl.fetch_ok");
            s.crl = std::move(*r);
            s.error.clear();
            s.loaded_at = now;
            const int64_t nu = s.crl->next_update();
            // The server still hands out a CRL past its nextUpdate: do not ask again at once.
            s.next_try = nu != 0 && nu <= now ? now + cfg.retry_s : 0;
            log::get("x509")->debug("fetched CRL {} (issuer '{}', next update {})", url, s.crl->issuer(),
                                    time_text(nu));
        } else {
            count("x509.crl.fetch_failed");
            s.error = r.error().detail();
            s.next_try = now + cfg.retry_s;
            log::get("x509")->warn("{} (next try in {} s)", s.error, cfg.retry_s);
        }
        cv_done.notify_all();
    }

    // Takes the next queued URL (lock held by lk) and fetches it with the lock released.
    void run_queued(std::unique_lock<std::mutex>& lk) {
        std::string url = queue.front();
        queue.pop_front();
        Source& s = urls[url];
        s.queued = false;
        s.in_flight = true;
        lk.unlock();
        fetch_one(url);
        lk.lock();
    }

    void poll_locked() {
        for (auto& f : files) (void)load_file(f, false);
        for (auto& [u, s] : urls) schedule(s, false);
    }

    void worker() {
        // Signals are for the daemon's own handlers (signalfd, sigwait), never this thread.
        sigset_t all;
        sigfillset(&all);
        pthread_sigmask(SIG_BLOCK, &all, nullptr);
        std::unique_lock lk(mu);
        auto next_poll = std::chrono::steady_clock::now();
        while (!stop) {
            if (!queue.empty()) {
                run_queued(lk);
                continue;
            }
            if (std::chrono::steady_clock::now() >= next_poll) {
                poll_locked();
                next_poll = std::chrono::steady_clock::now() + std::chrono::seconds(1);
                continue;
            }
            cv_work.wait_until(lk, next_poll, [&] { return stop || !queue.empty(); });
        }
    }

    // Inline mode (no thread): run what is queued now.
    void drain(std::unique_lock<std::mutex>& lk) {
        while (!queue.empty()) run_queued(lk);
    }
};

RevocationChecker::RevocationChecker(RevocationConfig cfg) : m_impl(std::make_unique<Impl>()) {
    m_impl->cfg = std::move(cfg);
}

RevocationChecker::~RevocationChecker() {
    {
        std::lock_guard lk(m_impl->mu);
        m_impl->stop = true;
    }
    m_impl->cv_work.notify_all();
    if (m_impl->thread.joinable()) m_impl->thread.join();
}

const RevocationConfig& RevocationChecker::config() const {
    return m_impl->cfg;
}
const Counters& RevocationChecker::counters() const {
    return m_impl->counters;
}

Status RevocationChecker::start() {
    auto& im = *m_impl;
    Status first;
    {
        std::lock_guard lk(im.mu);
        for (const auto& f : im.cfg.crl_files) {
            Impl::Source s;
            s.name = f;
            s.configured = true;
            auto st = im.load_file(s, true);
            if (!st && first) first = st;
            im.files.push_back(std::move(s));
        }
        for (const auto& u : im.cfg.crl_urls) {
            if (!fetchable_url(u) && first)
                first = crl_error(VerifyFailure::CrlUnavailable, "CRL URL '" + u + "' is not a plain http:// URL");
            auto& s = im.url_source(u);
            s.configured = true;
            im.schedule(s, true);
        }
        if (im.cfg.background && !im.thread.joinable()) im.thread = std::thread([&im] { im.worker(); });
    }
    if (!im.cfg.background) {
        std::unique_lock lk(im.mu);
        im.drain(lk);
    }
    return first;
}

Status RevocationChecker::reload() const {
    auto& im = *m_impl;
    std::unique_lock lk(im.mu);
    Status first;
    for (auto& f : im.files) {
        auto st = im.load_file(f, false);
        if (!st && first) first = st;
    }
    for (auto& [u, s] : im.urls) im.schedule(s, true);
    im.count("x509.crl.reload");
    if (!im.cfg.background) im.drain(lk);
    return first;
}

void RevocationChecker::prefetch(const std::vector<std::string>& urls) const {
    auto& im = *m_impl;
    std::unique_lock lk(im.mu);
    for (const auto& u : urls)
        if (fetchable_url(u)) im.schedule(im.url_source(u), false);
    if (!im.cfg.background) im.drain(lk);
}

void RevocationChecker::poll() const {
    auto& im = *m_impl;
    std::unique_lock lk(im.mu);
    im.poll_locked();
    if (!im.cfg.background) im.drain(lk);
}

bool RevocationChecker::wait_idle(int timeout_ms) const {
    auto& im = *m_impl;
    std::unique_lock lk(im.mu);
    auto busy = [&] {
        if (!im.queue.empty()) return true;
        for (const auto& [u, s] : im.urls)
            if (s.in_flight) return true;
        return false;
    };
    return im.cv_done.wait_for(lk, std::chrono::milliseconds(timeout_ms), [&] { return !busy(); });
}

const char* to_string(RevocationMethod m) {
    switch (m) {
        case RevocationMethod::Crl:
            return "crl";
        case RevocationMethod::Ocsp:
            return "ocsp";
        case RevocationMethod::OcspThenCrl:
            return "ocsp-then-crl";
    }
    return "?";
}

// OCSP for one certificate (RevocationMethod Ocsp / OcspThenCrl): Decided with `st` set when the
// answer settles it (good, revoked, or per policy), Fallback when the CRL sources decide.
RevocationChecker::Impl::OcspOutcome RevocationChecker::Impl::ocsp_check(const Certificate& cert,
                                                                         const Certificate& issuer, int64_t now,
                                                                         Verdict& v, Status& st) {
    const std::string url = ocsp_url(cert);
    if (url.empty()) {
        count("x509.ocsp.no_url");
        return OcspOutcome::Fallback;
    }
    const std::string key = issuer.subject() + "#" + cert.serial_hex();
    std::optional<OcspAnswer> answer;
    {
        std::lock_guard lk(mu);
        auto it = ocsp_cache.find(key);
        if (it != ocsp_cache.end() && now < it->second.valid_until) {
            answer = it->second.answer;
            count("x509.ocsp.cache_hit");
        }
    }
    std::string why;
    if (!answer) {
        OcspOptions o;
        o.timeout_ms = cfg.fetch_timeout_ms;
        o.nonce = o.require_nonce = cfg.ocsp_nonce;
        o.max_age_s = cfg.ocsp_max_age_s;
        auto r = ocsp_lookup(cert, issuer, url, o, now);
        if (r) {
            answer = std::move(*r);
            answer->response_der.clear();
            if (answer->next_update > now) {
                std::lock_guard lk(mu);
                ocsp_cache[key] = {*answer, std::min(answer->next_update, now + cfg.refresh_s)};
            }
        } else {
            why = r.error().detail();
        }
    }
    const std::string name = "certificate '" + cert.subject() + "' (serial " + cert.serial_hex() + ")";
    if (answer && answer->status == OcspStatus::Good) {
        count("x509.ocsp.good");
        return OcspOutcome::Decided;
    }
    if (answer && answer->status == OcspStatus::Revoked) {
        count("x509.ocsp.revoked");
        v = Verdict::Revoked;
        st = crl_error(VerifyFailure::Revoked,
                       name + " revoked at " + time_text(answer->revoked_at) +
                           (answer->reason >= 0 ? ", reason " + std::to_string(answer->reason) : std::string()) +
                           " per the OCSP responder " + url);
        return OcspOutcome::Decided;
    }
    if (answer) {
        count("x509.ocsp.unknown");
        why = "the responder " + url + " does not know it (status unknown)";
    } else {
        count("x509.ocsp.unavailable");
    }
    if (cfg.method == RevocationMethod::OcspThenCrl) return OcspOutcome::Fallback;
    const std::string what = name + ": no OCSP answer: " + why;
    if (cfg.policy == CrlPolicy::Hard) {
        v = Verdict::Unavailable;
        st = crl_error(VerifyFailure::CrlUnavailable, what);
        return OcspOutcome::Decided;
    }
    count("x509.ocsp.soft_accepted");
    log::get("x509")->warn("{} (accepted: crl_policy = soft)", what);
    return OcspOutcome::Decided;
}

Status RevocationChecker::check(const std::vector<Certificate>& chain, int64_t now, Verdict* verdict) const {
    auto& im = *m_impl;
    Verdict ignored;
    Verdict& v = verdict ? *verdict : ignored;
    v = Verdict::Good;
    for (size_t i = 0; i + 1 < chain.size(); ++i) {
        const Certificate& cert = chain[i];
        const Certificate& issuer = chain[i + 1];
        const X509_NAME* issuer_name = X509_get_issuer_name(cert.get());
        auto cert_name = [&] { return "certificate '" + cert.subject() + "' (serial " + cert.serial_hex() + ")"; };
        if (im.cfg.method != RevocationMethod::Crl) {
            Status st;
            if (im.ocsp_check(cert, issuer, now, v, st) == Impl::OcspOutcome::Decided) {
                if (!st) return st;
                continue;
            }
        }

        // The sources that apply, and their CRLs (copied: used without the lock).
        struct Candidate {
            std::string source;
            std::optional<Crl> crl;
            std::string error;
        };
        std::vector<Candidate> cands;
        {
            std::unique_lock lk(im.mu);
            for (const auto& f : im.files)
                if (f.crl && X509_NAME_cmp(X509_CRL_get_issuer(f.crl->get()), issuer_name) == 0)
                    cands.push_back({"file '" + f.name + "'", f.crl, {}});
            std::vector<std::string> wanted;
            if (im.cfg.fetch_distribution_points)
                for (const auto& u : cert.crl_distribution_points())
                    if (fetchable_url(u) && std::find(wanted.begin(), wanted.end(), u) == wanted.end())
                        wanted.push_back(u);
            const size_t n_dp = wanted.size();
            for (const auto& u : im.cfg.crl_urls)
                if (std::find(wanted.begin(), wanted.end(), u) == wanted.end()) wanted.push_back(u);
            std::vector<Impl::Source*> srcs;
            for (const auto& u : wanted) {
                Impl::Source& s = im.url_source(u);
                im.schedule(s, false);
                srcs.push_back(&s);
            }
            auto usable_now = [&](const Impl::Source& s) {
                return s.crl && (s.crl->next_update() == 0 || s.crl->next_update() > now);
            };
            if (!im.cfg.background)
                im.drain(lk);
            else if (im.cfg.max_wait_ms > 0) {
                // Wait (bounded) only for URLs that have nothing fresh to offer and are being fetched.
                auto pending = [&] {
                    for (auto* s : srcs)
                        if (!usable_now(*s) && (s->queued || s->in_flight)) return true;
                    return false;
                };
                if (pending()) {
                    im.count("x509.crl.wait");
                    im.cv_done.wait_for(lk, std::chrono::milliseconds(im.cfg.max_wait_ms), [&] { return !pending(); });
                }
            }
            for (size_t k = 0; k < srcs.size(); ++k) {
                const Impl::Source* s = srcs[k];
                if (s->crl) {
                    // A configured URL that is not one of this certificate's distribution points
                    // applies only to the issuer that signs its CRL.
                    if (k < n_dp || X509_NAME_cmp(X509_CRL_get_issuer(s->crl->get()), issuer_name) == 0)
                        cands.push_back({"URL " + s->name, s->crl, s->error});
                } else {
                    cands.push_back(
                        {"URL " + s->name, std::nullopt, s->error.empty() ? std::string("not fetched yet") : s->error});
                }
            }
        }
        if (cands.empty()) {
            if (im.cfg.require) {
                im.count("x509.crl.unavailable");
                v = Verdict::Unavailable;
                return crl_error(VerifyFailure::CrlUnavailable,
                                 cert_name() + ": no CRL configured or named for issuer '" + cert.issuer() + "'");
            }
            im.count("x509.crl.no_source");
            continue;
        }

        bool fresh = false, stale = false;
        std::string problems;
        auto note = [&problems](const std::string& p) { problems += (problems.empty() ? "" : "; ") + p; };
        EVP_PKEY* issuer_key = issuer.public_key();
        for (const auto& c : cands) {
            if (!c.crl) {
                note(c.source + ": " + c.error);
                continue;
            }
            X509_CRL* crl = c.crl->get();
            if (X509_NAME_cmp(X509_CRL_get_issuer(crl), issuer_name) != 0) {
                im.count("x509.crl.issuer_mismatch");
                note(c.source + ": CRL issued by '" + c.crl->issuer() + "', not by '" + cert.issuer() + "'");
                continue;
            }
            if (issuer_key == nullptr || X509_CRL_verify(crl, issuer_key) != 1) {
                ERR_clear_error();
                im.count("x509.crl.bad_signature");
                note(c.source + ": CRL signature does not verify with the key of '" + issuer.subject() + "'");
                continue;
            }
            const int64_t this_update = asn1_unix(X509_CRL_get0_lastUpdate(crl));
            if (this_update > now) {
                note(c.source + ": CRL thisUpdate " + time_text(this_update) + " is in the future");
                continue;
            }
            X509_REVOKED* rev = nullptr;
            if (X509_CRL_get0_by_cert(crl, &rev, cert.get()) == 1) {
                im.count("x509.crl.revoked_peer");
                v = Verdict::Revoked;
                std::string reason;
                if (auto* e = static_cast<ASN1_ENUMERATED*>(
                        X509_REVOKED_get_ext_d2i(rev, NID_crl_reason, nullptr, nullptr))) {
                    reason = ", reason " + std::to_string(ASN1_ENUMERATED_get(e));
                    ASN1_ENUMERATED_free(e);
                }
                return crl_error(VerifyFailure::Revoked,
                                 cert_name() + " revoked at " +
                                     time_text(asn1_unix(X509_REVOKED_get0_revocationDate(rev))) + reason +
                                     " per the CRL from " + c.source);
            }
            const int64_t nu = c.crl->next_update();
            if (nu == 0 || nu > now)
                fresh = true;
            else {
                stale = true;
                note(c.source + ": CRL is stale (nextUpdate " + time_text(nu) + " has passed)");
            }
        }
        if (fresh) {
            im.count("x509.crl.checked");
            continue;
        }
        im.count(stale ? "x509.crl.stale" : "x509.crl.unavailable");
        const std::string what = cert_name() + ": no current CRL of issuer '" + cert.issuer() + "': " + problems;
        if (im.cfg.policy == CrlPolicy::Hard) {
            v = stale ? Verdict::Stale : Verdict::Unavailable;
            return crl_error(VerifyFailure::CrlUnavailable, what);
        }
        im.count("x509.crl.soft_accepted");
        log::get("x509")->warn("{} (accepted: crl_policy = soft)", what);
    }
    return {};
}

}  // namespace x2sec::x509
