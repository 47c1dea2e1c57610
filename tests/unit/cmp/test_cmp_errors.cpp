// Server error answers, checked on the wire: every message-level failure (protection, weak
// algorithm, untrusted signer, reused transactionID, no transaction) is a protected CMP
// `error` message whose PKIStatusInfo carries the specific PKIFailureInfo bit; request-level
// failures (weak POP, unacceptable revocation reason) are a rejection in ip/rp.  Nothing is
// written to the store, and each rejection is counted.
#include <gtest/gtest.h>
#include <ctime>
#include <openssl/cmp.h>
#include <openssl/crmf.h>
#include <functional>
#include <iostream>
#include <map>
#include <x2sec/cmp/client.hpp>
#include <x2sec/cmp/lab_pki.hpp>
#include <x2sec/cmp/server.hpp>
#include <x2sec/test/cmp_wire.hpp>

namespace {
// The system clock's time, for tests that exchange messages as they happen.
x2sec::cmp::RequestContext wall_clock_request() {
    return x2sec::cmp::RequestContext{"", static_cast<int64_t>(std::time(nullptr))};
}
}  // namespace

using namespace x2sec;
using namespace x2sec::cmp;

namespace {

const char* kRealm = "henb.vendor-a.example";
constexpr int kErrorBody = 23, kIpBody = 1;

struct MsgFree {
    void operator()(OSSL_CMP_MSG* m) const { OSSL_CMP_MSG_free(m); }
};
using Msg = std::unique_ptr<OSSL_CMP_MSG, MsgFree>;
Msg decode(const Bytes& der) {
    const unsigned char* p = der.data();
    return Msg(d2i_OSSL_CMP_MSG(nullptr, &p, static_cast<long>(der.size())));
}
Bytes tid_of(const OSSL_CMP_MSG* m) {
    const ASN1_OCTET_STRING* t = OSSL_CMP_HDR_get0_transactionID(OSSL_CMP_MSG_get0_header(m));
    return t ? Bytes(ASN1_STRING_get0_data(t), ASN1_STRING_get0_data(t) + ASN1_STRING_length(t)) : Bytes{};
}

struct Outcome {
    bool enrolled = false;
    int fail_info = 0;  // as the OpenSSL client saw it
    int rsp_body = -1;  // body type of the server's last answer
    bool rsp_signed_by_ra = false;
    bool same_tid = false;
    std::string status_text;  // OSSL_CMP_CTX_snprint_PKIStatus
};

struct ErrFixture : ::testing::Test {
    static LabPki& lab() {
        static LabPki p = make_lab_pki();
        return p;
    }
    std::unique_ptr<Store> store = std::move(open_sqlite_store(":memory:").value());
    std::unique_ptr<Server> server = std::make_unique<Server>(lab().server_config(), *store);
    test::CmpWire wire;
    ErrFixture() {
        wire.handle = [this](BytesView b) { return server->handle(b, wall_clock_request()); };
    }
    int64_t certs() const { return store->counts()->certificates; }
    int64_t transactions() const { return store->counts()->transactions; }
    uint64_t counter(const std::string& n) const { return server->counters().get(n); }

    // One raw OpenSSL client exchange (ir unless told otherwise).  `tweak` adjusts the
    // context; `crm` replaces the generated CertReqMsg.
    Outcome run(EVP_PKEY* signer_key, X509* signer_cert, const std::vector<X509*>& chain, EVP_PKEY* new_key,
                const std::string& id, const std::function<void(OSSL_CMP_CTX*)>& tweak = {},
                OSSL_CRMF_MSG* crm = nullptr, int type = OSSL_CMP_IR) {
        Outcome o;
        OSSL_CMP_CTX* ctx = OSSL_CMP_CTX_new(nullptr, nullptr);
        test::attach(ctx, wire);
        if (signer_cert) OSSL_CMP_CTX_set1_cert(ctx, signer_cert);
        if (signer_key) OSSL_CMP_CTX_set1_pkey(ctx, signer_key);
        STACK_OF(X509)* sk = test::x509_stack(chain);
        OSSL_CMP_CTX_set1_extraCertsOut(ctx, sk);
        sk_X509_pop_free(sk, X509_free);
        test::trust_operator_ca(ctx, lab());
        if (new_key) {
            EVP_PKEY_up_ref(new_key);
            OSSL_CMP_CTX_set0_newPkey(ctx, 1, new_key);
        }
        if (!id.empty()) {
            auto n = pki::parse_name("/CN=" + id).value();
            OSSL_CMP_CTX_set1_subjectName(ctx, n.get());
        }
        if (tweak) tweak(ctx);
        X509* cert = nullptr;
        if (type == 11) {  // rr (3.0 has no OSSL_CMP_RR)
            o.enrolled = OSSL_CMP_exec_RR_ses(ctx) == 1;
        } else {
            cert = OSSL_CMP_exec_certreq(ctx, type, crm);
            o.enrolled = cert != nullptr;
        }
        o.fail_info = OSSL_CMP_CTX_get_failInfoCode(ctx);
        char buf[OSSL_CMP_PKISI_BUFLEN];
        if (const char* t = OSSL_CMP_CTX_snprint_PKIStatus(ctx, buf, sizeof buf)) o.status_text = t;
        OSSL_CMP_CTX_free(ctx);
        if (getenv("X2S_DEBUG")) ERR_print_errors_fp(stderr);
        ERR_clear_error();
        if (!wire.last_response.empty()) {
            auto rsp = decode(wire.last_response);
            auto req = decode(wire.last_request);
            if (rsp && req) {
                o.rsp_body = OSSL_CMP_MSG_get_bodytype(rsp.get());
                o.same_tid = !tid_of(req.get()).empty() && tid_of(req.get()) == tid_of(rsp.get());
                OSSL_CMP_CTX* v = OSSL_CMP_CTX_new(nullptr, nullptr);
                OSSL_CMP_CTX_set1_srvCert(v, lab().ra.cert.get());
                o.rsp_signed_by_ra = OSSL_CMP_validate_msg(v, rsp.get()) == 1;
                OSSL_CMP_CTX_free(v);
                ERR_clear_error();
            }
        }
        return o;
    }
    Outcome run_device(const LabCredential& dev, EVP_PKEY* nk, const std::string& id,
                       const std::function<void(OSSL_CMP_CTX*)>& tweak = {}, OSSL_CRMF_MSG* crm = nullptr) {
        std::vector<X509*> chain{dev.cert.get()};
        for (X509* x : dev.chain_ptrs()) chain.push_back(x);
        return run(dev.key.get(), dev.cert.get(), chain, nk, id, tweak, crm);
    }
    // The store holds nothing from a rejected request.
    void expect_nothing_stored() {
        EXPECT_EQ(certs(), 0);
        EXPECT_EQ(transactions(), 0);
    }
};

pki::PkeyPtr p256() {
    return pki::generate_key(pki::KeyAlg::EcP256).value();
}

#define EXPECT_ERROR_WITH(o, bit)                                                                   \
    do {                                                                                            \
        EXPECT_FALSE((o).enrolled);                                                                 \
        EXPECT_EQ((o).rsp_body, kErrorBody) << "answer is not a CMP error message";                 \
        EXPECT_EQ((o).fail_info, 1 << (bit)) << (o).status_text;                                    \
        EXPECT_TRUE((o).rsp_signed_by_ra) << "error message not protected with the RA certificate"; \
        EXPECT_TRUE((o).same_tid) << "error message does not carry the request's transactionID";    \
    } while (0)

}  // namespace

TEST_F(ErrFixture, BaselineIrStillEnrols) {
    auto dev = lab().device(lab().vendor_a, "0023a1b2c401", kRealm);
    auto nk = p256();
    auto o = run_device(dev, nk.get(), std::string("0023a1b2c401.") + kRealm);
    EXPECT_TRUE(o.enrolled) << o.status_text;
    EXPECT_EQ(o.rsp_body, 19);  // pkiConf after certConf
    EXPECT_EQ(certs(), 1);
}

TEST_F(ErrFixture, TamperedProtectionIsBadMessageCheck) {
    auto dev = lab().device(lab().vendor_a, "0023a1b2c402", kRealm);
    auto nk = p256();
    const std::string id = std::string("0023a1b2c402.") + kRealm;
    wire.handle = [&](BytesView req) -> Result<Bytes> {
        Bytes m(req.begin(), req.end());
        std::string s(m.begin(), m.end());
        auto pos = s.find(id);
        pos = s.find(id, pos + 1);  // the template's CN, covered by the protection
        if (pos != std::string::npos) m[pos] ^= 1;
        return server->handle(m, wall_clock_request());
    };
    auto o = run_device(dev, nk.get(), id);
    EXPECT_ERROR_WITH(o, OSSL_CMP_PKIFAILUREINFO_badMessageCheck);
    EXPECT_NE(o.status_text.find("badMessageCheck"), std::string::npos) << o.status_text;
    EXPECT_NE(o.status_text.find("does not verify"), std::string::npos) << o.status_text;
    EXPECT_EQ(counter("cmp.reject.bad_message_check"), 1u);
    expect_nothing_stored();
}

TEST_F(ErrFixture, UnprotectedRequestIsBadMessageCheck) {
    auto dev = lab().device(lab().vendor_a, "0023a1b2c404", kRealm);
    auto nk = p256();
    auto o = run_device(dev, nk.get(), std::string("0023a1b2c404.") + kRealm,
                        [](OSSL_CMP_CTX* c) { OSSL_CMP_CTX_set_option(c, OSSL_CMP_OPT_UNPROTECTED_SEND, 1); });
    EXPECT_ERROR_WITH(o, OSSL_CMP_PKIFAILUREINFO_badMessageCheck);
    EXPECT_NE(o.status_text.find("not protected"), std::string::npos) << o.status_text;
    EXPECT_EQ(counter("cmp.reject.unprotected"), 1u);
    expect_nothing_stored();
}

TEST_F(ErrFixture, MacProtectionIsWrongIntegrity) {
    auto nk = p256();
    auto o = run(nullptr, nullptr, {}, nk.get(), std::string("0023a1b2c405.") + kRealm, [](OSSL_CMP_CTX* c) {
        const unsigned char secret[] = "pass:1234-not-used-by-this-ca";
        const unsigned char ref[] = "ref";
        OSSL_CMP_CTX_set1_secretValue(c, secret, sizeof secret - 1);
        OSSL_CMP_CTX_set1_referenceValue(c, ref, sizeof ref - 1);
    });
    EXPECT_ERROR_WITH(o, OSSL_CMP_PKIFAILUREINFO_wrongIntegrity);
    EXPECT_EQ(counter("cmp.reject.wrong_integrity"), 1u);
    expect_nothing_stored();
}

TEST_F(ErrFixture, Sha1ProtectionIsBadAlg) {
    auto dev = lab().device(lab().vendor_a, "0023a1b2c406", kRealm);
    auto nk = p256();
    auto o = run_device(dev, nk.get(), std::string("0023a1b2c406.") + kRealm,
                        [](OSSL_CMP_CTX* c) { OSSL_CMP_CTX_set_option(c, OSSL_CMP_OPT_DIGEST_ALGNID, NID_sha1); });
    EXPECT_ERROR_WITH(o, OSSL_CMP_PKIFAILUREINFO_badAlg);
    EXPECT_NE(o.status_text.find("SHA-1"), std::string::npos) << o.status_text;
    EXPECT_EQ(counter("cmp.reject.weak_alg_protection"), 1u);
    expect_nothing_stored();
}

TEST_F(ErrFixture, Md5ProtectionIsBadAlg) {
    // MD5 only exists as an RSA signature: an RSA device certificate of vendor A.
    auto key = pki::generate_key(pki::KeyAlg::Rsa2048).value();
    const std::string id = std::string("0023a1b2c407.") + kRealm;
    auto n = pki::parse_name("/CN=" + id).value();
    pki::IssueRequest r;
    r.profile = pki::Profile::Device;
    r.subject = n.get();
    r.public_key = key.get();
    r.dns = {id};
    auto cert = pki::issue_certificate(r, lab().vendor_a.cert.get(), lab().vendor_a.key.get()).value();
    auto nk = pki::generate_key(pki::KeyAlg::Rsa2048).value();  // the POP is signed with MD5 as well
    auto o = run(key.get(), cert.get(), {cert.get(), lab().vendor_a.cert.get()}, nk.get(), id,
                 [](OSSL_CMP_CTX* c) { OSSL_CMP_CTX_set_option(c, OSSL_CMP_OPT_DIGEST_ALGNID, NID_md5); });
    if (o.rsp_body < 0) GTEST_SKIP() << "this OpenSSL refuses to sign with MD5 at all (nothing reached the server)";
    EXPECT_ERROR_WITH(o, OSSL_CMP_PKIFAILUREINFO_badAlg);
    EXPECT_NE(o.status_text.find("MD5"), std::string::npos) << o.status_text;
    EXPECT_EQ(counter("cmp.reject.weak_alg_protection"), 1u);
    expect_nothing_stored();
}

TEST_F(ErrFixture, Sha1PopIsBadAlgInIp) {
    auto dev = lab().device(lab().vendor_a, "0023a1b2c408", kRealm);
    auto nk = p256();
    const std::string id = std::string("0023a1b2c408.") + kRealm;
    OSSL_CRMF_MSG* crm = OSSL_CRMF_MSG_new();
    OSSL_CRMF_MSG_set_certReqId(crm, 0);
    auto subj = pki::parse_name("/CN=" + id).value();
    OSSL_CRMF_CERTTEMPLATE_fill(OSSL_CRMF_MSG_get0_tmpl(crm), nk.get(), subj.get(), nullptr, nullptr);
    ASSERT_EQ(OSSL_CRMF_MSG_create_popo(OSSL_CRMF_POPO_SIGNATURE, crm, nk.get(), EVP_sha1(), nullptr, nullptr), 1);
    auto o = run_device(dev, nk.get(), id, {}, crm);
    OSSL_CRMF_MSG_free(crm);
    EXPECT_FALSE(o.enrolled);
    EXPECT_EQ(o.rsp_body, kIpBody);
    EXPECT_EQ(o.fail_info, 1 << OSSL_CMP_PKIFAILUREINFO_badAlg) << o.status_text;
    EXPECT_NE(o.status_text.find("POP"), std::string::npos) << o.status_text;
    EXPECT_TRUE(o.rsp_signed_by_ra);
    EXPECT_EQ(counter("cmp.reject.weak_alg_pop"), 1u);
    EXPECT_EQ(certs(), 0);
}

TEST_F(ErrFixture, BadPopIsBadPop) {
    auto dev = lab().device(lab().vendor_a, "0023a1b2c409", kRealm);
    auto ka = p256(), kb = p256();
    const std::string id = std::string("0023a1b2c409.") + kRealm;
    OSSL_CRMF_MSG* crm = OSSL_CRMF_MSG_new();
    OSSL_CRMF_MSG_set_certReqId(crm, 0);
    auto subj = pki::parse_name("/CN=" + id).value();
    OSSL_CRMF_CERTTEMPLATE_fill(OSSL_CRMF_MSG_get0_tmpl(crm), kb.get(), subj.get(), nullptr, nullptr);
    ASSERT_EQ(OSSL_CRMF_MSG_create_popo(OSSL_CRMF_POPO_SIGNATURE, crm, ka.get(), EVP_sha256(), nullptr, nullptr), 1);
    auto o = run_device(dev, kb.get(), id, {}, crm);
    OSSL_CRMF_MSG_free(crm);
    EXPECT_FALSE(o.enrolled);
    EXPECT_EQ(o.rsp_body, kIpBody);
    EXPECT_EQ(o.fail_info, 1 << OSSL_CMP_PKIFAILUREINFO_badPOP) << o.status_text;
    EXPECT_TRUE(o.rsp_signed_by_ra);
    expect_nothing_stored();
}

TEST_F(ErrFixture, UntrustedVendorIsSignerNotTrustedError) {
    auto rogue = make_root_ca("Rogue Vendor");
    auto dev = lab().device(rogue, "0023a1b2c40a", kRealm);
    auto nk = p256();
    auto o = run_device(dev, nk.get(), std::string("0023a1b2c40a.") + kRealm);
    EXPECT_ERROR_WITH(o, OSSL_CMP_PKIFAILUREINFO_signerNotTrusted);
    EXPECT_EQ(counter("cmp.reject.signer_not_trusted"), 1u);
    expect_nothing_stored();
}

TEST_F(ErrFixture, ExpiredVendorIsSignerNotTrustedError) {
    auto dev = lab().device(lab().vendor_a, "0023a1b2c40b", kRealm, -10 * 86400, 86400);
    auto nk = p256();
    auto o = run_device(dev, nk.get(), std::string("0023a1b2c40b.") + kRealm);
    EXPECT_ERROR_WITH(o, OSSL_CMP_PKIFAILUREINFO_signerNotTrusted);
    EXPECT_NE(o.status_text.find("expired"), std::string::npos) << o.status_text;
    EXPECT_EQ(counter("cmp.reject.signer_expired"), 1u);
    expect_nothing_stored();
}

TEST_F(ErrFixture, ReusedTransactionIdIsTransactionIdInUseError) {
    auto dev = lab().device(lab().vendor_a, "0023a1b2c40c", kRealm);
    auto k1 = p256(), k2 = p256();
    const std::string id = std::string("0023a1b2c40c.") + kRealm;
    auto fixed_tid = [](OSSL_CMP_CTX* c) {
        ASN1_OCTET_STRING* os = ASN1_OCTET_STRING_new();
        unsigned char t[16];
        std::fill(std::begin(t), std::end(t), 0x5a);
        ASN1_OCTET_STRING_set(os, t, sizeof t);
        OSSL_CMP_CTX_set1_transactionID(c, os);
        ASN1_OCTET_STRING_free(os);
    };
    ASSERT_TRUE(run_device(dev, k1.get(), id, fixed_tid).enrolled);
    ASSERT_EQ(certs(), 1);
    auto o = run_device(dev, k2.get(), id, fixed_tid);
    EXPECT_ERROR_WITH(o, OSSL_CMP_PKIFAILUREINFO_transactionIdInUse);
    EXPECT_EQ(counter("cmp.reject.transaction_id_in_use"), 1u);
    EXPECT_EQ(certs(), 1);
    EXPECT_EQ(transactions(), 1);
}

TEST_F(ErrFixture, CertConfWithoutTransactionIsBadRequestError) {
    // ir answered, certConf dropped; then a certConf for an unknown transaction.
    auto dev = lab().device(lab().vendor_a, "0023a1b2c40d", kRealm);
    auto nk = p256();
    int n = 0;
    wire.handle = [&](BytesView req) -> Result<Bytes> {
        if (++n == 2) {
            // rewrite nothing: send the certConf to a fresh server on another store (no session
            // there, and no open request either: a server on the same store would resume it,
            // test_cmp_resume.cpp)
            auto other = open_sqlite_store(":memory:");
            EXPECT_TRUE(other.ok());
            Server fresh(lab().server_config(), **other);
            auto r = fresh.handle(req, wall_clock_request());
            EXPECT_EQ(fresh.counters().get("cmp.reject.no_transaction"), 1u);
            EXPECT_EQ(fresh.counters().get("cmp.certconf.not_open"), 1u);
            return r;
        }
        return server->handle(req, wall_clock_request());
    };
    auto o = run_device(dev, nk.get(), std::string("0023a1b2c40d.") + kRealm);
    EXPECT_ERROR_WITH(o, OSSL_CMP_PKIFAILUREINFO_badRequest);
    EXPECT_NE(o.status_text.find("no open transaction"), std::string::npos) << o.status_text;
}

TEST_F(ErrFixture, KurSignedByVendorIsSignerNotTrustedError) {
    auto dev = lab().device(lab().vendor_a, "0023a1b2c40e", kRealm);
    auto nk = p256();
    auto o = run(
        dev.key.get(), dev.cert.get(), {dev.cert.get()}, nk.get(), "",
        [&](OSSL_CMP_CTX* c) { OSSL_CMP_CTX_set1_oldCert(c, dev.cert.get()); }, nullptr, OSSL_CMP_KUR);
    EXPECT_ERROR_WITH(o, OSSL_CMP_PKIFAILUREINFO_signerNotTrusted);
    expect_nothing_stored();
}

// ---------------------------------------------------------------- rr reasons

struct RrFixture : ErrFixture {
    // An enrolled operator credential to revoke.
    pki::PkeyPtr key = p256();
    Enrolled e;
    void SetUp() override {
        auto dev = lab().device(lab().vendor_a, "0023a1b2c4f0", kRealm);
        EnrollRequest r;
        r.transfer = [this](BytesView b) { return server->handle(b, wall_clock_request()); };
        r.auth_key = dev.key.get();
        r.auth_cert = dev.cert.get();
        r.auth_chain = dev.chain_ptrs();
        r.new_key = key.get();
        r.subject = std::string("/CN=0023a1b2c4f0.") + kRealm;
        r.dns = {std::string("0023a1b2c4f0.") + kRealm};
        r.operator_roots = {lab().operator_root.cert.get()};
        auto res = Client::enroll(r);
        ASSERT_TRUE(res.ok()) << res.error().detail();
        e = std::move(*res);
    }
    Status revoke(int reason) {
        RevokeRequest rr;
        rr.transfer = [this](BytesView b) { return server->handle(b, wall_clock_request()); };
        rr.operator_roots = {lab().operator_root.cert.get()};
        rr.key = key.get();
        rr.cert = e.cert.get();
        for (auto& c : e.chain) rr.chain.push_back(c.get());
        rr.reason = reason;
        return Client::revoke(rr);
    }
    // The reasonCode of our certificate's entry in the served CRL (-1: no reasonCode, -2: not listed).
    int crl_reason() {
        auto der = server->crl_der(wall_clock_request().now);
        if (!der) return -3;
        const unsigned char* p = der->data();
        X509_CRL* crl = d2i_X509_CRL(nullptr, &p, static_cast<long>(der->size()));
        if (!crl) return -3;
        X509_REVOKED* rv = nullptr;
        int out = -2;
        if (X509_CRL_get0_by_serial(crl, &rv, X509_get0_serialNumber(e.cert.get())) == 1) {
            auto* en = static_cast<ASN1_ENUMERATED*>(X509_REVOKED_get_ext_d2i(rv, NID_crl_reason, nullptr, nullptr));
            out = en ? static_cast<int>(ASN1_ENUMERATED_get(en)) : -1;
            ASN1_ENUMERATED_free(en);
        }
        X509_CRL_free(crl);
        return out;
    }
    int stored_reason() {
        auto rec = store->find_by_serial(pki::serial_bytes(X509_get0_serialNumber(e.cert.get())));
        return rec.ok() && rec->has_value() && (*rec)->revoked ? (*rec)->revocation_reason : -1;
    }
};

TEST_F(RrFixture, KeyCompromiseReasonIsStoredAndInCrl) {
    auto st = revoke(1);  // keyCompromise
    ASSERT_TRUE(st.ok()) << st.error().detail();
    EXPECT_EQ(stored_reason(), 1);
    EXPECT_EQ(crl_reason(), 1);
}

TEST_F(RrFixture, SupersededReasonIsStoredAndInCrl) {
    ASSERT_TRUE(revoke(4).ok());  // superseded
    EXPECT_EQ(stored_reason(), 4);
    EXPECT_EQ(crl_reason(), 4);
}

TEST_F(RrFixture, NoReasonMeansUnspecifiedWithoutReasonCode) {
    ASSERT_TRUE(revoke(-1).ok());  // OSSL_CMP_OPT_REVOCATION_REASON -1: no crlEntryDetails
    EXPECT_EQ(stored_reason(), 0);
    EXPECT_EQ(crl_reason(), -1);  // listed, no reasonCode (RFC 5280 5.3.1: omit unspecified)
}

TEST_F(RrFixture, RemoveFromCrlIsRefusedInRp) {
    auto st = revoke(8);  // removeFromCRL
    ASSERT_FALSE(st.ok());
    EXPECT_EQ(st.error().code(), OSSL_CMP_PKIFAILUREINFO_badRequest) << st.error().detail();
    EXPECT_NE(st.error().detail().find("revocation reason 8"), std::string::npos) << st.error().detail();
    EXPECT_EQ(stored_reason(), -1);  // not revoked
    EXPECT_EQ(crl_reason(), -2);
    EXPECT_EQ(counter("cmp.reject.bad_revocation_reason"), 1u);
}

TEST_F(RrFixture, RevokedOperatorCertificateCannotRenew) {
    ASSERT_TRUE(revoke(1).ok());
    auto nk = p256();
    std::vector<X509*> chain{e.cert.get()};
    for (auto& c : e.chain) chain.push_back(c.get());
    int64_t before = certs();
    auto o = run(
        key.get(), e.cert.get(), chain, nk.get(), "",
        [&](OSSL_CMP_CTX* c) { OSSL_CMP_CTX_set1_oldCert(c, e.cert.get()); }, nullptr, OSSL_CMP_KUR);
    EXPECT_ERROR_WITH(o, OSSL_CMP_PKIFAILUREINFO_certRevoked);
    EXPECT_NE(o.status_text.find("revoked"), std::string::npos) << o.status_text;
    EXPECT_EQ(counter("cmp.reject.signer_revoked"), 1u);
    EXPECT_EQ(certs(), before);
}

// ---------------------------------------------------------------- requests built by OpenSSL, then mutated
namespace {

// What the server made of one (mutated) request.
struct Verdict {
    bool granted = false;    // an ip/cp/kup carrying a certificate
    bool cmp_error = false;  // a protected `error` body naming a PKIFailureInfo
    bool refused = false;    // not a PKIMessage at all: the transport answers 400
    int fail_bits = 0;
    std::string why;
};

// The PKIStatusInfo of an `error` answer as OpenSSL prints it ("PKIStatus: rejection;
// PKIFailureInfo: ...; StatusString: ..."), found with OpenSSL's TLV reader and decoded by its
// own OSSL_CMP_PKISI template: PKIMessage { header, [23] ErrorMsgContent { pKIStatusInfo, ... } }.
std::string error_status(const Bytes& der) {
    const unsigned char* p = der.data();
    long len = 0;
    int tag = 0, cls = 0;
    std::string out;
    if (ASN1_get_object(&p, &len, &tag, &cls, long(der.size())) & 0x80) return out;
    const unsigned char* end = p + len;
    if (ASN1_get_object(&p, &len, &tag, &cls, end - p) & 0x80) return out;  // header
    p += len;
    if ((ASN1_get_object(&p, &len, &tag, &cls, end - p) & 0x80) || cls != V_ASN1_CONTEXT_SPECIFIC || tag != 23)
        return out;                                                         // body [23]
    if (ASN1_get_object(&p, &len, &tag, &cls, end - p) & 0x80) return out;  // ErrorMsgContent
    OSSL_CMP_PKISI* si = d2i_OSSL_CMP_PKISI(nullptr, &p, end - p);
    if (si) {
        char buf[OSSL_CMP_PKISI_BUFLEN];
        if (const char* t = OSSL_CMP_snprint_PKIStatusInfo(si, buf, sizeof buf)) out = t;
        OSSL_CMP_PKISI_free(si);
    }
    ERR_clear_error();
    return out;
}

Verdict judge(LabPki& lab, const Result<Bytes>& r) {
    Verdict v;
    if (!r) {
        v.refused = true;
        v.why = r.error().detail();
        return v;
    }
    auto m = decode(*r);
    if (!m) {
        v.why = "answer does not decode";
        return v;
    }
    int bt = OSSL_CMP_MSG_get_bodytype(m.get());
    OSSL_CMP_CTX* c = OSSL_CMP_CTX_new(nullptr, nullptr);
    OSSL_CMP_CTX_set1_srvCert(c, lab.ra.cert.get());
    bool signed_by_ra = OSSL_CMP_validate_msg(c, m.get()) == 1;
    OSSL_CMP_CTX_free(c);
    ERR_clear_error();
    if (bt == kErrorBody && signed_by_ra) {
        v.why = error_status(*r);
        v.cmp_error = v.why.find("PKIFailureInfo: ") != std::string::npos;  // names a failure
    } else if (bt == kIpBody || bt == 3 || bt == 8) {
        v.granted = true;
    } else {
        v.why = "body type " + std::to_string(bt) + (signed_by_ra ? "" : " (not signed by the RA)");
    }
    return v;
}

// Offset where the unprotected extraCerts ([1]) begin in a DER PKIMessage, found with OpenSSL's
// own TLV reader (ASN1_get_object); the size of the message if there are none.
size_t extra_certs_offset(const Bytes& der) {
    const unsigned char* p = der.data();
    long len = 0;
    int tag = 0, cls = 0;
    if (ASN1_get_object(&p, &len, &tag, &cls, static_cast<long>(der.size())) & 0x80) return der.size();
    const unsigned char* end = p + len;
    while (p < end) {
        const unsigned char* at = p;
        if (ASN1_get_object(&p, &len, &tag, &cls, end - p) & 0x80) break;
        if (cls == V_ASN1_CONTEXT_SPECIFIC && tag == 1) return static_cast<size_t>(at - der.data());
        p += len;
    }
    ERR_clear_error();
    return der.size();
}

}  // namespace

// One valid ir (built and signed by OpenSSL's client), then every truncation and a bit flip in
// every octet: each is refused as not a PKIMessage (counted cmp.rx.bad_der) or answered with a
// protected error; none is granted, nothing is stored; and a valid enrolment works afterwards.
TEST_F(ErrFixture, EveryTruncationAndBitFlipOfAnIrIsRefused) {
    auto dev = lab().device(lab().vendor_a, "0023a1b2c420", kRealm);
    auto nk = p256();
    Bytes ir;
    wire.handle = [&](BytesView req) -> Result<Bytes> {
        ir.assign(req.begin(), req.end());
        return Error(ErrorDomain::Io, 0, "captured");
    };
    (void)run_device(dev, nk.get(), std::string("0023a1b2c420.") + kRealm);
    ASSERT_GT(ir.size(), 500u);
    const size_t protected_end = extra_certs_offset(ir);
    ASSERT_LT(protected_end, ir.size()) << "the ir carries no extraCerts";

    size_t refused = 0, errors = 0, granted_unprotected_part = 0;
    std::map<std::string, size_t> failures;
    for (size_t n = 0; n < ir.size(); ++n) {
        auto v = judge(lab(), server->handle(BytesView(ir.data(), n), wall_clock_request()));
        ASSERT_FALSE(v.granted) << "ir cut to " << n << " was granted";
        ASSERT_TRUE(v.refused || v.cmp_error) << "ir cut to " << n << ": " << v.why;
        (v.refused ? refused : errors)++;
    }
    for (size_t i = 0; i < ir.size(); ++i) {
        Bytes m = ir;
        m[i] ^= static_cast<uint8_t>(1u << (i % 8));
        auto v = judge(lab(), server->handle(m, wall_clock_request()));
        if (v.granted) {
            // Only a flip in an extraCert the server does not need (it holds the chain itself)
            // can leave a request valid; the signed part never.
            ASSERT_GE(i, protected_end) << "flip at " << i << " in the protected part was granted";
            ++granted_unprotected_part;
            continue;
        }
        ASSERT_TRUE(v.refused || v.cmp_error) << "flip at " << i << ": " << v.why;
        (v.refused ? refused : errors)++;
        if (v.cmp_error) {
            auto k = v.why.find("PKIFailureInfo: ");
            failures[v.why.substr(k + 16, v.why.find(';', k) - k - 16)]++;
        }
    }
    for (const auto& [name, n] : failures) std::cout << "[ info ]   " << name << ": " << n << "\n";
    std::cout << "[ info ] ir of " << ir.size() << " octets: " << refused << " refused as not DER, " << errors
              << " answered with a protected error, " << granted_unprotected_part
              << " flips in unused extraCerts accepted\n";
    EXPECT_EQ(counter("cmp.rx.bad_der"), refused);
    EXPECT_EQ(counter("cmp.rx.messages"), 2 * ir.size());
    EXPECT_GT(counter("cmp.reject.bad_message_check"), 0u);
    EXPECT_EQ(certs(), int64_t(granted_unprotected_part));

    wire.handle = [this](BytesView b) { return server->handle(b, wall_clock_request()); };
    auto ok = run_device(lab().device(lab().vendor_a, "0023a1b2c421", kRealm), nk.get(),
                         std::string("0023a1b2c421.") + kRealm);
    EXPECT_TRUE(ok.enrolled) << ok.status_text;
}

// Replays: the exact bytes of an answered ir and of its certConf sent again, to the same server
// and to a second server sharing the store (another RA instance).
TEST_F(ErrFixture, ReplayedIrAndCertConfAreRefused) {
    auto dev = lab().device(lab().vendor_a, "0023a1b2c422", kRealm);
    auto nk = p256();
    std::vector<Bytes> sent;
    wire.handle = [&](BytesView req) -> Result<Bytes> {
        sent.emplace_back(req.begin(), req.end());
        return server->handle(req, wall_clock_request());
    };
    auto o = run_device(dev, nk.get(), std::string("0023a1b2c422.") + kRealm);
    ASSERT_TRUE(o.enrolled) << o.status_text;
    ASSERT_EQ(sent.size(), 2u);  // ir, certConf
    ASSERT_EQ(certs(), 1);

    auto expect_error = [&](Server& s, const Bytes& req, const char* failure, const char* what) {
        auto v = judge(lab(), s.handle(req, wall_clock_request()));
        EXPECT_FALSE(v.granted) << what;
        EXPECT_TRUE(v.cmp_error) << what << ": " << v.why;
        EXPECT_NE(v.why.find(std::string("PKIFailureInfo: ") + failure), std::string::npos) << what << ": " << v.why;
    };
    expect_error(*server, sent[0], "transactionIdInUse", "replayed ir");
    EXPECT_EQ(counter("cmp.reject.transaction_id_in_use"), 1u);
    expect_error(*server, sent[1], "badRequest", "replayed certConf");
    EXPECT_EQ(counter("cmp.reject.no_transaction"), 1u);
    Server other(lab().server_config(), *store);
    expect_error(other, sent[0], "transactionIdInUse", "ir replayed to another RA");
    EXPECT_EQ(other.counters().get("cmp.reject.transaction_id_in_use"), 1u);
    EXPECT_EQ(certs(), 1);
    EXPECT_EQ(transactions(), 1);
}

// Invalid UTF-8 in the requested subject (octets ff fe written over the template's CN in a
// signed ir): OpenSSL's X509_NAME decoder refuses the message before anything else looks at it
// (not a PKIMessage: cmp.rx.bad_der, HTTP 400); an oversized CN (300 octets, above X.520's
// ub-common-name 64) in a correctly signed ir is rejected in the ip. Nothing is issued, and a
// valid enrolment works afterwards.
TEST_F(ErrFixture, InvalidUtf8AndOversizedSubjectAreRefused) {
    auto dev = lab().device(lab().vendor_a, "0023a1b2c423", kRealm);
    auto nk = p256();
    const std::string id = std::string("0023a1b2c423.") + kRealm;
    bool parsed = true;
    std::string refusal;
    wire.handle = [&](BytesView req) -> Result<Bytes> {
        Bytes m(req.begin(), req.end());
        std::string text(m.begin(), m.end());
        auto pos = text.find(id);
        pos = text.find(id, pos + 1);  // the template's CN (the first is the signer's certificate)
        if (pos != std::string::npos) m[pos] = 0xff, m[pos + 1] = 0xfe;
        auto r = server->handle(m, wall_clock_request());
        parsed = r.ok();
        if (!r.ok()) refusal = r.error().detail();
        return r;
    };
    auto o = run_device(dev, nk.get(), id);
    EXPECT_FALSE(o.enrolled);
    ASSERT_FALSE(parsed) << "a subject that is not UTF-8 was parsed";
    EXPECT_NE(refusal.find("not a DER PKIMessage"), std::string::npos) << refusal;
    EXPECT_EQ(counter("cmp.rx.bad_der"), 1u);

    wire.handle = [this](BytesView b) { return server->handle(b, wall_clock_request()); };
    const std::string big(300, 'a');  // pki::parse_name refuses it, so set it through OpenSSL directly
    o = run_device(dev, nk.get(), "", [&](OSSL_CMP_CTX* c) {
        X509_NAME* n = X509_NAME_new();
        X509_NAME_add_entry_by_NID(n, NID_commonName, V_ASN1_UTF8STRING,
                                   reinterpret_cast<const unsigned char*>(big.data()), int(big.size()), -1, 0);
        OSSL_CMP_CTX_set1_subjectName(c, n);
        X509_NAME_free(n);
    });
    EXPECT_FALSE(o.enrolled) << o.status_text;
    EXPECT_EQ(o.rsp_body, kIpBody);
    EXPECT_TRUE(o.rsp_signed_by_ra);
    EXPECT_NE(o.fail_info, 0) << o.status_text;
    EXPECT_NE(o.status_text.find("rejection"), std::string::npos) << o.status_text;
    EXPECT_EQ(certs(), 0);
    auto ok = run_device(dev, nk.get(), id);
    EXPECT_TRUE(ok.enrolled) << ok.status_text;
}

namespace {
// Transfer callback that re-stamps the certConf with another transactionID and lets OpenSSL
// re-protect it with the client's key (OSSL_CMP_MSG_update_transactionID): a correctly signed
// certConf for a transaction that does not exist.
OSSL_CMP_MSG* wrong_tid_certconf_cb(OSSL_CMP_CTX* c, const OSSL_CMP_MSG* req) {
    if (OSSL_CMP_MSG_get_bodytype(req) == 24) {  // certConf
        ASN1_OCTET_STRING* os = ASN1_OCTET_STRING_new();
        unsigned char t[16];
        std::fill(std::begin(t), std::end(t), 0xa5);
        ASN1_OCTET_STRING_set(os, t, sizeof t);
        OSSL_CMP_CTX_set1_transactionID(c, os);
        ASN1_OCTET_STRING_free(os);
        if (OSSL_CMP_MSG_update_transactionID(c, const_cast<OSSL_CMP_MSG*>(req)) != 1) return nullptr;
    }
    return test::cmp_wire_transfer(c, req);
}
}  // namespace

// A certConf whose transactionID is not the ir's (re-protected, so the signature is valid): the
// RA finds no open transaction for it (badRequest, counted) and the certificate issued in the ip
// is not confirmed by it.
TEST_F(ErrFixture, CertConfWithWrongTransactionIdIsBadRequest) {
    auto dev = lab().device(lab().vendor_a, "0023a1b2c424", kRealm);
    auto nk = p256();
    auto o = run_device(dev, nk.get(), std::string("0023a1b2c424.") + kRealm,
                        [](OSSL_CMP_CTX* c) { OSSL_CMP_CTX_set_transfer_cb(c, wrong_tid_certconf_cb); });
    EXPECT_FALSE(o.enrolled);
    auto rsp = decode(wire.last_response);
    ASSERT_TRUE(rsp);
    EXPECT_EQ(OSSL_CMP_MSG_get_bodytype(rsp.get()), kErrorBody);
    auto v = judge(lab(), Result<Bytes>(wire.last_response));
    EXPECT_TRUE(v.cmp_error) << v.why;
    EXPECT_NE(v.why.find("PKIFailureInfo: badRequest"), std::string::npos) << v.why;
    EXPECT_NE(v.why.find("no open transaction a5a5a5a5"), std::string::npos) << v.why;
    EXPECT_EQ(counter("cmp.reject.no_transaction"), 1u);
    ASSERT_EQ(certs(), 1);  // issued in the ip, never confirmed
    auto req = decode(wire.last_request);
    ASSERT_TRUE(req);
    EXPECT_EQ(tid_of(req.get()), Bytes(16, 0xa5));
}

namespace {
// A PKCS#10 request for `cn` (and a dNSName SAN when given), self-signed with `key`.
X509_REQ* make_csr(EVP_PKEY* key, const std::string& cn, const std::string& san, const EVP_MD* md) {
    X509_REQ* r = X509_REQ_new();
    auto n = pki::parse_name("/CN=" + cn).value();
    X509_REQ_set_subject_name(r, n.get());
    X509_REQ_set_pubkey(r, key);
    if (!san.empty()) {
        STACK_OF(X509_EXTENSION)* exts = sk_X509_EXTENSION_new_null();
        X509V3_CTX v3;
        X509V3_set_ctx_nodb(&v3);
        X509V3_set_ctx(&v3, nullptr, nullptr, r, nullptr, 0);
        sk_X509_EXTENSION_push(exts, X509V3_EXT_conf_nid(nullptr, &v3, NID_subject_alt_name, ("DNS:" + san).c_str()));
        X509_REQ_add_extensions(r, exts);
        sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
    }
    X509_REQ_sign(r, key, md);
    return r;
}
}  // namespace

// p10cr exactly as OpenSSL's client sends it (OSSL_CMP_exec_certreq with a PKCS#10 CSR): no
// certReqId in the request, -1 in the cp and in the certConf (RFC 9483 4.1.4).
TEST_F(ErrFixture, P10crAsOpenSslSendsItIsAcceptedAndConfirmed) {
    auto dev = lab().device(lab().vendor_a, "0023a1b2c4a1", kRealm);
    auto nk = p256();
    const std::string id = std::string("0023a1b2c4a1.") + kRealm;
    X509_REQ* csr = make_csr(nk.get(), id, id, EVP_sha256());
    std::vector<X509*> chain{dev.cert.get()};
    for (X509* x : dev.chain_ptrs()) chain.push_back(x);
    auto o = run(
        dev.key.get(), dev.cert.get(), chain, nullptr, "", [&](OSSL_CMP_CTX* c) { OSSL_CMP_CTX_set1_p10CSR(c, csr); },
        nullptr, OSSL_CMP_P10CR);
    X509_REQ_free(csr);
    EXPECT_TRUE(o.enrolled) << o.status_text;
    EXPECT_EQ(o.rsp_body, 19);  // pkiConf after certConf
    ASSERT_EQ(certs(), 1);
    auto tx = store->find_by_transaction(tid_of(decode(wire.last_request).get())).value();
    ASSERT_TRUE(tx.has_value());
    EXPECT_EQ(tx->body, "p10cr");
    EXPECT_EQ(tx->status, "confirmed");
    EXPECT_EQ(tx->sans, id);
    EXPECT_EQ(counter("cmp.reject.bad_request"), 0u);
}

TEST_F(ErrFixture, P10crForAForeignIdentityIsNotAuthorizedInCp) {
    auto dev = lab().device(lab().vendor_a, "0023a1b2c4a2", kRealm);
    auto nk = p256();
    X509_REQ* csr = make_csr(nk.get(), std::string("001122334455.") + kRealm, "", EVP_sha256());
    std::vector<X509*> chain{dev.cert.get()};
    for (X509* x : dev.chain_ptrs()) chain.push_back(x);
    auto o = run(
        dev.key.get(), dev.cert.get(), chain, nullptr, "", [&](OSSL_CMP_CTX* c) { OSSL_CMP_CTX_set1_p10CSR(c, csr); },
        nullptr, OSSL_CMP_P10CR);
    X509_REQ_free(csr);
    EXPECT_FALSE(o.enrolled);
    EXPECT_EQ(o.rsp_body, 3);  // cp
    EXPECT_EQ(o.fail_info, 1 << OSSL_CMP_PKIFAILUREINFO_notAuthorized) << o.status_text;
    expect_nothing_stored();
}

TEST_F(ErrFixture, P10crWithSha1CsrSignatureIsBadAlgInCp) {
    auto dev = lab().device(lab().vendor_a, "0023a1b2c4a3", kRealm);
    auto nk = p256();
    const std::string id = std::string("0023a1b2c4a3.") + kRealm;
    X509_REQ* csr = make_csr(nk.get(), id, "", EVP_sha1());
    std::vector<X509*> chain{dev.cert.get()};
    for (X509* x : dev.chain_ptrs()) chain.push_back(x);
    auto o = run(
        dev.key.get(), dev.cert.get(), chain, nullptr, "", [&](OSSL_CMP_CTX* c) { OSSL_CMP_CTX_set1_p10CSR(c, csr); },
        nullptr, OSSL_CMP_P10CR);
    X509_REQ_free(csr);
    EXPECT_FALSE(o.enrolled);
    EXPECT_EQ(o.fail_info, 1 << OSSL_CMP_PKIFAILUREINFO_badAlg) << o.status_text;
    EXPECT_EQ(counter("cmp.reject.weak_alg_pop"), 1u);
    expect_nothing_stored();
}
