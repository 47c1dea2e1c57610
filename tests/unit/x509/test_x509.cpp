#include <gtest/gtest.h>
#include <openssl/x509.h>
#include <unistd.h>

#include <atomic>
#include <thread>

#include <x2sec/common/file.hpp>
#include <x2sec/crypto/crypto.hpp>
#include <x2sec/test/test_pki.hpp>
#include <x2sec/x509/x509.hpp>

using namespace x2sec;
using namespace x2sec::x509;
using crypto::KeyType;
using test::CertOptions;
using test::Issued;

namespace {

constexpr int64_t kT0 = 1'800'000'000;  // 2027-01-15: the "now" of these tests
constexpr int64_t kDay = 86400;

bool contains(const std::string& s, const std::string& part) {
    return s.find(part) != std::string::npos;
}

VerifyFailure failure_of(const Error& e) {
    return static_cast<VerifyFailure>(e.code());
}

// Two independent roots (vendor A, operator B), an intermediate under A, leaves under both.
struct Pki {
    Issued root_a =
        test::make_root("CN=Vendor A Root,O=Vendor A", KeyType::EcP256, kT0 - 400 * kDay, kT0 + 3650 * kDay);
    Issued root_b =
        test::make_root("CN=Operator Root,O=Operator", KeyType::EcP384, kT0 - 400 * kDay, kT0 + 3650 * kDay);
    Issued inter_a = test::make_cert(root_a, "CN=Vendor A HeNB CA,O=Vendor A", {}, KeyType::EcP256, kT0 - 300 * kDay,
                                     kT0 + 2000 * kDay, true);
    Issued leaf_a = test::make_cert(
        inter_a, "CN=henb1.vendor-a.example,O=Vendor A",
        {"DNS:HeNB1.Vendor-A.example", "IP:192.0.2.10", "IP:2001:db8::10", "email:ops@vendor-a.example"},
        KeyType::EcP256, kT0 - 10 * kDay, kT0 + 365 * kDay);
    Issued leaf_b =
        test::make_cert(root_b, "CN=henb2.operator.example,O=Operator", {"henb2.operator.example", "198.51.100.20"},
                        KeyType::Rsa2048, kT0 - 10 * kDay, kT0 + 365 * kDay);

    TrustStore store() const {
        TrustStore ts;
        ts.add_anchor(root_a.cert, "vendor-a");
        ts.add_anchor(root_b.cert, "operator");
        return ts;
    }
};

const Pki& pki() {
    static const Pki p;
    return p;
}

}  // namespace

TEST(Certificate, AccessorsReflectTheCertificate) {
    const auto& leaf = pki().leaf_a.cert;
    EXPECT_EQ(leaf.subject(), "O=Vendor A,CN=henb1.vendor-a.example");
    EXPECT_EQ(leaf.issuer(), "O=Vendor A,CN=Vendor A HeNB CA");
    EXPECT_EQ(leaf.san_dns(), std::vector<std::string>{"HeNB1.Vendor-A.example"});
    ASSERT_EQ(leaf.san_ip().size(), 2u);
    EXPECT_EQ(leaf.san_ip()[0].to_string(), "192.0.2.10");
    EXPECT_EQ(leaf.san_ip()[1], *IpAddress::parse("2001:db8::10"));
    EXPECT_EQ(leaf.san_email(), std::vector<std::string>{"ops@vendor-a.example"});
    EXPECT_EQ(leaf.not_before(), kT0 - 10 * kDay);
    EXPECT_EQ(leaf.not_after(), kT0 + 365 * kDay);
    EXPECT_FALSE(leaf.is_ca());
    EXPECT_FALSE(leaf.self_signed());
    EXPECT_TRUE(pki().inter_a.cert.is_ca());
    EXPECT_TRUE(pki().root_a.cert.self_signed());
    EXPECT_EQ(leaf.subject_key_id().size(), 20u);
    EXPECT_FALSE(leaf.serial().empty());
    EXPECT_EQ(leaf.serial_hex(), to_hex(leaf.serial()));
    EXPECT_EQ(EVP_PKEY_eq(leaf.public_key(), pki().leaf_a.key.public_key()), 1);
    EXPECT_TRUE(leaf.crl_distribution_points().empty());
}

TEST(Certificate, SpkiSha1IsSha1OfI2dPubkey) {
    for (const auto* c : {&pki().root_a.cert, &pki().root_b.cert, &pki().leaf_b.cert}) {
        unsigned char* der = nullptr;
        const int len = i2d_PUBKEY(X509_get0_pubkey(c->get()), &der);
        ASSERT_GT(len, 0);
        Bytes expect = crypto::digest(crypto::Hash::Sha1, BytesView(der, static_cast<size_t>(len)));
        OPENSSL_free(der);
        EXPECT_EQ(c->spki_sha1(), expect);
        EXPECT_EQ(c->spki_sha1().size(), 20u);
    }
}

TEST(Certificate, DerPemRoundTripAndFiles) {
    const auto& leaf = pki().leaf_a.cert;
    auto from_der = Certificate::from_der(leaf.der());
    ASSERT_TRUE(from_der.ok());
    EXPECT_EQ(from_der->der(), leaf.der());
    auto from_pem = Certificate::from_pem(as_bytes(leaf.pem()));
    ASSERT_TRUE(from_pem.ok());
    EXPECT_EQ(from_pem->der(), leaf.der());
    EXPECT_EQ(Certificate::from_der(leaf.der()).value().subject_der(), leaf.subject_der());

    Bytes trailing = leaf.der();
    trailing.push_back(0);
    EXPECT_FALSE(Certificate::from_der(trailing).ok());
    Bytes truncated = leaf.der();
    truncated.resize(truncated.size() / 2);
    auto bad = Certificate::from_der(truncated);
    ASSERT_FALSE(bad.ok());
    EXPECT_EQ(bad.error().domain(), ErrorDomain::Pki);
    EXPECT_FALSE(Certificate::from_pem(as_bytes("no pem here")).ok());

    char tmpl[] = "/tmp/x2sec-x509-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    const std::string dir = tmpl;
    const std::string bundle = dir + "/chain.pem";
    ASSERT_TRUE(write_file_atomic(bundle, leaf.pem() + pki().inter_a.cert.pem()).ok());
    auto chain = Certificate::load_pem_chain(bundle);
    ASSERT_TRUE(chain.ok()) << chain.error().detail();
    ASSERT_EQ(chain->size(), 2u);
    EXPECT_EQ((*chain)[1].der(), pki().inter_a.cert.der());
    ASSERT_TRUE(leaf.save_pem(dir + "/leaf.pem").ok());
    EXPECT_EQ(Certificate::load_pem_chain(dir + "/leaf.pem").value().at(0).der(), leaf.der());
    ASSERT_TRUE(write_file_atomic(dir + "/empty.pem", std::string_view("nothing")).ok());
    EXPECT_FALSE(Certificate::load_pem_chain(dir + "/empty.pem").ok());
    EXPECT_FALSE(Certificate::load_pem_chain(dir + "/missing.pem").ok());
    for (const char* f : {"/chain.pem", "/leaf.pem", "/empty.pem"}) unlink((dir + f).c_str());
    rmdir(dir.c_str());
}

TEST(TrustStore, VerifiesAgainstEitherAnchorAndNamesIt) {
    const TrustStore ts = pki().store();
    auto a = ts.verify(pki().leaf_a.cert, {pki().inter_a.cert}, kT0);
    ASSERT_TRUE(a.ok()) << a.error().to_string();
    EXPECT_EQ(a->anchor_label, "vendor-a");
    ASSERT_EQ(a->chain.size(), 3u);
    EXPECT_EQ(a->chain[0].der(), pki().leaf_a.cert.der());
    EXPECT_EQ(a->chain[1].der(), pki().inter_a.cert.der());
    EXPECT_EQ(a->anchor.der(), pki().root_a.cert.der());

    auto b = ts.verify(pki().leaf_b.cert, {}, kT0);
    ASSERT_TRUE(b.ok()) << b.error().to_string();
    EXPECT_EQ(b->anchor_label, "operator");
    EXPECT_EQ(b->chain.size(), 2u);
    EXPECT_EQ(b->anchor.der(), pki().root_b.cert.der());
}

TEST(TrustStore, UntrustedCa) {
    TrustStore only_b;
    only_b.add_anchor(pki().root_b.cert, "operator");
    auto r = only_b.verify(pki().leaf_a.cert, {pki().inter_a.cert}, kT0);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().domain(), ErrorDomain::Pki);
    EXPECT_EQ(failure_of(r.error()), VerifyFailure::UntrustedCa);
    EXPECT_TRUE(contains(r.error().detail(), "henb1.vendor-a.example")) << r.error().detail();
    // Missing intermediate: no path even though the root is trusted (no partial chains).
    auto missing = pki().store().verify(pki().leaf_a.cert, {}, kT0);
    ASSERT_FALSE(missing.ok());
    EXPECT_EQ(failure_of(missing.error()), VerifyFailure::UntrustedCa);
    // An intermediate configured as the only anchor is not enough either.
    TrustStore inter_only;
    inter_only.add_anchor(pki().inter_a.cert, "inter");
    auto partial = inter_only.verify(pki().leaf_a.cert, {}, kT0);
    ASSERT_FALSE(partial.ok());
    EXPECT_EQ(failure_of(partial.error()), VerifyFailure::UntrustedCa);
    // Empty store.
    auto none = TrustStore{}.verify(pki().leaf_b.cert, {}, kT0);
    ASSERT_FALSE(none.ok());
    EXPECT_EQ(failure_of(none.error()), VerifyFailure::UntrustedCa);
    // A self-signed leaf.
    CertOptions o;
    o.subject = "CN=selfie";
    auto self = test::make_self_signed(o);
    auto s = pki().store().verify(self.cert, {}, kT0);
    ASSERT_FALSE(s.ok());
    EXPECT_EQ(failure_of(s.error()), VerifyFailure::UntrustedCa);
}

TEST(TrustStore, ExpiredAndNotYetValid) {
    const TrustStore ts = pki().store();
    auto expired = ts.verify(pki().leaf_b.cert, {}, kT0 + 366 * kDay);
    ASSERT_FALSE(expired.ok());
    EXPECT_EQ(failure_of(expired.error()), VerifyFailure::Expired);
    EXPECT_TRUE(contains(expired.error().detail(), "henb2.operator.example")) << expired.error().detail();
    auto early = ts.verify(pki().leaf_b.cert, {}, kT0 - 11 * kDay);
    ASSERT_FALSE(early.ok());
    EXPECT_EQ(failure_of(early.error()), VerifyFailure::NotYetValid);
    // An expired leaf minted as such.
    auto old = test::make_cert(pki().root_b, "CN=old.operator.example", {"old.operator.example"}, KeyType::EcP256,
                               kT0 - 100 * kDay, kT0 - kDay);
    auto r = ts.verify(old.cert, {}, kT0);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(failure_of(r.error()), VerifyFailure::Expired);
    // The intermediate outside its validity: expired chain, detail names the intermediate.
    auto r2 = ts.verify(pki().leaf_a.cert, {pki().inter_a.cert}, kT0 + 2001 * kDay);
    ASSERT_FALSE(r2.ok());
    EXPECT_EQ(failure_of(r2.error()), VerifyFailure::Expired);
}

TEST(TrustStore, BadSignature) {
    // Same issuer name and key identifier as root B, but signed by another key.
    CertOptions forged_root;
    forged_root.subject = "CN=Operator Root,O=Operator";
    forged_root.is_ca = true;
    forged_root.key_type = KeyType::EcP384;
    forged_root.not_before = kT0 - kDay;
    forged_root.not_after = kT0 + 100 * kDay;
    auto impostor = test::make_self_signed(forged_root);
    CertOptions lo;
    lo.subject = "CN=forged.operator.example";
    lo.sans = {"forged.operator.example"};
    lo.not_before = kT0 - kDay;
    lo.not_after = kT0 + 100 * kDay;
    auto forged = test::make_cert(pki().root_b.cert, impostor.key, lo);
    auto r = pki().store().verify(forged.cert, {}, kT0);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(failure_of(r.error()), VerifyFailure::BadSignature) << r.error().detail();
    EXPECT_TRUE(contains(r.error().detail(), "forged.operator.example"));
}

TEST(TrustStore, CrlRevocationAndAvailability) {
    auto revoked = test::make_cert(pki().root_b, "CN=stolen.operator.example", {"stolen.operator.example"},
                                   KeyType::EcP256, kT0 - 10 * kDay, kT0 + 100 * kDay);
    auto crl_b = test::make_crl(pki().root_b, {revoked.cert}, kT0 - kDay, kT0 + 7 * kDay);
    EXPECT_EQ(crl_b.issuer(), pki().root_b.cert.subject());
    EXPECT_EQ(crl_b.next_update(), kT0 + 7 * kDay);
    auto crl_a = test::make_crl(pki().root_a, {}, kT0 - kDay, kT0 + 7 * kDay);
    auto crl_inter = test::make_crl(pki().inter_a, {}, kT0 - kDay, kT0 + 7 * kDay);

    TrustStore ts = pki().store();
    ts.add_crl(crl_b);
    ts.set_crl_check(true);
    auto r = ts.verify(revoked.cert, {}, kT0);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(failure_of(r.error()), VerifyFailure::Revoked);
    EXPECT_TRUE(contains(r.error().detail(), "stolen.operator.example"));
    EXPECT_TRUE(ts.verify(pki().leaf_b.cert, {}, kT0).ok());

    // Vendor A chain: no CRL for the intermediate's issuer or the leaf's issuer -> unavailable.
    auto no_crl = ts.verify(pki().leaf_a.cert, {pki().inter_a.cert}, kT0);
    ASSERT_FALSE(no_crl.ok());
    EXPECT_EQ(failure_of(no_crl.error()), VerifyFailure::CrlUnavailable);
    ts.add_crl(crl_a);
    ts.add_crl(crl_inter);
    EXPECT_TRUE(ts.verify(pki().leaf_a.cert, {pki().inter_a.cert}, kT0).ok());

    // A CRL past its nextUpdate does not count.
    auto stale = ts.verify(pki().leaf_b.cert, {}, kT0 + 8 * kDay);
    ASSERT_FALSE(stale.ok());
    EXPECT_EQ(failure_of(stale.error()), VerifyFailure::CrlUnavailable);

    // Without CRL checking the revoked certificate passes (CRLs are not consulted).
    TrustStore lax = pki().store();
    lax.add_crl(crl_b);
    EXPECT_TRUE(lax.verify(revoked.cert, {}, kT0).ok());
}

// The X509_STORE is built once per change, not per verify(): changes made after a first
// verify() must still be seen, and copies must not share later changes.
TEST(TrustStore, AnchorAddedAfterFirstVerifyIsSeen) {
    TrustStore ts;
    ts.add_anchor(pki().root_b.cert, "operator");
    ASSERT_TRUE(ts.verify(pki().leaf_b.cert, {}, kT0).ok());
    auto before = ts.verify(pki().leaf_a.cert, {pki().inter_a.cert}, kT0);
    ASSERT_FALSE(before.ok());
    EXPECT_EQ(failure_of(before.error()), VerifyFailure::UntrustedCa);

    const TrustStore snapshot = ts;  // copy taken before the new anchor
    ts.add_anchor(pki().root_a.cert, "vendor-a");
    auto after = ts.verify(pki().leaf_a.cert, {pki().inter_a.cert}, kT0);
    ASSERT_TRUE(after.ok()) << after.error().to_string();
    EXPECT_EQ(after->anchor_label, "vendor-a");
    EXPECT_TRUE(ts.verify(pki().leaf_b.cert, {}, kT0).ok());
    auto old = snapshot.verify(pki().leaf_a.cert, {pki().inter_a.cert}, kT0);
    ASSERT_FALSE(old.ok());
    EXPECT_EQ(failure_of(old.error()), VerifyFailure::UntrustedCa);
}

TEST(TrustStore, CrlChangesAfterFirstVerifyTakeEffect) {
    auto victim = test::make_cert(pki().root_b, "CN=later-revoked.operator.example", {"later-revoked.operator.example"},
                                  KeyType::EcP256, kT0 - 10 * kDay, kT0 + 100 * kDay);
    auto revoking_crl = test::make_crl(pki().root_b, {victim.cert}, kT0 - kDay, kT0 + 7 * kDay);

    TrustStore ts;
    ts.add_anchor(pki().root_b.cert, "operator");
    // No CRL checking yet: passes.  Switching it on afterwards: no CRL -> unavailable.
    ASSERT_TRUE(ts.verify(victim.cert, {}, kT0).ok());
    ts.set_crl_check(true);
    auto missing = ts.verify(victim.cert, {}, kT0);
    ASSERT_FALSE(missing.ok());
    EXPECT_EQ(failure_of(missing.error()), VerifyFailure::CrlUnavailable);
    // A CRL added after verify() is consulted: it revokes the victim and clears another leaf.
    ts.add_crl(revoking_crl);
    auto revoked = ts.verify(victim.cert, {}, kT0);
    ASSERT_FALSE(revoked.ok());
    EXPECT_EQ(failure_of(revoked.error()), VerifyFailure::Revoked);
    auto other = ts.verify(pki().leaf_b.cert, {}, kT0);
    EXPECT_TRUE(other.ok()) << other.error().to_string();
    // And switching checking off again takes effect too.
    ts.set_crl_check(false);
    EXPECT_TRUE(ts.verify(victim.cert, {}, kT0).ok());
}

TEST(TrustStore, CrlFilesRoundTrip) {
    auto crl = test::make_crl(pki().root_b, {pki().leaf_b.cert}, kT0 - kDay, kT0 + kDay);
    char tmpl[] = "/tmp/x2sec-crl-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    const std::string dir = tmpl;
    ASSERT_TRUE(write_file_atomic(dir + "/c.pem", crl.pem()).ok());
    ASSERT_TRUE(write_file_atomic(dir + "/c.der", BytesView(crl.der())).ok());
    auto p = Crl::load(dir + "/c.pem");
    auto d = Crl::load(dir + "/c.der");
    ASSERT_TRUE(p.ok()) << p.error().detail();
    ASSERT_TRUE(d.ok()) << d.error().detail();
    EXPECT_EQ(p->der(), crl.der());
    EXPECT_EQ(d->der(), crl.der());
    ASSERT_TRUE(write_file_atomic(dir + "/bad.der", std::string_view("\x30\x03\x02\x01")).ok());
    EXPECT_FALSE(Crl::load(dir + "/bad.der").ok());
    for (const char* f : {"/c.pem", "/c.der", "/bad.der"}) unlink((dir + f).c_str());
    rmdir(dir.c_str());
}

TEST(TrustStore, LeafKeyUsageMustAllowDigitalSignature) {
    CertOptions o;
    o.subject = "CN=enc-only.operator.example";
    o.sans = {"enc-only.operator.example"};
    o.key_usage = "critical,keyEncipherment";
    o.not_before = kT0 - kDay;
    o.not_after = kT0 + 100 * kDay;
    auto enc_only = test::make_cert(pki().root_b, o);
    auto r = pki().store().verify(enc_only.cert, {}, kT0);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(failure_of(r.error()), VerifyFailure::BadUsage);
    EXPECT_TRUE(contains(r.error().detail(), "digitalSignature"));
    // No keyUsage extension at all: acceptable.
    o.subject = "CN=no-ku.operator.example";
    o.key_usage = "none";
    auto no_ku = test::make_cert(pki().root_b, o);
    EXPECT_TRUE(pki().store().verify(no_ku.cert, {}, kT0).ok());
}

TEST(TrustStore, AnchorHashesForCertreq) {
    const TrustStore ts = pki().store();
    auto hashes = ts.anchor_spki_sha1s();
    ASSERT_EQ(hashes.size(), 2u);
    EXPECT_EQ(hashes[0], pki().root_a.cert.spki_sha1());
    auto found = ts.anchor_by_spki_sha1(pki().root_b.cert.spki_sha1());
    ASSERT_TRUE(found.has_value());
    EXPECT_EQ(found->der(), pki().root_b.cert.der());
    EXPECT_FALSE(ts.anchor_by_spki_sha1(pki().leaf_b.cert.spki_sha1()).has_value());
    EXPECT_FALSE(ts.empty());
    EXPECT_EQ(ts.anchors().size(), 2u);
    EXPECT_TRUE(TrustStore{}.empty());
    // The same anchor under a second label: still one hash per distinct key, lookups unchanged.
    TrustStore twice = ts;
    twice.add_anchor(pki().root_a.cert, "root-a-again");
    EXPECT_EQ(twice.anchor_spki_sha1s(), hashes);
    EXPECT_EQ(twice.anchor_by_spki_sha1(hashes[1])->der(), pki().root_b.cert.der());
    EXPECT_TRUE(TrustStore{}.anchor_spki_sha1s().empty());
}

TEST(Identity, FqdnIsCaseInsensitive) {
    const auto& leaf = pki().leaf_a.cert;
    EXPECT_TRUE(match_identity(leaf, IdType::Fqdn, as_bytes("henb1.vendor-a.example")).ok());
    EXPECT_TRUE(match_identity(leaf, IdType::Fqdn, as_bytes("HENB1.VENDOR-A.EXAMPLE")).ok());
    auto r = match_identity(leaf, IdType::Fqdn, as_bytes("henb9.vendor-a.example"));
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().domain(), ErrorDomain::Pki);
    EXPECT_EQ(failure_of(r.error()), VerifyFailure::IdMismatch);
    EXPECT_TRUE(contains(r.error().detail(), "henb9.vendor-a.example"));
    EXPECT_TRUE(contains(r.error().detail(), "DNS:HeNB1.Vendor-A.example"));
    // The subject CN is not a SAN: not accepted as an FQDN.
    EXPECT_FALSE(match_identity(pki().inter_a.cert, IdType::Fqdn, as_bytes("Vendor A HeNB CA")).ok());
    EXPECT_FALSE(match_identity(leaf, IdType::Fqdn, {}).ok());
}

TEST(Identity, Ipv4AndIpv6) {
    const auto& leaf = pki().leaf_a.cert;
    EXPECT_TRUE(match_identity(leaf, IdType::Ipv4Addr, hex("c000020a")).ok());
    EXPECT_TRUE(match_identity(leaf, IdType::Ipv6Addr, IpAddress::parse("2001:db8::10")->view()).ok());
    auto v4 = match_identity(leaf, IdType::Ipv4Addr, hex("c000020b"));
    ASSERT_FALSE(v4.ok());
    EXPECT_EQ(failure_of(v4.error()), VerifyFailure::IdMismatch);
    EXPECT_TRUE(contains(v4.error().detail(), "192.0.2.11")) << v4.error().detail();
    EXPECT_FALSE(match_identity(leaf, IdType::Ipv6Addr, IpAddress::parse("2001:db8::11")->view()).ok());
    EXPECT_FALSE(match_identity(leaf, IdType::Ipv4Addr, hex("c00002")).ok());    // wrong length
    EXPECT_FALSE(match_identity(leaf, IdType::Ipv6Addr, hex("c000020a")).ok());  // v4 bytes as v6
    EXPECT_TRUE(match_identity(pki().leaf_b.cert, IdType::Ipv4Addr, hex("c6336414")).ok());
}

TEST(Identity, DerDnAndEmail) {
    const auto& leaf = pki().leaf_a.cert;
    EXPECT_TRUE(match_identity(leaf, IdType::DerAsn1Dn, leaf.subject_der()).ok());
    EXPECT_TRUE(match_identity(leaf, IdType::DerAsn1Dn, test::name_der("CN=henb1.vendor-a.example,O=Vendor A")).ok());
    auto r = match_identity(leaf, IdType::DerAsn1Dn, test::name_der("CN=henb2.vendor-a.example,O=Vendor A"));
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(failure_of(r.error()), VerifyFailure::IdMismatch);
    EXPECT_TRUE(contains(r.error().detail(), "henb2.vendor-a.example")) << r.error().detail();
    EXPECT_FALSE(match_identity(leaf, IdType::DerAsn1Dn, hex("3003")).ok());
    EXPECT_TRUE(match_identity(leaf, IdType::Rfc822Addr, as_bytes("ops@vendor-a.example")).ok());
    EXPECT_FALSE(match_identity(leaf, IdType::Rfc822Addr, as_bytes("root@vendor-a.example")).ok());
    EXPECT_FALSE(match_identity(leaf, IdType::KeyId, as_bytes("abc")).ok());
}

TEST(VerifyFailure, Names) {
    EXPECT_STREQ(to_string(VerifyFailure::UntrustedCa), "untrusted CA");
    EXPECT_STREQ(to_string(VerifyFailure::IdMismatch), "ID/SAN mismatch");
    EXPECT_STREQ(to_string(VerifyFailure::Revoked), "revoked");
}

// ---------------------------------------------------------------- CertificateCache

namespace {

std::vector<Issued> cache_certs(size_t n) {
    std::vector<Issued> out;
    for (size_t i = 0; i < n; ++i)
        out.push_back(test::make_cert(pki().root_b, "CN=c" + std::to_string(i) + ".operator.example",
                                      {"c" + std::to_string(i) + ".operator.example"}, KeyType::EcP256, kT0 - 10 * kDay,
                                      kT0 + 100 * kDay));
    return out;
}

}  // namespace

TEST(CertificateCache, HitSharesTheParsedCertificate) {
    CertificateCache cache(8);
    const Bytes der = pki().leaf_a.cert.der();
    auto a = cache.parse(der);
    auto b = cache.parse(der);
    ASSERT_TRUE(a.ok() && b.ok());
    EXPECT_EQ(a->get(), b->get());  // one X509, parsed once
    EXPECT_EQ(b->der(), der);
    EXPECT_EQ(b->subject(), pki().leaf_a.cert.subject());
    EXPECT_EQ(cache.hits(), 1u);
    EXPECT_EQ(cache.misses(), 1u);
    EXPECT_EQ(cache.size(), 1u);
    cache.clear();
    EXPECT_EQ(cache.size(), 0u);
    auto c = cache.parse(der);
    ASSERT_TRUE(c.ok());
    EXPECT_NE(c->get(), a->get());
    EXPECT_EQ(cache.misses(), 2u);
}

// A re-issued certificate (same subject and key usage, new serial and validity) is different
// DER and must never be answered with the old one.
TEST(CertificateCache, ChangedCertificateIsNotServedStale) {
    CertificateCache cache(8);
    auto v1 = test::make_cert(pki().root_b, "CN=reissued.operator.example", {"reissued.operator.example"},
                              KeyType::EcP256, kT0 - 10 * kDay, kT0 + 10 * kDay);
    auto v2 = test::make_cert(pki().root_b, "CN=reissued.operator.example", {"reissued.operator.example"},
                              KeyType::EcP256, kT0 - kDay, kT0 + 400 * kDay);
    auto a = cache.parse(v1.cert.der());
    auto b = cache.parse(v2.cert.der());
    ASSERT_TRUE(a.ok() && b.ok());
    EXPECT_EQ(a->der(), v1.cert.der());
    EXPECT_EQ(b->der(), v2.cert.der());
    EXPECT_EQ(b->not_after(), kT0 + 400 * kDay);
    EXPECT_EQ(EVP_PKEY_eq(b->public_key(), v2.cert.public_key()), 1);
    EXPECT_EQ(cache.hits(), 0u);
}

TEST(CertificateCache, BoundedLeastRecentlyUsedEviction) {
    const auto certs = cache_certs(5);
    CertificateCache cache(3);
    EXPECT_EQ(cache.capacity(), 3u);
    for (size_t i = 0; i < 3; ++i) ASSERT_TRUE(cache.parse(certs[i].cert.der()).ok());
    ASSERT_TRUE(cache.parse(certs[0].cert.der()).ok());  // 0 is now the most recent
    EXPECT_EQ(cache.hits(), 1u);
    ASSERT_TRUE(cache.parse(certs[3].cert.der()).ok());  // evicts 1 (least recent)
    ASSERT_TRUE(cache.parse(certs[4].cert.der()).ok());  // evicts 2
    EXPECT_EQ(cache.size(), 3u);
    const uint64_t misses = cache.misses();
    ASSERT_TRUE(cache.parse(certs[0].cert.der()).ok());
    EXPECT_EQ(cache.misses(), misses);  // 0 stayed
    ASSERT_TRUE(cache.parse(certs[1].cert.der()).ok());
    EXPECT_EQ(cache.misses(), misses + 1);  // 1 was evicted
    EXPECT_EQ(cache.size(), 3u);
    // A cycle longer than the capacity never hits (what the benchmark's cold row relies on).
    CertificateCache small(3);
    for (int round = 0; round < 3; ++round)
        for (const auto& c : certs) ASSERT_TRUE(small.parse(c.cert.der()).ok());
    EXPECT_EQ(small.hits(), 0u);
    EXPECT_EQ(small.misses(), 15u);
}

TEST(CertificateCache, FailuresAreNotCachedAndErrorsMatchFromDer) {
    CertificateCache cache(4);
    Bytes der = pki().leaf_a.cert.der();
    der.push_back(0);  // trailing octet
    auto r = cache.parse(der);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().detail(), Certificate::from_der(der).error().detail());
    EXPECT_FALSE(cache.parse(as_bytes("garbage")).ok());
    EXPECT_EQ(cache.size(), 0u);
}

// Only parsing is cached: validity, revocation, chain and identity are checked on every use,
// so a CRL added after the certificate was cached takes effect at once.
TEST(CertificateCache, EveryCheckStillRunsOnACachedCertificate) {
    CertificateCache cache(4);
    auto leaf = test::make_cert(pki().root_b, "CN=cached.operator.example", {"cached.operator.example"},
                                KeyType::EcP256, kT0 - 10 * kDay, kT0 + 100 * kDay);
    const Bytes der = leaf.cert.der();
    TrustStore ts = pki().store();
    ts.set_crl_check(true);
    ts.add_crl(test::make_crl(pki().root_b, {}, kT0 - kDay, kT0 + 7 * kDay));
    auto c1 = cache.parse(der);
    ASSERT_TRUE(c1.ok());
    ASSERT_TRUE(ts.verify(*c1, {}, kT0).ok());
    EXPECT_TRUE(match_identity(*c1, IdType::Fqdn, as_bytes("cached.operator.example")).ok());

    auto c2 = cache.parse(der);  // a hit
    ASSERT_TRUE(c2.ok());
    EXPECT_EQ(cache.hits(), 1u);
    EXPECT_FALSE(match_identity(*c2, IdType::Fqdn, as_bytes("other.operator.example")).ok());
    EXPECT_EQ(failure_of(pki().store().verify(*c2, {}, kT0 + 101 * kDay).error()), VerifyFailure::Expired);
    EXPECT_EQ(failure_of(ts.verify(*c2, {}, kT0 + 8 * kDay).error()), VerifyFailure::CrlUnavailable);  // stale CRL
    TrustStore other_root;
    other_root.add_anchor(pki().root_a.cert, "vendor-a");
    EXPECT_EQ(failure_of(other_root.verify(*c2, {}, kT0).error()), VerifyFailure::UntrustedCa);

    TrustStore revoking = pki().store();
    revoking.set_crl_check(true);
    revoking.add_crl(test::make_crl(pki().root_b, {leaf.cert}, kT0 - kDay, kT0 + 7 * kDay));
    auto c3 = cache.parse(der);
    ASSERT_TRUE(c3.ok());
    EXPECT_EQ(cache.hits(), 2u);
    auto r = revoking.verify(*c3, {}, kT0);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(failure_of(r.error()), VerifyFailure::Revoked);
}

TEST(CertificateCache, ConcurrentUseIsSafeAndBounded) {
    const auto certs = cache_certs(10);
    std::vector<Bytes> ders;
    for (const auto& c : certs) ders.push_back(c.cert.der());
    CertificateCache cache(4);
    const TrustStore ts = pki().store();
    std::atomic<int> wrong{0};
    std::vector<std::thread> threads;
    constexpr int kThreads = 6, kIters = 120;
    for (int t = 0; t < kThreads; ++t)
        threads.emplace_back([&, t] {
            for (int i = 0; i < kIters; ++i) {
                const size_t k = static_cast<size_t>((i * 7 + t * 3) % 10);
                auto c = cache.parse(ders[k]);
                if (!c.ok() || c->der() != ders[k]) {
                    ++wrong;
                    continue;
                }
                if (i % 10 == 0 && !ts.verify(*c, {}, kT0).ok()) ++wrong;  // shared X509s verified concurrently
            }
        });
    for (auto& th : threads) th.join();
    EXPECT_EQ(wrong.load(), 0);
    EXPECT_LE(cache.size(), 4u);
    EXPECT_EQ(cache.hits() + cache.misses(), static_cast<uint64_t>(kThreads * kIters));
}

TEST(CertificateCache, SharedInstance) {
    EXPECT_EQ(&CertificateCache::shared(), &CertificateCache::shared());
    EXPECT_EQ(CertificateCache::shared().capacity(), 1024u);
}

// ---------------------------------------------------------------- from_der without decoders

namespace {

// OpenSSL's own parse of the DER, in the default library context: what from_der must match.
struct X509Free {
    void operator()(X509* x) const { X509_free(x); }
};
std::unique_ptr<X509, X509Free> reference_parse(const Bytes& der) {
    const unsigned char* p = der.data();
    return std::unique_ptr<X509, X509Free>(d2i_X509(nullptr, &p, static_cast<long>(der.size())));
}

struct PkeyFree {
    void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};

// A certificate under root_a for a key made by the caller (compressed points, other curves).
Issued leaf_for_key(EVP_PKEY* key, const std::string& cn) {
    CertOptions o;
    o.subject = "CN=" + cn + ",O=Vendor A";
    o.sans = {"DNS:" + cn};
    o.not_before = kT0 - 10 * kDay;
    o.not_after = kT0 + 365 * kDay;
    o.subject_key = key;
    return test::make_cert(pki().root_a, o);
}

// from_der of `der` must take the path named (fast = no decoder set-up) and give a certificate
// that encodes, names and keys exactly like OpenSSL's ordinary parse.
void expect_parse_like_openssl(const Bytes& der, bool fast) {
    const ParseCounters before = parse_counters();
    auto c = Certificate::from_der(der);
    ASSERT_TRUE(c.ok()) << c.error().detail();
    const ParseCounters after = parse_counters();
    EXPECT_EQ(after.fast - before.fast, fast ? 1u : 0u);
    EXPECT_EQ(after.fallback - before.fallback, fast ? 0u : 1u);
    auto ref = reference_parse(der);
    ASSERT_TRUE(ref);
    EXPECT_EQ(c->der(), der);
    EXPECT_EQ(X509_cmp(c->get(), ref.get()), 0);
    ASSERT_NE(c->public_key(), nullptr);
    ASSERT_NE(X509_get0_pubkey(c->get()), nullptr);  // OpenSSL's chain code reads the leaf key
    EXPECT_EQ(EVP_PKEY_eq(c->public_key(), X509_get0_pubkey(ref.get())), 1);
    EXPECT_EQ(EVP_PKEY_eq(X509_get0_pubkey(c->get()), X509_get0_pubkey(ref.get())), 1);
    EXPECT_EQ(c->spki_sha1(), Certificate::adopt(X509_dup(ref.get())).spki_sha1());
}

}  // namespace

TEST(FromDer, EndEntityEcAndRsaSkipTheDecoderAndMatchOpenSsl) {
    expect_parse_like_openssl(pki().leaf_a.cert.der(), true);  // P-256, under an intermediate
    expect_parse_like_openssl(pki().leaf_b.cert.der(), true);  // RSA 2048
    auto p384 = test::make_cert(pki().root_b, "CN=p384.operator.example", {"p384.operator.example"}, KeyType::EcP384,
                                kT0 - kDay, kT0 + 30 * kDay);
    expect_parse_like_openssl(p384.cert.der(), true);
}

TEST(FromDer, CaCertificatesAndOtherKeysTakeTheOrdinaryPath) {
    expect_parse_like_openssl(pki().root_a.cert.der(), false);  // CA: its key verifies others
    expect_parse_like_openssl(pki().inter_a.cert.der(), false);
    auto ed = test::make_cert(pki().root_a, "CN=ed.vendor-a.example", {"ed.vendor-a.example"}, KeyType::Ed25519,
                              kT0 - kDay, kT0 + 30 * kDay);
    expect_parse_like_openssl(ed.cert.der(), false);
    std::unique_ptr<EVP_PKEY, PkeyFree> p521(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-521"));
    ASSERT_TRUE(p521);
    expect_parse_like_openssl(leaf_for_key(p521.get(), "p521.vendor-a.example").cert.der(), false);
    std::unique_ptr<EVP_PKEY, PkeyFree> comp(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256"));
    ASSERT_TRUE(comp);
    ASSERT_EQ(EVP_PKEY_set_utf8_string_param(comp.get(), "point-format", "compressed"), 1);
    Issued compressed = leaf_for_key(comp.get(), "compressed.vendor-a.example");
    const Bytes der = compressed.cert.der();
    expect_parse_like_openssl(der, false);
    // ... and it still verifies: the ordinary path is a complete one.
    auto c = Certificate::from_der(der);
    ASSERT_TRUE(c.ok());
    EXPECT_TRUE(pki().store().verify(*c, {}, kT0).ok());
}

// Whatever path parsed them, certificates verify, sign-check and fail exactly as before.
TEST(FromDer, FastParsedCertificatesVerifyAndSignaturesCheck) {
    auto leaf = Certificate::from_der(pki().leaf_a.cert.der());
    auto inter = Certificate::from_der(pki().inter_a.cert.der());
    ASSERT_TRUE(leaf.ok() && inter.ok());
    auto chain = pki().store().verify(*leaf, {*inter}, kT0);
    ASSERT_TRUE(chain.ok()) << chain.error().detail();
    EXPECT_EQ(chain->anchor_label, "vendor-a");
    EXPECT_TRUE(match_identity(*leaf, IdType::Fqdn, to_bytes("henb1.vendor-a.example")).ok());
    const Bytes msg = to_bytes("IKE_AUTH octets");
    for (const Issued* who : {&pki().leaf_a, &pki().leaf_b}) {
        auto c = Certificate::from_der(who->cert.der());
        ASSERT_TRUE(c.ok());
        const auto scheme = crypto::default_sig_scheme(c->public_key());
        auto sig = who->key.sign(scheme, msg);
        ASSERT_TRUE(sig.ok());
        EXPECT_TRUE(crypto::verify_signature(c->public_key(), scheme, msg, *sig).ok());
        Bytes bad = msg;
        bad[0] ^= 1;
        EXPECT_FALSE(crypto::verify_signature(c->public_key(), scheme, bad, *sig).ok());
    }
    // A leaf whose certificate signature is damaged still parses, and is refused by the chain check.
    Bytes der = pki().leaf_a.cert.der();
    der[der.size() - 5] ^= 0x01;
    auto damaged = Certificate::from_der(der);
    ASSERT_TRUE(damaged.ok());
    auto v = pki().store().verify(*damaged, {*inter}, kT0);
    ASSERT_FALSE(v.ok());
    EXPECT_EQ(failure_of(v.error()), VerifyFailure::BadSignature) << v.error().detail();
}

// Bad input never takes a shortcut: a point off the curve, a non-minimal (BER) length, trailing
// octets and truncation all end on the ordinary path with its answer.
TEST(FromDer, BadOrUnusualEncodingsFallBack) {
    const Bytes good = pki().leaf_a.cert.der();
    // The outer Certificate SEQUENCE length in a non-minimal long form: BER, not DER.
    ASSERT_EQ(good[0], 0x30);
    ASSERT_EQ(good[1], 0x82);
    Bytes ber = {0x30, 0x83, 0x00, good[2], good[3]};
    ber.insert(ber.end(), good.begin() + 4, good.end());
    ParseCounters before = parse_counters();
    auto c = Certificate::from_der(ber);
    ParseCounters after = parse_counters();
    EXPECT_EQ(after.fast, before.fast);
    ASSERT_TRUE(c.ok()) << c.error().detail();  // OpenSSL accepts BER lengths
    EXPECT_EQ(after.fallback, before.fallback + 1);
    {  // the signature is over the unchanged TBS
        auto inter = Certificate::from_der(pki().inter_a.cert.der());
        ASSERT_TRUE(inter.ok());
        EXPECT_TRUE(pki().store().verify(*c, {*inter}, kT0).ok());
    }
    // Trailing octets and truncation: the ordinary errors.
    Bytes trailing = good;
    trailing.push_back(0);
    auto t = Certificate::from_der(trailing);
    ASSERT_FALSE(t.ok());
    EXPECT_TRUE(contains(t.error().detail(), "trailing")) << t.error().detail();
    auto cut = Certificate::from_der(BytesView(good).first(good.size() / 2));
    ASSERT_FALSE(cut.ok());
    EXPECT_TRUE(contains(cut.error().detail(), "malformed")) << cut.error().detail();
    // The public point moved off the curve: the key does not decode on either path.
    Bytes off = good;
    const Bytes point = [&] {
        const unsigned char* pk = nullptr;
        int len = 0;
        X509_PUBKEY_get0_param(nullptr, &pk, &len, nullptr, X509_get_X509_PUBKEY(pki().leaf_a.cert.get()));
        return Bytes(pk, pk + len);
    }();
    auto at = std::search(off.begin(), off.end(), point.begin(), point.end());
    ASSERT_NE(at, off.end());
    at[point.size() - 1] ^= 0x01;  // last octet of y
    before = parse_counters();
    auto o = Certificate::from_der(off);
    after = parse_counters();
    EXPECT_EQ(after.fast, before.fast);
    ASSERT_TRUE(o.ok()) << o.error().detail();  // OpenSSL parses it with no key
    {
        EXPECT_EQ(X509_get0_pubkey(o->get()), nullptr);
        auto inter = Certificate::from_der(pki().inter_a.cert.der());
        ASSERT_TRUE(inter.ok());
        EXPECT_FALSE(pki().store().verify(*o, {*inter}, kT0).ok());
    }
}
