// For the root-only tests that run two `x2sec ike run` daemons in network namespaces
// (tests/netns/esp EspNetnsIkeRun, tests/interop/wireshark WiresharkKeylog): the namespaces
// with their veth pair, and the daemons' PSK configuration.  Header-only (no x2sec module).
#pragma once

#include <cstdlib>
#include <string>
#include <utility>
#include <vector>

namespace x2sec::test {

// Namespaces <prefix>A<id> and <prefix>B<id>, joined by the veth pair <prefix>a<tail> (A,
// 192.0.2.1/24) and <prefix>b<tail> (B, 192.0.2.2/24), <tail> the last 6 characters of <id>.
struct NetnsPair {
    std::string ns_a, ns_b, veth_a, veth_b;
    bool created = false;

    static int sh(const std::string& cmd) { return std::system((cmd + " >/dev/null 2>&1").c_str()); }

    // Adds the namespaces; false (nothing left behind) when this host cannot: skip then.
    bool add(const std::string& prefix, const std::string& id) {
        ns_a = prefix + "A" + id;
        ns_b = prefix + "B" + id;
        if (sh("ip netns add " + ns_a) != 0 || sh("ip netns add " + ns_b) != 0) {
            sh("ip netns del " + ns_a);
            return false;
        }
        created = true;
        const std::string tail = id.substr(id.size() > 6 ? id.size() - 6 : 0);
        veth_a = prefix + "a" + tail;
        veth_b = prefix + "b" + tail;
        return true;
    }
    // The veth pair, its addresses, every link up: "" or the command that failed.
    std::string link() const {
        std::vector<std::string> cmds = {
            "ip link add " + veth_a + " netns " + ns_a + " type veth peer name " + veth_b + " netns " + ns_b,
            "ip -n " + ns_a + " addr add 192.0.2.1/24 dev " + veth_a,
            "ip -n " + ns_b + " addr add 192.0.2.2/24 dev " + veth_b};
        for (const auto& [ns, dev] : std::vector<std::pair<std::string, std::string>>{{ns_a, veth_a}, {ns_b, veth_b}}) {
            cmds.push_back("ip -n " + ns + " link set lo up");
            cmds.push_back("ip -n " + ns + " link set " + dev + " up");
        }
        for (const auto& c : cmds)
            if (sh(c) != 0) return c;
        return "";
    }
    void del() {
        if (!created) return;
        sh("ip netns del " + ns_a);
        sh("ip netns del " + ns_b);
        created = false;
    }
};

// The configuration of daemon A (192.0.2.1, fqdn:a.example.org, protecting 198.51.100.0/24,
// auto_initiate) or B (192.0.2.2, b.example.org, 203.0.113.0/24): one PSK [[peer]] "peer"
// with `extra_peer` lines before auto_initiate, one [[peer.child]] "x2" with `esp_proposal`
// and `extra_child` lines after it.
inline std::string psk_daemon_toml(bool a, const std::string& control_socket, const std::string& extra_peer,
                                   const std::string& esp_proposal, const std::string& extra_child = "") {
    return "[runtime]\ncontrol_socket = \"" + control_socket + "\"\n\n" + "[[peer]]\nname = \"peer\"\n" +
           "local_addr = \"" + (a ? "192.0.2.1" : "192.0.2.2") + "\"\n" + "remote_addr = \"" +
           (a ? "192.0.2.2" : "192.0.2.1") + "\"\n" + "local_id = \"fqdn:" + (a ? "a" : "b") + ".example.org\"\n" +
           "remote_id = \"" + (a ? "b" : "a") + ".example.org\"\n" +
           "auth = \"psk\"\npsk = \"hex:00112233445566778899aabbccddeeff\"\n" + extra_peer +
           "auto_initiate = " + (a ? "true" : "false") + "\n\n" + "  [[peer.child]]\n  name = \"x2\"\n" +
           "  local_ts = \"" + (a ? "198.51.100.0/24" : "203.0.113.0/24") + "\"\n" + "  remote_ts = \"" +
           (a ? "203.0.113.0/24" : "198.51.100.0/24") + "\"\n" + "  esp_proposals = [\"" + esp_proposal + "\"]\n" +
           extra_child;
}

}  // namespace x2sec::test
