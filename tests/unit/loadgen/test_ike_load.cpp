// `x2sec ike load` (src/loadgen) against a real x2sec responder on 127.0.0.1: the responder
// runs in-process (IkeRuntime + ike::Engine on UDP sockets) with the configuration the load
// generator writes (--write-responder-config), loaded through the normal TOML loader.  Bounded
// loads (count and time), no timing assertions.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>
#include <x2sec/common/log.hpp>
#include <x2sec/config/engine_config.hpp>
#include <x2sec/loadgen/ike_load.hpp>
#include <x2sec/runtime/ike_runtime.hpp>

namespace fs = std::filesystem;
using namespace x2sec;
using loadgen::LoadAuth;
using loadgen::LoadOptions;

namespace {

SecureBytes secret(const std::string& s) {
    return SecureBytes(BytesView(reinterpret_cast<const uint8_t*>(s.data()), s.size()));
}

fs::path temp_dir(const std::string& name) {
    fs::path d = fs::temp_directory_path() / ("x2sec-load-" + name + "-" + std::to_string(::getpid()));
    fs::remove_all(d);
    fs::create_directories(d);
    return d;
}

// An x2sec responder built from the TOML the load generator wrote; ephemeral ports.
struct Responder {
    MemoryChildSaBackend backend;
    SystemClock clock;
    std::unique_ptr<runtime::IkeRuntime> rt;
    std::thread thread;
    ike::Endpoint endpoint;

    Responder(const fs::path& toml, uint32_t cookie_threshold) {
        auto cfg = config::load(toml.string());
        if (!cfg) throw std::runtime_error("responder config: " + cfg.error().detail());
        for (auto& p : cfg->engine.peers) p.local_port = p.local_natt_port = 0;  // ephemeral; 0 matches any port
        cfg->engine.cookie_threshold = cookie_threshold;
        auto engine = std::make_unique<runtime::EngineAdapter<ike::Engine>>(cfg->engine, backend, os_rng());
        runtime::RuntimeOptions ro;
        ro.shutdown_grace_ms = 200;
        auto r = runtime::IkeRuntime::create(cfg->engine, std::move(engine), ro, clock);
        if (!r) throw std::runtime_error("responder runtime: " + r.error().detail());
        rt = std::move(*r);
        endpoint = rt->ike_endpoints().at(0);
        thread = std::thread([this] { rt->run(); });
    }
    ~Responder() {
        rt->stop();
        thread.join();
    }
    uint64_t counter(const std::string& name) {
        uint64_t v = 0;
        rt->call([&](runtime::EngineApi& e, Millis) {
            auto snap = e.counters().snapshot();
            if (auto it = snap.find(name); it != snap.end()) v = it->second;
        });
        return v;
    }
    size_t established() {
        size_t n = 0;
        rt->call([&](runtime::EngineApi& e, Millis) {
            for (const auto& s : e.list_sas())
                if (s.state == "ESTABLISHED" && s.children.size() == 1) ++n;
        });
        return n;
    }
};

LoadOptions base_options(size_t count) {
    LoadOptions o;
    o.target = {IpAddress::v4(127, 0, 0, 1), 500};  // the port is replaced once the responder is bound
    o.count = count;
    o.concurrency = 20;
    o.duration_s = 120;
    o.ports_per_source = 16;
    return o;
}

fs::path write_config(const LoadOptions& o, const fs::path& dir) {
    auto t = loadgen::responder_config_toml(o);
    if (!t) throw std::runtime_error(t.error().detail());
    fs::path p = dir / "responder.toml";
    auto st = loadgen::write_private_file(p.string(), *t);
    if (!st) throw std::runtime_error(st.error().detail());
    return p;
}

class IkeLoad : public ::testing::Test {
protected:
    void SetUp() override { log::set_level("error"); }
};

TEST_F(IkeLoad, PskIsHmacSha256OfBaseAndIdentity) {
    // The documented derivation, checked against RFC 4231 test case 2 (key "Jefe").
    EXPECT_EQ(to_hex(loadgen::derive_psk(secret("Jefe"), "what do ya want for nothing?")),
              "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    auto a = to_hex(loadgen::derive_psk(secret("base"), "n0.load.x2sec.example"));
    EXPECT_NE(a, to_hex(loadgen::derive_psk(secret("base"), "n1.load.x2sec.example")));
    EXPECT_NE(a, to_hex(loadgen::derive_psk(secret("other"), "n0.load.x2sec.example")));
    EXPECT_EQ(loadgen::initiator_identity(7, "r.example"), "n7.r.example");
    // The responder config carries exactly that PSK for that identity.
    LoadOptions o;
    o.count = 2;
    o.auth = LoadAuth::Psk;
    o.psk_base = secret("base");
    auto t = loadgen::responder_config_toml(o);
    ASSERT_TRUE(t.ok());
    EXPECT_NE(t->find("remote_id = \"fqdn:n0.load.x2sec.example\"\nauth = \"psk\"\npsk = \"hex:" + a + "\""),
              std::string::npos)
        << *t;
}

TEST_F(IkeLoad, CharonConfigCarriesTheSamePsksAndSelectors) {
    LoadOptions o;
    o.count = 3;
    o.auth = LoadAuth::Psk;
    o.psk_base = secret("base");
    o.target = {IpAddress::v4(127, 0, 0, 1), 1500};
    auto t = loadgen::charon_swanctl_conf(o);
    ASSERT_TRUE(t.ok()) << t.error().detail();
    // One secret per identity, the same PSK as the x2sec responder's (derive_psk).
    for (size_t i = 0; i < 3; ++i) {
        auto id = loadgen::initiator_identity(i, o.realm);
        EXPECT_NE(t->find("    id = " + id + "\n    secret = 0x" + to_hex(loadgen::derive_psk(o.psk_base, id)) + "\n"),
                  std::string::npos)
            << *t;
    }
    EXPECT_EQ(t->find(loadgen::initiator_identity(3, o.realm)), std::string::npos);
    EXPECT_NE(t->find("local_addrs = 127.0.0.1\n    local_port = 1500\n"), std::string::npos);
    EXPECT_NE(t->find("proposals = aes128gcm16-prfsha256-ecp256\n"), std::string::npos);
    EXPECT_NE(t->find("local_ts = 10.255.255.254/32\n        remote_ts = 10.0.0.0/8\n"), std::string::npos);
    EXPECT_NE(t->find("auth = psk\n      id = responder.load.x2sec.example\n"), std::string::npos);
    // swanctl.conf: one "key = value" per line, braces balanced.
    EXPECT_EQ(std::count(t->begin(), t->end(), '{'), std::count(t->begin(), t->end(), '}'));
    // Certificates: pubkey both ways, no secrets section.
    auto dir = temp_dir("charon");
    auto creds = loadgen::prepare_certs((dir / "certs").string(), 2, o.realm, o.responder_id);
    ASSERT_TRUE(creds.ok()) << creds.error().detail();
    o.auth = LoadAuth::Cert;
    o.certs = &*creds;
    auto c = loadgen::charon_swanctl_conf(o);
    ASSERT_TRUE(c.ok());
    EXPECT_NE(c->find("auth = pubkey\n      certs = responder.pem\n"), std::string::npos) << *c;
    EXPECT_EQ(c->find("secrets"), std::string::npos);
    o.certs = nullptr;
    EXPECT_FALSE(loadgen::charon_swanctl_conf(o).ok());
    fs::remove_all(dir);
}

TEST_F(IkeLoad, HoldKeepsTheSasWhileTheResponderRekeys) {
    // --hold: after the setups the generator keeps its SAs and answers the responder's Child
    // SA rekeys (rekey = 1s on the responder, up to 10 % earlier) until the hold ends.
    auto dir = temp_dir("hold");
    LoadOptions o = base_options(4);
    o.auth = LoadAuth::Psk;
    o.psk_base = secret("hold");
    auto t = loadgen::responder_config_toml(o);
    ASSERT_TRUE(t.ok());
    std::string text = *t;
    for (size_t at; (at = text.find("rekey = \"0s\"\n\n")) != std::string::npos;)
        text.replace(at, 12, "rekey = \"1s\"");
    ASSERT_TRUE(loadgen::write_private_file((dir / "responder.toml").string(), text).ok());
    Responder r(dir / "responder.toml", 50);
    o.target = r.endpoint;
    o.hold_s = 2.5;
    auto rep = loadgen::run_load(o);
    ASSERT_TRUE(rep.ok()) << rep.error().detail();
    EXPECT_EQ(rep->succeeded, 4u) << rep->to_text();
    EXPECT_GE(rep->wall_seconds, 2.5);
    EXPECT_GE(r.backend.install_count(), 8u) << "each Child SA rekeyed at least once during the hold";
    EXPECT_EQ(r.established(), 4u);
    fs::remove_all(dir);
}

TEST_F(IkeLoad, PskLoadAllSucceedAndMatchResponder) {
    auto dir = temp_dir("psk");
    LoadOptions o = base_options(200);
    o.auth = LoadAuth::Psk;
    o.psk_base = secret("load test base secret");
    auto toml = write_config(o, dir);
    struct stat st {};
    ASSERT_EQ(::stat(toml.c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0777, 0600u) << "the PSK responder config holds secrets";
    Responder r(toml, 50);
    o.target = r.endpoint;
    std::ostringstream progress;
    o.progress = &progress;
    auto rep = loadgen::run_load(o);
    ASSERT_TRUE(rep.ok()) << rep.error().detail();
    EXPECT_NE(progress.str().find("up 200 failed 0"), std::string::npos) << progress.str();
    EXPECT_EQ(rep->attempted, 200u);
    EXPECT_EQ(rep->succeeded, 200u) << rep->to_text();
    EXPECT_EQ(rep->failed, 0u);
    EXPECT_TRUE(rep->failures.empty()) << rep->to_text();
    EXPECT_GT(rep->p50_ms, -1.0);
    EXPECT_LE(rep->p50_ms, rep->p99_ms);
    EXPECT_LE(rep->p99_ms, rep->max_ms);
    EXPECT_EQ(r.established(), rep->succeeded);
    auto j = rep->to_json();
    EXPECT_EQ(j["succeeded"], 200);
    EXPECT_TRUE(j["latency_ms"].contains("p99"));
    fs::remove_all(dir);
}

TEST_F(IkeLoad, CertLoadWithCookiesRekeysAndDeletes) {
    auto dir = temp_dir("cert");
    auto creds =
        loadgen::prepare_certs((dir / "certs").string(), 200, "load.x2sec.example", "responder.load.x2sec.example");
    ASSERT_TRUE(creds.ok()) << creds.error().detail();
    ASSERT_EQ(creds->initiators.size(), 200u);
    struct stat st {};
    ASSERT_EQ(::stat((dir / "certs/initiators/0.key").c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0777, 0600u);
    // A second run reads the same certificates back.
    auto again =
        loadgen::prepare_certs((dir / "certs").string(), 200, "load.x2sec.example", "responder.load.x2sec.example");
    ASSERT_TRUE(again.ok()) << again.error().detail();
    EXPECT_EQ(again->initiators[17].cert.der(), creds->initiators[17].cert.der());
    // ...and refuses them for another realm (identities would not match the certificates).
    EXPECT_FALSE(
        loadgen::prepare_certs((dir / "certs").string(), 2, "other.example", "responder.load.x2sec.example").ok());

    LoadOptions o = base_options(200);
    o.auth = LoadAuth::Cert;
    o.certs = &*creds;
    auto toml = write_config(o, dir);
    {
        // Cookies on every IKE_SA_INIT: the generator must answer them.
        Responder r(toml, 0);
        o.target = r.endpoint;
        auto rep = loadgen::run_load(o);
        ASSERT_TRUE(rep.ok()) << rep.error().detail();
        EXPECT_EQ(rep->succeeded, 200u) << rep->to_text();
        EXPECT_EQ(rep->failed + rep->unfinished, 0u) << rep->to_text();
        EXPECT_EQ(r.established(), 200u);
        EXPECT_GE(r.counter("ike.tx.cookie"), 200u) << "the responder demanded a COOKIE on every IKE_SA_INIT";
    }
    {
        Responder r(toml, 50);
        o.target = r.endpoint;
        o.count = 60;
        o.rekey_child = o.rekey_ike = o.delete_after = true;
        auto rep = loadgen::run_load(o);
        ASSERT_TRUE(rep.ok()) << rep.error().detail();
        EXPECT_EQ(rep->succeeded, 60u) << rep->to_text();
        EXPECT_EQ(rep->child_rekeys, 60u) << rep->to_text();
        EXPECT_EQ(rep->ike_rekeys, 60u) << rep->to_text();
        EXPECT_EQ(rep->deletes, 60u) << rep->to_text();
        EXPECT_TRUE(rep->post_failures.empty()) << rep->to_text();
        EXPECT_EQ(r.established(), 0u) << "every IKE SA was deleted";
    }
    fs::remove_all(dir);
}

TEST_F(IkeLoad, CertificateDirectoryIsReadBackWithMatchingKeys) {
    auto dir = temp_dir("certdir");
    const std::string certs = (dir / "certs").string(), realm = "load.x2sec.example";
    const std::string rid = "responder.load.x2sec.example";
    auto issued = loadgen::prepare_certs(certs, 3, realm, rid);  // issued: kept as made, not read back
    ASSERT_TRUE(issued.ok()) << issued.error().detail();
    auto loaded = loadgen::prepare_certs(certs, 3, realm, rid);  // read from the files
    ASSERT_TRUE(loaded.ok()) << loaded.error().detail();
    for (size_t i = 0; i < 3; ++i) {
        const auto& a = issued->initiators[i];
        const auto& b = loaded->initiators[i];
        EXPECT_EQ(b.identity, loadgen::initiator_identity(i, realm));
        EXPECT_EQ(a.cert.der(), b.cert.der()) << i;
        EXPECT_EQ(b.cert.san_dns(), std::vector<std::string>{b.identity});
        // Each key is the one of its certificate, issued or loaded: it signs what the certificate verifies.
        const Bytes msg = to_bytes("octets " + std::to_string(i));
        for (const auto* ini : {&a, &b}) {
            auto sig = ini->key->sign(crypto::SigScheme::EcdsaSha256, msg);
            ASSERT_TRUE(sig.ok()) << sig.error().detail();
            EXPECT_TRUE(
                crypto::verify_signature(ini->cert.public_key(), crypto::SigScheme::EcdsaSha256, msg, *sig).ok());
        }
    }
    // The trust anchor is the CA on disk: both verify the initiators' certificates.
    EXPECT_TRUE(loaded->trust->verify(loaded->initiators[2].cert, {}, ::time(nullptr)).ok());
    EXPECT_TRUE(issued->trust->verify(loaded->initiators[2].cert, {}, ::time(nullptr)).ok());

    // A key file that is not its certificate's, and a certificate file without a certificate,
    // are errors naming the file.
    const fs::path k0 = dir / "certs/initiators/0.key", k1 = dir / "certs/initiators/1.key";
    fs::rename(k0, dir / "k0");
    fs::copy_file(k1, k0);
    auto swapped = loadgen::prepare_certs(certs, 3, realm, rid);
    ASSERT_FALSE(swapped.ok());
    EXPECT_NE(swapped.error().detail().find("0.key: not the key of"), std::string::npos) << swapped.error().detail();
    fs::remove(k0);
    fs::rename(dir / "k0", k0);
    ASSERT_TRUE(loadgen::prepare_certs(certs, 3, realm, rid).ok());
    std::ofstream(dir / "certs/initiators/2.pem") << "not a certificate\n";
    auto garbled = loadgen::prepare_certs(certs, 3, realm, rid);
    ASSERT_FALSE(garbled.ok());
    EXPECT_NE(garbled.error().detail().find("2.pem: no PEM certificate"), std::string::npos)
        << garbled.error().detail();
    fs::remove_all(dir);
}

TEST_F(IkeLoad, WrongPskIsReportedAsAuthFailure) {
    auto dir = temp_dir("wrongpsk");
    LoadOptions o = base_options(30);
    o.auth = LoadAuth::Psk;
    o.psk_base = secret("the responder's base");
    auto toml = write_config(o, dir);
    Responder r(toml, 50);
    o.target = r.endpoint;
    o.psk_base = secret("a different base");
    auto rep = loadgen::run_load(o);
    ASSERT_TRUE(rep.ok()) << rep.error().detail();
    EXPECT_EQ(rep->succeeded, 0u);
    EXPECT_EQ(rep->failed, 30u) << rep->to_text();
    ASSERT_EQ(rep->failures.count("auth: peer_rejected"), 1u) << rep->to_text();
    EXPECT_EQ(rep->failures.at("auth: peer_rejected").count, 30u) << rep->to_text();
    EXPECT_NE(rep->to_text().find("auth: peer_rejected"), std::string::npos);
    EXPECT_EQ(r.established(), 0u);
    fs::remove_all(dir);
}

TEST_F(IkeLoad, UntrustedResponderCaIsReportedByReason) {
    // The responder trusts the initiators' CA (a), but its own certificate is from CA b, which
    // the initiators do not trust: each initiator rejects the responder's AUTH.
    auto dir = temp_dir("untrusted");
    auto mine = loadgen::prepare_certs((dir / "a").string(), 10, "load.x2sec.example", "responder.load.x2sec.example");
    auto theirs =
        loadgen::prepare_certs((dir / "b").string(), 10, "load.x2sec.example", "responder.load.x2sec.example");
    ASSERT_TRUE(mine.ok() && theirs.ok());
    LoadOptions o = base_options(10);
    o.auth = LoadAuth::Cert;
    o.certs = &*theirs;
    auto text = loadgen::responder_config_toml(o);
    ASSERT_TRUE(text.ok());
    std::string t = *text;
    const std::string b_ca = (dir / "b" / "ca.pem").string(), a_ca = (dir / "a" / "ca.pem").string();
    ASSERT_NE(t.find(b_ca), std::string::npos);
    t.replace(t.find(b_ca), b_ca.size(), a_ca);
    auto toml = dir / "responder.toml";
    ASSERT_TRUE(loadgen::write_private_file(toml.string(), t).ok());
    Responder r(toml, 50);
    o.target = r.endpoint;
    o.certs = &*mine;
    auto rep = loadgen::run_load(o);
    ASSERT_TRUE(rep.ok()) << rep.error().detail();
    EXPECT_EQ(rep->succeeded, 0u);
    EXPECT_EQ(rep->failed, 10u) << rep->to_text();
    ASSERT_EQ(rep->failures.size(), 1u) << rep->to_text();
    const std::string reason = rep->failures.begin()->first;
    EXPECT_EQ(reason, std::string("auth: ") + x509::to_string(x509::VerifyFailure::UntrustedCa)) << rep->to_text();
    EXPECT_EQ(rep->failures.begin()->second.count, 10u);
    fs::remove_all(dir);
}

TEST_F(IkeLoad, NoResponderIsATimeout) {
    // A bound UDP port that never answers.
    auto sink = runtime::UdpSocket::bind({IpAddress::v4(127, 0, 0, 1), 0});
    ASSERT_TRUE(sink.ok());
    LoadOptions o = base_options(4);
    o.auth = LoadAuth::Psk;
    o.psk_base = secret("x");
    o.target = sink->local();
    o.retransmit_timeout_ms = 100;
    o.retransmit_tries = 1;
    auto rep = loadgen::run_load(o);
    ASSERT_TRUE(rep.ok()) << rep.error().detail();
    EXPECT_EQ(rep->failed, 4u) << rep->to_text();
    ASSERT_EQ(rep->failures.count("timeout"), 1u) << rep->to_text();
    EXPECT_EQ(rep->failures.at("timeout").count, 4u);
}

TEST_F(IkeLoad, TimeBoundLeavesUnfinished) {
    auto sink = runtime::UdpSocket::bind({IpAddress::v4(127, 0, 0, 1), 0});
    ASSERT_TRUE(sink.ok());
    LoadOptions o = base_options(3);
    o.auth = LoadAuth::Psk;
    o.psk_base = secret("x");
    o.target = sink->local();
    o.retransmit_timeout_ms = 60000;
    o.duration_s = 0.2;
    auto rep = loadgen::run_load(o);
    ASSERT_TRUE(rep.ok()) << rep.error().detail();
    EXPECT_EQ(rep->attempted, 3u);
    EXPECT_EQ(rep->unfinished, 3u) << rep->to_text();
    EXPECT_EQ(rep->succeeded + rep->failed, 0u);
}

TEST_F(IkeLoad, BadOptionsAreErrors) {
    LoadOptions o = base_options(0);
    EXPECT_FALSE(loadgen::run_load(o).ok());
    o.count = 5;
    o.auth = LoadAuth::Cert;  // no certificates
    EXPECT_FALSE(loadgen::run_load(o).ok());
    o.auth = LoadAuth::Psk;  // no base secret
    EXPECT_FALSE(loadgen::run_load(o).ok());
    o.psk_base = secret("x");
    o.ike_proposal = "nonsense";
    EXPECT_FALSE(loadgen::run_load(o).ok());
}

}  // namespace
