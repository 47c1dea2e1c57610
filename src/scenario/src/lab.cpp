// `x2sec lab`: see lab.hpp.  Topology (names unique per run, x2slab<pid>-*):
//
//   x2slab<pid>-core    SeGW (x2sec esp --ike-config, TUN x2ssegw 203.0.113.1/24), RA/CA and KDS
//                       bound to 203.0.113.1 (reachable only through the backhaul tunnels);
//                       LAN 198.51.100.1/24
//   x2slab<pid>-sw      bridge x2sbr joining every namespace's x2slan veth; the packet tap
//   x2slab<pid>-<henb>  LAN 198.51.100.1i/24 (backhaul) and 192.0.2.1i/24 (direct interface);
//                       TUN x2sbh 203.0.113.1i/32 (backhaul inner), TUN x2sx2 203.0.113.10i/32
//                       (X2 inner address)
#include <x2sec/scenario/lab.hpp>

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <csignal>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <thread>
#include <x2sec/common/file.hpp>
#include <x2sec/common/log.hpp>
#include <x2sec/common/rng.hpp>
#include <x2sec/common/time.hpp>
#include <x2sec/kds/server.hpp>
#include <x2sec/kds/tls.hpp>
#include <x2sec/node/agent.hpp>
#include <x2sec/scenario/lab_pki.hpp>
#include <x2sec/policy/config.hpp>

#include <x2sec/scenario/ip_command.hpp>

#include "demo_world.hpp"
#include "operations.hpp"

#include <x2sec/runtime/control.hpp>
#include <x2sec/cmp/client.hpp>
#include <x2sec/cmp/http.hpp>
#include <x2sec/cmp/server.hpp>
#include <x2sec/cmp/store.hpp>
#include <x2sec/pki/pki.hpp>

namespace x2sec::scenario {

using namespace x2sec::node;  // the agent and its types

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

constexpr const char* kPrefix = "x2slab";
constexpr uint16_t kCmpPort = 8829;
constexpr uint16_t kKdsPort = 7443;
constexpr const char* kMarker = "X2SEC-LAB";

double ms_since(std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

// Interfaces the lab creates (checked by ipcmd like every name).
constexpr const char* kLanIf = "x2slan";
constexpr const char* kBridgeIf = "x2sbr";

// ------------------------------------------------------------------ cleanup on every path
struct Janitor {
    std::mutex mu;
    std::set<pid_t> pids;
    std::vector<std::string> namespaces;
    std::string dir;
    bool remove_dir = false;

    void add_pid(pid_t p) {
        std::lock_guard l(mu);
        pids.insert(p);
    }
    void forget_pid(pid_t p) {
        std::lock_guard l(mu);
        pids.erase(p);
    }
    void add_ns(const std::string& n) {
        std::lock_guard l(mu);
        namespaces.push_back(n);
    }
    void cleanup() {
        std::lock_guard l(mu);
        for (pid_t p : pids) ::kill(p, SIGTERM);
        for (int i = 0; i < 40 && !pids.empty(); ++i) {
            for (auto it = pids.begin(); it != pids.end();) {
                if (::waitpid(*it, nullptr, WNOHANG) != 0)
                    it = pids.erase(it);
                else
                    ++it;
            }
            if (!pids.empty()) std::this_thread::sleep_for(std::chrono::milliseconds(100));
        }
        for (pid_t p : pids) {
            ::kill(p, SIGKILL);
            ::waitpid(p, nullptr, 0);
        }
        pids.clear();
        for (auto it = namespaces.rbegin(); it != namespaces.rend(); ++it) (void)ipcmd::netns_del(*it);
        namespaces.clear();
        if (remove_dir && !dir.empty()) {
            std::error_code ec;
            fs::remove_all(dir, ec);
        }
    }
};

Janitor& janitor() {
    static Janitor j;
    return j;
}

// ------------------------------------------------------------------ namespaces
bool enter_netns(const std::string& ns) {
    int fd = ::open(("/run/netns/" + ns).c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return false;
    bool ok = ::setns(fd, CLONE_NEWNET) == 0;
    ::close(fd);
    return ok;
}

// Runs fn on a thread that has entered the namespace: sockets it creates live there (and stay
// there when used from other threads).
Status in_ns(const std::string& ns, const std::function<void()>& fn) {
    bool entered = false;
    std::thread t([&] {
        entered = enter_netns(ns);
        if (entered) fn();
    });
    t.join();
    if (!entered) return Error(ErrorDomain::Io, errno, "cannot enter network namespace " + ns);
    return {};
}

int socket_in(const std::string& ns, int type) {
    int fd = -1;
    (void)in_ns(ns, [&] { fd = ::socket(AF_INET, type | SOCK_CLOEXEC, 0); });
    return fd;
}

sockaddr_in sin_of(const IpAddress& a, uint16_t port) {
    sockaddr_in s{};
    s.sin_family = AF_INET;
    s.sin_port = htons(port);
    std::memcpy(&s.sin_addr, a.bytes.data(), 4);
    return s;
}

uint32_t v4(const IpAddress& a) {
    uint32_t x;
    std::memcpy(&x, a.bytes.data(), 4);
    return x;
}

// ------------------------------------------------------------------ processes
struct Proc {
    pid_t pid = -1;
    std::string name, out, err, control;
};

Result<Proc> spawn(const std::string& ns, const std::vector<std::string>& args, const std::string& name,
                   const std::string& dir, bool pdeath) {
    Proc p;
    p.name = name;
    p.out = dir + "/" + name + ".out";
    p.err = dir + "/" + name + ".err";
    X2SEC_TRY(auto all, ipcmd::netns_exec_argv(ns, args));
    std::vector<char*> argv;
    argv.reserve(all.size() + 1);
    for (auto& a : all) argv.push_back(a.data());
    argv.push_back(nullptr);
    pid_t pid = ::fork();
    if (pid < 0) return Error(ErrorDomain::Io, errno, "fork");
    if (pid == 0) {
        sigset_t none;
        sigemptyset(&none);
        ::sigprocmask(SIG_SETMASK, &none, nullptr);
        if (pdeath) ::prctl(PR_SET_PDEATHSIG, SIGTERM);
        int o = ::open(p.out.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        int e = ::open(p.err.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        int n = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
        if (o < 0 || e < 0 || n < 0) _exit(126);
        ::dup2(n, 0);
        ::dup2(o, 1);
        ::dup2(e, 2);
        ::execv(argv[0], argv.data());
        _exit(127);
    }
    p.pid = pid;
    janitor().add_pid(pid);
    return p;
}

std::string tail(const std::string& file, size_t lines = 3) {
    auto t = read_text_file(file);
    if (!t.ok()) return "";
    std::vector<std::string> ls;
    std::istringstream in(*t);
    for (std::string l; std::getline(in, l);)
        if (!l.empty()) ls.push_back(l);
    std::string out;
    for (size_t i = ls.size() > lines ? ls.size() - lines : 0; i < ls.size(); ++i)
        out += (out.empty() ? "" : " | ") + ls[i];
    return out;
}

bool alive(Proc& p) {
    if (p.pid <= 0) return false;
    int st = 0;
    if (::waitpid(p.pid, &st, WNOHANG) == p.pid) {
        janitor().forget_pid(p.pid);
        p.pid = -1;
        return false;
    }
    return true;
}

// Waits for the "ready" line and the control socket.
Status wait_ready(Proc& p, int timeout_ms) {
    auto t0 = std::chrono::steady_clock::now();
    while (ms_since(t0) < timeout_ms) {
        auto o = read_text_file(p.out);
        if (o.ok() && o->find("ready ") != std::string::npos && (p.control.empty() || fs::exists(p.control))) return {};
        if (!alive(p)) return Error(ErrorDomain::Io, 0, p.name + " exited: " + tail(p.err));
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return Error(ErrorDomain::Io, 0, p.name + " not ready after " + std::to_string(timeout_ms) + " ms: " + tail(p.err));
}

// SIGTERM (the IKE daemon deletes its SAs), then the data plane's final status line (JSON on
// stderr) if it printed one.
json stop(Proc& p) {
    if (p.pid > 0) {
        ::kill(p.pid, SIGTERM);
        bool gone = false;
        for (int i = 0; i < 80 && !gone; ++i) {
            if (::waitpid(p.pid, nullptr, WNOHANG) == p.pid)
                gone = true;
            else
                std::this_thread::sleep_for(std::chrono::milliseconds(50));
        }
        if (!gone) {
            ::kill(p.pid, SIGKILL);
            ::waitpid(p.pid, nullptr, 0);
        }
        janitor().forget_pid(p.pid);
        p.pid = -1;
    }
    auto t = read_text_file(p.err);
    if (!t.ok()) return {};
    std::istringstream in(*t);
    json last;
    for (std::string l; std::getline(in, l);)
        if (!l.empty() && l[0] == '{') {
            auto j = json::parse(l, nullptr, false);
            if (!j.is_discarded()) last = j;
        }
    return last;
}

// ------------------------------------------------------------------ the packet tap on the LAN
struct WireFrame {
    double t = 0;
    uint32_t src = 0, dst = 0;
    uint8_t proto = 0;
    uint16_t sport = 0, dport = 0;
    size_t payload = 0;  // UDP/TCP payload octets
    enum class Kind { Other, Ike, Esp, Keepalive } kind = Kind::Other;
    bool marker = false;  // the lab's plaintext marker is readable in the frame
};

class WireTap {
public:
    WireTap() : m_epoch_ns(realtime_ns()) {}
    ~WireTap() { stop(); }
    Status start(const std::string& ns, const std::string& bridge) {
        std::atomic<int> state{0};
        m_thread = std::thread([this, ns, bridge, &state] {
            if (!enter_netns(ns)) {
                state = -1;
                return;
            }
            int fd = ::socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, htons(ETH_P_ALL));
            if (fd < 0) {
                state = -2;
                return;
            }
            int big = 32 << 20, one = 1;
            ::setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &big, sizeof big);
            ::setsockopt(fd, SOL_SOCKET, SO_TIMESTAMPNS, &one, sizeof one);  // arrival time, not processing time
            int bridge_ifindex = int(if_nametoindex(bridge.c_str()));
            state = 1;
            std::vector<uint8_t> buf(70000);
            alignas(cmsghdr) char ctrl[256];
            while (!m_stop) {
                double before = now();
                pollfd p{fd, POLLIN, 0};
                if (::poll(&p, 1, 20) <= 0) {
                    m_drained_to = before;  // nothing queued that arrived before `before`
                    continue;
                }
                sockaddr_ll ll{};
                iovec iov{buf.data(), buf.size()};
                msghdr mh{};
                mh.msg_name = &ll;
                mh.msg_namelen = sizeof ll;
                mh.msg_iov = &iov;
                mh.msg_iovlen = 1;
                mh.msg_control = ctrl;
                mh.msg_controllen = sizeof ctrl;
                ssize_t n = ::recvmsg(fd, &mh, 0);
                if (n <= 0) continue;
                if (ll.sll_pkttype == PACKET_OUTGOING || ll.sll_ifindex == bridge_ifindex) continue;
                double t = now();
                for (cmsghdr* c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c))
                    if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SO_TIMESTAMPNS) {
                        timespec ts;
                        std::memcpy(&ts, CMSG_DATA(c), sizeof ts);
                        t = double(int64_t(ts.tv_sec) * 1000000000 + ts.tv_nsec - m_epoch_ns) / 1e6;
                    }
                record(buf.data(), size_t(n), t);
            }
            tpacket_stats st{};
            socklen_t sl = sizeof st;
            if (::getsockopt(fd, SOL_PACKET, PACKET_STATISTICS, &st, &sl) == 0) m_kernel_drops += st.tp_drops;
            ::close(fd);
        });
        for (int i = 0; i < 200 && state == 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
        if (state != 1) return Error(ErrorDomain::Io, 0, "cannot open the packet tap in " + ns);
        return {};
    }
    void stop() {
        m_stop = true;
        if (m_thread.joinable()) m_thread.join();
    }
    uint64_t kernel_drops() const { return m_kernel_drops; }
    size_t frames() {
        std::lock_guard l(m_mu);
        return m_frames.size();
    }
    double now() const { return double(realtime_ns() - m_epoch_ns) / 1e6; }
    // Frames between two outer addresses (either direction) that arrived in [t0, t1].
    std::vector<WireFrame> between(uint32_t a, uint32_t b, double t0, double t1) {
        std::vector<WireFrame> out;
        for (auto& f : window(t0, t1))
            if ((f.src == a && f.dst == b) || (f.src == b && f.dst == a)) out.push_back(f);
        return out;
    }
    std::vector<WireFrame> window(double t0, double t1) {
        // Wait until the tap has read everything that arrived before t1.
        for (int i = 0; i < 300 && m_drained_to < t1 && m_thread.joinable(); ++i)
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
        std::lock_guard l(m_mu);
        std::vector<WireFrame> out;
        for (auto& f : m_frames)
            if (f.t >= t0 && f.t <= t1) out.push_back(f);
        return out;
    }

private:
    static int64_t realtime_ns() {
        timespec ts;
        ::clock_gettime(CLOCK_REALTIME, &ts);
        return int64_t(ts.tv_sec) * 1000000000 + ts.tv_nsec;
    }
    void record(const uint8_t* d, size_t n, double t) {
        if (n < 14 + 20 || d[12] != 0x08 || d[13] != 0x00) return;
        const uint8_t* ip = d + 14;
        size_t ihl = size_t(ip[0] & 15) * 4;
        size_t tot = size_t(ip[2]) << 8 | ip[3];
        if ((ip[0] >> 4) != 4 || ihl < 20 || n < 14 + ihl) return;
        if (tot > n - 14) tot = n - 14;
        WireFrame f;
        f.t = t;
        f.proto = ip[9];
        std::memcpy(&f.src, ip + 12, 4);
        std::memcpy(&f.dst, ip + 16, 4);
        const uint8_t* l4 = ip + ihl;
        size_t l4len = tot - ihl;
        if ((f.proto == IPPROTO_UDP && l4len >= 8) || (f.proto == IPPROTO_TCP && l4len >= 20)) {
            f.sport = uint16_t(l4[0] << 8 | l4[1]);
            f.dport = uint16_t(l4[2] << 8 | l4[3]);
            size_t hl = f.proto == IPPROTO_UDP ? 8 : size_t(l4[12] >> 4) * 4;
            f.payload = l4len > hl ? l4len - hl : 0;
            const uint8_t* pl = l4 + hl;
            if (f.proto == IPPROTO_UDP) {
                if (f.sport == 500 || f.dport == 500)
                    f.kind = WireFrame::Kind::Ike;
                else if (f.sport == 4500 || f.dport == 4500) {
                    if (f.payload == 1 && pl[0] == 0xff)
                        f.kind = WireFrame::Kind::Keepalive;
                    else if (f.payload >= 4 && !pl[0] && !pl[1] && !pl[2] && !pl[3])
                        f.kind = WireFrame::Kind::Ike;
                    else
                        f.kind = WireFrame::Kind::Esp;
                }
            }
        }
        std::string_view all(reinterpret_cast<const char*>(d), n);
        f.marker = all.find(kMarker) != std::string_view::npos;
        std::lock_guard l(m_mu);
        m_frames.push_back(f);
    }

    int64_t m_epoch_ns;
    std::thread m_thread;
    std::atomic<bool> m_stop{false};
    std::atomic<double> m_drained_to{-1};
    std::atomic<uint64_t> m_kernel_drops{0};
    std::mutex m_mu;
    std::vector<WireFrame> m_frames;
};

// IKE datagrams between two outer addresses: messages, bytes, round trips (a run of datagrams
// from the responder after one from the initiator counts as one).
Measure ike_measure(const std::vector<WireFrame>& frames, uint32_t initiator) {
    Measure m;
    bool last_from_init = false;
    for (auto& f : frames) {
        if (f.kind != WireFrame::Kind::Ike) continue;
        m.messages += 1;
        m.bytes += f.payload;
        bool from_init = f.src == initiator;
        if (!from_init && last_from_init) m.round_trips += 1;
        last_from_init = from_init;
    }
    return m;
}

Result<json> control(const std::string& sock, const json& req) {
    return runtime::control_request(sock, req, 3000);
}
// The first request after start: the socket file exists from bind() a moment before listen().
Result<json> control_first(const std::string& sock, const json& req) {
    for (int i = 0;; ++i) {
        auto r = control(sock, req);
        if (r.ok() || i >= 100) return r;
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
}
Status control_ok(const std::string& sock, const json& req) {
    auto r = control(sock, req);
    if (!r.ok()) return std::move(r).error();
    return {};
}

bool failed_event(const json& e) {
    std::string k = e.value("kind", "");
    return k == "AUTH_FAILED" || k == "NEGOTIATION_FAILED" || k == "PEER_DEAD" ||
           (k == "PEER_NOTIFY" && e.value("code", 0) < 16384);
}

constexpr int kAuthFailurePeerRejected = 102;  // ikev2 auth_failure::PeerRejected
constexpr int kAuthFailedNotify = 24;          // AUTHENTICATION_FAILED
constexpr int kUntrustedCa = 1;                // x509::VerifyFailure::UntrustedCa

std::string first_cert(const std::string& pem) {
    const std::string end = "-----END CERTIFICATE-----";
    auto p = pem.find(end);
    return p == std::string::npos ? pem : pem.substr(0, p + end.size()) + "\n";
}

std::string quote(const std::string& s) {
    return "\"" + s + "\"";
}

}  // namespace

// ------------------------------------------------------------------ preflight
std::string lab_unavailable_reason() {
    if (::geteuid() != 0) return "needs root: it creates network namespaces, veth links, a bridge and TUN devices";
    if (::access("/dev/net/tun", R_OK | W_OK) != 0) return "no /dev/net/tun (TUN devices unavailable)";
    if (ipcmd::ip_binary().empty()) return "iproute2 `ip` is not installed";
    std::string probe = std::string(kPrefix) + std::to_string(::getpid()) + "-probe";
    if (auto st = ipcmd::netns_add(probe); !st.ok())
        return "cannot create network namespaces here: " + st.error().detail();
    auto bridge = ipcmd::bridge_add(probe, kBridgeIf);
    (void)ipcmd::netns_del(probe);
    if (!bridge.ok()) return "the kernel has no bridge support: " + bridge.error().detail();
    return "";
}

Status check_lab_names(const policy::DeploymentConfig& cfg, const std::string& run_id) {
    for (const auto& h : cfg.henbs)
        if (auto st = ipcmd::check_netns_name(std::string(kPrefix) + run_id + "-" + h.name); !st.ok())
            return Error(st.error()).context("deployment.toml [[henb]] name");
    return {};
}

std::vector<std::string> lab_teardown() {
    std::vector<std::string> removed;
    DIR* d = ::opendir("/run/netns");
    std::vector<std::string> names;
    if (d) {
        while (auto* e = ::readdir(d)) {
            std::string n = e->d_name;
            if (n.rfind(kPrefix, 0) == 0 && ipcmd::check_netns_name(n).ok()) names.push_back(n);
        }
        ::closedir(d);
    }
    for (auto& n : names) {
        auto dash = n.find('-');
        pid_t owner = pid_t(std::atol(n.substr(std::strlen(kPrefix), dash - std::strlen(kPrefix)).c_str()));
        if (owner > 0 && owner != ::getpid() && ::kill(owner, 0) == 0) continue;  // a running lab owns it
        for (int round = 0; round < 2; ++round) {
            auto pids = ipcmd::netns_pids(n);
            if (pids.ok())
                for (pid_t p : *pids) ::kill(p, round ? SIGKILL : SIGTERM);
            if (!round) std::this_thread::sleep_for(std::chrono::milliseconds(500));
        }
        if (ipcmd::netns_del(n).ok()) removed.push_back(n);
    }
    std::error_code ec;
    for (auto& e : fs::directory_iterator("/tmp", ec)) {
        auto f = e.path() / "lab.pid";
        if (e.path().filename().string().rfind("x2sec-lab-", 0) != 0 || !fs::exists(f, ec)) continue;
        auto t = read_text_file(f.string());
        pid_t owner = t.ok() ? pid_t(std::atol(t->c_str())) : 0;
        if (owner > 0 && owner != ::getpid() && ::kill(owner, 0) == 0) continue;
        fs::remove_all(e.path(), ec);
        removed.push_back(e.path().string());
    }
    return removed;
}

std::string report_json(const DemoReport& r) {
    json j;
    j["workdir"] = r.workdir;
    j["environment"] = r.environment;
    j["topology"] = r.topology;
    j["notes"] = r.notes;
    j["backhaul"] = {{"note", r.backhaul_note},
                     {"messages", r.backhaul.messages},
                     {"bytes", r.backhaul.bytes},
                     {"round_trips", r.backhaul.round_trips},
                     {"time_ms", r.backhaul.time_ms}};
    j["cases"] = json::array();
    for (auto& c : r.cases) {
        json cj = {{"id", c.id},
                   {"a", c.a},
                   {"b", c.b},
                   {"available", c.available},
                   {"ok", c.ok},
                   {"outcome", c.outcome},
                   {"state_a", c.state_a},
                   {"state_b", c.state_b},
                   {"steps", c.steps},
                   {"x2_sent", c.x2_sent},
                   {"x2_delivered_intact", c.x2_delivered_intact},
                   {"plaintext_on_wire", c.plaintext_on_wire},
                   {"tcp_sent", c.tcp_sent},
                   {"tcp_received", c.tcp_received},
                   {"tcp_intact", c.tcp_intact},
                   {"esp_packets_on_wire", c.esp_packets_on_wire},
                   {"esp_bytes_on_wire", c.esp_bytes_on_wire},
                   {"clear_inner_frames_on_wire", c.clear_inner_frames_on_wire},
                   {"dataplane", c.dataplane},
                   {"warnings", c.warnings}};
        cj["setup"] = {{"messages", c.setup.messages},
                       {"bytes", c.setup.bytes},
                       {"round_trips", c.setup.round_trips},
                       {"time_ms", c.setup.time_ms},
                       {"entities", c.setup.entities}};
        for (auto& [name, m] : c.phases)
            cj["phases"][name] = {
                {"messages", m.messages}, {"bytes", m.bytes}, {"round_trips", m.round_trips}, {"time_ms", m.time_ms}};
        j["cases"].push_back(cj);
    }
    return j.dump(2);
}

namespace {

struct LabNode : NodeKeys {
    std::string name, ns;
    int index = 0;
    IpAddress bh_outer, lan, bh_inner, x2_inner;
    Proc backhaul, direct;
};

// The namespace fabric: every end is an x2sec process in its own network namespace, driven
// over its control socket; a packet tap on the LAN bridge counts what is on the wire.
class Lab final : public Fabric {
public:
    Lab(const LabOptions& o, std::string dir)
        : m_opt(o),
          m_dir(std::move(dir)),
          m_id(std::to_string(::getpid())),
          m_epoch(std::chrono::steady_clock::now()) {}
    ~Lab() override {
        if (m_kds_tls) m_kds_tls->stop();
        if (m_http) m_http->stop();
        m_tap.stop();
    }

    std::string ns(const std::string& role) const { return kPrefix + m_id + "-" + role; }
    // Fabric
    Millis now() override { return Millis(ms_since(m_epoch)); }
    double clock_ms() override { return ms_since(m_epoch); }
    Agent& agent(const std::string& henb) override { return *m_agents.at(henb); }
    NodeKeys& keys(const std::string& henb) override { return m_nodes.at(henb); }
    bool has_kds() const override { return m_cfg.kds.has_value(); }
    Result<Carried> backhaul(const policy::HenbConfig& h) override;
    Result<Enrolled> enrol(const policy::HenbConfig& h) override;
    Result<FetchedKey> fetch_key(const policy::HenbConfig& h, const policy::NeighbourConfig& n) override;
    Result<Carried> ike(IkeAttempt& attempt) override;

    Status build(DemoReport& report);
    Status start_services();
    void run_backhaul(DemoReport& report);
    CaseReport run_case(const std::string& id, const std::string& title, const std::string& a, const std::string& b);
    std::map<std::string, std::unique_ptr<Agent>>& agents() { return m_agents; }
    std::string tap_note() {
        m_tap.stop();
        return "packet tap on the LAN bridge: " + std::to_string(m_tap.frames()) + " IPv4 frames recorded, " +
               std::to_string(m_tap.kernel_drops()) + " dropped by the kernel (wire figures are exact when 0)";
    }
    void stop_processes() {
        for (auto& [n, node] : m_nodes) {
            stop(node.direct);
            stop(node.backhaul);
        }
        stop(m_segw);
    }

private:
    Status make_pki();
    Status link(const std::string& node_ns, int port_index) const;
    std::string ike_config(const std::string& file, const std::string& sock, const std::string& self,
                           const std::vector<std::string>& anchors, const std::string& cert_pem,
                           const SecureBytes& key_pem, const std::string& peers_toml);
    std::string peer_toml(const std::string& name, const IpAddress& local, const IpAddress& remote,
                          const std::string& local_id, const std::string& remote_id, bool psk, const SecureBytes& key,
                          const std::vector<std::string>& trust, const IpAddress& local_ts,
                          const std::string& remote_ts);
    void traffic(CaseReport& c, LabNode& a, LabNode& b, bool ipsec);

    LabOptions m_opt;
    std::string m_dir, m_id;
    std::chrono::steady_clock::time_point m_epoch;
    WireTap m_tap;
    policy::DeploymentConfig m_cfg;
    std::unique_ptr<LabCa> m_vendor_a, m_vendor_b, m_operator;
    LabCredential m_kds_cred, m_segw_cred;
    std::map<std::string, LabNode> m_nodes;
    std::map<std::string, std::unique_ptr<Agent>> m_agents;
    Proc m_segw;
    SystemClock m_clock;
    std::unique_ptr<kds::Server> m_kds;
    std::unique_ptr<kds::TlsServer> m_kds_tls;
    std::unique_ptr<cmp::Store> m_store;
    std::unique_ptr<cmp::Server> m_cmp;
    std::unique_ptr<cmp::HttpServer> m_http;
    const IpAddress m_segw_outer = IpAddress::v4(198, 51, 100, 1);
    const IpAddress m_core_inner = IpAddress::v4(203, 0, 113, 1);
};

Status Lab::make_pki() {
    int64_t nb = m_clock.unix_seconds() - 3600;
    X2SEC_TRY(LabCa a, LabCa::create("Vendor A Root CA", "Vendor A", nb, 3650));
    X2SEC_TRY(LabCa b, LabCa::create("Vendor B Root CA", "Vendor B", nb, 3650));
    X2SEC_TRY(LabCa op, LabCa::create("Operator Root CA", "Operator", nb, 3650));
    m_vendor_a = std::make_unique<LabCa>(std::move(a));
    m_vendor_b = std::make_unique<LabCa>(std::move(b));
    m_operator = std::make_unique<LabCa>(std::move(op));
    X2SEC_TRY(m_kds_cred, m_operator->issue("kds.operator.example", nb, 365));
    X2SEC_TRY(m_segw_cred, m_operator->issue("segw.operator.example", nb, 365));
    X2SEC_TRY_STATUS(write_file_atomic(m_dir + "/vendor-a-root.pem", m_vendor_a->root_pem()));
    X2SEC_TRY_STATUS(write_file_atomic(m_dir + "/vendor-b-root.pem", m_vendor_b->root_pem()));
    X2SEC_TRY_STATUS(write_file_atomic(m_dir + "/operator-root.pem", m_operator->root_pem()));
    return {};
}

Status Lab::link(const std::string& node_ns, int port_index) const {
    std::string port = "x2sp" + std::to_string(port_index);
    if (auto st = ipcmd::veth_add(node_ns, kLanIf, ns("sw"), port); !st.ok())
        return Error(st.error()).context("the veth pair for " + node_ns);
    for (const auto& st :
         {ipcmd::link_up(ns("sw"), port, kBridgeIf), ipcmd::link_up(node_ns, kLanIf), ipcmd::link_up(node_ns, "lo")})
        if (!st.ok()) return Error(st.error()).context("the links of " + node_ns);
    return {};
}

Status Lab::build(DemoReport& report) {
    X2SEC_TRY_STATUS(make_pki());
    // The demo's deployment (or the caller's, with the same placeholders), with the lab's addresses.
    std::string toml = m_opt.deployment.empty() ? default_deployment_template() : m_opt.deployment;
    std::vector<std::string> henbs;
    for (size_t p = toml.find("${PORT_henb-"); p != std::string::npos; p = toml.find("${PORT_henb-", p + 1)) {
        auto e = toml.find('}', p);
        henbs.push_back(toml.substr(p + 7, e - p - 7));
    }
    auto replace = [&](const std::string& from, const std::string& to) {
        for (size_t p = toml.find(from); p != std::string::npos; p = toml.find(from, p + to.size()))
            toml.replace(p, from.size(), to);
    };
    replace("127.0.0.1:${PORT_segw}", m_segw_outer.to_string() + ":500");
    replace("127.0.0.1:${PORT_cmp}", m_core_inner.to_string() + ":" + std::to_string(kCmpPort));
    replace("127.0.0.1:${PORT_kds}", m_core_inner.to_string() + ":" + std::to_string(kKdsPort));
    replace("${B1_CMP}", "true");
    int i = 0;
    for (auto& h : henbs) {
        ++i;
        replace("127.0.0.1:${PORT_" + h + "}", "192.0.2." + std::to_string(10 + i) + ":500");
    }
    replace(
        "# x2sec demo deployment (embedded default).  Every H(e)NB, the SeGW, the operator RA/CA\n"
        "# and the KDS run on 127.0.0.1 with distinct ports; ${...} are filled in at start.",
        "# x2sec lab deployment: the demo's, with the lab's namespace addresses.");
    X2SEC_TRY_STATUS(write_file_atomic(m_dir + "/deployment.toml", toml));
    X2SEC_TRY(m_cfg, policy::parse_config(toml, "deployment.toml", m_dir));
    // H(e)NB names become namespace names: all of them are checked before anything is created.
    X2SEC_TRY_STATUS(check_lab_names(m_cfg, m_id));

    // ---------------------------------------------------------------- namespaces and links
    for (auto role : {"sw", "core"}) {
        X2SEC_TRY_STATUS(ipcmd::netns_add(ns(role)));
        janitor().add_ns(ns(role));
    }
    X2SEC_TRY_STATUS(ipcmd::bridge_add(ns("sw"), kBridgeIf));
    X2SEC_TRY_STATUS(ipcmd::link_up(ns("sw"), kBridgeIf));
    X2SEC_TRY_STATUS(link(ns("core"), 0));
    X2SEC_TRY_STATUS(ipcmd::addr_add(ns("core"), m_segw_outer, 24, kLanIf));
    report.topology.push_back(ns("sw") + ": bridge x2sbr (the LAN), packet tap");
    report.topology.push_back(
        ns("core") + ": SeGW 198.51.100.1, TUN x2ssegw 203.0.113.1/24; RA/CA http://203.0.113.1:" +
        std::to_string(kCmpPort) + ", KDS 203.0.113.1:" + std::to_string(kKdsPort) + " (only through the backhaul)");
    int64_t nb = m_clock.unix_seconds() - 3600;
    i = 0;
    for (auto& h : m_cfg.henbs) {
        ++i;
        LabNode n;
        n.name = h.name;
        n.index = i;
        n.ns = ns(h.name);
        n.bh_outer = IpAddress::v4(198, 51, 100, uint8_t(10 + i));
        n.lan = IpAddress::v4(192, 0, 2, uint8_t(10 + i));
        n.bh_inner = IpAddress::v4(203, 0, 113, uint8_t(10 + i));
        n.x2_inner = IpAddress::v4(203, 0, 113, uint8_t(100 + i));
        LabCa* ca = h.certificate_anchor == "vendor-b" ? m_vendor_b.get() : m_vendor_a.get();
        X2SEC_TRY(n.vendor, ca->issue(h.identity, nb, 365));
        X2SEC_TRY_STATUS(ipcmd::netns_add(n.ns));
        janitor().add_ns(n.ns);
        X2SEC_TRY_STATUS(link(n.ns, i));
        X2SEC_TRY_STATUS(ipcmd::addr_add(n.ns, n.bh_outer, 24, kLanIf));
        X2SEC_TRY_STATUS(ipcmd::addr_add(n.ns, n.lan, 24, kLanIf));
        report.topology.push_back(n.ns + ": " + h.identity + " (" + h.certificate_anchor + "), backhaul " +
                                  n.bh_outer.to_string() + " -> TUN x2sbh " + n.bh_inner.to_string() + ", LAN " +
                                  n.lan.to_string() + " -> TUN x2sx2 " + n.x2_inner.to_string());
        m_nodes[h.name] = std::move(n);
    }
    X2SEC_TRY_STATUS(m_tap.start(ns("sw"), "x2sbr"));
    for (auto& h : m_cfg.henbs) m_agents[h.name] = std::make_unique<Agent>(m_cfg, h.name, make_operations(*this));
    return {};
}

std::string Lab::peer_toml(const std::string& name, const IpAddress& local, const IpAddress& remote,
                           const std::string& local_id, const std::string& remote_id, bool psk, const SecureBytes& key,
                           const std::vector<std::string>& trust, const IpAddress& local_ts,
                           const std::string& remote_ts) {
    std::ostringstream o;
    o << "[[peer]]\nname = " << quote(name) << "\nlocal_addr = " << quote(local.to_string())
      << "\nremote_addr = " << quote(remote.to_string()) << "\nlocal_id = " << quote("fqdn:" + local_id)
      << "\nremote_id = " << quote("fqdn:" + remote_id) << "\n";
    if (psk) {
        o << "auth = \"psk\"\npsk = " << quote("hex:" + to_hex(key.view())) << "\n";
    } else {
        o << "auth = \"cert\"\ncredential = \"self\"\ntrust = [";
        for (size_t k = 0; k < trust.size(); ++k) o << (k ? ", " : "") << quote(trust[k]);
        o << "]\n";
    }
    o << "force_encap = true\nike_rekey = 0\ndpd_interval = 0\nike_proposals = [\"aes128gcm16-prfsha256-ecp256\"]\n"
      << "  [[peer.child]]\n  name = \"x2\"\n  local_ts = " << quote(local_ts.to_string() + "/32")
      << "\n  remote_ts = " << quote(remote_ts) << "\n  esp_proposals = [\"aes128gcm16\"]\n  rekey = 0\n\n";
    return o.str();
}

std::string Lab::ike_config(const std::string& file, const std::string& sock, const std::string& self,
                            const std::vector<std::string>& anchors, const std::string& cert_pem,
                            const SecureBytes& key_pem, const std::string& peers_toml) {
    std::ostringstream o;
    o << "# written by x2sec lab for " << self << "\n[runtime]\ncontrol_socket = " << quote(sock)
      << "\nlog_level = \"warn\"\n\n[engine]\nretransmit_timeout = \"1s\"\nretransmit_tries = 3\n\n";
    for (auto& label : anchors) {
        auto* a = m_cfg.anchor(label);
        if (a) o << "[[trust_anchor]]\nlabel = " << quote(label) << "\nfile = " << quote(a->file) << "\n";
    }
    if (!cert_pem.empty()) {
        (void)write_file_atomic(file + ".crt", first_cert(cert_pem));
        (void)write_file_atomic(file + ".key", key_pem.view(), 0600);
        o << "\n[[credential]]\nname = \"self\"\nkey = " << quote(file + ".key") << "\ncerts = ["
          << quote(file + ".crt") << "]\n";
    }
    o << "\n" << peers_toml;
    return o.str();
}

Status Lab::start_services() {
    // ---------------------------------------------------------------- SeGW (backhaul endpoint)
    std::string peers;
    for (auto& [name, n] : m_nodes)
        peers += peer_toml(name, m_segw_outer, n.bh_outer, "segw.operator.example", m_cfg.henb(name)->identity, false,
                           {}, {"vendor-a", "vendor-b"}, m_core_inner, n.bh_inner.to_string() + "/32");
    std::string file = m_dir + "/segw.toml";
    m_segw.control = m_dir + "/segw.sock";
    X2SEC_TRY_STATUS(write_file_atomic(file,
                                       ike_config(file, m_segw.control, "segw", {"vendor-a", "vendor-b"},
                                                  m_segw_cred.chain_pem, m_segw_cred.key_pem, peers),
                                       0600));
    X2SEC_TRY(m_segw,
              spawn(ns("core"),
                    {m_opt.x2sec_binary, "--log-level", "warn", "esp", "--no-offload", "--tun", "x2ssegw", "--tun-addr",
                     m_core_inner.to_string() + "/24", "--local", m_segw_outer.to_string(), "--ike-config", file},
                    "segw", m_dir, !m_opt.keep));
    m_segw.control = m_dir + "/segw.sock";
    X2SEC_TRY_STATUS(wait_ready(m_segw, m_opt.wait_s * 1000));

    // ---------------------------------------------------------------- KDS on the core's inner address
    if (m_cfg.kds) {
        kds::ServerConfig kc = detail::kds_server_config(m_cfg, m_opt.kds_refuses);
        m_kds = std::make_unique<kds::Server>(kc, os_rng());
        m_kds_tls = std::make_unique<kds::TlsServer>(*m_kds, m_clock);
        kds::TlsCredentials tc{m_kds_cred.chain_pem, m_kds_cred.key_pem,
                               m_vendor_a->root_pem() + m_vendor_b->root_pem() + m_operator->root_pem()};
        Status st;
        X2SEC_TRY_STATUS(in_ns(ns("core"), [&] { st = m_kds_tls->start(m_core_inner.to_string(), kKdsPort, tc); }));
        if (!st.ok()) return st.error();
    }
    // ---------------------------------------------------------------- RA/CA
    if (m_cfg.cmp && !m_opt.ra_down) {
        X2SEC_TRY(m_store, cmp::open_sqlite_store(":memory:"));
        cmp::ServerConfig sc;
        sc.ca_cert = pki::up_ref(m_operator->cert());
        sc.ca_key = pki::up_ref(m_operator->key());
        X2SEC_TRY(auto ra, m_operator->issue("ra.operator.example", m_clock.unix_seconds() - 3600, 365));
        X2SEC_TRY(sc.ra_cert, detail::pem_to_x509(ra.cert_pem));
        X2SEC_TRY(sc.ra_key, pki::private_key_from_pem(ra.key_pem.view()));
        sc.ra_chain.push_back(pki::up_ref(m_operator->cert()));
        sc.vendor_roots.push_back(pki::up_ref(m_vendor_a->cert()));
        sc.vendor_roots.push_back(pki::up_ref(m_vendor_b->cert()));
        m_cmp = std::make_unique<cmp::Server>(std::move(sc), *m_store);
        cmp::HttpOptions ho;
        ho.bind = m_core_inner.to_string();
        ho.port = kCmpPort;
        ho.threads = 2;
        m_http = std::make_unique<cmp::HttpServer>(*m_cmp, ho);
        Status st;
        X2SEC_TRY_STATUS(in_ns(ns("core"), [&] { st = m_http->start(); }));
        if (!st.ok()) return st.error();
    }
    return {};
}

// ---------------------------------------------------------------- backhaul: device certificate
Result<Carried> Lab::backhaul(const policy::HenbConfig& h) {
    auto& n = m_nodes.at(h.name);
    std::string file = m_dir + "/" + h.name + "-backhaul.toml";
    n.backhaul.control = m_dir + "/" + h.name + "-backhaul.sock";
    std::string peers = peer_toml("segw", n.bh_outer, m_segw_outer, h.identity, "segw.operator.example", false, {},
                                  {"operator"}, n.bh_inner, m_core_inner.to_string() + "/32");
    X2SEC_TRY_STATUS(write_file_atomic(
        file, ike_config(file, n.backhaul.control, n.name, {"operator"}, n.vendor.chain_pem, n.vendor.key_pem, peers),
        0600));
    std::string sock = n.backhaul.control;
    X2SEC_TRY(n.backhaul, spawn(n.ns,
                                {m_opt.x2sec_binary, "--log-level", "warn", "esp", "--no-offload", "--tun", "x2sbh",
                                 "--tun-addr", n.bh_inner.to_string() + "/32", "--local", n.bh_outer.to_string(),
                                 "--route", m_core_inner.to_string() + "/32", "--ike-config", file},
                                h.name + "-backhaul", m_dir, !m_opt.keep));
    n.backhaul.control = sock;
    X2SEC_TRY_STATUS(wait_ready(n.backhaul, m_opt.wait_s * 1000));
    X2SEC_TRY(auto ev0, control_first(sock, {{"cmd", "events"}, {"since", UINT64_MAX}}));
    uint64_t since = ev0.value("next", uint64_t(0));
    double w0 = m_tap.now();
    auto x0 = std::chrono::steady_clock::now();
    X2SEC_TRY_STATUS(control_ok(sock, {{"cmd", "initiate"}, {"peer", "segw"}}));
    std::string why;
    bool up = false;
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(m_opt.wait_s);
    while (!up && why.empty() && std::chrono::steady_clock::now() < deadline) {
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
        auto ev = control(sock, {{"cmd", "events"}, {"since", since}});
        if (!ev.ok()) continue;
        for (auto& e : (*ev)["events"]) {
            if (e.value("kind", "") == "CHILD_SA_UP")
                up = true;
            else if (failed_event(e))
                why = e.value("kind", "") + " " + e.value("detail", "");
        }
    }
    if (!up) return Error(ErrorDomain::Ike, 0, why.empty() ? "no backhaul IKE SA with the SeGW" : why);
    Carried c;
    c.measure = ike_measure(m_tap.between(v4(n.bh_outer), v4(m_segw_outer), w0, m_tap.now()), v4(n.bh_outer));
    c.measure.time_ms = ms_since(x0);  // the exchange (process start excluded)
    c.detail = "IKE SA + Child SA " + n.bh_inner.to_string() + " === " + m_core_inner.to_string() +
               " with the SeGW (device certificate), ESP on TUN x2sbh";
    return c;
}

// ---------------------------------------------------------------- CMPv2 through the backhaul
Result<Enrolled> Lab::enrol(const policy::HenbConfig& h) {
    auto& n = m_nodes.at(h.name);
    double w0 = m_tap.now();
    std::optional<Result<detail::OperatorEnrolment>> e;
    X2SEC_TRY_STATUS(
        in_ns(n.ns, [&] { e = detail::enrol_operator(m_cfg.cmp->url, n.vendor, m_operator->root_pem(), h.identity); }));
    if (!e->ok()) return std::move(*e).error();
    auto esp = m_tap.between(v4(n.bh_outer), v4(m_segw_outer), w0, m_tap.now());
    size_t esp_pkts = 0, esp_bytes = 0;
    for (auto& f : esp)
        if (f.kind == WireFrame::Kind::Esp) {
            esp_pkts += 1;
            esp_bytes += f.payload;
        }
    Enrolled out{std::move((*e)->key_pem), std::move((*e)->cert_pem), (*e)->serial_hex, {}};
    out.carried.measure.messages = (*e)->messages;
    out.carried.measure.bytes = (*e)->bytes;
    out.carried.detail = "serial " + (*e)->serial_hex + ", over HTTP to " + m_core_inner.to_string() +
                         " inside the backhaul: " + std::to_string(esp_pkts) + " ESP packets (" +
                         std::to_string(esp_bytes) + " bytes) on the LAN";
    return out;
}

// ---------------------------------------------------------------- KDS through the backhaul
Result<FetchedKey> Lab::fetch_key(const policy::HenbConfig& h, const policy::NeighbourConfig& nc) {
    auto& n = m_nodes.at(h.name);
    kds::TlsCredentials tc{n.vendor.chain_pem, n.vendor.key_pem, m_operator->root_pem()};
    kds::KeyRequest req;
    req.request_id = os_rng().u32();
    req.requester = h.identity;
    req.peer = nc.identity;
    kds::TransferStats st;
    std::optional<Result<kds::KeyResponse>> resp;
    X2SEC_TRY_STATUS(in_ns(n.ns, [&] {
        resp = kds::fetch_key(m_cfg.kds->address.host, m_cfg.kds->address.port, m_cfg.kds->identity, tc, req, &st);
    }));
    if (!resp->ok()) return std::move(*resp).error();
    FetchedKey k{std::move((*resp)->key), to_hex((*resp)->key_id), {}};
    k.carried.measure.messages = st.messages;
    k.carried.measure.bytes = st.bytes_sent + st.bytes_received;
    k.carried.measure.round_trips = st.round_trips;
    k.carried.detail = "mutual TLS to " + m_cfg.kds->address.host + " inside the backhaul, generation " +
                       std::to_string((*resp)->generation);
    return k;
}

// ---------------------------------------------------------------- direct-interface IKE
Result<Carried> Lab::ike(IkeAttempt& at) {
    const IkeEnd& ia = at.initiator;
    const IkeEnd& ib = at.responder;
    const std::string& peer_name = ib.name;
    Credential cred = ia.cred;
    auto t0 = std::chrono::steady_clock::now();
    auto& a = m_nodes.at(ia.name);
    auto& b = m_nodes.at(ib.name);
    stop(a.direct);
    stop(b.direct);
    // One direct-interface IKE/ESP process per side, configured with the credential the
    // agent's decision produced.
    auto start = [&](LabNode& self, LabNode& other, const IkeEnd& me, const std::string& other_identity) -> Status {
        const policy::HenbConfig& sc = *me.henb;
        std::string file = m_dir + "/" + self.name + "-x2.toml";
        std::string sock = m_dir + "/" + self.name + "-x2.sock";
        bool is_psk = me.cred == Credential::PairwiseKey;
        std::string peers = peer_toml(other.name, self.lan, other.lan, sc.identity, other_identity, is_psk, *me.psk,
                                      sc.trust_anchors, self.x2_inner, other.x2_inner.to_string() + "/32");
        X2SEC_TRY_STATUS(
            write_file_atomic(file,
                              ike_config(file, sock, self.name, is_psk ? std::vector<std::string>{} : sc.trust_anchors,
                                         is_psk ? std::string() : me.cert_pem, me.key_pem, peers),
                              0600));
        X2SEC_TRY(self.direct,
                  spawn(self.ns,
                        {m_opt.x2sec_binary, "--log-level", "warn", "esp", "--no-offload", "--tun", "x2sx2",
                         "--tun-addr", self.x2_inner.to_string() + "/32", "--local", self.lan.to_string(), "--route",
                         other.x2_inner.to_string() + "/32", "--ike-config", file},
                        self.name + "-x2", m_dir, !m_opt.keep));
        self.direct.control = sock;
        return wait_ready(self.direct, m_opt.wait_s * 1000);
    };
    X2SEC_TRY_STATUS(start(b, a, ib, ia.identity));
    X2SEC_TRY_STATUS(start(a, b, ia, ib.identity));
    X2SEC_TRY(auto ea, control_first(a.direct.control, {{"cmd", "events"}, {"since", UINT64_MAX}}));
    X2SEC_TRY(auto eb, control_first(b.direct.control, {{"cmd", "events"}, {"since", UINT64_MAX}}));
    uint64_t since_a = ea.value("next", uint64_t(0)), since_b = eb.value("next", uint64_t(0));
    double start_ms = ms_since(t0);
    auto x0 = std::chrono::steady_clock::now();
    double w0 = m_tap.now();
    X2SEC_TRY_STATUS(control_ok(a.direct.control, {{"cmd", "initiate"}, {"peer", peer_name}}));
    bool up_a = false, up_b = false;
    std::optional<json> fail_a, fail_b;
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(m_opt.wait_s);
    std::optional<std::chrono::steady_clock::time_point> grace;
    while (std::chrono::steady_clock::now() < deadline) {
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
        for (auto [sock, since, up, fail] : {std::tuple{&a.direct.control, &since_a, &up_a, &fail_a},
                                             std::tuple{&b.direct.control, &since_b, &up_b, &fail_b}}) {
            auto ev = control(*sock, {{"cmd", "events"}, {"since", *since}});
            if (!ev.ok()) continue;
            *since = ev->value("next", *since);
            for (auto& e : (*ev)["events"]) {
                if (e.value("kind", "") == "CHILD_SA_UP")
                    *up = true;
                else if (failed_event(e) && !*fail)
                    *fail = e;
            }
        }
        if (up_a && up_b) break;
        if ((fail_a || fail_b) && !grace) grace = std::chrono::steady_clock::now() + std::chrono::milliseconds(300);
        if (grace && std::chrono::steady_clock::now() > *grace) break;
    }
    bool ok = up_a && up_b;
    Carried p;
    double exchange_ms = ms_since(x0);
    p.measure = ike_measure(m_tap.between(v4(a.lan), v4(b.lan), w0, m_tap.now()), v4(a.lan));
    p.measure.time_ms = exchange_ms;  // the exchange; starting the two processes is reported apart
    if (!ok) {
        auto kind = [](const std::optional<json>& f) { return f ? f->value("kind", "") : std::string(); };
        auto code = [](const std::optional<json>& f) { return f ? f->value("code", 0) : 0; };
        bool rejected = (kind(fail_a) == "AUTH_FAILED" && code(fail_a) == kAuthFailurePeerRejected) ||
                        (kind(fail_a) == "PEER_NOTIFY" && code(fail_a) == kAuthFailedNotify);
        at.failure.untrusted_ca = (kind(fail_a) == "AUTH_FAILED" && code(fail_a) == kUntrustedCa) ||
                                  (rejected && cred == Credential::VendorCertificate);
        if (kind(fail_b) == "AUTH_FAILED")
            at.responder_agent.observe_peer_failure(ia.name, code(fail_b) == kUntrustedCa, now());
        std::string why =
            fail_a ? fail_a->value("kind", "") + " " + fail_a->value("detail", "")
                   : (fail_b ? peer_name + ": " + fail_b->value("kind", "") + " " + fail_b->value("detail", "")
                             : "no IKE SA with " + peer_name + " within " + std::to_string(m_opt.wait_s) + " s");
        stop(a.direct);
        stop(b.direct);
        return Error(ErrorDomain::Ike, code(fail_a), why);
    }
    auto sas = control(a.direct.control, {{"cmd", "list-sas"}});
    if (sas.ok())
        for (auto& s : (*sas)["sas"])
            if (s.value("peer", "") == peer_name && s.value("state", "") == "ESTABLISHED") {
                p.detail = s.value("encr", "") + "/" + s.value("prf", "") + "/" + s.value("dh", "") + ", auth " +
                           s.value("local_auth", "");
                if (!s.value("peer_cert_anchor", "").empty())
                    p.detail += ", peer chains to '" + s.value("peer_cert_anchor", "") + "'";
                p.detail += ", ESP in UDP " + a.lan.to_string() + " <-> " + b.lan.to_string();
                char t[64];
                std::snprintf(t, sizeof t, " (processes started in %.0f ms)", start_ms);
                p.detail += t;
            }
    return p;
}

// GTP-U G-PDU (TS 29.281): flags 0x30, type 255, length, TEID, then the user payload.
Bytes gtpu(uint32_t teid, unsigned i, const std::string& dir) {
    std::string body = std::string(kMarker) + " GTP-U G-PDU " + dir + " #" + std::to_string(i) + " ";
    while (body.size() < 300) body += char('a' + body.size() % 26);
    const uint8_t hdr[8] = {0x30,
                            0xff,
                            uint8_t(body.size() >> 8),
                            uint8_t(body.size()),
                            uint8_t(teid >> 24),
                            uint8_t(teid >> 16),
                            uint8_t(teid >> 8),
                            uint8_t(teid)};
    Bytes b(8 + body.size());
    std::memcpy(b.data(), hdr, 8);
    std::memcpy(b.data() + 8, body.data(), body.size());
    return b;
}

std::string x2ap_stream(size_t n) {
    std::string s;
    s.reserve(n + 64);
    char line[64];
    for (size_t k = 0; s.size() < n; ++k) {
        std::snprintf(line, sizeof line, "%s X2AP-like stream %08zu\n", kMarker, k);
        s += line;
    }
    s.resize(n);
    return s;
}

std::string counters_line(const std::string& who, const json& st) {
    if (!st.is_object()) return who + ": no final status from the data plane";
    auto c = st.value("counters", json::object());
    auto get = [&](const char* k) { return c.value(k, uint64_t(0)); };
    std::ostringstream o;
    o << who << ": ESP tx " << get("esp.tx.packets") << " packets, rx " << get("esp.rx.packets") << " packets";
    uint64_t drops = 0;
    std::string which;
    for (auto& [k, v] : c.items())
        if (k.rfind("esp.drop.", 0) == 0 && v.get<uint64_t>()) {
            drops += v.get<uint64_t>();
            which += " " + k + "=" + std::to_string(v.get<uint64_t>());
        }
    o << ", drops " << drops << which;
    for (auto& sa : st.value("sas", json::array()))
        o << "; SA in " << sa.value("spi_in", "") << " " << sa.value("in_packets", 0) << " pkts/"
          << sa.value("in_bytes", 0) << " B, out " << sa.value("spi_out", "") << " " << sa.value("out_packets", 0)
          << " pkts/" << sa.value("out_bytes", 0) << " B";
    return o.str();
}

std::string tun_line(const std::string& ns, const std::string& dev) {
    auto text = ipcmd::link_stats_json(ns, dev);
    if (!text.ok()) return "";
    auto j = json::parse(*text, nullptr, false);
    if (j.is_discarded() || !j.is_array() || j.empty()) return "";
    auto s = j[0].value("stats64", json::object());
    auto rx = s.value("rx", json::object()), tx = s.value("tx", json::object());
    return "TUN " + dev + " tx " + std::to_string(tx.value("packets", 0)) + " pkts/" +
           std::to_string(tx.value("bytes", 0)) + " B, rx " + std::to_string(rx.value("packets", 0)) + " pkts/" +
           std::to_string(rx.value("bytes", 0)) + " B";
}

void Lab::traffic(CaseReport& c, LabNode& a, LabNode& b, bool ipsec) {
    IpAddress ia = ipsec ? a.x2_inner : a.lan, ib = ipsec ? b.x2_inner : b.lan;
    double w0 = m_tap.now();
    auto t0 = std::chrono::steady_clock::now();
    // ---------------------------------------------------------------- GTP-U both ways
    int ua = socket_in(a.ns, SOCK_DGRAM), ub = socket_in(b.ns, SOCK_DGRAM);
    auto bind_to = [](int fd, const IpAddress& ip, uint16_t port) {
        auto s = sin_of(ip, port);
        return fd >= 0 && ::bind(fd, reinterpret_cast<sockaddr*>(&s), sizeof s) == 0;
    };
    if (!bind_to(ua, ia, 2152) || !bind_to(ub, ib, 2152)) {
        c.outcome = "cannot bind GTP-U sockets to the X2 addresses";
    } else {
        for (auto [from, to, dst, dir, teid] : {std::tuple{ua, ub, ib, std::string("A->B"), 0x1000u},
                                                std::tuple{ub, ua, ia, std::string("B->A"), 0x2000u}}) {
            std::vector<Bytes> sent;
            for (unsigned k = 0; k < m_opt.gtpu_datagrams; ++k) {
                sent.push_back(gtpu(teid + k, k, dir));
                auto s = sin_of(dst, 2152);
                (void)::sendto(from, sent.back().data(), sent.back().size(), 0, reinterpret_cast<sockaddr*>(&s),
                               sizeof s);
                c.x2_sent += 1;
            }
            std::set<size_t> matched;
            auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(3);
            while (matched.size() < sent.size() && std::chrono::steady_clock::now() < deadline) {
                pollfd p{to, POLLIN, 0};
                if (::poll(&p, 1, 100) <= 0) continue;
                uint8_t buf[2048];
                ssize_t n = ::recv(to, buf, sizeof buf, 0);
                if (n <= 0) continue;
                Bytes got(buf, buf + n);
                for (size_t k = 0; k < sent.size(); ++k)
                    if (!matched.count(k) && got == sent[k]) {
                        matched.insert(k);
                        break;
                    }
            }
            c.x2_delivered_intact += matched.size();
        }
    }
    if (ua >= 0) ::close(ua);
    if (ub >= 0) ::close(ub);
    // ---------------------------------------------------------------- TCP stream A -> B (X2AP-like)
    const std::string data = x2ap_stream(m_opt.tcp_bytes);
    int ls = socket_in(b.ns, SOCK_STREAM), cs = socket_in(a.ns, SOCK_STREAM);
    int one = 1;
    if (ls >= 0) ::setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind_to(ls, ib, 36422) && ::listen(ls, 1) == 0 && cs >= 0) {
        std::string received;
        std::thread rx([&] {
            pollfd p{ls, POLLIN, 0};
            if (::poll(&p, 1, 5000) <= 0) return;
            int s = ::accept(ls, nullptr, nullptr);
            if (s < 0) return;
            timeval tv{10, 0};
            ::setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
            char buf[65536];
            for (ssize_t n; (n = ::read(s, buf, sizeof buf)) > 0;) received.append(buf, size_t(n));
            ::close(s);
        });
        timeval tv{10, 0};
        ::setsockopt(cs, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
        auto s = sin_of(ib, 36422);
        if (::connect(cs, reinterpret_cast<sockaddr*>(&s), sizeof s) == 0) {
            size_t off = 0;
            while (off < data.size()) {
                ssize_t n = ::send(cs, data.data() + off, data.size() - off, MSG_NOSIGNAL);
                if (n <= 0) break;
                off += size_t(n);
            }
            c.tcp_sent = off;
            ::shutdown(cs, SHUT_WR);
        }
        rx.join();
        c.tcp_received = received.size();
        c.tcp_intact = c.tcp_sent == data.size() && received == data;
    }
    if (ls >= 0) ::close(ls);
    if (cs >= 0) ::close(cs);
    c.traffic.time_ms = ms_since(t0);
    // ---------------------------------------------------------------- what the LAN carried
    std::set<uint32_t> inner;
    for (auto& [n, node] : m_nodes) inner.insert(v4(node.x2_inner));
    for (auto& f : m_tap.window(w0, m_tap.now())) {
        bool pair = (f.src == v4(a.lan) && f.dst == v4(b.lan)) || (f.src == v4(b.lan) && f.dst == v4(a.lan));
        if (inner.count(f.src) || inner.count(f.dst)) c.clear_inner_frames_on_wire += 1;
        if (f.marker) c.plaintext_on_wire = true;
        if (!pair) continue;
        c.traffic.messages += 1;
        c.traffic.bytes += f.payload;
        if (f.kind == WireFrame::Kind::Esp) {
            c.esp_packets_on_wire += 1;
            c.esp_bytes_on_wire += f.payload;
        }
    }
}

void Lab::run_backhaul(DemoReport& report) {
    auto t0 = std::chrono::steady_clock::now();
    for (auto& [name, agent] : m_agents) agent->ensure_backhaul(now());
    size_t up = 0;
    for (auto& [name, agent] : m_agents) {
        up += agent->backhaul_up() ? 1 : 0;
        for (auto& p : agent->node_phases())
            if (p.name == "backhaul") report.backhaul += p.measure;
    }
    report.backhaul.time_ms = ms_since(t0);
    report.backhaul_note =
        std::to_string(up) + "/" + std::to_string(m_agents.size()) +
        " H(e)NBs have their backhaul IKE SA to the SeGW up (device certificates, ESP on TUN x2sbh); "
        "the RA/CA and the KDS are reachable only through it";
    for (auto& [name, agent] : m_agents)
        if (!agent->backhaul_up()) report.backhaul_note += "; " + name + ": " + agent->backhaul_reason();
}

CaseReport Lab::run_case(const std::string& id, const std::string& title, const std::string& a, const std::string& b) {
    CaseReport c;
    auto [aa, ab] = detail::case_agents(c, id, title, a, b, m_agents);
    if (aa == nullptr) return c;
    auto t0 = std::chrono::steady_clock::now();
    ab->prepare(a, now());
    aa->prepare(b, now());
    if (aa->neighbour(b)->state == LinkState::Ready) aa->connect(b, now());
    double setup_ms = ms_since(t0);
    auto* na = aa->neighbour(b);
    auto* nb = ab->neighbour(a);
    detail::record_negotiation(c, *na, *nb);
    // Set-up time = the measured protocol phases (process starts excluded; the wall time is
    // shown as a step).
    {
        char t[96];
        std::snprintf(t, sizeof t, "[lab] decisions, processes and exchanges took %.0f ms wall time", setup_ms);
        c.steps.emplace_back(t);
    }
    auto& la = m_nodes.at(a);
    auto& lb = m_nodes.at(b);
    if (na->state == LinkState::PlainX2 && nb->state == LinkState::PlainX2) {
        traffic(c, la, lb, false);
        c.ok = c.x2_sent > 0 && c.x2_delivered_intact == c.x2_sent && c.tcp_intact;
        c.outcome = "plain X2 between " + la.lan.to_string() + " and " + lb.lan.to_string() +
                    ", unprotected by policy: " + std::to_string(c.x2_delivered_intact) + "/" +
                    std::to_string(c.x2_sent) + " GTP-U datagrams, TCP " + std::to_string(c.tcp_received) + "/" +
                    std::to_string(c.tcp_sent) + " bytes " + (c.tcp_intact ? "intact" : "NOT intact");
        return c;
    }
    if (na->state == LinkState::Up && nb->state == LinkState::Up) {
        traffic(c, la, lb, true);
        c.dataplane.push_back(a + " " + tun_line(la.ns, "x2sx2"));
        c.dataplane.push_back(b + " " + tun_line(lb.ns, "x2sx2"));
        json sa = stop(la.direct), sb = stop(lb.direct);
        c.dataplane.push_back(counters_line(a, sa));
        c.dataplane.push_back(counters_line(b, sb));
        auto esp_rx = [](const json& s) {
            return s.is_object() ? s.value("counters", json::object()).value("esp.rx.packets", uint64_t(0))
                                 : uint64_t(0);
        };
        bool esp_carried = esp_rx(sa) > 0 && esp_rx(sb) > 0 && c.esp_packets_on_wire > 0;
        c.ok = c.available && c.x2_sent > 0 && c.x2_delivered_intact == c.x2_sent && c.tcp_intact &&
               !c.plaintext_on_wire && c.clear_inner_frames_on_wire == 0 && esp_carried;
        c.outcome = std::string("tunnel UP (") + to_string(na->credential) + "): " + na->tunnel_detail;
        if (!esp_carried) c.outcome += "; the data planes did not carry the traffic as ESP";
        return c;
    }
    c.ok = false;
    c.outcome = detail::down_outcome(c, *na, *nb);
    // Never a silent downgrade: the X2 address of the peer is not reachable in clear.  Try it
    // (a GTP-U datagram to the peer's X2 address) and record what the LAN saw.
    {
        double w0 = m_tap.now();
        int u = socket_in(la.ns, SOCK_DGRAM);
        auto dst = sin_of(lb.x2_inner, 2152);
        Bytes probe = gtpu(0x3000, 0, "probe");
        ssize_t n =
            u >= 0 ? ::sendto(u, probe.data(), probe.size(), 0, reinterpret_cast<sockaddr*>(&dst), sizeof dst) : -1;
        int err = errno;
        if (u >= 0) ::close(u);
        for (auto& f : m_tap.window(w0, m_tap.now()))
            if (f.marker) c.plaintext_on_wire = true;
        c.steps.push_back(
            "[lab] X2 to " + lb.x2_inner.to_string() + " while DOWN: " +
            (n < 0 ? std::string("not sent (") + std::strerror(err) + ")" : std::string("sent into the TUN, dropped")) +
            "; X2 plaintext on the LAN: " + (c.plaintext_on_wire ? "YES" : "none"));
    }
    return c;
}

}  // namespace

Result<DemoReport> run_lab(const LabOptions& options) {
    if (auto why = lab_unavailable_reason(); !why.empty()) return Error(ErrorDomain::Config, 0, why);
    LabOptions opt = options;
    if (opt.x2sec_binary.empty()) opt.x2sec_binary = fs::read_symlink("/proc/self/exe").string();
    // Signals: a dedicated thread waits for them and tears the lab down.  Blocked before any
    // other thread starts, so every thread of this process inherits the mask.
    sigset_t sigs, old;
    sigemptyset(&sigs);
    for (int s : {SIGINT, SIGTERM, SIGHUP, SIGUSR2}) sigaddset(&sigs, s);
    pthread_sigmask(SIG_BLOCK, &sigs, &old);
    std::thread sig_thread([sigs] {
        for (;;) {
            int sig = 0;
            if (sigwait(&sigs, &sig) != 0) continue;
            if (sig == SIGUSR2) return;
            std::fprintf(stderr, "x2sec lab: signal %d, tearing the lab down\n", sig);
            janitor().cleanup();
            _exit(128 + sig);
        }
    });
    struct SigGuard {
        std::thread& t;
        sigset_t old;
        ~SigGuard() {
            pthread_kill(t.native_handle(), SIGUSR2);
            t.join();
            pthread_sigmask(SIG_SETMASK, &old, nullptr);
        }
    } sig_guard{sig_thread, old};

    DemoReport report;
    std::string dir = opt.workdir;
    if (dir.empty()) {
        std::string tmpl = "/tmp/x2sec-lab-XXXXXX";
        std::vector<char> buf(tmpl.begin(), tmpl.end());
        buf.push_back(0);
        if (!mkdtemp(buf.data())) return Error(ErrorDomain::Io, errno, "cannot create a working directory");
        dir = buf.data();
        std::lock_guard l(janitor().mu);
        janitor().dir = dir;
        janitor().remove_dir = !opt.keep;
    } else {
        fs::create_directories(dir);
        ::chmod(dir.c_str(), 0700);
    }
    (void)write_file_atomic(dir + "/lab.pid", std::to_string(::getpid()));
    report.workdir = dir;
    report.environment = "root, network namespaces " + std::string(kPrefix) + std::to_string(::getpid()) +
                         "-*, veth links on a bridge, TUN devices, user-space ESP in UDP 4500";
    if (int s = ::socket(AF_INET, SOCK_STREAM, IPPROTO_SCTP); s >= 0) {
        ::close(s);
        report.notes.emplace_back(
            "the kernel has SCTP, but the lab sends X2AP-like signalling as a TCP stream (port 36422)");
    } else {
        report.notes.push_back(std::string("SCTP is not available on this kernel (socket(IPPROTO_SCTP): ") +
                               std::strerror(errno) +
                               "): X2AP-like signalling goes as a TCP stream to port 36422; "
                               "GTP-U as UDP to port 2152");
    }

    Result<DemoReport> result = report;
    {
        Lab lab(opt, dir);
        auto finish = [&](const Status& st) -> Result<DemoReport> {
            if (!opt.keep) lab.stop_processes();
            if (!st.ok()) return st.error();
            return report;
        };
        if (auto st = lab.build(report); !st.ok())
            result = finish(st);
        else if (auto st2 = lab.start_services(); !st2.ok())
            result = finish(st2);
        else {
            lab.run_backhaul(report);
            struct Def {
                const char *id, *title, *a, *b;
            };
            const Def defs[] = {
                {"scenario1", "Scenario 1: same CA, IKEv2 with current certificates (Proposal 2)", "henb-a1",
                 "henb-a2"},
                {"scenario2", "Scenario 2 / Solution 1: CMPv2 enrolment, IKEv2 with operator certificates (Proposal 3)",
                 "henb-a1", "henb-b1"},
                {"solution2", "Solution 2: pairwise key from the KDS, IKEv2 with PSK", "henb-a2", "henb-b2"},
                {"ipsec-off", "IPsec off by operator policy: plain X2 (Proposal 1)", "henb-a1", "henb-a3"},
            };
            for (auto& d : defs) {
                if (!opt.cases.empty() && std::find(opt.cases.begin(), opt.cases.end(), d.id) == opt.cases.end())
                    continue;
                report.cases.push_back(lab.run_case(d.id, d.title, d.a, d.b));
            }
            for (auto& [name, agent] : lab.agents()) report.node_status[name] = agent->status_text();
            report.notes.push_back(lab.tap_note());
            result = finish({});
        }
        if (opt.keep) {
            // Leave it running: the servers in this process go away, the namespaces and the
            // IKE/ESP processes stay.
            std::lock_guard l(janitor().mu);
            janitor().pids.clear();
            janitor().namespaces.clear();
            janitor().remove_dir = false;
        }
    }
    if (!opt.keep) janitor().cleanup();
    return result;
}

}  // namespace x2sec::scenario
