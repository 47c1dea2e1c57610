// IKE_SA + first Child SA setups per second against ONE responder engine (one core), with
// ECDSA P-256 certificates and DH group 19, printed beside the crypto bound measured in the
// same run (x2sec::bench::measure_crypto_bound: the responder's ECDH keygen + derive, one
// ECDSA sign and two verifies, timed with raw OpenSSL), plus the heap held per established
// IKE SA.
//
// The sans-I/O engines are driven directly in one thread: batches of short-lived initiator
// engines (one IKE SA each) against one long-lived responder engine, datagrams shuttled in
// memory.  Only the responder's handle_datagram() calls are timed, in CPU time of this thread
// (CLOCK_THREAD_CPUTIME_ID) like the bound, so the figures do not depend on how busy the
// shared machine is.  Real randomness (OsRng) and the real system clock are used.
//
//   bench_ike_setup [--seconds S] [--sas N] [--batch B] [--cookie-threshold T] [--no-cookie-row]
//                   [--log-level L] [--bound-seconds S]
#include <malloc.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>
#include <x2sec/bench/crypto_bound.hpp>
#include <x2sec/common/log.hpp>
#include <x2sec/common/rng.hpp>
#include <x2sec/ikev2/engine.hpp>
#include <x2sec/pki/pki.hpp>
#include <x2sec/x509/x509.hpp>

using namespace x2sec;
using namespace x2sec::ike;

namespace {

struct Options {
    double seconds = 3.0;  // wall-clock budget of each measured row
    size_t sas = 2000;     // IKE SAs held by one responder engine before it is replaced
    size_t batch = 32;     // initiators started together (half-open SAs at once)
    uint32_t cookie_threshold = 1'000'000;
    bool cookie_row = true;  // also measure with a COOKIE demanded on every IKE_SA_INIT
    bool cold_row = true;    // also measure with a distinct certificate per initiator
    std::string log_level = "warn";
    double bound_seconds = 0.3;
};

[[noreturn]] void usage(const char* why) {
    std::fprintf(stderr,
                 "bench_ike_setup: %s\n"
                 "usage: bench_ike_setup [--seconds S] [--sas N] [--batch B] [--cookie-threshold T]\n"
                 "                       [--no-cookie-row] [--no-cold-row] [--log-level L] [--bound-seconds S]\n"
                 "  --seconds S           wall-clock budget of each measured row (default 3)\n"
                 "  --sas N               IKE SAs one responder engine accumulates before it is\n"
                 "                        replaced by a fresh one; memory/SA is measured over the\n"
                 "                        first N (default 2000)\n"
                 "  --batch B             initiators in flight together (default 32)\n"
                 "  --cookie-threshold T  responder's half-open threshold for the main row\n"
                 "                        (default 1000000: no cookies)\n"
                 "  --no-cookie-row       skip the row with a COOKIE on every IKE_SA_INIT\n"
                 "  --no-cold-row         skip the row in which every initiator presents its own\n"
                 "                        certificate (so the certificate parse cache never hits)\n"
                 "  --log-level L         engine log level (default warn; info logs every SA)\n"
                 "  --bound-seconds S     measuring time per primitive of the crypto bound (0.3)\n",
                 why);
    std::exit(2);
}

Options parse_options(int argc, char** argv) {
    Options o;
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        auto next = [&]() -> std::string {
            if (i + 1 >= argc) usage(("missing value after " + a).c_str());
            return argv[++i];
        };
        auto number = [&](const std::string& v) {
            char* end = nullptr;
            double d = std::strtod(v.c_str(), &end);
            if (end == v.c_str() || *end != '\0' || d < 0) usage(("bad number for " + a + ": " + v).c_str());
            return d;
        };
        if (a == "--seconds")
            o.seconds = number(next());
        else if (a == "--sas")
            o.sas = static_cast<size_t>(number(next()));
        else if (a == "--batch")
            o.batch = static_cast<size_t>(number(next()));
        else if (a == "--cookie-threshold")
            o.cookie_threshold = static_cast<uint32_t>(number(next()));
        else if (a == "--no-cookie-row")
            o.cookie_row = false;
        else if (a == "--no-cold-row")
            o.cold_row = false;
        else if (a == "--log-level")
            o.log_level = next();
        else if (a == "--bound-seconds")
            o.bound_seconds = number(next());
        else if (a == "-h" || a == "--help")
            usage("IKE setup benchmark");
        else
            usage(("unknown option " + a).c_str());
    }
    if (o.sas == 0) usage("--sas must be at least 1");
    if (o.batch == 0) usage("--batch must be at least 1");
    return o;
}

template <typename T>
T must(Result<T> r, const char* what) {
    if (!r.ok()) throw std::runtime_error(std::string(what) + ": " + r.error().to_string());
    return std::move(r).value();
}

// The data plane is not part of this measurement: count installs, keep nothing (so memory/SA
// is the IKE engine's own state, not a MemoryChildSaBackend's copy of the keys).
struct CountingBackend final : ChildSaBackend {
    size_t installs = 0, removes = 0;
    Status install(const ChildSaParams&) override {
        ++installs;
        return {};
    }
    Status remove(uint32_t) override {
        ++removes;
        return {};
    }
};

// One root, a responder leaf and one leaf shared by all initiators (leaf directly under the
// root, so the responder verifies two signatures per setup: the AUTH and the leaf).
struct Credentials {
    pki::PkeyPtr root_key;
    pki::X509Ptr root_cert;
    std::shared_ptr<x509::TrustStore> trust = std::make_shared<x509::TrustStore>();
    struct Leaf {
        std::shared_ptr<crypto::PrivateKey> signer;
        x509::Certificate cert;
        std::string fqdn;
    };
    Leaf responder, initiator;
    // Initiators with a certificate each, for the cold row: more of them than the responder's
    // certificate cache holds, used in a cycle, so that least-recently-used cache never hits.
    std::vector<Leaf> distinct;
    void make_distinct(size_t n) {
        while (distinct.size() < n)
            distinct.push_back(leaf("i" + std::to_string(distinct.size()) + ".cold.henb.example"));
    }

    Credentials() {
        root_key = must(pki::generate_key(pki::KeyAlg::EcP256), "root key");
        auto rn = must(pki::parse_name("/O=x2sec bench/CN=x2sec bench Root CA"), "root name");
        pki::IssueRequest r;
        r.profile = pki::Profile::RootCa;
        r.subject = rn.get();
        r.public_key = root_key.get();
        r.validity_days = 3650;
        root_cert = must(pki::issue_certificate(r, nullptr, root_key.get()), "root certificate");
        trust->add_anchor(must(x509::Certificate::from_der(pki::cert_der(root_cert.get())), "root DER"), "bench-root");
        responder = leaf("responder.henb.example");
        initiator = leaf("initiator.henb.example");
    }
    Leaf leaf(const std::string& fqdn) {
        auto key = must(pki::generate_key(pki::KeyAlg::EcP256), "leaf key");
        auto n = must(pki::parse_name("/O=x2sec bench/CN=" + fqdn), "leaf name");
        pki::IssueRequest r;
        r.profile = pki::Profile::BaseStation;
        r.subject = n.get();
        r.public_key = key.get();
        r.dns = {fqdn};
        auto cert = must(pki::issue_certificate(r, root_cert.get(), root_key.get()), "leaf certificate");
        auto pem = must(pki::private_key_pem(key.get()), "leaf key PEM");
        Leaf l{std::make_shared<crypto::PrivateKey>(must(crypto::PrivateKey::from_pem(pem), "leaf key")),
               must(x509::Certificate::from_der(pki::cert_der(cert.get())), "leaf DER"), fqdn};
        return l;
    }
};

const IpAddress kResponderAddr = IpAddress::v4(192, 0, 2, 1);
const IpAddress kInitiatorAddr = IpAddress::v4(198, 51, 100, 1);
constexpr uint16_t kFirstInitiatorPort = 20000;

PeerConfig common_peer(const Credentials::Leaf& me, const Credentials& c) {
    PeerConfig p;
    p.local_auth = p.remote_auth = AuthMethod::Certificate;
    p.private_key = me.signer;
    p.cert_chain = {me.cert};
    p.trust = c.trust;
    p.ike_proposals = {must(parse_ike_proposal("aes128gcm16-prfsha256-ecp256"), "IKE proposal")};
    ChildConfig child;
    child.name = "x2";
    child.proposals = {must(parse_child_proposal("aes128gcm16"), "ESP proposal")};
    child.rekey_seconds = 0;
    p.children = {child};
    p.dpd_interval_ms = 0;
    p.ike_rekey_seconds = 0;
    // Every initiator of the warm rows presents the same identity: the responder must hold
    // them all (no INITIAL_CONTACT, no uniqueness replacement), as it did before unique
    // identities were enforced.
    p.unique = UniquePolicy::Never;
    return p;
}

EngineConfig responder_config(const Credentials& c, uint32_t cookie_threshold) {
    PeerConfig p = common_peer(c.responder, c);
    p.name = "henbs";
    p.local_addr = kResponderAddr;
    p.remote_addr = IpAddress{};  // any peer
    p.local_id = must(Identity::parse("fqdn:responder.henb.example"), "responder id");
    p.remote_id.reset();  // any identity its certificate proves
    p.children[0].local_ts = {TrafficSelector::from_prefix(IpAddress::v4(203, 0, 113, 1), 32)};
    p.children[0].remote_ts = {TrafficSelector::from_prefix(IpAddress::v4(203, 0, 113, 0), 24)};
    EngineConfig cfg;
    cfg.peers = {p};
    cfg.cookie_threshold = cookie_threshold;
    cfg.half_open_timeout_ms = 600000;
    return cfg;
}

EngineConfig initiator_config(const Credentials& c, const Credentials::Leaf& me, uint16_t port) {
    PeerConfig p = common_peer(me, c);
    p.name = "responder";
    p.local_addr = kInitiatorAddr;
    p.local_port = port;
    p.remote_addr = kResponderAddr;
    p.local_id = must(Identity::parse("fqdn:" + me.fqdn), "initiator id");
    p.remote_id = must(Identity::parse("fqdn:responder.henb.example"), "responder id");
    p.children[0].local_ts = {TrafficSelector::from_prefix(IpAddress::v4(203, 0, 113, 2 + port % 250), 32)};
    p.children[0].remote_ts = {TrafficSelector::from_prefix(IpAddress::v4(203, 0, 113, 1), 32)};
    EngineConfig cfg;
    cfg.peers = {p};
    return cfg;
}

Millis now_ms() {
    using namespace std::chrono;
    static const auto t0 = steady_clock::now();
    return duration_cast<milliseconds>(steady_clock::now() - t0).count() + 1;
}

// Heap in use (malloc'd and mmapped chunks), and the resident set.
size_t heap_in_use() {
    struct mallinfo2 mi = mallinfo2();
    return mi.uordblks + mi.hblkhd;
}
size_t rss_bytes() {
    std::ifstream f("/proc/self/statm");
    size_t size = 0, resident = 0;
    f >> size >> resident;
    return resident * static_cast<size_t>(sysconf(_SC_PAGESIZE));
}

struct Responder {
    CountingBackend backend;
    std::unique_ptr<Engine> engine;
    size_t ike_up = 0, child_up = 0, failures = 0;
    std::string first_failure;
    Responder(const EngineConfig& cfg, Rng& rng) : engine(std::make_unique<Engine>(cfg, backend, rng)) {}
};

struct Initiator {
    CountingBackend backend;
    std::unique_ptr<Engine> engine;
    bool up = false;
};

struct Totals {
    size_t setups = 0;
    double responder_cpu = 0;  // seconds, handle_datagram only
    size_t datagrams_in = 0, datagrams_out = 0;
    size_t bytes_in = 0;
    size_t cookies = 0;
    uint64_t cert_cache_hits = 0, cert_cache_misses = 0;  // x509::CertificateCache::shared()
};

// Which initiator credentials the next initiator uses: the shared one, or the next of the
// distinct ones (cycling).
struct LeafPicker {
    const Credentials& c;
    bool distinct = false;
    size_t next = 0;
    const Credentials::Leaf& pick() {
        if (!distinct || c.distinct.empty()) return c.initiator;
        const auto& l = c.distinct[next % c.distinct.size()];
        ++next;
        return l;
    }
};

// Runs one batch of `n` initiators to completion against r.  Returns the IKE SAs established
// (counted on the responder: IkeSaUp + ChildSaUp events).
size_t run_batch(Responder& r, const Credentials& c, size_t n, Rng& rng, Totals& t, LeafPicker& leaves) {
    std::vector<Initiator> inits(n);
    for (size_t i = 0; i < n; ++i) {
        inits[i].engine = std::make_unique<Engine>(
            initiator_config(c, leaves.pick(), static_cast<uint16_t>(kFirstInitiatorPort + i)), inits[i].backend, rng);
        auto st = inits[i].engine->initiate("responder", now_ms());
        if (!st.ok()) throw std::runtime_error("initiate: " + st.error().to_string());
    }
    const size_t before = r.ike_up;
    for (int round = 0; round < 32; ++round) {
        std::vector<Datagram> to_responder;
        for (auto& in : inits)
            for (auto& d : in.engine->take_outgoing()) to_responder.push_back(std::move(d));
        if (to_responder.empty()) break;
        for (auto& d : to_responder) {
            Datagram rx;
            rx.local = d.remote;
            rx.remote = d.local;
            rx.data = std::move(d.data);
            rx.non_esp_marker = d.non_esp_marker;
            t.bytes_in += rx.data.size();
            ++t.datagrams_in;
            const Millis now = now_ms();
            const double c0 = bench::thread_cpu_seconds();
            r.engine->handle_datagram(rx, now);
            t.responder_cpu += bench::thread_cpu_seconds() - c0;
        }
        for (auto& d : r.engine->take_outgoing()) {
            ++t.datagrams_out;
            const size_t idx = static_cast<size_t>(d.remote.port - kFirstInitiatorPort);
            if (d.remote.port < kFirstInitiatorPort || idx >= n) continue;
            Datagram rx;
            rx.local = d.remote;
            rx.remote = d.local;
            rx.data = std::move(d.data);
            rx.non_esp_marker = d.non_esp_marker;
            inits[idx].engine->handle_datagram(rx, now_ms());
        }
        for (auto& e : r.engine->take_events()) {
            if (e.kind == Event::Kind::IkeSaUp)
                ++r.ike_up;
            else if (e.kind == Event::Kind::ChildSaUp)
                ++r.child_up;
            else if (e.kind == Event::Kind::AuthFailed || e.kind == Event::Kind::NegotiationFailed ||
                     e.kind == Event::Kind::PeerNotify) {
                if (r.failures++ == 0) r.first_failure = std::string(to_string(e.kind)) + ": " + e.detail;
            }
        }
    }
    return r.ike_up - before;
}

struct RowResult {
    std::string label;
    Totals t;
    double memory_per_sa = 0;  // heap bytes
    double rss_per_sa = 0;
    size_t memory_sas = 0;
    double wall = 0;
};

RowResult run_row(const std::string& label, const Options& o, const Credentials& c, uint32_t threshold, Rng& rng,
                  bool distinct_certs = false) {
    RowResult row;
    row.label = label;
    LeafPicker leaves{c, distinct_certs};
    auto& cache = x509::CertificateCache::shared();
    const uint64_t hits0 = cache.hits(), misses0 = cache.misses();
    const EngineConfig cfg = responder_config(c, threshold);
    const auto w0 = std::chrono::steady_clock::now();
    auto wall = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - w0).count(); };
    bool first = true;
    while (first || wall() < o.seconds) {
        auto r = std::make_unique<Responder>(cfg, rng);
        // Warm-up (lazily created state: cookie secret, fetched algorithms, logger), not timed
        // and not part of the memory figure.
        Totals warm;
        run_batch(*r, c, 2, rng, warm, leaves);
        const size_t warm_up = r->ike_up;
        const size_t heap0 = heap_in_use(), rss0 = rss_bytes();
        size_t count = 0;
        while (count < o.sas && (first || wall() < o.seconds)) {
            const size_t n = std::min(o.batch, o.sas - count);
            const size_t got = run_batch(*r, c, n, rng, row.t, leaves);
            if (got != n)
                throw std::runtime_error("only " + std::to_string(got) + " of " + std::to_string(n) +
                                         " IKE SAs established; first failure: " + r->first_failure);
            count += got;
        }
        row.t.setups += count;
        row.t.cookies += r->engine->counters().get("ike.tx.cookie");
        if (first) {
            row.memory_sas = count;
            row.memory_per_sa = (static_cast<double>(heap_in_use()) - static_cast<double>(heap0)) / count;
            row.rss_per_sa = (static_cast<double>(rss_bytes()) - static_cast<double>(rss0)) / count;
            const auto sas = r->engine->list_sas();
            size_t established = 0;
            for (const auto& s : sas) established += s.state == "ESTABLISHED" && s.children.size() == 1;
            if (established != count + warm_up)
                throw std::runtime_error("responder lists " + std::to_string(established) +
                                         " established IKE SAs, expected " + std::to_string(count + warm_up));
            if (r->backend.installs != r->child_up || r->child_up != count + warm_up)
                throw std::runtime_error("responder installed " + std::to_string(r->backend.installs) +
                                         " Child SAs for " + std::to_string(count + warm_up) + " IKE SAs");
        }
        first = false;
    }
    row.wall = wall();
    row.t.cert_cache_hits = cache.hits() - hits0;
    row.t.cert_cache_misses = cache.misses() - misses0;
    return row;
}

std::string human_bytes(double b) {
    char buf[64];
    if (b >= 10 * 1024)
        std::snprintf(buf, sizeof(buf), "%.1f KiB", b / 1024);
    else
        std::snprintf(buf, sizeof(buf), "%.0f B", b);
    return buf;
}

}  // namespace

int main(int argc, char** argv) {
    const Options o = parse_options(argc, argv);
    try {
        log::set_level(o.log_level);
        OsRng rng;
        std::printf(
            "x2sec IKE setup benchmark: IKE_SA_INIT + IKE_AUTH (ECDSA P-256 certificates, leaf under root,\n"
            "aes128gcm16-prfsha256-ecp256, first Child SA aes128gcm16) against ONE responder engine;\n"
            "responder CPU = this thread's CPU time inside the responder's handle_datagram() only.\n\n");
        std::fflush(stdout);
        // The bound is measured before and after the rows and the higher figure is used: a
        // bound timed while the shared machine was busy would flatter every ratio.
        const bench::BoundOptions bound_opts{.seconds_per_item = o.bound_seconds, .packet_size = 1400};
        const auto bound = bench::measure_crypto_bound(bound_opts);
        std::printf("%s\n", bound.to_text().c_str());
        const double bound_before = bound.ike_responder_bound(2);
        std::fflush(stdout);

        Credentials creds;
        std::vector<RowResult> rows;
        rows.push_back(
            run_row("cookie threshold " + std::to_string(o.cookie_threshold), o, creds, o.cookie_threshold, rng));
        if (o.cookie_row) rows.push_back(run_row("COOKIE on every SA_INIT", o, creds, 0, rng));
        if (o.cold_row) {
            // More distinct initiator certificates than the cache holds (LRU, used in a cycle).
            creds.make_distinct(x509::CertificateCache::shared().capacity() + 2 * o.batch + 2);
            rows.push_back(run_row("distinct certs (cold)", o, creds, o.cookie_threshold, rng, true));
        }

        const double bound_after = bench::measure_crypto_bound(bound_opts).ike_responder_bound(2);
        const double bound_rate = std::max(bound_before, bound_after);
        std::printf("IKE responder bound measured before the rows %.1f setups/s, after %.1f: the higher one is used\n",
                    bound_before, bound_after);
        std::printf("batch %zu initiators in flight, up to %zu IKE SAs per responder engine, %.1f s per row\n\n",
                    o.batch, o.sas, o.seconds);
        std::printf("%-26s %7s %9s %10s %10s %7s %5s %12s %12s\n", "responder", "setups", "CPU s", "setups/s",
                    "bound/s", "ratio", "goal", "heap/IKE SA", "RSS/IKE SA");
        bool main_met = false;
        for (const auto& r : rows) {
            const double rate = r.t.responder_cpu > 0 ? static_cast<double>(r.t.setups) / r.t.responder_cpu : 0;
            const double ratio = bound_rate > 0 ? rate / bound_rate : 0;
            const bool met = ratio >= 0.60;
            if (&r == &rows.front()) main_met = met;
            std::printf("%-26s %7zu %9.3f %10.1f %10.1f %6.1f%% %5s %12s %12s\n", r.label.c_str(), r.t.setups,
                        r.t.responder_cpu, rate, bound_rate, 100.0 * ratio, met ? "met" : "MISS",
                        human_bytes(r.memory_per_sa).c_str(), human_bytes(r.rss_per_sa).c_str());
        }
        std::printf("\n");
        for (const auto& r : rows) {
            const double per_setup_us = r.t.setups ? 1e6 * r.t.responder_cpu / static_cast<double>(r.t.setups) : 0;
            std::printf(
                "%s: %.1f us responder CPU per setup (bound %.1f us), %.2f datagrams in and %.2f out per setup, "
                "%zu cookies sent, certificate cache %llu hits / %llu misses, memory over the first %zu SAs, "
                "%.1f s wall\n",
                r.label.c_str(), per_setup_us, 1e6 / bound_rate,
                static_cast<double>(r.t.datagrams_in) / static_cast<double>(r.t.setups),
                static_cast<double>(r.t.datagrams_out) / static_cast<double>(r.t.setups), r.t.cookies,
                static_cast<unsigned long long>(r.t.cert_cache_hits),
                static_cast<unsigned long long>(r.t.cert_cache_misses), r.memory_sas, r.wall);
        }
        std::printf("%s\n", bench::versus("IKE_SA+Child SA setups/s (responder CPU, " + rows[0].label + ")",
                                          rows[0].t.responder_cpu > 0 ? rows[0].t.setups / rows[0].t.responder_cpu : 0,
                                          bound_rate)
                                .c_str());
        for (const auto& r : rows) {
            if (r.label.rfind("distinct", 0) != 0) continue;
            std::printf("%s\n", bench::versus("IKE_SA+Child SA setups/s (responder CPU, " + r.label +
                                                  ", no certificate cache hits)",
                                              r.t.responder_cpu > 0 ? r.t.setups / r.t.responder_cpu : 0, bound_rate)
                                    .c_str());
        }
        std::printf("goal (>= 60%% of the bound, first row): %s\n", main_met ? "met" : "NOT met");
        return 0;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "bench_ike_setup: %s\n", e.what());
        return 1;
    }
}
