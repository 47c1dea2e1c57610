// The load loop of `x2sec ike load` (see ike_load.hpp).
#include <fmt/format.h>
#include <sys/epoll.h>
#include <unistd.h>
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <ostream>
#include <sstream>
#include <unordered_map>
#include <x2sec/common/rng.hpp>
#include <x2sec/ikev2/wire.hpp>
#include <x2sec/loadgen/ike_load.hpp>
#include <x2sec/runtime/udp.hpp>

namespace x2sec::loadgen {

namespace {

// Child SA installs are counted, nothing is kept (no data plane in a load generator).
struct NullBackend final : ChildSaBackend {
    Status install(const ChildSaParams&) override { return {}; }
    Status remove(uint32_t) override { return {}; }
};

double process_cpu_seconds() {
    rusage ru{};
    ::getrusage(RUSAGE_SELF, &ru);
    return static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
           static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

Millis steady_ms() {
    using namespace std::chrono;
    return duration_cast<milliseconds>(steady_clock::now().time_since_epoch()).count();
}

// Inner addresses for the traffic selectors: initiator i is 10.x.y.z (i + 1), the responder
// side 10.255.255.254.
IpAddress inner_addr(size_t i) {
    uint32_t v = static_cast<uint32_t>(i + 1);
    return IpAddress::v4(10, static_cast<uint8_t>(v >> 16), static_cast<uint8_t>(v >> 8), static_cast<uint8_t>(v));
}
const IpAddress kResponderInner = IpAddress::v4(10, 255, 255, 254);

enum class Phase { Pending, Setup, RekeyChild, RekeyIke, Deleting, Done, Failed };

struct Setup {
    Phase phase = Phase::Pending;
    Millis started = 0;
    uint64_t sa = 0;
    uint32_t spi_in = 0;
    bool ike_up = false, child_up = false;
};

std::string auth_reason(int code) {
    switch (code) {
        case ike::auth_failure::PskMismatch:
            return "psk_mismatch";
        case ike::auth_failure::MethodMismatch:
            return "method_mismatch";
        case ike::auth_failure::PeerRejected:
            return "peer_rejected";
        case ike::auth_failure::NoCredentials:
            return "no_credentials";
        case ike::auth_failure::ProposalMismatch:
            return "proposal_mismatch";
        default:
            break;
    }
    if (code >= 1 && code < 100) return x509::to_string(static_cast<x509::VerifyFailure>(code));
    return std::to_string(code);
}

double percentile(const std::vector<double>& sorted, double q) {
    if (sorted.empty()) return 0;
    size_t rank = static_cast<size_t>(std::ceil(q * static_cast<double>(sorted.size())));
    return sorted[std::min(sorted.size() - 1, rank == 0 ? 0 : rank - 1)];
}

}  // namespace

Result<LoadReport> run_load(const LoadOptions& o) {
    if (o.count == 0) return Error("count must be at least 1");
    if (o.concurrency == 0) return Error("concurrency must be at least 1");
    if (o.count > (1u << 24) - 2) return Error("count must be below 2^24 (inner addresses 10.0.0.0/8)");
    if (o.auth == LoadAuth::Cert && (!o.certs || o.certs->initiators.size() < o.count))
        return Error("certificate authentication needs one certificate per initiator");
    if (o.auth == LoadAuth::Psk && o.psk_base.empty()) return Error("PSK authentication needs a base secret");
    X2SEC_TRY(auto ike_prop, ike::parse_ike_proposal(o.ike_proposal));
    X2SEC_TRY(auto esp_prop, ike::parse_child_proposal(o.esp_proposal));
    X2SEC_TRY(auto responder_id, ike::Identity::parse("fqdn:" + o.responder_id));

    // Sockets: ports_per_source ephemeral ports on every source address.
    std::vector<IpAddress> sources = o.sources;
    if (sources.empty()) sources.push_back(o.target.addr.v6 ? *IpAddress::parse("::1") : IpAddress::v4(127, 0, 0, 1));
    size_t per_source =
        std::max<size_t>(1, std::min<size_t>(o.ports_per_source, (o.count + sources.size() - 1) / sources.size()));
    std::vector<runtime::UdpSocket> sockets;
    std::unordered_map<std::string, size_t> socket_of;  // Endpoint::to_string() -> index
    for (size_t p = 0; p < per_source; ++p) {
        for (const auto& a : sources) {
            if (a.v6 != o.target.addr.v6)
                return Error("source " + a.to_string() + " is not of the target's address family");
            auto s = runtime::UdpSocket::bind({a, 0});
            if (!s) return Error("bind " + a.to_string() + ": " + s.error().detail());
            socket_of[s->local().to_string()] = sockets.size();
            sockets.push_back(std::move(*s));
        }
    }

    // One PeerConfig per initiator ("i<n>"), on socket n % sockets.
    ike::EngineConfig cfg;
    cfg.retransmit.timeout_ms = o.retransmit_timeout_ms;
    cfg.retransmit.tries = o.retransmit_tries;
    cfg.retransmit.jitter_percent = o.retransmit_jitter_percent;
    cfg.peers.reserve(o.count);
    for (size_t i = 0; i < o.count; ++i) {
        ike::PeerConfig p;
        p.name = "i" + std::to_string(i);
        const auto& local = sockets[i % sockets.size()].local();
        p.local_addr = local.addr;
        p.local_port = local.port;
        // NAT-T (RFC 7296 2.23, RFC 3948): when NAT is detected (or faked by the responder, as
        // strongSwan's kernel-libipsec does) the initiator floats to the responder's NAT-T port;
        // it keeps its own socket, so its "NAT-T port" is that socket's port.
        p.local_natt_port = local.port;
        p.remote_addr = o.target.addr;
        p.remote_port = o.target.port;
        p.remote_natt_port = o.target_natt_port;
        const std::string id = initiator_identity(i, o.realm);
        X2SEC_TRY(auto lid, ike::Identity::parse("fqdn:" + id));
        p.local_id = lid;
        p.remote_id = responder_id;
        p.remote_auth = ike::AuthMethod::Certificate;
        if (o.auth == LoadAuth::Cert) {
            const auto& c = o.certs->initiators[i];
            if (c.identity != id)
                return Error("certificate " + std::to_string(i) + " is for " + c.identity + ", not " + id);
            p.local_auth = ike::AuthMethod::Certificate;
            p.private_key = c.key;
            p.cert_chain = {c.cert};
            p.trust = o.certs->trust;
        } else {
            p.local_auth = p.remote_auth = ike::AuthMethod::Psk;
            p.psk = derive_psk(o.psk_base, id);
            p.send_certreq = false;
        }
        p.ike_proposals = {ike_prop};
        ike::ChildConfig child;
        child.name = "load";
        child.proposals = {esp_prop};
        child.local_ts = {TrafficSelector::from_prefix(inner_addr(i), 32)};
        child.remote_ts = {TrafficSelector::from_prefix(kResponderInner, 32)};
        child.rekey_seconds = 0;
        p.children = {child};
        p.ike_rekey_seconds = 0;
        p.dpd_interval_ms = 0;
        cfg.peers.push_back(std::move(p));
    }
    NullBackend backend;
    ike::Engine engine(std::move(cfg), backend, os_rng());

    LoadReport rep;
    std::vector<Setup> setups(o.count);
    std::vector<double> latencies;
    latencies.reserve(o.count);
    size_t next = 0, in_flight = 0, send_errors = 0, natt_sent = 0, natt_not_ike = 0;
    const Millis t0 = steady_ms();
    const double cpu0 = process_cpu_seconds();
    const Millis bound = t0 + static_cast<Millis>(o.duration_s * 1000);
    Millis hold_until = 0;  // set when every setup has finished
    Millis first_start = 0, last_done = 0, next_progress = t0;

    auto note = [](std::map<std::string, LoadReport::Reason>& m, const std::string& reason, const std::string& detail) {
        auto& r = m[reason];
        if (r.count++ == 0) r.example = detail;
    };
    auto finish = [&](Setup& s, Phase ph) {
        s.phase = ph;
        --in_flight;
    };
    auto fail = [&](Setup& s, const std::string& reason, const std::string& detail) {
        if (s.phase == Phase::Setup) {
            ++rep.failed;
            note(rep.failures, reason, detail);
        } else {
            const char* what = s.phase == Phase::RekeyChild ? "rekey_child"
                               : s.phase == Phase::RekeyIke ? "rekey_ike"
                                                            : "delete";
            note(rep.post_failures, std::string(what) + ": " + reason, detail);
        }
        finish(s, Phase::Failed);
    };
    // After the setup (or a post-setup step) completed: the next step, or done.
    auto advance = [&](Setup& s, Millis now) {
        Status st;
        if (s.phase == Phase::Setup && o.rekey_child) {
            s.phase = Phase::RekeyChild;
            st = engine.rekey_child(s.sa, s.spi_in, now);
        } else if ((s.phase == Phase::Setup || s.phase == Phase::RekeyChild) && o.rekey_ike) {
            s.phase = Phase::RekeyIke;
            st = engine.rekey_ike(s.sa, now);
        } else if (s.phase != Phase::Deleting && o.delete_after) {
            s.phase = Phase::Deleting;
            st = engine.delete_ike(s.sa, now);
        } else {
            finish(s, Phase::Done);
            return;
        }
        if (!st) fail(s, "call failed", st.error().detail());
    };
    auto handle = [&](const ike::Event& e, Millis now) {
        if (e.peer.size() < 2 || e.peer[0] != 'i') return;
        size_t idx = std::strtoul(e.peer.c_str() + 1, nullptr, 10);
        if (idx >= setups.size()) return;
        Setup& s = setups[idx];
        using K = ike::Event::Kind;
        if (s.phase == Phase::Pending || s.phase == Phase::Done || s.phase == Phase::Failed) return;
        switch (e.kind) {
            case K::IkeSaUp:
                if (s.phase == Phase::Setup) {
                    s.sa = e.ike_sa_id;
                    s.ike_up = true;
                }
                break;
            case K::ChildSaUp:
                if (s.phase == Phase::Setup) {
                    s.child_up = true;
                    auto sp = e.detail.find(' ');
                    if (sp != std::string::npos)
                        s.spi_in = static_cast<uint32_t>(std::strtoul(e.detail.c_str() + sp + 1, nullptr, 16));
                }
                break;
            case K::ChildSaRekeyed:
                if (s.phase == Phase::RekeyChild) {
                    ++rep.child_rekeys;
                    advance(s, now);
                }
                return;
            case K::IkeSaRekeyed:
                if (s.phase == Phase::RekeyIke) {
                    ++rep.ike_rekeys;
                    s.sa = e.ike_sa_id;
                    advance(s, now);
                }
                return;
            case K::IkeSaDown:
                // After an IKE SA rekey the old IKE SA goes down (deleted by an INFORMATIONAL
                // after IKE_SA_REKEYED): not ours any more.
                if (s.sa != 0 && e.ike_sa_id != s.sa) return;
                if (s.phase == Phase::Deleting) {
                    ++rep.deletes;
                    finish(s, Phase::Done);
                } else {
                    fail(s, "ike_sa_down", e.detail);
                }
                return;
            case K::AuthFailed:
                fail(s, "auth: " + auth_reason(e.code), e.detail);
                return;
            case K::PeerNotify:
                if (ike::wire::notify::is_error(static_cast<uint16_t>(e.code)))
                    fail(s, std::string("notify: ") + ike::wire::notify::name(static_cast<uint16_t>(e.code)), e.detail);
                return;
            case K::PeerDead:
                fail(s, "timeout", e.detail);
                return;
            case K::NegotiationFailed:
                // Retransmissions of IKE_SA_INIT exhausted: the engine reports it as a failed
                // negotiation ("no response to IKE_SA_INIT ..."); for the report it is a timeout.
                if (e.code == 0 && e.detail.rfind("no response", 0) == 0)
                    fail(s, "timeout", e.detail);
                else
                    fail(s,
                         e.code ? std::string("negotiation: ") + ike::wire::notify::name(static_cast<uint16_t>(e.code))
                                : "negotiation",
                         e.detail);
                return;
            default:
                return;
        }
        if (s.phase == Phase::Setup && s.ike_up && s.child_up) {
            latencies.push_back(static_cast<double>(now - s.started));
            ++rep.succeeded;
            last_done = now;
            advance(s, now);
        }
    };
    auto flush = [&](Millis now) {
        for (auto& d : engine.take_outgoing()) {
            auto it = socket_of.find(d.local.to_string());
            if (it == socket_of.end()) {
                ++send_errors;
                continue;
            }
            if (d.non_esp_marker) {  // floated: the 4-octet non-ESP marker before the IKE header
                Bytes m(4 + d.data.size(), 0);
                std::copy(d.data.begin(), d.data.end(), m.begin() + 4);
                if (!sockets[it->second].send(d.local, d.remote, m)) ++send_errors;
                ++natt_sent;
            } else if (!sockets[it->second].send(d.local, d.remote, d.data)) {
                ++send_errors;
            }
        }
        for (auto& e : engine.take_events()) handle(e, now);
    };
    auto progress = [&](Millis now, bool last) {
        if (!o.progress) return;
        double el = static_cast<double>(now - t0) / 1000.0;
        *o.progress << fmt::format("\r[{:7.1f}s] started {} up {} failed {} in flight {} ({:.0f} setups/s)   ", el,
                                   next, rep.succeeded, rep.failed, in_flight,
                                   el > 0 ? static_cast<double>(rep.succeeded) / el : 0.0);
        if (last) *o.progress << "\n";
        o.progress->flush();
    };

    // epoll, not poll(): with one socket per initiator (power-cut runs: 10,000 sockets) poll()
    // walks every descriptor on every wake-up and became the generator's bottleneck.
    int ep = ::epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0) return Error("epoll_create1 failed");
    struct EpollGuard {
        int fd;
        ~EpollGuard() { ::close(fd); }
    } ep_guard{ep};
    for (size_t i = 0; i < sockets.size(); ++i) {
        epoll_event ev{};
        ev.events = EPOLLIN;
        ev.data.u64 = i;
        if (::epoll_ctl(ep, EPOLL_CTL_ADD, sockets[i].fd(), &ev) != 0) return Error("epoll_ctl failed");
    }
    std::vector<epoll_event> ready(256);
    // Start setups: concurrency, rate and time bound permitting.
    auto start_setups = [&](Millis now) {
        while (next < o.count && in_flight < o.concurrency && now < bound) {
            if (o.rate > 0 && static_cast<double>(now - t0) < static_cast<double>(next) * 1000.0 / o.rate) break;
            Setup& s = setups[next];
            s.phase = Phase::Setup;
            s.started = now;
            if (!first_start) first_start = now;
            ++in_flight;
            ++rep.attempted;
            if (auto st = engine.initiate("i" + std::to_string(next), now); !st)
                fail(s, "initiate", st.error().detail());
            ++next;
        }
    };
    for (;;) {
        Millis now = steady_ms();
        start_setups(now);
        flush(now);
        if (in_flight == 0 && (next == o.count || now >= bound)) {
            // --hold: keep the SAs (answering the responder's DPD and rekeys) a while longer.
            if (hold_until == 0) hold_until = now + static_cast<Millis>(o.hold_s * 1000);
            if (now >= hold_until) break;
        }
        if (now >= bound + static_cast<Millis>(1000) + static_cast<Millis>(o.hold_s * 1000))
            break;  // in-flight ones get one more second (after the hold)
        if (now >= next_progress) {
            progress(now, false);
            next_progress = now + 250;
        }
        Millis wake = std::min<Millis>(next_progress, bound + 1000);
        if (hold_until) wake = std::min(wake, hold_until);
        if (auto d = engine.next_deadline()) wake = std::min(wake, *d);
        if (o.rate > 0 && next < o.count && in_flight < o.concurrency)
            wake = std::min(wake, t0 + static_cast<Millis>(static_cast<double>(next) * 1000.0 / o.rate));
        int timeout = static_cast<int>(std::clamp<Millis>(wake - now, 0, 1000));
        int n = ::epoll_wait(ep, ready.data(), static_cast<int>(ready.size()), timeout);
        now = steady_ms();
        if (n > 0) {
            for (int k = 0; k < n; ++k) {
                const size_t i = static_cast<size_t>(ready[static_cast<size_t>(k)].data.u64);
                for (;;) {
                    auto r = sockets[i].receive();
                    if (!r || !*r) break;
                    ike::Datagram d;
                    d.local = (*r)->local;
                    d.remote = (*r)->remote;
                    d.data = std::move((*r)->data);
                    if (d.remote.port == o.target_natt_port && o.target_natt_port != o.target.port) {
                        // From the NAT-T port: IKE after the non-ESP marker; a NAT keepalive
                        // (0xFF) or ESP (the generator installs no ESP SAs) is not for the engine.
                        if (d.data.size() < 4 || d.data[0] || d.data[1] || d.data[2] || d.data[3]) {
                            ++natt_not_ike;
                            continue;
                        }
                        d.data.erase(d.data.begin(), d.data.begin() + 4);
                        d.non_esp_marker = true;
                    }
                    now = steady_ms();
                    engine.handle_datagram(d, now);
                    // What this datagram produced goes out at once, and a setup it finished makes
                    // room for the next one: the responder is not kept waiting while the rest of
                    // the ready sockets are served (docs/bench-ike.md "Side by side with charon").
                    flush(now);
                    start_setups(now);
                    flush(now);
                }
            }
        }
        engine.tick(now);
        flush(now);
    }
    Millis end = steady_ms();
    progress(end, true);
    for (auto& s : setups)
        if (s.phase == Phase::Setup)
            ++rep.unfinished;
        else if (s.phase == Phase::RekeyChild || s.phase == Phase::RekeyIke || s.phase == Phase::Deleting)
            note(rep.post_failures, "unfinished", "still in progress at the time bound");
    if (rep.unfinished) rep.failures["unfinished"] = {rep.unfinished, "still in progress at the time bound"};
    rep.wall_seconds = static_cast<double>(end - t0) / 1000.0;
    rep.generator_cpu_seconds = process_cpu_seconds() - cpu0;
    rep.seconds = last_done > first_start ? static_cast<double>(last_done - first_start) / 1000.0 : 0;
    rep.setups_per_s = rep.seconds > 0 ? static_cast<double>(rep.succeeded) / rep.seconds : 0;
    std::sort(latencies.begin(), latencies.end());
    rep.p50_ms = percentile(latencies, 0.50);
    rep.p90_ms = percentile(latencies, 0.90);
    rep.p99_ms = percentile(latencies, 0.99);
    rep.max_ms = latencies.empty() ? 0 : latencies.back();
    for (const auto& [k, v] : engine.counters().snapshot()) rep.engine_counters[k] = v;
    if (send_errors) rep.engine_counters["load.send_errors"] = send_errors;
    if (natt_sent) rep.engine_counters["load.natt_sent"] = natt_sent;
    if (natt_not_ike) rep.engine_counters["load.natt_not_ike_dropped"] = natt_not_ike;
    return rep;
}

nlohmann::json LoadReport::to_json() const {
    nlohmann::json j;
    j["attempted"] = attempted;
    j["succeeded"] = succeeded;
    j["failed"] = failed;
    j["unfinished"] = unfinished;
    j["seconds"] = seconds;
    j["wall_seconds"] = wall_seconds;
    j["setups_per_s"] = setups_per_s;
    j["generator_cpu_seconds"] = generator_cpu_seconds;
    j["latency_ms"] = {{"p50", p50_ms}, {"p90", p90_ms}, {"p99", p99_ms}, {"max", max_ms}};
    j["child_rekeys"] = child_rekeys;
    j["ike_rekeys"] = ike_rekeys;
    j["deletes"] = deletes;
    auto reasons = [](const std::map<std::string, Reason>& m) {
        nlohmann::json r = nlohmann::json::object();
        for (const auto& [k, v] : m) r[k] = {{"count", v.count}, {"example", v.example}};
        return r;
    };
    j["failures"] = reasons(failures);
    j["post_setup_failures"] = reasons(post_failures);
    j["engine_counters"] = engine_counters;
    return j;
}

std::string LoadReport::to_text() const {
    std::ostringstream s;
    s << fmt::format("setups: {} attempted, {} succeeded, {} failed, {} unfinished\n", attempted, succeeded, failed,
                     unfinished);
    s << fmt::format("rate: {:.1f} setups/s over {:.2f} s (wall {:.2f} s)\n", setups_per_s, seconds, wall_seconds);
    s << fmt::format("generator CPU: {:.2f} s ({:.2f} ms per setup)\n", generator_cpu_seconds,
                     succeeded ? generator_cpu_seconds * 1000.0 / static_cast<double>(succeeded) : 0.0);
    s << fmt::format(
        "latency (IKE_SA_INIT sent -> Child SA up): p50 {:.1f} ms, p90 {:.1f} ms, p99 {:.1f} ms, "
        "max {:.1f} ms\n",
        p50_ms, p90_ms, p99_ms, max_ms);
    if (child_rekeys || ike_rekeys || deletes)
        s << fmt::format("after setup: {} Child SA rekeys, {} IKE SA rekeys, {} deletes\n", child_rekeys, ike_rekeys,
                         deletes);
    for (const auto& [k, v] : failures) s << fmt::format("failed: {:6} {} (e.g. {})\n", v.count, k, v.example);
    for (const auto& [k, v] : post_failures)
        s << fmt::format("after setup failed: {:6} {} (e.g. {})\n", v.count, k, v.example);
    return s.str();
}

namespace {
std::string toml_str(const std::string& s) {
    std::string r = "\"";
    for (char c : s) {
        if (c == '"' || c == '\\') r += '\\';
        r += c;
    }
    return r + "\"";
}
std::string hex(BytesView b) {
    std::string r;
    for (uint8_t c : b) r += fmt::format("{:02x}", c);
    return r;
}
}  // namespace

Result<std::string> responder_config_toml(const LoadOptions& o) {
    if (o.auth == LoadAuth::Cert && !o.certs)
        return Error("certificate authentication needs the certificate directory");
    if (o.auth == LoadAuth::Psk && o.psk_base.empty()) return Error("PSK authentication needs a base secret");
    std::ostringstream t;
    const std::string addr = toml_str(o.target.addr.to_string());
    const std::string any = toml_str(o.target.addr.v6 ? "::" : "0.0.0.0");
    t << "# x2sec responder for `x2sec ike load` (" << o.count << " initiators, "
      << (o.auth == LoadAuth::Cert ? "certificates" : "PSKs") << ", identities n<i>." << o.realm << ")\n";
    t << "[runtime]\nike_port = " << o.target.port << "\nnatt_port = " << o.target_natt_port
      << "\nlog_level = \"warn\"\n\n";
    t << "[engine]\ncookie_threshold = " << o.responder_cookie_threshold
      << "             # half-open IKE SAs before COOKIEs are demanded\n\n";
    auto child = [&](std::ostringstream& s) {
        s << "  [[peer.child]]\n  name = \"load\"\n  local_ts = \"" << kResponderInner.to_string() << "/32\"\n"
          << "  remote_ts = \"10.0.0.0/8\"\n  esp_proposals = [" << toml_str(o.esp_proposal)
          << "]\n  rekey = \"0s\"\n\n";
    };
    auto common = [&](std::ostringstream& s) {
        s << "local_addr = " << addr << "\nremote_addr = " << any
          << "\nlocal_id = " << toml_str("fqdn:" + o.responder_id) << "\nike_proposals = [" << toml_str(o.ike_proposal)
          << "]\nike_rekey = \"0s\"\ndpd_interval = \"0s\"\n";
    };
    if (o.auth == LoadAuth::Cert) {
        std::string dir = o.certs->dir;
        t << "[[trust_anchor]]\nlabel = \"load-ca\"\nfile = " << toml_str(dir + "/ca.pem") << "\n\n";
        t << "[[credential]]\nname = \"responder\"\nkey = " << toml_str(dir + "/responder.key") << "\ncerts = ["
          << toml_str(dir + "/responder.pem") << "]\n\n";
        t << "[[peer]]\nname = \"load\"\n";
        common(t);
        t << "auth = \"cert\"\ncredential = \"responder\"\ntrust = [\"load-ca\"]\n";
        child(t);
    } else {
        for (size_t i = 0; i < o.count; ++i) {
            const std::string id = initiator_identity(i, o.realm);
            auto psk = derive_psk(o.psk_base, id);
            t << "[[peer]]\nname = \"load-" << i << "\"\n";
            common(t);
            t << "remote_id = " << toml_str("fqdn:" + id) << "\nauth = \"psk\"\npsk = \"hex:" << hex(psk) << "\"\n";
            child(t);
        }
    }
    return t.str();
}

Result<std::string> charon_swanctl_conf(const LoadOptions& o) {
    if (o.auth == LoadAuth::Cert && !o.certs)
        return Error("certificate authentication needs the certificate directory");
    if (o.auth == LoadAuth::Psk && o.psk_base.empty()) return Error("PSK authentication needs a base secret");
    const bool cert = o.auth == LoadAuth::Cert;
    std::ostringstream t;
    // swanctl.conf wants one "key = value" per line (several on one line fail quietly).
    t << "# strongSwan charon responder for `x2sec ike load` (" << o.count << " initiators, "
      << (cert ? "certificates" : "PSKs") << ", identities n<i>." << o.realm << ")\n";
    t << "connections {\n  load {\n    version = 2\n    local_addrs = " << o.target.addr.to_string()
      << "\n    local_port = " << o.target.port << "\n    proposals = " << o.ike_proposal
      << "\n    rekey_time = 0\n    reauth_time = 0\n    dpd_delay = 0\n    unique = never\n";
    t << "    local {\n      auth = " << (cert ? "pubkey" : "psk") << "\n";
    if (cert) t << "      certs = responder.pem\n";
    t << "      id = " << o.responder_id << "\n    }\n";
    t << "    remote {\n      auth = " << (cert ? "pubkey" : "psk") << "\n      id = %any\n    }\n";
    t << "    children {\n      load {\n        mode = tunnel\n        local_ts = " << kResponderInner.to_string()
      << "/32\n        remote_ts = 10.0.0.0/8\n"
      << "        esp_proposals = " << o.esp_proposal << "\n        rekey_time = 0\n"
      << "        life_time = 0\n      }\n    }\n  }\n}\n";
    if (!cert) {
        t << "secrets {\n";
        for (size_t i = 0; i < o.count; ++i) {
            const std::string id = initiator_identity(i, o.realm);
            auto psk = derive_psk(o.psk_base, id);
            t << "  ike-" << i << " {\n    id = " << id << "\n    secret = 0x" << hex(psk) << "\n  }\n";
        }
        t << "}\n";
    }
    return t.str();
}

}  // namespace x2sec::loadgen
