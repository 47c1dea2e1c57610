#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>
#include <ctime>
#include <filesystem>
#include <set>
#include <x2sec/pki/pki.hpp>

using namespace x2sec;
using namespace x2sec::pki;

namespace {
struct Ca {
    PkeyPtr key;
    X509Ptr cert;
};
Ca make_root(const std::string& name, KeyAlg alg = KeyAlg::EcP256) {
    Ca ca;
    ca.key = generate_key(alg).value();
    auto n = parse_name("/O=" + name + "/CN=" + name + " Root");
    IssueRequest r;
    r.profile = Profile::RootCa;
    r.subject = n->get();
    r.public_key = ca.key.get();
    r.validity_days = 3650;
    ca.cert = issue_certificate(r, nullptr, ca.key.get()).value();
    return ca;
}
bool has_flag(X509* x, uint32_t ku) {
    return (X509_get_key_usage(x) & ku) == ku;
}
std::string tmpdir() {
    auto d = std::filesystem::temp_directory_path() / ("x2sec-pki-" + std::to_string(getpid()));
    std::filesystem::create_directories(d);
    return d.string();
}
}  // namespace

TEST(PkiKeys, GeneratesAllAlgorithms) {
    for (auto [alg, type, bits] : {std::tuple{KeyAlg::EcP256, "EC", 256},
                                   {KeyAlg::EcP384, "EC", 384},
                                   {KeyAlg::Rsa2048, "RSA", 2048},
                                   {KeyAlg::Rsa3072, "RSA", 3072}}) {
        auto k = generate_key(alg);
        ASSERT_TRUE(k.ok()) << key_alg_name(alg);
        EXPECT_TRUE(EVP_PKEY_is_a(k->get(), type));
        EXPECT_EQ(EVP_PKEY_get_bits(k->get()), bits);
    }
    EXPECT_FALSE(parse_key_alg("dsa1024").ok());
    EXPECT_EQ(*parse_key_alg("P-384"), KeyAlg::EcP384);
}

TEST(PkiKeys, SavedWithMode0600AndReloads) {
    auto dir = tmpdir();
    auto k = generate_key(KeyAlg::EcP256);
    ASSERT_TRUE(k.ok());
    std::string path = dir + "/k.pem";
    ::umask(022);
    ASSERT_TRUE(save_private_key(path, k->get()).ok());
    struct stat st {};
    ASSERT_EQ(::stat(path.c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0777, 0600u);
    auto again = load_private_key(path);
    ASSERT_TRUE(again.ok());
    EXPECT_EQ(EVP_PKEY_eq(again->get(), k->get()), 1);
    // no temporary left behind
    int files = 0;
    for (auto& e : std::filesystem::directory_iterator(dir)) {
        (void)e;
        ++files;
    }
    EXPECT_EQ(files, 1);
    EXPECT_FALSE(load_private_key(dir + "/missing.pem").ok());
    std::filesystem::remove_all(dir);
}

TEST(PkiIdentity, Eui48Realm) {
    EXPECT_EQ(*make_identity("00:23:A1:B2:C3:D4", "henb.vendor-a.example"), "0023a1b2c3d4.henb.vendor-a.example");
    EXPECT_FALSE(make_identity("0023a1b2c3", "henb.example").ok());
    EXPECT_FALSE(make_identity("0023a1b2c3zz", "henb.example").ok());
    EXPECT_FALSE(make_identity("0023a1b2c3d4", "-bad.example").ok());
    EXPECT_FALSE(make_identity("0023a1b2c3d4", "nodot").ok());
    EXPECT_TRUE(is_node_identity("0023a1b2c3d4.henb.vendor-a.example"));
    EXPECT_FALSE(is_node_identity("segw1.operator.example"));
}

TEST(PkiIssue, CaAndDeviceProfiles) {
    auto root = make_root("Vendor A");
    EXPECT_TRUE(X509_check_ca(root.cert.get()));
    EXPECT_TRUE(has_flag(root.cert.get(), KU_KEY_CERT_SIGN | KU_CRL_SIGN));
    int crit = -1;
    auto* bc =
        static_cast<BASIC_CONSTRAINTS*>(X509_get_ext_d2i(root.cert.get(), NID_basic_constraints, &crit, nullptr));
    ASSERT_NE(bc, nullptr);
    EXPECT_TRUE(bc->ca);
    EXPECT_EQ(crit, 1);
    BASIC_CONSTRAINTS_free(bc);

    auto key = generate_key(KeyAlg::EcP256);
    auto id = make_identity("0023a1b2c3d4", "henb.vendor-a.example");
    auto n = parse_name("/O=Vendor A/CN=" + *id);
    IssueRequest r;
    r.profile = Profile::BaseStation;
    r.subject = n->get();
    r.public_key = key->get();
    r.dns = {*id};
    r.crl_urls = {"http://192.0.2.10/crl"};
    auto cert = issue_certificate(r, root.cert.get(), root.key.get());
    ASSERT_TRUE(cert.ok()) << cert.error().detail();
    X509* c = cert->get();
    EXPECT_TRUE(has_flag(c, KU_DIGITAL_SIGNATURE));
    EXPECT_FALSE(has_flag(c, KU_KEY_CERT_SIGN));
    ASN1_BIT_STRING* ku = static_cast<ASN1_BIT_STRING*>(X509_get_ext_d2i(c, NID_key_usage, &crit, nullptr));
    EXPECT_EQ(crit, 1);
    ASN1_BIT_STRING_free(ku);
    EXPECT_NE(X509_get0_subject_key_id(c), nullptr);
    EXPECT_NE(X509_get0_authority_key_id(c), nullptr);
    EXPECT_EQ(ASN1_OCTET_STRING_cmp(X509_get0_authority_key_id(c), X509_get0_subject_key_id(root.cert.get())), 0);
    EXPECT_GE(X509_get_ext_by_NID(c, NID_crl_distribution_points, -1), 0);
    EXPECT_EQ(san_dns(c), std::vector<std::string>{*id});
    EXPECT_EQ(node_identities(c), std::vector<std::string>{*id});
    EXPECT_EQ(serial_bytes(X509_get0_serialNumber(c)).size(), 16u);
    EXPECT_TRUE(public_keys_equal(c, key->get()));
    EXPECT_TRUE(verify_chain(c, {root.cert.get()}, {}).ok());
    // another vendor's root does not validate it
    auto other = make_root("Vendor B");
    auto v = verify_chain(c, {other.cert.get()}, {});
    ASSERT_FALSE(v.ok());
    EXPECT_EQ(v.error().code(), X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY);
    // after expiry
    auto late = verify_chain(c, {root.cert.get()}, {}, std::time(nullptr) + 2 * 365 * 86400);
    ASSERT_FALSE(late.ok());
    EXPECT_EQ(late.error().code(), X509_V_ERR_CERT_HAS_EXPIRED);
}

TEST(PkiIssue, IntermediateChainAndP384Rsa) {
    auto root = make_root("Operator", KeyAlg::EcP384);
    auto ikey = generate_key(KeyAlg::Rsa2048);
    auto iname = parse_name("/O=Operator/CN=Issuing");
    IssueRequest i;
    i.profile = Profile::IntermediateCa;
    i.subject = iname->get();
    i.public_key = ikey->get();
    auto ica = issue_certificate(i, root.cert.get(), root.key.get());
    ASSERT_TRUE(ica.ok());
    EXPECT_EQ(X509_get_signature_nid(ica->get()), NID_ecdsa_with_SHA384);
    auto k = generate_key(KeyAlg::EcP256);
    auto n = parse_name("CN=segw1,O=Operator");
    IssueRequest s;
    s.profile = Profile::Server;
    s.subject = n->get();
    s.public_key = k->get();
    s.dns = {"segw1.operator.example"};
    s.ips = {"192.0.2.1"};
    auto srv = issue_certificate(s, ica->get(), ikey->get());
    ASSERT_TRUE(srv.ok()) << srv.error().detail();
    EXPECT_EQ(X509_get_signature_nid(srv->get()), NID_sha256WithRSAEncryption);
    EXPECT_EQ(name_to_string(X509_get_subject_name(srv->get())), "CN=segw1,O=Operator");
    EXPECT_TRUE(verify_chain(srv->get(), {root.cert.get()}, {ica->get()}).ok());
    EXPECT_FALSE(verify_chain(srv->get(), {root.cert.get()}, {}).ok());
    EXPECT_TRUE(X509_get_extended_key_usage(srv->get()) & XKU_SSL_SERVER);
}

TEST(PkiIssue, RejectsWrongIssuerKeyAndBadNames) {
    auto root = make_root("A");
    auto other = make_root("B");
    auto k = generate_key(KeyAlg::EcP256);
    auto n = parse_name("/CN=x");
    IssueRequest r;
    r.subject = n->get();
    r.public_key = k->get();
    EXPECT_FALSE(issue_certificate(r, root.cert.get(), other.key.get()).ok());
    r.dns = {"bad name with spaces"};
    EXPECT_FALSE(issue_certificate(r, root.cert.get(), root.key.get()).ok());
    EXPECT_FALSE(parse_name("/nosuchattr=1").ok());
    EXPECT_FALSE(parse_name("/CN").ok());
}

TEST(PkiIssue, SerialsAreUniqueAndPositive) {
    std::set<Bytes> seen;
    for (int i = 0; i < 1000; ++i) {
        auto s = random_serial();
        ASSERT_EQ(s.size(), 16u);
        EXPECT_LT(s[0], 0x80);
        EXPECT_TRUE(seen.insert(s).second);
    }
}

TEST(PkiCrl, RevokedSerialRejectedByVerifier) {
    auto root = make_root("Op");
    auto k = generate_key(KeyAlg::EcP256);
    auto n = parse_name("/CN=node");
    IssueRequest r;
    r.subject = n->get();
    r.public_key = k->get();
    auto cert = issue_certificate(r, root.cert.get(), root.key.get());
    int64_t now = std::time(nullptr);
    auto crl = issue_crl(root.cert.get(), root.key.get(), {{serial_bytes(X509_get0_serialNumber(cert->get())), now, 1}},
                         1, now - 10, now + 3600);
    ASSERT_TRUE(crl.ok());
    EXPECT_EQ(X509_CRL_verify(crl->get(), X509_get0_pubkey(root.cert.get())), 1);
    StorePtr store(X509_STORE_new());
    X509_STORE_add_cert(store.get(), root.cert.get());
    X509_STORE_add_crl(store.get(), crl->get());
    X509_STORE_set_flags(store.get(), X509_V_FLAG_CRL_CHECK);
    std::unique_ptr<X509_STORE_CTX, OsslFree> ctx(X509_STORE_CTX_new());
    X509_STORE_CTX_init(ctx.get(), store.get(), cert->get(), nullptr);
    EXPECT_NE(X509_verify_cert(ctx.get()), 1);
    EXPECT_EQ(X509_STORE_CTX_get_error(ctx.get()), X509_V_ERR_CERT_REVOKED);
    EXPECT_FALSE(crl_der(crl->get()).empty());
}
