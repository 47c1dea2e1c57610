// Keys in a PKCS#11 token (SoftHSM2): generated inside, used through the libp11 engine, never
// extractable.
#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <sys/stat.h>

#include <thread>
#include <vector>
#include <x2sec/common/file.hpp>
#include <x2sec/crypto/crypto.hpp>
#include <x2sec/crypto/pkcs11.hpp>
#include <x2sec/test/softhsm.hpp>
#include <x2sec/test/test_pki.hpp>

using namespace x2sec;
using namespace x2sec::crypto;

namespace {

const test::SoftHsm* hsm_or_skip(std::string& why) {
    return test::SoftHsm::get(&why);
}

#define NEED_HSM()                               \
    std::string why;                             \
    const test::SoftHsm* hsm = hsm_or_skip(why); \
    if (hsm == nullptr) GTEST_SKIP() << why

void expect_never_leaves(const std::string& uri) {
    auto a = token_key_attributes(uri);
    ASSERT_TRUE(a.ok()) << a.error().detail();
    EXPECT_TRUE(a->sensitive);
    EXPECT_FALSE(a->extractable);
    EXPECT_TRUE(a->always_sensitive);
    EXPECT_TRUE(a->never_extractable);
    EXPECT_FALSE(a->value_readable);
}

}  // namespace

TEST(Pkcs11, UriRecognisedAndRedacted) {
    EXPECT_TRUE(is_pkcs11_uri("pkcs11:token=a"));
    EXPECT_TRUE(is_pkcs11_uri("PKCS11:token=a"));
    EXPECT_FALSE(is_pkcs11_uri("/etc/x2sec/pkcs11:key"));
    EXPECT_FALSE(is_pkcs11_uri("pkcs1"));
    EXPECT_EQ(redact_pkcs11_uri("pkcs11:token=a?pin-value=secret&module-path=/m.so"),
              "pkcs11:token=a?pin-value=***&module-path=/m.so");
}

TEST(Pkcs11, GeneratedEcKeySignsInsideAndNeverLeaves) {
    NEED_HSM();
    auto k = generate_token_key(hsm->uri("spare", "ec-gen"), KeyType::EcP256);
    ASSERT_TRUE(k.ok()) << k.error().detail();
    PrivateKey held = PrivateKey::adopt(k->key);
    EXPECT_EQ(key_type_of(held.public_key()), KeyType::EcP256);
    EXPECT_NE(k->uri.find("id="), std::string::npos) << k->uri;
    expect_never_leaves(k->uri);

    // Loaded again from its URI, it signs; the public key verifies.
    auto loaded = PrivateKey::load(k->uri);
    ASSERT_TRUE(loaded.ok()) << loaded.error().detail();
    const Bytes msg = {1, 2, 3, 4, 5};
    auto sig = loaded->sign(SigScheme::EcdsaSha256, msg);
    ASSERT_TRUE(sig.ok()) << sig.error().detail();
    EXPECT_TRUE(verify_signature(held.public_key(), SigScheme::EcdsaSha256, msg, *sig).ok());
    Bytes other = msg;
    other[0] ^= 1;
    EXPECT_FALSE(verify_signature(held.public_key(), SigScheme::EcdsaSha256, other, *sig).ok());
}

TEST(Pkcs11, RsaKeySignsPssAndPkcs1) {
    NEED_HSM();
    auto k = generate_token_key(hsm->uri("spare", "rsa-gen"), KeyType::Rsa2048);
    ASSERT_TRUE(k.ok()) << k.error().detail();
    PrivateKey key = PrivateKey::adopt(k->key);
    expect_never_leaves(k->uri);
    const Bytes msg(100, 0x5a);
    for (SigScheme s : {SigScheme::RsaPssSha256, SigScheme::RsaPkcs1Sha256}) {
        auto sig = key.sign(s, msg);
        ASSERT_TRUE(sig.ok()) << sig_scheme_name(s) << ": " << sig.error().detail();
        EXPECT_TRUE(verify_signature(key.public_key(), s, msg, *sig).ok()) << sig_scheme_name(s);
    }
}

TEST(Pkcs11, KeyFileHoldsTheUriNotTheKey) {
    NEED_HSM();
    auto k = generate_token_key(hsm->uri_pin_file("spare", "pointer"), KeyType::EcP256);
    ASSERT_TRUE(k.ok()) << k.error().detail();
    PrivateKey key = PrivateKey::adopt(k->key);
    // to_pem()/save() of a token key give its URI (with the pin-source, not a PIN).
    const SecureBytes pem = key.to_pem();
    const std::string text(reinterpret_cast<const char*>(pem.data()), pem.size());
    EXPECT_EQ(text, k->uri);
    EXPECT_EQ(text.find("PRIVATE KEY"), std::string::npos);
    EXPECT_EQ(text.find(test::SoftHsm::kPin), std::string::npos) << text;
    const std::string file = hsm->dir() + "/pointer.key";
    ASSERT_TRUE(key.save(file).ok());
    struct stat st {};
    ASSERT_EQ(stat(file.c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0777, 0600u);
    auto again = PrivateKey::load(file);
    ASSERT_TRUE(again.ok()) << again.error().detail();
    auto sig = again->sign(SigScheme::EcdsaSha256, Bytes{9, 9});
    ASSERT_TRUE(sig.ok()) << sig.error().detail();
    EXPECT_TRUE(verify_signature(key.public_key(), SigScheme::EcdsaSha256, Bytes{9, 9}, *sig).ok());
    EXPECT_EQ(token_key_uri(again->get()), k->uri);
}

TEST(Pkcs11, CertificateStoredBesideTheKey) {
    NEED_HSM();
    auto k = generate_token_key(hsm->uri("spare", "with-cert"), KeyType::EcP256);
    ASSERT_TRUE(k.ok()) << k.error().detail();
    PrivateKey key = PrivateKey::adopt(k->key);
    EXPECT_FALSE(load_token_certificate(k->uri).ok());  // none yet
    auto root = test::make_root("Token Test Root");
    test::CertOptions o;
    o.subject = "henb-token.example.net";
    o.subject_key = key.public_key();
    auto leaf = test::make_cert(root, o);
    ASSERT_TRUE(store_token_certificate(k->uri, leaf.cert.der()).ok());
    auto back = load_token_certificate(k->uri);
    ASSERT_TRUE(back.ok()) << back.error().detail();
    EXPECT_EQ(*back, leaf.cert.der());
    // A second store replaces it.
    auto leaf2 = test::make_cert(root, o);
    ASSERT_TRUE(store_token_certificate(k->uri, leaf2.cert.der()).ok());
    back = load_token_certificate(k->uri);
    ASSERT_TRUE(back.ok());
    EXPECT_EQ(*back, leaf2.cert.der());
}

TEST(Pkcs11, WrongPinAndMissingObjectsAreClearErrors) {
    NEED_HSM();
    // A token this process has not logged in to (a logged-in token takes any session).
    auto bad = token_key_attributes("pkcs11:token=pin-test;object=k?pin-value=99999");
    ASSERT_FALSE(bad.ok());
    EXPECT_NE(bad.error().detail().find("CKR_PIN_INCORRECT"), std::string::npos) << bad.error().detail();
    EXPECT_EQ(bad.error().detail().find("99999"), std::string::npos) << bad.error().detail();
    auto none = PrivateKey::load("pkcs11:token=spare;object=no-such-key?pin-value=1234");
    ASSERT_FALSE(none.ok());
    EXPECT_EQ(none.error().detail().find("1234"), std::string::npos) << none.error().detail();
    auto no_token = token_key_attributes("pkcs11:token=no-such-token;object=x?pin-value=1234");
    ASSERT_FALSE(no_token.ok());
    EXPECT_NE(no_token.error().detail().find("no token matches"), std::string::npos) << no_token.error().detail();
    auto malformed = PrivateKey::load("pkcs11:token=a;;id=%zz");
    EXPECT_FALSE(malformed.ok());
}

TEST(Pkcs11, ConcurrentSigningWithOneTokenKey) {
    NEED_HSM();
    auto k = generate_token_key(hsm->uri("spare", "threads"), KeyType::EcP256);
    ASSERT_TRUE(k.ok()) << k.error().detail();
    PrivateKey key = PrivateKey::adopt(k->key);
    std::vector<std::thread> ts;
    std::atomic<int> good{0};
    for (int t = 0; t < 4; ++t)
        ts.emplace_back([&, t] {
            for (int i = 0; i < 25; ++i) {
                Bytes m = {uint8_t(t), uint8_t(i)};
                auto sig = key.sign(SigScheme::EcdsaSha256, m);
                if (sig.ok() && verify_signature(key.public_key(), SigScheme::EcdsaSha256, m, *sig).ok()) ++good;
            }
        });
    for (auto& t : ts) t.join();
    EXPECT_EQ(good.load(), 100);
}
