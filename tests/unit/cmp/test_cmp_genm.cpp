// genm rootCaKeyUpdate (RFC 9483 4.3.2) and certReqTemplate (4.3.3): OpenSSL's client sends the
// genm, the genp's ITAV is decoded back into the ASN.1 types of genm.hpp (OpenSSL templates)
// and its content checked; absent data is answered with an absent infoValue; and the profile's
// key_types, announced in the template's keySpec, are enforced on requests.
#include <gtest/gtest.h>
#include <openssl/cmp.h>
#include <openssl/x509v3.h>
#include <ctime>
#include <functional>
#include <x2sec/cmp/genm.hpp>
#include <x2sec/cmp/lab_pki.hpp>
#include <x2sec/cmp/server.hpp>

using namespace x2sec;
using namespace x2sec::cmp;

namespace {

const char* kRealm = "henb.vendor-a.example";

LabPki& lab() {
    static LabPki p = make_lab_pki();
    return p;
}

// The operator root's key rollover: a new P-256 root key and the link certificates.
RootKeyUpdate& rollover() {
    static RootKeyUpdate u = [] {
        auto nk = pki::generate_key(pki::KeyAlg::EcP256).value();
        return make_root_key_update(lab().operator_root.cert.get(), lab().operator_root.key.get(), nk.get(), "",
                                    static_cast<int64_t>(std::time(nullptr)) - 60, 3650)
            .value();
    }();
    return u;
}

pki::X509Ptr dup(const pki::X509Ptr& x) {
    return pki::up_ref(x.get());
}

struct Wire {
    std::function<Result<Bytes>(BytesView)> handle;
};

OSSL_CMP_MSG* transfer(OSSL_CMP_CTX* c, const OSSL_CMP_MSG* req) {
    auto* w = static_cast<Wire*>(OSSL_CMP_CTX_get_transfer_cb_arg(c));
    unsigned char* der = nullptr;
    int n = i2d_OSSL_CMP_MSG(req, &der);
    Bytes b(der, der + n);
    OPENSSL_free(der);
    auto rsp = w->handle(b);
    if (!rsp) return nullptr;
    const unsigned char* p = rsp->data();
    return d2i_OSSL_CMP_MSG(nullptr, &p, static_cast<long>(rsp->size()));
}

struct CtxFree {
    void operator()(OSSL_CMP_CTX* c) const { OSSL_CMP_CTX_free(c); }
};
using Ctx = std::unique_ptr<OSSL_CMP_CTX, CtxFree>;

struct GenmFixture : ::testing::Test {
    std::unique_ptr<Store> store = std::move(open_sqlite_store(":memory:").value());
    std::unique_ptr<Server> server;
    int64_t now = static_cast<int64_t>(std::time(nullptr));
    Wire wire;
    std::string profile;

    void make_server(bool with_update) {
        ServerConfig c = lab().server_config();
        if (with_update)
            c.root_update =
                RootKeyUpdate{dup(rollover().new_with_new), dup(rollover().new_with_old), dup(rollover().old_with_new)};
        IssuanceProfile odu;
        odu.name = "odu";
        odu.ip = {"192.0.2.0/24"};
        odu.uri = {"urn:o-ran:du:{eui}"};
        odu.required = {"ip", "uri"};
        odu.key_types = {"p256", "rsa3072"};
        c.policy.profiles["odu"] = odu;
        IssuanceProfile any;  // dNSNames of a pattern the identity does not fit
        any.name = "wild";
        any.dns = {"*.sites.example"};
        c.policy.profiles["wild"] = any;
        server = std::make_unique<Server>(std::move(c), *store);
        wire.handle = [this](BytesView b) { return server->handle(b, RequestContext{profile, now}); };
    }
    uint64_t counter(const std::string& n) const { return server->counters().get(n); }

    Ctx client(const LabCredential& dev) {
        Ctx ctx(OSSL_CMP_CTX_new(nullptr, nullptr));
        OSSL_CMP_CTX_set_transfer_cb(ctx.get(), transfer);
        OSSL_CMP_CTX_set_transfer_cb_arg(ctx.get(), &wire);
        OSSL_CMP_CTX_set1_cert(ctx.get(), dev.cert.get());
        OSSL_CMP_CTX_set1_pkey(ctx.get(), dev.key.get());
        X509_STORE* ts = X509_STORE_new();
        X509_STORE_add_cert(ts, lab().operator_root.cert.get());
        OSSL_CMP_CTX_set0_trustedStore(ctx.get(), ts);
        auto un = pki::make_stack({lab().operator_issuing.cert.get()});
        OSSL_CMP_CTX_set1_untrusted(ctx.get(), un.get());
        return ctx;
    }

    // One genm with one ITAV of `oid` (value: `value` as an ASN1_TYPE SEQUENCE, or absent);
    // the single ITAV of the genp, or nullptr when the exchange failed.
    ItavPtr genm(const char* oid, X509* value, const LabCredential& dev) {
        Ctx ctx = client(dev);
        ASN1_TYPE* v = value ? ASN1_TYPE_pack_sequence(ASN1_ITEM_rptr(X509), value, nullptr) : nullptr;
        OSSL_CMP_CTX_push0_genm_ITAV(ctx.get(), OSSL_CMP_ITAV_create(OBJ_txt2obj(oid, 1), v));
        STACK_OF(OSSL_CMP_ITAV)* got = OSSL_CMP_exec_GENM_ses(ctx.get());
        if (!got) return nullptr;
        EXPECT_EQ(sk_OSSL_CMP_ITAV_num(got), 1);
        ItavPtr first(sk_OSSL_CMP_ITAV_num(got) > 0 ? sk_OSSL_CMP_ITAV_shift(got) : nullptr);
        sk_OSSL_CMP_ITAV_pop_free(got, OSSL_CMP_ITAV_free);
        return first;
    }
};

std::vector<std::pair<int, std::string>> san_of(const OSSL_CRMF_CERTTEMPLATE* t) {
    std::vector<std::pair<int, std::string>> out;
    const STACK_OF(X509_EXTENSION)* exts = OSSL_CRMF_CERTTEMPLATE_get0_extensions(t);
    for (int i = 0; exts && i < sk_X509_EXTENSION_num(exts); ++i) {
        X509_EXTENSION* e = sk_X509_EXTENSION_value(exts, i);
        if (OBJ_obj2nid(X509_EXTENSION_get_object(e)) != NID_subject_alt_name) continue;
        auto* names = static_cast<GENERAL_NAMES*>(X509V3_EXT_d2i(e));
        for (int j = 0; names && j < sk_GENERAL_NAME_num(names); ++j) {
            GENERAL_NAME* g = sk_GENERAL_NAME_value(names, j);
            int type = 0;
            auto* s = static_cast<ASN1_STRING*>(GENERAL_NAME_get0_value(g, &type));
            out.emplace_back(type, std::string(reinterpret_cast<const char*>(ASN1_STRING_get0_data(s)),
                                               static_cast<size_t>(ASN1_STRING_length(s))));
        }
        GENERAL_NAMES_free(names);
    }
    return out;
}

std::string cn_of(const OSSL_CRMF_CERTTEMPLATE* t) {
    const X509_NAME* n = OSSL_CRMF_CERTTEMPLATE_get0_subject(t);
    int idx = n ? X509_NAME_get_index_by_NID(n, NID_commonName, -1) : -1;
    if (idx < 0) return "";
    ASN1_STRING* s = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(n, idx));
    return std::string(reinterpret_cast<const char*>(ASN1_STRING_get0_data(s)),
                       static_cast<size_t>(ASN1_STRING_length(s)));
}

}  // namespace

TEST(RootKeyUpdate, LinkCertificatesAreChecked) {
    const RootKeyUpdate& u = rollover();
    ASSERT_TRUE(check_root_key_update(u).ok());
    EXPECT_EQ(X509_verify(u.new_with_old.get(), X509_get0_pubkey(lab().operator_root.cert.get())), 1);
    EXPECT_EQ(X509_verify(u.old_with_new.get(), X509_get0_pubkey(u.new_with_new.get())), 1);
    EXPECT_TRUE(is_old_root_of(u, lab().operator_root.cert.get()));
    EXPECT_FALSE(is_old_root_of(u, u.new_with_new.get()));
    EXPECT_FALSE(is_old_root_of(u, lab().vendor_a.cert.get()));
    // swapped or foreign certificates are refused with the reason
    RootKeyUpdate bad{dup(u.new_with_new), dup(u.new_with_new), nullptr};
    auto st = check_root_key_update(bad);
    ASSERT_FALSE(st.ok());
    EXPECT_NE(st.error().detail().find("newWithOld"), std::string::npos) << st.error().detail();
    RootKeyUpdate bad2{dup(u.new_with_old), dup(u.new_with_old), nullptr};
    EXPECT_FALSE(check_root_key_update(bad2).ok());
    RootKeyUpdate bad3{dup(u.new_with_new), dup(u.new_with_old), dup(lab().operator_root.cert)};
    auto st3 = check_root_key_update(bad3);
    ASSERT_FALSE(st3.ok());
    EXPECT_NE(st3.error().detail().find("oldWithNew"), std::string::npos) << st3.error().detail();
}

TEST_F(GenmFixture, RootCaKeyUpdateForTheOldRoot) {
    make_server(true);
    auto dev = lab().device(lab().vendor_a, "0023a1b2d001", kRealm);
    for (X509* asked : {lab().operator_root.cert.get(), static_cast<X509*>(nullptr)}) {
        ItavPtr itav = genm(kIdItRootCaCert, asked, dev);
        ASSERT_TRUE(itav);
        EXPECT_EQ(itav_oid(itav.get()), kIdItRootCaKeyUpdate);
        auto der = itav_value_der(itav.get());
        ASSERT_TRUE(der.ok()) << der.error().detail();
        ASSERT_TRUE(der->has_value());
        auto v = decode_root_ca_key_update(**der);
        ASSERT_TRUE(v.ok()) << v.error().detail();
        const X2SEC_ROOTCAKEYUPDATE* r = v->get();
        ASSERT_NE(r->newWithNew, nullptr);
        ASSERT_NE(r->newWithOld, nullptr);
        ASSERT_NE(r->oldWithNew, nullptr);
        EXPECT_EQ(X509_cmp(r->newWithNew, rollover().new_with_new.get()), 0);
        EXPECT_EQ(X509_cmp(r->newWithOld, rollover().new_with_old.get()), 0);
        EXPECT_EQ(X509_cmp(r->oldWithNew, rollover().old_with_new.get()), 0);
        // what an EE checks: newWithOld verifies with the root it trusts, carries the new key
        EXPECT_EQ(X509_verify(r->newWithOld, X509_get0_pubkey(lab().operator_root.cert.get())), 1);
        EXPECT_EQ(EVP_PKEY_eq(X509_get0_pubkey(r->newWithOld), X509_get0_pubkey(r->newWithNew)), 1);
    }
    EXPECT_EQ(counter("cmp.genm.root_ca_key_update"), 2u);
    // an EE that already trusts the new root, or another root: no update (infoValue absent)
    for (X509* asked : {rollover().new_with_new.get(), lab().vendor_b.cert.get()}) {
        ItavPtr itav = genm(kIdItRootCaCert, asked, dev);
        ASSERT_TRUE(itav);
        EXPECT_EQ(itav_oid(itav.get()), kIdItRootCaKeyUpdate);
        EXPECT_EQ(OSSL_CMP_ITAV_get0_value(itav.get()), nullptr);
    }
    EXPECT_EQ(counter("cmp.genm.root_ca_key_update.none"), 2u);
    EXPECT_EQ(store->counts()->transactions, 4);
}

TEST_F(GenmFixture, NoRootCaKeyUpdateConfigured) {
    make_server(false);
    auto dev = lab().device(lab().vendor_a, "0023a1b2d002", kRealm);
    ItavPtr itav = genm(kIdItRootCaCert, lab().operator_root.cert.get(), dev);
    ASSERT_TRUE(itav);
    EXPECT_EQ(itav_oid(itav.get()), kIdItRootCaKeyUpdate);
    EXPECT_EQ(OSSL_CMP_ITAV_get0_value(itav.get()), nullptr);
    EXPECT_EQ(counter("cmp.genm.root_ca_key_update.none"), 1u);
}

TEST_F(GenmFixture, MalformedRootCaCertValueIsRefused) {
    make_server(true);
    auto dev = lab().device(lab().vendor_a, "0023a1b2d003", kRealm);
    Ctx ctx = client(dev);
    ASN1_TYPE* v = ASN1_TYPE_new();  // an INTEGER where a Certificate belongs
    ASN1_INTEGER* i = ASN1_INTEGER_new();
    ASN1_INTEGER_set(i, 7);
    ASN1_TYPE_set(v, V_ASN1_INTEGER, i);
    OSSL_CMP_CTX_push0_genm_ITAV(ctx.get(), OSSL_CMP_ITAV_create(OBJ_txt2obj(kIdItRootCaCert, 1), v));
    EXPECT_EQ(OSSL_CMP_exec_GENM_ses(ctx.get()), nullptr);
    EXPECT_EQ(counter("cmp.reject.bad_genm_value"), 1u);
    EXPECT_EQ(counter("cmp.genm.root_ca_key_update"), 0u);
}

TEST_F(GenmFixture, CertReqTemplateFromTheProfile) {
    make_server(false);
    auto dev = lab().device(lab().vendor_a, "0023a1b2d004", kRealm);
    const std::string id = std::string("0023a1b2d004.") + kRealm;
    profile = "odu";
    ItavPtr itav = genm(kIdItCertReqTemplate, nullptr, dev);
    ASSERT_TRUE(itav);
    EXPECT_EQ(itav_oid(itav.get()), kIdItCertReqTemplate);
    auto der = itav_value_der(itav.get());
    ASSERT_TRUE(der.ok() && der->has_value());
    auto t = decode_cert_req_template(**der);
    ASSERT_TRUE(t.ok()) << t.error().detail();
    EXPECT_EQ(cn_of((*t)->certTemplate), id);
    EXPECT_EQ(OSSL_CRMF_CERTTEMPLATE_get0_serialNumber((*t)->certTemplate), nullptr);
    auto sans = san_of((*t)->certTemplate);
    ASSERT_EQ(sans.size(), 3u);
    EXPECT_EQ(sans[0], std::make_pair(GEN_DNS, id));
    EXPECT_EQ(sans[1], std::make_pair(GEN_IPADD, std::string()));  // to be filled in by the EE
    EXPECT_EQ(sans[2], std::make_pair(GEN_URI, std::string("urn:o-ran:du:0023a1b2d004")));
    ASSERT_NE((*t)->keySpec, nullptr);
    ASSERT_EQ(sk_X2SEC_ATAV_num((*t)->keySpec), 2);
    {  // id-regCtrl-algId: id-ecPublicKey with prime256v1
        X2SEC_ATAV* a = sk_X2SEC_ATAV_value((*t)->keySpec, 0);
        char oid[80];
        OBJ_obj2txt(oid, sizeof oid, a->type, 1);
        EXPECT_STREQ(oid, kIdRegCtrlAlgId);
        auto* alg = static_cast<X509_ALGOR*>(ASN1_TYPE_unpack_sequence(ASN1_ITEM_rptr(X509_ALGOR), a->value));
        ASSERT_NE(alg, nullptr);
        const ASN1_OBJECT* aoid = nullptr;
        int ptype = 0;
        const void* pval = nullptr;
        X509_ALGOR_get0(&aoid, &ptype, &pval, alg);
        EXPECT_EQ(OBJ_obj2nid(aoid), NID_X9_62_id_ecPublicKey);
        ASSERT_EQ(ptype, V_ASN1_OBJECT);
        EXPECT_EQ(OBJ_obj2nid(static_cast<const ASN1_OBJECT*>(pval)), NID_X9_62_prime256v1);
        X509_ALGOR_free(alg);
    }
    {  // id-regCtrl-rsaKeyLen 3072
        X2SEC_ATAV* a = sk_X2SEC_ATAV_value((*t)->keySpec, 1);
        char oid[80];
        OBJ_obj2txt(oid, sizeof oid, a->type, 1);
        EXPECT_STREQ(oid, kIdRegCtrlRsaKeyLen);
        ASSERT_EQ(ASN1_TYPE_get(a->value), V_ASN1_INTEGER);
        EXPECT_EQ(ASN1_INTEGER_get(a->value->value.integer), 3072);
    }
    EXPECT_EQ(counter("cmp.genm.cert_req_template"), 1u);

    // the default profile: the identity as dNSName only, any key (keySpec absent)
    profile = "";
    itav = genm(kIdItCertReqTemplate, nullptr, dev);
    ASSERT_TRUE(itav);
    der = itav_value_der(itav.get());
    ASSERT_TRUE(der.ok() && der->has_value());
    t = decode_cert_req_template(**der);
    ASSERT_TRUE(t.ok());
    EXPECT_EQ((*t)->keySpec, nullptr);
    sans = san_of((*t)->certTemplate);
    ASSERT_EQ(sans.size(), 1u);
    EXPECT_EQ(sans[0], std::make_pair(GEN_DNS, id));

    // a pattern the identity does not fit: an empty dNSName for the EE to fill in
    profile = "wild";
    itav = genm(kIdItCertReqTemplate, nullptr, dev);
    ASSERT_TRUE(itav);
    der = itav_value_der(itav.get());
    ASSERT_TRUE(der.ok() && der->has_value());
    t = decode_cert_req_template(**der);
    ASSERT_TRUE(t.ok());
    sans = san_of((*t)->certTemplate);
    ASSERT_EQ(sans.size(), 1u);
    EXPECT_EQ(sans[0], std::make_pair(GEN_DNS, std::string()));
    EXPECT_EQ(counter("cmp.genm.cert_req_template"), 3u);
}

TEST(GenmTypes, TrailingOctetsAndWrongValuesAreErrors) {
    const RootKeyUpdate& u = rollover();
    X2SEC_ROOTCAKEYUPDATE v{u.new_with_new.get(), nullptr, nullptr};
    ItavPtr itav = make_itav(kIdItRootCaKeyUpdate, ASN1_ITEM_rptr(X2SEC_ROOTCAKEYUPDATE), &v);
    ASSERT_TRUE(itav);
    auto der = itav_value_der(itav.get());
    ASSERT_TRUE(der.ok() && der->has_value());
    auto ok = decode_root_ca_key_update(**der);
    ASSERT_TRUE(ok.ok());
    EXPECT_EQ((*ok)->newWithOld, nullptr);  // OPTIONAL fields stay absent
    Bytes longer = **der;
    longer.push_back(0);
    EXPECT_FALSE(decode_root_ca_key_update(longer).ok());
    Bytes cut(der->value().begin(), der->value().end() - 5);
    EXPECT_FALSE(decode_root_ca_key_update(cut).ok());
    EXPECT_FALSE(decode_cert_req_template(**der).ok());
    EXPECT_FALSE(decode_certificate(Bytes{0x30, 0x00}).ok());
}

// key_types: a P-384 key under a profile that permits p256 and rsa3072 is refused with badAlg.
TEST_F(GenmFixture, ProfileKeyTypesAreEnforced) {
    make_server(false);
    profile = "odu";
    auto dev = lab().device(lab().vendor_a, "0023a1b2d005", kRealm);
    for (auto alg : {pki::KeyAlg::EcP384, pki::KeyAlg::EcP256}) {
        Ctx ctx = client(dev);
        auto nk = pki::generate_key(alg).value();
        OSSL_CMP_CTX_set0_newPkey(ctx.get(), 1, nk.release());
        auto subject = pki::parse_name(std::string("/CN=0023a1b2d005.") + kRealm).value();
        OSSL_CMP_CTX_set1_subjectName(ctx.get(), subject.get());
        GENERAL_NAMES* names = GENERAL_NAMES_new();
        GENERAL_NAME* ip = GENERAL_NAME_new();
        GENERAL_NAME_set0_value(ip, GEN_IPADD, a2i_IPADDRESS("192.0.2.9"));
        sk_GENERAL_NAME_push(names, ip);
        GENERAL_NAME* uri = GENERAL_NAME_new();
        ASN1_IA5STRING* us = ASN1_IA5STRING_new();
        ASN1_STRING_set(us, "urn:o-ran:du:0023a1b2d005", -1);
        GENERAL_NAME_set0_value(uri, GEN_URI, us);
        sk_GENERAL_NAME_push(names, uri);
        for (int k = 0; k < sk_GENERAL_NAME_num(names); ++k)
            OSSL_CMP_CTX_push1_subjectAltName(ctx.get(), sk_GENERAL_NAME_value(names, k));
        GENERAL_NAMES_free(names);
        X509* cert = OSSL_CMP_exec_IR_ses(ctx.get());
        if (alg == pki::KeyAlg::EcP384) {
            EXPECT_EQ(cert, nullptr);
            EXPECT_TRUE(OSSL_CMP_CTX_get_failInfoCode(ctx.get()) & (1 << OSSL_CMP_PKIFAILUREINFO_badAlg))
                << OSSL_CMP_CTX_get_failInfoCode(ctx.get());
        } else {
            EXPECT_NE(cert, nullptr) << "P-256 is permitted";
        }
    }
    EXPECT_EQ(counter("cmp.reject.key_type"), 1u);
    EXPECT_EQ(store->counts()->certificates, 1);
}
