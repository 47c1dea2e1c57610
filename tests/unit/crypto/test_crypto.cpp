#include <gtest/gtest.h>
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/obj_mac.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <atomic>
#include <map>
#include <set>
#include <thread>
#include <sys/stat.h>
#include <unistd.h>

#include <x2sec/common/file.hpp>
#include <x2sec/crypto/crypto.hpp>
#include <x2sec/test/vec_file.hpp>

using namespace x2sec;
using namespace x2sec::crypto;

namespace {

Hash hash_from(const std::string& n) {
    if (n == "SHA1") return Hash::Sha1;
    if (n == "SHA256") return Hash::Sha256;
    if (n == "SHA384") return Hash::Sha384;
    return Hash::Sha512;
}

Bytes sb(const SecureBytes& s) {
    return Bytes(s.data(), s.data() + s.size());
}

bool contains(const std::string& s, const std::string& part) {
    return s.find(part) != std::string::npos;
}

}  // namespace

// ---------------------------------------------------------------- hashes, HMAC, PRF

TEST(Hash, SizesNamesAndSha256OfAbc) {
    EXPECT_EQ(hash_size(Hash::Sha1), 20u);
    EXPECT_EQ(hash_size(Hash::Sha512), 64u);
    EXPECT_STREQ(hash_name(Hash::Sha384), "SHA384");
    // FIPS 180-2 appendix B.1.
    EXPECT_EQ(to_hex(digest(Hash::Sha256, as_bytes("abc"))),
              "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST(Hmac, Rfc4231Vectors) {
    auto recs = test::read_vec_file("hmac_rfc4231.vec");
    ASSERT_EQ(recs.size(), 6u);
    for (const auto& r : recs) {
        SCOPED_TRACE("line " + std::to_string(r.line));
        EXPECT_EQ(to_hex(sb(hmac(hash_from(r.at("hash")), r.hex("key"), r.hex("data")))), to_hex(r.hex("mac")));
    }
}

TEST(Hmac, EmptyKeyAndData) {
    // HMAC-SHA256 with empty key and message (well-known value).
    EXPECT_EQ(to_hex(sb(hmac(Hash::Sha256, {}, {}))),
              "b613679a0814d9ec772f95d778c35fc5ff1697c493715653c6c712144292c5ad");
}

TEST(Prf, Rfc4868Vectors) {
    auto recs = test::read_vec_file("prf_rfc4868.vec");
    ASSERT_EQ(recs.size(), 3u);
    for (const auto& r : recs) {
        SCOPED_TRACE("line " + std::to_string(r.line));
        auto prf = Prf::create(static_cast<PrfId>(std::stoi(r.at("prf"))));
        ASSERT_TRUE(prf.ok());
        EXPECT_EQ(prf->size(), r.hex("key").size());
        EXPECT_EQ(to_hex(sb(prf->compute(r.hex("key"), r.hex("data")))), to_hex(r.hex("out")));
    }
}

TEST(Prf, RejectsUnknownTransform) {
    auto p = Prf::create(static_cast<PrfId>(2));  // PRF_HMAC_SHA1: not offered
    ASSERT_FALSE(p.ok());
    EXPECT_EQ(p.error().domain(), ErrorDomain::Crypto);
}

TEST(PrfPlus, StructureMatchesRfc7296) {
    auto prf = Prf::create(PrfId::HmacSha2_256).value();
    const Bytes key = hex("000102030405060708090a0b0c0d0e0f");
    const Bytes seed = to_bytes("seed for prf+");
    auto out = prf.plus(key, seed, 100);
    ASSERT_TRUE(out.ok());
    ASSERT_EQ(out->size(), 100u);
    // T1 = prf(K, S | 0x01), T2 = prf(K, T1 | S | 0x02), T3 = prf(K, T2 | S | 0x03) ...
    Bytes expect;
    Bytes t;
    for (uint8_t i = 1; expect.size() < 100; ++i) {
        Bytes in = concat({t, seed, BytesView(&i, 1)});
        t = sb(prf.compute(key, in));
        expect.insert(expect.end(), t.begin(), t.end());
    }
    expect.resize(100);
    EXPECT_EQ(sb(*out), expect);
    // A shorter request is a prefix of a longer one.
    auto shorter = prf.plus(key, seed, 33);
    ASSERT_TRUE(shorter.ok());
    EXPECT_TRUE(std::equal(shorter->data(), shorter->data() + 33, expect.begin()));
    // Boundaries: exactly 255 blocks is allowed, one more octet is not.
    EXPECT_EQ(prf.plus(key, seed, 255 * 32)->size(), 255u * 32);
    auto too_long = prf.plus(key, seed, 255 * 32 + 1);
    ASSERT_FALSE(too_long.ok());
    EXPECT_TRUE(contains(too_long.error().detail(), "prf+"));
    EXPECT_EQ(prf.plus(key, seed, 0)->size(), 0u);
}

TEST(PrfPlus, Sha384AndSha512Lengths) {
    for (auto id : {PrfId::HmacSha2_384, PrfId::HmacSha2_512}) {
        auto prf = Prf::create(id).value();
        auto out = prf.plus(hex("aa"), hex("bb"), 3 * prf.size() + 5);
        ASSERT_TRUE(out.ok());
        EXPECT_EQ(out->size(), 3 * prf.size() + 5);
        auto t1 = prf.compute(hex("aa"), hex("bb01"));
        EXPECT_TRUE(std::equal(t1.data(), t1.data() + t1.size(), out->data()));
    }
}

// ---------------------------------------------------------------- Diffie-Hellman

TEST(Dh, NamesSizesSupport) {
    EXPECT_STREQ(dh_group_name(DhGroup::Modp2048), "MODP_2048");
    EXPECT_STREQ(dh_group_name(DhGroup::Curve25519), "CURVE_25519");
    EXPECT_EQ(dh_public_size(DhGroup::Modp2048), 256u);
    EXPECT_EQ(dh_public_size(DhGroup::Ecp256), 64u);
    EXPECT_EQ(dh_public_size(DhGroup::Ecp384), 96u);
    EXPECT_EQ(dh_public_size(DhGroup::Curve25519), 32u);
    for (uint16_t g : {14, 19, 20, 31}) EXPECT_TRUE(dh_group_supported(g)) << g;
    for (uint16_t g : {0, 1, 2, 5, 15, 21, 32}) EXPECT_FALSE(dh_group_supported(g)) << g;
}

TEST(Dh, Rfc5903EcpVectors) {
    auto recs = test::read_vec_file("ecdh_rfc5903.vec");
    ASSERT_EQ(recs.size(), 2u);
    for (const auto& r : recs) {
        SCOPED_TRACE("group " + r.at("group"));
        const auto g = static_cast<DhGroup>(std::stoi(r.at("group")));
        auto kp = DhKeyPair::from_private(g, r.hex("i"));
        ASSERT_TRUE(kp.ok()) << kp.error().detail();
        EXPECT_EQ(to_hex(kp->public_value()), to_hex(concat({r.hex("gix"), r.hex("giy")})));
        auto secret = kp->derive(concat({r.hex("grx"), r.hex("gry")}));
        ASSERT_TRUE(secret.ok()) << secret.error().detail();
        EXPECT_EQ(to_hex(sb(*secret)), to_hex(r.hex("girx")));
        if (r.has("r")) {
            auto resp = DhKeyPair::from_private(g, r.hex("r"));
            ASSERT_TRUE(resp.ok());
            EXPECT_EQ(to_hex(resp->public_value()), to_hex(concat({r.hex("grx"), r.hex("gry")})));
            EXPECT_EQ(to_hex(sb(resp->derive(kp->public_value()).value())), to_hex(r.hex("girx")));
        }
    }
}

TEST(Dh, Rfc7748X25519) {
    auto recs = test::read_vec_file("x25519_rfc7748.vec");
    ASSERT_EQ(recs.size(), 1u);
    const auto& r = recs[0];
    auto a = DhKeyPair::from_private(DhGroup::Curve25519, r.hex("a"));
    auto b = DhKeyPair::from_private(DhGroup::Curve25519, r.hex("b"));
    ASSERT_TRUE(a.ok() && b.ok());
    EXPECT_EQ(to_hex(a->public_value()), to_hex(r.hex("a_pub")));
    EXPECT_EQ(to_hex(b->public_value()), to_hex(r.hex("b_pub")));
    EXPECT_EQ(to_hex(sb(a->derive(r.hex("b_pub")).value())), to_hex(r.hex("k")));
    EXPECT_EQ(to_hex(sb(b->derive(r.hex("a_pub")).value())), to_hex(r.hex("k")));
}

TEST(Dh, AllGroupsAgreeBothWays) {
    for (auto g : {DhGroup::Modp2048, DhGroup::Ecp256, DhGroup::Ecp384, DhGroup::Curve25519}) {
        SCOPED_TRACE(dh_group_name(g));
        auto a = DhKeyPair::generate(g);
        auto b = DhKeyPair::generate(g);
        ASSERT_TRUE(a.ok()) << a.error().detail();
        ASSERT_TRUE(b.ok());
        EXPECT_EQ(a->group(), g);
        EXPECT_EQ(a->public_value().size(), dh_public_size(g));
        EXPECT_NE(a->public_value(), b->public_value());
        auto s1 = a->derive(b->public_value());
        auto s2 = b->derive(a->public_value());
        ASSERT_TRUE(s1.ok()) << s1.error().detail();
        ASSERT_TRUE(s2.ok()) << s2.error().detail();
        EXPECT_EQ(sb(*s1), sb(*s2));
        const size_t want = g == DhGroup::Modp2048 ? 256 : g == DhGroup::Ecp256 ? 32 : g == DhGroup::Ecp384 ? 48 : 32;
        EXPECT_EQ(s1->size(), want);
    }
}

// The EC groups and parameters keys are cached per process and shared: engines on several
// threads import peer points and make key pairs at once.  Every thread must get the right
// secrets, and points off the curve must still be rejected while the cache is in use.
TEST(Dh, EcCurveCacheIsSharedSafelyBetweenThreads) {
    for (auto g : {DhGroup::Ecp256, DhGroup::Ecp384}) {
        SCOPED_TRACE(dh_group_name(g));
        std::atomic<int> failures{0};
        std::vector<std::thread> threads;
        for (int t = 0; t < 4; ++t)
            threads.emplace_back([&, t] {
                Bytes seed(dh_public_size(g) / 2, static_cast<uint8_t>(0x11 * (t + 1)));
                for (int i = 0; i < 25; ++i) {
                    seed[0] = static_cast<uint8_t>(i + 1);  // below the order, never zero
                    auto a = DhKeyPair::from_private(g, seed);
                    auto b = DhKeyPair::generate(g);
                    if (!a.ok() || !b.ok()) {
                        ++failures;
                        continue;
                    }
                    auto s1 = a->derive(b->public_value());
                    auto s2 = b->derive(a->public_value());
                    if (!s1.ok() || !s2.ok() || sb(*s1) != sb(*s2)) ++failures;
                    Bytes off = b->public_value();
                    off.back() ^= 1;  // (x, y+-1) is not on the curve
                    if (a->derive(off).ok()) ++failures;
                }
            });
        for (auto& th : threads) th.join();
        EXPECT_EQ(failures.load(), 0);
    }
}

namespace {
// x || y of scalar * G, computed with the EC_POINT API (not through DhKeyPair).
Bytes ec_point_of(DhGroup g, BytesView scalar) {
    EC_GROUP* grp = EC_GROUP_new_by_curve_name(g == DhGroup::Ecp256 ? NID_X9_62_prime256v1 : NID_secp384r1);
    BIGNUM* d = BN_bin2bn(scalar.data(), static_cast<int>(scalar.size()), nullptr);
    EC_POINT* q = EC_POINT_new(grp);
    uint8_t buf[1 + 2 * 48];
    size_t len = 0;
    if (grp && d && q && EC_POINT_mul(grp, q, d, nullptr, nullptr, nullptr) == 1)
        len = EC_POINT_point2oct(grp, q, POINT_CONVERSION_UNCOMPRESSED, buf, sizeof buf, nullptr);
    EC_POINT_free(q);
    BN_free(d);
    EC_GROUP_free(grp);
    return len > 1 ? Bytes(buf + 1, buf + len) : Bytes{};
}
}  // namespace

// from_private for the EC groups is OpenSSL's keygen fed the scalar (one path for production
// and seeded tests): the key must be exactly scalar * G, also with several threads making keys
// at once (the feed is per thread), at the ends of the range, and for short big-endian input.
TEST(Dh, EcFromPrivateIsExactlyTheScalarOnEveryThread) {
    for (auto g : {DhGroup::Ecp256, DhGroup::Ecp384}) {
        SCOPED_TRACE(dh_group_name(g));
        const size_t n = dh_public_size(g) / 2;
        Bytes order_minus_1 = g == DhGroup::Ecp256
                                  ? *from_hex("ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632550")
                                  : *from_hex(
                                        "ffffffffffffffffffffffffffffffffffffffffffffffffc7634d81f4372ddf"
                                        "581a0db248b0a77aecec196accc52972");
        for (const Bytes& k : {Bytes{1}, Bytes{2}, order_minus_1}) {
            auto kp = DhKeyPair::from_private(g, k);
            ASSERT_TRUE(kp.ok()) << kp.error().detail();
            EXPECT_EQ(kp->public_value(), ec_point_of(g, k));
        }
        std::atomic<int> wrong{0}, failed{0};
        std::vector<std::thread> threads;
        threads.reserve(4);
        for (int t = 0; t < 4; ++t)
            threads.emplace_back([&, t] {
                DeterministicRng rng(1000 + t);
                for (int i = 0; i < 20; ++i) {
                    Bytes k = rng.bytes(n);
                    k[0] &= 0x7f;
                    auto kp = DhKeyPair::from_private(g, k);
                    if (!kp.ok()) {
                        ++failed;
                        continue;
                    }
                    if (kp->public_value() != ec_point_of(g, k)) ++wrong;
                }
            });
        for (auto& th : threads) th.join();
        EXPECT_EQ(failed.load(), 0);
        EXPECT_EQ(wrong.load(), 0);
    }
}

TEST(Dh, ModpFixedPrivateMatchesBignumArithmetic) {
    // g^x mod p computed independently with BN_mod_exp, and both directions of agreement.
    const Bytes x = hex("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef");
    const Bytes y = hex("fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210");
    auto a = DhKeyPair::from_private(DhGroup::Modp2048, x);
    auto b = DhKeyPair::from_private(DhGroup::Modp2048, y);
    ASSERT_TRUE(a.ok()) << a.error().detail();
    ASSERT_TRUE(b.ok());
    BIGNUM* p = BN_get_rfc3526_prime_2048(nullptr);
    BIGNUM* g = BN_new();
    BN_set_word(g, 2);
    BIGNUM* bx = BN_bin2bn(x.data(), static_cast<int>(x.size()), nullptr);
    BIGNUM* by = BN_bin2bn(y.data(), static_cast<int>(y.size()), nullptr);
    BN_CTX* ctx = BN_CTX_new();
    BIGNUM* gx = BN_new();
    BIGNUM* gxy = BN_new();
    BN_mod_exp(gx, g, bx, p, ctx);
    BN_mod_exp(gxy, gx, by, p, ctx);
    Bytes gx_bytes(256), gxy_bytes(256);
    BN_bn2binpad(gx, gx_bytes.data(), 256);
    BN_bn2binpad(gxy, gxy_bytes.data(), 256);
    BN_free(p);
    BN_free(g);
    BN_free(bx);
    BN_free(by);
    BN_free(gx);
    BN_free(gxy);
    BN_CTX_free(ctx);
    EXPECT_EQ(a->public_value(), gx_bytes);
    EXPECT_EQ(sb(a->derive(b->public_value()).value()), gxy_bytes);
    EXPECT_EQ(sb(b->derive(a->public_value()).value()), gxy_bytes);
}

TEST(Dh, RejectsInvalidModpValues) {
    auto kp = DhKeyPair::generate(DhGroup::Modp2048).value();
    BIGNUM* p = BN_get_rfc3526_prime_2048(nullptr);
    Bytes pv(256), pm1(256);
    BN_bn2binpad(p, pv.data(), 256);
    BN_sub_word(p, 1);
    BN_bn2binpad(p, pm1.data(), 256);
    BN_free(p);
    Bytes zero(256, 0), one(256, 0), ff(256, 0xff);
    one[255] = 1;
    for (const auto& [name, v] : std::vector<std::pair<std::string, Bytes>>{
             {"0", zero}, {"1", one}, {"p-1", pm1}, {"p", pv}, {"2^2048-1", ff}}) {
        auto r = kp.derive(v);
        ASSERT_FALSE(r.ok()) << name;
        EXPECT_TRUE(contains(r.error().detail(), "invalid peer public value")) << r.error().detail();
    }
    EXPECT_FALSE(kp.derive(Bytes(255, 7)).ok());
    EXPECT_FALSE(kp.derive(Bytes(257, 7)).ok());
}

TEST(Dh, RejectsInvalidEcpValues) {
    for (auto g : {DhGroup::Ecp256, DhGroup::Ecp384}) {
        SCOPED_TRACE(dh_group_name(g));
        auto kp = DhKeyPair::generate(g).value();
        auto other = DhKeyPair::generate(g).value();
        Bytes off = other.public_value();
        off.back() ^= 0x01;  // y no longer matches x
        auto r = kp.derive(off);
        ASSERT_FALSE(r.ok());
        EXPECT_TRUE(contains(r.error().detail(), "not a point on the curve")) << r.error().detail();
        EXPECT_FALSE(kp.derive(Bytes(dh_public_size(g), 0)).ok());  // (0,0) is not on the curve
        EXPECT_FALSE(kp.derive(Bytes(dh_public_size(g), 0xaa)).ok());
        // Coordinates must be field elements: x = p (with the y of a point on the curve) is
        // not reduced modulo p for the check.
        Bytes unreduced = other.public_value();
        const Bytes prime = g == DhGroup::Ecp256
                                ? hex("ffffffff00000001000000000000000000000000ffffffffffffffffffffffff")
                                : hex("ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff"
                                      "fffffffffffffffeffffffff0000000000000000ffffffff");
        std::copy(prime.begin(), prime.end(), unreduced.begin());
        auto u = kp.derive(unreduced);
        ASSERT_FALSE(u.ok());
        EXPECT_TRUE(contains(u.error().detail(), "not a point on the curve")) << u.error().detail();
        // The SEC 1 tagged form (0x04 || x || y) is not the IKE encoding.
        Bytes tagged = concat({hex("04"), other.public_value()});
        auto t = kp.derive(tagged);
        ASSERT_FALSE(t.ok());
        EXPECT_TRUE(contains(t.error().detail(), "length"));
    }
}

TEST(Dh, RejectsX25519LowOrderPoints) {
    auto kp = DhKeyPair::generate(DhGroup::Curve25519).value();
    // u = 0 and u = 1 give an all-zero shared secret.
    Bytes zero(32, 0);
    Bytes one(32, 0);
    one[0] = 1;
    for (const auto& v : {zero, one}) {
        auto r = kp.derive(v);
        ASSERT_FALSE(r.ok());
        EXPECT_TRUE(contains(r.error().detail(), "CURVE_25519")) << r.error().detail();
    }
    EXPECT_FALSE(kp.derive(Bytes(31, 9)).ok());
}

TEST(Dh, GenerateFromAnInjectedRngIsReproducible) {
    for (auto g : {DhGroup::Modp2048, DhGroup::Ecp256, DhGroup::Ecp384, DhGroup::Curve25519}) {
        SCOPED_TRACE(dh_group_name(g));
        DeterministicRng r1(42), r2(42), r3(43);
        auto a = DhKeyPair::generate(g, r1);
        auto b = DhKeyPair::generate(g, r2);
        auto c = DhKeyPair::generate(g, r3);
        ASSERT_TRUE(a.ok()) << a.error().detail();
        ASSERT_TRUE(b.ok() && c.ok());
        EXPECT_EQ(a->public_value(), b->public_value());
        EXPECT_NE(a->public_value(), c->public_value());
        EXPECT_EQ(sb(a->derive(c->public_value()).value()), sb(c->derive(a->public_value()).value()));
    }
}

namespace {
// An Rng that yields only 0xff octets: every ECP scalar draw is >= n.
class AllOnesRng final : public Rng {
public:
    void fill(std::span<uint8_t> out) override { std::fill(out.begin(), out.end(), 0xff); }
};
}  // namespace

TEST(Dh, GenerateGivesUpOnAnRngWithoutValidScalars) {
    AllOnesRng rng;
    auto r = DhKeyPair::generate(DhGroup::Ecp256, rng);
    ASSERT_FALSE(r.ok());
    EXPECT_TRUE(contains(r.error().detail(), "no valid scalar"));
}

TEST(Dh, RejectsBadPrivateValues) {
    EXPECT_FALSE(DhKeyPair::from_private(DhGroup::Ecp256, Bytes(32, 0)).ok());
    EXPECT_FALSE(DhKeyPair::from_private(DhGroup::Ecp256, Bytes(32, 0xff)).ok());  // >= n
    EXPECT_FALSE(DhKeyPair::from_private(DhGroup::Curve25519, Bytes(31, 1)).ok());
    EXPECT_FALSE(DhKeyPair::from_private(DhGroup::Modp2048, Bytes(1, 0)).ok());
    EXPECT_FALSE(DhKeyPair::generate(static_cast<DhGroup>(2)).ok());
}

TEST(Dh, MoveLeavesSourceEmpty) {
    auto a = DhKeyPair::generate(DhGroup::Ecp256).value();
    auto peer = DhKeyPair::generate(DhGroup::Ecp256).value();
    DhKeyPair b = std::move(a);
    EXPECT_TRUE(b.derive(peer.public_value()).ok());
    EXPECT_FALSE(a.derive(peer.public_value()).ok());  // NOLINT(bugprone-use-after-move)
}

// ---------------------------------------------------------------- SK payload ciphers

namespace {

struct CipherCase {
    EncrId encr;
    unsigned bits;
    IntegId integ;
};

std::string case_name(const CipherCase& c) {
    return std::string(c.encr == EncrId::AesGcm16 ? "GCM" : "CBC") + std::to_string(c.bits) + "_" +
           std::to_string(static_cast<int>(c.integ));
}

SkCipher make_cipher(const CipherCase& c, uint64_t seed = 1) {
    DeterministicRng rng(seed);
    SecureBytes ek(rng.bytes(encr_keymat_size(c.encr, c.bits)));
    SecureBytes ik(rng.bytes(integ_key_size(c.integ)));
    auto r = SkCipher::create(c.encr, c.bits, c.integ, std::move(ek), std::move(ik));
    if (!r.ok()) throw std::runtime_error(r.error().detail());
    return std::move(r).value();
}

}  // namespace

class SkCipherTest : public ::testing::TestWithParam<CipherCase> {};

TEST_P(SkCipherTest, RoundTripAllLengths) {
    auto c = make_cipher(GetParam());
    auto peer = make_cipher(GetParam());  // same keys: the receiving side
    DeterministicRng rng(7);
    const Bytes aad = hex("0011223344556677 8899aabbccddeeff 2e202308 00000001 000000f0 2f00002c");
    for (size_t n : {0u, 1u, 14u, 15u, 16u, 17u, 31u, 32u, 100u, 1400u}) {
        SCOPED_TRACE(n);
        Bytes pt = rng.bytes(n);
        auto sealed = c.seal(aad, pt, rng);
        ASSERT_TRUE(sealed.ok()) << sealed.error().detail();
        EXPECT_EQ(sealed->size(), c.sealed_size(n));
        EXPECT_EQ((sealed->size() - c.iv_size() - c.icv_size()) % c.block_size(), 0u);
        auto opened = peer.open(aad, *sealed);
        ASSERT_TRUE(opened.ok()) << opened.error().detail();
        EXPECT_EQ(*opened, pt);
    }
}

TEST_P(SkCipherTest, TamperingIsDetected) {
    auto c = make_cipher(GetParam());
    DeterministicRng rng(9);
    const Bytes aad = hex("a1a2a3a4a5a6a7a8");
    const Bytes pt = to_bytes("IKE_AUTH payloads go here, forty-something octets");
    const Bytes sealed = c.seal(aad, pt, rng).value();
    auto expect_icv_mismatch = [&](const Bytes& a, const Bytes& s, const char* what) {
        auto r = c.open(a, s);
        ASSERT_FALSE(r.ok()) << what;
        EXPECT_EQ(r.error().domain(), ErrorDomain::Crypto);
        EXPECT_TRUE(contains(r.error().detail(), "ICV mismatch")) << what << ": " << r.error().detail();
    };
    Bytes s = sealed;
    s.back() ^= 0x80;
    expect_icv_mismatch(aad, s, "ICV");
    s = sealed;
    s[c.iv_size() + 3] ^= 0x01;
    expect_icv_mismatch(aad, s, "ciphertext");
    s = sealed;
    s[0] ^= 0x01;
    expect_icv_mismatch(aad, s, "IV");
    Bytes a2 = aad;
    a2[2] ^= 0x10;
    expect_icv_mismatch(a2, sealed, "AAD");
    // A cipher with other keys cannot open it either.
    auto other = make_cipher(GetParam(), 99);
    auto r = other.open(aad, sealed);
    ASSERT_FALSE(r.ok());
    EXPECT_TRUE(contains(r.error().detail(), "ICV mismatch"));
}

TEST_P(SkCipherTest, TruncatedInputIsReported) {
    auto c = make_cipher(GetParam());
    DeterministicRng rng(3);
    const Bytes sealed = c.seal({}, to_bytes("hello"), rng).value();
    for (size_t n : {size_t{0}, size_t{1}, c.iv_size(), c.iv_size() + c.icv_size()}) {
        auto r = c.open({}, BytesView(sealed).first(n));
        ASSERT_FALSE(r.ok()) << n;
        EXPECT_TRUE(contains(r.error().detail(), "truncated")) << r.error().detail();
    }
    if (c.block_size() > 1) {
        Bytes odd = sealed;
        odd.insert(odd.begin() + static_cast<long>(c.iv_size()), 0x00);  // not block aligned
        auto r = c.open({}, odd);
        ASSERT_FALSE(r.ok());
        EXPECT_TRUE(contains(r.error().detail(), "truncated")) << r.error().detail();
    }
}

INSTANTIATE_TEST_SUITE_P(AllCiphers, SkCipherTest,
                         ::testing::Values(CipherCase{EncrId::AesGcm16, 128, IntegId::None},
                                           CipherCase{EncrId::AesGcm16, 256, IntegId::None},
                                           CipherCase{EncrId::AesCbc, 128, IntegId::HmacSha2_256_128},
                                           CipherCase{EncrId::AesCbc, 256, IntegId::HmacSha2_256_128},
                                           CipherCase{EncrId::AesCbc, 256, IntegId::HmacSha2_512_256}),
                         [](const auto& p) { return case_name(p.param); });

TEST(SkCipher, SizesAndKeymat) {
    EXPECT_EQ(encr_keymat_size(EncrId::AesGcm16, 128), 20u);
    EXPECT_EQ(encr_keymat_size(EncrId::AesGcm16, 256), 36u);
    EXPECT_EQ(encr_keymat_size(EncrId::AesCbc, 128), 16u);
    EXPECT_EQ(integ_key_size(IntegId::HmacSha2_256_128), 32u);
    EXPECT_EQ(integ_icv_size(IntegId::HmacSha2_256_128), 16u);
    EXPECT_EQ(integ_icv_size(IntegId::HmacSha2_384_192), 24u);
    EXPECT_EQ(integ_icv_size(IntegId::HmacSha2_512_256), 32u);
    auto gcm = make_cipher({EncrId::AesGcm16, 128, IntegId::None});
    EXPECT_EQ(gcm.iv_size(), 8u);
    EXPECT_EQ(gcm.icv_size(), 16u);
    EXPECT_EQ(gcm.sealed_size(10), 8u + 11u + 16u);
    auto cbc = make_cipher({EncrId::AesCbc, 128, IntegId::HmacSha2_256_128});
    EXPECT_EQ(cbc.iv_size(), 16u);
    EXPECT_EQ(cbc.block_size(), 16u);
    EXPECT_EQ(cbc.sealed_size(15), 16u + 16u + 16u);
    EXPECT_EQ(cbc.sealed_size(16), 16u + 32u + 16u);
}

TEST(SkCipher, RejectsBadConstruction) {
    EXPECT_FALSE(SkCipher::create(EncrId::AesGcm16, 128, IntegId::None, SecureBytes(16), {}).ok());
    EXPECT_FALSE(
        SkCipher::create(EncrId::AesGcm16, 128, IntegId::HmacSha2_256_128, SecureBytes(20), SecureBytes(32)).ok());
    EXPECT_FALSE(SkCipher::create(EncrId::AesCbc, 128, IntegId::None, SecureBytes(16), {}).ok());
    EXPECT_FALSE(
        SkCipher::create(EncrId::AesCbc, 128, IntegId::HmacSha2_256_128, SecureBytes(16), SecureBytes(31)).ok());
    EXPECT_FALSE(
        SkCipher::create(EncrId::AesCbc, 100, IntegId::HmacSha2_256_128, SecureBytes(12), SecureBytes(32)).ok());
    EXPECT_FALSE(SkCipher::create(static_cast<EncrId>(3), 128, IntegId::None, SecureBytes(16), {}).ok());
}

TEST(SkCipher, GcmIvIsACounterNeverRepeated) {
    auto c = make_cipher({EncrId::AesGcm16, 128, IntegId::None});
    DeterministicRng rng(1);
    std::set<Bytes> ivs;
    for (uint64_t i = 0; i < 50; ++i) {
        Bytes s = c.seal({}, to_bytes("x"), rng).value();
        Bytes iv(s.begin(), s.begin() + 8);
        Bytes expect(8, 0);
        for (int k = 0; k < 8; ++k) expect[k] = static_cast<uint8_t>(i >> (56 - 8 * k));
        EXPECT_EQ(iv, expect);
        EXPECT_TRUE(ivs.insert(iv).second);
    }
}

TEST(SkCipher, CbcIvComesFromTheRng) {
    auto c = make_cipher({EncrId::AesCbc, 128, IntegId::HmacSha2_256_128});
    DeterministicRng rng(5), same(5);
    Bytes s = c.seal({}, to_bytes("x"), rng).value();
    EXPECT_EQ(Bytes(s.begin(), s.begin() + 16), same.bytes(16));
    Bytes s2 = c.seal({}, to_bytes("x"), rng).value();
    EXPECT_NE(Bytes(s2.begin(), s2.begin() + 16), Bytes(s.begin(), s.begin() + 16));
}

namespace {
// Builds IV || E(padded) || ICV for a chosen (possibly invalid) padded plaintext, the way a
// peer would, using raw EVP and HMAC so that open()'s padding check can be exercised.
Bytes cbc_seal_raw(BytesView key, BytesView ikey, BytesView aad, BytesView padded) {
    Bytes iv(16, 0x42);
    Bytes ct(padded.size());
    EVP_CIPHER_CTX* ctx = EVP_CIPHER_CTX_new();
    int len = 0;
    EVP_EncryptInit_ex(ctx, key.size() == 16 ? EVP_aes_128_cbc() : EVP_aes_256_cbc(), nullptr, key.data(), iv.data());
    EVP_CIPHER_CTX_set_padding(ctx, 0);
    EVP_EncryptUpdate(ctx, ct.data(), &len, padded.data(), static_cast<int>(padded.size()));
    EVP_CIPHER_CTX_free(ctx);
    Bytes out = concat({iv, ct});
    SecureBytes mac = hmac(Hash::Sha256, ikey, concat({aad, out}));
    out.insert(out.end(), mac.data(), mac.data() + 16);
    return out;
}

Bytes gcm_seal_raw(BytesView key, BytesView salt, BytesView aad, BytesView padded) {
    Bytes iv = hex("0000000000000009");
    Bytes nonce = concat({salt, iv});
    Bytes ct(padded.size()), tag(16);
    EVP_CIPHER_CTX* ctx = EVP_CIPHER_CTX_new();
    int len = 0;
    EVP_EncryptInit_ex(ctx, key.size() == 16 ? EVP_aes_128_gcm() : EVP_aes_256_gcm(), nullptr, nullptr, nullptr);
    EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN, 12, nullptr);
    EVP_EncryptInit_ex(ctx, nullptr, nullptr, key.data(), nonce.data());
    EVP_EncryptUpdate(ctx, nullptr, &len, aad.data(), static_cast<int>(aad.size()));
    EVP_EncryptUpdate(ctx, ct.data(), &len, padded.data(), static_cast<int>(padded.size()));
    EVP_EncryptFinal_ex(ctx, ct.data() + len, &len);
    EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, 16, tag.data());
    EVP_CIPHER_CTX_free(ctx);
    return concat({iv, ct, tag});
}
}  // namespace

TEST(SkCipher, BadPaddingIsReportedAfterTheIcvCheck) {
    for (unsigned bits : {128u, 256u}) {
        SCOPED_TRACE(bits);
        const Bytes key(bits / 8, 0x11), ikey(32, 0x22), aad = hex("cafe");
        auto c = SkCipher::create(EncrId::AesCbc, bits, IntegId::HmacSha2_256_128, SecureBytes(key), SecureBytes(ikey))
                     .value();
        // Pad length 16 in a 16-octet block: more padding than plaintext.
        Bytes padded(16, 0);
        padded[15] = 16;
        auto r = c.open(aad, cbc_seal_raw(key, ikey, aad, padded));
        ASSERT_FALSE(r.ok());
        EXPECT_TRUE(contains(r.error().detail(), "bad padding")) << r.error().detail();
        // Pad length 15: valid, empty plaintext.  Peers may pad more than needed.
        padded[15] = 15;
        auto ok = c.open(aad, cbc_seal_raw(key, ikey, aad, padded));
        ASSERT_TRUE(ok.ok()) << ok.error().detail();
        EXPECT_TRUE(ok->empty());
        Bytes two(32, 0xab);
        two[31] = 20;  // 11 octets of data, 20 of padding
        auto ok2 = c.open(aad, cbc_seal_raw(key, ikey, aad, two));
        ASSERT_TRUE(ok2.ok());
        EXPECT_EQ(ok2->size(), 11u);

        const Bytes gkey(bits / 8, 0x33), salt = hex("01020304");
        auto g = SkCipher::create(EncrId::AesGcm16, bits, IntegId::None, SecureBytes(concat({gkey, salt})), {}).value();
        Bytes gp = hex("41424344 05");  // pad length 5 > 4 octets before it
        auto gr = g.open(aad, gcm_seal_raw(gkey, salt, aad, gp));
        ASSERT_FALSE(gr.ok());
        EXPECT_TRUE(contains(gr.error().detail(), "bad padding")) << gr.error().detail();
        gp = hex("41424344 00");
        auto gok = g.open(aad, gcm_seal_raw(gkey, salt, aad, gp));
        ASSERT_TRUE(gok.ok()) << gok.error().detail();
        EXPECT_EQ(*gok, hex("41424344"));
    }
}

// ---------------------------------------------------------------- signatures

namespace {

SigScheme scheme_from_name(const std::string& n) {
    for (auto s : {SigScheme::EcdsaSha256, SigScheme::EcdsaSha384, SigScheme::EcdsaSha512, SigScheme::RsaPssSha256,
                   SigScheme::RsaPssSha384, SigScheme::RsaPkcs1Sha256, SigScheme::RsaPkcs1Sha384,
                   SigScheme::RsaPkcs1Sha1, SigScheme::Ed25519})
        if (n == sig_scheme_name(s)) return s;
    throw std::runtime_error("unknown scheme " + n);
}

const PrivateKey& cached_key(KeyType t) {
    static std::map<KeyType, PrivateKey> keys;
    auto it = keys.find(t);
    if (it == keys.end()) it = keys.emplace(t, PrivateKey::generate(t).value()).first;
    return it->second;
}

struct SigCase {
    SigScheme scheme;
    KeyType key;
};

}  // namespace

class SignatureTest : public ::testing::TestWithParam<SigCase> {};

TEST_P(SignatureTest, SignVerifyAndRejects) {
    const auto [scheme, kt] = GetParam();
    const PrivateKey& key = cached_key(kt);
    const Bytes data = to_bytes("InitiatorSignedOctets: IKE_SA_INIT | Nr | prf(SK_pi, IDi')");
    auto sig = key.sign(scheme, data);
    ASSERT_TRUE(sig.ok()) << sig.error().detail();
    EXPECT_TRUE(verify_signature(key.public_key(), scheme, data, *sig).ok());
    // Another message, a flipped signature bit, or another key of the same type fail.
    Bytes other = data;
    other[0] ^= 1;
    auto st = verify_signature(key.public_key(), scheme, other, *sig);
    ASSERT_FALSE(st.ok());
    EXPECT_EQ(st.error().detail(), std::string(sig_scheme_name(scheme)) + " signature does not verify");
    Bytes bad = *sig;
    bad[bad.size() / 2] ^= 0x04;
    EXPECT_FALSE(verify_signature(key.public_key(), scheme, data, bad).ok());
    auto wrong = PrivateKey::generate(kt).value();
    EXPECT_FALSE(verify_signature(wrong.public_key(), scheme, data, *sig).ok());
    EXPECT_FALSE(verify_signature(key.public_key(), scheme, data, {}).ok());
    // The AlgorithmIdentifier round-trips through OpenSSL's DER.
    auto aid = algorithm_identifier_der(scheme);
    ASSERT_TRUE(aid.ok()) << aid.error().detail();
    auto back = sig_scheme_from_algorithm_identifier(*aid);
    ASSERT_TRUE(back.ok()) << back.error().detail();
    EXPECT_EQ(*back, scheme);
}

INSTANTIATE_TEST_SUITE_P(AllSchemes, SignatureTest,
                         ::testing::Values(SigCase{SigScheme::EcdsaSha256, KeyType::EcP256},
                                           SigCase{SigScheme::EcdsaSha384, KeyType::EcP384},
                                           SigCase{SigScheme::EcdsaSha512, KeyType::EcP384},
                                           SigCase{SigScheme::RsaPssSha256, KeyType::Rsa2048},
                                           SigCase{SigScheme::RsaPssSha384, KeyType::Rsa3072},
                                           SigCase{SigScheme::RsaPkcs1Sha256, KeyType::Rsa2048},
                                           SigCase{SigScheme::RsaPkcs1Sha384, KeyType::Rsa2048},
                                           SigCase{SigScheme::RsaPkcs1Sha1, KeyType::Rsa2048},
                                           SigCase{SigScheme::Ed25519, KeyType::Ed25519}),
                         [](const auto& p) {
                             std::string n = sig_scheme_name(p.param.scheme);
                             for (auto& ch : n)
                                 if (ch == '-') ch = '_';
                             return n;
                         });

TEST(Signature, AlgorithmIdentifiersMatchRfc7427) {
    auto recs = test::read_vec_file("sig_algorithm_identifiers.vec");
    ASSERT_GE(recs.size(), 7u);
    for (const auto& r : recs) {
        SCOPED_TRACE(r.at("scheme"));
        const SigScheme s = scheme_from_name(r.at("scheme"));
        auto der = algorithm_identifier_der(s);
        ASSERT_TRUE(der.ok()) << der.error().detail();
        EXPECT_EQ(to_hex(*der), to_hex(r.hex("der")));
        auto back = sig_scheme_from_algorithm_identifier(r.hex("der"));
        ASSERT_TRUE(back.ok()) << back.error().detail();
        EXPECT_EQ(*back, s);
    }
}

TEST(Signature, UnknownOrMalformedAlgorithmIdentifiers) {
    // md5WithRSAEncryption: well-formed but unsupported.
    auto md5 = sig_scheme_from_algorithm_identifier(hex("300d06092a864886f70d0101040500"));
    ASSERT_FALSE(md5.ok());
    EXPECT_TRUE(contains(md5.error().detail(), "1.2.840.113549.1.1.4")) << md5.error().detail();
    EXPECT_FALSE(sig_scheme_from_algorithm_identifier(hex("300d06092a864886")).ok());
    EXPECT_FALSE(sig_scheme_from_algorithm_identifier({}).ok());
    // Trailing garbage after a valid identifier.
    EXPECT_FALSE(sig_scheme_from_algorithm_identifier(hex("300a06082a8648ce3d04030200")).ok());
    // RSASSA-PSS with the RFC 4055 defaults (SHA-1, salt 20): not offered.
    auto pss_default = sig_scheme_from_algorithm_identifier(hex("300d06092a864886f70d01010a3000"));
    ASSERT_FALSE(pss_default.ok());
    EXPECT_TRUE(contains(pss_default.error().detail(), "RSASSA-PSS")) << pss_default.error().detail();
    // RSASSA-PSS SHA-256 with salt 20 instead of 32.
    auto salt20 = sig_scheme_from_algorithm_identifier(hex(
        "304106092a864886f70d01010a3034a00f300d06096086480165030402010500a11c301a06092a864886f70d010108300d0609608648"
        "0165030402010500a203020114"));
    EXPECT_FALSE(salt20.ok());
}

// ECDSA signs and verifies the digest (EVP_PKEY_sign/verify, sign.cpp): its signatures must be
// exactly what EVP_DigestSign/EVP_DigestVerify make and accept, and the DER check stays strict.
TEST(Signature, EcdsaOverTheDigestInteroperatesWithEvpDigestSign) {
    struct Case {
        KeyType kt;
        SigScheme scheme;
        const char* md;
    };
    for (const Case& c : {Case{KeyType::EcP256, SigScheme::EcdsaSha256, "SHA256"},
                          Case{KeyType::EcP384, SigScheme::EcdsaSha384, "SHA384"},
                          Case{KeyType::EcP384, SigScheme::EcdsaSha512, "SHA512"}}) {
        SCOPED_TRACE(sig_scheme_name(c.scheme));
        const PrivateKey& key = cached_key(c.kt);
        const Bytes data = to_bytes("ResponderSignedOctets");
        Bytes ours = key.sign(c.scheme, data).value();
        // OpenSSL's one-shot verify accepts ours ...
        EVP_MD_CTX* v = EVP_MD_CTX_new();
        ASSERT_EQ(EVP_DigestVerifyInit_ex(v, nullptr, c.md, nullptr, nullptr, key.get(), nullptr), 1);
        EXPECT_EQ(EVP_DigestVerify(v, ours.data(), ours.size(), data.data(), data.size()), 1);
        EVP_MD_CTX_free(v);
        // ... and we accept OpenSSL's one-shot signature.
        EVP_MD_CTX* sctx = EVP_MD_CTX_new();
        ASSERT_EQ(EVP_DigestSignInit_ex(sctx, nullptr, c.md, nullptr, nullptr, key.get(), nullptr), 1);
        size_t len = 0;
        ASSERT_EQ(EVP_DigestSign(sctx, nullptr, &len, data.data(), data.size()), 1);
        Bytes theirs(len);
        ASSERT_EQ(EVP_DigestSign(sctx, theirs.data(), &len, data.data(), data.size()), 1);
        theirs.resize(len);
        EVP_MD_CTX_free(sctx);
        EXPECT_TRUE(verify_signature(key.public_key(), c.scheme, data, theirs).ok());
        // A trailing octet after the DER, or the digest of another hash, does not verify.
        Bytes trailing = ours;
        trailing.push_back(0);
        EXPECT_FALSE(verify_signature(key.public_key(), c.scheme, data, trailing).ok());
        const SigScheme other = c.scheme == SigScheme::EcdsaSha256 ? SigScheme::EcdsaSha384 : SigScheme::EcdsaSha256;
        EXPECT_FALSE(verify_signature(key.public_key(), other, data, ours).ok());
    }
}

TEST(Signature, SchemeMustFitTheKey) {
    const PrivateKey& ec = cached_key(KeyType::EcP256);
    auto r = ec.sign(SigScheme::RsaPssSha256, to_bytes("x"));
    ASSERT_FALSE(r.ok());
    EXPECT_TRUE(contains(r.error().detail(), "cannot sign with a EC key")) << r.error().detail();
    auto sig = ec.sign(SigScheme::EcdsaSha256, to_bytes("x")).value();
    EXPECT_FALSE(
        verify_signature(cached_key(KeyType::Ed25519).public_key(), SigScheme::EcdsaSha256, to_bytes("x"), sig).ok());
    EXPECT_FALSE(verify_signature(nullptr, SigScheme::EcdsaSha256, to_bytes("x"), sig).ok());
}

TEST(Signature, DefaultSchemesAndNames) {
    EXPECT_EQ(default_sig_scheme(cached_key(KeyType::EcP256).public_key()), SigScheme::EcdsaSha256);
    EXPECT_EQ(default_sig_scheme(cached_key(KeyType::EcP384).public_key()), SigScheme::EcdsaSha384);
    EXPECT_EQ(default_sig_scheme(cached_key(KeyType::Rsa2048).public_key()), SigScheme::RsaPssSha256);
    EXPECT_EQ(default_sig_scheme(cached_key(KeyType::Ed25519).public_key()), SigScheme::Ed25519);
    EXPECT_EQ(key_type_of(cached_key(KeyType::Rsa3072).public_key()), KeyType::Rsa3072);
    EXPECT_EQ(sig_scheme_hash(SigScheme::RsaPssSha384), Hash::Sha384);
    EXPECT_EQ(sig_scheme_hash(SigScheme::RsaPkcs1Sha1), Hash::Sha1);
    EXPECT_STREQ(key_type_name(KeyType::EcP256), "EC-P256");
}

TEST(PrivateKey, SaveIs0600AndLoadsBack) {
    char tmpl[] = "/tmp/x2sec-crypto-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    const std::string dir = tmpl;
    for (auto t : {KeyType::EcP256, KeyType::Ed25519, KeyType::Rsa2048}) {
        SCOPED_TRACE(key_type_name(t));
        const PrivateKey& key = cached_key(t);
        const std::string path = dir + "/key.pem";
        ASSERT_TRUE(key.save(path).ok());
        struct stat st {};
        ASSERT_EQ(stat(path.c_str(), &st), 0);
        EXPECT_EQ(st.st_mode & 0777, 0600u);
        auto text = read_text_file(path).value();
        EXPECT_NE(text.find("-----BEGIN PRIVATE KEY-----"), std::string::npos);  // PKCS#8
        auto loaded = PrivateKey::load(path);
        ASSERT_TRUE(loaded.ok()) << loaded.error().detail();
        EXPECT_EQ(EVP_PKEY_eq(loaded->public_key(), key.public_key()), 1);
        // A signature by the loaded key verifies with the original public key.
        const SigScheme s = default_sig_scheme(key.public_key());
        auto sig = loaded->sign(s, to_bytes("m")).value();
        EXPECT_TRUE(verify_signature(key.public_key(), s, to_bytes("m"), sig).ok());
        unlink(path.c_str());
    }
    EXPECT_FALSE(PrivateKey::load(dir + "/missing.pem").ok());
    ASSERT_TRUE(write_file_atomic(dir + "/junk.pem", std::string_view("-----BEGIN PRIVATE KEY-----\nAAAA\n")).ok());
    auto junk = PrivateKey::load(dir + "/junk.pem");
    ASSERT_FALSE(junk.ok());
    EXPECT_TRUE(contains(junk.error().detail(), "junk.pem")) << junk.error().detail();
    unlink((dir + "/junk.pem").c_str());
    rmdir(dir.c_str());
}

TEST(PrivateKey, PemRoundTripAndPublicDer) {
    const PrivateKey& key = cached_key(KeyType::EcP384);
    SecureBytes pem = key.to_pem();
    auto back = PrivateKey::from_pem(pem.view());
    ASSERT_TRUE(back.ok());
    EXPECT_EQ(EVP_PKEY_eq(back->public_key(), key.public_key()), 1);
    auto der = public_key_der(key.public_key());
    ASSERT_TRUE(der.ok());
    auto pub = public_key_from_der(*der);
    ASSERT_TRUE(pub.ok());
    EXPECT_EQ(EVP_PKEY_eq(*pub, key.public_key()), 1);
    EVP_PKEY_free(*pub);
    EXPECT_FALSE(PrivateKey::from_pem(as_bytes("not a key")).ok());
}

TEST(Errors, OpenSslQueueIsDrainedIntoTheDetail) {
    EXPECT_EQ(openssl_errors(), "");
    auto r = public_key_from_der(hex("3003020101"));
    ASSERT_FALSE(r.ok());
    EXPECT_TRUE(contains(r.error().detail(), "malformed SubjectPublicKeyInfo"));
    EXPECT_EQ(openssl_errors(), "");  // drained
    Error e = crypto_error("op");
    EXPECT_EQ(e.domain(), ErrorDomain::Crypto);
    EXPECT_EQ(e.detail(), "op");
}
