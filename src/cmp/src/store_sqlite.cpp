#include <sqlite3.h>
#include <atomic>
#include <condition_variable>
#include <ctime>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <utility>
#include <vector>
#include <x2sec/cmp/store.hpp>

#include "store_audit.hpp"

namespace x2sec::cmp {
namespace {

const char* kSchema = R"sql(
CREATE TABLE IF NOT EXISTS transactions (
  tid BLOB PRIMARY KEY, body TEXT NOT NULL, status TEXT NOT NULL, created INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS certificates (
  serial BLOB PRIMARY KEY, tid BLOB NOT NULL REFERENCES transactions(tid), subject TEXT NOT NULL,
  sans TEXT NOT NULL, requester TEXT NOT NULL, not_before INTEGER NOT NULL, not_after INTEGER NOT NULL,
  issued_at INTEGER NOT NULL, der BLOB NOT NULL, revoked INTEGER NOT NULL DEFAULT 0,
  revoked_at INTEGER NOT NULL DEFAULT 0, reason INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS certificates_tid ON certificates(tid);
CREATE TABLE IF NOT EXISTS crl_number (id INTEGER PRIMARY KEY CHECK (id = 1), n INTEGER NOT NULL);
INSERT OR IGNORE INTO crl_number VALUES (1, 0);
CREATE TABLE IF NOT EXISTS pending (
  tid BLOB PRIMARY KEY, profile TEXT NOT NULL, body TEXT NOT NULL, subject TEXT NOT NULL, sans TEXT NOT NULL,
  requester TEXT NOT NULL, request BLOB NOT NULL, created INTEGER NOT NULL, state TEXT NOT NULL,
  decided_by TEXT NOT NULL DEFAULT '', reason TEXT NOT NULL DEFAULT '', decided_at INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS audit (
  seq INTEGER PRIMARY KEY, at INTEGER NOT NULL, actor TEXT NOT NULL, action TEXT NOT NULL, object TEXT NOT NULL,
  reason TEXT NOT NULL, prev_hash BLOB NOT NULL, hash BLOB NOT NULL);
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END;
CREATE TABLE IF NOT EXISTS crl_state (id INTEGER PRIMARY KEY CHECK (id = 1), rev_seq INTEGER NOT NULL DEFAULT 0,
  crl_seq INTEGER NOT NULL DEFAULT -1, built INTEGER NOT NULL DEFAULT 0, der BLOB);
INSERT OR IGNORE INTO crl_state(id) VALUES (1);
CREATE INDEX IF NOT EXISTS transactions_status ON transactions(status, created);
CREATE TABLE IF NOT EXISTS open_requests (
  tid BLOB PRIMARY KEY REFERENCES transactions(tid), request BLOB NOT NULL, nonce BLOB NOT NULL,
  created INTEGER NOT NULL);
)sql";

// Prepared statements kept per connection and SQL text, so that a
// request does not parse its SQL again: a statement is taken out while a Stmt uses it (under
// the connection's lock) and put back reset; forget() finalizes a connection's before it closes.
class StmtCache {
public:
    static sqlite3_stmt* take(sqlite3* db, const char* sql) {
        std::lock_guard lk(mu());
        auto& m = map();
        auto it = m.find(std::make_pair(db, std::string(sql)));
        if (it == m.end()) return nullptr;
        sqlite3_stmt* s = it->second;
        m.erase(it);
        return s;
    }
    static void give(sqlite3* db, const char* sql, sqlite3_stmt* s) {
        sqlite3_reset(s);
        sqlite3_clear_bindings(s);
        std::lock_guard lk(mu());
        if (!map().emplace(std::make_pair(db, std::string(sql)), s).second) sqlite3_finalize(s);  // a second copy
    }
    static void forget(sqlite3* db) {
        std::lock_guard lk(mu());
        auto& m = map();
        for (auto it = m.begin(); it != m.end();) {
            if (it->first.first == db) {
                sqlite3_finalize(it->second);
                it = m.erase(it);
            } else {
                ++it;
            }
        }
    }

private:
    static std::mutex& mu() {
        static auto* m = new std::mutex();
        return *m;
    }
    // Never destroyed: a store that outlives static destruction (a static one) still finds it.
    static std::map<std::pair<sqlite3*, std::string>, sqlite3_stmt*>& map() {
        static auto* m = new std::map<std::pair<sqlite3*, std::string>, sqlite3_stmt*>();
        return *m;
    }
};

class Stmt {
public:
    Stmt(sqlite3* db, const char* sql) : m_db(db), m_sql(sql) {  // sql: copied for the cache
        m_s = StmtCache::take(db, sql);
        m_rc = m_s ? SQLITE_OK : sqlite3_prepare_v2(db, sql, -1, &m_s, nullptr);
    }
    ~Stmt() {
        if (m_rc == SQLITE_OK && m_s)
            StmtCache::give(m_db, m_sql.c_str(), m_s);
        else
            sqlite3_finalize(m_s);
    }
    Stmt(const Stmt&) = delete;
    Stmt& operator=(const Stmt&) = delete;
    bool ok() const { return m_rc == SQLITE_OK; }
    Stmt& blob(int i, BytesView b) {
        sqlite3_bind_blob(m_s, i, b.data(), static_cast<int>(b.size()), SQLITE_TRANSIENT);
        return *this;
    }
    Stmt& text(int i, const std::string& t) {
        sqlite3_bind_text(m_s, i, t.c_str(), static_cast<int>(t.size()), SQLITE_TRANSIENT);
        return *this;
    }
    Stmt& i64(int i, int64_t v) {
        sqlite3_bind_int64(m_s, i, v);
        return *this;
    }
    int step() { return sqlite3_step(m_s); }
    sqlite3_stmt* get() { return m_s; }
    Bytes col_blob(int i) {
        auto* p = static_cast<const uint8_t*>(sqlite3_column_blob(m_s, i));
        return Bytes(p, p + sqlite3_column_bytes(m_s, i));
    }
    std::string col_text(int i) {
        auto* p = reinterpret_cast<const char*>(sqlite3_column_text(m_s, i));
        return p ? std::string(p) : std::string();
    }
    int64_t col_i64(int i) { return sqlite3_column_int64(m_s, i); }

private:
    sqlite3* m_db;
    std::string m_sql;
    sqlite3_stmt* m_s = nullptr;
    int m_rc;
};

// One write transaction: BEGIN IMMEDIATE on construction (check begun()), COMMIT with commit(); rolled
// back when it goes out of scope uncommitted, including after a COMMIT that failed (a deferred
// constraint, SQLITE_BUSY, I/O), which SQLite leaves open.  The connection never stays inside a
// transaction after a write returned.
class Transaction {
public:
    explicit Transaction(sqlite3* db) : m_db(db) { m_begun = run("BEGIN IMMEDIATE"); }
    ~Transaction() {
        if (!sqlite3_get_autocommit(m_db)) (void)run("ROLLBACK");
    }
    Transaction(const Transaction&) = delete;
    Transaction& operator=(const Transaction&) = delete;
    const Status& begun() const { return m_begun; }
    Status commit() {
        auto st = run("COMMIT");
        if (!st && !sqlite3_get_autocommit(m_db)) (void)run("ROLLBACK");
        return st;
    }

private:
    Status run(const char* sql) {
        char* msg = nullptr;
        if (sqlite3_exec(m_db, sql, nullptr, nullptr, &msg) != SQLITE_OK) {
            std::string m = msg ? msg : sqlite3_errmsg(m_db);
            sqlite3_free(msg);
            return Error(ErrorDomain::Io, 0, std::string("sqlite: ") + sql + ": " + m);
        }
        return ok_status();
    }
    sqlite3* m_db;
    Status m_begun;
};

class SqliteStore final : public Store {
public:
    // rdb: a second connection to the same file for reads (WAL lets them run while a write
    // commits), or null (":memory:": one connection for everything).
    SqliteStore(sqlite3* db, sqlite3* rdb) : m_db(db), m_rdb(rdb ? rdb : db), m_rmu(rdb ? &m_read_mu : &m_mu) {}
    ~SqliteStore() override {
        if (m_rdb != m_db) {
            StmtCache::forget(m_rdb);
            sqlite3_close(m_rdb);
        }
        StmtCache::forget(m_db);
        sqlite3_close(m_db);
    }

    Error err(const std::string& what, int code = 0) { return err_on(m_db, what, code); }
    static Error err_on(sqlite3* db, const std::string& what, int code = 0) {
        return Error(ErrorDomain::Io, code, "sqlite: " + what + ": " + sqlite3_errmsg(db));
    }
    Status exec(const char* sql) {
        char* msg = nullptr;
        if (sqlite3_exec(m_db, sql, nullptr, nullptr, &msg) != SQLITE_OK) {
            std::string m = msg ? msg : "?";
            sqlite3_free(msg);
            return Error(ErrorDomain::Io, 0, std::string("sqlite: ") + m);
        }
        return ok_status();
    }

    Status record_issued(const CertRecord& r) override {
        return write([&]() -> Status {
            Stmt t(m_db, "INSERT INTO transactions(tid, body, status, created) VALUES(?,?,?,?)");
            t.blob(1, r.transaction_id).text(2, r.body).text(3, r.status).i64(4, r.issued_at);
            if (int rc = t.step(); rc != SQLITE_DONE)
                return rc == SQLITE_CONSTRAINT ? err("transactionID already recorded", 1) : err("record transaction");
            Stmt c(m_db,
                   "INSERT INTO certificates(serial, tid, subject, sans, requester, not_before, not_after, "
                   "issued_at, der) VALUES(?,?,?,?,?,?,?,?,?)");
            c.blob(1, r.serial).blob(2, r.transaction_id).text(3, r.subject).text(4, r.sans).text(5, r.requester);
            c.i64(6, r.not_before).i64(7, r.not_after).i64(8, r.issued_at).blob(9, r.der);
            if (int rc = c.step(); rc != SQLITE_DONE)
                return rc == SQLITE_CONSTRAINT ? err("serial already recorded", 4) : err("record certificate");
            if (r.status == "unconfirmed" && !r.open_request.empty()) {
                Stmt o(m_db, "INSERT INTO open_requests(tid, request, nonce, created) VALUES(?,?,?,?)");
                o.blob(1, r.transaction_id).blob(2, r.open_request).blob(3, r.open_nonce).i64(4, r.issued_at);
                if (o.step() != SQLITE_DONE) return err("record open request");
            }
            return ok_status();
        });
    }

    Result<std::optional<OpenRequest>> find_open_request(BytesView tid) override {
        std::lock_guard lk(*m_rmu);
        Stmt s(m_rdb,
               "SELECT o.request, o.nonce, o.created FROM open_requests o JOIN transactions t ON t.tid = o.tid "
               "WHERE o.tid = ? AND t.status = 'unconfirmed'");
        s.blob(1, tid);
        int rc = s.step();
        if (rc == SQLITE_DONE) return std::optional<OpenRequest>();
        if (rc != SQLITE_ROW) return err_on(m_rdb, "query");
        OpenRequest o;
        o.transaction_id.assign(tid.begin(), tid.end());
        o.request_der = s.col_blob(0);
        o.nonce = s.col_blob(1);
        o.created = s.col_i64(2);
        return std::optional<OpenRequest>(std::move(o));
    }

    // Inside a write: unconfirmed -> status, the open request removed; false when not unconfirmed.
    Result<bool> close_locked(BytesView tid, const std::string& status) {
        Stmt u(m_db, "UPDATE transactions SET status = ? WHERE tid = ? AND status = 'unconfirmed'");
        u.text(1, status).blob(2, tid);
        if (u.step() != SQLITE_DONE) return err("update status");
        if (sqlite3_changes(m_db) == 0) return false;
        Stmt d(m_db, "DELETE FROM open_requests WHERE tid = ?");
        d.blob(1, tid);
        if (d.step() != SQLITE_DONE) return err("close open request");
        return true;
    }

    Result<bool> close_unconfirmed(BytesView tid, const std::string& status) override {
        bool changed = false;
        X2SEC_TRY_STATUS(write([&]() -> Status {
            X2SEC_TRY(changed, close_locked(tid, status));
            return ok_status();
        }));
        return changed;
    }

    Result<bool> revoke_unconfirmed(BytesView tid, const std::string& status, int reason, int64_t when) override {
        bool changed = false;
        X2SEC_TRY_STATUS(write([&]() -> Status {
            X2SEC_TRY(changed, close_locked(tid, status));
            if (!changed) return ok_status();
            Stmt u(m_db,
                   "UPDATE certificates SET revoked = 1, revoked_at = ?, reason = ? WHERE tid = ? AND revoked = 0");
            u.i64(1, when).i64(2, reason).blob(3, tid);
            if (u.step() != SQLITE_DONE) return err("revoke");
            if (sqlite3_changes(m_db) == 0) return ok_status();
            return bump_revocations();
        }));
        return changed;
    }

    Status record_transaction(BytesView tid, const std::string& body, const std::string& status) override {
        return write([&]() -> Status {
            Stmt t(m_db, "INSERT INTO transactions(tid, body, status, created) VALUES(?,?,?,?)");
            t.blob(1, tid).text(2, body).text(3, status).i64(4, static_cast<int64_t>(std::time(nullptr)));
            if (t.step() != SQLITE_DONE) return err("transactionID already recorded", 1);
            return ok_status();
        });
    }

    Result<bool> transaction_exists(BytesView tid) override {
        std::lock_guard lk(*m_rmu);
        Stmt s(m_rdb, "SELECT 1 FROM transactions WHERE tid = ?1 UNION ALL SELECT 1 FROM pending WHERE tid = ?1");
        s.blob(1, tid);
        int rc = s.step();
        if (rc == SQLITE_ROW) return true;
        if (rc == SQLITE_DONE) return false;
        return err_on(m_rdb, "query");
    }

    Status set_status(BytesView tid, const std::string& status) override {
        return write([&]() -> Status {
            Stmt s(m_db, "UPDATE transactions SET status = ? WHERE tid = ?");
            s.text(1, status).blob(2, tid);
            if (s.step() != SQLITE_DONE) return err("update status");
            return ok_status();
        });
    }

    static CertRecord row(Stmt& s) {
        CertRecord r;
        r.serial = s.col_blob(0);
        r.transaction_id = s.col_blob(1);
        r.subject = s.col_text(2);
        r.sans = s.col_text(3);
        r.requester = s.col_text(4);
        r.not_before = s.col_i64(5);
        r.not_after = s.col_i64(6);
        r.issued_at = s.col_i64(7);
        r.der = s.col_blob(8);
        r.revoked = s.col_i64(9) != 0;
        r.revoked_at = s.col_i64(10);
        r.revocation_reason = static_cast<int>(s.col_i64(11));
        r.status = s.col_text(12);
        r.body = s.col_text(13);
        return r;
    }
    Result<std::optional<CertRecord>> find(const char* where, BytesView key) {
        std::lock_guard lk(*m_rmu);
        std::string sql = std::string(
                              "SELECT c.serial, c.tid, c.subject, c.sans, c.requester, c.not_before, c.not_after, "
                              "c.issued_at, c.der, c.revoked, c.revoked_at, c.reason, t.status, t.body "
                              "FROM certificates c JOIN transactions t ON t.tid = c.tid WHERE ") +
                          where;
        Stmt s(m_rdb, sql.c_str());
        s.blob(1, key);
        int rc = s.step();
        if (rc == SQLITE_ROW) return std::optional<CertRecord>(row(s));
        if (rc == SQLITE_DONE) return std::optional<CertRecord>();
        return err_on(m_rdb, "query");
    }
    Result<std::optional<CertRecord>> find_by_serial(BytesView serial) override { return find("c.serial = ?", serial); }
    Result<std::vector<CertRecord>> list_certificates() override {
        std::lock_guard lk(*m_rmu);
        Stmt s(m_rdb,
               "SELECT c.serial, c.tid, c.subject, c.sans, c.requester, c.not_before, c.not_after, c.issued_at, "
               "c.der, c.revoked, c.revoked_at, c.reason, t.status, t.body FROM certificates c "
               "JOIN transactions t ON t.tid = c.tid ORDER BY c.issued_at, c.serial");
        std::vector<CertRecord> out;
        int rc;
        while ((rc = s.step()) == SQLITE_ROW) out.push_back(row(s));
        if (rc != SQLITE_DONE) return err_on(m_rdb, "query");
        return out;
    }
    Result<std::optional<CertRecord>> find_by_transaction(BytesView tid) override { return find("c.tid = ?", tid); }

    Status revoke(BytesView serial, int reason, int64_t when) override {
        // The check and the update in one transaction: another RA/CA process sharing the file
        // cannot revoke in between.
        return write([&]() -> Status {
            {
                Stmt q(m_db, "SELECT revoked FROM certificates WHERE serial = ?");
                q.blob(1, serial);
                int rc = q.step();
                if (rc == SQLITE_DONE)
                    return Error(ErrorDomain::Pki, 2, "serial " + to_hex(serial) + " was not issued here");
                if (rc != SQLITE_ROW) return err("query");
                if (q.col_i64(0)) return Error(ErrorDomain::Pki, 3, "serial " + to_hex(serial) + " is already revoked");
            }
            {
                Stmt u(m_db,
                       "UPDATE certificates SET revoked = 1, revoked_at = ?, reason = ? WHERE serial = ? AND revoked = "
                       "0");
                u.i64(1, when).i64(2, reason).blob(3, serial);
                if (u.step() != SQLITE_DONE) return err("revoke");
            }
            return bump_revocations();
        });
    }

    Status bump_revocations() {
        Stmt b(m_db, "UPDATE crl_state SET rev_seq = rev_seq + 1 WHERE id = 1");
        if (b.step() != SQLITE_DONE) return err("crl state");
        return ok_status();
    }

    Result<std::vector<Bytes>> expire_unconfirmed(int64_t before, int64_t now) override {
        std::lock_guard lk(m_mu);
        Transaction txn(m_db);
        if (!txn.begun()) return txn.begun().error();
        std::vector<Bytes> serials;
        {
            Stmt q(m_db,
                   "SELECT c.serial FROM certificates c JOIN transactions t ON t.tid = c.tid "
                   "WHERE t.status = 'unconfirmed' AND t.created < ? AND c.revoked = 0");
            q.i64(1, before);
            int rc;
            while ((rc = q.step()) == SQLITE_ROW) serials.push_back(q.col_blob(0));
            if (rc != SQLITE_DONE) return err("query");
        }
        if (serials.empty()) return serials;
        for (auto& sn : serials) {
            Stmt u(m_db,
                   "UPDATE certificates SET revoked = 1, revoked_at = ?, reason = 5 WHERE serial = ? AND revoked = 0");
            u.i64(1, now).blob(2, sn);
            if (u.step() != SQLITE_DONE) return err("revoke");
        }
        {
            Stmt d(m_db,
                   "DELETE FROM open_requests WHERE tid IN (SELECT tid FROM transactions WHERE status = "
                   "'unconfirmed' AND created < ?)");
            d.i64(1, before);
            if (d.step() != SQLITE_DONE) return err("close open requests");
        }
        Stmt t(m_db,
               "UPDATE transactions SET status = 'unconfirmed-timeout' WHERE status = 'unconfirmed' AND created < ?");
        t.i64(1, before);
        if (t.step() != SQLITE_DONE) return err("update status");
        X2SEC_TRY_STATUS(bump_revocations());
        X2SEC_TRY_STATUS(txn.commit());
        return serials;
    }

    Result<Bytes> current_crl(int64_t now, int64_t max_age, const CrlBuilder& build) override {
        std::lock_guard lk(m_mu);
        Transaction txn(m_db);
        if (!txn.begun()) return txn.begun().error();
        int64_t rev_seq = 0, crl_seq = -1, built = 0;
        Bytes der;
        {
            Stmt q(m_db, "SELECT rev_seq, crl_seq, built, der FROM crl_state WHERE id = 1");
            if (q.step() != SQLITE_ROW) return err("crl state");
            rev_seq = q.col_i64(0);
            crl_seq = q.col_i64(1);
            built = q.col_i64(2);
            der = q.col_blob(3);
        }
        if (crl_seq == rev_seq && !der.empty() && now - built < max_age) return der;
        std::vector<pki::Revoked> list;
        {
            Stmt r(m_db, "SELECT serial, revoked_at, reason FROM certificates WHERE revoked = 1 ORDER BY serial");
            int rc;
            while ((rc = r.step()) == SQLITE_ROW)
                list.push_back({r.col_blob(0), r.col_i64(1), static_cast<int>(r.col_i64(2))});
            if (rc != SQLITE_DONE) return err("query");
        }
        int64_t number = 0;
        {
            Stmt n(m_db, "UPDATE crl_number SET n = n + 1 WHERE id = 1 RETURNING n");
            if (n.step() != SQLITE_ROW) return err("crl number");
            number = n.col_i64(0);
        }
        X2SEC_TRY(auto fresh, build(number, list));
        {
            Stmt u(m_db, "UPDATE crl_state SET crl_seq = ?, built = ?, der = ? WHERE id = 1");
            u.i64(1, rev_seq).i64(2, now).blob(3, fresh);
            if (u.step() != SQLITE_DONE) return err("crl state");
        }
        X2SEC_TRY_STATUS(txn.commit());
        return fresh;
    }

    Result<std::vector<pki::Revoked>> revoked() override {
        std::lock_guard lk(*m_rmu);
        Stmt s(m_rdb, "SELECT serial, revoked_at, reason FROM certificates WHERE revoked = 1 ORDER BY serial");
        std::vector<pki::Revoked> out;
        int rc;
        while ((rc = s.step()) == SQLITE_ROW)
            out.push_back({s.col_blob(0), s.col_i64(1), static_cast<int>(s.col_i64(2))});
        if (rc != SQLITE_DONE) return err_on(m_rdb, "query");
        return out;
    }

    Result<StoreCounts> counts() override {
        std::lock_guard lk(*m_rmu);
        StoreCounts c;
        Stmt a(m_rdb,
               "SELECT (SELECT COUNT(*) FROM certificates), (SELECT COUNT(*) FROM transactions), "
               "(SELECT COUNT(*) FROM certificates WHERE revoked = 1)");
        if (a.step() != SQLITE_ROW) return err_on(m_rdb, "count");
        c.certificates = a.col_i64(0);
        c.transactions = a.col_i64(1);
        c.revoked = a.col_i64(2);
        return c;
    }

    Result<int64_t> next_crl_number() override {
        std::lock_guard lk(m_mu);
        Transaction txn(m_db);
        if (!txn.begun()) return txn.begun().error();
        X2SEC_TRY_STATUS(exec("UPDATE crl_number SET n = n + 1 WHERE id = 1"));
        int64_t n = 0;
        {
            Stmt s(m_db, "SELECT n FROM crl_number WHERE id = 1");
            if (s.step() != SQLITE_ROW) return err("crl number");
            n = s.col_i64(0);
        }
        X2SEC_TRY_STATUS(txn.commit());
        return n;
    }

    std::string kind() const override { return "sqlite"; }
    uint64_t write_commits() const override { return m_batches.load(std::memory_order_relaxed); }

    Status record_pending(const PendingRequest& p) override {
        return write([&]() -> Status {
            {
                Stmt q(m_db, "SELECT 1 FROM transactions WHERE tid = ?");
                q.blob(1, p.transaction_id);
                if (q.step() == SQLITE_ROW) return Error(ErrorDomain::Io, 1, "sqlite: transactionID already recorded");
            }
            Stmt s(m_db,
                   "INSERT INTO pending(tid, profile, body, subject, sans, requester, request, created, state) "
                   "VALUES(?,?,?,?,?,?,?,?,'pending')");
            s.blob(1, p.transaction_id).text(2, p.profile).text(3, p.body).text(4, p.subject).text(5, p.sans);
            s.text(6, p.requester).blob(7, p.request_der).i64(8, p.created);
            if (s.step() != SQLITE_DONE) return err("transactionID already pending", 1);
            return append_audit_locked(hold_audit_entry(p));
        });
    }
    static const char* pending_cols() {
        return "SELECT tid, profile, body, subject, sans, requester, request, created, state, decided_by, reason, "
               "decided_at FROM pending ";
    }
    static PendingRequest pending_row(Stmt& s) {
        PendingRequest p;
        p.transaction_id = s.col_blob(0);
        p.profile = s.col_text(1);
        p.body = s.col_text(2);
        p.subject = s.col_text(3);
        p.sans = s.col_text(4);
        p.requester = s.col_text(5);
        p.request_der = s.col_blob(6);
        p.created = s.col_i64(7);
        p.state = s.col_text(8);
        p.decided_by = s.col_text(9);
        p.reason = s.col_text(10);
        p.decided_at = s.col_i64(11);
        return p;
    }
    Result<std::optional<PendingRequest>> find_pending(BytesView tid) override {
        std::lock_guard lk(*m_rmu);
        Stmt s(m_rdb, (std::string(pending_cols()) + "WHERE tid = ?").c_str());
        s.blob(1, tid);
        int rc = s.step();
        if (rc == SQLITE_ROW) return std::optional<PendingRequest>(pending_row(s));
        if (rc == SQLITE_DONE) return std::optional<PendingRequest>();
        return err_on(m_rdb, "query");
    }
    Result<std::vector<PendingRequest>> list_pending() override {
        std::lock_guard lk(*m_rmu);
        Stmt s(m_rdb, (std::string(pending_cols()) + "ORDER BY created, tid").c_str());
        std::vector<PendingRequest> out;
        int rc;
        while ((rc = s.step()) == SQLITE_ROW) out.push_back(pending_row(s));
        if (rc != SQLITE_DONE) return err_on(m_rdb, "query");
        return out;
    }
    Status decide_pending(BytesView tid, bool approve, const std::string& actor, const std::string& reason,
                          int64_t when) override {
        return write([&]() -> Status {
            {
                Stmt q(m_db, "SELECT state FROM pending WHERE tid = ?");
                q.blob(1, tid);
                int rc = q.step();
                if (rc == SQLITE_DONE)
                    return Error(ErrorDomain::Pki, 2, "no request " + to_hex(tid) + " awaits approval");
                if (rc != SQLITE_ROW) return err("query");
                if (q.col_text(0) != "pending")
                    return Error(ErrorDomain::Pki, 3, "request " + to_hex(tid) + " is already " + q.col_text(0));
            }
            {
                Stmt u(m_db,
                       "UPDATE pending SET state = ?, decided_by = ?, reason = ?, decided_at = ? WHERE tid = ? "
                       "AND state = 'pending'");
                u.text(1, approve ? "approved" : "rejected").text(2, actor).text(3, reason).i64(4, when).blob(5, tid);
                if (u.step() != SQLITE_DONE) return err("decide");
            }
            return append_audit_locked({0, when, actor, approve ? "approve" : "reject", to_hex(tid), reason, {}, {}});
        });
    }
    Status set_pending_state(BytesView tid, const std::string& state) override {
        return write([&]() -> Status {
            Stmt u(m_db, "UPDATE pending SET state = ? WHERE tid = ?");
            u.text(1, state).blob(2, tid);
            if (u.step() != SQLITE_DONE) return err("update pending");
            return ok_status();
        });
    }
    Status append_audit(const AuditEntry& e) override {
        return write([&]() -> Status { return append_audit_locked(e); });
    }
    Result<std::vector<AuditEntry>> audit_log() override {
        std::lock_guard lk(*m_rmu);
        Stmt s(m_rdb, "SELECT seq, at, actor, action, object, reason, prev_hash, hash FROM audit ORDER BY seq");
        std::vector<AuditEntry> out;
        int rc;
        while ((rc = s.step()) == SQLITE_ROW)
            out.push_back({s.col_i64(0), s.col_i64(1), s.col_text(2), s.col_text(3), s.col_text(4), s.col_text(5),
                           s.col_blob(6), s.col_blob(7)});
        if (rc != SQLITE_DONE) return err_on(m_rdb, "query");
        return out;
    }

private:
    // Group commit: concurrent writes share one SQLite transaction, so one WAL fsync.  A writer
    // queues its body; the first writer that finds no commit in progress becomes the leader: it
    // takes every queued write, runs each inside its own SAVEPOINT (a failing write is rolled
    // back alone and its error returned to its caller, the others go on), COMMITs once and
    // wakes them all.  Writes queued meanwhile form the next batch.  Every caller returns only
    // after the COMMIT that holds its write (synchronous=FULL: durable) or with an error, and a
    // failed COMMIT fails every write of the batch (all rolled back).
    struct WriteOp {
        const std::function<Status()>* body;
        Status result;
        bool done = false;
    };
    Status write(const std::function<Status()>& body) {
        WriteOp op{&body, ok_status()};
        std::unique_lock lk(m_q_mu);
        m_queue.push_back(&op);
        while (!op.done) {
            if (m_leading) {
                m_q_cv.wait(lk);
                continue;
            }
            m_leading = true;
            std::vector<WriteOp*> batch;
            batch.swap(m_queue);
            lk.unlock();
            run_batch(batch);
            lk.lock();
            for (auto* o : batch) o->done = true;
            m_leading = false;
            m_q_cv.notify_all();
        }
        return op.result;
    }
    void run_batch(const std::vector<WriteOp*>& batch) {
        std::lock_guard lk(m_mu);
        Transaction txn(m_db);
        if (!txn.begun()) {
            for (auto* o : batch) o->result = txn.begun().error();
            return;
        }
        for (auto* o : batch) {
            if (auto sp = exec("SAVEPOINT w"); !sp) {
                o->result = sp.error();
                continue;
            }
            o->result = (*o->body)();
            Status undo = o->result ? ok_status() : exec("ROLLBACK TO w");
            Status rel = exec("RELEASE w");
            if (!undo || !rel) {  // the savepoint could not be undone: nothing of this batch is kept
                Error e = !undo ? undo.error() : rel.error();
                for (auto* x : batch) x->result = e;
                return;  // txn rolls back
            }
        }
        if (auto c = txn.commit(); !c)
            for (auto* o : batch)
                if (o->result) o->result = c.error();
        m_batches.fetch_add(1, std::memory_order_relaxed);
    }

    // Inside a write transaction (BEGIN IMMEDIATE holds the database's write lock, so two
    // processes cannot append with the same predecessor).
    Status append_audit_locked(AuditEntry e) {
        Stmt q(m_db, "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1");
        int rc = q.step();
        if (rc == SQLITE_ROW) {
            e.seq = q.col_i64(0) + 1;
            e.prev_hash = q.col_blob(1);
        } else if (rc == SQLITE_DONE) {
            e.seq = 1;
            e.prev_hash.clear();
        } else {
            return err("audit query");
        }
        e.hash = audit_entry_hash(e);
        Stmt s(m_db,
               "INSERT INTO audit(seq, at, actor, action, object, reason, prev_hash, hash) VALUES(?,?,?,?,?,?,?,?)");
        s.i64(1, e.seq).i64(2, e.at).text(3, e.actor).text(4, e.action).text(5, e.object).text(6, e.reason);
        if (e.prev_hash.empty())
            sqlite3_bind_zeroblob(s.get(), 7, 0);  // the first entry: empty, not NULL
        else
            s.blob(7, e.prev_hash);
        s.blob(8, e.hash);
        if (s.step() != SQLITE_DONE) return err("audit append");
        return ok_status();
    }
    sqlite3* m_db;
    sqlite3* m_rdb;
    std::mutex m_mu;       // m_db: writes, and the CRL / sweep transactions
    std::mutex m_read_mu;  // m_rdb when it is a connection of its own
    std::mutex* m_rmu;
    std::mutex m_q_mu;  // the group-commit queue
    std::condition_variable m_q_cv;
    std::vector<WriteOp*> m_queue;
    bool m_leading = false;
    std::atomic<uint64_t> m_batches{0};
};

}  // namespace

Result<std::unique_ptr<Store>> open_sqlite_store(const std::string& path) {
    sqlite3* db = nullptr;
    if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX,
                        nullptr) != SQLITE_OK) {
        std::string m = db ? sqlite3_errmsg(db) : "out of memory";
        sqlite3_close(db);
        return Error(ErrorDomain::Io, 0, "cannot open store " + path + ": " + m);
    }
    sqlite3_busy_timeout(db, 5000);
    char* msg = nullptr;
    int rc = sqlite3_exec(db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;", nullptr,
                          nullptr, &msg);
    if (rc == SQLITE_OK) rc = sqlite3_exec(db, kSchema, nullptr, nullptr, &msg);
    if (rc != SQLITE_OK) {
        std::string m = msg ? msg : sqlite3_errmsg(db);
        sqlite3_free(msg);
        sqlite3_close(db);
        return Error(ErrorDomain::Io, 0, "sqlite: " + path + ": " + m);
    }
    // Reads on a connection of their own (WAL: they see the last commit and do not wait for a
    // write's fsync); an in-memory database exists only in its one connection.
    sqlite3* rdb = nullptr;
    bool memory = path == ":memory:" || path.empty() || path.find("mode=memory") != std::string::npos;
    if (!memory) {
        if (sqlite3_open_v2(path.c_str(), &rdb, SQLITE_OPEN_READONLY | SQLITE_OPEN_FULLMUTEX, nullptr) != SQLITE_OK) {
            std::string m = rdb ? sqlite3_errmsg(rdb) : "out of memory";
            sqlite3_close(rdb);
            sqlite3_close(db);
            return Error(ErrorDomain::Io, 0, "cannot open store " + path + " for reading: " + m);
        }
        sqlite3_busy_timeout(rdb, 5000);
    }
    return std::unique_ptr<Store>(std::make_unique<SqliteStore>(db, rdb));
}

Result<std::unique_ptr<Store>> open_store(const std::string& url) {
    // A libpq URI is passed whole ("postgresql://user@host/db"); "postgresql:<conninfo>" loses its prefix.
    if (url.rfind("postgresql://", 0) == 0 || url.rfind("postgres://", 0) == 0) return open_postgres_store(url);
    if (url.rfind("postgresql:", 0) == 0) return open_postgres_store(url.substr(11));
    if (url.rfind("sqlite:", 0) == 0) return open_sqlite_store(url.substr(7));
    return open_sqlite_store(url);
}

}  // namespace x2sec::cmp
