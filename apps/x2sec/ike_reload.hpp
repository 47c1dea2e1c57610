// SIGHUP reload of an IKE daemon's configuration file, shared by `x2sec ike run` and
// `x2sec esp --ike-config`: the CRLs (CrlReloadOnHup) and then the peers (PeerReload).
#pragma once

#include <pthread.h>

#include <algorithm>
#include <atomic>
#include <csignal>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>
#include <x2sec/common/counters.hpp>
#include <x2sec/common/log.hpp>
#include <x2sec/config/engine_config.hpp>
#include <x2sec/runtime/ike_runtime.hpp>

namespace x2sec::app {

// The revocation checker the peers use now: the one of the configuration loaded at start, then
// the one of the last configuration a SIGHUP applied (its peers' trust stores ask it).
class CurrentRevocation {
public:
    explicit CurrentRevocation(std::shared_ptr<x2sec::x509::RevocationChecker> rc) : m_rc(std::move(rc)) {}
    std::shared_ptr<x2sec::x509::RevocationChecker> get() const {
        std::lock_guard lock(m_mutex);
        return m_rc;
    }
    void set(std::shared_ptr<x2sec::x509::RevocationChecker> rc) {
        std::lock_guard lock(m_mutex);
        m_rc = std::move(rc);
    }

private:
    mutable std::mutex m_mutex;
    std::shared_ptr<x2sec::x509::RevocationChecker> m_rc;
};

// SIGHUP reloads the CRLs (changed [[crl]] files now, every known CRL URL refetched).  SIGHUP
// is blocked in every thread (the caller blocks it before starting any) and taken here with
// sigwait; the destructor wakes the thread with a SIGHUP of its own.
class CrlReloadOnHup {
public:
    CrlReloadOnHup(std::shared_ptr<CurrentRevocation> rc, std::function<void()> on_hup)
        : m_rc(std::move(rc)), m_on_hup(std::move(on_hup)) {
        m_thread = std::thread([this] {
            sigset_t set;
            sigemptyset(&set);
            sigaddset(&set, SIGHUP);
            for (;;) {
                int sig = 0;
                if (sigwait(&set, &sig) != 0) continue;
                if (m_stop) return;
                if (auto checker = m_rc->get()) {
                    x2sec::log::get("runtime")->info("SIGHUP: reloading CRLs; SAs kept");
                    if (auto st = checker->reload(); !st)
                        x2sec::log::get("runtime")->warn("CRL reload: {}", st.error().detail());
                } else {
                    x2sec::log::get("runtime")->info("SIGHUP: revocation checking is off, no CRLs to reload; SAs kept");
                }
                if (m_on_hup) m_on_hup();
            }
        });
    }
    ~CrlReloadOnHup() {
        m_stop = true;
        pthread_kill(m_thread.native_handle(), SIGHUP);
        m_thread.join();
    }
    // SIGHUP (taken here) and SIGINT/SIGTERM (taken by the runtime's signalfd) blocked in the
    // calling thread, so in every thread it starts afterwards: a thread started with SIGTERM
    // unblocked would take it with the default action and end the daemon without deleting its SAs.
    static void block_daemon_signals() {
        sigset_t set;
        sigemptyset(&set);
        for (int sig : {SIGHUP, SIGINT, SIGTERM}) sigaddset(&set, sig);
        pthread_sigmask(SIG_BLOCK, &set, nullptr);
    }

private:
    std::shared_ptr<CurrentRevocation> m_rc;
    std::function<void()> m_on_hup;
    std::atomic<bool> m_stop{false};
    std::thread m_thread;
};

// SIGHUP, after the CRLs: the configuration file is loaded again and its peers applied with
// ike::Engine::update_peer on the runtime's loop; established SAs stay (new exchanges, rekeys
// and new SAs use the new settings).  A peer whose local endpoints changed, a new peer on an
// endpoint the daemon has no socket for, or a peer whose Child SA list lost or reordered an
// entry (a live Child SA refers to its entry) is left as it was, with a warning: those need a
// restart, as do removed peers and [runtime]/[engine] changes.  A file that does not load
// changes nothing.  [runtime] log_level is applied at once.  Counted
// runtime.reload.{ok,failed,peer_updated,peer_added,peer_skipped}.  Shared by `ike run` and
// `esp --ike-config`.
struct PeerReload {
    std::string path;
    std::vector<x2sec::ike::PeerConfig> running;  // only the SIGHUP thread touches it
    x2sec::runtime::IkeRuntime* rt = nullptr;
    x2sec::ike::Engine* engine = nullptr;  // used on the runtime's loop only
    x2sec::Counters* counters = nullptr;
    std::shared_ptr<CurrentRevocation> revocation;
    std::string log_level = "info";  // [runtime] log_level running (only the SIGHUP thread touches it)

    void operator()() {
        auto lg = x2sec::log::get("runtime");
        auto cfg = x2sec::config::load(path);
        if (!cfg) {
            counters->inc("runtime.reload.failed");
            lg->error("SIGHUP: {} not reloaded, the running peers stay: {}", path, cfg.error().detail());
            return;
        }
        if (cfg->runtime.log_level != log_level) {  // [runtime] log_level applies at once
            x2sec::log::set_level(cfg->runtime.log_level);
            lg->info("SIGHUP: log level {} -> {}", log_level, cfg->runtime.log_level);
            log_level = cfg->runtime.log_level;
        }
        auto bound = [&](const x2sec::ike::PeerConfig& p) {
            for (const auto& r : running)
                if (r.local_addr == p.local_addr && r.local_port == p.local_port &&
                    r.local_natt_port == p.local_natt_port)
                    return true;
            return false;
        };
        std::vector<x2sec::ike::PeerConfig> apply;
        for (const auto& p : cfg->engine.peers) {
            auto it = std::find_if(running.begin(), running.end(), [&](const auto& r) { return r.name == p.name; });
            std::string why;
            if (it == running.end()) {
                if (!bound(p)) why = "new peer on a local address/port without a socket";
            } else if (it->local_addr != p.local_addr || it->local_port != p.local_port ||
                       it->local_natt_port != p.local_natt_port) {
                why = "local address or ports changed";
            } else {
                if (p.children.size() < it->children.size()) why = "Child SA entries removed";
                for (size_t i = 0; why.empty() && i < it->children.size(); ++i)
                    if (p.children[i].name != it->children[i].name) why = "Child SA entries reordered or renamed";
            }
            if (!why.empty()) {
                counters->inc("runtime.reload.peer_skipped");
                lg->warn("SIGHUP: peer '{}' not changed ({}): restart the daemon to apply it", p.name, why);
                continue;
            }
            counters->inc(it == running.end() ? "runtime.reload.peer_added" : "runtime.reload.peer_updated");
            apply.push_back(p);
            if (it == running.end())
                running.push_back(p);
            else
                *it = p;
        }
        for (const auto& r : running)
            if (std::none_of(cfg->engine.peers.begin(), cfg->engine.peers.end(),
                             [&](const auto& p) { return p.name == r.name; }))
                lg->warn("SIGHUP: peer '{}' is no longer in {} but stays until a restart", r.name, path);
        auto* eng = engine;
        auto* cs = counters;
        const bool applied_any = !apply.empty();  // `apply` moves into the job below
        rt->post([eng, cs, apply = std::move(apply)](x2sec::runtime::EngineApi&, x2sec::Millis) {
            for (const auto& p : apply)
                if (auto st = eng->update_peer(p); !st) {
                    cs->inc("runtime.reload.failed");
                    x2sec::log::get("runtime")->error("SIGHUP: peer '{}': {}", p.name, st.error().detail());
                }
            x2sec::log::get("runtime")->info("SIGHUP: {} peer(s) applied; established SAs kept", apply.size());
        });
        // The applied peers' trust stores ask the new configuration's checker: CRL reloads
        // (SIGHUP, reload-crls) go to it from now on.
        if (applied_any) revocation->set(cfg->revocation);
        counters->inc("runtime.reload.ok");
    }
};

}  // namespace x2sec::app
