// The KDS refuses revoked and expired H(e)NB certificates.  Two H(e)NBs enrol at the operator
// RA/CA (cmp::Server, CMP ir over OpenSSL's client), the KDS takes the CA's CRL from its HTTP
// endpoint (cmp::HttpServer GET /crl), one H(e)NB is revoked with a CMP rr while the KDS keeps
// running: after the KDS's periodic CRL refetch it gets CERTIFICATE_REVOKED, the other still
// gets keys.  Expired certificates get CERTIFICATE_EXPIRED, a stale CRL REVOCATION_UNAVAILABLE.
#include <gtest/gtest.h>
#include <openssl/x509.h>

#include <chrono>
#include <ctime>
#include <filesystem>
#include <thread>
#include <x2sec/cmp/client.hpp>
#include <x2sec/cmp/http.hpp>
#include <x2sec/cmp/lab_pki.hpp>
#include <x2sec/cmp/server.hpp>
#include <x2sec/common/file.hpp>
#include <x2sec/common/rng.hpp>
#include <x2sec/kds/config.hpp>
#include <x2sec/kds/tls.hpp>

using namespace x2sec;

namespace {

const std::string kRealm = "henb.operator.example";

cmp::LabPki& lab() {
    static cmp::LabPki p = cmp::make_lab_pki();
    return p;
}

struct Henb {
    std::string identity;
    pki::PkeyPtr key;
    cmp::Enrolled cred;
    kds::TlsCredentials tls;  // for fetch_key
};

std::string chain_pem(X509* leaf, const std::vector<pki::X509Ptr>& chain) {
    std::string s = pki::cert_pem(leaf);
    for (const auto& c : chain)
        if (X509_check_issued(c.get(), c.get()) != X509_V_OK) s += pki::cert_pem(c.get());  // not the root
    return s;
}

struct KdsRevocation : ::testing::Test {
    std::unique_ptr<cmp::Store> store = std::move(cmp::open_sqlite_store(":memory:").value());
    std::unique_ptr<cmp::Server> ca = std::make_unique<cmp::Server>(lab().server_config(), *store);
    std::unique_ptr<cmp::HttpServer> ca_http;
    kds::ServerConfig kds_config;
    DeterministicRng rng{7};
    SystemClock clock;
    std::unique_ptr<kds::Server> engine;
    std::unique_ptr<kds::TlsServer> kds_server;
    std::shared_ptr<x509::RevocationChecker> checker;
    std::string operator_root_pem = pki::cert_pem(lab().operator_root.cert.get());

    void SetUp() override {
        cmp::HttpOptions o;
        o.threads = 2;
        ca_http = std::make_unique<cmp::HttpServer>(*ca, o);
        ASSERT_TRUE(ca_http->start().ok());
    }
    void TearDown() override {
        if (kds_server) kds_server->stop();
        ca_http->stop();
    }
    std::string crl_url() const { return "http://127.0.0.1:" + std::to_string(ca_http->port()) + "/crl"; }

    // Enrolment with the vendor certificate of device `eui` (CMP ir -> operator certificate).
    Henb enrol(const std::string& eui) {
        Henb h;
        h.identity = eui + "." + kRealm;
        auto dev = lab().device(lab().vendor_a, eui, kRealm);
        h.key = pki::generate_key(pki::KeyAlg::EcP256).value();
        cmp::EnrollRequest r;
        r.transfer = [this](BytesView b) {
            return ca->handle(b, x2sec::cmp::RequestContext{"", static_cast<int64_t>(std::time(nullptr))});
        };
        r.auth_key = dev.key.get();
        r.auth_cert = dev.cert.get();
        r.auth_chain = dev.chain_ptrs();
        r.new_key = h.key.get();
        r.subject = "/CN=" + h.identity;
        r.dns = {h.identity};
        r.operator_roots = {lab().operator_root.cert.get()};
        auto res = cmp::Client::enroll(r);
        EXPECT_TRUE(res.ok()) << (res.ok() ? "" : res.error().detail());
        if (res.ok()) h.cred = std::move(*res);
        auto key_pem = pki::private_key_pem(h.key.get()).value();
        h.tls = kds::TlsCredentials{h.cred.cert ? chain_pem(h.cred.cert.get(), h.cred.chain) : "", std::move(key_pem),
                                    operator_root_pem};
        return h;
    }
    // CMP rr signed by the H(e)NB's own operator credential: the CA's real revocation path.
    Status revoke(const Henb& h) {
        cmp::RevokeRequest rr;
        rr.transfer = [this](BytesView b) {
            return ca->handle(b, x2sec::cmp::RequestContext{"", static_cast<int64_t>(std::time(nullptr))});
        };
        rr.operator_roots = {lab().operator_root.cert.get()};
        rr.key = h.key.get();
        rr.cert = h.cred.cert.get();
        for (auto& c : h.cred.chain) rr.chain.push_back(c.get());
        rr.reason = 1;
        return cmp::Client::revoke(rr);
    }
    // The lab CA writes http://127.0.0.1:8080/crl into its certificates, where nothing listens
    // in these tests: the KDS takes the CA's CRL from its configured URL / file only.
    static x509::RevocationConfig kds_revocation() {
        x509::RevocationConfig rc;
        rc.fetch_distribution_points = false;
        rc.max_wait_ms = 3000;
        return rc;
    }
    void start_kds(const std::vector<std::pair<std::string, std::string>>& nodes,
                   const std::vector<std::pair<std::string, std::string>>& relations, x509::RevocationConfig rc,
                   const std::string& extra_anchor_pem = "") {
        for (const auto& [name, id] : nodes) kds_config.nodes.push_back({name, id});
        kds_config.relations = relations;
        engine = std::make_unique<kds::Server>(kds_config, rng);
        kds_server = std::make_unique<kds::TlsServer>(*engine, clock);
        checker = std::make_shared<x509::RevocationChecker>(std::move(rc));
        ASSERT_TRUE(checker->start().ok());
        kds_server->set_revocation(checker);
        // The KDS's own certificate: the lab RA's (server profile, SAN localhost).
        auto key_pem = pki::private_key_pem(lab().ra.key.get()).value();
        kds::TlsCredentials tls{chain_pem(lab().ra.cert.get(), lab().ra.chain), std::move(key_pem),
                                operator_root_pem + extra_anchor_pem};
        auto st = kds_server->start("127.0.0.1", 0, tls);
        ASSERT_TRUE(st.ok()) << st.error().detail();
    }
    Result<kds::KeyResponse> fetch(const kds::TlsCredentials& who, const std::string& requester,
                                   const std::string& peer) {
        kds::KeyRequest req;
        req.request_id = ++m_id;
        req.requester = requester;
        req.peer = peer;
        return kds::fetch_key("127.0.0.1", kds_server->port(), "localhost", who, req);
    }
    uint64_t counter(const std::string& n) const { return engine->counters().get(n); }
    uint32_t m_id = 0;
};

}  // namespace

TEST_F(KdsRevocation, RevokedHenbIsRefusedAfterTheCrlRefetchTheOtherStillGetsKeys) {
    Henb h1 = enrol("0023a1000001"), h2 = enrol("0023a1000002"), h3 = enrol("0023a1000003");
    ASSERT_TRUE(h1.cred.cert && h2.cred.cert && h3.cred.cert);
    x509::RevocationConfig rc = kds_revocation();
    rc.crl_urls = {crl_url()};
    rc.refresh_s = 1;  // the KDS refetches the CA's CRL every second
    start_kds({{"h1", h1.identity}, {"h2", h2.identity}, {"h3", h3.identity}}, {{"h1", "h2"}, {"h2", "h3"}}, rc);

    auto k1 = fetch(h1.tls, h1.identity, h2.identity);
    ASSERT_TRUE(k1.ok()) << k1.error().detail();
    const uint64_t fetches_before = checker->counters().get("x509.crl.fetch_ok");
    ASSERT_GE(fetches_before, 1u);

    ASSERT_TRUE(revoke(h1).ok());  // CMP rr at the CA; the CA's CRL now lists h1
    // The KDS keeps running and picks the new CRL up by itself (no reload call, no restart).
    for (int i = 0; i < 100 && checker->counters().get("x509.crl.fetch_ok") < fetches_before + 2; ++i)
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
    ASSERT_GE(checker->counters().get("x509.crl.fetch_ok"), fetches_before + 2);

    auto refused = fetch(h1.tls, h1.identity, h2.identity);
    ASSERT_FALSE(refused.ok());
    EXPECT_EQ(refused.error().code(), int(kds::ErrorCode::CertificateRevoked)) << refused.error().detail();
    EXPECT_NE(refused.error().detail().find("CERTIFICATE_REVOKED"), std::string::npos) << refused.error().detail();
    EXPECT_NE(refused.error().detail().find("revoked at"), std::string::npos) << refused.error().detail();
    EXPECT_EQ(counter("kds.auth.rejected.revoked"), 1u);

    auto k2 = fetch(h2.tls, h2.identity, h3.identity);
    ASSERT_TRUE(k2.ok()) << k2.error().detail();
    auto k3 = fetch(h3.tls, h3.identity, h2.identity);
    ASSERT_TRUE(k3.ok()) << k3.error().detail();
    EXPECT_EQ(k2->key_id, k3->key_id);
    EXPECT_EQ(counter("kds.auth.rejected.revoked"), 1u);
}

TEST_F(KdsRevocation, ExpiredCertificateGetsCertificateExpired) {
    // A vendor device certificate that expired yesterday, the vendor root among the client anchors.
    auto dev = lab().device(lab().vendor_a, "0023a10000ee", kRealm, -400 * 86400, 399 * 86400);
    const std::string id = "0023a10000ee." + kRealm;
    Henb other = enrol("0023a1000004");
    start_kds({{"old", id}, {"h4", other.identity}}, {{"old", "h4"}}, kds_revocation(),
              pki::cert_pem(lab().vendor_a.cert.get()));
    std::string chain = pki::cert_pem(dev.cert.get());
    for (auto& c : dev.chain)
        if (X509_check_issued(c.get(), c.get()) != X509_V_OK) chain += pki::cert_pem(c.get());
    kds::TlsCredentials tls{chain, pki::private_key_pem(dev.key.get()).value(), operator_root_pem};
    auto r = fetch(tls, id, other.identity);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().code(), int(kds::ErrorCode::CertificateExpired)) << r.error().detail();
    EXPECT_EQ(counter("kds.auth.rejected.expired"), 1u);
    EXPECT_TRUE(fetch(other.tls, other.identity, id).ok());
}

TEST_F(KdsRevocation, StaleCrlFileGetsRevocationUnavailableUnderHardPolicy) {
    Henb h = enrol("0023a1000005"), peer = enrol("0023a1000006");
    char tmpl[] = "/tmp/x2sec-kds-crl-XXXXXX";
    const std::string dir = ::mkdtemp(tmpl);
    const std::string file = dir + "/ca.crl";
    const int64_t now = int64_t(::time(nullptr));
    auto stale = pki::issue_crl(lab().operator_issuing.cert.get(), lab().operator_issuing.key.get(), {}, 1,
                                now - 2 * 86400, now - 86400)
                     .value();
    ASSERT_TRUE(write_file_atomic(file, std::string_view(pki::crl_pem(stale.get()))).ok());
    x509::RevocationConfig rc = kds_revocation();
    rc.crl_files = {file};
    start_kds({{"h5", h.identity}, {"h6", peer.identity}}, {{"h5", "h6"}}, rc);
    auto r = fetch(h.tls, h.identity, peer.identity);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().code(), int(kds::ErrorCode::RevocationUnavailable)) << r.error().detail();
    EXPECT_NE(r.error().detail().find("stale"), std::string::npos) << r.error().detail();
    EXPECT_EQ(counter("kds.auth.rejected.crl_stale"), 1u);
    // The CA publishes a current CRL into the file: taken without restart.
    auto fresh = pki::issue_crl(lab().operator_issuing.cert.get(), lab().operator_issuing.key.get(), {}, 2, now - 60,
                                now + 86400)
                     .value();
    ASSERT_TRUE(write_file_atomic(file, std::string_view(pki::crl_pem(fresh.get()))).ok());
    Result<kds::KeyResponse> ok = Error(ErrorDomain::Kds, 0, "not tried");
    for (int i = 0; i < 50 && !ok.ok(); ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
        if (checker->counters().get("x509.crl.file_reloaded") > 0) ok = fetch(h.tls, h.identity, peer.identity);
    }
    EXPECT_TRUE(ok.ok()) << ok.error().detail();
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
}

TEST(KdsRevocationConfig, CrlKeysAreParsedAndCheckedWithTheirPlace) {
    char tmpl[] = "/tmp/x2sec-kds-cfg-XXXXXX";
    const std::string dir = ::mkdtemp(tmpl);
    ASSERT_TRUE(write_file_atomic(dir + "/kds.pem", std::string_view(pki::cert_pem(lab().ra.cert.get()))).ok());
    auto key = pki::private_key_pem(lab().ra.key.get()).value();
    ASSERT_TRUE(write_file_atomic(dir + "/kds.key", key.view(), 0600).ok());
    ASSERT_TRUE(
        write_file_atomic(dir + "/root.pem", std::string_view(pki::cert_pem(lab().operator_root.cert.get()))).ok());
    const std::string head =
        "[kds]\ncertificate = \"kds.pem\"\nprivate_key = \"kds.key\"\nclient_anchors = [\"root.pem\"]\n";
    auto c = kds::parse_serve_config(head +
                                         "crl_files = [\"ca.crl\"]\ncrl_urls = [\"http://127.0.0.1:8081/crl\"]\n"
                                         "crl_policy = \"soft\"\ncrl_refresh = 60\ncrl_cache_dir = \"cache\"\n",
                                     "kds.toml", dir);
    ASSERT_TRUE(c.ok()) << c.error().detail();
    EXPECT_EQ(c->revocation.crl_files, std::vector<std::string>{dir + "/ca.crl"});
    EXPECT_EQ(c->revocation.crl_urls, std::vector<std::string>{"http://127.0.0.1:8081/crl"});
    EXPECT_EQ(c->revocation.policy, x509::CrlPolicy::Soft);
    EXPECT_EQ(c->revocation.refresh_s, 60);
    EXPECT_EQ(c->revocation.cache_dir, dir + "/cache");
    auto d = kds::parse_serve_config(head, "kds.toml", dir);
    ASSERT_TRUE(d.ok()) << d.error().detail();
    EXPECT_EQ(d->revocation.policy, x509::CrlPolicy::Hard);  // default
    EXPECT_TRUE(d->revocation.fetch_distribution_points);
    auto bad = kds::parse_serve_config(head + "crl_policy = \"lax\"\n", "kds.toml", dir);
    ASSERT_FALSE(bad.ok());
    EXPECT_NE(bad.error().detail().find("kds.toml:5:"), std::string::npos) << bad.error().detail();
    auto bad_url = kds::parse_serve_config(head + "crl_urls = [\"ftp://x/crl\"]\n", "kds.toml", dir);
    ASSERT_FALSE(bad_url.ok());
    EXPECT_NE(bad_url.error().detail().find("is not an http:// URL"), std::string::npos) << bad_url.error().detail();
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
}
