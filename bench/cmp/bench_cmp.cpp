// Usage: bench_cmp [clients=8] [seconds=5] [server_threads=8]
//        bench_cmp inproc [clients=1] [seconds=5] [memory|sqlite]   (for a profiler)
#include <openssl/evp.h>
#include <sys/wait.h>
#include <fcntl.h>
#include <unistd.h>
#include <atomic>
#include <csignal>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <functional>
#include <iostream>
#include <map>
#include <thread>
#include <x2sec/cmp/client.hpp>
#include <x2sec/cmp/http.hpp>
#include <x2sec/cmp/lab_pki.hpp>
#include <x2sec/common/log.hpp>

using namespace x2sec;
using namespace x2sec::cmp;
using Clock = std::chrono::steady_clock;

namespace {

struct Load {
    int ok = 0, failed = 0;
    double seconds = 0;
    double rate() const { return seconds > 0 ? ok / seconds : 0; }
};

// `clients` threads, each calling once(c) (one enrolment; true when it succeeded) in a loop
// until `seconds` have passed; the first failure's reason is printed.
Load timed_loop(int clients, double seconds, const std::function<Result<bool>(int)>& once) {
    std::atomic<int> ok{0}, failed{0};
    std::atomic<bool> stop{false};
    std::vector<std::thread> ts;
    ts.reserve(static_cast<size_t>(clients));
    auto t0 = Clock::now();
    for (int c = 0; c < clients; ++c)
        ts.emplace_back([&, c] {
            while (!stop) {
                auto e = once(c);
                if (e) {
                    ++ok;
                } else if (failed.fetch_add(1) == 0) {
                    std::fprintf(stderr, "  first failure: %s\n", e.error().detail().c_str());
                }
            }
        });
    std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
    stop = true;
    for (auto& t : ts) t.join();
    Load l;
    l.ok = ok;
    l.failed = failed;
    l.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
    return l;
}

// One ir (+ certConf unless implicit) of device `dev` for identity `id`.
EnrollRequest enrol_request(const LabPki& lab, const LabCredential& dev, EVP_PKEY* new_key, const std::string& id,
                            bool implicit) {
    EnrollRequest r;
    r.auth_key = dev.key.get();
    r.auth_cert = dev.cert.get();
    r.auth_chain = dev.chain_ptrs();
    r.new_key = new_key;
    r.subject = "/CN=" + id;
    r.dns = {id};
    r.operator_roots = {lab.operator_root.cert.get()};
    r.implicit_confirm = implicit;
    r.timeout_s = 10;
    return r;
}

Result<bool> enrol(const EnrollRequest& r) {
    auto e = Client::enroll(r);
    if (!e) return e.error();
    return true;
}

// N client threads, each enrolling over HTTP in a loop for `seconds`.
Load run_load(const LabPki& lab, const std::vector<LabCredential>& devs, EVP_PKEY* new_key, const std::string& url,
              int clients, double seconds, bool implicit, const std::vector<std::string>& ids) {
    return timed_loop(clients, seconds, [&](int c) {
        EnrollRequest r =
            enrol_request(lab, devs[static_cast<size_t>(c)], new_key, ids[static_cast<size_t>(c)], implicit);
        r.server_url = url;
        return enrol(r);
    });
}

// In process (no HTTP): N client threads calling Server::handle directly; `server_us` gets the
// time spent inside handle() (the whole server path: parsing, OpenSSL's checks, chain building,
// issuing, signing, the store), summed over all calls.
Load run_inproc(const LabPki& lab, const std::vector<LabCredential>& devs, EVP_PKEY* new_key, Server& server,
                int clients, double seconds, const std::vector<std::string>& ids, std::atomic<int64_t>& server_us) {
    return timed_loop(clients, seconds, [&](int c) {
        EnrollRequest r = enrol_request(lab, devs[static_cast<size_t>(c)], new_key, ids[static_cast<size_t>(c)], false);
        r.transfer = [&](BytesView m) {
            auto a = Clock::now();
            auto rsp = server.handle(m, cmp::RequestContext{"", static_cast<int64_t>(std::time(nullptr))});
            server_us += std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - a).count();
            return rsp;
        };
        return enrol(r);
    });
}

// Median time of one P-256 ECDSA-SHA256 sign and verify (OpenSSL EVP), microseconds.
std::pair<double, double> ecdsa_costs() {
    auto k = pki::generate_key(pki::KeyAlg::EcP256).value();
    unsigned char msg[512] = {1};
    std::vector<unsigned char> sig(128);
    size_t siglen = 0;
    auto sign_once = [&] {
        EVP_MD_CTX* m = EVP_MD_CTX_new();
        siglen = sig.size();
        EVP_DigestSignInit(m, nullptr, EVP_sha256(), nullptr, k.get());
        EVP_DigestSign(m, sig.data(), &siglen, msg, sizeof msg);
        EVP_MD_CTX_free(m);
    };
    auto verify_once = [&] {
        EVP_MD_CTX* m = EVP_MD_CTX_new();
        EVP_DigestVerifyInit(m, nullptr, EVP_sha256(), nullptr, k.get());
        int r = EVP_DigestVerify(m, sig.data(), siglen, msg, sizeof msg);
        EVP_MD_CTX_free(m);
        if (r != 1) std::abort();
    };
    auto time_it = [](auto f, int n) {
        auto t0 = Clock::now();
        for (int i = 0; i < n; ++i) f();
        return std::chrono::duration<double, std::micro>(Clock::now() - t0).count() / n;
    };
    sign_once();
    double s = time_it(sign_once, 2000), v = time_it(verify_once, 2000);
    return {s, v};
}

int free_port() {
    return 20000 + static_cast<int>((getpid() * 13) % 30000);
}

}  // namespace

// `bench_cmp inproc [clients=1] [seconds=5] [memory|sqlite]`: only the in-process enrolments
// (no HTTP, no mock), for a profiler (perf record / valgrind --tool=callgrind).
int inproc_only(int argc, char** argv) {
    int clients = argc > 2 ? std::atoi(argv[2]) : 1;
    double seconds = argc > 3 ? std::atof(argv[3]) : 5;
    bool durable = argc > 4 && std::string(argv[4]) == "sqlite";
    auto lab = make_lab_pki();
    std::vector<LabCredential> devs;
    std::vector<std::string> ids;
    for (int c = 0; c < clients; ++c) {
        char eui[24];
        std::snprintf(eui, sizeof eui, "02aa0000%04x", static_cast<unsigned>(c) & 0xffffu);
        devs.push_back(lab.device(lab.vendor_a, eui, "henb.vendor-a.example"));
        ids.push_back(std::string(eui) + ".henb.vendor-a.example");
    }
    auto new_key = pki::generate_key(pki::KeyAlg::EcP256).value();
    auto path = "/tmp/x2sec-bench-cmp-" + std::to_string(getpid()) + ".db";
    auto store = open_sqlite_store(durable ? path : ":memory:").value();
    Server server(lab.server_config(), *store);
    std::atomic<int64_t> srv_us{0};
    Load l = run_inproc(lab, devs, new_key.get(), server, clients, seconds, ids, srv_us);
    std::printf("in process, %s store, %d client(s): %.1f enrol/s (%d ok, %d failed), server %.0f us per enrolment\n",
                durable ? "SQLite" : "in-memory", clients, l.rate(), l.ok, l.failed,
                l.ok ? static_cast<double>(srv_us.load()) / l.ok : 0.0);
    store.reset();
    for (auto* suffix : {"", "-wal", "-shm"}) std::filesystem::remove(path + suffix);
    return 0;
}

int main(int argc, char** argv) {
    log::set_level("error");
    if (argc > 1 && std::string(argv[1]) == "inproc") return inproc_only(argc, argv);
    int clients = argc > 1 ? std::atoi(argv[1]) : 8;
    double seconds = argc > 2 ? std::atof(argv[2]) : 5;
    int server_threads = argc > 3 ? std::atoi(argv[3]) : 8;
    signal(SIGPIPE, SIG_IGN);
    std::cout << "bench_cmp: " << clients << " concurrent clients, " << seconds << " s per run, P-256, loopback, "
              << std::thread::hardware_concurrency() << " cores\n";

    auto lab = make_lab_pki();
    std::vector<LabCredential> devs;
    std::vector<std::string> ids;
    for (int c = 0; c < clients; ++c) {
        char eui[24];
        std::snprintf(eui, sizeof eui, "02aa0000%04x", static_cast<unsigned>(c) & 0xffffu);
        devs.push_back(lab.device(lab.vendor_a, eui, "henb.vendor-a.example"));
        ids.push_back(std::string(eui) + ".henb.vendor-a.example");
    }
    auto new_key = pki::generate_key(pki::KeyAlg::EcP256).value();

    // ---- x2sec server
    auto store_path = "/tmp/x2sec-bench-cmp-" + std::to_string(getpid()) + ".db";
    auto store = open_sqlite_store(store_path).value();
    Server server(lab.server_config(), *store);
    HttpOptions ho;
    ho.threads = server_threads;
    HttpServer http(server, ho);
    if (auto st = http.start(); !st) {
        std::cerr << st.error().detail() << "\n";
        return 1;
    }
    std::string xurl = "http://127.0.0.1:" + std::to_string(http.port()) + "/.well-known/cmp";

    // ---- openssl mock server, same PKI: files in a temp dir
    namespace fs = std::filesystem;
    fs::path dir = fs::temp_directory_path() / ("x2sec-bench-cmp-" + std::to_string(getpid()));
    fs::create_directories(dir);
    auto path = [&](const char* f) { return (dir / f).string(); };
    (void)pki::save_certs_pem(path("ra.crt"), {lab.ra.cert.get()});
    (void)pki::save_private_key(path("ra.key"), lab.ra.key.get());
    (void)pki::save_certs_pem(path("vendor.crt"), {lab.vendor_a.cert.get()});
    (void)pki::save_certs_pem(path("root.crt"), {lab.operator_root.cert.get()});
    (void)pki::save_certs_pem(path("extra.crt"), {lab.operator_issuing.cert.get(), lab.operator_root.cert.get()});
    {
        auto n = pki::parse_name("/CN=" + ids[0]).value();
        pki::IssueRequest r;
        r.subject = n.get();
        r.public_key = new_key.get();
        r.dns = {ids[0]};
        auto c = pki::issue_certificate(r, lab.operator_issuing.cert.get(), lab.operator_issuing.key.get()).value();
        (void)pki::save_certs_pem(path("rsp.crt"), {c.get()});
    }
    int mport = free_port();
    std::string murl;
    auto start_mock = [&](bool implicit) -> pid_t {
        ++mport;  // a fresh port per run: no connection can reach a previous instance
        murl = "http://127.0.0.1:" + std::to_string(mport) + "/pkix/";
        pid_t pid = fork();
        if (pid == 0) {
            std::string port = std::to_string(mport);
            int devnull = ::open("/dev/null", O_WRONLY);
            dup2(devnull, 1);
            dup2(devnull, 2);
            std::vector<std::string> args = {"openssl",         "cmp",
                                             "-port",           port,
                                             "-srv_cert",       path("ra.crt"),
                                             "-srv_key",        path("ra.key"),
                                             "-srv_trusted",    path("vendor.crt"),
                                             "-srv_untrusted",  path("vendor.crt"),
                                             "-rsp_cert",       path("rsp.crt"),
                                             "-rsp_capubs",     path("root.crt"),
                                             "-rsp_extracerts", path("extra.crt")};
            if (implicit) args.emplace_back("-grant_implicitconf");
            std::vector<char*> av;
            av.reserve(args.size() + 1);
            for (auto& a : args) av.push_back(a.data());
            av.push_back(nullptr);
            execvp("openssl", av.data());
            _exit(127);
        }
        for (int i = 0; i < 100; ++i) {  // wait for the listener
            std::string cmd = "ss -ltn | grep -q ':" + std::to_string(mport) + " '";
            if (std::system(cmd.c_str()) == 0) break;
            std::this_thread::sleep_for(std::chrono::milliseconds(50));
        }
        return pid;
    };
    auto stop_mock = [](pid_t pid) {
        kill(pid, SIGTERM);
        int st;
        waitpid(pid, &st, 0);
    };
    // The mock answers every ir with the same certificate (for new_key, identity of client 0):
    // all clients request that identity against the mock so our certConf check passes.
    std::vector<std::string> mock_ids(ids.size(), ids[0]);

    auto [sign_us, verify_us] = ecdsa_costs();
    // x2sec per enrolment (ir + certConf): signatures: certificate, ip, pkiConf = 3;
    // verifications: ir protection x2 (signer search + OpenSSL's check), POP, vendor chain,
    // certConf protection x2 = 6.
    double x2sec_us = 3 * sign_us + 6 * verify_us;
    double bound = 1e6 / x2sec_us * std::thread::hardware_concurrency();

    // Same PKI, in-memory store: shows what the durable SQLite store (WAL, synchronous=FULL)
    // costs per enrolment.
    auto mem_store = open_sqlite_store(":memory:").value();
    Server mem_server(lab.server_config(), *mem_store);
    HttpServer mem_http(mem_server, ho);
    (void)mem_http.start();
    std::string memurl = "http://127.0.0.1:" + std::to_string(mem_http.port()) + "/.well-known/cmp";

    std::printf("\n%-44s %8s %10s %7s %7s\n", "run", "clients", "enrol/s", "ok", "failed");
    auto row = [](const std::string& name, int n, const Load& l) {
        std::printf("%-44s %8d %10.1f %7d %7d\n", name.c_str(), n, l.rate(), l.ok, l.failed);
    };
    struct Pair {
        double x = 0, m = 0;
    };
    std::map<std::string, Pair> ratio;
    std::map<std::string, double> commits_per;  // SQLite write transactions (fsyncs) per enrolment
    for (int n : {1, clients}) {
        if (n == 1 && clients == 1 && !ratio.empty()) break;
        for (bool implicit : {false, true}) {
            std::string mode = implicit ? "ir, implicitConfirm" : "ir+certConf";
            uint64_t c0 = store->write_commits();
            Load x = run_load(lab, devs, new_key.get(), xurl, n, seconds, implicit, ids);
            row("x2sec ca, SQLite store (" + mode + ")", n, x);
            if (x.ok)
                commits_per[mode + ", " + std::to_string(n) + " client(s)"] =
                    static_cast<double>(store->write_commits() - c0) / x.ok;
            pid_t mp = start_mock(implicit);
            Load m = run_load(lab, devs, new_key.get(), murl, n, seconds, implicit, mock_ids);
            stop_mock(mp);
            row("openssl cmp -port (" + mode + ")", n, m);
            ratio[mode + ", " + std::to_string(n) + " client(s)"] = {x.rate(), m.rate()};
        }
        if (clients == 1) break;
    }
    Load xm = run_load(lab, devs, new_key.get(), memurl, clients, seconds, false, ids);
    row("x2sec ca, in-memory store (ir+certConf)", clients, xm);
    mem_http.stop();

    std::printf("\nratio x2sec / openssl mock:\n");
    for (auto& [k, v] : ratio)
        std::printf("  %-36s %s\n", k.c_str(),
                    v.m > 0 ? std::to_string(v.x / v.m).substr(0, 5).c_str() : "mock served none");
    std::printf(
        "crypto bound (OpenSSL EVP, this run): P-256 sign %.1f us, verify %.1f us; x2sec server per enrolment "
        "3 sign + 6 verify = %.0f us -> %.0f enrol/s on %u cores (server crypto alone, clients excluded)\n",
        sign_us, verify_us, x2sec_us, bound, std::thread::hardware_concurrency());
    std::printf(
        "notes: the 3.0 mock server keeps one transaction state and serves one connection at a time; with\n"
        "concurrent clients its answers carry the wrong transactionID or the connection fails, so it only\n"
        "serves the 1-client runs. It issues nothing (fixed certificate) and writes no store; x2sec issues,\n"
        "signs and durably records every certificate. Clients run in this process on the same cores.\n");

    // ---- where the time goes (one client, ir+certConf), and the ratio to the crypto bound of
    // client and server sharing the cores.  Client per enrolment: ir protection + POP + certConf
    // signed (3), ip + pkiConf protection and the new certificate's chain (issuing CA, root)
    // verified (4).
    double both_us = x2sec_us + 3 * sign_us + 4 * verify_us;
    double shared_bound = 1e6 / both_us * std::thread::hardware_concurrency();
    std::atomic<int64_t> srv_us{0}, srv_mem_us{0};
    Load ip = run_inproc(lab, devs, new_key.get(), server, 1, seconds, ids, srv_us);
    Load ipm = run_inproc(lab, devs, new_key.get(), mem_server, 1, seconds, ids, srv_mem_us);
    double per_total = ip.ok ? ip.seconds * 1e6 / ip.ok : 0;
    double per_srv = ip.ok ? static_cast<double>(srv_us.load()) / ip.ok : 0;
    double per_srv_mem = ipm.ok ? static_cast<double>(srv_mem_us.load()) / ipm.ok : 0;
    double per_http = 0;
    if (auto it = ratio.find("ir+certConf, 1 client(s)"); it != ratio.end() && it->second.x > 0)
        per_http = 1e6 / it->second.x - per_total;
    std::printf("\nwhere the time goes, 1 client, ir+certConf, per enrolment (in process, then over HTTP):\n");
    std::printf("  whole enrolment in process        %8.0f us  (%d enrolments)\n", per_total, ip.ok);
    std::printf("  server (Server::handle, 2 calls)  %8.0f us\n", per_srv);
    std::printf("    of which server crypto (est.)   %8.0f us  (3 sign + 6 verify at this run's EVP speed)\n",
                x2sec_us);
    std::printf("    of which durable store (SQLite WAL, synchronous=FULL, 2 commits) %6.0f us  (vs :memory:)\n",
                per_srv - per_srv_mem);
    std::printf("    rest (ASN.1, OpenSSL CMP checks besides signatures, chain building, issuing) %6.0f us\n",
                per_srv - x2sec_us - (per_srv - per_srv_mem));
    std::printf("  client (x2sec Client)             %8.0f us\n", per_total - per_srv);
    std::printf("  HTTP + event loop + worker hand-off %6.0f us  (HTTP run minus in-process run)\n", per_http);
    std::printf("durable commits (WAL fsyncs) per enrolment, SQLite store (group commit shares them):\n");
    for (auto& [k, v] : commits_per) std::printf("  %-36s %5.2f\n", k.c_str(), v);
    std::printf("\nratios (targets, issue 13 item 5):\n");
    if (auto it = ratio.find("ir+certConf, 1 client(s)"); it != ratio.end() && it->second.m > 0)
        std::printf("  x2sec / openssl mock, ir+certConf, 1 client     %6.2f  (target >= 2)\n",
                    it->second.x / it->second.m);
    if (auto it = ratio.find("ir+certConf, " + std::to_string(clients) + " client(s)"); it != ratio.end())
        std::printf(
            "  x2sec / crypto bound, ir+certConf, %d clients    %6.2f  (target >= 0.5; bound %.0f enrol/s: client + "
            "server %.0f us of P-256 per enrolment on %u cores)\n",
            clients, it->second.x / shared_bound, shared_bound, both_us, std::thread::hardware_concurrency());
    std::printf("  machine load (1/5/15 min): ");
    if (FILE* f = std::fopen("/proc/loadavg", "r")) {
        char buf[64] = {};
        if (std::fgets(buf, sizeof buf, f)) std::printf("%s", buf);
        std::fclose(f);
    }
    http.stop();
    fs::remove_all(dir);
    for (auto* s : {"", "-wal", "-shm"}) fs::remove(store_path + s);
    return 0;
}
