// The same store tests on SQLite and on PostgreSQL 15 (a throwaway cluster on a unix socket in
// a temporary directory, started by the fixture; skipped with a reason when it cannot run).
#include <gtest/gtest.h>
#include <unistd.h>
#include <atomic>
#include <chrono>
#include <functional>
#include <optional>
#include <thread>
#include <sqlite3.h>
#include <x2sec/cmp/store.hpp>
#include <x2sec/test/store_backends.hpp>

using namespace x2sec;
using namespace x2sec::cmp;

namespace {

using test::SqliteFile;

// One PostgreSQL cluster for the whole test program.
test::PgCluster& pg() {
    static test::PgCluster c("/tmp/x2sec-pg-" + std::to_string(getpid()));
    return c;
}

// An issued, unconfirmed certificate record with these serial / transactionID octets.
CertRecord rec(uint8_t serial, uint8_t tid) {
    CertRecord r;
    r.serial = Bytes(16, serial);
    r.transaction_id = Bytes(16, tid);
    r.subject = "CN=node";
    r.sans = "0023a1b2c3d4.henb.vendor-a.example";
    r.requester = "CN=vendor device";
    r.body = "ir";
    r.not_before = 1000;
    r.not_after = 2000;
    r.issued_at = 1500;
    r.der = Bytes{0x30, 0x00};
    r.status = "unconfirmed";
    return r;
}

class StoreTest : public ::testing::TestWithParam<std::string> {
protected:
    std::unique_ptr<Store> store;
    std::optional<SqliteFile> file;
    std::string path;
    void SetUp() override {
        if (GetParam() == "sqlite") {
            file.emplace(::testing::UnitTest::GetInstance()->current_test_info()->name());
            path = file->path;
            auto s = open_sqlite_store(path);
            ASSERT_TRUE(s.ok()) << s.error().detail();
            store = std::move(s).value();
        } else {
            if (!pg().started) GTEST_SKIP() << "PostgreSQL store tests skipped: " << pg().skip_reason;
            // a fresh schema per test: drop the tables
            {
                auto s = open_postgres_store(pg().conninfo);
                ASSERT_TRUE(s.ok()) << s.error().detail();
            }
            ASSERT_EQ(pg().drop_store_tables(), 0);
            auto s = open_postgres_store(pg().conninfo);
            ASSERT_TRUE(s.ok()) << s.error().detail();
            store = std::move(s).value();
        }
    }
    void TearDown() override {
        store.reset();
        file.reset();
    }
};

}  // namespace

TEST_P(StoreTest, RecordsAndFinds) {
    ASSERT_TRUE(store->record_issued(rec(1, 1)).ok());
    auto f = store->find_by_serial(Bytes(16, 1));
    ASSERT_TRUE(f.ok());
    ASSERT_TRUE(f->has_value());
    EXPECT_EQ((*f)->subject, "CN=node");
    EXPECT_EQ((*f)->status, "unconfirmed");
    EXPECT_EQ((*f)->not_after, 2000);
    EXPECT_EQ((*f)->der, (Bytes{0x30, 0x00}));
    EXPECT_EQ((*f)->body, "ir");
    EXPECT_TRUE(*store->transaction_exists(Bytes(16, 1)));
    EXPECT_FALSE(*store->transaction_exists(Bytes(16, 9)));
    ASSERT_TRUE(store->set_status(Bytes(16, 1), "confirmed").ok());
    EXPECT_EQ((*store->find_by_transaction(Bytes(16, 1)))->status, "confirmed");
    EXPECT_FALSE(store->find_by_serial(Bytes(16, 7))->has_value());
}

TEST_P(StoreTest, UniqueSerialsAndTransactionsAtomically) {
    ASSERT_TRUE(store->record_issued(rec(1, 1)).ok());
    auto dup_tid = store->record_issued(rec(2, 1));
    ASSERT_FALSE(dup_tid.ok());
    EXPECT_EQ(dup_tid.error().code(), 1);
    auto dup_serial = store->record_issued(rec(1, 2));
    ASSERT_FALSE(dup_serial.ok());
    // the failed insert left no transaction behind
    EXPECT_FALSE(*store->transaction_exists(Bytes(16, 2)));
    auto c = store->counts();
    EXPECT_EQ(c->certificates, 1);
    EXPECT_EQ(c->transactions, 1);
    EXPECT_FALSE(store->record_transaction(Bytes(16, 1), "rr", "x").ok());
    EXPECT_TRUE(store->record_transaction(Bytes(16, 3), "rr", "x").ok());
}

TEST_P(StoreTest, RevocationAndCrlNumbers) {
    ASSERT_TRUE(store->record_issued(rec(1, 1)).ok());
    ASSERT_TRUE(store->record_issued(rec(2, 2)).ok());
    ASSERT_TRUE(store->revoke(Bytes(16, 2), 1, 1234).ok());
    auto again = store->revoke(Bytes(16, 2), 1, 1235);
    ASSERT_FALSE(again.ok());
    EXPECT_EQ(again.error().code(), 3);
    auto unknown = store->revoke(Bytes(16, 5), 0, 1);
    ASSERT_FALSE(unknown.ok());
    EXPECT_EQ(unknown.error().code(), 2);
    auto rv = store->revoked();
    ASSERT_TRUE(rv.ok());
    ASSERT_EQ(rv->size(), 1u);
    EXPECT_EQ((*rv)[0].serial, Bytes(16, 2));
    EXPECT_EQ((*rv)[0].time, 1234);
    EXPECT_EQ((*rv)[0].reason, 1);
    EXPECT_EQ(store->counts()->revoked, 1);
    auto n1 = store->next_crl_number(), n2 = store->next_crl_number();
    EXPECT_EQ(*n2, *n1 + 1);
}

TEST_P(StoreTest, ConcurrentWritersKeepUniqueness) {
    std::vector<std::thread> ts;
    std::atomic<int> ok{0};
    ts.reserve(4);
    for (int t = 0; t < 4; ++t)
        ts.emplace_back([&, t] {
            for (int i = 0; i < 25; ++i) {
                auto r = rec(static_cast<uint8_t>(i), static_cast<uint8_t>(i));
                r.serial[0] = static_cast<uint8_t>(t);                         // 4 x 25 distinct serials
                r.transaction_id[0] = static_cast<uint8_t>(i % 2 ? t : 0xff);  // some tids collide
                if (store->record_issued(r).ok()) ++ok;
            }
        });
    for (auto& t : ts) t.join();
    auto c = store->counts();
    EXPECT_EQ(c->certificates, ok.load());
    EXPECT_EQ(c->transactions, ok.load());
    // even i: tid (0xff, i) shared by all threads -> exactly one wins; odd: all 4 win
    EXPECT_EQ(ok.load(), 13 + 12 * 4);
}

TEST_P(StoreTest, SurvivesReopen) {
    if (GetParam() != "sqlite") {
        auto s2 = open_postgres_store(pg().conninfo);
        ASSERT_TRUE(s2.ok());
        ASSERT_TRUE(store->record_issued(rec(4, 4)).ok());
        EXPECT_TRUE(*(*s2)->transaction_exists(Bytes(16, 4)));  // a second instance sees it
        return;
    }
    ASSERT_TRUE(store->record_issued(rec(4, 4)).ok());
    store.reset();
    auto s = open_sqlite_store(path);
    ASSERT_TRUE(s.ok());
    EXPECT_TRUE(*(*s)->transaction_exists(Bytes(16, 4)));
    EXPECT_EQ((*s)->kind(), "sqlite");
}

// Approval: a held request blocks its transactionID, is decided once, and each step is in the
// hash-chained audit log.
TEST_P(StoreTest, PendingRequestsAreDecidedOnceAndAudited) {
    PendingRequest p;
    p.transaction_id = Bytes(16, 0x41);
    p.profile = "hold";
    p.body = "ir";
    p.subject = "CN=node";
    p.sans = "0023a1b2c3d4.henb.vendor-a.example";
    p.requester = "CN=vendor device #01";
    p.request_der = Bytes{0x30, 0x03, 0x02, 0x01, 0x05};
    p.created = 1000;
    ASSERT_TRUE(store->record_pending(p).ok());
    EXPECT_TRUE(*store->transaction_exists(p.transaction_id)) << "a held transactionID cannot be reused";
    EXPECT_EQ(store->record_pending(p).error().code(), 1);
    auto f = store->find_pending(p.transaction_id).value();
    ASSERT_TRUE(f.has_value());
    EXPECT_EQ(f->state, "pending");
    EXPECT_EQ(f->request_der, p.request_der);
    EXPECT_EQ(store->decide_pending(Bytes(16, 0x42), true, "alice", "", 1100).error().code(), 2);
    ASSERT_TRUE(store->decide_pending(p.transaction_id, false, "alice", "unknown site", 1100).ok());
    EXPECT_EQ(store->decide_pending(p.transaction_id, true, "bob", "", 1200).error().code(), 3) << "decided once";
    f = store->find_pending(p.transaction_id).value();
    EXPECT_EQ(f->state, "rejected");
    EXPECT_EQ(f->decided_by, "alice");
    EXPECT_EQ(f->reason, "unknown site");
    EXPECT_EQ(f->decided_at, 1100);
    ASSERT_TRUE(store->append_audit({0, 1300, "alice", "revoke", "0102", "CRLReason 1", {}, {}}).ok());
    auto log = store->audit_log().value();
    ASSERT_EQ(log.size(), 3u);
    EXPECT_EQ(log[0].action, "hold");
    EXPECT_EQ(log[1].action, "reject");
    EXPECT_EQ(log[1].actor, "alice");
    EXPECT_EQ(log[2].seq, 3);
    EXPECT_TRUE(log[0].prev_hash.empty());
    EXPECT_EQ(log[1].prev_hash, log[0].hash);
    EXPECT_TRUE(verify_audit_chain(log).ok());
    // tampering, on copies of the entries
    auto changed = log;
    changed[1].reason = "approved after all";
    EXPECT_EQ(verify_audit_chain(changed).error().code(), 3);
    auto rehashed = changed;
    rehashed[1].hash = audit_entry_hash(rehashed[1]);  // recomputed: the successor's link breaks
    EXPECT_EQ(verify_audit_chain(rehashed).error().code(), 2);
    auto removed = log;
    removed.erase(removed.begin() + 1);
    EXPECT_EQ(verify_audit_chain(removed).error().code(), 1);
}

// Two connections (two RA/CA processes) appending at once never fork the chain.
TEST_P(StoreTest, ConcurrentAuditAppendsKeepOneChain) {
    std::unique_ptr<Store> other;
    if (GetParam() == "sqlite")
        other = std::move(open_sqlite_store(path).value());
    else
        other = std::move(open_postgres_store(pg().conninfo).value());
    std::atomic<int> failures{0};
    auto writer = [&](Store* st, const char* who) {
        for (int i = 0; i < 25; ++i)
            if (!st->append_audit({0, 2000 + i, who, "approve", std::to_string(i), "", {}, {}}).ok()) ++failures;
    };
    std::thread a(writer, store.get(), "a"), b(writer, other.get(), "b");
    a.join();
    b.join();
    EXPECT_EQ(failures.load(), 0);
    auto log = store->audit_log().value();
    EXPECT_EQ(log.size(), 50u);
    EXPECT_TRUE(verify_audit_chain(log).ok()) << verify_audit_chain(log).error().detail();
}

TEST_P(StoreTest, SerialCollisionIsCode4TransactionCollisionCode1) {
    ASSERT_TRUE(store->record_issued(rec(1, 1)).ok());
    EXPECT_EQ(store->record_issued(rec(1, 2)).error().code(), 4);
    EXPECT_EQ(store->record_issued(rec(2, 1)).error().code(), 1);
}

TEST_P(StoreTest, ExpireUnconfirmedRevokesOnlyStaleUnconfirmedOnce) {
    ASSERT_TRUE(store->record_issued(rec(1, 1)).ok());  // unconfirmed since 1500
    ASSERT_TRUE(store->record_issued(rec(2, 2)).ok());
    ASSERT_TRUE(store->set_status(Bytes(16, 2), "confirmed").ok());
    auto young = rec(3, 3);
    young.issued_at = 5000;
    ASSERT_TRUE(store->record_issued(young).ok());
    auto swept = store->expire_unconfirmed(2000, 6000);
    ASSERT_TRUE(swept.ok()) << swept.error().detail();
    ASSERT_EQ(swept->size(), 1u);
    EXPECT_EQ((*swept)[0], Bytes(16, 1));
    auto r1 = *store->find_by_serial(Bytes(16, 1));
    EXPECT_TRUE(r1->revoked);
    EXPECT_EQ(r1->revocation_reason, 5);
    EXPECT_EQ(r1->revoked_at, 6000);
    EXPECT_EQ(r1->status, "unconfirmed-timeout");
    EXPECT_FALSE((*store->find_by_serial(Bytes(16, 2)))->revoked);
    EXPECT_FALSE((*store->find_by_serial(Bytes(16, 3)))->revoked);
    EXPECT_TRUE(store->expire_unconfirmed(2000, 6001)->empty());
}

// The open request of an unconfirmed transaction is written with its record (one write) and
// found by any handle; it closes exactly once: a second close (another instance) changes
// nothing, and a revocation of an unconfirmed transaction happens only while it is unconfirmed.
TEST_P(StoreTest, OpenRequestsAreRecordedWithTheCertificateAndCloseOnce) {
    std::unique_ptr<Store> other;  // a second handle: another instance on the same store
    if (GetParam() == "sqlite")
        other = std::move(open_sqlite_store(path).value());
    else
        other = std::move(open_postgres_store(pg().conninfo).value());
    auto a = rec(1, 1);
    a.open_request = Bytes{0x30, 0x03, 0x02, 0x01, 0x07};
    a.open_nonce = Bytes(16, 0xAB);
    uint64_t commits = store->write_commits();
    ASSERT_TRUE(store->record_issued(a).ok());
    if (GetParam() == "sqlite") {
        EXPECT_EQ(store->write_commits(), commits + 1);  // one durable write
    }
    auto o = other->find_open_request(a.transaction_id);
    ASSERT_TRUE(o.ok()) << o.error().detail();
    ASSERT_TRUE(o->has_value());
    EXPECT_EQ((*o)->request_der, a.open_request);
    EXPECT_EQ((*o)->nonce, a.open_nonce);
    EXPECT_EQ((*o)->created, a.issued_at);
    EXPECT_FALSE(store->find_open_request(Bytes(16, 9))->has_value());
    // implicit (or without a request): no open request
    auto b = rec(2, 2);
    b.status = "implicit";
    b.open_request = a.open_request;
    b.open_nonce = a.open_nonce;
    ASSERT_TRUE(store->record_issued(b).ok());
    EXPECT_FALSE(store->find_open_request(b.transaction_id)->has_value());

    auto first = other->close_unconfirmed(a.transaction_id, "confirmed");
    ASSERT_TRUE(first.ok()) << first.error().detail();
    EXPECT_TRUE(*first);
    auto second = store->close_unconfirmed(a.transaction_id, "confirmed");
    ASSERT_TRUE(second.ok());
    EXPECT_FALSE(*second);
    EXPECT_FALSE(*store->revoke_unconfirmed(a.transaction_id, "unconfirmed-timeout", 5, 3000));
    auto ra = *store->find_by_transaction(a.transaction_id);
    EXPECT_EQ(ra->status, "confirmed");
    EXPECT_FALSE(ra->revoked);
    EXPECT_FALSE(store->find_open_request(a.transaction_id)->has_value());
    EXPECT_FALSE(*store->close_unconfirmed(b.transaction_id, "confirmed"));  // implicit: not unconfirmed
    EXPECT_FALSE(*store->close_unconfirmed(Bytes(16, 9), "confirmed"));      // unknown

    // an unconfirmed one is revoked once, with the CRL's revocation sequence bumped
    auto c = rec(3, 3);
    c.open_request = a.open_request;
    c.open_nonce = a.open_nonce;
    ASSERT_TRUE(store->record_issued(c).ok());
    int crl_builds = 0;
    auto builder = [&](int64_t, const std::vector<pki::Revoked>&) -> Result<Bytes> {
        ++crl_builds;
        return Bytes{0x30, 0x00};
    };
    ASSERT_TRUE(store->current_crl(3000, 3600, builder).ok());
    auto rv = other->revoke_unconfirmed(c.transaction_id, "unconfirmed-timeout", 5, 3001);
    ASSERT_TRUE(rv.ok()) << rv.error().detail();
    EXPECT_TRUE(*rv);
    EXPECT_FALSE(*store->revoke_unconfirmed(c.transaction_id, "unconfirmed-timeout", 5, 3002));
    EXPECT_FALSE(*store->close_unconfirmed(c.transaction_id, "confirmed"));
    auto rc = *store->find_by_serial(c.serial);
    EXPECT_TRUE(rc->revoked);
    EXPECT_EQ(rc->revoked_at, 3001);
    EXPECT_EQ(rc->revocation_reason, 5);
    EXPECT_EQ(rc->status, "unconfirmed-timeout");
    EXPECT_FALSE(store->find_open_request(c.transaction_id)->has_value());
    ASSERT_TRUE(store->current_crl(3003, 3600, builder).ok());
    EXPECT_EQ(crl_builds, 2);  // the revocation made the stored CRL stale

    // the sweep closes the open requests of what it expires
    auto d = rec(4, 4);
    d.open_request = a.open_request;
    d.open_nonce = a.open_nonce;
    ASSERT_TRUE(store->record_issued(d).ok());
    auto swept = other->expire_unconfirmed(2000, 6000);
    ASSERT_TRUE(swept.ok()) << swept.error().detail();
    ASSERT_EQ(swept->size(), 1u);
    EXPECT_FALSE(store->find_open_request(d.transaction_id)->has_value());
    EXPECT_FALSE(*store->close_unconfirmed(d.transaction_id, "confirmed"));
}

TEST_P(StoreTest, CurrentCrlIsOneForAllHandlesAndItsNumberOnlyGrows) {
    std::unique_ptr<Store> other;
    if (GetParam() == "sqlite")
        other = std::move(open_sqlite_store(path).value());
    else
        other = std::move(open_postgres_store(pg().conninfo).value());
    std::vector<int64_t> built;
    Store::CrlBuilder build = [&](int64_t n, const std::vector<pki::Revoked>& rv) -> Result<Bytes> {
        built.push_back(n);
        return Bytes{static_cast<uint8_t>(n), static_cast<uint8_t>(rv.size())};
    };
    ASSERT_TRUE(store->record_issued(rec(1, 1)).ok());
    ASSERT_TRUE(store->record_issued(rec(2, 2)).ok());
    auto a = store->current_crl(100, 3600, build);
    ASSERT_TRUE(a.ok()) << a.error().detail();
    auto b = other->current_crl(101, 3600, build);  // the other instance serves the same CRL
    ASSERT_TRUE(b.ok());
    EXPECT_EQ(*a, *b);
    EXPECT_EQ(built.size(), 1u);
    ASSERT_TRUE(other->revoke(Bytes(16, 2), 1, 102).ok());  // revoked through the other handle
    auto c = store->current_crl(103, 3600, build);
    ASSERT_TRUE(c.ok());
    EXPECT_EQ((*c)[0], (*a)[0] + 1);
    EXPECT_EQ((*c)[1], 1);  // lists the revocation
    EXPECT_EQ(*other->current_crl(104, 3600, build), *c);
    auto d = other->current_crl(103 + 3600, 3600, build);  // stale: a new number, nothing else changed
    EXPECT_EQ((*d)[0], (*c)[0] + 1);
    EXPECT_EQ(built.size(), 3u);
    // concurrent revocations and CRL fetches through both handles: every number seen is at
    // least the one seen before it by the same thread, and the last CRL lists all revocations
    for (uint8_t i = 10; i < 30; ++i) ASSERT_TRUE(store->record_issued(rec(i, i)).ok());
    std::vector<std::thread> ts;
    std::atomic<bool> monotonic{true};
    std::mutex bm;
    Store::CrlBuilder locked = [&](int64_t n, const std::vector<pki::Revoked>& rv) -> Result<Bytes> {
        std::lock_guard lk(bm);
        return build(n, rv);
    };
    ts.reserve(2);
    for (int t = 0; t < 2; ++t)
        ts.emplace_back([&, t] {
            Store& s = t ? *other : *store;
            int last = 0;
            for (uint8_t i = static_cast<uint8_t>(10 + t); i < 30; i += 2) {
                ASSERT_TRUE(s.revoke(Bytes(16, i), 0, 200).ok());
                auto crl = s.current_crl(200, 3600, locked);
                ASSERT_TRUE(crl.ok());
                if ((*crl)[0] < last) monotonic = false;
                last = (*crl)[0];
            }
        });
    for (auto& t : ts) t.join();
    EXPECT_TRUE(monotonic);
    EXPECT_EQ((*store->current_crl(201, 3600, build))[1], 21);
}

INSTANTIATE_TEST_SUITE_P(Backends, StoreTest, ::testing::Values("sqlite", "postgresql"),
                         [](const auto& pinfo) { return pinfo.param; });

TEST(StoreOpen, BadUrlsFailClearly) {
    auto s = open_store("/nonexistent-dir/x/store.db");
    ASSERT_FALSE(s.ok());
    EXPECT_NE(s.error().detail().find("cannot open store"), std::string::npos);
    auto p = open_store("postgresql:host=/nonexistent-x2sec dbname=x connect_timeout=2");
    ASSERT_FALSE(p.ok());
    EXPECT_NE(p.error().detail().find("PostgreSQL"), std::string::npos);
}

// A COMMIT that fails (here a deferred foreign key, planted by a second connection as a trigger)
// must not leave the store's connection inside an open transaction holding the write lock: the
// failed write is rolled back whole, another writer can take the lock at once, and the store keeps
// working.
TEST(StoreSqlite, FailedCommitRollsBackAndReleasesTheLock) {
    const SqliteFile file("failed-commit");
    const std::string& path = file.path;
    auto opened = open_sqlite_store(path);
    ASSERT_TRUE(opened.ok()) << opened.error().detail();
    auto& store = **opened;

    sqlite3* other = nullptr;
    ASSERT_EQ(sqlite3_open(path.c_str(), &other), SQLITE_OK);
    auto exec = [&](const char* sql) {
        char* msg = nullptr;
        int rc = sqlite3_exec(other, sql, nullptr, nullptr, &msg);
        std::string m = msg ? msg : "";
        sqlite3_free(msg);
        return std::make_pair(rc, m);
    };
    ASSERT_EQ(exec("PRAGMA foreign_keys=ON").first, SQLITE_OK);
    ASSERT_EQ(
        exec("CREATE TABLE poison(tid BLOB REFERENCES transactions(tid) DEFERRABLE INITIALLY DEFERRED);"
             "CREATE TRIGGER poison_each AFTER INSERT ON certificates BEGIN INSERT INTO poison VALUES (x'00ff'); END;")
            .first,
        SQLITE_OK);

    const CertRecord r = rec(1, 1);
    auto st = store.record_issued(r);
    ASSERT_FALSE(st.ok()) << "the deferred foreign key should have failed the COMMIT";
    EXPECT_NE(st.error().detail().find("COMMIT"), std::string::npos) << st.error().detail();

    // The lock is free: a second writer gets it without waiting.
    sqlite3_busy_timeout(other, 0);
    auto begin = exec("BEGIN IMMEDIATE");
    EXPECT_EQ(begin.first, SQLITE_OK) << "store left its transaction open: " << begin.second;
    EXPECT_EQ(exec("DROP TRIGGER poison_each; DROP TABLE poison; COMMIT").first, SQLITE_OK);

    // Nothing of the failed write remains, and the store writes again.
    EXPECT_FALSE(*store.transaction_exists(Bytes(16, 1)));
    EXPECT_EQ(store.counts()->certificates, 0);
    ASSERT_TRUE(store.record_issued(r).ok());
    EXPECT_EQ(store.counts()->certificates, 1);
    auto n1 = store.next_crl_number(), n2 = store.next_crl_number();
    ASSERT_TRUE(n1.ok() && n2.ok());
    EXPECT_EQ(*n2, *n1 + 1);
    sqlite3_close(other);
    opened->reset();
}

// Passwords never reach an error message, in either conninfo form.
TEST(StoreOpen, ConninfoPasswordIsRedacted) {
    EXPECT_EQ(redact_conninfo("host=/tmp/x dbname=ca password=hunter2 user=ra"),
              "host=/tmp/x dbname=ca password=*** user=ra");
    EXPECT_EQ(redact_conninfo("password = 'hun ter\\'2' host=h"), "password = *** host=h");
    EXPECT_EQ(redact_conninfo("postgresql://ra:hunter2@db.example:5432/ca?sslmode=require"),
              "postgresql://ra:***@db.example:5432/ca?sslmode=require");
    EXPECT_EQ(redact_conninfo("postgres://ra@db/ca?sslmode=require&password=hunter2"),
              "postgres://ra@db/ca?sslmode=require&password=***");
    EXPECT_EQ(redact_conninfo("host=h dbname=ca"), "host=h dbname=ca");
    for (const char* url : {"postgresql:host=/nonexistent-x2sec dbname=x password=hunter2 connect_timeout=2",
                            "postgresql://ra:hunter2@127.0.0.1:1/ca?connect_timeout=2",
                            "postgresql://ra@127.0.0.1:1/ca?connect_timeout=2&password=hunter2"}) {
        auto p = open_store(url);
        ASSERT_FALSE(p.ok()) << url;
        EXPECT_NE(p.error().detail().find("PostgreSQL"), std::string::npos) << p.error().detail();
        EXPECT_EQ(p.error().detail().find("hunter2"), std::string::npos) << p.error().detail();
        EXPECT_NE(p.error().detail().find("***"), std::string::npos) << p.error().detail();
    }
}

// The server (or a network) drops the store's PostgreSQL connection: the statement that sees the
// break fails, and the next call of *every* method re-establishes the connection and works (the
// pending/audit methods included, not only the older ones).
TEST(StorePostgres, EveryMethodReconnectsAfterTheConnectionBroke) {
    if (!pg().started) GTEST_SKIP() << "PostgreSQL store tests skipped: " << pg().skip_reason;
    ASSERT_EQ(pg().drop_store_tables(), 0);
    auto opened = open_postgres_store(pg().conninfo);
    ASSERT_TRUE(opened.ok()) << opened.error().detail();
    Store& store = **opened;
    // every other backend of the cluster terminated (the store's connection among them)
    auto kill = [] {
        return pg().psql(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid <> pg_backend_pid() AND "
            "backend_type = $$client backend$$");
    };
    PendingRequest p;
    p.transaction_id = Bytes(16, 0x51);
    p.body = "ir";
    p.subject = "CN=n";
    p.requester = "CN=dev";
    p.request_der = Bytes{0x30, 0x00};
    p.created = 100;
    CertRecord r;
    r.serial = Bytes(16, 0x52);
    r.transaction_id = Bytes(16, 0x52);
    r.subject = "CN=n";
    r.body = "ir";
    r.der = Bytes{0x30, 0x00};
    r.status = "unconfirmed";
    auto builder = [](int64_t, const std::vector<pki::Revoked>&) -> Result<Bytes> { return Bytes{0x30, 0x00}; };
    // Each method after a break: it may fail once, then the same call must succeed.  Writes are
    // first made to fail by the break and then retried, so each one is done exactly once.
    std::vector<std::pair<const char*, std::function<bool()>>> calls = {
        {"record_pending", [&] { return store.record_pending(p).ok(); }},
        {"find_pending", [&] { return store.find_pending(p.transaction_id).ok(); }},
        {"list_pending", [&] { return store.list_pending().ok(); }},
        {"decide_pending",
         [&] {
             auto st = store.decide_pending(p.transaction_id, true, "alice", "ok", 101);
             return st.ok() || st.error().code() == 3;  // decided by the failed-looking first try
         }},
        {"set_pending_state", [&] { return store.set_pending_state(p.transaction_id, "issued").ok(); }},
        {"append_audit",
         [&] {
             return store.append_audit({0, 102, "ra", "test", "x", "", {}, {}}).ok();
         }},
        {"audit_log", [&] { return store.audit_log().ok(); }},
        {"record_issued",
         [&] {
             auto st = store.record_issued(r);
             return st.ok() || st.error().code() == 1;
         }},
        {"set_status", [&] { return store.set_status(r.transaction_id, "confirmed").ok(); }},
        {"list_certificates", [&] { return store.list_certificates().ok(); }},
        {"revoked", [&] { return store.revoked().ok(); }},
        {"counts", [&] { return store.counts().ok(); }},
        {"next_crl_number", [&] { return store.next_crl_number().ok(); }},
        {"current_crl", [&] { return store.current_crl(200, 3600, builder).ok(); }},
        {"transaction_exists", [&] { return store.transaction_exists(r.transaction_id).ok(); }},
        {"find_open_request", [&] { return store.find_open_request(r.transaction_id).ok(); }},
        {"close_unconfirmed", [&] { return store.close_unconfirmed(r.transaction_id, "confirmed").ok(); }},
        {"revoke_unconfirmed",
         [&] { return store.revoke_unconfirmed(r.transaction_id, "unconfirmed-timeout", 5, 300).ok(); }},
    };
    for (auto& [name, call] : calls) {
        ASSERT_EQ(kill(), 0);
        (void)call();  // the call that meets the dead connection
        EXPECT_TRUE(call()) << name << " did not reconnect after the connection broke";
    }
    auto log = store.audit_log();
    ASSERT_TRUE(log.ok());
    EXPECT_TRUE(verify_audit_chain(*log).ok());
    auto pend = store.find_pending(p.transaction_id);
    ASSERT_TRUE(pend.ok() && pend->has_value());
    EXPECT_EQ((*pend)->state, "issued");
}

// Group commit (SQLite): writes that arrive while another write holds the database share one
// transaction and one fsync, and each still succeeds or fails on its own: a duplicate
// transactionID in the batch fails alone (code 1), the others are committed.  The database's
// write lock is held by a second connection while the writers start, so they queue up behind the
// first one.
TEST(StoreSqlite, GroupCommitSharesOneTransactionAndKeepsEachResult) {
    const SqliteFile file("group-commit");
    const std::string& path = file.path;
    auto opened = open_sqlite_store(path);
    ASSERT_TRUE(opened.ok()) << opened.error().detail();
    auto& store = **opened;
    ASSERT_TRUE(store.record_issued(rec(0x10, 0x10)).ok());
    const uint64_t before = store.write_commits();
    EXPECT_EQ(before, 1u);

    sqlite3* other = nullptr;
    ASSERT_EQ(sqlite3_open(path.c_str(), &other), SQLITE_OK);
    ASSERT_EQ(sqlite3_exec(other, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr), SQLITE_OK);
    constexpr int kWriters = 8;
    std::atomic<int> started{0};
    std::vector<Status> results(kWriters);
    std::vector<std::thread> ts;
    ts.reserve(kWriters);
    for (int i = 0; i < kWriters; ++i)
        ts.emplace_back([&, i] {
            // writers 2 and 5 reuse the first record's transactionID
            auto r = rec(static_cast<uint8_t>(0x20 + i), (i == 2 || i == 5) ? 0x10 : static_cast<uint8_t>(0x20 + i));
            ++started;
            results[static_cast<size_t>(i)] = store.record_issued(r);
        });
    while (started < kWriters) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    std::this_thread::sleep_for(std::chrono::milliseconds(200));  // let them reach the queue
    ASSERT_EQ(sqlite3_exec(other, "COMMIT", nullptr, nullptr, nullptr), SQLITE_OK);
    for (auto& t : ts) t.join();
    sqlite3_close(other);

    for (int i = 0; i < kWriters; ++i) {
        if (i == 2 || i == 5) {
            ASSERT_FALSE(results[static_cast<size_t>(i)].ok()) << i;
            EXPECT_EQ(results[static_cast<size_t>(i)].error().code(), 1)
                << results[static_cast<size_t>(i)].error().detail();
            EXPECT_FALSE(store.find_by_serial(Bytes(16, static_cast<uint8_t>(0x20 + i)))->has_value()) << i;
        } else {
            EXPECT_TRUE(results[static_cast<size_t>(i)].ok())
                << i << ": " << results[static_cast<size_t>(i)].error().detail();
            EXPECT_TRUE(store.find_by_serial(Bytes(16, static_cast<uint8_t>(0x20 + i)))->has_value()) << i;
        }
    }
    EXPECT_EQ(store.counts()->certificates, 1 + kWriters - 2);
    const uint64_t commits = store.write_commits() - before;
    EXPECT_GE(commits, 1u);
    EXPECT_LT(commits, static_cast<uint64_t>(kWriters)) << "the queued writes did not share a transaction";
    // what was reported committed is in the file: a fresh handle sees it
    opened->reset();
    auto again = open_sqlite_store(path);
    ASSERT_TRUE(again.ok());
    EXPECT_EQ((*again)->counts()->certificates, 1 + kWriters - 2);
    again->reset();
}
