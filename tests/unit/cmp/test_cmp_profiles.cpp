// Certificate profiles (/.well-known/cmp/p/<name>): per-profile identity policy for the
// subjectAltName types dNSName, iPAddress and URI, each refusal a protected answer with the
// PKIFailureInfo bit; and the server's clock taken from the caller (RequestContext::now).
#include <gtest/gtest.h>
#include <openssl/asn1t.h>
#include <openssl/cmp.h>
#include <openssl/x509v3.h>
#include <ctime>
#include <functional>
#include <future>
#include <thread>
#include <x2sec/cmp/lab_pki.hpp>
#include <x2sec/cmp/profile.hpp>
#include <x2sec/cmp/server.hpp>
#include <x2sec/test/cmp_wire.hpp>

using namespace x2sec;
using namespace x2sec::cmp;

namespace {

const char* kRealm = "henb.vendor-a.example";
constexpr int kErrorBody = 23, kIpBody = 1;

LabPki& lab() {
    static LabPki p = make_lab_pki();
    return p;
}

struct Result_ {
    pki::X509Ptr cert;
    int fail_info = 0;
    int rsp_body = -1;
    bool rsp_signed_by_ra = false;
    std::string status;
};

GENERAL_NAME* gen(int type, const std::string& v) {
    GENERAL_NAME* g = GENERAL_NAME_new();
    if (type == GEN_IPADD) {
        GENERAL_NAME_set0_value(g, GEN_IPADD, a2i_IPADDRESS(v.c_str()));
    } else {
        ASN1_IA5STRING* s = ASN1_IA5STRING_new();
        ASN1_STRING_set(s, v.data(), static_cast<int>(v.size()));
        GENERAL_NAME_set0_value(g, type, s);
    }
    return g;
}

struct ProfileFixture : ::testing::Test {
    std::unique_ptr<Store> store = std::move(open_sqlite_store(":memory:").value());
    std::unique_ptr<Server> server;
    int64_t now = static_cast<int64_t>(std::time(nullptr));
    ProfileFixture() {
        ServerConfig c = lab().server_config();
        IssuanceProfile odu;  // an O-RAN O-DU: its node identity, an IP in the fronthaul range, a URN
        odu.name = "odu";
        odu.ip = {"192.0.2.0/24", "2001:db8::/32"};
        odu.uri = {"urn:o-ran:du:{eui}"};
        odu.required = {"ip"};
        odu.validity_days = 30;
        c.policy.profiles["odu"] = odu;
        IssuanceProfile lab_p;  // any name under the identity's realm
        lab_p.name = "lab";
        lab_p.dns = {"{identity}", "*.{realm}"};
        c.policy.profiles["lab"] = lab_p;
        IssuanceProfile hold;
        hold.name = "hold";
        hold.approval = Approval::Manual;
        c.policy.profiles["hold"] = hold;
        c.policy.poll_interval_s = 1;
        server = std::make_unique<Server>(std::move(c), *store);
    }
    uint64_t counter(const std::string& n) { return server->counters().get(n); }
    std::function<Result<Bytes>(BytesView, const std::string&)> route;  // replaces server->handle when set

    // An ir (OpenSSL's client) signed by `dev` to `profile`, asking for `sans` (type, value).
    Result_ enrol(const LabCredential& dev, const std::string& profile, const std::string& cn,
                  const std::vector<std::pair<int, std::string>>& sans, int64_t at = 0) {
        test::CmpWire x;
        x.handle = [&](BytesView b) {
            if (route) return route(b, profile);
            return server->handle(b, RequestContext{profile, at ? at : now});
        };
        auto nk = pki::generate_key(pki::KeyAlg::EcP256).value();
        OSSL_CMP_CTX* ctx = OSSL_CMP_CTX_new(nullptr, nullptr);
        test::attach(ctx, x);
        OSSL_CMP_CTX_set1_cert(ctx, dev.cert.get());
        OSSL_CMP_CTX_set1_pkey(ctx, dev.key.get());
        STACK_OF(X509)* sk = test::x509_stack(dev.chain_ptrs());
        OSSL_CMP_CTX_set1_untrusted(ctx, sk);
        sk_X509_pop_free(sk, X509_free);
        test::trust_operator_ca(ctx, lab());
        EVP_PKEY_up_ref(nk.get());
        OSSL_CMP_CTX_set0_newPkey(ctx, 1, nk.get());
        if (!cn.empty()) {
            auto n = pki::parse_name("/CN=" + cn).value();
            OSSL_CMP_CTX_set1_subjectName(ctx, n.get());
        }
        for (auto& [t, v] : sans) {
            GENERAL_NAME* g = gen(t, v);
            OSSL_CMP_CTX_push1_subjectAltName(ctx, g);
            GENERAL_NAME_free(g);
        }
        Result_ r;
        if (X509* c = OSSL_CMP_exec_certreq(ctx, OSSL_CMP_IR, nullptr)) r.cert = pki::up_ref(c);
        r.fail_info = OSSL_CMP_CTX_get_failInfoCode(ctx);
        char buf[OSSL_CMP_PKISI_BUFLEN];
        if (const char* t = OSSL_CMP_CTX_snprint_PKIStatus(ctx, buf, sizeof buf)) r.status = t;
        OSSL_CMP_CTX_free(ctx);
        ERR_clear_error();
        if (!x.last_response.empty()) {
            const unsigned char* p = x.last_response.data();
            OSSL_CMP_MSG* m = d2i_OSSL_CMP_MSG(nullptr, &p, static_cast<long>(x.last_response.size()));
            if (m) {
                r.rsp_body = OSSL_CMP_MSG_get_bodytype(m);
                OSSL_CMP_CTX* v = OSSL_CMP_CTX_new(nullptr, nullptr);
                OSSL_CMP_CTX_set1_srvCert(v, lab().ra.cert.get());
                r.rsp_signed_by_ra = OSSL_CMP_validate_msg(v, m) == 1;
                OSSL_CMP_CTX_free(v);
                OSSL_CMP_MSG_free(m);
                ERR_clear_error();
            }
        }
        return r;
    }
};

std::vector<std::string> sans_of(X509* x, int type) {
    std::vector<std::string> out;
    auto* names = static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(x, NID_subject_alt_name, nullptr, nullptr));
    for (int i = 0; names && i < sk_GENERAL_NAME_num(names); ++i) {
        GENERAL_NAME* g = sk_GENERAL_NAME_value(names, i);
        if (g->type != type) continue;
        if (type == GEN_IPADD) {
            const ASN1_OCTET_STRING* a = g->d.iPAddress;
            char buf[64];
            if (ASN1_STRING_length(a) == 4) {
                const unsigned char* d = ASN1_STRING_get0_data(a);
                snprintf(buf, sizeof buf, "%d.%d.%d.%d", d[0], d[1], d[2], d[3]);
                out.push_back(buf);
            } else {
                out.push_back("v6:" + std::to_string(ASN1_STRING_length(a)));
            }
        } else {
            const ASN1_STRING* s = type == GEN_DNS ? g->d.dNSName : g->d.uniformResourceIdentifier;
            out.emplace_back(reinterpret_cast<const char*>(ASN1_STRING_get0_data(s)),
                             static_cast<size_t>(ASN1_STRING_length(s)));
        }
    }
    GENERAL_NAMES_free(names);
    return out;
}

#define EXPECT_REJECTED_IN_IP(r, bit)                                                           \
    do {                                                                                        \
        EXPECT_FALSE((r).cert);                                                                 \
        EXPECT_EQ((r).rsp_body, kIpBody) << (r).status;                                         \
        EXPECT_EQ((r).fail_info, 1 << (bit)) << (r).status;                                     \
        EXPECT_TRUE((r).rsp_signed_by_ra) << "rejection not protected with the RA certificate"; \
    } while (0)

}  // namespace

TEST(ProfilePatterns, DnsUriAndIpMatching) {
    const std::string id = "0023a1b2c3d4.henb.vendor-a.example";
    EXPECT_TRUE(match_dns_pattern("{identity}", "0023A1B2C3D4.henb.vendor-a.example", id));
    EXPECT_FALSE(match_dns_pattern("{identity}", "0023a1b2c3d5.henb.vendor-a.example", id));
    EXPECT_TRUE(match_dns_pattern("*.{realm}", "du7.henb.vendor-a.example", id));
    EXPECT_FALSE(match_dns_pattern("*.{realm}", "a.b.henb.vendor-a.example", id)) << "* must not span labels";
    EXPECT_FALSE(match_dns_pattern("*.{realm}", ".henb.vendor-a.example", id)) << "* matches at least one character";
    EXPECT_TRUE(match_dns_pattern("{eui}.du.example", "0023a1b2c3d4.du.example", id));
    EXPECT_TRUE(match_uri_pattern("urn:o-ran:du:{eui}", "urn:o-ran:du:0023a1b2c3d4", id));
    EXPECT_FALSE(match_uri_pattern("urn:o-ran:du:{eui}", "urn:o-ran:du:0023a1b2c3d5", id));
    EXPECT_TRUE(match_uri_pattern("https://{realm}/node/*", "https://henb.vendor-a.example/node/7", id));
    EXPECT_FALSE(match_uri_pattern("https://{realm}/node/*", "https://henb.vendor-a.example/node/7/x", id));
    EXPECT_TRUE(ip_in_range("192.0.2.0/24", "192.0.2.255").value());
    EXPECT_FALSE(ip_in_range("192.0.2.0/24", "192.0.3.1").value());
    EXPECT_TRUE(ip_in_range("192.0.2.128/25", "192.0.2.200").value());
    EXPECT_FALSE(ip_in_range("192.0.2.128/25", "192.0.2.100").value());
    EXPECT_TRUE(ip_in_range("2001:db8::/32", "2001:db8:1::7").value());
    EXPECT_FALSE(ip_in_range("2001:db8::/32", "2001:db9::1").value());
    EXPECT_FALSE(ip_in_range("2001:db8::/32", "192.0.2.1").value()) << "families never match";
    EXPECT_TRUE(ip_in_range("198.51.100.7", "198.51.100.7").value());
    EXPECT_FALSE(ip_in_range("192.0.2.0/33", "192.0.2.1").ok());
    EXPECT_FALSE(ip_in_range("not-an-ip", "192.0.2.1").ok());
}

TEST(ProfilePatterns, ValidateRefusesBrokenProfiles) {
    IssuanceProfile p;
    p.name = "x";
    EXPECT_TRUE(p.validate().ok());
    p.required = {"ip"};
    EXPECT_FALSE(p.validate().ok()) << "ip required but no range permitted";
    p.ip = {"192.0.2.0/24"};
    EXPECT_TRUE(p.validate().ok());
    p.required = {"email"};
    EXPECT_FALSE(p.validate().ok());
    p.required = {};
    p.ip = {"192.0.2.0/40"};
    EXPECT_FALSE(p.validate().ok());
    p.ip = {};
    p.dns = {""};
    EXPECT_FALSE(p.validate().ok());
}

TEST_F(ProfileFixture, OduProfileIssuesIdentityIpAndUri) {
    auto dev = lab().device(lab().vendor_a, "0023a1b2c5a1", kRealm);
    const std::string id = std::string("0023a1b2c5a1.") + kRealm;
    auto r = enrol(
        dev, "odu", id,
        {{GEN_DNS, id}, {GEN_IPADD, "192.0.2.7"}, {GEN_IPADD, "2001:db8::7"}, {GEN_URI, "urn:o-ran:du:0023a1b2c5a1"}});
    ASSERT_TRUE(r.cert) << r.status;
    EXPECT_EQ(sans_of(r.cert.get(), GEN_DNS), std::vector<std::string>{id});
    EXPECT_EQ(sans_of(r.cert.get(), GEN_IPADD), (std::vector<std::string>{"192.0.2.7", "v6:16"}));
    EXPECT_EQ(sans_of(r.cert.get(), GEN_URI), std::vector<std::string>{"urn:o-ran:du:0023a1b2c5a1"});
    // validity from the profile (30 days), counted from the caller's time
    EXPECT_EQ(pki::not_before(r.cert.get()), now - 60);
    EXPECT_EQ(pki::not_after(r.cert.get()) - pki::not_before(r.cert.get()), 60 + 30 * 86400);
    auto c = store->counts().value();
    EXPECT_EQ(c.certificates, 1);
}

TEST_F(ProfileFixture, OduWithoutIpIsBadCertTemplate) {
    auto dev = lab().device(lab().vendor_a, "0023a1b2c5a2", kRealm);
    const std::string id = std::string("0023a1b2c5a2.") + kRealm;
    auto r = enrol(dev, "odu", id, {{GEN_DNS, id}});
    EXPECT_REJECTED_IN_IP(r, OSSL_CMP_PKIFAILUREINFO_badCertTemplate);
    EXPECT_NE(r.status.find("requires an iPAddress"), std::string::npos) << r.status;
    EXPECT_EQ(counter("cmp.reject.san_missing"), 1u);
    EXPECT_EQ(store->counts()->certificates, 0);
}

TEST_F(ProfileFixture, OduIpOutsideItsRangesIsNotAuthorized) {
    auto dev = lab().device(lab().vendor_a, "0023a1b2c5a3", kRealm);
    const std::string id = std::string("0023a1b2c5a3.") + kRealm;
    auto r = enrol(dev, "odu", id, {{GEN_DNS, id}, {GEN_IPADD, "198.51.100.7"}});
    EXPECT_REJECTED_IN_IP(r, OSSL_CMP_PKIFAILUREINFO_notAuthorized);
    EXPECT_NE(r.status.find("198.51.100.7"), std::string::npos) << r.status;
    EXPECT_EQ(counter("cmp.reject.san_not_allowed"), 1u);
    EXPECT_EQ(store->counts()->certificates, 0);
}

TEST_F(ProfileFixture, OduUriOfAnotherNodeIsNotAuthorized) {
    auto dev = lab().device(lab().vendor_a, "0023a1b2c5a4", kRealm);
    const std::string id = std::string("0023a1b2c5a4.") + kRealm;
    auto r = enrol(dev, "odu", id, {{GEN_IPADD, "192.0.2.8"}, {GEN_URI, "urn:o-ran:du:0023a1b2c5ff"}});
    EXPECT_REJECTED_IN_IP(r, OSSL_CMP_PKIFAILUREINFO_notAuthorized);
    EXPECT_EQ(counter("cmp.reject.san_not_allowed"), 1u);
}

TEST_F(ProfileFixture, DefaultProfileRefusesIpAndUriTypes) {
    auto dev = lab().device(lab().vendor_a, "0023a1b2c5a5", kRealm);
    const std::string id = std::string("0023a1b2c5a5.") + kRealm;
    auto r = enrol(dev, "", id, {{GEN_DNS, id}, {GEN_IPADD, "192.0.2.9"}});
    EXPECT_REJECTED_IN_IP(r, OSSL_CMP_PKIFAILUREINFO_badCertTemplate);
    EXPECT_NE(r.status.find("iPAddress subjectAltNames are not permitted by the default profile"), std::string::npos)
        << r.status;
    auto u = enrol(dev, "", id, {{GEN_URI, "urn:o-ran:du:0023a1b2c5a5"}});
    EXPECT_REJECTED_IN_IP(u, OSSL_CMP_PKIFAILUREINFO_badCertTemplate);
    EXPECT_EQ(counter("cmp.reject.san_type"), 2u);
    // and the plain identity still enrols there
    auto ok = enrol(dev, "", id, {{GEN_DNS, id}});
    EXPECT_TRUE(ok.cert) << ok.status;
}

TEST_F(ProfileFixture, OtherNameTypesAreBadCertTemplate) {
    auto dev = lab().device(lab().vendor_a, "0023a1b2c5a6", kRealm);
    const std::string id = std::string("0023a1b2c5a6.") + kRealm;
    auto r = enrol(dev, "odu", id, {{GEN_IPADD, "192.0.2.10"}, {GEN_EMAIL, "node@example.com"}});
    EXPECT_REJECTED_IN_IP(r, OSSL_CMP_PKIFAILUREINFO_badCertTemplate);
    EXPECT_NE(r.status.find("rfc822Name"), std::string::npos) << r.status;
}

TEST_F(ProfileFixture, WildcardPatternAllowsNamesUnderTheRealmOnly) {
    auto dev = lab().device(lab().vendor_a, "0023a1b2c5a7", kRealm);
    const std::string id = std::string("0023a1b2c5a7.") + kRealm;
    auto r = enrol(dev, "lab", id, {{GEN_DNS, id}, {GEN_DNS, std::string("cell7.") + kRealm}});
    ASSERT_TRUE(r.cert) << r.status;
    EXPECT_EQ(sans_of(r.cert.get(), GEN_DNS).size(), 2u);
    auto bad = enrol(dev, "lab", id, {{GEN_DNS, "cell7.henb.vendor-b.example"}});
    EXPECT_REJECTED_IN_IP(bad, OSSL_CMP_PKIFAILUREINFO_notAuthorized);
    EXPECT_EQ(counter("cmp.reject.identity_mismatch"), 1u);
}

TEST_F(ProfileFixture, UnknownProfileIsAProtectedBadRequestError) {
    auto dev = lab().device(lab().vendor_a, "0023a1b2c5a8", kRealm);
    const std::string id = std::string("0023a1b2c5a8.") + kRealm;
    auto r = enrol(dev, "ru", id, {{GEN_DNS, id}});
    EXPECT_FALSE(r.cert);
    EXPECT_EQ(r.rsp_body, kErrorBody);
    EXPECT_EQ(r.fail_info, 1 << OSSL_CMP_PKIFAILUREINFO_badRequest) << r.status;
    EXPECT_TRUE(r.rsp_signed_by_ra);
    EXPECT_EQ(counter("cmp.reject.unknown_profile"), 1u);
    EXPECT_EQ(store->counts()->transactions, 0);
}

// The server reads no clock: the vendor certificate is judged, and the new certificate dated,
// at the time the caller passes.
TEST_F(ProfileFixture, ServerUsesTheCallersTime) {
    auto dev = lab().device(lab().vendor_a, "0023a1b2c5a9", kRealm, -60, 86400);  // valid for one day
    const std::string id = std::string("0023a1b2c5a9.") + kRealm;
    auto later = enrol(dev, "", id, {{GEN_DNS, id}}, now + 2 * 86400);
    EXPECT_FALSE(later.cert);
    EXPECT_EQ(later.rsp_body, kErrorBody);
    EXPECT_EQ(later.fail_info, 1 << OSSL_CMP_PKIFAILUREINFO_signerNotTrusted) << later.status;
    EXPECT_EQ(counter("cmp.reject.signer_expired"), 1u);
    const int64_t t = now + 3600;
    auto ok = enrol(dev, "", id, {{GEN_DNS, id}}, t);
    ASSERT_TRUE(ok.cert) << ok.status;
    EXPECT_EQ(pki::not_before(ok.cert.get()), t - 60);
    auto rec = store->find_by_serial(pki::serial_bytes(X509_get0_serialNumber(ok.cert.get()))).value();
    ASSERT_TRUE(rec.has_value());
    EXPECT_EQ(rec->issued_at, t);
    ASSERT_TRUE(server->revoke(rec->serial, 1, t + 5).ok());
    auto again = store->find_by_serial(rec->serial).value();
    EXPECT_EQ(again->revoked_at, t + 5);
}

namespace {
// Waits (bounded) until the store holds a pending request; returns its transactionID.
Bytes wait_pending(Store& st) {
    for (int i = 0; i < 200; ++i) {
        auto l = st.list_pending();
        if (l.ok())
            for (auto& p : *l)
                if (p.state == "pending") return p.transaction_id;
        std::this_thread::sleep_for(std::chrono::milliseconds(25));
    }
    return {};
}
}  // namespace

// approval = "manual": waiting, pollRep while pending, the certificate at the poll after approval;
// the polls go to a second RA/CA instance sharing the store (its session rebuilt from the store).
TEST_F(ProfileFixture, HeldRequestIsIssuedAtThePollAfterApprovalOnAnotherInstance) {
    const std::string db = "/tmp/x2sec-approval-" + std::to_string(getpid()) + ".db";
    for (auto* sfx : {"", "-wal", "-shm"}) std::remove((db + sfx).c_str());
    auto shared_a = std::move(open_sqlite_store(db).value());
    auto shared_b = std::move(open_sqlite_store(db).value());
    ServerConfig c = lab().server_config();
    IssuanceProfile hold;
    hold.name = "hold";
    hold.approval = Approval::Manual;
    c.policy.profiles["hold"] = hold;
    c.policy.poll_interval_s = 1;
    ServerConfig c2 = lab().server_config();
    c2.policy.profiles["hold"] = hold;
    c2.policy.poll_interval_s = 1;
    Server a2(std::move(c), *shared_a);
    Server b(std::move(c2), *shared_b);
    int n = 0;
    route = [&](BytesView m, const std::string& prof) {
        Server& to = n++ == 0 ? a2 : b;  // the ir to one instance, every poll and the certConf to the other
        return to.handle(m, RequestContext{prof, static_cast<int64_t>(std::time(nullptr))});
    };
    auto dev = lab().device(lab().vendor_a, "0023a1b2c5b1", kRealm);
    const std::string id = std::string("0023a1b2c5b1.") + kRealm;
    auto fut = std::async(std::launch::async, [&] { return enrol(dev, "hold", id, {{GEN_DNS, id}}); });
    Bytes tid = wait_pending(*shared_b);
    ASSERT_FALSE(tid.empty()) << "request not held";
    EXPECT_EQ(shared_b->counts()->certificates, 0);
    std::this_thread::sleep_for(std::chrono::milliseconds(1200));  // at least one pollReq -> pollRep
    ASSERT_TRUE(shared_b->decide_pending(tid, true, "alice", "ok", static_cast<int64_t>(std::time(nullptr))).ok());
    auto r = fut.get();
    ASSERT_TRUE(r.cert) << r.status;
    EXPECT_EQ(r.rsp_body, 19) << "certConf answered with pkiConf";
    EXPECT_GE(b.counters().get("cmp.approval.poll_waiting"), 1u);
    EXPECT_EQ(b.counters().get("cmp.approval.resumed"), 1u);
    EXPECT_EQ(a2.counters().get("cmp.approval.held"), 1u);
    auto rec = shared_b->find_by_transaction(tid).value();
    ASSERT_TRUE(rec.has_value());
    EXPECT_EQ(rec->status, "confirmed");
    EXPECT_EQ(shared_b->find_pending(tid).value()->state, "issued");
    auto log = shared_b->audit_log().value();
    ASSERT_EQ(log.size(), 3u);
    EXPECT_EQ(log[1].actor, "alice");
    EXPECT_TRUE(verify_audit_chain(log).ok());
    for (auto* sfx : {"", "-wal", "-shm"}) std::remove((db + sfx).c_str());
}

TEST_F(ProfileFixture, HeldRequestRejectedByTheOperatorIsNotAuthorized) {
    auto dev = lab().device(lab().vendor_a, "0023a1b2c5b2", kRealm);
    const std::string id = std::string("0023a1b2c5b2.") + kRealm;
    auto fut = std::async(std::launch::async, [&] { return enrol(dev, "hold", id, {{GEN_DNS, id}}); });
    Bytes tid = wait_pending(*store);
    ASSERT_FALSE(tid.empty());
    ASSERT_TRUE(store->decide_pending(tid, false, "alice", "unknown site", now).ok());
    auto r = fut.get();
    EXPECT_FALSE(r.cert);
    EXPECT_EQ(r.rsp_body, kIpBody);
    EXPECT_EQ(r.fail_info, 1 << OSSL_CMP_PKIFAILUREINFO_notAuthorized) << r.status;
    EXPECT_NE(r.status.find("unknown site"), std::string::npos) << r.status;
    EXPECT_TRUE(r.rsp_signed_by_ra);
    EXPECT_EQ(store->counts()->certificates, 0);
    EXPECT_EQ(counter("cmp.reject.operator_rejected"), 1u);
    EXPECT_EQ(server->open_sessions(), 0u);
}

namespace {
typedef STACK_OF(X509) TEST_CA_CERTS;
ASN1_ITEM_TEMPLATE(TEST_CA_CERTS) = ASN1_EX_TEMPLATE_TYPE(ASN1_TFLG_SEQUENCE_OF, 0, caCerts, X509)
    ASN1_ITEM_TEMPLATE_END(TEST_CA_CERTS)
}  // namespace

// genm currentCRL (RFC 9483 4.3.4) and caCerts (4.3.1): the genp's ITAV holds the issuing CA's current CRL, as
// OpenSSL's client decodes it; an infoType not served is left out.
TEST_F(ProfileFixture, GenmAnswersCurrentCrlAndCaCerts) {
    auto dev = lab().device(lab().vendor_a, "0023a1b2c5c1", kRealm);
    test::CmpWire x;
    x.handle = [&](BytesView b) { return server->handle(b, RequestContext{"", now}); };
    OSSL_CMP_CTX* ctx = OSSL_CMP_CTX_new(nullptr, nullptr);
    test::attach(ctx, x);
    OSSL_CMP_CTX_set1_cert(ctx, dev.cert.get());
    OSSL_CMP_CTX_set1_pkey(ctx, dev.key.get());
    test::trust_operator_ca(ctx, lab());
    OSSL_CMP_CTX_push0_genm_ITAV(ctx, OSSL_CMP_ITAV_create(OBJ_nid2obj(NID_id_it_currentCRL), nullptr));
    OSSL_CMP_CTX_push0_genm_ITAV(ctx, OSSL_CMP_ITAV_create(OBJ_nid2obj(NID_id_it_signKeyPairTypes), nullptr));
    OSSL_CMP_CTX_push0_genm_ITAV(ctx, OSSL_CMP_ITAV_create(OBJ_txt2obj("1.3.6.1.5.5.7.4.17", 1), nullptr));
    STACK_OF(OSSL_CMP_ITAV)* got = OSSL_CMP_exec_GENM_ses(ctx);
    ASSERT_NE(got, nullptr);
    ASSERT_EQ(sk_OSSL_CMP_ITAV_num(got), 2) << "currentCRL and caCerts are answered";
    {  // caCerts (RFC 9480 2.4): SEQUENCE OF Certificate = issuing CA, operator root
        OSSL_CMP_ITAV* cc = sk_OSSL_CMP_ITAV_value(got, 1);
        char oid[80];
        OBJ_obj2txt(oid, sizeof oid, OSSL_CMP_ITAV_get0_type(cc), 1);
        EXPECT_STREQ(oid, "1.3.6.1.5.5.7.4.17");
        ASN1_TYPE* v = OSSL_CMP_ITAV_get0_value(cc);
        ASSERT_NE(v, nullptr);
        ASSERT_EQ(ASN1_TYPE_get(v), V_ASN1_SEQUENCE);
        const unsigned char* p = ASN1_STRING_get0_data(v->value.sequence);
        auto* certs = reinterpret_cast<STACK_OF(X509)*>(
            ASN1_item_d2i(nullptr, &p, ASN1_STRING_length(v->value.sequence), ASN1_ITEM_rptr(TEST_CA_CERTS)));
        ASSERT_NE(certs, nullptr);
        ASSERT_EQ(sk_X509_num(certs), 2);
        EXPECT_EQ(X509_cmp(sk_X509_value(certs, 0), lab().operator_issuing.cert.get()), 0);
        EXPECT_EQ(X509_cmp(sk_X509_value(certs, 1), lab().operator_root.cert.get()), 0);
        sk_X509_pop_free(certs, X509_free);
    }
    OSSL_CMP_ITAV* itav = sk_OSSL_CMP_ITAV_value(got, 0);
    EXPECT_EQ(OBJ_obj2nid(OSSL_CMP_ITAV_get0_type(itav)), NID_id_it_currentCRL);
    // OpenSSL decodes the value by its OID as an X509_CRL (union of pointers, see server.cpp)
    auto* crl = reinterpret_cast<X509_CRL*>(OSSL_CMP_ITAV_get0_value(itav));
    ASSERT_NE(crl, nullptr);
    EXPECT_EQ(X509_CRL_verify(crl, X509_get0_pubkey(lab().operator_issuing.cert.get())), 1);
    EXPECT_EQ(X509_NAME_cmp(X509_CRL_get_issuer(crl), X509_get_subject_name(lab().operator_issuing.cert.get())), 0);
    sk_OSSL_CMP_ITAV_pop_free(got, OSSL_CMP_ITAV_free);
    OSSL_CMP_CTX_free(ctx);
    EXPECT_EQ(counter("cmp.genm.current_crl"), 1u);
    EXPECT_EQ(counter("cmp.genm.unsupported"), 1u);
    EXPECT_EQ(counter("cmp.genm.ca_certs"), 1u);
}
