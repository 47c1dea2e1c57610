// The operator credential on disk: installed as one unit (one atomic switch), crash-safe at
// every step, backward compatible with the flat layout; renewal before expiry.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>
#include <atomic>
#include <ctime>
#include <filesystem>
#include <x2sec/cmp/client.hpp>
#include <x2sec/cmp/lab_pki.hpp>
#include <x2sec/cmp/server.hpp>

namespace {
// The system clock's time, for tests that exchange messages as they happen.
x2sec::cmp::RequestContext wall_clock_request() {
    return x2sec::cmp::RequestContext{"", static_cast<int64_t>(std::time(nullptr))};
}
}  // namespace

using namespace x2sec;
using namespace x2sec::cmp;
namespace fs = std::filesystem;

namespace {

const char* kRealm = "henb.vendor-a.example";

struct CredFixture : ::testing::Test {
    static LabPki& lab() {
        static LabPki p = make_lab_pki();
        return p;
    }
    std::unique_ptr<Store> store = std::move(open_sqlite_store(":memory:").value());
    std::unique_ptr<Server> server = std::make_unique<Server>(lab().server_config(), *store);
    std::atomic<int> transfers{0};
    std::string dir;
    void SetUp() override {
        dir = (fs::temp_directory_path() / ("x2sec-cred-" + std::to_string(::getpid()) + "-" +
                                            ::testing::UnitTest::GetInstance()->current_test_info()->name()))
                  .string();
        fs::remove_all(dir);
    }
    void TearDown() override { fs::remove_all(dir); }
    Transfer transfer() {
        return [this](BytesView b) {
            ++transfers;
            return server->handle(b, wall_clock_request());
        };
    }
    // An operator certificate enrolled for a fresh key.
    std::pair<pki::PkeyPtr, Enrolled> enrol(const std::string& eui) {
        auto dev = lab().device(lab().vendor_a, eui, kRealm);
        auto k = pki::generate_key(pki::KeyAlg::EcP256).value();
        EnrollRequest r;
        r.transfer = transfer();
        r.auth_key = dev.key.get();
        r.auth_cert = dev.cert.get();
        r.auth_chain = dev.chain_ptrs();
        r.new_key = k.get();
        r.subject = "/CN=" + eui + "." + kRealm;
        r.dns = {eui + "." + kRealm};
        r.operator_roots = {lab().operator_root.cert.get()};
        auto e = Client::enroll(r);
        EXPECT_TRUE(e.ok()) << e.error().detail();
        return {std::move(k), std::move(*e)};
    }
    std::string serial_in(const std::string& path) { return pki::serial_hex(pki::load_cert(path).value().get()); }
    // Whatever a reader with configured file paths sees is a matching pair.
    void expect_consistent_paths(const std::string& want_serial) const {
        auto k = pki::load_private_key(dir + "/operator.key");
        auto c = pki::load_cert(dir + "/operator.crt");
        ASSERT_TRUE(k.ok() && c.ok());
        EXPECT_TRUE(pki::public_keys_equal(c->get(), k->get()));
        EXPECT_EQ(pki::serial_hex(c->get()), want_serial);
    }
    // install_credential killed (exit 42) just before step `at`, in a child process.
    void crash_install_before(const char* at, EVP_PKEY* key, const Enrolled& e) const {
        InstallOptions crash;
        crash.before_step = [at](std::string_view s) {
            if (s == at) ::_exit(42);
        };
        EXPECT_EXIT((void)install_credential(dir, key, e, crash), ::testing::ExitedWithCode(42), "");
    }
    int versions() const {
        int n = 0;
        for (auto& e : fs::directory_iterator(dir + "/versions")) n += e.is_directory() ? 1 : 0;
        return n;
    }
};

mode_t mode_of(const std::string& p) {
    struct stat st {};
    ::stat(p.c_str(), &st);
    return st.st_mode & 0777;
}

}  // namespace

TEST_F(CredFixture, InstallIsOneVersionBehindCurrentAndLoadsAsAUnit) {
    auto [k, e] = enrol("0023a1b2c501");
    ASSERT_TRUE(install_credential(dir, k.get(), e).ok());
    EXPECT_TRUE(fs::is_symlink(dir + "/current"));
    EXPECT_TRUE(fs::is_symlink(dir + "/operator.key"));
    EXPECT_EQ(mode_of(dir + "/operator.key"), 0600u);  // the key file behind the link
    EXPECT_EQ(mode_of(dir + "/versions"), 0700u);
    auto c = load_credential(dir);
    ASSERT_TRUE(c.ok()) << c.error().detail();
    EXPECT_EQ(pki::serial_hex(c->cert.get()), pki::serial_hex(e.cert.get()));
    EXPECT_TRUE(pki::public_keys_equal(c->cert.get(), k.get()));
    ASSERT_TRUE(c->root);
    EXPECT_EQ(X509_cmp(c->root.get(), lab().operator_root.cert.get()), 0);
    EXPECT_EQ(c->chain.size(), 1u);  // issuing CA, root kept apart
    EXPECT_EQ(c->version.rfind("versions/", 0), 0u);
    expect_consistent_paths(pki::serial_hex(e.cert.get()));
}

TEST_F(CredFixture, RefusesAKeyThatDoesNotMatch) {
    auto [k, e] = enrol("0023a1b2c502");
    auto other = pki::generate_key(pki::KeyAlg::EcP256).value();
    EXPECT_FALSE(install_credential(dir, other.get(), e).ok());
    EXPECT_FALSE(fs::exists(dir + "/current"));
}

TEST_F(CredFixture, SecondInstallSwitchesAndKeepsOnlyThePrevious) {
    auto [k1, e1] = enrol("0023a1b2c503");
    auto [k2, e2] = enrol("0023a1b2c504");
    auto [k3, e3] = enrol("0023a1b2c505");
    ASSERT_TRUE(install_credential(dir, k1.get(), e1).ok());
    auto v1 = load_credential(dir)->version;
    ASSERT_TRUE(install_credential(dir, k2.get(), e2).ok());
    expect_consistent_paths(pki::serial_hex(e2.cert.get()));
    EXPECT_EQ(versions(), 2);
    EXPECT_TRUE(fs::exists(dir + "/" + v1));  // rollback possible
    ASSERT_TRUE(install_credential(dir, k3.get(), e3).ok());
    EXPECT_EQ(versions(), 2);
    EXPECT_FALSE(fs::exists(dir + "/" + v1));  // the oldest is gone
    expect_consistent_paths(pki::serial_hex(e3.cert.get()));
}

// A crash (the process ends, no clean-up) before the switch leaves the old pair current and
// consistent, whichever step it hits; the next install removes the leftover.
TEST_F(CredFixture, CrashBeforeTheSwitchKeepsTheOldPair) {
    auto [k1, e1] = enrol("0023a1b2c506");
    auto [k2, e2] = enrol("0023a1b2c507");
    ASSERT_TRUE(install_credential(dir, k1.get(), e1).ok());
    const std::string old_serial = pki::serial_hex(e1.cert.get());
    for (const char* at : {"version-dir", "key", "cert", "root", "switch"}) {
        SCOPED_TRACE(at);
        crash_install_before(at, k2.get(), e2);
        auto c = load_credential(dir);
        ASSERT_TRUE(c.ok()) << c.error().detail();
        EXPECT_EQ(pki::serial_hex(c->cert.get()), old_serial);
        EXPECT_TRUE(pki::public_keys_equal(c->cert.get(), k1.get()));
        expect_consistent_paths(old_serial);
    }
    EXPECT_GE(versions(), 2);  // crash leftovers (half-written versions)
    ASSERT_TRUE(install_credential(dir, k2.get(), e2).ok());
    EXPECT_EQ(versions(), 2);  // leftovers removed: the new one and the previous
    expect_consistent_paths(pki::serial_hex(e2.cert.get()));
}

TEST_F(CredFixture, CrashAfterTheSwitchHasTheNewPair) {
    auto [k1, e1] = enrol("0023a1b2c508");
    auto [k2, e2] = enrol("0023a1b2c509");
    ASSERT_TRUE(install_credential(dir, k1.get(), e1).ok());
    for (const char* at : {"links", "prune"}) {
        SCOPED_TRACE(at);
        crash_install_before(at, k2.get(), e2);
        auto c = load_credential(dir);
        ASSERT_TRUE(c.ok()) << c.error().detail();
        EXPECT_EQ(pki::serial_hex(c->cert.get()), pki::serial_hex(e2.cert.get()));
        expect_consistent_paths(pki::serial_hex(e2.cert.get()));
    }
}

TEST_F(CredFixture, LegacyFlatLayoutIsReadAndMigrated) {
    auto [k1, e1] = enrol("0023a1b2c50a");
    auto [k2, e2] = enrol("0023a1b2c50b");
    fs::create_directories(dir);
    ASSERT_TRUE(pki::save_private_key(dir + "/operator.key", k1.get()).ok());
    ASSERT_TRUE(pki::save_certs_pem(dir + "/operator.crt", {e1.cert.get(), e1.chain[0].get()}).ok());
    ASSERT_TRUE(pki::save_certs_pem(dir + "/operator-root.crt", {lab().operator_root.cert.get()}).ok());
    auto c = load_credential(dir);
    ASSERT_TRUE(c.ok()) << c.error().detail();
    EXPECT_EQ(c->version, "legacy");
    EXPECT_EQ(pki::serial_hex(c->cert.get()), pki::serial_hex(e1.cert.get()));
    ASSERT_TRUE(c->root);
    // install over it: the flat files become links through `current`
    e2.operator_root.reset();  // a kur answer need not carry the root: the installed one is kept
    ASSERT_TRUE(install_credential(dir, k2.get(), e2).ok());
    EXPECT_TRUE(fs::is_symlink(dir + "/operator.key"));
    EXPECT_TRUE(fs::is_symlink(dir + "/operator.crt"));
    expect_consistent_paths(pki::serial_hex(e2.cert.get()));
    auto after = load_credential(dir);
    ASSERT_TRUE(after.ok() && after->root);
    EXPECT_EQ(X509_cmp(after->root.get(), lab().operator_root.cert.get()), 0);
}

TEST_F(CredFixture, MismatchedLegacyPairIsAnError) {
    auto [k1, e1] = enrol("0023a1b2c50c");
    auto [k2, e2] = enrol("0023a1b2c50d");
    fs::create_directories(dir);
    ASSERT_TRUE(pki::save_private_key(dir + "/operator.key", k2.get()).ok());  // the old, torn state
    ASSERT_TRUE(pki::save_certs_pem(dir + "/operator.crt", {e1.cert.get()}).ok());
    auto c = load_credential(dir);
    ASSERT_FALSE(c.ok());
    EXPECT_NE(c.error().detail().find("does not match"), std::string::npos) << c.error().detail();
}

// ---------------------------------------------------------------- renewal window

TEST(RenewalWindow, ParsesDaysAndPercent) {
    auto d = parse_renewal_window("30");
    ASSERT_TRUE(d.ok());
    EXPECT_FALSE(d->percent);
    EXPECT_EQ(d->value, 30);
    EXPECT_FALSE(parse_renewal_window("30d")->percent);
    auto p = parse_renewal_window("25%");
    ASSERT_TRUE(p.ok());
    EXPECT_TRUE(p->percent);
    EXPECT_EQ(p->value, 25);
    for (const char* bad : {"", "%", "x", "-3", "120%", "3 days", "1e999"})
        EXPECT_FALSE(parse_renewal_window(bad).ok()) << bad;
}

TEST(RenewalWindow, DueNotDueExpired) {
    auto root = make_root_ca("T");
    X509* c = root.cert.get();
    int64_t nb = pki::not_before(c), na = pki::not_after(c);
    RenewalWindow days{false, 30};
    auto early = renewal_check(c, nb + 10, days);
    EXPECT_FALSE(early.due);
    EXPECT_FALSE(early.expired);
    EXPECT_EQ(early.due_at, na - 30 * 86400);
    EXPECT_NE(early.describe().find("not due until"), std::string::npos) << early.describe();
    auto inside = renewal_check(c, na - 29 * 86400, days);
    EXPECT_TRUE(inside.due);
    EXPECT_FALSE(inside.expired);
    auto late = renewal_check(c, na + 1, days);
    EXPECT_TRUE(late.due && late.expired);
    EXPECT_NE(late.describe().find("expired"), std::string::npos);
    RenewalWindow pct{true, 20};
    EXPECT_FALSE(renewal_check(c, nb + (na - nb) * 7 / 10, pct).due);
    EXPECT_TRUE(renewal_check(c, nb + (na - nb) * 9 / 10, pct).due);
    // a window longer than the lifetime is due at once
    EXPECT_TRUE(renewal_check(c, nb, RenewalWindow{false, 1e6}).due);
}

TEST_F(CredFixture, RenewIfDueDoesNothingWhenNotDue) {
    auto [k, e] = enrol("0023a1b2c50e");
    ASSERT_TRUE(install_credential(dir, k.get(), e).ok());
    ClientCommon cc;
    cc.transfer = transfer();
    int before = transfers.load();
    auto r = renew_if_due(dir, cc, std::time(nullptr), RenewalWindow{false, 30});
    ASSERT_TRUE(r.ok()) << r.error().detail();
    EXPECT_FALSE(r->renewed);
    EXPECT_FALSE(r->check.due);
    EXPECT_EQ(r->next_check_at, pki::not_after(e.cert.get()) - 30 * 86400);
    EXPECT_EQ(transfers.load(), before);  // no CMP message sent
    EXPECT_EQ(pki::serial_hex(load_credential(dir)->cert.get()), pki::serial_hex(e.cert.get()));
}

TEST_F(CredFixture, RenewIfDueRenewsWithKurInsideTheWindow) {
    auto [k, e] = enrol("0023a1b2c50f");
    ASSERT_TRUE(install_credential(dir, k.get(), e).ok());
    ClientCommon cc;
    cc.transfer = transfer();
    int64_t inside = pki::not_after(e.cert.get()) - 10 * 86400;
    auto r = renew_if_due(dir, cc, inside, RenewalWindow{false, 30});
    ASSERT_TRUE(r.ok()) << r.error().detail();
    EXPECT_TRUE(r->renewed);
    ASSERT_TRUE(r->new_cert);
    auto now = load_credential(dir);
    ASSERT_TRUE(now.ok());
    EXPECT_EQ(pki::serial_hex(now->cert.get()), pki::serial_hex(r->new_cert.get()));
    EXPECT_NE(pki::serial_hex(now->cert.get()), pki::serial_hex(e.cert.get()));
    EXPECT_FALSE(pki::public_keys_equal(now->cert.get(), k.get()));  // a fresh key
    EXPECT_EQ(pki::san_dns(now->cert.get()), pki::san_dns(e.cert.get()));
    auto rec = store->find_by_serial(pki::serial_bytes(X509_get0_serialNumber(r->new_cert.get())));
    ASSERT_TRUE(rec.ok() && rec->has_value());
    EXPECT_EQ((*rec)->body, "kur");
    expect_consistent_paths(pki::serial_hex(r->new_cert.get()));
}

TEST_F(CredFixture, RenewIfDueRefusesAnExpiredCertificate) {
    auto [k, e] = enrol("0023a1b2c510");
    ASSERT_TRUE(install_credential(dir, k.get(), e).ok());
    ClientCommon cc;
    cc.transfer = transfer();
    int before = transfers.load();
    auto r = renew_if_due(dir, cc, pki::not_after(e.cert.get()) + 60);
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.error().detail().find("expired"), std::string::npos) << r.error().detail();
    EXPECT_NE(r.error().detail().find("re-enrol"), std::string::npos) << r.error().detail();
    EXPECT_EQ(transfers.load(), before);
    EXPECT_EQ(pki::serial_hex(load_credential(dir)->cert.get()), pki::serial_hex(e.cert.get()));
}
