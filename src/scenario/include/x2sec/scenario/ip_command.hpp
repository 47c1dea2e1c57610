// The lab's network set-up through iproute2 without a shell: every command is an argv vector
// executed with posix_spawn (no /bin/sh, no string concatenation), and every name that reaches
// it — network namespaces (some derived from the deployment file's H(e)NB names) and
// interfaces — is checked against a strict pattern first, so a hostile name is refused with an
// error naming it instead of being interpreted.
#pragma once

#include <sys/types.h>

#include <string>
#include <string_view>
#include <vector>
#include <x2sec/common/child_sa.hpp>
#include <x2sec/common/result.hpp>

namespace x2sec::scenario::ipcmd {

// Network namespace names: 1..64 characters of [A-Za-z0-9._-], starting with a letter or digit
// (no '/', no whitespace, no shell metacharacters; "." and ".." are refused by the first-character rule).
inline constexpr size_t kMaxNetnsName = 64;
Status check_netns_name(std::string_view name);
// Interface names: 1..15 characters (IFNAMSIZ - 1) of [A-Za-z0-9._-], starting with a letter or digit.
inline constexpr size_t kMaxIfName = 15;
Status check_ifname(std::string_view name);

// The iproute2 binary ("" when none is installed).
std::string ip_binary();

// Runs `ip <args...>` (argv, no shell); stdout is returned, stderr goes into the error.
Result<std::string> run(const std::vector<std::string>& args);

Status netns_add(const std::string& ns);
Status netns_del(const std::string& ns);
// The processes inside `ns` (`ip netns pids`).
Result<std::vector<pid_t>> netns_pids(const std::string& ns);
Status bridge_add(const std::string& ns, const std::string& ifname);
// A veth pair: `if_a` in `ns_a`, `if_b` in `ns_b`.
Status veth_add(const std::string& ns_a, const std::string& if_a, const std::string& ns_b, const std::string& if_b);
// `ip -n ns link set ifname [master master] up`.
Status link_up(const std::string& ns, const std::string& ifname, const std::string& master = "");
Status addr_add(const std::string& ns, const IpAddress& addr, int prefix_len, const std::string& ifname);
// `ip -n ns -s -j link show dev ifname` (JSON text).
Result<std::string> link_stats_json(const std::string& ns, const std::string& ifname);

// argv of `ip netns exec ns <command...>`, for spawning a process inside a namespace.
Result<std::vector<std::string>> netns_exec_argv(const std::string& ns, const std::vector<std::string>& command);

}  // namespace x2sec::scenario::ipcmd
