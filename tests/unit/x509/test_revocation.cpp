// RevocationChecker: CRLs from files (reloaded when they change) and over HTTP from the
// certificates' cRLDistributionPoints (a local HTTP server on 127.0.0.1): fresh, revoked,
// stale, unreachable, bad signature, oversized, cached on disk; hard and soft policy.
#include <gtest/gtest.h>
#include <unistd.h>

#include <ctime>
#include <filesystem>
#include <optional>
#include <x2sec/common/file.hpp>
#include <x2sec/test/http_server.hpp>
#include <x2sec/test/test_pki.hpp>
#include <x2sec/x509/revocation.hpp>

using namespace x2sec;
using namespace x2sec::x509;
using test::CertOptions;
using test::HttpBodyServer;
using test::Issued;

namespace {

constexpr int64_t kDay = 86400;
int64_t now() {
    return static_cast<int64_t>(::time(nullptr));
}
bool contains(const std::string& s, const std::string& part) {
    return s.find(part) != std::string::npos;
}
VerifyFailure failure_of(const Error& e) {
    return static_cast<VerifyFailure>(e.code());
}

struct TempDir {
    std::string path;
    TempDir() {
        char tmpl[] = "/tmp/x2sec-revoke-XXXXXX";
        path = ::mkdtemp(tmpl);
    }
    ~TempDir() {
        std::error_code ec;
        std::filesystem::remove_all(path, ec);
    }
};

struct Revocation : ::testing::Test {
    HttpBodyServer http;
    Issued root = test::make_root("CN=Operator Root,O=Operator");
    Issued good = issue("CN=henb-good,O=Operator", http.url());
    Issued bad = issue("CN=henb-bad,O=Operator", http.url());
    Issued issue(const std::string& subject, const std::string& crl_url) const {
        CertOptions o;
        o.subject = subject;
        o.sans = {"DNS:" + subject.substr(3, subject.find(',') - 3) + ".example"};
        if (!crl_url.empty()) o.crl_urls = {crl_url};
        return test::make_cert(root, o);
    }
    std::vector<Certificate> chain(const Issued& leaf) const { return {leaf.cert, root.cert}; }
    void serve(const std::vector<Certificate>& revoked, int64_t this_update = 0, int64_t next_update = 0) {
        http.set_body(test::make_crl(root, revoked, this_update, next_update).der());
    }
    static RevocationConfig config(CrlPolicy p = CrlPolicy::Hard) {
        RevocationConfig c;
        c.policy = p;
        c.max_wait_ms = 3000;
        c.fetch_timeout_ms = 2000;
        return c;
    }
};

TEST_F(Revocation, DistributionPointFreshCrlAcceptsAndRevokedRefused) {
    serve({bad.cert});
    RevocationChecker rc(config());
    ASSERT_TRUE(rc.start().ok());
    EXPECT_TRUE(rc.check(chain(good), now()).ok());
    auto r = rc.check(chain(bad), now());
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(failure_of(r.error()), VerifyFailure::Revoked);
    EXPECT_TRUE(contains(r.error().detail(), "henb-bad")) << r.error().detail();
    EXPECT_TRUE(contains(r.error().detail(), http.url())) << r.error().detail();
    EXPECT_EQ(rc.counters().get("x509.crl.fetch_ok"), 1u);  // fetched once, cached for the second check
    EXPECT_EQ(rc.counters().get("x509.crl.revoked_peer"), 1u);
    EXPECT_EQ(rc.counters().get("x509.crl.checked"), 1u);
    EXPECT_EQ(http.requests(), 1u);
}

TEST_F(Revocation, RevocationAfterReloadTakesEffectWithoutRestart) {
    serve({});
    RevocationChecker rc(config());
    ASSERT_TRUE(rc.start().ok());
    ASSERT_TRUE(rc.check(chain(bad), now()).ok());
    serve({bad.cert});                              // the CA revokes it and publishes a new CRL
    EXPECT_TRUE(rc.check(chain(bad), now()).ok());  // the cached CRL is still current
    ASSERT_TRUE(rc.reload().ok());                  // SIGHUP / reload-crls
    ASSERT_TRUE(rc.wait_idle(5000));
    auto r = rc.check(chain(bad), now());
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(failure_of(r.error()), VerifyFailure::Revoked);
    EXPECT_TRUE(rc.check(chain(good), now()).ok());
    EXPECT_EQ(rc.counters().get("x509.crl.fetch_ok"), 2u);
}

TEST_F(Revocation, CrlPastNextUpdateIsRefetchedWhenDue) {
    // The first CRL is already past its nextUpdate: the check refetches it (bounded wait).
    serve({}, now() - 2 * kDay, now() - kDay);
    RevocationConfig c = config();
    c.retry_s = 0;  // let every check try again
    RevocationChecker rc(c);
    ASSERT_TRUE(rc.start().ok());
    ASSERT_FALSE(rc.check(chain(good), now()).ok());
    serve({bad.cert});  // the CA publishes a current one
    EXPECT_TRUE(rc.check(chain(good), now()).ok());
    EXPECT_EQ(failure_of(rc.check(chain(bad), now()).error()), VerifyFailure::Revoked);
}

TEST_F(Revocation, StaleCrlHardRefusesSoftAcceptsBothCounted) {
    serve({}, now() - 2 * kDay, now() - kDay);
    RevocationChecker hard(config(CrlPolicy::Hard));
    ASSERT_TRUE(hard.start().ok());
    auto r = hard.check(chain(good), now());
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(failure_of(r.error()), VerifyFailure::CrlUnavailable);
    EXPECT_TRUE(contains(r.error().detail(), "stale")) << r.error().detail();
    EXPECT_EQ(hard.counters().get("x509.crl.stale"), 1u);
    EXPECT_EQ(hard.counters().get("x509.crl.soft_accepted"), 0u);

    RevocationChecker soft(config(CrlPolicy::Soft));
    ASSERT_TRUE(soft.start().ok());
    EXPECT_TRUE(soft.check(chain(good), now()).ok());
    EXPECT_EQ(soft.counters().get("x509.crl.stale"), 1u);
    EXPECT_EQ(soft.counters().get("x509.crl.soft_accepted"), 1u);
    // A stale CRL still proves a revocation: soft policy does not let a listed certificate in.
    serve({bad.cert}, now() - 2 * kDay, now() - kDay);
    ASSERT_TRUE(soft.reload().ok());
    ASSERT_TRUE(soft.wait_idle(5000));
    EXPECT_EQ(failure_of(soft.check(chain(bad), now()).error()), VerifyFailure::Revoked);
}

TEST_F(Revocation, UnreachableDistributionPointHardAndSoftAndNoRepeatedWait) {
    const std::string dead = HttpBodyServer::unreachable_url();
    Issued leaf = issue("CN=henb-far,O=Operator", dead);
    // OpenSSL's HTTP client retries a refused connect until its timeout, so the failed fetch
    // takes about fetch_timeout_ms (whole seconds): the check's wait must be well above it, or
    // on a loaded machine the first check stops waiting before the fetch has failed.
    RevocationConfig hc = config(CrlPolicy::Hard);
    hc.fetch_timeout_ms = 1000;
    hc.max_wait_ms = 5000;
    RevocationChecker hard(hc);
    ASSERT_TRUE(hard.start().ok());
    auto r = hard.check(chain(leaf), now());
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(failure_of(r.error()), VerifyFailure::CrlUnavailable);
    EXPECT_TRUE(contains(r.error().detail(), dead)) << r.error().detail();
    EXPECT_EQ(hard.counters().get("x509.crl.fetch_failed"), 1u);
    EXPECT_EQ(hard.counters().get("x509.crl.unavailable"), 1u);
    // Within retry_s the next check neither fetches nor waits again.
    EXPECT_FALSE(hard.check(chain(leaf), now()).ok());
    EXPECT_EQ(hard.counters().get("x509.crl.fetch_failed"), 1u);
    EXPECT_EQ(hard.counters().get("x509.crl.wait"), 1u);

    RevocationChecker soft(config(CrlPolicy::Soft));
    ASSERT_TRUE(soft.start().ok());
    EXPECT_TRUE(soft.check(chain(leaf), now()).ok());
    EXPECT_EQ(soft.counters().get("x509.crl.soft_accepted"), 1u);
}

TEST_F(Revocation, HttpErrorAndOversizedAndGarbageAreFetchFailures) {
    RevocationConfig c = config();
    c.max_crl_size = 64;
    serve({bad.cert});
    {
        RevocationChecker rc(c);  // a CRL above the size limit
        ASSERT_TRUE(rc.start().ok());
        EXPECT_EQ(failure_of(rc.check(chain(good), now()).error()), VerifyFailure::CrlUnavailable);
        EXPECT_EQ(rc.counters().get("x509.crl.fetch_failed"), 1u);
    }
    http.set_status(404);
    {
        RevocationChecker rc(config());
        ASSERT_TRUE(rc.start().ok());
        EXPECT_EQ(failure_of(rc.check(chain(good), now()).error()), VerifyFailure::CrlUnavailable);
        EXPECT_EQ(rc.counters().get("x509.crl.fetch_failed"), 1u);
    }
    http.set_body(Bytes{0x30, 0x03, 0x02, 0x01, 0x01});  // DER, but not a CRL
    {
        RevocationChecker rc(config());
        ASSERT_TRUE(rc.start().ok());
        auto r = rc.check(chain(good), now());
        ASSERT_FALSE(r.ok());
        EXPECT_TRUE(contains(r.error().detail(), "not a DER CRL")) << r.error().detail();
    }
}

TEST_F(Revocation, CrlSignedByAnotherKeyIsNotUsed) {
    Issued impostor = test::make_root("CN=Operator Root,O=Operator");  // same name, other key
    http.set_body(test::make_crl(impostor, {}).der());
    RevocationChecker rc(config());
    ASSERT_TRUE(rc.start().ok());
    auto r = rc.check(chain(good), now());
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(failure_of(r.error()), VerifyFailure::CrlUnavailable);
    EXPECT_TRUE(contains(r.error().detail(), "signature")) << r.error().detail();
    EXPECT_EQ(rc.counters().get("x509.crl.bad_signature"), 1u);
}

TEST_F(Revocation, ConfiguredFileIsReloadedWhenItChanges) {
    TempDir d;
    const std::string file = d.path + "/operator.crl";
    Issued plain = issue("CN=henb-plain,O=Operator", "");  // no distribution point
    ASSERT_TRUE(write_file_atomic(file, test::make_crl(root, {}).pem()).ok());
    RevocationConfig c = config();
    c.crl_files = {file};
    c.background = false;  // poll() by hand
    RevocationChecker rc(c);
    ASSERT_TRUE(rc.start().ok());
    EXPECT_TRUE(rc.check(chain(plain), now()).ok());
    ASSERT_TRUE(write_file_atomic(file, test::make_crl(root, {plain.cert}).pem()).ok());
    rc.poll();
    auto r = rc.check(chain(plain), now());
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(failure_of(r.error()), VerifyFailure::Revoked);
    EXPECT_TRUE(contains(r.error().detail(), file)) << r.error().detail();
    EXPECT_EQ(rc.counters().get("x509.crl.file_reloaded"), 1u);
    // A broken rewrite keeps the previous CRL in force.
    ASSERT_TRUE(write_file_atomic(file, std::string_view("not a CRL")).ok());
    rc.poll();
    EXPECT_EQ(failure_of(rc.check(chain(plain), now()).error()), VerifyFailure::Revoked);
    EXPECT_EQ(rc.counters().get("x509.crl.load_failed"), 1u);
}

TEST_F(Revocation, ConfiguredFileOfAnotherIssuerAndNoSource) {
    TempDir d;
    Issued other = test::make_root("CN=Other Root");
    const std::string file = d.path + "/other.crl";
    ASSERT_TRUE(write_file_atomic(file, test::make_crl(other, {}).pem()).ok());
    Issued plain = issue("CN=henb-plain,O=Operator", "");
    RevocationConfig c = config();
    c.crl_files = {file};
    RevocationChecker rc(c);
    ASSERT_TRUE(rc.start().ok());
    EXPECT_TRUE(rc.check(chain(plain), now()).ok());  // nothing says where its CRL is
    EXPECT_EQ(rc.counters().get("x509.crl.no_source"), 1u);
    c.require = true;
    RevocationChecker strict(c);
    ASSERT_TRUE(strict.start().ok());
    EXPECT_EQ(failure_of(strict.check(chain(plain), now()).error()), VerifyFailure::CrlUnavailable);
}

TEST_F(Revocation, StartReportsAMissingFile) {
    RevocationConfig c = config();
    c.crl_files = {"/nonexistent/x2sec.crl"};
    RevocationChecker rc(c);
    auto st = rc.start();
    ASSERT_FALSE(st.ok());
    EXPECT_TRUE(contains(st.error().detail(), "/nonexistent/x2sec.crl")) << st.error().detail();
}

TEST_F(Revocation, CacheDirServesTheLastCrlWhenTheServerIsGone) {
    TempDir d;
    RevocationConfig c = config();
    c.cache_dir = d.path + "/cache";
    std::optional<Issued> leaf_holder;
    {
        HttpBodyServer srv;
        leaf_holder.emplace(issue("CN=henb-cached,O=Operator", srv.url()));
        const Issued& leaf = *leaf_holder;
        srv.set_body(test::make_crl(root, {leaf.cert}).der());
        RevocationChecker rc(c);
        ASSERT_TRUE(rc.start().ok());
        EXPECT_EQ(failure_of(rc.check(chain(leaf), now()).error()), VerifyFailure::Revoked);
        size_t files = 0;
        for (auto& e : std::filesystem::directory_iterator(c.cache_dir)) files += e.path().extension() == ".der";
        EXPECT_EQ(files, 1u);
    }
    const Issued& leaf = *leaf_holder;
    RevocationChecker later(c);  // a restarted daemon, the CRL server down
    ASSERT_TRUE(later.start().ok());
    EXPECT_EQ(failure_of(later.check(chain(leaf), now()).error()), VerifyFailure::Revoked);
    EXPECT_EQ(later.counters().get("x509.crl.cache_loaded"), 1u);
    EXPECT_EQ(later.counters().get("x509.crl.fetch_ok"), 0u);
}

TEST_F(Revocation, TrustStoreVerifyAsksTheChecker) {
    serve({bad.cert});
    auto rc = std::make_shared<RevocationChecker>(config());
    ASSERT_TRUE(rc->start().ok());
    TrustStore ts;
    ts.add_anchor(root.cert, "operator");
    ts.set_revocation(rc);
    EXPECT_TRUE(ts.verify(good.cert, {}, now()).ok());
    auto r = ts.verify(bad.cert, {}, now());
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(failure_of(r.error()), VerifyFailure::Revoked);
    EXPECT_GE(revocation_counters().get("x509.crl.revoked_peer"), 1u);
}

TEST(FetchCrlHttp, RefusesNonHttpUrls) {
    for (const char* u : {"https://127.0.0.1/crl", "ldap://x/cn=crl", "http://a b/", "file:///etc/passwd"}) {
        auto r = fetch_crl_http(u, 1000, 4096);
        ASSERT_FALSE(r.ok()) << u;
        EXPECT_TRUE(contains(r.error().detail(), "not a plain http://")) << r.error().detail();
    }
}

}  // namespace
