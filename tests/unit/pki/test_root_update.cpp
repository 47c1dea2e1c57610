// Root CA key update (`x2sec pki root-update`): the new root and the link certificates in
// <ca-dir>/root-update/ (signatures, extensions, validity, chains built both ways through
// X509_verify_cert, key file 0600, nothing half-written), and --activate on an intermediate CA.
#include <gtest/gtest.h>
#include <openssl/x509v3.h>
#include <csignal>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>
#include <ctime>
#include <filesystem>
#include <set>
#include <x2sec/pki/root_update.hpp>

using namespace x2sec;
using namespace x2sec::pki;
namespace fs = std::filesystem;

namespace {

const int64_t kNow = static_cast<int64_t>(std::time(nullptr));

X509Ptr issue(Profile p, const std::string& subject, EVP_PKEY* key, X509* issuer, EVP_PKEY* issuer_key, int64_t days) {
    auto n = parse_name(subject);
    IssueRequest r;
    r.profile = p;
    r.subject = n->get();
    r.public_key = key;
    r.validity_days = days;
    if (p == Profile::IntermediateCa) r.crl_urls = {"http://127.0.0.1:1/crl"};
    return issue_certificate(r, issuer, issuer_key).value();
}

// A CA directory as `x2sec pki init-operator-ca [--intermediate]` writes it.
struct CaDir {
    std::string dir;
    PkeyPtr root_key, ica_key;
    X509Ptr root, ica, ee;  // ee: an end-entity certificate the issuing CA issued before the update

    explicit CaDir(bool intermediate) {
        dir = (fs::temp_directory_path() / ("x2sec-rootupd-" + std::to_string(getpid()) + "-" +
                                            ::testing::UnitTest::GetInstance()->current_test_info()->name()))
                  .string();
        fs::remove_all(dir);
        fs::create_directories(dir);
        root_key = generate_key(KeyAlg::EcP256).value();
        root = issue(Profile::RootCa, "/O=Operator/CN=Operator Root CA", root_key.get(), nullptr, root_key.get(), 3650);
        EXPECT_TRUE(save_certs_pem(dir + "/root.crt", {root.get()}).ok());
        auto ra_key = generate_key(KeyAlg::EcP256).value();
        if (intermediate) {
            EXPECT_TRUE(save_private_key(dir + "/root.key", root_key.get()).ok());
            ica_key = generate_key(KeyAlg::EcP256).value();
            ica = issue(Profile::IntermediateCa, "/O=Operator/CN=Operator Issuing CA", ica_key.get(), root.get(),
                        root_key.get(), 1825);
            EXPECT_TRUE(save_private_key(dir + "/ca.key", ica_key.get()).ok());
            EXPECT_TRUE(save_certs_pem(dir + "/ca.crt", {ica.get()}).ok());
            EXPECT_TRUE(save_certs_pem(dir + "/chain.pem", {ica.get(), root.get()}).ok());
        } else {
            EXPECT_TRUE(save_private_key(dir + "/ca.key", root_key.get()).ok());
            EXPECT_TRUE(save_certs_pem(dir + "/ca.crt", {root.get()}).ok());
            EXPECT_TRUE(save_certs_pem(dir + "/chain.pem", {root.get()}).ok());
        }
        X509* iss = intermediate ? ica.get() : root.get();
        EVP_PKEY* iss_key = intermediate ? ica_key.get() : root_key.get();
        auto ra = issue(Profile::Server, "/O=Operator/CN=Operator CMP RA", ra_key.get(), iss, iss_key, 730);
        EXPECT_TRUE(save_private_key(dir + "/ra.key", ra_key.get()).ok());
        std::vector<X509*> ra_file{ra.get(), iss};
        if (intermediate) ra_file.push_back(root.get());
        EXPECT_TRUE(save_certs_pem(dir + "/ra.crt", ra_file).ok());
        auto ee_key = generate_key(KeyAlg::EcP256).value();
        ee = issue(Profile::BaseStation, "/O=Operator/CN=0023a1b2c3d4.henb.vendor-a.example", ee_key.get(), iss,
                   iss_key, 365);
    }
    ~CaDir() { fs::remove_all(dir); }
    CaDir(const CaDir&) = delete;
    CaDir& operator=(const CaDir&) = delete;

    std::string up(const char* f) const { return dir + "/" + kRootUpdateDir + "/" + f; }
    // Every entry of the directory tree with its size and mode (to compare before / after).
    std::set<std::string> snapshot() const {
        std::set<std::string> s;
        for (auto& e : fs::recursive_directory_iterator(dir)) {
            struct stat st {};
            ::lstat(e.path().c_str(), &st);
            s.insert(e.path().string() + " " + std::to_string(st.st_size) + " " + std::to_string(st.st_mode));
        }
        return s;
    }
};

// X509_verify_cert of leaf against the anchors, with untrusted intermediates, at kNow.
int verify(X509* leaf, const std::vector<X509*>& anchors, const std::vector<X509*>& untrusted) {
    StorePtr store = make_trust_store(anchors);
    CertStackPtr unt = make_stack(untrusted);
    std::unique_ptr<X509_STORE_CTX, decltype(&X509_STORE_CTX_free)> ctx(X509_STORE_CTX_new(), X509_STORE_CTX_free);
    X509_STORE_CTX_init(ctx.get(), store.get(), leaf, unt.get());
    X509_STORE_CTX_set_flags(ctx.get(), X509_V_FLAG_X509_STRICT);
    int ok = X509_verify_cert(ctx.get());
    int err = X509_STORE_CTX_get_error(ctx.get());
    ERR_clear_error();
    return ok == 1 ? X509_V_OK : (err == X509_V_OK ? -1 : err);
}

std::string ski(X509* x) {
    const ASN1_OCTET_STRING* s = X509_get0_subject_key_id(x);
    return s ? std::string(reinterpret_cast<const char*>(ASN1_STRING_get0_data(s)),
                           static_cast<size_t>(ASN1_STRING_length(s)))
             : std::string();
}
std::string aki(X509* x) {
    const ASN1_OCTET_STRING* s = X509_get0_authority_key_id(x);
    return s ? std::string(reinterpret_cast<const char*>(ASN1_STRING_get0_data(s)),
                           static_cast<size_t>(ASN1_STRING_length(s)))
             : std::string();
}

mode_t file_mode(const std::string& p) {
    struct stat st {};
    EXPECT_EQ(::stat(p.c_str(), &st), 0) << p;
    return st.st_mode & 0777;
}

size_t temp_dirs(const std::string& dir) {
    size_t n = 0;
    for (auto& e : fs::directory_iterator(dir))
        if (e.path().filename().string().rfind('.', 0) == 0) ++n;
    return n;
}

}  // namespace

TEST(PkiRootUpdate, WritesNewRootAndLinkCertificates) {
    CaDir ca(true);
    RootUpdateOptions o;
    o.validity_days = 7300;
    ASSERT_TRUE(create_root_update(ca.dir, o).ok());
    auto nn = load_cert(ca.up(kNewWithNewFile)).value();
    auto no = load_cert(ca.up(kNewWithOldFile)).value();
    auto on = load_cert(ca.up(kOldWithNewFile)).value();
    auto new_key = load_private_key(ca.up(kNewRootKeyFile)).value();
    EXPECT_EQ(file_mode(ca.up(kNewRootKeyFile)), 0600u);
    EXPECT_EQ(file_mode(ca.dir + "/" + kRootUpdateDir), 0700u);
    EXPECT_EQ(temp_dirs(ca.dir), 0u);
    EXPECT_EQ(X509_check_private_key(nn.get(), new_key.get()), 1);
    EVP_PKEY* old_pub = X509_get0_pubkey(ca.root.get());
    EVP_PKEY* new_pub = X509_get0_pubkey(nn.get());
    EXPECT_NE(EVP_PKEY_eq(old_pub, new_pub), 1);

    // signatures: newWithNew by itself, newWithOld by the old key, oldWithNew by the new key
    EXPECT_EQ(X509_verify(nn.get(), new_pub), 1);
    EXPECT_EQ(X509_verify(no.get(), old_pub), 1);
    EXPECT_NE(X509_verify(no.get(), new_pub), 1);
    EXPECT_EQ(X509_verify(on.get(), new_pub), 1);
    EXPECT_NE(X509_verify(on.get(), old_pub), 1);
    ERR_clear_error();
    // names and keys: newWithOld carries the new root, oldWithNew the old one
    EXPECT_EQ(X509_NAME_cmp(X509_get_subject_name(nn.get()), X509_get_subject_name(ca.root.get())), 0);
    EXPECT_EQ(EVP_PKEY_eq(X509_get0_pubkey(no.get()), new_pub), 1);
    EXPECT_EQ(EVP_PKEY_eq(X509_get0_pubkey(on.get()), old_pub), 1);
    // extensions: CA certificates (basicConstraints cA, keyCertSign), SKI of the key, AKI of the signer
    for (X509* x : {nn.get(), no.get(), on.get()}) {
        EXPECT_EQ(X509_check_ca(x), 1);
        EXPECT_TRUE(X509_get_key_usage(x) & KU_KEY_CERT_SIGN);
        EXPECT_FALSE(ski(x).empty());
    }
    EXPECT_EQ(ski(no.get()), ski(nn.get()));
    EXPECT_EQ(aki(no.get()), ski(ca.root.get()));
    EXPECT_EQ(ski(on.get()), ski(ca.root.get()));
    EXPECT_EQ(aki(on.get()), ski(nn.get()));
    // validity: the new root starts now and outlives the old one; the links overlap both roots
    EXPECT_LE(not_before(nn.get()), kNow);
    EXPECT_GT(not_after(nn.get()), not_after(ca.root.get()));
    for (X509* x : {no.get(), on.get()}) {
        EXPECT_LE(not_before(x), kNow);
        EXPECT_GE(not_before(x), not_before(nn.get()));
        EXPECT_EQ(not_after(x), not_after(ca.root.get()));
    }

    // chains: new root -> newWithOld -> old root; something the new key signs validates for
    // an EE trusting the old root (through newWithOld), and the other way round
    // (newWithNew itself is self-signed: X509_verify_cert takes a self-signed target as its own
    // anchor and refuses it; an EE checks the new root as newWithOld, same name and key, under
    // its old root)
    EXPECT_EQ(verify(no.get(), {ca.root.get()}, {}), X509_V_OK);
    EXPECT_EQ(verify(nn.get(), {ca.root.get()}, {no.get()}), X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT);
    auto k2 = generate_key(KeyAlg::EcP256).value();
    auto new_ica =
        issue(Profile::IntermediateCa, "/O=Operator/CN=Next Issuing CA", k2.get(), nn.get(), new_key.get(), 365);
    EXPECT_EQ(verify(new_ica.get(), {ca.root.get()}, {no.get()}), X509_V_OK);
    EXPECT_NE(verify(new_ica.get(), {ca.root.get()}, {}), X509_V_OK);
    EXPECT_EQ(verify(ca.ee.get(), {nn.get()}, {ca.ica.get(), on.get()}), X509_V_OK);
    EXPECT_NE(verify(ca.ee.get(), {nn.get()}, {ca.ica.get()}), X509_V_OK);
}

TEST(PkiRootUpdate, SingleLevelCaUsesCaKeyAndOptions) {
    CaDir ca(false);
    RootUpdateOptions o;
    o.alg = KeyAlg::EcP384;
    o.subject = "/O=Operator/CN=Operator Root CA 2";
    o.validity_days = 4000;
    ASSERT_TRUE(create_root_update(ca.dir, o).ok());
    auto nn = load_cert(ca.up(kNewWithNewFile)).value();
    auto no = load_cert(ca.up(kNewWithOldFile)).value();
    EXPECT_EQ(name_to_string(X509_get_subject_name(nn.get())), "CN=Operator Root CA 2,O=Operator");
    EXPECT_EQ(EVP_PKEY_get_bits(X509_get0_pubkey(nn.get())), 384);
    EXPECT_NEAR(static_cast<double>(not_after(nn.get()) - not_before(nn.get())), 4000.0 * 86400, 120);
    EXPECT_EQ(X509_verify(no.get(), X509_get0_pubkey(ca.root.get())), 1);
    EXPECT_EQ(verify(no.get(), {ca.root.get()}, {}), X509_V_OK);
    // what the new key signs (here with SHA-384) chains to the old root through newWithOld
    auto new_key = load_private_key(ca.up(kNewRootKeyFile)).value();
    auto k2 = generate_key(KeyAlg::EcP256).value();
    auto sub = issue(Profile::IntermediateCa, "/O=Operator/CN=Next Issuing CA", k2.get(), nn.get(), new_key.get(), 365);
    EXPECT_EQ(verify(sub.get(), {ca.root.get()}, {no.get()}), X509_V_OK);
    EXPECT_EQ(verify(sub.get(), {nn.get()}, {}), X509_V_OK);
    // a second preparation is refused and changes nothing
    auto before = ca.snapshot();
    auto again = create_root_update(ca.dir, o);
    ASSERT_FALSE(again.ok());
    EXPECT_NE(again.error().detail().find("already prepared"), std::string::npos) << again.error().detail();
    EXPECT_EQ(ca.snapshot(), before);
    // the root signs directly: activation is refused, nothing changes
    auto act = activate_root_update(ca.dir);
    ASSERT_FALSE(act.ok());
    EXPECT_NE(act.error().detail().find("--intermediate"), std::string::npos) << act.error().detail();
    EXPECT_EQ(ca.snapshot(), before);
}

TEST(PkiRootUpdate, NothingWrittenOnError) {
    CaDir ca(false);
    auto before = ca.snapshot();
    // ca.key that is not the root's key
    auto other = generate_key(KeyAlg::EcP256).value();
    ASSERT_TRUE(save_private_key(ca.dir + "/ca.key", other.get()).ok());
    before = ca.snapshot();
    auto st = create_root_update(ca.dir, {});
    ASSERT_FALSE(st.ok());
    EXPECT_NE(st.error().detail().find("is not the key of"), std::string::npos) << st.error().detail();
    EXPECT_EQ(ca.snapshot(), before);
    ASSERT_TRUE(save_private_key(ca.dir + "/ca.key", ca.root_key.get()).ok());
    // a bad subject
    RootUpdateOptions bad;
    bad.subject = "not a name";
    before = ca.snapshot();
    EXPECT_FALSE(create_root_update(ca.dir, bad).ok());
    EXPECT_EQ(ca.snapshot(), before);
    // an I/O error in the middle of writing (files limited to 300 octets: the key is written,
    // the first certificate is not): no root-update/, no temporary directory left
    struct rlimit old_lim {};
    ASSERT_EQ(::getrlimit(RLIMIT_FSIZE, &old_lim), 0);
    auto* old_handler = ::signal(SIGXFSZ, SIG_IGN);
    struct rlimit lim = old_lim;
    lim.rlim_cur = 300;
    ASSERT_EQ(::setrlimit(RLIMIT_FSIZE, &lim), 0);
    auto io = create_root_update(ca.dir, {});
    ::setrlimit(RLIMIT_FSIZE, &old_lim);
    ::signal(SIGXFSZ, old_handler);
    ASSERT_FALSE(io.ok());
    EXPECT_NE(io.error().detail().find(kNewWithNewFile), std::string::npos) << io.error().detail();
    EXPECT_EQ(ca.snapshot(), before) << io.error().detail();
    EXPECT_FALSE(fs::exists(ca.dir + "/" + kRootUpdateDir));
    EXPECT_EQ(temp_dirs(ca.dir), 0u);
    // with the error gone it works
    EXPECT_TRUE(create_root_update(ca.dir, {}).ok());
}

TEST(PkiRootUpdate, ActivateSwitchesAnIntermediateCaToTheNewRoot) {
    CaDir ca(true);
    EXPECT_FALSE(activate_root_update(ca.dir).ok());  // nothing prepared
    ASSERT_TRUE(create_root_update(ca.dir, {}).ok());
    auto nn = load_cert(ca.up(kNewWithNewFile)).value();
    auto no = load_cert(ca.up(kNewWithOldFile)).value();
    auto st = activate_root_update(ca.dir);
    ASSERT_TRUE(st.ok()) << st.error().detail();

    auto root = load_cert(ca.dir + "/root.crt").value();
    EXPECT_EQ(X509_cmp(root.get(), nn.get()), 0);
    auto root_key = load_private_key(ca.dir + "/root.key").value();
    EXPECT_EQ(X509_check_private_key(nn.get(), root_key.get()), 1);
    EXPECT_EQ(file_mode(ca.dir + "/root.key"), 0600u);
    // the issuing CA: same name and key, issued by the new root, same cRLDistributionPoints
    auto ica = load_cert(ca.dir + "/ca.crt").value();
    EXPECT_EQ(X509_NAME_cmp(X509_get_subject_name(ica.get()), X509_get_subject_name(ca.ica.get())), 0);
    EXPECT_EQ(EVP_PKEY_eq(X509_get0_pubkey(ica.get()), X509_get0_pubkey(ca.ica.get())), 1);
    EXPECT_EQ(aki(ica.get()), ski(nn.get()));
    EXPECT_EQ(X509_get_ext_by_NID(ica.get(), NID_crl_distribution_points, -1) >= 0, true);
    EXPECT_LE(not_after(ica.get()), not_after(ca.ica.get()));
    auto ca_key = load_private_key(ca.dir + "/ca.key").value();
    EXPECT_EQ(X509_check_private_key(ica.get(), ca_key.get()), 1);
    auto chain = load_certs_pem(ca.dir + "/chain.pem").value();
    ASSERT_EQ(chain.size(), 2u);
    EXPECT_EQ(X509_cmp(chain[0].get(), ica.get()), 0);
    EXPECT_EQ(X509_cmp(chain[1].get(), nn.get()), 0);
    auto ra = load_certs_pem(ca.dir + "/ra.crt").value();
    ASSERT_EQ(ra.size(), 3u);
    EXPECT_EQ(X509_cmp(ra[1].get(), ica.get()), 0);
    EXPECT_EQ(X509_cmp(ra[2].get(), nn.get()), 0);
    // what the CA issued before still validates: under the new root, and under the old root via newWithOld
    EXPECT_EQ(verify(ca.ee.get(), {nn.get()}, {ica.get()}), X509_V_OK);
    EXPECT_EQ(verify(ra[0].get(), {nn.get()}, {ica.get()}), X509_V_OK);
    EXPECT_EQ(verify(ca.ee.get(), {ca.root.get()}, {ica.get(), no.get()}), X509_V_OK);
    EXPECT_EQ(verify(ca.ee.get(), {ca.root.get()}, {ca.ica.get()}), X509_V_OK);
    // the previous files are kept in root-old/
    const std::string old = ca.dir + "/" + kRootOldDir + "/";
    EXPECT_EQ(X509_cmp(load_cert(old + "root.crt").value().get(), ca.root.get()), 0);
    EXPECT_EQ(X509_cmp(load_cert(old + "ca.crt").value().get(), ca.ica.get()), 0);
    EXPECT_EQ(file_mode(old + "root.key"), 0600u);
    EXPECT_EQ(X509_check_private_key(ca.root.get(), load_private_key(old + "root.key").value().get()), 1);
    EXPECT_EQ(load_certs_pem(old + "chain.pem").value().size(), 2u);
    EXPECT_EQ(load_certs_pem(old + "ra.crt").value().size(), 3u);
    EXPECT_EQ(temp_dirs(ca.dir), 0u);
    // a second activation is refused and changes nothing
    auto before = ca.snapshot();
    EXPECT_FALSE(activate_root_update(ca.dir).ok());
    EXPECT_EQ(ca.snapshot(), before);
}
