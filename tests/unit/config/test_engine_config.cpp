// FileConfig -> ike::EngineConfig with real files: keys, certificate chains, labelled trust
// anchors, PSK files; errors keep their file:line:col.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <thread>
#include <x2sec/config/engine_config.hpp>
#include <x2sec/test/ports.hpp>
#include <x2sec/test/test_pki.hpp>
#include <x2sec/x509/ocsp_stapler.hpp>

using namespace x2sec;
using namespace x2sec::config;

namespace {

const std::string kPki = std::string(X2SEC_CONFIG_TEST_DATA) + "/pki";

const char* kAnchors = R"(
[[trust_anchor]]
label = "vendor-a"
file = "vendor-root.pem"
[[trust_anchor]]
label = "operator"
file = "operator-root.pem"
[[credential]]
name = "henb-a"
key = "henb-a.key"
certs = ["henb-a.pem"]
)";

std::string cert_peer(const std::string& extra = "", const std::string& local_id = "fqdn:henb-a.example.org") {
    return std::string(kAnchors) + R"(
[[peer]]
name = "b"
local_addr = "192.0.2.1"
remote_addr = "192.0.2.2"
local_id = ")" +
           local_id + R"("
remote_id = "henb-b.example.org"
credential = "henb-a"
ike_proposals = ["aes256gcm16-prfsha384-ecp384", "aes128-sha256-modp2048"]
)" + extra +
           R"(
  [[peer.child]]
  name = "x2c"
  local_ts = "198.51.100.0/24[sctp/36422]"
  remote_ts = "203.0.113.0/24[sctp/36422]"
  esp_proposals = ["aes128gcm16", "aes256-sha256"]
)";
}

Result<LoadedConfig> build(const std::string& text) {
    auto f = parse_string(text, "e.toml", kPki);
    if (!f) return std::move(f).error();
    return build_engine_config(*f);
}

}  // namespace

TEST(EngineConfig, CertificatePeer) {
    auto r = build(cert_peer());
    ASSERT_TRUE(r.ok()) << r.error().detail();
    ASSERT_EQ(r->engine.peers.size(), 1u);
    const auto& p = r->engine.peers[0];
    EXPECT_EQ(p.local_id.type, x509::IdType::Fqdn);
    ASSERT_TRUE(p.remote_id);
    EXPECT_EQ(p.remote_id->to_string(), ike::Identity::parse("henb-b.example.org")->to_string());
    ASSERT_TRUE(p.private_key);
    ASSERT_EQ(p.cert_chain.size(), 1u);
    EXPECT_NE(p.cert_chain[0].subject().find("henb-a.example.org"), std::string::npos);
    ASSERT_TRUE(p.trust);
    auto anchors = p.trust->anchors();
    ASSERT_EQ(anchors.size(), 2u);  // no 'trust' filter: every anchor
    EXPECT_EQ(anchors[0].first, "operator");
    ASSERT_EQ(p.ike_proposals.size(), 2u);
    EXPECT_EQ(ike::to_string(p.ike_proposals[0]),
              ike::to_string(*ike::parse_ike_proposal("aes256gcm16-prfsha384-ecp384")));
    ASSERT_EQ(p.children.size(), 1u);
    EXPECT_EQ(p.children[0].proposals.size(), 2u);
    EXPECT_EQ(p.children[0].local_ts[0].ip_protocol, 132);
    EXPECT_EQ(p.local_auth, ike::AuthMethod::Certificate);
    EXPECT_EQ(p.psk.size(), 0u);
}

TEST(EngineConfig, TrustLabelsSelectAnchors) {
    auto r = build(cert_peer("trust = [\"vendor-a\"]"));
    ASSERT_TRUE(r.ok()) << r.error().detail();
    auto anchors = r->engine.peers[0].trust->anchors();
    ASSERT_EQ(anchors.size(), 1u);
    EXPECT_EQ(anchors[0].first, "vendor-a");
    EXPECT_NE(anchors[0].second.subject().find("Vendor A Root CA"), std::string::npos);
}

TEST(EngineConfig, LocalIdMustBeInOwnCertificate) {
    auto r = build(cert_peer("", "fqdn:henb-z.example.org"));
    ASSERT_FALSE(r.ok());
    EXPECT_NE(
        r.error().detail().find("e.toml:17:12: peer 'b': local_id 'fqdn:henb-z.example.org' is not in the certificate"),
        std::string::npos)
        << r.error().detail();
    // An IP SAN matches an ipv4 identity.
    EXPECT_TRUE(build(cert_peer("", "ipv4:192.0.2.1")).ok());
}

TEST(EngineConfig, BadProposalsAndIdentitiesPointAtTheirText) {
    std::string text = cert_peer();
    text.replace(text.find("aes128-sha256-modp2048"), 22, "aes128-sha256-modp1024");
    auto r = build(text);
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.error().detail().find(
                  "e.toml:20:50: peer 'b': IKE proposal 'aes128-sha256-modp1024': unknown algorithm 'modp1024'"),
              std::string::npos)
        << r.error().detail();
    text = cert_peer();
    text.replace(text.find("\"aes256-sha256\""), 15, "\"chacha20poly1305\"");
    r = build(text);
    ASSERT_FALSE(r.ok());
    EXPECT_NE(
        r.error().detail().find("child 'x2c': ") != std::string::npos && r.error().detail().find("chacha20poly1305"),
        std::string::npos)
        << r.error().detail();
}

TEST(EngineConfig, MissingFilesAreReportedAtTheirEntry) {
    std::string text = cert_peer();
    text.replace(text.find("henb-a.key"), 10, "missing.key");
    text.replace(text.find("operator-root.pem"), 17, "missing-root.pem");
    auto r = build(text);
    ASSERT_FALSE(r.ok());
    const std::string& e = r.error().detail();
    EXPECT_NE(e.find("e.toml:5:1: trust anchor 'operator': cannot load '" + kPki + "/missing-root.pem'"),
              std::string::npos)
        << e;
    EXPECT_NE(e.find("e.toml:8:1: credential 'henb-a': cannot load private key '" + kPki + "/missing.key'"),
              std::string::npos)
        << e;
}

TEST(EngineConfig, PskFromHexTextAndFile) {
    const char* base = R"(
[[peer]]
name = "p"
local_addr = "192.0.2.1"
remote_addr = "192.0.2.2"
local_id = "192.0.2.1"
auth = "psk"
%s
  [[peer.child]]
  name = "c"
  local_ts = "198.51.100.0/24"
  remote_ts = "203.0.113.0/24"
)";
    auto with = [&](const std::string& line) {
        std::string text = base;
        text.replace(text.find("%s"), 2, line);
        return build(text);
    };
    auto r = with("psk = \"0x000102030405060708090a0b0c0d0e0f\"");
    ASSERT_TRUE(r.ok()) << r.error().detail();
    EXPECT_EQ(Bytes(r->engine.peers[0].psk.data(), r->engine.peers[0].psk.data() + 16),
              hex("000102030405060708090a0b0c0d0e0f"));
    EXPECT_EQ(r->engine.peers[0].local_id.type, x509::IdType::Ipv4Addr);
    EXPECT_FALSE(r->engine.peers[0].trust);  // no certificate checks for a PSK peer
    r = with("psk_file = \"peer.psk\"");
    ASSERT_TRUE(r.ok()) << r.error().detail();
    std::string expect = "this-is-a-test-only-psk-of-32-octets";  // newline stripped
    ASSERT_EQ(r->engine.peers[0].psk.size(), expect.size());
    EXPECT_EQ(std::string(reinterpret_cast<const char*>(r->engine.peers[0].psk.data()), expect.size()), expect);
    r = with("psk = \"hex:0g\"");
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.error().detail().find("e.toml:8:7: peer 'p': 'psk' is not valid hex"), std::string::npos)
        << r.error().detail();
    r = with("psk_file = \"nope.psk\"");
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.error().detail().find("e.toml:8:12: peer 'p': cannot read psk_file"), std::string::npos)
        << r.error().detail();
}

TEST(EngineConfig, EngineSectionIsCarried) {
    auto r =
        build("[engine]\nretransmit_timeout = \"500ms\"\nretransmit_tries = 2\ncookie_threshold = 3\n" + cert_peer());
    ASSERT_TRUE(r.ok()) << r.error().detail();
    EXPECT_EQ(r->engine.retransmit.timeout_ms, 500);
    EXPECT_EQ(r->engine.retransmit.tries, 2u);
    EXPECT_EQ(r->engine.cookie_threshold, 3u);
}

TEST(EngineConfig, HalfOpenCapsAreCarried) {
    auto r =
        build("[engine]\ncookie_threshold = 10\nmax_half_open = 200\nmax_half_open_per_source = 4\n" + cert_peer());
    ASSERT_TRUE(r.ok()) << r.error().detail();
    EXPECT_EQ(r->engine.max_half_open, 200u);
    EXPECT_EQ(r->engine.max_half_open_per_source, 4u);
    r = build(cert_peer());
    ASSERT_TRUE(r.ok()) << r.error().detail();
    EXPECT_EQ(r->engine.max_half_open, 5000u);
    EXPECT_EQ(r->engine.max_half_open_per_source, 64u);
    r = build("[engine]\nmax_half_open_per_source = 0\n" + cert_peer());
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.error().detail().find("max_half_open_per_source"), std::string::npos) << r.error().detail();
}

TEST(EngineConfig, UniquePolicy) {
    auto r = build(cert_peer());
    ASSERT_TRUE(r.ok()) << r.error().detail();
    EXPECT_EQ(r->engine.peers[0].unique, ike::UniquePolicy::Replace);  // the default
    for (auto [text, policy] :
         {std::pair{"no", ike::UniquePolicy::No}, std::pair{"never", ike::UniquePolicy::Never},
          std::pair{"keep", ike::UniquePolicy::Keep}, std::pair{"replace", ike::UniquePolicy::Replace}}) {
        r = build(cert_peer(std::string("unique = \"") + text + "\""));
        ASSERT_TRUE(r.ok()) << r.error().detail();
        EXPECT_EQ(r->engine.peers[0].unique, policy) << text;
    }
    r = build(cert_peer("unique = \"sometimes\""));
    ASSERT_FALSE(r.ok());
    EXPECT_NE(
        r.error().detail().find(
            "e.toml:21:10: peer 'b': unique must be \"no\", \"never\", \"keep\" or \"replace\", not \"sometimes\""),
        std::string::npos)
        << r.error().detail();
}

TEST(EngineConfig, RevocationIsOnByDefaultAndSharedByTheTrustStores) {
    auto r = build(cert_peer());
    ASSERT_TRUE(r.ok()) << r.error().detail();
    ASSERT_TRUE(r->revocation);
    EXPECT_EQ(r->engine.peers[0].trust->revocation(), r->revocation);
    const auto& c = r->revocation->config();
    EXPECT_TRUE(c.fetch_distribution_points);
    EXPECT_FALSE(c.require);
    EXPECT_EQ(c.policy, x509::CrlPolicy::Hard);
}

TEST(EngineConfig, RevocationSectionAndOldSwitch) {
    auto r = build(
        "[revocation]\nmode = \"require\"\ncrl_policy = \"soft\"\nfetch = false\n"
        "crl_urls = [\"http://127.0.0.1:8080/crl\"]\nfetch_timeout = \"2s\"\nmax_wait = \"250ms\"\n"
        "refresh = \"10m\"\nretry = \"5s\"\nmax_crl_size = 4096\ncache_dir = \"crl-cache\"\n" +
        cert_peer());
    ASSERT_TRUE(r.ok()) << r.error().detail();
    ASSERT_TRUE(r->revocation);
    const auto& c = r->revocation->config();
    EXPECT_TRUE(c.require);
    EXPECT_EQ(c.policy, x509::CrlPolicy::Soft);
    EXPECT_FALSE(c.fetch_distribution_points);
    EXPECT_EQ(c.crl_urls, std::vector<std::string>{"http://127.0.0.1:8080/crl"});
    EXPECT_EQ(c.fetch_timeout_ms, 2000);
    EXPECT_EQ(c.max_wait_ms, 250);
    EXPECT_EQ(c.refresh_s, 600);
    EXPECT_EQ(c.retry_s, 5);
    EXPECT_EQ(c.max_crl_size, 4096u);
    EXPECT_EQ(c.cache_dir, kPki + "/crl-cache");

    auto off = build("crl_check = false\n" + cert_peer());
    ASSERT_TRUE(off.ok()) << off.error().detail();
    EXPECT_FALSE(off->revocation);
    EXPECT_FALSE(off->engine.peers[0].trust->revocation());
    auto on = build("crl_check = true\n" + cert_peer());
    ASSERT_TRUE(on.ok());
    ASSERT_TRUE(on->revocation);
    EXPECT_TRUE(on->revocation->config().require);
}

TEST(EngineConfig, CredentialKeyMayBeAPkcs11UriNeverResolvedNorLogged) {
    std::string text = cert_peer();
    const std::string uri = "pkcs11:token=henb-a;object=device?pin-value=s3cret&module-path=/nonexistent/p11.so";
    text.replace(text.find("key = \"henb-a.key\""), std::string("key = \"henb-a.key\"").size(),
                 "key = \"" + uri + "\"");
    auto f = parse_string(text, "e.toml", kPki);
    ASSERT_TRUE(f.ok()) << f.error().detail();
    ASSERT_EQ(f->credentials.size(), 1u);
    EXPECT_EQ(f->credentials[0].key_file, uri);  // not made relative to the config directory
    auto r = build_engine_config(*f);
    ASSERT_FALSE(r.ok());  // the module does not exist
    EXPECT_NE(r.error().detail().find("pkcs11:token=henb-a"), std::string::npos) << r.error().detail();
    EXPECT_NE(r.error().detail().find("/nonexistent/p11.so"), std::string::npos) << r.error().detail();
    EXPECT_EQ(r.error().detail().find("s3cret"), std::string::npos) << r.error().detail();
}

TEST(EngineConfig, RevocationMethodOcsp) {
    auto r =
        build("[revocation]\nmethod = \"ocsp-then-crl\"\nocsp_nonce = false\nocsp_max_age = \"1h\"\n" + cert_peer());
    ASSERT_TRUE(r.ok()) << r.error().detail();
    ASSERT_TRUE(r->revocation);
    const auto& c = r->revocation->config();
    EXPECT_EQ(c.method, x509::RevocationMethod::OcspThenCrl);
    EXPECT_FALSE(c.ocsp_nonce);
    EXPECT_EQ(c.ocsp_max_age_s, 3600);
    auto o = build("[revocation]\nmethod = \"ocsp\"\n" + cert_peer());
    ASSERT_TRUE(o.ok()) << o.error().detail();
    EXPECT_EQ(o->revocation->config().method, x509::RevocationMethod::Ocsp);
    EXPECT_TRUE(o->revocation->config().ocsp_nonce);
    EXPECT_EQ(build(cert_peer())->revocation->config().method, x509::RevocationMethod::Crl);
    auto bad = build("[revocation]\nmethod = \"scvp\"\n" + cert_peer());
    ASSERT_FALSE(bad.ok());
    EXPECT_NE(bad.error().detail().find("'method' must be"), std::string::npos) << bad.error().detail();
}

TEST(EngineConfig, RevocationSectionErrorsNameTheKey) {
    auto r =
        build("[revocation]\ncrl_policy = \"lenient\"\nmode = \"maybe\"\ncrl_urls = [\"ldap://x\"]\n" + cert_peer());
    ASSERT_FALSE(r.ok());
    const std::string e = r.error().detail();
    EXPECT_NE(e.find("e.toml:2:"), std::string::npos) << e;
    EXPECT_NE(e.find("'crl_policy' must be \"hard\" or \"soft\""), std::string::npos) << e;
    EXPECT_NE(e.find("'mode' must be"), std::string::npos) << e;
    EXPECT_NE(e.find("'ldap://x' is not an http:// URL"), std::string::npos) << e;
}

TEST(EngineConfig, OcspStapling) {
    auto r = build(cert_peer());
    ASSERT_TRUE(r.ok()) << r.error().detail();
    EXPECT_EQ(r->engine.peers[0].ocsp_stapling, ike::OcspStapling::Off);  // the default
    r = build(cert_peer("ocsp_stapling = \"require\"\nocsp_staple_file = \"/etc/x2sec/ocsp.der\""));
    ASSERT_TRUE(r.ok()) << r.error().detail();
    EXPECT_EQ(r->engine.peers[0].ocsp_stapling, ike::OcspStapling::Require);
    EXPECT_EQ(r->engine.peers[0].ocsp_staple_file, "/etc/x2sec/ocsp.der");
    r = build(cert_peer("ocsp_stapling = \"maybe\""));
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.error().detail().find("ocsp_stapling 'maybe' is not off, request or require"), std::string::npos)
        << r.error().detail();
}

TEST(EngineConfig, OcspResponders) {
    auto r =
        build(cert_peer("ocsp_stapling = \"request\"\nocsp_responders = [\"operator-root.pem\", \"vendor-root.pem\"]"));
    ASSERT_TRUE(r.ok()) << r.error().detail();
    const auto& p = r->engine.peers[0];
    ASSERT_EQ(p.ocsp_responders.size(), 2u);  // file order: their key hashes go in the CERTREQ in this order
    EXPECT_EQ(p.ocsp_responders[0].spki_sha1(), p.trust->anchors()[0].second.spki_sha1());  // operator
    EXPECT_FALSE(p.ocsp_stapler);  // henb-a.pem names no OCSP responder (AIA): nothing to fetch
    r = build(cert_peer("ocsp_responders = [\"missing-responder.pem\"]"));
    ASSERT_FALSE(r.ok());
    const std::string e = r.error().detail();
    EXPECT_NE(e.find("e.toml:"), std::string::npos) << e;
    EXPECT_NE(e.find("peer 'b': ocsp_responders: cannot load"), std::string::npos) << e;
    EXPECT_NE(e.find("missing-responder.pem"), std::string::npos) << e;
}

// A certificate peer whose certificate names an OCSP responder (AIA) gets the stapler, but
// loading the configuration starts no fetch thread (`ike check-config` and the tests that load
// a configuration must not wait for a responder); the daemon's runtime starts it, and dropping
// the configuration then does not wait for the fetch in flight at a silent responder.
TEST(EngineConfig, OcspStaplerIsNotStartedByLoading) {
    const test::SilentListener silent(test::free_tcp_port(5));

    char t[] = "/tmp/x2sec-engine-config-XXXXXX";
    ASSERT_NE(::mkdtemp(t), nullptr);
    const std::string dir = t;
    test::Issued ca = test::make_root("Stapling Operator");
    test::CertOptions o;
    o.subject = "henb-a.example.org";
    o.sans = {"DNS:henb-a.example.org"};
    o.ocsp_urls = {silent.url()};
    auto leaf = test::make_cert(ca, o);
    ASSERT_TRUE(ca.cert.save_pem(dir + "/ca.pem").ok());
    ASSERT_TRUE(leaf.cert.save_pem(dir + "/leaf.pem").ok());
    ASSERT_TRUE(leaf.key.save(dir + "/leaf.key").ok());
    const std::string text = R"(
[revocation]
fetch_timeout = "8s"
[[trust_anchor]]
label = "operator"
file = "ca.pem"
[[credential]]
name = "own"
key = "leaf.key"
certs = ["leaf.pem"]
[[peer]]
name = "b"
local_addr = "192.0.2.1"
remote_addr = "192.0.2.2"
local_id = "fqdn:henb-a.example.org"
remote_id = "henb-b.example.org"
credential = "own"
  [[peer.child]]
  name = "x2c"
  local_ts = "198.51.100.0/24"
  remote_ts = "203.0.113.0/24"
)";
    auto f = parse_string(text, "e.toml", dir);
    ASSERT_TRUE(f.ok()) << f.error().detail();
    auto r = std::make_unique<LoadedConfig>(build_engine_config(*f).value());
    std::filesystem::remove_all(dir);
    x509::OcspStapler* stapler = r->engine.peers.at(0).ocsp_stapler.get();
    ASSERT_NE(stapler, nullptr) << "the AIA of our certificate names a responder";
    EXPECT_FALSE(stapler->started());
    EXPECT_FALSE(silent.connection_pending(500)) << "loading the configuration fetched";

    stapler->start();  // as IkeRuntime::create does
    EXPECT_TRUE(stapler->started());
    ASSERT_TRUE(silent.connection_pending(10000)) << "no fetch after start()";  // connected: in the backlog
    std::this_thread::sleep_for(std::chrono::milliseconds(100));                // the POST is sent, waiting
    const auto t0 = std::chrono::steady_clock::now();
    r.reset();  // the last owner of the stapler: its destructor runs here
    const auto ms =
        std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0).count();
    EXPECT_LT(ms, 2000) << "dropping the configuration waited for the fetch in flight (timeout 8 s)";
}
