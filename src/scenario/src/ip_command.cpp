#include <fcntl.h>
#include <poll.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <sstream>
#include <x2sec/scenario/ip_command.hpp>

extern char** environ;

namespace x2sec::scenario::ipcmd {

namespace {

bool name_char(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
           c == '-';
}

bool alnum(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

// The name as it may be shown in an error: printable ASCII kept, everything else escaped.
std::string printable(std::string_view s) {
    std::string out;
    for (char c : s.substr(0, 80)) {
        auto u = static_cast<unsigned char>(c);
        if (u >= 0x20 && u < 0x7f) {
            out += c;
        } else {
            static constexpr std::array<char, 17> kHex{"0123456789abcdef"};
            out += "\\x";
            out += kHex[u >> 4];
            out += kHex[u & 15];
        }
    }
    if (s.size() > 80) out += "...";
    return out;
}

Status check_name(std::string_view what, std::string_view name, size_t max) {
    auto bad = [&](const std::string& why) {
        return Error(ErrorDomain::Config, EINVAL,
                     "invalid " + std::string(what) + " name '" + printable(name) + "': " + why);
    };
    if (name.empty()) return bad("empty");
    if (name.size() > max) return bad("longer than " + std::to_string(max) + " characters");
    if (!alnum(name[0])) return bad("must start with a letter or a digit");
    for (char c : name)
        if (!name_char(c)) return bad("only letters, digits, '.', '_' and '-' are allowed");
    return {};
}

void drain(int fd, std::string& out, bool& open) {
    std::array<char, 4096> buf{};
    ssize_t n = ::read(fd, buf.data(), buf.size());
    if (n > 0)
        out.append(buf.data(), size_t(n));
    else if (n == 0 || (errno != EINTR && errno != EAGAIN))
        open = false;
}

}  // namespace

Status check_netns_name(std::string_view name) {
    return check_name("network namespace", name, kMaxNetnsName);
}
Status check_ifname(std::string_view name) {
    return check_name("interface", name, kMaxIfName);
}

std::string ip_binary() {
    for (const char* p : {"/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"})
        if (::access(p, X_OK) == 0) return p;
    return "";
}

Result<std::string> run(const std::vector<std::string>& args) {
    std::string ip = ip_binary();
    if (ip.empty()) return Error(ErrorDomain::Io, ENOENT, "iproute2 `ip` is not installed");
    std::vector<std::string> all = {ip};
    all.insert(all.end(), args.begin(), args.end());
    std::vector<char*> argv;
    argv.reserve(all.size() + 1);
    for (auto& a : all) argv.push_back(a.data());
    argv.push_back(nullptr);
    std::string cmdline;
    for (size_t i = 1; i < all.size(); ++i) cmdline += (i > 1 ? " " : "") + all[i];

    std::array<int, 2> out{-1, -1}, err{-1, -1};
    if (::pipe2(out.data(), O_CLOEXEC) != 0) return Error(ErrorDomain::Io, errno, "pipe");
    if (::pipe2(err.data(), O_CLOEXEC) != 0) {
        int e = errno;
        ::close(out[0]);
        ::close(out[1]);
        return Error(ErrorDomain::Io, e, "pipe");
    }
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&fa, out[1], 1);
    posix_spawn_file_actions_adddup2(&fa, err[1], 2);
    pid_t pid = -1;
    int rc = ::posix_spawn(&pid, argv[0], &fa, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&fa);
    ::close(out[1]);
    ::close(err[1]);
    std::string so, se;
    if (rc == 0) {
        bool oo = true, eo = true;
        while (oo || eo) {
            std::array<pollfd, 2> p{pollfd{oo ? out[0] : -1, POLLIN, 0}, pollfd{eo ? err[0] : -1, POLLIN, 0}};
            if (::poll(p.data(), p.size(), -1) < 0) {
                if (errno == EINTR) continue;
                break;
            }
            if (oo && (p[0].revents & (POLLIN | POLLHUP | POLLERR))) drain(out[0], so, oo);
            if (eo && (p[1].revents & (POLLIN | POLLHUP | POLLERR))) drain(err[0], se, eo);
        }
    }
    ::close(out[0]);
    ::close(err[0]);
    if (rc != 0) return Error(ErrorDomain::Io, rc, "cannot start ip " + cmdline + ": " + std::strerror(rc));
    int st = 0;
    while (::waitpid(pid, &st, 0) < 0 && errno == EINTR) {
    }
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        while (!se.empty() && (se.back() == '\n' || se.back() == '\r')) se.pop_back();
        int code = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
        return Error(ErrorDomain::Io, code,
                     "ip " + cmdline + " failed (status " + std::to_string(code) + ")" + (se.empty() ? "" : ": " + se));
    }
    return so;
}

Status netns_add(const std::string& ns) {
    X2SEC_TRY_STATUS(check_netns_name(ns));
    X2SEC_TRY_STATUS(run({"netns", "add", ns}));
    return {};
}

Status netns_del(const std::string& ns) {
    X2SEC_TRY_STATUS(check_netns_name(ns));
    X2SEC_TRY_STATUS(run({"netns", "del", ns}));
    return {};
}

Result<std::vector<pid_t>> netns_pids(const std::string& ns) {
    X2SEC_TRY_STATUS(check_netns_name(ns));
    X2SEC_TRY(auto text, run({"netns", "pids", ns}));
    std::vector<pid_t> pids;
    std::istringstream in(text);
    for (long p = 0; in >> p;)
        if (p > 0) pids.push_back(pid_t(p));
    return pids;
}

Status bridge_add(const std::string& ns, const std::string& ifname) {
    X2SEC_TRY_STATUS(check_netns_name(ns));
    X2SEC_TRY_STATUS(check_ifname(ifname));
    X2SEC_TRY_STATUS(run({"-n", ns, "link", "add", ifname, "type", "bridge"}));
    return {};
}

Status veth_add(const std::string& ns_a, const std::string& if_a, const std::string& ns_b, const std::string& if_b) {
    for (auto* n : {&ns_a, &ns_b}) X2SEC_TRY_STATUS(check_netns_name(*n));
    for (auto* i : {&if_a, &if_b}) X2SEC_TRY_STATUS(check_ifname(*i));
    X2SEC_TRY_STATUS(run({"link", "add", if_a, "netns", ns_a, "type", "veth", "peer", "name", if_b, "netns", ns_b}));
    return {};
}

Status link_up(const std::string& ns, const std::string& ifname, const std::string& master) {
    X2SEC_TRY_STATUS(check_netns_name(ns));
    X2SEC_TRY_STATUS(check_ifname(ifname));
    std::vector<std::string> a = {"-n", ns, "link", "set", ifname};
    if (!master.empty()) {
        X2SEC_TRY_STATUS(check_ifname(master));
        a.insert(a.end(), {"master", master});
    }
    a.emplace_back("up");
    X2SEC_TRY_STATUS(run(a));
    return {};
}

Status addr_add(const std::string& ns, const IpAddress& addr, int prefix_len, const std::string& ifname) {
    X2SEC_TRY_STATUS(check_netns_name(ns));
    X2SEC_TRY_STATUS(check_ifname(ifname));
    int max = addr.v6 ? 128 : 32;
    if (prefix_len < 0 || prefix_len > max)
        return Error(ErrorDomain::Config, EINVAL, "invalid prefix length " + std::to_string(prefix_len));
    X2SEC_TRY_STATUS(
        run({"-n", ns, "addr", "add", addr.to_string() + "/" + std::to_string(prefix_len), "dev", ifname}));
    return {};
}

Result<std::string> link_stats_json(const std::string& ns, const std::string& ifname) {
    X2SEC_TRY_STATUS(check_netns_name(ns));
    X2SEC_TRY_STATUS(check_ifname(ifname));
    return run({"-n", ns, "-s", "-j", "link", "show", "dev", ifname});
}

Result<std::vector<std::string>> netns_exec_argv(const std::string& ns, const std::vector<std::string>& command) {
    X2SEC_TRY_STATUS(check_netns_name(ns));
    std::string ip = ip_binary();
    if (ip.empty()) return Error(ErrorDomain::Io, ENOENT, "iproute2 `ip` is not installed");
    std::vector<std::string> all = {ip, "netns", "exec", ns};
    all.insert(all.end(), command.begin(), command.end());
    return all;
}

}  // namespace x2sec::scenario::ipcmd
