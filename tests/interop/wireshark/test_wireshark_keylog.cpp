// `x2sec ike run --debug-keylog` against the real Wireshark: two daemons in network namespaces
// (192.0.2.1 <-> 192.0.2.2 over a veth pair, TUN data planes 198.51.100.1 / 203.0.113.1, ESP in
// UDP), a capture on the veth of IKE_SA_INIT, IKE_AUTH, CREATE_CHILD_SA (a Child SA rekey, an
// IKE SA rekey), INFORMATIONAL (DPD, deletes) and ESP traffic both ways (UDP and ICMP), once
// with an AES-GCM and once with an AES-CBC + HMAC-SHA-256 Child SA (the IKE SA is AES-CBC +
// HMAC-SHA-256), then tshark with a profile holding only the exported ikev2_decryption_table
// and esp_sa.  The data planes run with --no-offload: with UDP GSO the sender's capture shows
// one super-packet per train of ESP packets, which Wireshark cannot split.  Every IKE message past IKE_SA_INIT must
// decrypt with a correct integrity checksum, every ESP packet must decrypt (and authenticate)
// to an inner packet, and the UDP payloads sent must come out of the decryption byte for byte.
// Needs root, tshark and tcpdump; skips with the reason otherwise.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>
#include <x2sec/test/ike_daemons.hpp>

namespace {

namespace fs = std::filesystem;

int sh(const std::string& cmd) {
    int rc = std::system((cmd + " >/dev/null 2>&1").c_str());
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

std::string run(const std::string& cmd) {
    FILE* f = ::popen(cmd.c_str(), "r");
    if (!f) return "";
    std::string out;
    char buf[4096];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof(buf), f)) > 0) out.append(buf, n);
    ::pclose(f);
    return out;
}

std::vector<std::string> split(const std::string& s, char sep) {
    std::vector<std::string> out;
    std::string cur;
    std::istringstream in(s);
    while (std::getline(in, cur, sep)) out.push_back(cur);
    if (!s.empty() && s.back() == sep) out.emplace_back();
    return out;
}

std::string hex_of(const std::string& s) {
    static const char* x = "0123456789abcdef";
    std::string h;
    for (unsigned char c : s) {
        h += x[c >> 4];
        h += x[c & 15];
    }
    return h;
}

class WiresharkKeylog : public ::testing::TestWithParam<std::string> {
protected:
    std::string id, ns_a, ns_b, veth_a, dir;
    std::vector<pid_t> procs;
    pid_t capture = -1;
    x2sec::test::NetnsPair net;

    void SetUp() override {
        if (::geteuid() != 0) GTEST_SKIP() << "needs root: network namespaces, TUN devices and a packet capture";
        if (sh("tshark --version") != 0) GTEST_SKIP() << "tshark is not installed (Debian package tshark)";
        if (sh("tcpdump --version") != 0) GTEST_SKIP() << "tcpdump is not installed";
        if (::access("/dev/net/tun", R_OK | W_OK) != 0) GTEST_SKIP() << "no /dev/net/tun";
        if (sh("ip -V") != 0) GTEST_SKIP() << "iproute2 `ip` not installed";
        id = std::to_string(::getpid());
        if (!net.add("x2w", id)) GTEST_SKIP() << "cannot create network namespaces here";
        ns_a = net.ns_a;
        ns_b = net.ns_b;
        veth_a = net.veth_a;
        ASSERT_EQ(net.link(), "");
        dir = "/tmp/x2sec-wireshark-" + id;
        fs::create_directories(dir);
    }
    void TearDown() override {
        stop_capture();
        for (pid_t p : procs) ::kill(p, SIGTERM);
        for (pid_t p : procs) reap(p);
        net.del();
        if (!dir.empty() && !HasFailure()) fs::remove_all(dir);
    }
    static void reap(pid_t p) {
        for (int i = 0; i < 80; ++i) {
            if (::waitpid(p, nullptr, WNOHANG) == p) return;
            std::this_thread::sleep_for(std::chrono::milliseconds(100));
        }
        ::kill(p, SIGKILL);
        ::waitpid(p, nullptr, 0);
    }
    pid_t spawn(const std::vector<std::string>& argv, const std::string& log) {
        pid_t pid = ::fork();
        if (pid == 0) {
            int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
            ::dup2(fd, 1);
            ::dup2(fd, 2);
            std::vector<char*> av;
            for (auto x : argv) av.push_back(::strdup(x.c_str()));
            av.push_back(nullptr);
            ::execvp(av[0], av.data());
            _exit(127);
        }
        return pid;
    }
    void start_capture() {
        // ESP in UDP and IKE only: the capture filter on the test's ports.
        capture = spawn({"ip", "netns", "exec", ns_a, "tcpdump", "-n", "-U", "-i", veth_a, "-w", dir + "/cap.pcap",
                         "udp port 500 or udp port 4500"},
                        dir + "/tcpdump.log");
        ASSERT_GT(capture, 0);
        std::string log;
        for (int i = 0; i < 100 && log.find("listening on") == std::string::npos; ++i) {
            std::this_thread::sleep_for(std::chrono::milliseconds(50));
            std::ifstream in(dir + "/tcpdump.log");
            log.assign(std::istreambuf_iterator<char>(in), {});
        }
        ASSERT_NE(log.find("listening on"), std::string::npos) << "tcpdump did not start: " << log;
    }
    void stop_capture() {
        if (capture <= 0) return;
        ::kill(capture, SIGINT);
        reap(capture);
        capture = -1;
    }
    std::string sock(const std::string& side) { return dir + "/" + side + ".sock"; }
    void start_daemons() {
        for (std::string side : {"B", "A"}) {
            bool a = side == "A";
            std::string f = dir + "/" + side + ".toml";
            std::ofstream out(f);
            out << x2sec::test::psk_daemon_toml(a, sock(side),
                                                std::string("ike_proposals = [\"aes128-sha256-prfsha256-ecp256\"]\n") +
                                                    "dpd_interval = \"" + (a ? "2s" : "0") + "\"\n" +
                                                    "force_encap = true\n",
                                                GetParam());
            out.close();
            pid_t pid = spawn({"ip",
                               "netns",
                               "exec",
                               a ? ns_a : ns_b,
                               X2SEC_BINARY,
                               "ike",
                               "run",
                               "--config",
                               f,
                               "--control",
                               sock(side),
                               "--debug-keylog",
                               dir + "/keys-" + side,
                               "--dataplane",
                               "tun",
                               "--tun",
                               "x2w0",
                               "--tun-addr",
                               a ? "198.51.100.1/24" : "203.0.113.1/24",
                               "--route",
                               a ? "203.0.113.0/24" : "198.51.100.0/24",
                               "--no-offload"},
                              dir + "/" + side + ".log");
            ASSERT_GT(pid, 0);
            procs.push_back(pid);
            if (!a)
                for (int i = 0; i < 100 && !fs::exists(sock("B")); ++i)
                    std::this_thread::sleep_for(std::chrono::milliseconds(50));
        }
    }
    std::string ctl(const std::string& side, const std::string& args) {
        return run(std::string(X2SEC_BINARY) + " ike " + args + " --control " + sock(side) + " 2>&1");
    }
    size_t children(const std::string& side) {
        std::string s = ctl(side, "list-sas --json");
        size_t n = 0;
        for (auto k = s.find("\"spi_in\""); k != std::string::npos; k = s.find("\"spi_in\"", k + 1)) ++n;
        return n;
    }
    bool wait_children(size_t n) {
        for (int i = 0; i < 100; ++i) {
            if (children("A") == n && children("B") == n) return true;
            std::this_thread::sleep_for(std::chrono::milliseconds(100));
        }
        return false;
    }
    // B echoes UDP datagrams on port 9999 (both directions through the Child SA).
    void start_echo() {
        std::ofstream(dir + "/echo.py") << "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n"
                                           "s.bind(('203.0.113.1',9999))\nopen('"
                                        << dir
                                        << "/echo.ready','w').close()\n"
                                           "while True:\n    d,a=s.recvfrom(4096)\n    s.sendto(d,a)\n";
        for (int i = 0; i < 50; ++i) {  // the TUN address exists once B's data plane is up
            if (sh("ip -n " + ns_b + " addr show dev x2w0 | grep -q 203.0.113.1") == 0) break;
            std::this_thread::sleep_for(std::chrono::milliseconds(100));
        }
        pid_t p = spawn({"ip", "netns", "exec", ns_b, "python3", dir + "/echo.py"}, dir + "/echo.log");
        ASSERT_GT(p, 0);
        procs.insert(procs.begin(), p);
        for (int i = 0; i < 100 && !fs::exists(dir + "/echo.ready"); ++i)  // bound before any datagram
            std::this_thread::sleep_for(std::chrono::milliseconds(50));
        ASSERT_TRUE(fs::exists(dir + "/echo.ready")) << "the echo server did not start";
    }
    // UDP datagrams A -> B and their echoes B -> A, and pings (request and reply).
    void traffic(const std::string& phase, std::set<std::string>& sent) {
        std::string py = "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n";
        for (int i = 0; i < 4; ++i) {
            std::string payload = "x2sec-wireshark-" + phase + "-" + std::to_string(i) + "-" + id;
            sent.insert(hex_of(payload));
            py += "s.sendto(b'" + payload + "',('203.0.113.1',9999))\n";
        }
        // Wait for the echoes before the socket closes (else A answers them with port-unreachable).
        py += "s.settimeout(5)\nfor i in range(4):\n    s.recv(4096)\n";
        std::ofstream(dir + "/send.py") << py;
        EXPECT_EQ(0, sh("ip netns exec " + ns_a + " python3 " + dir + "/send.py")) << phase;
        EXPECT_EQ(0, sh("ip netns exec " + ns_a + " ping -c 3 -i 0.2 -W 2 203.0.113.1")) << phase;
        std::this_thread::sleep_for(std::chrono::milliseconds(300));
    }
    std::string logs() {
        std::string out;
        for (const char* side : {"A", "B"}) {
            std::ifstream in(dir + "/" + side + ".log");
            out += std::string("---- ") + side + " ----\n" + std::string(std::istreambuf_iterator<char>(in), {});
        }
        return out;
    }
};

}  // namespace

TEST_P(WiresharkKeylog, TsharkDecryptsEveryIkeMessageAndEspPacket) {
    start_capture();
    start_daemons();
    ASSERT_TRUE(wait_children(1)) << "the Child SA did not come up\n" << logs();
    start_echo();
    std::set<std::string> sent;
    traffic("initial", sent);
    std::string r = ctl("A", "rekey --peer peer --child x2 --timeout 10");
    EXPECT_NE(r.find("rekeyed"), std::string::npos) << r;
    ASSERT_TRUE(wait_children(1)) << r << logs();
    traffic("child-rekeyed", sent);
    r = ctl("A", "rekey --peer peer --timeout 10");
    EXPECT_NE(r.find("IKE SA rekeyed"), std::string::npos) << r;
    ASSERT_TRUE(wait_children(1)) << r << logs();
    traffic("ike-rekeyed", sent);
    std::this_thread::sleep_for(std::chrono::milliseconds(2500));  // at least one DPD on the new IKE SA
    ::kill(procs.back(), SIGTERM);  // A deletes its SAs with the peer (INFORMATIONAL) and exits
    reap(procs.back());
    procs.pop_back();
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    stop_capture();

    // A private Wireshark profile holding exactly the exported tables.
    std::string home = dir + "/home";
    fs::create_directories(home + "/.config/wireshark");
    for (const char* f : {"ikev2_decryption_table", "esp_sa"})
        fs::copy_file(dir + "/keys-A/" + f, home + "/.config/wireshark/" + f);
    std::string tshark = "HOME=" + home + " XDG_CONFIG_HOME=" + home + "/.config tshark -n -r " + dir +
                         "/cap.pcap -o esp.enable_encryption_decode:TRUE -o esp.enable_authentication_check:TRUE ";
    std::string load = run(tshark + "-c 1 2>&1 >/dev/null");
    EXPECT_EQ(load.find("Error loading table"), std::string::npos) << "tshark refused an exported table:\n" << load;
    EXPECT_EQ(load.find("tshark:"), std::string::npos) << "tshark complained:\n" << load;

    // IKE: one line per message.
    // isakmp.enc.decrypted is present only when the keys were found; the integrity checksum is then
    // verified, and a wrong one raises the expert "IKEv2 Integrity Checksum Data is incorrect".
    std::string ike = run(tshark +
                          "-Y isakmp -T fields -E separator='|' -e frame.number -e isakmp.exchangetype "
                          "-e isakmp.flags -e isakmp.enc.decrypted -e isakmp.enc.icd -e _ws.expert.message "
                          "2>>" +
                          dir + "/tshark.err");
    std::map<int, int> exchanges;
    int ike_lines = 0;
    for (const auto& line : split(ike, '\n')) {
        if (line.empty()) continue;
        auto f = split(line, '|');
        ASSERT_GE(f.size(), 6u) << line;
        ++ike_lines;
        int type = std::atoi(f[1].c_str());
        ++exchanges[type];
        if (type == 34) continue;  // IKE_SA_INIT is in the clear
        EXPECT_FALSE(f[3].empty()) << "IKE message not decrypted: " << line;
        EXPECT_FALSE(f[4].empty()) << "no integrity checksum: " << line;
        EXPECT_EQ(line.find("incorrect"), std::string::npos) << line;
        EXPECT_EQ(line.find("Malformed"), std::string::npos) << line;
    }
    EXPECT_GE(exchanges[34], 2) << ike;  // IKE_SA_INIT request and response
    EXPECT_GE(exchanges[35], 2) << ike;  // IKE_AUTH
    EXPECT_GE(exchanges[36], 4) << ike;  // Child SA rekey, IKE SA rekey
    EXPECT_GE(exchanges[37], 4) << ike;  // deletes after the rekeys, DPD, final delete
    std::cout << "[ info ] IKE messages " << ike_lines << ": IKE_SA_INIT " << exchanges[34] << ", IKE_AUTH "
              << exchanges[35] << ", CREATE_CHILD_SA " << exchanges[36] << ", INFORMATIONAL " << exchanges[37] << "\n";

    // ESP: every packet decrypts to an inner IPv4 packet (two ip layers) and authenticates.
    std::string esp = run(tshark +
                          "-Y esp -T fields -E separator='|' -E occurrence=a -E aggregator=';' "
                          "-e frame.number -e esp.spi -e ip.src -e ip.proto -e data.data -e esp.icv_good "
                          "-e _ws.expert.message 2>>" +
                          dir + "/tshark.err");
    std::map<std::string, int> decrypted_udp;
    std::set<std::string> spis;
    int esp_lines = 0, icmp = 0;
    for (const auto& line : split(esp, '\n')) {
        if (line.empty()) continue;
        auto f = split(line, '|');
        ASSERT_GE(f.size(), 7u) << line;
        ++esp_lines;
        spis.insert(f[1]);
        EXPECT_EQ(split(f[2], ';').size(), 2u) << "ESP packet not decrypted to an inner IP packet: " << line;
        EXPECT_EQ(f[5], "1") << "ESP ICV not verified as correct: " << line;
        EXPECT_EQ(line.find("incorrect"), std::string::npos) << line;
        EXPECT_EQ(line.find("Malformed"), std::string::npos) << line;
        auto proto = split(f[3], ';');
        if (proto.size() == 2 && proto[1] == "17") ++decrypted_udp[f[4]];
        if (proto.size() == 2 && proto[1] == "1") ++icmp;
    }
    std::map<std::string, int> expected;
    for (const auto& p : sent) expected[p] = 2;  // each datagram and its echo, once each
    EXPECT_EQ(decrypted_udp, expected) << esp;
    EXPECT_GE(icmp, 18) << esp;         // 3 phases x 3 pings x (request + reply)
    EXPECT_GE(spis.size(), 4u) << esp;  // in/out before and after the Child SA rekey
    std::cout << "[ info ] ESP packets " << esp_lines << " on " << spis.size() << " SPIs, UDP payloads compared "
              << decrypted_udp.size() << ", ICMP " << icmp << "\n";
}

INSTANTIATE_TEST_SUITE_P(EspCiphers, WiresharkKeylog, ::testing::Values("aes128gcm16", "aes128-sha256"),
                         [](const auto& p) {
                             return p.param == "aes128gcm16" ? std::string("AesGcm") : std::string("AesCbcHmacSha256");
                         });
