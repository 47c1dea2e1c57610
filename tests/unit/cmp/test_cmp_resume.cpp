// Two RA/CA instances on one store (issue 13 item 4, per-request load balancing): the ir is
// answered by instance A, its certConf reaches instance B, which rebuilds the waiting session
// from the store (the request, our senderNonce, the issued certificate) and finishes it.  A
// transaction closes once, whichever instances see its certConf; a session timeout revokes only
// what the store still holds unconfirmed.  On SQLite (a file both open) and on PostgreSQL 15 (a
// throwaway cluster, skipped with the reason when it cannot run here).
#include <gtest/gtest.h>
#include <unistd.h>
#include <openssl/cmp.h>
#include <algorithm>
#include <atomic>
#include <ctime>
#include <optional>
#include <thread>
#include <x2sec/cmp/client.hpp>
#include <x2sec/cmp/lab_pki.hpp>
#include <x2sec/cmp/server.hpp>
#include <x2sec/test/store_backends.hpp>

using namespace x2sec;
using namespace x2sec::cmp;

namespace {

const char* kRealmA = "henb.vendor-a.example";
constexpr int kPkiConf = 19, kError = 23;

test::PgCluster& pg() {
    static test::PgCluster c("/tmp/x2sec-pg-resume-" + std::to_string(getpid()));
    return c;
}

LabPki& lab() {
    static LabPki p = make_lab_pki();
    return p;
}

int body_type(const Result<Bytes>& rsp) {
    if (!rsp.ok()) return -1;
    const unsigned char* p = rsp->data();
    OSSL_CMP_MSG* m = d2i_OSSL_CMP_MSG(nullptr, &p, static_cast<long>(rsp->size()));
    int bt = m ? OSSL_CMP_MSG_get_bodytype(m) : -1;
    OSSL_CMP_MSG_free(m);
    return bt;
}

enum class ExtraCerts { Keep, Replace };

// `cert_conf` (a certConf as the client sent it, or an altered copy) protected anew by `signer`
// for the transaction `tid`, in *resigned.  ExtraCerts::Replace drops the original's
// extraCerts, so that the signer's own certificate goes in.  Call it in ASSERT_NO_FATAL_FAILURE.
void resign_cert_conf(const Bytes& cert_conf, const Bytes& tid, const LabCredential& signer, ExtraCerts extra,
                      Bytes* resigned) {
    const unsigned char* p = cert_conf.data();
    OSSL_CMP_MSG* msg = d2i_OSSL_CMP_MSG(nullptr, &p, static_cast<long>(cert_conf.size()));
    ASSERT_NE(msg, nullptr);
    OSSL_CMP_CTX* ctx = OSSL_CMP_CTX_new(nullptr, nullptr);
    ASN1_OCTET_STRING* t = ASN1_OCTET_STRING_new();
    ASSERT_TRUE(ASN1_OCTET_STRING_set(t, tid.data(), static_cast<int>(tid.size())));
    ASSERT_EQ(OSSL_CMP_CTX_set1_transactionID(ctx, t), 1);
    ASN1_OCTET_STRING_free(t);
    ASSERT_EQ(OSSL_CMP_CTX_set1_cert(ctx, signer.cert.get()), 1);
    ASSERT_EQ(OSSL_CMP_CTX_set1_pkey(ctx, signer.key.get()), 1);
    if (extra == ExtraCerts::Replace) {
        ASSERT_EQ(OSSL_CMP_CTX_set1_extraCertsOut(ctx, nullptr), 1);
    }
    ASSERT_EQ(OSSL_CMP_MSG_update_transactionID(ctx, msg), 1);
    unsigned char* out = nullptr;
    int n = i2d_OSSL_CMP_MSG(msg, &out);
    ASSERT_GT(n, 0);
    *resigned = Bytes(out, out + n);
    OPENSSL_free(out);
    OSSL_CMP_CTX_free(ctx);
    OSSL_CMP_MSG_free(msg);
}

class Resume : public ::testing::TestWithParam<std::string> {
protected:
    std::optional<test::SqliteFile> file;
    std::string path;
    // Each instance has its own store handle, as two processes would.
    std::unique_ptr<Store> store_a, store_b;
    std::unique_ptr<Server> a, b;
    int64_t now = static_cast<int64_t>(std::time(nullptr));

    Result<std::unique_ptr<Store>> open() {
        return GetParam() == "sqlite" ? open_sqlite_store(path) : open_postgres_store(pg().conninfo);
    }
    void SetUp() override {
        if (GetParam() == "sqlite") {
            file.emplace(::testing::UnitTest::GetInstance()->current_test_info()->name(), "x2sec-resume");
            path = file->path;
        } else {
            if (!pg().started) GTEST_SKIP() << "PostgreSQL resume tests skipped: " << pg().skip_reason;
            { ASSERT_TRUE(open_postgres_store(pg().conninfo).ok()); }
            ASSERT_EQ(pg().drop_store_tables(), 0);
        }
        auto sa = open();
        ASSERT_TRUE(sa.ok()) << sa.error().detail();
        store_a = std::move(sa).value();
        auto sb = open();
        ASSERT_TRUE(sb.ok()) << sb.error().detail();
        store_b = std::move(sb).value();
        a = std::make_unique<Server>(lab().server_config(), *store_a);
        b = std::make_unique<Server>(lab().server_config(), *store_b);
    }
    void TearDown() override {
        a.reset();
        b.reset();
        store_a.reset();
        store_b.reset();
        file.reset();
    }

    // An enrolment whose n-th message (1: ir, 2: certConf) goes to servers[n-1] (null: dropped,
    // the client then fails); every message is kept in `sent`.
    struct Run {
        Result<Enrolled> result = Error("not run");
        std::vector<Bytes> sent;
    };
    Run enroll(const std::string& eui, Bytes tid, std::vector<Server*> servers, int64_t at = 0) {
        return enroll(lab().device(lab().vendor_a, eui, kRealmA), eui, std::move(tid), std::move(servers), at);
    }
    Run enroll(const LabCredential& dev, const std::string& eui, Bytes tid, std::vector<Server*> servers,
               int64_t at = 0) {
        auto nk = pki::generate_key(pki::KeyAlg::EcP256).value();
        Run run;
        EnrollRequest r;
        r.auth_key = dev.key.get();
        r.auth_cert = dev.cert.get();
        r.auth_chain = dev.chain_ptrs();
        r.new_key = nk.get();
        std::string id = eui + "." + kRealmA;
        r.subject = "/O=Operator/CN=" + id;
        r.dns = {id};
        r.operator_roots = {lab().operator_root.cert.get()};
        r.transaction_id = std::move(tid);
        size_t n = 0;
        const int64_t when = at ? at : now;
        r.transfer = [&](BytesView req) -> Result<Bytes> {
            run.sent.emplace_back(req.begin(), req.end());
            Server* s = n < servers.size() ? servers[n] : nullptr;
            ++n;
            if (!s) return Error("dropped");
            return s->handle(req, RequestContext{"", when});
        };
        run.result = Client::enroll(r);
        return run;
    }
    // A session timeout of 2 s on both instances; `later` is past it (close enough to now that
    // the certificates issued then are valid for the client already).
    int64_t short_timeouts() {
        for (Server* s : {a.get(), b.get()}) {
            if (!s) continue;
            auto pol = *s->policy();
            pol.session_timeout_s = 2;
            EXPECT_TRUE(s->set_policy(pol).ok());
        }
        return now + 5;
    }
    CertRecord record(const Bytes& tid) { return store_a->find_by_transaction(tid).value().value(); }
};

}  // namespace

TEST_P(Resume, CertConfOnTheOtherInstanceConfirmsOnceAndAReplayIsRefused) {
    Bytes tid(16, 0x11);
    auto run = enroll("0023a1b2c401", tid, {a.get(), b.get()});
    ASSERT_TRUE(run.result.ok()) << run.result.error().detail();
    ASSERT_EQ(run.sent.size(), 2u);
    EXPECT_EQ(b->counters().get("cmp.session.resumed"), 1u);
    EXPECT_EQ(b->counters().get("cmp.certconf.accepted"), 1u);
    EXPECT_EQ(a->counters().get("cmp.issued"), 1u);
    EXPECT_EQ(b->counters().get("cmp.issued"), 0u);  // B issued nothing: it finished A's transaction
    EXPECT_EQ(record(tid).status, "confirmed");
    EXPECT_EQ(b->open_sessions(), 0u);
    EXPECT_EQ(a->open_sessions(), 1u);  // A still waits for the certConf it never saw

    // The certConf retransmitted to A (its session still open): refused, nothing confirmed twice.
    EXPECT_EQ(body_type(a->handle(run.sent[1], RequestContext{"", now})), kError);
    EXPECT_EQ(a->counters().get("cmp.certconf.accepted"), 0u);
    EXPECT_EQ(a->counters().get("cmp.certconf.closed_elsewhere"), 1u);
    // ... and to B again: no transaction is open any more.
    EXPECT_EQ(body_type(b->handle(run.sent[1], RequestContext{"", now})), kError);
    EXPECT_EQ(b->counters().get("cmp.certconf.not_open"), 1u);
    EXPECT_EQ(b->counters().get("cmp.certconf.accepted"), 1u);
    auto rec = record(tid);
    EXPECT_EQ(rec.status, "confirmed");
    EXPECT_FALSE(rec.revoked);
    EXPECT_FALSE(store_a->find_open_request(tid)->has_value());
    // A retransmitted ir for the tid is still refused (transactionIdInUse).
    auto again = enroll("0023a1b2c401", tid, {b.get(), b.get()});
    ASSERT_FALSE(again.result.ok());
    EXPECT_EQ(again.result.error().code(), OSSL_CMP_PKIFAILUREINFO_transactionIdInUse);
}

TEST_P(Resume, SessionTimeoutOnTheFirstInstanceDoesNotRevokeWhatTheOtherConfirmed) {
    Bytes tid(16, 0x12);
    ASSERT_TRUE(enroll("0023a1b2c402", tid, {a.get(), b.get()}).result.ok());
    ASSERT_EQ(a->open_sessions(), 1u);
    // A later ir on A runs its session timeout over the open session.
    const int64_t later = short_timeouts();
    ASSERT_TRUE(enroll("0023a1b2c403", Bytes(16, 0x13), {a.get(), a.get()}, later).result.ok());
    EXPECT_EQ(a->counters().get("cmp.session.closed_elsewhere"), 1u);
    EXPECT_EQ(a->counters().get("cmp.session.timeout"), 0u);
    auto rec = record(tid);
    EXPECT_EQ(rec.status, "confirmed");
    EXPECT_FALSE(rec.revoked);
    EXPECT_TRUE(store_a->revoked()->empty());
}

TEST_P(Resume, UnconfirmedIsStillRevokedByTheTimeoutAndThenNotResumed) {
    Bytes tid(16, 0x14);
    auto run = enroll("0023a1b2c404", tid, {a.get(), nullptr});  // the certConf is lost
    ASSERT_FALSE(run.result.ok());
    ASSERT_EQ(run.sent.size(), 2u);
    ASSERT_TRUE(store_b->find_open_request(tid)->has_value());
    const int64_t later = short_timeouts();
    ASSERT_TRUE(enroll("0023a1b2c405", Bytes(16, 0x15), {a.get(), a.get()}, later).result.ok());
    EXPECT_EQ(a->counters().get("cmp.session.timeout"), 1u);
    auto rec = record(tid);
    EXPECT_EQ(rec.status, "unconfirmed-timeout");
    EXPECT_TRUE(rec.revoked);
    EXPECT_EQ(rec.revocation_reason, 5);
    // The late certConf on B: nothing open anywhere.
    EXPECT_EQ(body_type(b->handle(run.sent[1], RequestContext{"", later})), kError);
    EXPECT_EQ(b->counters().get("cmp.certconf.not_open"), 1u);
    EXPECT_EQ(b->counters().get("cmp.session.resumed"), 0u);
    EXPECT_EQ(record(tid).status, "unconfirmed-timeout");
}

TEST_P(Resume, SweepRevokesWhatADeadInstanceLeftUnconfirmed) {
    Bytes tid(16, 0x16);
    auto run = enroll("0023a1b2c406", tid, {a.get(), nullptr});
    ASSERT_FALSE(run.result.ok());
    a.reset();  // instance A dies with the session
    const int64_t later = short_timeouts();
    ASSERT_TRUE(enroll("0023a1b2c407", Bytes(16, 0x17), {b.get(), b.get()}, later).result.ok());
    EXPECT_EQ(b->counters().get("cmp.session.swept"), 1u);
    auto rec = record(tid);
    EXPECT_EQ(rec.status, "unconfirmed-timeout");
    EXPECT_TRUE(rec.revoked);
    EXPECT_EQ(body_type(b->handle(run.sent[1], RequestContext{"", later})), kError);
    EXPECT_EQ(b->counters().get("cmp.session.resumed"), 0u);
}

// The certConf's recipNonce must be our senderNonce of the ip that A sent: a certConf properly
// signed by the device but answering another nonce is refused on B (badRecipientNonce), and
// the transaction stays open for the right one.
TEST_P(Resume, CertConfWithAnotherRecipNonceIsRefused) {
    Bytes tid(16, 0x18);
    auto dev = lab().device(lab().vendor_a, "0023a1b2c408", kRealmA);
    auto run = enroll(dev, "0023a1b2c408", tid, {a.get(), nullptr});
    ASSERT_EQ(run.sent.size(), 2u);
    auto open = store_b->find_open_request(tid);
    ASSERT_TRUE(open.ok() && open->has_value());
    const Bytes nonce = (*open)->nonce;
    ASSERT_EQ(nonce.size(), 16u);
    // The same certConf with one octet of its recipNonce changed, signed again by the device.
    Bytes forged = run.sent[1];
    auto at = std::search(forged.begin(), forged.end(), nonce.begin(), nonce.end());
    ASSERT_NE(at, forged.end());
    at[5] ^= 0x01;
    Bytes resigned;  // protected again with the device key
    ASSERT_NO_FATAL_FAILURE(resign_cert_conf(forged, tid, dev, ExtraCerts::Keep, &resigned));
    ASSERT_NE(resigned, run.sent[1]);

    EXPECT_EQ(body_type(b->handle(resigned, RequestContext{"", now})), kError);
    EXPECT_EQ(b->counters().get("cmp.reject.bad_recip_nonce"), 1u);
    EXPECT_EQ(b->counters().get("cmp.failinfo.badRecipientNonce"), 1u);
    EXPECT_EQ(b->counters().get("cmp.session.resumed"), 0u);
    EXPECT_EQ(record(tid).status, "unconfirmed");
    // The device's own certConf still finishes it on B.
    EXPECT_EQ(body_type(b->handle(run.sent[1], RequestContext{"", now})), kPkiConf);
    EXPECT_EQ(b->counters().get("cmp.session.resumed"), 1u);
    EXPECT_EQ(record(tid).status, "confirmed");
}

// A certConf signed by another device of the same vendor for the transaction is not resumed.
TEST_P(Resume, CertConfFromAnotherSignerIsNotResumed) {
    Bytes tid(16, 0x1a);
    auto run = enroll("0023a1b2c40a", tid, {a.get(), nullptr});
    ASSERT_EQ(run.sent.size(), 2u);
    auto other = lab().device(lab().vendor_a, "0023a1b2c40b", kRealmA);
    // its own certificate as the signer (the original's extraCerts are replaced)
    Bytes resigned;
    ASSERT_NO_FATAL_FAILURE(resign_cert_conf(run.sent[1], tid, other, ExtraCerts::Replace, &resigned));
    EXPECT_EQ(body_type(b->handle(resigned, RequestContext{"", now})), kError);
    EXPECT_EQ(b->counters().get("cmp.session.resumed"), 0u);
    EXPECT_EQ(record(tid).status, "unconfirmed");
}

// Both instances given the same certConf at once: exactly one confirms it.
TEST_P(Resume, RacingCertConfsConfirmOnce) {
    Bytes tid(16, 0x19);
    auto run = enroll("0023a1b2c409", tid, {a.get(), nullptr});
    ASSERT_EQ(run.sent.size(), 2u);
    // a third instance that has no session either, racing B
    auto sc = open();
    ASSERT_TRUE(sc.ok());
    Server c(lab().server_config(), **sc);
    std::atomic<int> ok{0}, refused{0};
    std::vector<std::thread> ts;
    for (Server* s : {a.get(), b.get(), &c})
        ts.emplace_back([&, s] {
            int bt = body_type(s->handle(run.sent[1], RequestContext{"", now}));
            if (bt == kPkiConf) ++ok;
            if (bt == kError) ++refused;
        });
    for (auto& t : ts) t.join();
    EXPECT_EQ(ok.load(), 1);
    EXPECT_EQ(refused.load(), 2);
    EXPECT_EQ(a->counters().get("cmp.certconf.accepted") + b->counters().get("cmp.certconf.accepted") +
                  c.counters().get("cmp.certconf.accepted"),
              1u);
    EXPECT_EQ(record(tid).status, "confirmed");
    EXPECT_FALSE(record(tid).revoked);
}

INSTANTIATE_TEST_SUITE_P(Backends, Resume, ::testing::Values("sqlite", "postgresql"),
                         [](const auto& pinfo) { return pinfo.param; });
