// CMP with keys in PKCS#11 tokens (SoftHSM2): the vendor key (ir protection) and the new
// operator key (generated in the token, POP signed there) of the H(e)NB, kur renewing in the
// token, the CA's and RA's signing keys in a token, and the RA's HTTPS key in a token.
#include <gtest/gtest.h>
#include <openssl/cmp.h>

#include <chrono>
#include <ctime>
#include <thread>
#include <filesystem>
#include <x2sec/cmp/client.hpp>
#include <x2sec/cmp/http.hpp>
#include <x2sec/cmp/lab_pki.hpp>
#include <x2sec/cmp/server.hpp>
#include <x2sec/common/file.hpp>
#include <x2sec/crypto/pkcs11.hpp>
#include <x2sec/test/softhsm.hpp>

namespace {
// The system clock's time, for tests that exchange messages as they happen.
x2sec::cmp::RequestContext wall_clock_request() {
    return x2sec::cmp::RequestContext{"", static_cast<int64_t>(std::time(nullptr))};
}
}  // namespace

using namespace x2sec;
using namespace x2sec::cmp;

namespace {

const char* kRealm = "henb.vendor-a.example";

#define NEED_HSM()                                       \
    std::string why;                                     \
    const test::SoftHsm* hsm = test::SoftHsm::get(&why); \
    if (hsm == nullptr) GTEST_SKIP() << why

LabPki& lab() {
    static LabPki p = make_lab_pki();
    return p;
}

pki::PkeyPtr token_key(const std::string& uri) {
    auto k = pki::generate_key(pki::KeyAlg::EcP256, uri);
    EXPECT_TRUE(k.ok()) << k.error().detail();
    return k.ok() ? std::move(*k) : nullptr;
}

std::string uri_of(EVP_PKEY* k) {
    return crypto::token_key_uri(k).value_or("");
}

void expect_never_leaves(EVP_PKEY* k) {
    auto a = crypto::token_key_attributes(uri_of(k));
    ASSERT_TRUE(a.ok()) << a.error().detail();
    EXPECT_TRUE(a->sensitive);
    EXPECT_FALSE(a->extractable);
    EXPECT_FALSE(a->value_readable);
}

// A vendor device certificate for a key (in a token).
LabCredential device_for(EVP_PKEY* key, const std::string& eui) {
    LabCredential d;
    d.key = pki::up_ref(key);
    auto id = pki::make_identity(eui, kRealm).value();
    auto n = pki::parse_name("/O=Vendor/CN=" + id).value();
    pki::IssueRequest r;
    r.profile = pki::Profile::Device;
    r.subject = n.get();
    r.public_key = key;
    r.dns = {id};
    d.cert = pki::issue_certificate(r, lab().vendor_a.cert.get(), lab().vendor_a.key.get()).value();
    d.chain.push_back(pki::up_ref(lab().vendor_a.cert.get()));
    return d;
}

struct TokenCmp : ::testing::Test {
    std::unique_ptr<Store> store = std::move(open_sqlite_store(":memory:").value());
    std::unique_ptr<Server> server;
    std::string dir;
    void SetUp() override {
        server = std::make_unique<Server>(lab().server_config(), *store);
        char t[] = "/tmp/x2sec-cmp-p11-XXXXXX";
        ASSERT_NE(mkdtemp(t), nullptr);
        dir = t;
    }
    void TearDown() override {
        std::error_code ec;
        std::filesystem::remove_all(dir, ec);
    }
    Transfer transfer() {
        return [this](BytesView req) { return server->handle(req, wall_clock_request()); };
    }
};

}  // namespace

TEST_F(TokenCmp, IrWithVendorKeyInTokenAndNewKeyGeneratedInTokenThenKur) {
    NEED_HSM();
    // The vendor key was put in the H(e)NB's token at the factory.
    auto vkey = token_key(hsm->uri("vendor", "device"));
    ASSERT_TRUE(vkey);
    auto dev = device_for(vkey.get(), "0023a1b2c401");
    const std::string id = "0023a1b2c401.henb.vendor-a.example";

    // The operator key is generated inside the H(e)NB's token; POP is signed there.
    auto nk = token_key(hsm->uri_pin_file("henb1", "operator"));
    ASSERT_TRUE(nk);
    EnrollRequest r;
    r.transfer = transfer();
    r.auth_key = vkey.get();
    r.auth_cert = dev.cert.get();
    r.auth_chain = dev.chain_ptrs();
    r.new_key = nk.get();
    r.subject = "/CN=" + id;
    r.dns = {id};
    r.operator_roots = {lab().operator_root.cert.get()};
    auto e = Client::enroll(r);
    ASSERT_TRUE(e.ok()) << e.error().detail();
    EXPECT_TRUE(pki::public_keys_equal(e->cert.get(), nk.get()));
    EXPECT_EQ(server->counters().get("cmp.certconf.accepted"), 1u);

    // Installed: the certificate beside the key in the token, operator.key holds the URI.
    ASSERT_TRUE(install_credential(dir, nk.get(), *e).ok());
    auto in_token = crypto::load_token_certificate(uri_of(nk.get()));
    ASSERT_TRUE(in_token.ok()) << in_token.error().detail();
    EXPECT_EQ(*in_token, pki::cert_der(e->cert.get()));
    auto keyfile = read_file(dir + "/operator.key");
    ASSERT_TRUE(keyfile.ok());
    const std::string text(keyfile->begin(), keyfile->end());
    EXPECT_TRUE(crypto::is_pkcs11_uri(text)) << text;
    EXPECT_EQ(text.find("PRIVATE KEY"), std::string::npos);
    EXPECT_EQ(text.find(test::SoftHsm::kPin), std::string::npos) << "pin-source, not the PIN";
    expect_never_leaves(nk.get());
    expect_never_leaves(vkey.get());

    // kur from the installed credential: the new key is generated in the same token.
    auto cur = load_credential(dir);
    ASSERT_TRUE(cur.ok()) << cur.error().detail();
    EXPECT_EQ(uri_of(cur->key.get()), uri_of(nk.get()));
    ClientCommon common;
    common.transfer = transfer();
    common.operator_roots = {lab().operator_root.cert.get()};
    RenewalWindow now_due;
    now_due.value = 100;  // renew whenever
    auto out = renew_if_due(dir, common, static_cast<int64_t>(std::time(nullptr)), now_due, pki::KeyAlg::EcP256, false);
    ASSERT_TRUE(out.ok()) << out.error().detail();
    ASSERT_TRUE(out->renewed);
    auto renewed = load_credential(dir);
    ASSERT_TRUE(renewed.ok()) << renewed.error().detail();
    const std::string new_uri = uri_of(renewed->key.get());
    ASSERT_TRUE(crypto::is_pkcs11_uri(new_uri));
    EXPECT_NE(new_uri, uri_of(nk.get()));
    EXPECT_NE(new_uri.find("token=henb1"), std::string::npos) << new_uri;
    EXPECT_TRUE(pki::public_keys_equal(renewed->cert.get(), renewed->key.get()));
    expect_never_leaves(renewed->key.get());
}

TEST_F(TokenCmp, CaAndRaSigningKeysInToken) {
    NEED_HSM();
    // An issuing CA and an RA whose keys live in the CA's token.
    auto ca_key = token_key(hsm->uri("ca", "issuing"));
    auto ra_key = token_key(hsm->uri("ca", "ra"));
    ASSERT_TRUE(ca_key && ra_key);
    auto ca_name = pki::parse_name("/O=Operator/CN=Token Issuing CA").value();
    pki::IssueRequest ci;
    ci.profile = pki::Profile::IntermediateCa;
    ci.subject = ca_name.get();
    ci.public_key = ca_key.get();
    auto ca_cert = pki::issue_certificate(ci, lab().operator_root.cert.get(), lab().operator_root.key.get());
    ASSERT_TRUE(ca_cert.ok()) << ca_cert.error().detail();
    auto ra_name = pki::parse_name("/O=Operator/CN=Token RA").value();
    pki::IssueRequest ri;
    ri.profile = pki::Profile::Server;
    ri.subject = ra_name.get();
    ri.public_key = ra_key.get();
    ri.dns = {"localhost"};
    ri.ips = {"127.0.0.1"};
    // The RA certificate is signed by the token CA key (X509_sign through the engine).
    auto ra_cert = pki::issue_certificate(ri, ca_cert->get(), ca_key.get());
    ASSERT_TRUE(ra_cert.ok()) << ra_cert.error().detail();

    ServerConfig cfg = lab().server_config();
    cfg.ca_cert = pki::up_ref(ca_cert->get());
    cfg.ca_key = pki::up_ref(ca_key.get());
    cfg.ca_chain.clear();
    cfg.ca_chain.push_back(pki::up_ref(lab().operator_root.cert.get()));
    cfg.ra_cert = pki::up_ref(ra_cert->get());
    cfg.ra_key = pki::up_ref(ra_key.get());
    cfg.ra_chain.clear();
    cfg.ra_chain.push_back(pki::up_ref(ca_cert->get()));
    cfg.ra_chain.push_back(pki::up_ref(lab().operator_root.cert.get()));
    server = std::make_unique<Server>(std::move(cfg), *store);

    // Served over HTTPS with the RA's TLS key in the token too.
    HttpOptions ho;
    ho.threads = 2;
    ho.tls_cert = ra_cert->get();
    ho.tls_key = ra_key.get();
    ho.tls_chain = {ca_cert->get()};
    HttpServer http(*server, ho);
    ASSERT_TRUE(http.start().ok());

    auto dev = lab().device(lab().vendor_a, "0023a1b2c402", kRealm);
    auto nk = pki::generate_key(pki::KeyAlg::EcP256).value();
    EnrollRequest r;
    r.server_url = "https://127.0.0.1:" + std::to_string(http.port()) + "/.well-known/cmp";
    r.tls.trust = {lab().operator_root.cert.get()};
    r.timeout_s = 10;
    r.auth_key = dev.key.get();
    r.auth_cert = dev.cert.get();
    r.auth_chain = dev.chain_ptrs();
    r.new_key = nk.get();
    r.subject = "/CN=0023a1b2c402.henb.vendor-a.example";
    r.dns = {"0023a1b2c402.henb.vendor-a.example"};
    r.operator_roots = {lab().operator_root.cert.get()};
    auto e = Client::enroll(r);
    ASSERT_TRUE(e.ok()) << e.error().detail();
    // Issued by the token key; the CMP responses were protected by the RA token key (the
    // client validated them against the operator root).
    EXPECT_TRUE(pki::verify_chain(e->cert.get(), {lab().operator_root.cert.get()}, {ca_cert->get()}).ok());
    EXPECT_EQ(X509_verify(e->cert.get(), ca_key.get()), 1);
    // The CRL is signed in the token as well.
    auto crl = server->crl_der(wall_clock_request().now);
    ASSERT_TRUE(crl.ok()) << crl.error().detail();
    const unsigned char* p = crl->data();
    X509_CRL* c = d2i_X509_CRL(nullptr, &p, static_cast<long>(crl->size()));
    ASSERT_NE(c, nullptr);
    EXPECT_EQ(X509_CRL_verify(c, X509_get0_pubkey(ca_cert->get())), 1);
    X509_CRL_free(c);
    http.stop();
    expect_never_leaves(ca_key.get());
    expect_never_leaves(ra_key.get());
}

// TLS client authentication to the RA/CA with the H(e)NB's TLS key in its token: the server
// requires a client certificate (client_ca = the vendor root), the device key that signs the
// TLS handshake (CertificateVerify) is a token key, and the enrolment succeeds.
TEST_F(TokenCmp, TlsClientKeyInTokenEnrolsAgainstRequireMode) {
    NEED_HSM();
    auto tls_key = token_key(hsm->uri("henb2", "tls-client"));
    ASSERT_TRUE(tls_key);
    LabCredential dev = device_for(tls_key.get(), "0023a1b2c410");
    HttpOptions ho;
    ho.threads = 2;
    ho.tls_cert = lab().ra.cert.get();
    ho.tls_key = lab().ra.key.get();
    ho.tls_chain = {lab().operator_issuing.cert.get()};
    ho.client_auth = HttpOptions::ClientAuth::Require;
    ho.client_ca = {lab().vendor_a.cert.get()};
    HttpServer http(*server, ho);
    ASSERT_TRUE(http.start().ok());
    auto nk = token_key(hsm->uri("henb2", "operator-tls"));
    ASSERT_TRUE(nk);
    EnrollRequest r;
    r.server_url = "https://127.0.0.1:" + std::to_string(http.port()) + "/.well-known/cmp";
    r.tls.trust = {lab().operator_root.cert.get()};
    r.tls.client_cert = dev.cert.get();
    r.tls.client_key = tls_key.get();
    r.tls.client_chain = {lab().vendor_a.cert.get()};
    r.timeout_s = 10;
    r.auth_key = tls_key.get();
    r.auth_cert = dev.cert.get();
    r.auth_chain = dev.chain_ptrs();
    r.new_key = nk.get();
    r.subject = "/CN=0023a1b2c410.henb.vendor-a.example";
    r.dns = {"0023a1b2c410.henb.vendor-a.example"};
    auto e = Client::enroll(r);
    ASSERT_TRUE(e.ok()) << e.error().detail();
    EXPECT_EQ(server->counters().get("cmp.http.tls.handshake_failed"), 0u);
    EXPECT_EQ(store->counts()->certificates, 1);
    // without the client certificate the same server refuses the handshake
    r.tls.client_cert = nullptr;
    r.tls.client_key = nullptr;
    r.tls.client_chain.clear();
    r.timeout_s = 5;
    EXPECT_FALSE(Client::enroll(r).ok());
    // counted on the server's loop thread after the alert went out: wait for it (bounded)
    for (int i = 0; i < 200 && server->counters().get("cmp.http.tls.client_cert_missing") < 1; ++i)
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    EXPECT_EQ(server->counters().get("cmp.http.tls.client_cert_missing"), 1u);
    http.stop();
    expect_never_leaves(tls_key.get());
}
