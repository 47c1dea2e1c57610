// In-process client <-> server: the client's OSSL_CMP_CTX transfer callback calls
// cmp::Server::handle() directly.
#include <gtest/gtest.h>
#include <openssl/cmp.h>
#include <openssl/crmf.h>
#include <ctime>
#include <thread>
#include <set>
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

namespace {

const char* kRealmA = "henb.vendor-a.example";

struct Fixture : ::testing::Test {
    static LabPki& lab() {
        static LabPki p = make_lab_pki();
        return p;
    }
    std::unique_ptr<Store> store = std::move(open_sqlite_store(":memory:").value());
    std::unique_ptr<Server> server;
    void SetUp() override { server = std::make_unique<Server>(lab().server_config(), *store); }
    void reconfigure(ServerPolicy pol) {
        auto cfg = lab().server_config();
        cfg.policy = std::move(pol);
        server = std::make_unique<Server>(std::move(cfg), *store);
    }
    Transfer transfer() {
        return [this](BytesView req) { return server->handle(req, wall_clock_request()); };
    }
    EnrollRequest request(const LabCredential& dev, EVP_PKEY* new_key, const std::string& id) {
        EnrollRequest r;
        r.transfer = transfer();
        r.auth_key = dev.key.get();
        r.auth_cert = dev.cert.get();
        r.auth_chain = dev.chain_ptrs();
        r.new_key = new_key;
        r.subject = "/O=Operator/CN=" + id;
        r.dns = {id};
        r.operator_roots = {lab().operator_root.cert.get()};  // provisioned (the usual case)
        return r;
    }
    int64_t certs() const { return store->counts()->certificates; }
    int64_t transactions() const { return store->counts()->transactions; }
};

pki::PkeyPtr p256() {
    return pki::generate_key(pki::KeyAlg::EcP256).value();
}

}  // namespace

TEST_F(Fixture, VendorIrIssuesOperatorCertificateWithInBandRoot) {
    auto dev = lab().device(lab().vendor_a, "0023a1b2c3d4", kRealmA);
    auto nk = p256();
    const std::string id = "0023a1b2c3d4.henb.vendor-a.example";
    auto r = request(dev, nk.get(), id);
    r.operator_roots.clear();  // 3GPP in-band rule
    auto e = Client::enroll(r);
    ASSERT_TRUE(e.ok()) << e.error().detail();
    X509* c = e->cert.get();
    EXPECT_TRUE(pki::public_keys_equal(c, nk.get()));
    EXPECT_EQ(pki::san_dns(c), std::vector<std::string>{id});
    EXPECT_EQ(X509_NAME_cmp(X509_get_issuer_name(c), X509_get_subject_name(lab().operator_issuing.cert.get())), 0);
    EXPECT_TRUE(X509_get_key_usage(c) & KU_DIGITAL_SIGNATURE);
    EXPECT_GE(X509_get_ext_by_NID(c, NID_crl_distribution_points, -1), 0);
    // learned in-band, and it is the operator root
    ASSERT_TRUE(e->operator_root);
    EXPECT_EQ(X509_cmp(e->operator_root.get(), lab().operator_root.cert.get()), 0);
    ASSERT_EQ(e->ca_pubs.size(), 1u);
    EXPECT_EQ(X509_cmp(e->ca_pubs[0].get(), lab().operator_root.cert.get()), 0);
    // extraCerts: operator root and RA certificate (with the issuing CA)
    bool has_root = false, has_ra = false, has_issuing = false;
    for (auto& x : e->extra_certs) {
        has_root |= X509_cmp(x.get(), lab().operator_root.cert.get()) == 0;
        has_ra |= X509_cmp(x.get(), lab().ra.cert.get()) == 0;
        has_issuing |= X509_cmp(x.get(), lab().operator_issuing.cert.get()) == 0;
    }
    EXPECT_TRUE(has_root && has_ra && has_issuing);
    EXPECT_TRUE(pki::verify_chain(c, {lab().operator_root.cert.get()}, {lab().operator_issuing.cert.get()}).ok());
    ASSERT_EQ(e->chain.size(), 2u);
    // store: confirmed by certConf
    auto rec = store->find_by_serial(pki::serial_bytes(X509_get0_serialNumber(c)));
    ASSERT_TRUE(rec.ok() && rec->has_value());
    EXPECT_EQ((*rec)->status, "confirmed");
    EXPECT_EQ((*rec)->sans, id);
    EXPECT_EQ((*rec)->body, "ir");
    EXPECT_EQ(server->counters().get("cmp.certconf.accepted"), 1u);
    EXPECT_EQ(server->open_sessions(), 0u);
}

TEST_F(Fixture, SecondVendorAndProvisionedRootWithImplicitConfirm) {
    auto dev = lab().device(lab().vendor_b, "0200c0ffee01", "henb.vendor-b.example");
    auto nk = p256();
    auto r = request(dev, nk.get(), "0200c0ffee01.henb.vendor-b.example");
    r.operator_roots = {lab().operator_root.cert.get()};
    r.implicit_confirm = true;
    const uint64_t commits = store->write_commits();
    auto e = Client::enroll(r);
    ASSERT_TRUE(e.ok()) << e.error().detail();
    // one durable write for the whole transaction: certificate, transaction and `implicit` together
    EXPECT_EQ(store->write_commits() - commits, 1u);
    auto rec = store->find_by_serial(pki::serial_bytes(X509_get0_serialNumber(e->cert.get())));
    ASSERT_TRUE(rec.ok() && rec->has_value());
    EXPECT_EQ((*rec)->status, "implicit");
    EXPECT_EQ(server->counters().get("cmp.implicit_confirm"), 1u);
    EXPECT_EQ(server->counters().get("cmp.certconf.accepted"), 0u);
}

TEST_F(Fixture, WrongProvisionedRootIsRejectedByClient) {
    auto dev = lab().device(lab().vendor_a, "0023a1b2c3d5", kRealmA);
    auto nk = p256();
    auto other = make_root_ca("Other Operator");
    auto r = request(dev, nk.get(), "0023a1b2c3d5.henb.vendor-a.example");
    r.operator_roots = {other.cert.get()};
    auto e = Client::enroll(r);
    ASSERT_FALSE(e.ok());
    EXPECT_EQ(e.error().domain(), ErrorDomain::Cmp);
}

TEST_F(Fixture, RogueVendorGetsSignerNotTrustedAndNothingStored) {
    auto rogue = make_root_ca("Rogue");
    auto dev = lab().device(rogue, "0023a1b2c3d4", kRealmA);
    auto nk = p256();
    auto e = Client::enroll(request(dev, nk.get(), "0023a1b2c3d4.henb.vendor-a.example"));
    ASSERT_FALSE(e.ok());
    EXPECT_EQ(e.error().code(), OSSL_CMP_PKIFAILUREINFO_signerNotTrusted) << e.error().detail();
    EXPECT_NE(e.error().detail().find("signerNotTrusted"), std::string::npos) << e.error().detail();
    EXPECT_EQ(certs(), 0);
    EXPECT_EQ(transactions(), 0);
    EXPECT_EQ(server->counters().get("cmp.reject.signer_not_trusted"), 1u);
}

TEST_F(Fixture, VendorNotConfiguredIsRejected) {
    // server trusting only vendor A
    auto cfg = lab().server_config(false);
    server = std::make_unique<Server>(std::move(cfg), *store);
    auto dev = lab().device(lab().vendor_b, "0200c0ffee02", "henb.vendor-b.example");
    auto nk = p256();
    auto e = Client::enroll(request(dev, nk.get(), "0200c0ffee02.henb.vendor-b.example"));
    ASSERT_FALSE(e.ok());
    EXPECT_EQ(e.error().code(), OSSL_CMP_PKIFAILUREINFO_signerNotTrusted);
    EXPECT_EQ(certs(), 0);
}

TEST_F(Fixture, ExpiredVendorCertificateRejected) {
    auto dev = lab().device(lab().vendor_a, "0023a1b2c3d6", kRealmA, -10 * 86400, 86400);
    auto nk = p256();
    auto e = Client::enroll(request(dev, nk.get(), "0023a1b2c3d6.henb.vendor-a.example"));
    ASSERT_FALSE(e.ok());
    EXPECT_EQ(e.error().code(), OSSL_CMP_PKIFAILUREINFO_signerNotTrusted);
    EXPECT_NE(e.error().detail().find("expired"), std::string::npos) << e.error().detail();
    EXPECT_EQ(certs(), 0);
    EXPECT_EQ(server->counters().get("cmp.reject.signer_expired"), 1u);
}

TEST_F(Fixture, IdentityMismatchRejectedUnlessPolicyAllows) {
    auto dev = lab().device(lab().vendor_a, "0023a1b2c3d7", kRealmA);
    auto nk = p256();
    auto r = request(dev, nk.get(), "0023a1b2c3d7.henb.vendor-a.example");
    r.dns = {"001122334455.henb.vendor-a.example"};
    auto e = Client::enroll(r);
    ASSERT_FALSE(e.ok());
    EXPECT_EQ(e.error().code(), OSSL_CMP_PKIFAILUREINFO_notAuthorized);
    EXPECT_NE(e.error().detail().find("does not match"), std::string::npos) << e.error().detail();
    EXPECT_EQ(certs(), 0);
    // subject CN mismatch too
    auto r2 = request(dev, nk.get(), "0023a1b2c3d7.henb.vendor-a.example");
    r2.subject = "/CN=someone-else.example";
    EXPECT_FALSE(Client::enroll(r2).ok());
    EXPECT_EQ(certs(), 0);

    ServerPolicy pol;
    pol.allow_identity_mismatch = true;
    reconfigure(pol);
    r.transfer = transfer();
    auto ok = Client::enroll(r);
    ASSERT_TRUE(ok.ok()) << ok.error().detail();
    EXPECT_EQ(pki::san_dns(ok->cert.get()), std::vector<std::string>{"001122334455.henb.vendor-a.example"});
}

TEST_F(Fixture, NoSanRequestedGetsVendorIdentity) {
    auto dev = lab().device(lab().vendor_a, "0023a1b2c3d8", kRealmA);
    auto nk = p256();
    auto r = request(dev, nk.get(), "x");
    r.subject.clear();
    r.dns.clear();
    auto e = Client::enroll(r);
    ASSERT_TRUE(e.ok()) << e.error().detail();
    EXPECT_EQ(pki::san_dns(e->cert.get()), std::vector<std::string>{"0023a1b2c3d8.henb.vendor-a.example"});
}

TEST_F(Fixture, ReusedTransactionIdRejected) {
    auto dev = lab().device(lab().vendor_a, "0023a1b2c3d9", kRealmA);
    auto nk = p256();
    auto r = request(dev, nk.get(), "0023a1b2c3d9.henb.vendor-a.example");
    r.transaction_id = Bytes(16, 0x42);
    ASSERT_TRUE(Client::enroll(r).ok());
    EXPECT_EQ(certs(), 1);
    auto nk2 = p256();
    r.new_key = nk2.get();
    auto e = Client::enroll(r);
    ASSERT_FALSE(e.ok());
    EXPECT_EQ(e.error().code(), OSSL_CMP_PKIFAILUREINFO_transactionIdInUse) << e.error().detail();
    EXPECT_EQ(certs(), 1);
    EXPECT_EQ(transactions(), 1);
}

TEST_F(Fixture, BadPopRejected) {
    // Hand-built CertReqMsg: template carries key B, POP signed with key A.
    auto dev = lab().device(lab().vendor_a, "0023a1b2c3da", kRealmA);
    auto ka = p256(), kb = p256();
    OSSL_CMP_CTX* ctx = OSSL_CMP_CTX_new(nullptr, nullptr);
    auto xfer = transfer();
    OSSL_CMP_CTX_set_transfer_cb(ctx, [](OSSL_CMP_CTX* c, const OSSL_CMP_MSG* req) -> OSSL_CMP_MSG* {
        auto* t = static_cast<Transfer*>(OSSL_CMP_CTX_get_transfer_cb_arg(c));
        unsigned char* der = nullptr;
        int n = i2d_OSSL_CMP_MSG(req, &der);
        auto rsp = (*t)(BytesView(der, static_cast<size_t>(n)));
        OPENSSL_free(der);
        if (!rsp) return nullptr;
        const unsigned char* p = rsp->data();
        return d2i_OSSL_CMP_MSG(nullptr, &p, static_cast<long>(rsp->size()));
    });
    OSSL_CMP_CTX_set_transfer_cb_arg(ctx, &xfer);
    OSSL_CMP_CTX_set1_cert(ctx, dev.cert.get());
    OSSL_CMP_CTX_set1_pkey(ctx, dev.key.get());
    X509_STORE* ts = X509_STORE_new();
    X509_STORE_add_cert(ts, lab().operator_root.cert.get());
    OSSL_CMP_CTX_set0_trustedStore(ctx, ts);
    OSSL_CRMF_MSG* crm = OSSL_CRMF_MSG_new();
    OSSL_CRMF_MSG_set_certReqId(crm, 0);
    auto subj = pki::parse_name("/CN=0023a1b2c3da.henb.vendor-a.example").value();
    OSSL_CRMF_CERTTEMPLATE_fill(OSSL_CRMF_MSG_get0_tmpl(crm), kb.get(), subj.get(), nullptr, nullptr);
    ASSERT_EQ(OSSL_CRMF_MSG_create_popo(OSSL_CRMF_POPO_SIGNATURE, crm, ka.get(), EVP_sha256(), nullptr, nullptr), 1);
    X509* cert = OSSL_CMP_exec_certreq(ctx, OSSL_CMP_IR, crm);
    EXPECT_EQ(cert, nullptr);
    EXPECT_TRUE(OSSL_CMP_CTX_get_failInfoCode(ctx) & (1 << OSSL_CMP_PKIFAILUREINFO_badPOP))
        << OSSL_CMP_CTX_get_failInfoCode(ctx);
    OSSL_CRMF_MSG_free(crm);
    OSSL_CMP_CTX_free(ctx);
    ERR_clear_error();
    EXPECT_EQ(certs(), 0);
}

TEST_F(Fixture, KurRenewsAndRrRevokes) {
    auto dev = lab().device(lab().vendor_a, "0023a1b2c3db", kRealmA);
    auto k1 = p256();
    const std::string id = "0023a1b2c3db.henb.vendor-a.example";
    auto e = Client::enroll(request(dev, k1.get(), id));
    ASSERT_TRUE(e.ok()) << e.error().detail();

    // kur signed by the vendor certificate: refused
    {
        auto k = p256();
        RenewRequest bad;
        bad.transfer = transfer();
        bad.operator_roots = {e->operator_root.get()};
        bad.current_key = dev.key.get();
        bad.current_cert = dev.cert.get();
        bad.new_key = k.get();
        auto b = Client::renew(bad);
        ASSERT_FALSE(b.ok());
        EXPECT_EQ(b.error().code(), OSSL_CMP_PKIFAILUREINFO_signerNotTrusted) << b.error().detail();
    }

    auto k2 = p256();
    RenewRequest kr;
    kr.transfer = transfer();
    kr.operator_roots = {e->operator_root.get()};
    kr.current_key = k1.get();
    kr.current_cert = e->cert.get();
    for (auto& c : e->chain) kr.current_chain.push_back(c.get());
    kr.new_key = k2.get();
    auto renewed = Client::renew(kr);
    ASSERT_TRUE(renewed.ok()) << renewed.error().detail();
    EXPECT_TRUE(pki::public_keys_equal(renewed->cert.get(), k2.get()));
    EXPECT_EQ(pki::san_dns(renewed->cert.get()), std::vector<std::string>{id});
    EXPECT_NE(pki::serial_hex(renewed->cert.get()), pki::serial_hex(e->cert.get()));
    auto rec = store->find_by_serial(pki::serial_bytes(X509_get0_serialNumber(renewed->cert.get())));
    ASSERT_TRUE(rec.ok() && rec->has_value());
    EXPECT_EQ((*rec)->body, "kur");

    // rr of the old certificate, signed by itself
    RevokeRequest rr;
    rr.transfer = transfer();
    rr.operator_roots = {e->operator_root.get()};
    rr.key = k1.get();
    rr.cert = e->cert.get();
    for (auto& c : e->chain) rr.chain.push_back(c.get());
    auto st = Client::revoke(rr);
    ASSERT_TRUE(st.ok()) << st.error().detail();
    auto old = store->find_by_serial(pki::serial_bytes(X509_get0_serialNumber(e->cert.get())));
    EXPECT_TRUE((*old)->revoked);
    // second rr: already revoked -> the revoked cert no longer authenticates? It still
    // verifies as a signer, the store says certRevoked.
    rr.transfer = transfer();
    auto again = Client::revoke(rr);
    ASSERT_FALSE(again.ok());
    EXPECT_EQ(again.error().code(), OSSL_CMP_PKIFAILUREINFO_certRevoked) << again.error().detail();

    // CRL lists it
    auto crl_der = server->crl_der(wall_clock_request().now);
    ASSERT_TRUE(crl_der.ok());
    const unsigned char* p = crl_der->data();
    X509_CRL* crl = d2i_X509_CRL(nullptr, &p, static_cast<long>(crl_der->size()));
    ASSERT_NE(crl, nullptr);
    X509_REVOKED* rv = nullptr;
    EXPECT_EQ(X509_CRL_get0_by_serial(crl, &rv, X509_get0_serialNumber(e->cert.get())), 1);
    EXPECT_EQ(X509_CRL_verify(crl, X509_get0_pubkey(lab().operator_issuing.cert.get())), 1);
    X509_CRL_free(crl);
}

TEST_F(Fixture, GarbageIsNotACmpMessage) {
    EXPECT_FALSE(server->handle(to_bytes("hello"), wall_clock_request()).ok());
    EXPECT_FALSE(server->handle(Bytes{}, wall_clock_request()).ok());
    EXPECT_EQ(server->counters().get("cmp.rx.bad_der"), 2u);
    // truncated real message
    auto dev = lab().device(lab().vendor_a, "0023a1b2c3dc", kRealmA);
    auto nk = p256();
    Bytes captured;
    auto r = request(dev, nk.get(), "0023a1b2c3dc.henb.vendor-a.example");
    r.transfer = [&](BytesView req) -> Result<Bytes> {
        captured.assign(req.begin(), req.end());
        return Error("captured only");
    };
    EXPECT_FALSE(Client::enroll(r).ok());
    ASSERT_GT(captured.size(), 100u);
    captured.resize(captured.size() - 10);
    EXPECT_FALSE(server->handle(captured, wall_clock_request()).ok());
    EXPECT_EQ(certs(), 0);
}

TEST_F(Fixture, TamperedMessageAnsweredWithError) {
    auto dev = lab().device(lab().vendor_a, "0023a1b2c3dd", kRealmA);
    auto nk = p256();
    auto r = request(dev, nk.get(), "0023a1b2c3dd.henb.vendor-a.example");
    r.transfer = [&](BytesView req) -> Result<Bytes> {
        Bytes m(req.begin(), req.end());
        // flip one bit inside the subject CN text of the template (covered by the protection)
        std::string s(m.begin(), m.end());
        auto pos = s.find("0023a1b2c3dd.henb", 0);
        pos = s.find("0023a1b2c3dd.henb", pos + 1);  // skip the header sender
        if (pos != std::string::npos) m[pos] ^= 1;
        return server->handle(m, wall_clock_request());
    };
    auto e = Client::enroll(r);
    ASSERT_FALSE(e.ok());
    EXPECT_EQ(certs(), 0);
    EXPECT_EQ(server->counters().get("cmp.reject.bad_message_check"), 1u);
}

TEST_F(Fixture, CertConfFromAnotherSignerRefused) {
    // A transaction left open (ir answered), then a certConf from a different device with the
    // same transactionID: it is not bound to the session and gets an error.
    auto dev = lab().device(lab().vendor_a, "0023a1b2c3de", kRealmA);
    auto other = lab().device(lab().vendor_a, "0023a1b2c3df", kRealmA);
    auto nk = p256();
    Bytes ip_seen;
    auto r = request(dev, nk.get(), "0023a1b2c3de.henb.vendor-a.example");
    int n = 0;
    r.transaction_id = Bytes(16, 0x77);
    r.transfer = [&](BytesView req) -> Result<Bytes> {
        if (++n == 2) return Error("drop certConf");
        return server->handle(req, wall_clock_request());
    };
    EXPECT_FALSE(Client::enroll(r).ok());
    EXPECT_EQ(server->open_sessions(), 1u);
    auto r2 = request(other, nk.get(), "0023a1b2c3df.henb.vendor-a.example");
    r2.transaction_id = Bytes(16, 0x77);
    auto e = Client::enroll(r2);  // ir with a tid in use
    ASSERT_FALSE(e.ok());
    EXPECT_EQ(e.error().code(), OSSL_CMP_PKIFAILUREINFO_transactionIdInUse);
}

TEST_F(Fixture, ConcurrentEnrolmentsGetUniqueSerials) {
    constexpr int kThreads = 6, kEach = 4;
    std::vector<std::thread> ts;
    std::mutex mu;
    std::set<std::string> serials;
    std::atomic<int> failures{0};
    ts.reserve(kThreads);
    for (int t = 0; t < kThreads; ++t)
        ts.emplace_back([&, t] {
            for (int i = 0; i < kEach; ++i) {
                char eui[13];
                std::snprintf(eui, sizeof eui, "02000000%02x%02x", t, i);
                auto dev = lab().device(lab().vendor_a, eui, kRealmA);
                auto nk = p256();
                auto e = Client::enroll(request(dev, nk.get(), std::string(eui) + "." + kRealmA));
                if (!e) {
                    ++failures;
                    continue;
                }
                std::lock_guard lk(mu);
                serials.insert(pki::serial_hex(e->cert.get()));
            }
        });
    for (auto& t : ts) t.join();
    EXPECT_EQ(failures.load(), 0);
    EXPECT_EQ(serials.size(), static_cast<size_t>(kThreads * kEach));
    EXPECT_EQ(certs(), kThreads * kEach);
}

TEST(CmpClient, UrlParsingAndRenewalTiming) {
    auto u = parse_server_url("http://127.0.0.1:8080/.well-known/cmp");
    ASSERT_TRUE(u.ok());
    EXPECT_EQ(u->host, "127.0.0.1");
    EXPECT_EQ(u->port, 8080);
    EXPECT_EQ(u->path, "/.well-known/cmp");
    EXPECT_TRUE(parse_server_url("https://[2001:db8::1]/pkix/")->tls);
    EXPECT_EQ(parse_server_url("https://[2001:db8::1]/pkix/")->port, 443);
    EXPECT_FALSE(parse_server_url("ftp://x/").ok());
    EXPECT_FALSE(parse_server_url("http://:99/").ok());
    auto root = make_root_ca("T");
    int64_t nb = pki::not_before(root.cert.get()), na = pki::not_after(root.cert.get());
    EXPECT_FALSE(needs_renewal(root.cert.get(), nb + (na - nb) / 2));
    EXPECT_TRUE(needs_renewal(root.cert.get(), nb + (na - nb) * 9 / 10));
}

// The server decodes no certificate twice (OpenSSL gets the request without its extraCerts,
// the template key is imported from its point): the enrolment still works end to end, the
// issued certificate carries exactly the requested key, the ip carries the RA's certificates
// and the pkiConf none (RFC 9483 3.3: later messages of a transaction may leave them out).
TEST_F(Fixture, IpCarriesCertificatesPkiConfNoneAndTheTemplateKeyIsCertified) {
    auto dev = lab().device(lab().vendor_a, "0023a1b2c3e5", kRealmA);
    auto nk = p256();
    const std::string id = "0023a1b2c3e5.henb.vendor-a.example";
    auto r = request(dev, nk.get(), id);
    std::vector<size_t> sizes;  // of each answer
    std::vector<int> bodies;
    r.transfer = [&](BytesView req) -> Result<Bytes> {
        auto rsp = server->handle(req, wall_clock_request());
        if (rsp) {
            const unsigned char* p = rsp->data();
            OSSL_CMP_MSG* m = d2i_OSSL_CMP_MSG(nullptr, &p, static_cast<long>(rsp->size()));
            bodies.push_back(m ? OSSL_CMP_MSG_get_bodytype(m) : -1);
            sizes.push_back(rsp->size());
            OSSL_CMP_MSG_free(m);
        }
        return rsp;
    };
    auto e = Client::enroll(r);
    ASSERT_TRUE(e.ok()) << e.error().detail();
    ASSERT_EQ(bodies.size(), 2u);
    EXPECT_EQ(bodies[0], 1);   // ip (RFC 4210 5.1.2; OpenSSL 3.0 keeps the names internal)
    EXPECT_EQ(bodies[1], 19);  // pkiConf
    EXPECT_TRUE(pki::public_keys_equal(e->cert.get(), nk.get()));
    EXPECT_FALSE(e->extra_certs.empty());  // the ip's: RA certificate and chain
    EXPECT_EQ(server->counters().get("cmp.tx.pkiconf_lean"), 1u);
    // A pkiConf with the RA certificate and its chain would be over a kilobyte; without, a
    // header, an empty body and a signature.
    EXPECT_LT(sizes[1], 600u);
    EXPECT_GT(sizes[0], 1500u);
    EXPECT_EQ(server->counters().get("cmp.certconf.accepted"), 1u);
}
