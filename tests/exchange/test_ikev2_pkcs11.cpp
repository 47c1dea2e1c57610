// IKE_AUTH signatures made inside PKCS#11 tokens (SoftHSM2): both ends' keys generated in
// their tokens (non-extractable), the engines given Signers opened from the keys' URIs.
#include <gtest/gtest.h>

#include <x2sec/crypto/pkcs11.hpp>
#include <x2sec/test/softhsm.hpp>

#include "ikev2_harness.hpp"

using namespace x2sec;
using namespace x2sec::ike;
using namespace x2sec::test;

namespace {

// A leaf whose key is generated in the token the URI names; its Signer is opened from the
// key's URI (as the configuration's `key = "pkcs11:..."` does).
Leaf token_leaf(const TestCa& issuer, const std::string& fqdn, const std::string& uri, pki::KeyAlg alg) {
    Leaf l;
    auto k = pki::generate_key(alg, uri);
    EXPECT_TRUE(k.ok()) << k.error().detail();
    if (!k.ok()) return l;
    l.key = std::move(*k);
    auto n = name(fqdn, "x2sec test");
    pki::IssueRequest r;
    r.profile = pki::Profile::BaseStation;
    r.subject = n.get();
    r.public_key = l.key.get();
    r.dns = {fqdn};
    r.not_before = 1'700'000'000;
    r.not_after = 2'000'000'000;
    l.cert = pki::issue_certificate(r, issuer.cert.get(), issuer.key.get()).value();
    auto signer = crypto::PrivateKey::load(crypto::token_key_uri(l.key.get()).value_or(""));
    EXPECT_TRUE(signer.ok()) << signer.error().detail();
    if (signer.ok()) l.signer = std::make_shared<crypto::PrivateKey>(std::move(*signer));
    return l;
}

void expect_in_token(const Leaf& l) {
    auto a = crypto::token_key_attributes(crypto::token_key_uri(l.key.get()).value_or(""));
    ASSERT_TRUE(a.ok()) << a.error().detail();
    EXPECT_TRUE(a->sensitive);
    EXPECT_FALSE(a->extractable);
    EXPECT_FALSE(a->value_readable);
}

void run_pair(pki::KeyAlg alg, const std::string& object, const std::string& expect_auth) {
    std::string why;
    const SoftHsm* hsm = SoftHsm::get(&why);
    if (hsm == nullptr) GTEST_SKIP() << why;
    TestCa root_a = make_root("Vendor A"), root_b = make_root("Vendor B");
    auto trust = std::make_shared<x509::TrustStore>();
    trust->add_anchor(root_a.certificate(), "vendor-a");
    trust->add_anchor(root_b.certificate(), "vendor-b");
    Leaf la = token_leaf(root_a, "a.henb.example", hsm->uri("henb1", object), alg);
    Leaf lb = token_leaf(root_b, "b.henb.example", hsm->uri_pin_file("henb2", object), alg);
    ASSERT_TRUE(la.signer && lb.signer);
    PeerConfig pa = base_peer(true), pb = base_peer(false);
    use_cert(pa, la, {}, trust);
    use_cert(pb, lb, {}, trust);
    Pair p(pa, pb);
    ASSERT_TRUE(p.connect());
    auto ia = p.a.engine->list_sas()[0], ib = p.b.engine->list_sas()[0];
    EXPECT_EQ(ia.peer_cert_anchor, "vendor-b");
    EXPECT_EQ(ib.peer_cert_anchor, "vendor-a");
    EXPECT_EQ(ia.local_auth, expect_auth);
    EXPECT_EQ(ib.local_auth, expect_auth);
    EXPECT_EQ(p.a.backend.installed_spis().size(), 1u);
    EXPECT_EQ(p.b.backend.installed_spis().size(), 1u);
    expect_in_token(la);
    expect_in_token(lb);
}

}  // namespace

TEST(IkePkcs11, EcdsaKeysInTokensAuthenticate) {
    run_pair(pki::KeyAlg::EcP256, "ike-ec", "ECDSA-SHA256 certificate");
}

TEST(IkePkcs11, RsaPssKeysInTokensAuthenticate) {
    run_pair(pki::KeyAlg::Rsa2048, "ike-rsa", "RSASSA-PSS-SHA256 certificate");
}
