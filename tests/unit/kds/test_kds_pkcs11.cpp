// The KDS's mutual TLS with keys in PKCS#11 tokens (SoftHSM2): the KDS's server key and the
// H(e)NBs' TLS client keys sign the handshakes inside their tokens.
#include <gtest/gtest.h>

#include <ctime>
#include <x2sec/common/rng.hpp>
#include <x2sec/common/time.hpp>
#include <x2sec/crypto/pkcs11.hpp>
#include <x2sec/kds/server.hpp>
#include <x2sec/kds/tls.hpp>
#include <x2sec/scenario/lab_pki.hpp>
#include <x2sec/pki/pki.hpp>
#include <x2sec/test/softhsm.hpp>

using namespace x2sec;
using namespace x2sec::kds;

namespace {

const std::string kA1 = "0023a1000001.henb.vendor-a.example";
const std::string kB1 = "0023b2000001.henb.vendor-b.example";

// TLS credentials whose key is generated in the token the URI names; key_pem is the URI.
TlsCredentials token_creds(scenario::LabCa& ca, const std::string& fqdn, const std::string& uri,
                           const std::string& anchors, std::string& key_uri) {
    auto key = pki::generate_key(pki::KeyAlg::EcP256, uri);
    EXPECT_TRUE(key.ok()) << key.error().detail();
    if (!key.ok()) return {};
    key_uri = crypto::token_key_uri(key->get()).value_or("");
    auto name = pki::parse_name("/CN=" + fqdn).value();
    pki::IssueRequest r;
    r.profile = pki::Profile::Server;  // serverAuth + clientAuth
    r.subject = name.get();
    r.public_key = key->get();
    r.dns = {fqdn};
    auto cert = pki::issue_certificate(r, ca.cert(), ca.key());
    EXPECT_TRUE(cert.ok()) << cert.error().detail();
    if (!cert.ok()) return {};
    return TlsCredentials{pki::cert_pem(cert->get()), SecureBytes(as_bytes(std::string_view(key_uri))), anchors};
}

}  // namespace

TEST(KdsPkcs11, MutualTlsWithServerAndClientKeysInTokens) {
    std::string why;
    const test::SoftHsm* hsm = test::SoftHsm::get(&why);
    if (hsm == nullptr) GTEST_SKIP() << why;
    auto vendor_a = scenario::LabCa::create("Vendor A Root CA", "Vendor A", 1'700'000'000, 3650).value();
    auto vendor_b = scenario::LabCa::create("Vendor B Root CA", "Vendor B", 1'700'000'000, 3650).value();
    auto op = scenario::LabCa::create("Operator Root CA", "Operator", 1'700'000'000, 3650).value();

    ServerConfig cfg;
    cfg.nodes = {{"a1", kA1}, {"b1", kB1}};
    cfg.relations = {{"a1", "b1"}};
    cfg.key_lifetime_s = 600;
    DeterministicRng rng{9};
    SystemClock clock;
    Server engine(cfg, rng);
    TlsServer server(engine, clock);
    std::string kds_uri, a_uri, b_uri;
    auto kds_creds = token_creds(op, "kds.operator.example", hsm->uri("kds", "tls"),
                                 vendor_a.root_pem() + vendor_b.root_pem(), kds_uri);
    auto st = server.start("127.0.0.1", 0, kds_creds);
    ASSERT_TRUE(st.ok()) << st.error().to_string();

    auto ca = token_creds(vendor_a, kA1, hsm->uri("henb1", "kds-client"), op.root_pem(), a_uri);
    auto cb = token_creds(vendor_b, kB1, hsm->uri_pin_file("henb2", "kds-client"), op.root_pem(), b_uri);
    KeyRequest ra, rb;
    ra.request_id = 7;
    ra.requester = kA1;
    ra.peer = kB1;
    rb.request_id = 8;
    rb.requester = kB1;
    rb.peer = kA1;
    auto ka = fetch_key("127.0.0.1", server.port(), "kds.operator.example", ca, ra);
    ASSERT_TRUE(ka.ok()) << ka.error().to_string();
    auto kb = fetch_key("127.0.0.1", server.port(), "kds.operator.example", cb, rb);
    ASSERT_TRUE(kb.ok()) << kb.error().to_string();
    EXPECT_TRUE(ct_equal(ka->key.view(), kb->key.view()));
    EXPECT_EQ(ka->key_id, kb->key_id);

    // A client whose key URI names a key it has no certificate for is refused locally.
    auto wrong = ca;
    wrong.key_pem = SecureBytes(as_bytes(std::string_view(b_uri)));
    EXPECT_FALSE(fetch_key("127.0.0.1", server.port(), "kds.operator.example", wrong, ra).ok());
    server.stop();

    for (const std::string& u : {kds_uri, a_uri, b_uri}) {
        auto a = crypto::token_key_attributes(u);
        ASSERT_TRUE(a.ok()) << a.error().detail();
        EXPECT_TRUE(a->sensitive);
        EXPECT_FALSE(a->extractable);
        EXPECT_FALSE(a->value_readable);
    }
}
