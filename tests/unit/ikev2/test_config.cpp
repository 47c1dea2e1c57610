#include <gtest/gtest.h>

#include <x2sec/ikev2/engine.hpp>

using namespace x2sec;
using namespace x2sec::ike;

TEST(IkeProposal, ParsesAeadProposal) {
    auto p = parse_ike_proposal("aes128gcm16-prfsha256-ecp256");
    ASSERT_TRUE(p.ok()) << p.error().to_string();
    ASSERT_EQ(p->encr.size(), 1u);
    EXPECT_EQ(p->encr[0].id, crypto::EncrId::AesGcm16);
    EXPECT_EQ(p->encr[0].key_bits, 128u);
    EXPECT_TRUE(p->integ.empty());
    EXPECT_EQ(p->prf, std::vector<crypto::PrfId>{crypto::PrfId::HmacSha2_256});
    EXPECT_EQ(p->dh, std::vector<crypto::DhGroup>{crypto::DhGroup::Ecp256});
    EXPECT_EQ(to_string(*p), "aes128gcm16-prfsha256-ecp256");
}

TEST(IkeProposal, CbcProposalDerivesPrfFromInteg) {
    auto p = parse_ike_proposal("aes256-sha256-modp2048");
    ASSERT_TRUE(p.ok()) << p.error().to_string();
    EXPECT_EQ(p->encr[0].id, crypto::EncrId::AesCbc);
    EXPECT_EQ(p->encr[0].key_bits, 256u);
    EXPECT_EQ(p->integ, std::vector<crypto::IntegId>{crypto::IntegId::HmacSha2_256_128});
    EXPECT_EQ(p->prf, std::vector<crypto::PrfId>{crypto::PrfId::HmacSha2_256});
    EXPECT_EQ(p->dh, std::vector<crypto::DhGroup>{crypto::DhGroup::Modp2048});
    auto again = parse_ike_proposal(to_string(*p));
    ASSERT_TRUE(again.ok());
    EXPECT_EQ(to_string(*again), to_string(*p));
}

TEST(IkeProposal, SeveralAlgorithmsKeepOrder) {
    auto p = parse_ike_proposal("aes128gcm16-aes256gcm16-prfsha256-prfsha384-ecp256-x25519");
    ASSERT_TRUE(p.ok());
    ASSERT_EQ(p->encr.size(), 2u);
    EXPECT_EQ(p->encr[1].key_bits, 256u);
    EXPECT_EQ(p->prf.size(), 2u);
    EXPECT_EQ(p->dh[1], crypto::DhGroup::Curve25519);
    EXPECT_EQ(to_string(*p), "aes128gcm16-aes256gcm16-prfsha256-prfsha384-ecp256-x25519");
}

TEST(IkeProposal, RejectsBadProposals) {
    EXPECT_FALSE(parse_ike_proposal("").ok());
    EXPECT_FALSE(parse_ike_proposal("aes128gcm16-prfsha256").ok());      // no DH
    EXPECT_FALSE(parse_ike_proposal("sha256-ecp256").ok());              // no encr
    EXPECT_FALSE(parse_ike_proposal("aes128-ecp256").ok());              // CBC without integ
    EXPECT_FALSE(parse_ike_proposal("aes128gcm16-sha256-ecp256").ok());  // AEAD with integ
    auto bad = parse_ike_proposal("aes128-sha1-modp2048");
    ASSERT_FALSE(bad.ok());
    EXPECT_NE(bad.error().detail().find("sha1"), std::string::npos);
    EXPECT_EQ(bad.error().domain(), ErrorDomain::Config);
}

TEST(ChildProposal, ParsesForms) {
    auto a = parse_child_proposal("aes128gcm16");
    ASSERT_TRUE(a.ok());
    EXPECT_EQ(a->ciphers, std::vector<EspCipher>{EspCipher::AesGcm16_128});
    EXPECT_EQ(a->esn, std::vector<bool>{false});
    EXPECT_TRUE(a->pfs.empty());
    EXPECT_EQ(to_string(*a), "aes128gcm16");

    auto b = parse_child_proposal("aes256gcm16-esn");
    ASSERT_TRUE(b.ok());
    EXPECT_EQ(b->ciphers, std::vector<EspCipher>{EspCipher::AesGcm16_256});
    EXPECT_EQ(b->esn, std::vector<bool>{true});
    EXPECT_EQ(to_string(*b), "aes256gcm16-esn");

    auto c = parse_child_proposal("aes128-sha256");
    ASSERT_TRUE(c.ok());
    EXPECT_EQ(c->ciphers, std::vector<EspCipher>{EspCipher::AesCbc128_HmacSha256_128});
    EXPECT_EQ(to_string(*c), "aes128-sha256");

    auto d = parse_child_proposal("aes128gcm16-ecp256");
    ASSERT_TRUE(d.ok());
    EXPECT_EQ(d->pfs, std::vector<crypto::DhGroup>{crypto::DhGroup::Ecp256});
    EXPECT_EQ(to_string(*d), "aes128gcm16-ecp256");
}

TEST(ChildProposal, RejectsBadProposals) {
    EXPECT_FALSE(parse_child_proposal("").ok());
    EXPECT_FALSE(parse_child_proposal("aes128").ok());  // CBC needs sha256
    EXPECT_FALSE(parse_child_proposal("aes128-sha384").ok());
    EXPECT_FALSE(parse_child_proposal("3des-sha256").ok());
}

TEST(Identity, ParsesTypedAndAutomaticForms) {
    auto f = Identity::parse("fqdn:0023a1b2c3d4.henb.vendor-a.example");
    ASSERT_TRUE(f.ok());
    EXPECT_EQ(f->type, x509::IdType::Fqdn);
    EXPECT_EQ(f->to_string(), "fqdn:0023a1b2c3d4.henb.vendor-a.example");

    auto v4 = Identity::parse("192.0.2.1");
    ASSERT_TRUE(v4.ok());
    EXPECT_EQ(v4->type, x509::IdType::Ipv4Addr);
    EXPECT_EQ(v4->data, (Bytes{192, 0, 2, 1}));
    EXPECT_EQ(v4->to_string(), "ipv4:192.0.2.1");

    auto v6 = Identity::parse("ipv6:2001:db8::1");
    ASSERT_TRUE(v6.ok());
    EXPECT_EQ(v6->type, x509::IdType::Ipv6Addr);
    EXPECT_EQ(v6->data.size(), 16u);
    EXPECT_EQ(v6->to_string(), "ipv6:2001:db8::1");

    auto auto_fqdn = Identity::parse("henb1.example");
    ASSERT_TRUE(auto_fqdn.ok());
    EXPECT_EQ(auto_fqdn->type, x509::IdType::Fqdn);

    auto mail = Identity::parse("ops@example.org");
    ASSERT_TRUE(mail.ok());
    EXPECT_EQ(mail->type, x509::IdType::Rfc822Addr);

    EXPECT_FALSE(Identity::parse("ipv4:2001:db8::1").ok());
    EXPECT_FALSE(Identity::parse("ipv4:300.1.1.1").ok());
    EXPECT_FALSE(Identity::parse("").ok());
}

TEST(Identity, DistinguishedNameIsDerInGivenOrder) {
    auto dn = Identity::parse("C=DE, O=Vendor A, CN=henb1");
    ASSERT_TRUE(dn.ok()) << dn.error().to_string();
    EXPECT_EQ(dn->type, x509::IdType::DerAsn1Dn);
    ASSERT_GT(dn->data.size(), 10u);
    EXPECT_EQ(dn->data[0], 0x30);  // SEQUENCE
    EXPECT_EQ(dn->to_string(), "dn:C=DE, O=Vendor A, CN=henb1");
    auto same = Identity::parse("dn:C=DE,O=Vendor A,CN=henb1");
    ASSERT_TRUE(same.ok());
    EXPECT_EQ(*same, *dn);
    EXPECT_FALSE(Identity::parse("dn:XX=1").ok());
    EXPECT_FALSE(Identity::parse("dn:novalue").ok());
}

TEST(Names, EventsAuthEndpoints) {
    EXPECT_STREQ(to_string(Event::Kind::AuthFailed), "AUTH_FAILED");
    EXPECT_STREQ(to_string(Event::Kind::ChildSaRekeyed), "CHILD_SA_REKEYED");
    EXPECT_STREQ(to_string(AuthMethod::Psk), "pre-shared key");
    EXPECT_STREQ(to_string(AuthMethod::Certificate), "certificate");
    Endpoint e{IpAddress::v4(192, 0, 2, 7), 4500};
    EXPECT_EQ(e.to_string(), "192.0.2.7:4500");
    Endpoint e6{*IpAddress::parse("2001:db8::2"), 500};
    EXPECT_EQ(e6.to_string(), "[2001:db8::2]:500");
}
