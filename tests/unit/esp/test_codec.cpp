#include <gtest/gtest.h>
#include <cstring>
#include <x2sec/esp/packet.hpp>
#include "vectors.hpp"

using namespace x2sec;
using namespace x2sec::esp;

namespace {

std::unique_ptr<SaCipher> make(EspCipher c, BytesView enc, BytesView integ, bool encrypt) {
    DirectionKeys k;
    k.enc_key = SecureBytes(enc);
    k.integ_key = SecureBytes(integ);
    auto r = SaCipher::create(c, k, encrypt);
    EXPECT_TRUE(r.ok()) << (r.ok() ? "" : r.error().to_string());
    return r.ok() ? std::move(r).value() : nullptr;
}

EspCipher gcm_for(size_t key_len) {
    return key_len == 20 ? EspCipher::AesGcm16_128 : EspCipher::AesGcm16_256;
}

}  // namespace

TEST(EspVectors, SealMatchesDraftPacketsByteForByte) {
    for (const auto& v : kGcmEspVectors) {
        SCOPED_TRACE(v.name);
        Bytes key = hex(v.key), plain = hex(v.plain), packet = hex(v.packet);
        auto c = make(gcm_for(key.size()), key, {}, true);
        ASSERT_TRUE(c);
        uint8_t pad = plain[plain.size() - 2], nh = plain.back();
        size_t payload_len = plain.size() - 2 - pad;
        Bytes buf(16 + plain.size() + 64);
        std::memcpy(buf.data() + 16, plain.data(), payload_len);
        uint32_t spi = load_be32(packet.data());
        size_t n = seal(*c, spi, v.seq, v.esn, packet.data() + 8, nh, buf, 16, payload_len);
        ASSERT_EQ(n, packet.size());
        EXPECT_EQ(to_hex({buf.data(), n}), to_hex(packet));
    }
}

TEST(EspVectors, OpenDecryptsDraftPackets) {
    for (const auto& v : kGcmEspVectors) {
        SCOPED_TRACE(v.name);
        Bytes key = hex(v.key), plain = hex(v.plain), packet = hex(v.packet);
        auto c = make(gcm_for(key.size()), key, {}, false);
        ASSERT_TRUE(c);
        auto r = open(*c, v.esn, v.seq, packet);
        ASSERT_TRUE(r.ok) << to_string(r.reason);
        uint8_t pad = plain[plain.size() - 2];
        EXPECT_EQ(r.next_header, plain.back());
        EXPECT_EQ(r.payload_off, 16u);
        ASSERT_EQ(r.payload_len, plain.size() - 2 - pad);
        EXPECT_EQ(0, std::memcmp(packet.data() + 16, plain.data(), r.payload_len));
    }
}

TEST(EspVectors, WrongEsnHighBitsOrAnyFlippedBitFailsAuth) {
    const auto& v = kGcmEspVectors[0];  // ESN 8765432100000000
    Bytes key = hex(v.key), packet = hex(v.packet);
    auto c = make(EspCipher::AesGcm16_128, key, {}, false);
    Bytes copy = packet;
    EXPECT_EQ(open(*c, true, 0x8765432000000000ULL, copy).reason, DropReason::Auth);
    copy = packet;
    EXPECT_EQ(open(*c, false, 0, copy).reason, DropReason::Auth);  // 8-octet AAD
    for (size_t i = 0; i < packet.size(); i += 7) {
        copy = packet;
        copy[i] ^= 0x01;
        auto r = open(*c, true, v.seq, copy);
        EXPECT_FALSE(r.ok) << "flip at " << i;
        if (i >= 4) {
            EXPECT_EQ(r.reason, DropReason::Auth);
        }
    }
}

struct CipherCase {
    EspCipher cipher;
    size_t enc, integ;
};

class EspRoundTrip : public ::testing::TestWithParam<std::tuple<CipherCase, bool>> {};

TEST_P(EspRoundTrip, SealOpenAllLengthsWithPaddingChecks) {
    auto [cc, esn] = GetParam();
    Bytes ek(cc.enc), ik(cc.integ);
    for (size_t i = 0; i < ek.size(); ++i) ek[i] = uint8_t(i * 7 + 1);
    for (size_t i = 0; i < ik.size(); ++i) ik[i] = uint8_t(i * 3 + 5);
    auto enc = make(cc.cipher, ek, ik, true);
    auto dec = make(cc.cipher, ek, ik, false);
    ASSERT_TRUE(enc && dec);
    uint8_t iv[16];
    for (int i = 0; i < 16; ++i) iv[i] = uint8_t(0xa0 + i);
    for (size_t len = 0; len < 100; ++len) {
        SCOPED_TRACE(len);
        Bytes buf(32 + len + kMaxTailroom);
        for (size_t i = 0; i < len; ++i) buf[32 + i] = uint8_t(i);
        uint64_t seq = (uint64_t(7) << 32) | (len + 1);
        size_t n = seal(*enc, 0x01020304, seq, esn, iv, 4, buf, 32, len);
        ASSERT_GT(n, 0u);
        size_t start = 32 - 8 - enc->iv_len();
        EXPECT_EQ((n - 8 - enc->iv_len() - 16) % enc->align(), 0u);
        std::span<uint8_t> pkt(buf.data() + start, n);
        Bytes saved(pkt.begin(), pkt.end());
        auto r = open(*dec, esn, esn ? seq : uint32_t(seq), pkt);
        ASSERT_TRUE(r.ok) << to_string(r.reason);
        EXPECT_EQ(r.next_header, 4);
        ASSERT_EQ(r.payload_len, len);
        for (size_t i = 0; i < len; ++i) ASSERT_EQ(pkt[r.payload_off + i], uint8_t(i));
        // Tampering with the ICV is always caught before decryption.
        saved[saved.size() - 1] ^= 0x80;
        EXPECT_EQ(open(*dec, esn, esn ? seq : uint32_t(seq), saved).reason, DropReason::Auth);
    }
}

INSTANTIATE_TEST_SUITE_P(Ciphers, EspRoundTrip,
                         ::testing::Combine(::testing::Values(CipherCase{EspCipher::AesGcm16_128, 20, 0},
                                                              CipherCase{EspCipher::AesGcm16_256, 36, 0},
                                                              CipherCase{EspCipher::AesCbc128_HmacSha256_128, 16, 32},
                                                              CipherCase{EspCipher::AesCbc256_HmacSha256_128, 32, 32}),
                                            ::testing::Bool()));

// Seal an arbitrary plaintext (trailer included) so malformed trailers can be produced.
static Bytes gcm_raw(SaCipher& c, uint32_t spi, uint32_t seq, BytesView plaintext) {
    Bytes pkt(16 + plaintext.size() + 16);
    store_be32(pkt.data(), spi);
    store_be32(pkt.data() + 4, seq);
    std::memset(pkt.data() + 8, 0x11, 8);
    std::memcpy(pkt.data() + 16, plaintext.data(), plaintext.size());
    uint8_t aad[8];
    std::memcpy(aad, pkt.data(), 8);
    EXPECT_TRUE(
        c.gcm_seal(aad, 8, pkt.data() + 8, pkt.data() + 16, plaintext.size(), pkt.data() + 16 + plaintext.size()));
    return pkt;
}

TEST(EspCodec, BadPaddingIsDetectedAfterAuthentication) {
    Bytes key = hex("000102030405060708090a0b0c0d0e0f10111213");
    auto enc = make(EspCipher::AesGcm16_128, key, {}, true);
    auto dec = make(EspCipher::AesGcm16_128, key, {}, false);
    // pad length larger than the payload
    Bytes p1 = gcm_raw(*enc, 1, 1, hex("aabb0904"));
    EXPECT_EQ(open(*dec, false, 1, p1).reason, DropReason::BadPadding);
    // padding bytes not 1, 2, 3
    Bytes p2 = gcm_raw(*enc, 1, 2, hex("aabbccdd01030304"));
    EXPECT_EQ(open(*dec, false, 2, p2).reason, DropReason::BadPadding);
    // good padding for comparison
    Bytes p3 = gcm_raw(*enc, 1, 3, hex("aabbccdd01020204"));
    auto r = open(*dec, false, 3, p3);
    ASSERT_TRUE(r.ok);
    EXPECT_EQ(r.payload_len, 4u);
}

TEST(EspCodec, TruncatedPacketsRejected) {
    Bytes key(20, 1);
    auto dec = make(EspCipher::AesGcm16_128, key, {}, false);
    for (size_t n = 0; n < 36; ++n) {
        Bytes pkt(n, 0x42);
        EXPECT_EQ(open(*dec, false, 1, pkt).reason, DropReason::Truncated) << n;
    }
    Bytes cbc_key(16, 2), mac_key(32, 3);
    auto cbc = make(EspCipher::AesCbc128_HmacSha256_128, cbc_key, mac_key, false);
    Bytes odd(8 + 16 + 17 + 16, 0);  // ciphertext not a multiple of the block
    EXPECT_EQ(open(*cbc, false, 1, odd).reason, DropReason::Truncated);
}

TEST(EspCodec, KeyLengthsChecked) {
    DirectionKeys k;
    k.enc_key = SecureBytes(Bytes(16, 1));  // GCM needs 16 + 4 salt
    auto r = SaCipher::create(EspCipher::AesGcm16_128, k, true);
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.error().detail().find("20 octets"), std::string::npos);
    k.enc_key = SecureBytes(Bytes(16, 1));
    k.integ_key = SecureBytes(Bytes(20, 1));
    EXPECT_FALSE(SaCipher::create(EspCipher::AesCbc128_HmacSha256_128, k, true).ok());
}

TEST(EspUdpEncap, NonEspMarkerAndKeepalive) {
    EXPECT_EQ(classify_udp_encap(hex("ff")), UdpKind::Keepalive);
    EXPECT_EQ(classify_udp_encap(hex("00000000aabbccdd")), UdpKind::Ike);
    EXPECT_EQ(classify_udp_encap(hex("00000000")), UdpKind::Invalid);
    EXPECT_EQ(classify_udp_encap(hex("0000432100000001")), UdpKind::Esp);
    EXPECT_EQ(classify_udp_encap(hex("00004321")), UdpKind::Invalid);
    EXPECT_EQ(classify_udp_encap(hex("fe")), UdpKind::Invalid);
    EXPECT_EQ(classify_udp_encap({}), UdpKind::Invalid);
}

TEST(EspIp, ParsesSelectorFields) {
    // IPv4 UDP 198.51.100.1:40000 -> 203.0.113.1:2152
    Bytes p =
        hex("450000200000000040110000c6336401cb007101"
            "9c400868000c0000"
            "01020304");
    IpFlow f;
    ASSERT_TRUE(parse_ip(p.data(), p.size(), f));
    EXPECT_EQ(f.src.to_string(), "198.51.100.1");
    EXPECT_EQ(f.dst.to_string(), "203.0.113.1");
    EXPECT_EQ(f.proto, 17);
    EXPECT_EQ(f.src_port, 40000);
    EXPECT_EQ(f.dst_port, 2152);
    EXPECT_FALSE(parse_ip(p.data(), 19, f));
    p[3] = 0x40;  // total length beyond the buffer
    EXPECT_FALSE(parse_ip(p.data(), p.size(), f));
}
