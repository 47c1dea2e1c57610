#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <x2sec/config/file_config.hpp>

using namespace x2sec;
using namespace x2sec::config;

#ifndef X2SEC_CONFIG_TEST_DATA
#error "X2SEC_CONFIG_TEST_DATA must be defined"
#endif

namespace {

std::string error_of(std::string_view text) {
    auto r = parse_string(text, "t.toml", "/base");
    EXPECT_FALSE(r.ok()) << "expected an error for:\n" << text;
    return r.ok() ? std::string() : r.error().detail();
}

// A minimal valid PSK peer that tests modify.
const char* kMinimal = R"(
[[peer]]
name = "p"
local_addr = "192.0.2.1"
remote_addr = "192.0.2.2"
local_id = "a.example.org"
auth = "psk"
psk = "text:correct horse battery staple"
  [[peer.child]]
  name = "c"
  local_ts = "198.51.100.0/24"
  remote_ts = "203.0.113.0/24"
)";

}  // namespace

TEST(ConfigFile, GoodFileParsesEveryField) {
    std::string path = std::string(X2SEC_CONFIG_TEST_DATA) + "/good.toml";
    auto r = parse_file(path);
    ASSERT_TRUE(r.ok()) << r.error().detail();
    const FileConfig& c = *r;
    std::string base = std::filesystem::absolute(X2SEC_CONFIG_TEST_DATA).string();
    EXPECT_TRUE(c.crl_check);
    EXPECT_EQ(c.runtime.listen.size(), 2u);
    EXPECT_TRUE(c.runtime.listen[1].v6);
    EXPECT_EQ(c.runtime.control_socket, base + "/run/x2sec-ike.sock");
    EXPECT_EQ(c.runtime.log_level, "debug");
    EXPECT_EQ(c.engine.retransmit_timeout_ms, 2000);
    EXPECT_DOUBLE_EQ(c.engine.retransmit_backoff, 2.0);
    EXPECT_EQ(c.engine.retransmit_tries, 4u);
    EXPECT_EQ(c.engine.cookie_threshold, 10u);
    EXPECT_EQ(c.engine.half_open_timeout_ms, 20000);
    ASSERT_EQ(c.trust_anchors.size(), 2u);
    EXPECT_EQ(c.trust_anchors[0].label, "vendor-a");
    EXPECT_EQ(c.trust_anchors[0].file, base + "/certs/vendor-a-root.pem");
    EXPECT_EQ(c.trust_anchors[1].file, "/etc/x2sec/operator-root.pem");
    ASSERT_EQ(c.crls.size(), 1u);
    ASSERT_EQ(c.credentials.size(), 1u);
    EXPECT_EQ(c.credentials[0].cert_files.size(), 2u);
    EXPECT_EQ(c.credentials[0].key_file, base + "/private/henb-a.key");

    ASSERT_EQ(c.peers.size(), 2u);
    const PeerEntry& b = c.peers[0];
    EXPECT_EQ(b.name, "henb-b");
    EXPECT_EQ(b.local_addr.to_string(), "192.0.2.1");
    EXPECT_EQ(b.local_port, 500);
    EXPECT_EQ(b.remote_port, 1500);
    EXPECT_EQ(b.local_natt_port, 4500);
    EXPECT_EQ(b.remote_natt_port, 14500);
    EXPECT_EQ(b.local_id.value, "fqdn:henb-a.example.org");
    EXPECT_EQ(b.local_id.where.line, 41u);
    EXPECT_EQ(b.local_id.where.column, 12u);
    ASSERT_TRUE(b.remote_id);
    EXPECT_EQ(b.local_auth, AuthKind::Certificate);
    ASSERT_EQ(b.trust.size(), 1u);
    EXPECT_EQ(b.trust[0].value, "operator");
    ASSERT_EQ(b.ike_proposals.size(), 2u);
    EXPECT_EQ(b.ike_rekey_seconds, 4u * 3600);
    EXPECT_EQ(b.dpd_interval_ms, 30000u);
    EXPECT_EQ(b.dpd_jitter_percent, 20u);
    EXPECT_EQ(c.peers[1].dpd_jitter_percent, 10u);  // the default
    EXPECT_TRUE(b.auto_initiate);
    ASSERT_EQ(b.children.size(), 2u);
    EXPECT_EQ(b.children[0].name, "x2c");  // file order kept: the first child goes in IKE_AUTH
    ASSERT_EQ(b.children[0].local_ts.size(), 1u);
    const TrafficSelector& x2c = b.children[0].local_ts[0];
    EXPECT_EQ(x2c.ip_protocol, 132);
    EXPECT_EQ(x2c.start_port, 36422);
    EXPECT_EQ(x2c.end_port, 36422);
    EXPECT_EQ(x2c.start_addr.to_string(), "198.51.100.0");
    EXPECT_EQ(x2c.end_addr.to_string(), "198.51.100.255");
    EXPECT_EQ(b.children[0].esp_proposals.size(), 2u);
    EXPECT_EQ(b.children[0].rekey_seconds, 3600u);
    EXPECT_EQ(b.children[0].lifetime.soft_seconds, 3000u);
    EXPECT_EQ(b.children[0].replay_window, 2048u);
    EXPECT_EQ(b.children[1].local_ts[0].ip_protocol, 17);
    EXPECT_EQ(b.children[1].local_ts[0].start_port, 2152);

    const PeerEntry& p = c.peers[1];
    EXPECT_TRUE(p.local_addr.v6);
    EXPECT_EQ(p.local_auth, AuthKind::Psk);
    EXPECT_EQ(p.remote_auth, AuthKind::Psk);
    ASSERT_TRUE(p.psk_hex);
    EXPECT_EQ(p.psk_hex->value, "00112233445566778899aabbccddeeff");
    EXPECT_EQ(p.children[0].mode, IpsecMode::Transport);
    EXPECT_EQ(p.children[0].local_ts[0].end_addr.to_string(), "2001:db8:1:ffff:ffff:ffff:ffff:ffff");
    EXPECT_EQ(p.ike_proposals.size(), 1u);  // the default
}

TEST(ConfigFile, MinimalIsValid) {
    auto r = parse_string(kMinimal, "t.toml");
    ASSERT_TRUE(r.ok()) << r.error().detail();
    EXPECT_EQ(r->peers[0].psk_text->value, "correct horse battery staple");
}

TEST(ConfigFile, TomlSyntaxErrorHasLineAndColumn) {
    std::string e = error_of("[runtime]\nike_port = = 5\n");
    EXPECT_EQ(e.rfind("t.toml:2:", 0), 0u) << e;
    EXPECT_NE(e.find("TOML syntax error"), std::string::npos) << e;
}

TEST(ConfigFile, UnknownKeyIsReportedWhereItIs) {
    std::string text = std::string(kMinimal) + "  lokal_ts = \"192.0.2.0/24\"\n";
    std::string e = error_of(text);
    EXPECT_NE(e.find("t.toml:13:3: child of peer 'p': unknown key 'lokal_ts'"), std::string::npos) << e;
}

TEST(ConfigFile, BadAddressPointsAtTheValue) {
    std::string text = kMinimal;
    text.replace(text.find("\"192.0.2.2\""), 11, "\"192.0.2.300\"");
    std::string e = error_of(text);
    EXPECT_NE(e.find("t.toml:5:15: 'remote_addr' = '192.0.2.300' is not an IPv4 or IPv6 address"), std::string::npos)
        << e;
}

TEST(ConfigFile, BadTrafficSelectors) {
    struct Case {
        const char* ts;
        const char* why;
    } cases[] = {
        {"198.51.100.0/33", "prefix length 33 exceeds 32"},
        {"198.51.100.1/24", "host bits set below /24"},
        {"198.51.100.0/24[sctp/36422", "missing ']'"},
        {"198.51.100.0/24[foo/1]", "unknown protocol 'foo'"},
        {"198.51.100.0/24[udp/99999]", "bad port or port range"},
        {"198.51.100.0/24[udp/10-5]", "bad port or port range"},
        {"198.51.100.0/24[icmp/5]", "ports need tcp, udp or sctp"},
        {"henb.example.org/24", "is not an IPv4 or IPv6 address"},
    };
    for (const auto& c : cases) {
        std::string text = kMinimal;
        text.replace(text.find("\"198.51.100.0/24\""), 17, std::string("\"") + c.ts + "\"");
        std::string e = error_of(text);
        EXPECT_EQ(e.rfind("t.toml:11:14: ", 0), 0u) << e;
        EXPECT_NE(e.find(c.why), std::string::npos) << c.ts << " -> " << e;
    }
}

TEST(ConfigFile, MissingRequiredKeyPointsAtTheTable) {
    std::string text = kMinimal;
    text.erase(text.find("local_id"), text.find("auth =") - text.find("local_id"));
    std::string e = error_of(text);
    EXPECT_NE(e.find("t.toml:2:1: peer 'p': missing required key 'local_id'"), std::string::npos) << e;
}

TEST(ConfigFile, WrongTypesAndRanges) {
    EXPECT_NE(error_of(std::string("[runtime]\nike_port = 70000\n") + kMinimal)
                  .find("t.toml:2:12: 'ike_port' = 70000 is out of range [1, 65535]"),
              std::string::npos);
    EXPECT_NE(error_of(std::string("[runtime]\nike_port = \"500\"\n") + kMinimal).find("'ike_port' must be an integer"),
              std::string::npos);
    EXPECT_NE(error_of(std::string("[engine]\nretransmit_timeout = \"4 fortnights\"\n") + kMinimal)
                  .find("t.toml:2:22: duration"),
              std::string::npos);
    {
        std::string text = kMinimal;
        text.insert(text.find("  [[peer.child]]"), "dpd_jitter = 101\n");
        EXPECT_NE(error_of(text).find("'dpd_jitter' = 101 is out of range [0, 100]"), std::string::npos);
    }
    std::string text = kMinimal;
    text.replace(text.find("auth = \"psk\""), 12, "auth = \"eap\"");
    EXPECT_NE(error_of(text).find("'auth' must be \"cert\" or \"psk\", not 'eap'"), std::string::npos);
}

TEST(ConfigFile, AuthRequirements) {
    std::string text = kMinimal;
    text.erase(text.find("psk = "), text.find('\n', text.find("psk = ")) - text.find("psk = "));
    EXPECT_NE(error_of(text).find("t.toml:2:1: peer 'p': PSK authentication needs 'psk' or 'psk_file'"),
              std::string::npos);

    text = kMinimal;
    text.replace(text.find("auth = \"psk\""), 12, "auth = \"cert\"");
    std::string e = error_of(text);
    EXPECT_NE(e.find("certificate authentication needs 'credential'"), std::string::npos) << e;
    EXPECT_NE(e.find("no [[trust_anchor]] is configured"), std::string::npos) << e;
    EXPECT_NE(e.find("a PSK is given but neither side authenticates with \"psk\""), std::string::npos) << e;

    text = kMinimal;
    text.replace(text.find("psk = \"text:"), 12, "psk = \"plain:");
    EXPECT_NE(error_of(text).find("'psk' must start with"), std::string::npos);
}

TEST(ConfigFile, CrossReferencesAreChecked) {
    std::string text = R"(
[[trust_anchor]]
label = "vendor-a"
file = "a.pem"
)" + std::string(kMinimal);
    text.replace(text.find("auth = \"psk\""), 12,
                 "local_auth = \"psk\"\nremote_auth = \"cert\"\ntrust = [\"vendor-b\"]\ncredential = \"nope\"");
    std::string e = error_of(text);
    EXPECT_NE(e.find("t.toml:13:10: peer 'p': no [[trust_anchor]] with label 'vendor-b'"), std::string::npos) << e;
    EXPECT_NE(e.find("t.toml:14:14: peer 'p': no [[credential]] named 'nope'"), std::string::npos) << e;
}

TEST(ConfigFile, DuplicatesAndEmptyAreErrors) {
    std::string e = error_of(std::string(kMinimal) + kMinimal);
    EXPECT_NE(e.find("duplicate peer name 'p'"), std::string::npos) << e;
    EXPECT_NE(error_of("[runtime]\nike_port = 500\n").find("t.toml:1:1: no [[peer]] configured"), std::string::npos);
    std::string nochild = kMinimal;
    nochild.erase(nochild.find("  [[peer.child]]"));
    EXPECT_NE(error_of(nochild).find("at least one [[peer.child]] is required"), std::string::npos);
}

TEST(ConfigFile, AllErrorsAreReportedOneLineEach) {
    std::string text = R"(
[runtime]
ike_port = 0
natt_port = 0
bogus = 1
)" + std::string(kMinimal);
    std::string e = error_of(text);
    EXPECT_EQ(std::count(e.begin(), e.end(), '\n'), 2) << e;  // three lines
    EXPECT_NE(e.find("t.toml:3:12:"), std::string::npos) << e;
    EXPECT_NE(e.find("t.toml:4:13:"), std::string::npos) << e;
    EXPECT_NE(e.find("t.toml:5:1: [runtime]: unknown key 'bogus'"), std::string::npos) << e;
}

TEST(ConfigFile, SameLocalPortsAreRejected) {
    std::string text = kMinimal;
    text.replace(text.find("local_id"), 0, "local_port = 4500\n");
    EXPECT_NE(error_of(text).find("local_port and local_natt_port must differ"), std::string::npos);
}

TEST(ConfigFile, MissingFileIsAnError) {
    auto r = parse_file("/nonexistent/x2sec.toml");
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.error().detail().find("/nonexistent/x2sec.toml: not a readable file"), std::string::npos);
}

TEST(ConfigHelpers, Durations) {
    EXPECT_EQ(*parse_duration_ms("90"), 90000);
    EXPECT_EQ(*parse_duration_ms("500ms"), 500);
    EXPECT_EQ(*parse_duration_ms("15m"), 900000);
    EXPECT_EQ(*parse_duration_ms("1d"), 86400000);
    EXPECT_FALSE(parse_duration_ms("").ok());
    EXPECT_FALSE(parse_duration_ms("-5s").ok());
    EXPECT_FALSE(parse_duration_ms("5y").ok());
    EXPECT_FALSE(parse_duration_ms("99999999999999999999").ok());
}

TEST(ConfigHelpers, TrafficSelectors) {
    auto t = parse_traffic_selector("192.0.2.7");
    ASSERT_TRUE(t.ok());
    EXPECT_EQ(t->start_addr, t->end_addr);
    EXPECT_EQ(t->ip_protocol, 0);
    EXPECT_EQ(t->end_port, 65535);
    t = parse_traffic_selector("2001:db8::/32[udp/2152-2153]");
    ASSERT_TRUE(t.ok()) << t.error().detail();
    EXPECT_EQ(t->start_port, 2152);
    EXPECT_EQ(t->end_port, 2153);
    EXPECT_TRUE(t->start_addr.v6);
    t = parse_traffic_selector("0.0.0.0/0[132]");
    ASSERT_TRUE(t.ok());
    EXPECT_EQ(t->ip_protocol, 132);
    EXPECT_EQ(t->end_addr.to_string(), "255.255.255.255");
    t = parse_traffic_selector("198.51.100.0/24[tcp]");
    ASSERT_TRUE(t.ok());
    EXPECT_EQ(t->ip_protocol, 6);
    EXPECT_EQ(t->start_port, 0);
}

// [metrics] (Prometheus /metrics of `ike run`, docs/metrics.md): off by default, listen kept as
// given (the daemon validates the address when it binds), unknown keys and wrong types refused.
TEST(ConfigFile, MetricsSection) {
    auto off = parse_string(kMinimal, "t.toml");
    ASSERT_TRUE(off.ok()) << off.error().detail();
    EXPECT_TRUE(off->metrics.listen.empty());
    auto on = parse_string(std::string("[metrics]\nlisten = \"127.0.0.1:9101\"\n") + kMinimal, "t.toml");
    ASSERT_TRUE(on.ok()) << on.error().detail();
    EXPECT_EQ(on->metrics.listen, "127.0.0.1:9101");
    EXPECT_EQ(on->metrics.where.line, 2u);
    EXPECT_NE(error_of(std::string("[metrics]\nlisten = 9101\n") + kMinimal).find("t.toml:2:"), std::string::npos);
    std::string e = error_of(std::string("[metrics]\nport = 9101\n") + kMinimal);
    EXPECT_NE(e.find("[metrics]: unknown key 'port'"), std::string::npos) << e;
}
