// Keying material and AUTH octets, checked against an independent HMAC computation.
#include <gtest/gtest.h>
#include <openssl/hmac.h>

#include <x2sec/ikev2/keymat.hpp>

using namespace x2sec;
using namespace x2sec::ike;

namespace {

Bytes hmac256(BytesView key, BytesView data) {
    Bytes out(32);
    unsigned n = 0;
    HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()), data.data(), data.size(), out.data(), &n);
    return out;
}

// prf+ written out as in RFC 7296 2.13 with OpenSSL's HMAC.
Bytes prf_plus_ref(BytesView key, BytesView seed, size_t len) {
    Bytes out, t;
    for (uint8_t i = 1; out.size() < len; ++i) {
        Bytes in = concat({t, seed, Bytes{i}});
        t = hmac256(key, in);
        out.insert(out.end(), t.begin(), t.end());
    }
    out.resize(len);
    return out;
}

Bytes b(const SecureBytes& s) {
    return Bytes(s.data(), s.data() + s.size());
}

}  // namespace

TEST(Keymat, SkeyseedAndIkeKeysFollowRfc7296) {
    auto prf = crypto::Prf::create(crypto::PrfId::HmacSha2_256).value();
    Bytes ni(32, 0x11), nr(32, 0x22), gir(64, 0x33);
    SecureBytes seed = skeyseed(prf, ni, nr, gir);
    EXPECT_EQ(b(seed), hmac256(concat({ni, nr}), gir));

    IkeAlgorithms algs;
    algs.encr = {crypto::EncrId::AesGcm16, 128};
    algs.integ = crypto::IntegId::None;
    auto k = derive_ike_keys(algs, seed, ni, nr, 0x0102030405060708ull, 0x1112131415161718ull).value();
    Bytes s = concat({ni, nr, hex("0102030405060708"), hex("1112131415161718")});
    Bytes ref = prf_plus_ref(b(seed), s, 32 + 0 + 0 + 20 + 20 + 32 + 32);
    EXPECT_EQ(b(k.sk_d), Bytes(ref.begin(), ref.begin() + 32));
    EXPECT_TRUE(k.sk_ai.empty());
    EXPECT_EQ(b(k.sk_ei), Bytes(ref.begin() + 32, ref.begin() + 52));  // key + 4-octet salt
    EXPECT_EQ(b(k.sk_er), Bytes(ref.begin() + 52, ref.begin() + 72));
    EXPECT_EQ(b(k.sk_pi), Bytes(ref.begin() + 72, ref.begin() + 104));
    EXPECT_EQ(b(k.sk_pr), Bytes(ref.begin() + 104, ref.begin() + 136));

    algs.encr = {crypto::EncrId::AesCbc, 256};
    algs.integ = crypto::IntegId::HmacSha2_256_128;
    auto c = derive_ike_keys(algs, seed, ni, nr, 1, 2).value();
    EXPECT_EQ(c.sk_ai.size(), 32u);
    EXPECT_EQ(c.sk_ei.size(), 32u);
    Bytes s2 = concat({ni, nr, hex("0000000000000001"), hex("0000000000000002")});
    Bytes ref2 = prf_plus_ref(b(seed), s2, 32 * 7);
    EXPECT_EQ(b(c.sk_ai), Bytes(ref2.begin() + 32, ref2.begin() + 64));
    EXPECT_EQ(b(c.sk_er), Bytes(ref2.begin() + 128, ref2.begin() + 160));
}

TEST(Keymat, RekeyedSkeyseedUsesOldSkD) {
    auto prf = crypto::Prf::create(crypto::PrfId::HmacSha2_256).value();
    Bytes skd(32, 0x44), ni(16, 1), nr(16, 2), gir(32, 3);
    EXPECT_EQ(b(rekey_skeyseed(prf, skd, gir, ni, nr)), hmac256(skd, concat({gir, ni, nr})));
}

TEST(Keymat, ChildKeymatLayout) {
    auto prf = crypto::Prf::create(crypto::PrfId::HmacSha2_256).value();
    Bytes skd(32, 0x55), ni(32, 6), nr(32, 7), gir(32, 8);
    auto gcm = derive_child_keys(prf, skd, EspCipher::AesGcm16_256, std::nullopt, ni, nr).value();
    Bytes ref = prf_plus_ref(skd, concat({ni, nr}), 72);
    EXPECT_EQ(b(gcm.i_to_r.enc_key), Bytes(ref.begin(), ref.begin() + 36));  // 32 key + 4 salt (RFC 4106 8.1)
    EXPECT_TRUE(gcm.i_to_r.integ_key.empty());
    EXPECT_EQ(b(gcm.r_to_i.enc_key), Bytes(ref.begin() + 36, ref.end()));
    auto cbc = derive_child_keys(prf, skd, EspCipher::AesCbc128_HmacSha256_128, BytesView(gir), ni, nr).value();
    Bytes ref2 = prf_plus_ref(skd, concat({gir, ni, nr}), 2 * (16 + 32));
    EXPECT_EQ(b(cbc.i_to_r.enc_key), Bytes(ref2.begin(), ref2.begin() + 16));
    EXPECT_EQ(b(cbc.i_to_r.integ_key), Bytes(ref2.begin() + 16, ref2.begin() + 48));
    EXPECT_EQ(b(cbc.r_to_i.enc_key), Bytes(ref2.begin() + 48, ref2.begin() + 64));
    EXPECT_EQ(b(cbc.r_to_i.integ_key), Bytes(ref2.begin() + 64, ref2.end()));
}

TEST(Auth, PskAuthAndSignedOctets) {
    auto prf = crypto::Prf::create(crypto::PrfId::HmacSha2_256).value();
    Bytes skp(32, 0x66), msg = to_bytes("IKE_SA_INIT message"), nonce(32, 9);
    Bytes id_data = to_bytes("a.henb.example");
    Bytes oct = signed_octets(prf, skp, msg, nonce, 2, id_data);
    Bytes maced = hmac256(skp, concat({hex("02000000"), id_data}));
    EXPECT_EQ(oct, concat({msg, nonce, maced}));
    Bytes psk = to_bytes("secret");
    Bytes expect = hmac256(hmac256(psk, to_bytes("Key Pad for IKEv2")), oct);
    EXPECT_EQ(b(psk_auth(prf, psk, oct)), expect);
}

TEST(Auth, SignatureAuthDataRoundTrip) {
    auto key = crypto::PrivateKey::generate(crypto::KeyType::EcP256).value();
    Bytes oct = to_bytes("signed octets");
    auto data = signature_auth_data(key, crypto::SigScheme::EcdsaSha256, oct).value();
    ASSERT_GT(data.size(), 1u + data[0]);
    auto parsed = parse_signature_auth(data);
    ASSERT_TRUE(parsed.ok()) << parsed.error().to_string();
    EXPECT_EQ(parsed->scheme, crypto::SigScheme::EcdsaSha256);
    EXPECT_TRUE(crypto::verify_signature(key.public_key(), parsed->scheme, oct, parsed->signature).ok());
    EXPECT_FALSE(crypto::verify_signature(key.public_key(), parsed->scheme, to_bytes("other"), parsed->signature).ok());
    EXPECT_FALSE(parse_signature_auth(hex("ff01")).ok());  // length beyond the data
    EXPECT_FALSE(parse_signature_auth({}).ok());
}
