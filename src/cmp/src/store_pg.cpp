// PostgreSQL store over libpq: same schema and semantics as the SQLite store.  Every write
// is one SQL transaction; uniqueness of transactionIDs and serials is enforced by primary
// keys, so several RA/CA instances can share the database.
#include <libpq-fe.h>
#include <cctype>
#include <ctime>
#include <mutex>
#include <x2sec/cmp/store.hpp>

#include "store_audit.hpp"

namespace x2sec::cmp {
namespace {

const char* kPgSchema = R"sql(
CREATE TABLE IF NOT EXISTS transactions (
  tid BYTEA PRIMARY KEY, body TEXT NOT NULL, status TEXT NOT NULL, created BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS certificates (
  serial BYTEA PRIMARY KEY, tid BYTEA NOT NULL REFERENCES transactions(tid), subject TEXT NOT NULL,
  sans TEXT NOT NULL, requester TEXT NOT NULL, not_before BIGINT NOT NULL, not_after BIGINT NOT NULL,
  issued_at BIGINT NOT NULL, der BYTEA NOT NULL, revoked INTEGER NOT NULL DEFAULT 0,
  revoked_at BIGINT NOT NULL DEFAULT 0, reason INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS certificates_tid ON certificates(tid);
CREATE TABLE IF NOT EXISTS crl_number (id INTEGER PRIMARY KEY CHECK (id = 1), n BIGINT NOT NULL);
INSERT INTO crl_number VALUES (1, 0) ON CONFLICT DO NOTHING;
CREATE TABLE IF NOT EXISTS pending (
  tid BYTEA PRIMARY KEY, profile TEXT NOT NULL, body TEXT NOT NULL, subject TEXT NOT NULL, sans TEXT NOT NULL,
  requester TEXT NOT NULL, request BYTEA NOT NULL, created BIGINT NOT NULL, state TEXT NOT NULL,
  decided_by TEXT NOT NULL DEFAULT '', reason TEXT NOT NULL DEFAULT '', decided_at BIGINT NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS audit (
  seq BIGINT PRIMARY KEY, at BIGINT NOT NULL, actor TEXT NOT NULL, action TEXT NOT NULL, object TEXT NOT NULL,
  reason TEXT NOT NULL, prev_hash BYTEA NOT NULL, hash BYTEA NOT NULL);
CREATE OR REPLACE FUNCTION x2sec_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS
  $$ BEGIN RAISE EXCEPTION 'audit log is append-only'; END $$;
CREATE OR REPLACE TRIGGER audit_append_only BEFORE UPDATE OR DELETE ON audit FOR EACH ROW EXECUTE FUNCTION x2sec_audit_append_only();
CREATE TABLE IF NOT EXISTS crl_state (id INTEGER PRIMARY KEY CHECK (id = 1), rev_seq BIGINT NOT NULL DEFAULT 0,
  crl_seq BIGINT NOT NULL DEFAULT -1, built BIGINT NOT NULL DEFAULT 0, der BYTEA);
INSERT INTO crl_state(id) VALUES (1) ON CONFLICT DO NOTHING;
CREATE INDEX IF NOT EXISTS transactions_status ON transactions(status, created);
CREATE TABLE IF NOT EXISTS open_requests (
  tid BYTEA PRIMARY KEY REFERENCES transactions(tid), request BYTEA NOT NULL, nonce BYTEA NOT NULL,
  created BIGINT NOT NULL);
)sql";

// SQLSTATE 23505: unique_violation (a primary key already present).
bool unique_violation(PGresult* r) {
    const char* st = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : nullptr;
    return st && std::string_view(st) == "23505";
}

struct ResFree {
    void operator()(PGresult* r) const { PQclear(r); }
};
using Res = std::unique_ptr<PGresult, ResFree>;

// Parameters: text or binary (bytea) values.
struct Params {
    std::vector<std::string> vals;
    std::vector<int> formats;
    Params& bin(BytesView b) {
        vals.emplace_back(reinterpret_cast<const char*>(b.data()), b.size());
        formats.push_back(1);
        return *this;
    }
    Params& txt(const std::string& s) {
        vals.push_back(s);
        formats.push_back(0);
        return *this;
    }
    Params& num(int64_t v) { return txt(std::to_string(v)); }
};

// Every password the connection string carries (keyword form or URI), as libpq reads it.
std::vector<std::string> conninfo_passwords(const std::string& conninfo) {
    std::vector<std::string> out;
    char* errmsg = nullptr;
    PQconninfoOption* opts = PQconninfoParse(conninfo.c_str(), &errmsg);
    if (errmsg) PQfreemem(errmsg);
    if (!opts) return out;
    for (PQconninfoOption* o = opts; o->keyword; ++o)
        if (std::string_view(o->keyword) == "password" && o->val && *o->val) out.emplace_back(o->val);
    PQconninfoFree(opts);
    return out;
}

// Replaces every occurrence of the connection's passwords in a message (libpq or ours).
std::string scrub(std::string msg, const std::vector<std::string>& secrets) {
    for (const auto& p : secrets)
        for (size_t at = msg.find(p); at != std::string::npos; at = msg.find(p, at + 3))
            msg.replace(at, p.size(), "***");
    return msg;
}

class PgStore final : public Store {
public:
    PgStore(PGconn* c, std::vector<std::string> secrets) : m_c(c), m_secrets(std::move(secrets)) {}
    ~PgStore() override { PQfinish(m_c); }

    Error err(const std::string& what, int code = 0) {
        return Error(ErrorDomain::Io, code, scrub("postgresql: " + what + ": " + PQerrorMessage(m_c), m_secrets));
    }
    // Binary results so BYTEA comes back raw.
    Res run(const char* sql, const Params& p = {}) {
        std::vector<const char*> v;
        std::vector<int> lens;
        for (auto& s : p.vals) {
            v.push_back(s.data());
            lens.push_back(static_cast<int>(s.size()));
        }
        return Res(
            PQexecParams(m_c, sql, static_cast<int>(v.size()), nullptr, v.data(), lens.data(), p.formats.data(), 1));
    }
    static bool ok(const Res& r) {
        auto st = PQresultStatus(r.get());
        return st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;
    }
    // A connection that broke (server restarted, network) is re-established once, outside a
    // transaction, before the next statement; the statement that saw the break has failed.
    void reconnect_if_broken() {
        if (PQstatus(m_c) != CONNECTION_BAD) return;
        PQreset(m_c);
        if (PQstatus(m_c) == CONNECTION_OK) (void)exec("SET client_min_messages = warning");  // session setting
    }
    // Every method takes the connection through here: the lock, then a broken connection
    // re-established before its first statement (so no method keeps failing on a dead one).
    std::unique_lock<std::mutex> use() {
        std::unique_lock lk(m_mu);
        reconnect_if_broken();
        return lk;
    }
    Status exec(const char* sql) {
        Res r(PQexec(m_c, sql));
        if (PQresultStatus(r.get()) != PGRES_COMMAND_OK && PQresultStatus(r.get()) != PGRES_TUPLES_OK) return err(sql);
        return ok_status();
    }
    static int64_t be64(const char* p) {
        uint64_t v = 0;
        for (int i = 0; i < 8; ++i) v = (v << 8) | static_cast<uint8_t>(p[i]);
        return static_cast<int64_t>(v);
    }
    static int32_t be32(const char* p) {
        uint32_t v = 0;
        for (int i = 0; i < 4; ++i) v = (v << 8) | static_cast<uint8_t>(p[i]);
        return static_cast<int32_t>(v);
    }
    static Bytes bytes(PGresult* r, int row, int col) {
        auto* p = reinterpret_cast<const uint8_t*>(PQgetvalue(r, row, col));
        return Bytes(p, p + PQgetlength(r, row, col));
    }
    static std::string text(PGresult* r, int row, int col) {
        return std::string(PQgetvalue(r, row, col), static_cast<size_t>(PQgetlength(r, row, col)));
    }

    Status record_issued(const CertRecord& r) override {
        auto lk = use();
        X2SEC_TRY_STATUS(exec("BEGIN"));
        auto t = run("INSERT INTO transactions(tid, body, status, created) VALUES($1,$2,$3,$4)",
                     Params().bin(r.transaction_id).txt(r.body).txt(r.status).num(r.issued_at));
        if (!ok(t)) {
            auto e = unique_violation(t.get()) ? err("transactionID already recorded", 1) : err("record transaction");
            (void)exec("ROLLBACK");
            return e;
        }
        auto c = run(
            "INSERT INTO certificates(serial, tid, subject, sans, requester, not_before, not_after, issued_at, der) "
            "VALUES($1,$2,$3,$4,$5,$6,$7,$8,$9)",
            Params()
                .bin(r.serial)
                .bin(r.transaction_id)
                .txt(r.subject)
                .txt(r.sans)
                .txt(r.requester)
                .num(r.not_before)
                .num(r.not_after)
                .num(r.issued_at)
                .bin(r.der));
        if (!ok(c)) {
            auto e = unique_violation(c.get()) ? err("serial already recorded", 4) : err("record certificate");
            (void)exec("ROLLBACK");
            return e;
        }
        if (r.status == "unconfirmed" && !r.open_request.empty()) {
            auto o = run("INSERT INTO open_requests(tid, request, nonce, created) VALUES($1,$2,$3,$4)",
                         Params().bin(r.transaction_id).bin(r.open_request).bin(r.open_nonce).num(r.issued_at));
            if (!ok(o)) {
                auto e = err("record open request");
                (void)exec("ROLLBACK");
                return e;
            }
        }
        if (auto st = exec("COMMIT"); !st) {
            (void)exec("ROLLBACK");
            return st;
        }
        return ok_status();
    }
    Result<std::optional<OpenRequest>> find_open_request(BytesView tid) override {
        auto lk = use();
        auto r =
            run("SELECT o.request, o.nonce, o.created FROM open_requests o JOIN transactions t ON t.tid = o.tid "
                "WHERE o.tid = $1 AND t.status = 'unconfirmed'",
                Params().bin(tid));
        if (!ok(r)) return err("query");
        if (PQntuples(r.get()) == 0) return std::optional<OpenRequest>();
        OpenRequest o;
        o.transaction_id.assign(tid.begin(), tid.end());
        o.request_der = bytes(r.get(), 0, 0);
        o.nonce = bytes(r.get(), 0, 1);
        o.created = be64(PQgetvalue(r.get(), 0, 2));
        return std::optional<OpenRequest>(std::move(o));
    }
    // One statement each (data-modifying CTEs run as one unit): the status changes only from
    // `unconfirmed`, so of two instances racing to close a transaction exactly one sees a row.
    Result<bool> close_unconfirmed(BytesView tid, const std::string& status) override {
        auto lk = use();
        auto r = run(
            "WITH u AS (UPDATE transactions SET status = $1 WHERE tid = $2 AND status = 'unconfirmed' RETURNING tid), "
            "d AS (DELETE FROM open_requests WHERE tid IN (SELECT tid FROM u)) SELECT tid FROM u",
            Params().txt(status).bin(tid));
        if (!ok(r)) return err("close transaction");
        return PQntuples(r.get()) > 0;
    }
    Result<bool> revoke_unconfirmed(BytesView tid, const std::string& status, int reason, int64_t when) override {
        auto lk = use();
        auto r = run(
            "WITH u AS (UPDATE transactions SET status = $1 WHERE tid = $2 AND status = 'unconfirmed' RETURNING tid), "
            "d AS (DELETE FROM open_requests WHERE tid IN (SELECT tid FROM u)), "
            "c AS (UPDATE certificates SET revoked = 1, revoked_at = $3, reason = $4 WHERE revoked = 0 AND tid IN "
            "(SELECT tid FROM u) RETURNING serial), "
            "b AS (UPDATE crl_state SET rev_seq = rev_seq + 1 WHERE id = 1 AND EXISTS (SELECT 1 FROM c)) "
            "SELECT tid FROM u",
            Params().txt(status).bin(tid).num(when).num(reason));
        if (!ok(r)) return err("revoke unconfirmed");
        return PQntuples(r.get()) > 0;
    }
    Status record_transaction(BytesView tid, const std::string& body, const std::string& status) override {
        auto lk = use();
        auto t = run("INSERT INTO transactions(tid, body, status, created) VALUES($1,$2,$3,$4)",
                     Params().bin(tid).txt(body).txt(status).num(static_cast<int64_t>(std::time(nullptr))));
        if (!ok(t))
            return unique_violation(t.get()) ? err("transactionID already recorded", 1) : err("record transaction");
        return ok_status();
    }
    Result<bool> transaction_exists(BytesView tid) override {
        auto lk = use();
        auto r = run("SELECT 1 FROM transactions WHERE tid = $1 UNION ALL SELECT 1 FROM pending WHERE tid = $1",
                     Params().bin(tid));
        if (!ok(r)) return err("query");
        return PQntuples(r.get()) > 0;
    }
    Status set_status(BytesView tid, const std::string& status) override {
        auto lk = use();
        auto r = run("UPDATE transactions SET status = $1 WHERE tid = $2", Params().txt(status).bin(tid));
        if (!ok(r)) return err("update status");
        return ok_status();
    }
    Result<std::optional<CertRecord>> find(const char* where, BytesView key) {
        auto lk = use();
        std::string sql = std::string(
                              "SELECT c.serial, c.tid, c.subject, c.sans, c.requester, c.not_before, c.not_after, "
                              "c.issued_at, c.der, c.revoked, c.revoked_at, c.reason, t.status, t.body "
                              "FROM certificates c JOIN transactions t ON t.tid = c.tid WHERE ") +
                          where;
        auto r = run(sql.c_str(), Params().bin(key));
        if (!ok(r)) return err("query");
        if (PQntuples(r.get()) == 0) return std::optional<CertRecord>();
        return std::optional<CertRecord>(cert_row(r.get(), 0));
    }
    static CertRecord cert_row(PGresult* g, int i) {
        CertRecord c;
        c.serial = bytes(g, i, 0);
        c.transaction_id = bytes(g, i, 1);
        c.subject = text(g, i, 2);
        c.sans = text(g, i, 3);
        c.requester = text(g, i, 4);
        c.not_before = be64(PQgetvalue(g, i, 5));
        c.not_after = be64(PQgetvalue(g, i, 6));
        c.issued_at = be64(PQgetvalue(g, i, 7));
        c.der = bytes(g, i, 8);
        c.revoked = be32(PQgetvalue(g, i, 9)) != 0;
        c.revoked_at = be64(PQgetvalue(g, i, 10));
        c.revocation_reason = be32(PQgetvalue(g, i, 11));
        c.status = text(g, i, 12);
        c.body = text(g, i, 13);
        return c;
    }
    Result<std::vector<CertRecord>> list_certificates() override {
        auto lk = use();
        auto r =
            run("SELECT c.serial, c.tid, c.subject, c.sans, c.requester, c.not_before, c.not_after, c.issued_at, "
                "c.der, c.revoked, c.revoked_at, c.reason, t.status, t.body FROM certificates c "
                "JOIN transactions t ON t.tid = c.tid ORDER BY c.issued_at, c.serial");
        if (!ok(r)) return err("query");
        std::vector<CertRecord> out;
        out.reserve(static_cast<size_t>(PQntuples(r.get())));
        for (int i = 0; i < PQntuples(r.get()); ++i) out.push_back(cert_row(r.get(), i));
        return out;
    }
    Result<std::optional<CertRecord>> find_by_serial(BytesView serial) override {
        return find("c.serial = $1", serial);
    }
    Result<std::optional<CertRecord>> find_by_transaction(BytesView tid) override { return find("c.tid = $1", tid); }

    // Runs body inside BEGIN .. COMMIT; any failure rolls back.
    template <class F>
    auto in_txn(F&& body) -> decltype(body()) {
        if (auto st = exec("BEGIN"); !st) return st.error();
        auto r = body();
        if (!r) {
            (void)exec("ROLLBACK");
            return r;
        }
        if (auto st = exec("COMMIT"); !st) {
            (void)exec("ROLLBACK");
            return st.error();
        }
        return r;
    }

    Status revoke(BytesView serial, int reason, int64_t when) override {
        auto lk = use();
        // The check, the update and the revocation sequence in one transaction, the row locked:
        // another instance cannot revoke in between.
        return in_txn([&]() -> Status {
            auto q = run("SELECT revoked FROM certificates WHERE serial = $1 FOR UPDATE", Params().bin(serial));
            if (!ok(q)) return err("query");
            if (PQntuples(q.get()) == 0)
                return Error(ErrorDomain::Pki, 2, "serial " + to_hex(serial) + " was not issued here");
            if (be32(PQgetvalue(q.get(), 0, 0)) != 0)
                return Error(ErrorDomain::Pki, 3, "serial " + to_hex(serial) + " is already revoked");
            auto u = run(
                "UPDATE certificates SET revoked = 1, revoked_at = $1, reason = $2 WHERE serial = $3 AND revoked = 0",
                Params().num(when).num(reason).bin(serial));
            if (!ok(u)) return err("revoke");
            auto b = run("UPDATE crl_state SET rev_seq = rev_seq + 1 WHERE id = 1");
            if (!ok(b)) return err("crl state");
            return ok_status();
        });
    }

    Result<std::vector<Bytes>> expire_unconfirmed(int64_t before, int64_t now) override {
        auto lk = use();
        return in_txn([&]() -> Result<std::vector<Bytes>> {
            // One statement marks the transactions; the certificates of exactly those are revoked.
            auto t =
                run("UPDATE transactions SET status = 'unconfirmed-timeout' WHERE status = 'unconfirmed' "
                    "AND created < $1 RETURNING tid",
                    Params().num(before));
            if (!ok(t)) return err("expire");
            std::vector<Bytes> serials;
            if (PQntuples(t.get()) == 0) return serials;
            auto d =
                run("DELETE FROM open_requests WHERE tid IN (SELECT tid FROM transactions WHERE status = "
                    "'unconfirmed-timeout' AND created < $1)",
                    Params().num(before));
            if (!ok(d)) return err("expire");
            auto c =
                run("UPDATE certificates SET revoked = 1, revoked_at = $1, reason = 5 WHERE revoked = 0 AND tid IN "
                    "(SELECT tid FROM transactions WHERE status = 'unconfirmed-timeout' AND created < $2) "
                    "RETURNING serial",
                    Params().num(now).num(before));
            if (!ok(c)) return err("expire");
            for (int i = 0; i < PQntuples(c.get()); ++i) serials.push_back(bytes(c.get(), i, 0));
            if (!serials.empty()) {
                auto b = run("UPDATE crl_state SET rev_seq = rev_seq + 1 WHERE id = 1");
                if (!ok(b)) return err("crl state");
            }
            return serials;
        });
    }

    Result<Bytes> current_crl(int64_t now, int64_t max_age, const CrlBuilder& build) override {
        auto lk = use();
        auto fresh = [&](PGresult* q) {
            return be64(PQgetvalue(q, 0, 0)) == be64(PQgetvalue(q, 0, 1)) && !PQgetisnull(q, 0, 3) &&
                   now - be64(PQgetvalue(q, 0, 2)) < max_age;
        };
        // Fast path without a lock: the stored CRL covers every revocation.
        auto q0 = run("SELECT rev_seq, crl_seq, built, der FROM crl_state WHERE id = 1");
        if (!ok(q0) || PQntuples(q0.get()) != 1) return err("crl state");
        if (fresh(q0.get())) return bytes(q0.get(), 0, 3);
        return in_txn([&]() -> Result<Bytes> {
            // The row lock serialises builders across instances; re-check under it.
            auto q = run("SELECT rev_seq, crl_seq, built, der FROM crl_state WHERE id = 1 FOR UPDATE");
            if (!ok(q) || PQntuples(q.get()) != 1) return err("crl state");
            if (fresh(q.get())) return bytes(q.get(), 0, 3);
            int64_t rev_seq = be64(PQgetvalue(q.get(), 0, 0));
            auto r = run("SELECT serial, revoked_at, reason FROM certificates WHERE revoked = 1 ORDER BY serial");
            if (!ok(r)) return err("query");
            std::vector<pki::Revoked> list;
            list.reserve(static_cast<size_t>(PQntuples(r.get())));
            for (int i = 0; i < PQntuples(r.get()); ++i)
                list.push_back(
                    {bytes(r.get(), i, 0), be64(PQgetvalue(r.get(), i, 1)), be32(PQgetvalue(r.get(), i, 2))});
            auto n = run("UPDATE crl_number SET n = n + 1 WHERE id = 1 RETURNING n");
            if (!ok(n) || PQntuples(n.get()) != 1) return err("crl number");
            X2SEC_TRY(auto der, build(be64(PQgetvalue(n.get(), 0, 0)), list));
            auto u = run("UPDATE crl_state SET crl_seq = $1, built = $2, der = $3 WHERE id = 1",
                         Params().num(rev_seq).num(now).bin(der));
            if (!ok(u)) return err("crl state");
            return der;
        });
    }
    Result<std::vector<pki::Revoked>> revoked() override {
        auto lk = use();
        auto r = run("SELECT serial, revoked_at, reason FROM certificates WHERE revoked = 1 ORDER BY serial");
        if (!ok(r)) return err("query");
        std::vector<pki::Revoked> out;
        out.reserve(static_cast<size_t>(PQntuples(r.get())));
        for (int i = 0; i < PQntuples(r.get()); ++i)
            out.push_back({bytes(r.get(), i, 0), be64(PQgetvalue(r.get(), i, 1)), be32(PQgetvalue(r.get(), i, 2))});
        return out;
    }
    Result<StoreCounts> counts() override {
        auto lk = use();
        auto r =
            run("SELECT (SELECT COUNT(*) FROM certificates), (SELECT COUNT(*) FROM transactions), "
                "(SELECT COUNT(*) FROM certificates WHERE revoked = 1)");
        if (!ok(r)) return err("count");
        return StoreCounts{be64(PQgetvalue(r.get(), 0, 0)), be64(PQgetvalue(r.get(), 0, 1)),
                           be64(PQgetvalue(r.get(), 0, 2))};
    }
    Result<int64_t> next_crl_number() override {
        auto lk = use();
        auto r = run("UPDATE crl_number SET n = n + 1 WHERE id = 1 RETURNING n");
        if (!ok(r) || PQntuples(r.get()) != 1) return err("crl number");
        return be64(PQgetvalue(r.get(), 0, 0));
    }
    std::string kind() const override { return "postgresql"; }

    Status record_pending(const PendingRequest& p) override {
        auto lk = use();
        X2SEC_TRY_STATUS(exec("BEGIN"));
        auto body = [&]() -> Status {
            auto q = run("SELECT 1 FROM transactions WHERE tid = $1", Params().bin(p.transaction_id));
            if (!ok(q)) return err("query");
            if (PQntuples(q.get()) > 0) return Error(ErrorDomain::Io, 1, "postgresql: transactionID already recorded");
            auto r =
                run("INSERT INTO pending(tid, profile, body, subject, sans, requester, request, created, state) "
                    "VALUES($1,$2,$3,$4,$5,$6,$7,$8,'pending')",
                    Params()
                        .bin(p.transaction_id)
                        .txt(p.profile)
                        .txt(p.body)
                        .txt(p.subject)
                        .txt(p.sans)
                        .txt(p.requester)
                        .bin(p.request_der)
                        .num(p.created));
            if (!ok(r)) return err("transactionID already pending", 1);
            return append_audit_locked(hold_audit_entry(p));
        };
        return finish(body());
    }
    static PendingRequest pending_row(PGresult* g, int i) {
        PendingRequest p;
        p.transaction_id = bytes(g, i, 0);
        p.profile = text(g, i, 1);
        p.body = text(g, i, 2);
        p.subject = text(g, i, 3);
        p.sans = text(g, i, 4);
        p.requester = text(g, i, 5);
        p.request_der = bytes(g, i, 6);
        p.created = be64(PQgetvalue(g, i, 7));
        p.state = text(g, i, 8);
        p.decided_by = text(g, i, 9);
        p.reason = text(g, i, 10);
        p.decided_at = be64(PQgetvalue(g, i, 11));
        return p;
    }
    static constexpr const char* kPendingCols =
        "SELECT tid, profile, body, subject, sans, requester, request, created, state, decided_by, reason, decided_at "
        "FROM pending ";
    Result<std::optional<PendingRequest>> find_pending(BytesView tid) override {
        auto lk = use();
        auto r = run((std::string(kPendingCols) + "WHERE tid = $1").c_str(), Params().bin(tid));
        if (!ok(r)) return err("query");
        if (PQntuples(r.get()) == 0) return std::optional<PendingRequest>();
        return std::optional<PendingRequest>(pending_row(r.get(), 0));
    }
    Result<std::vector<PendingRequest>> list_pending() override {
        auto lk = use();
        auto r = run((std::string(kPendingCols) + "ORDER BY created, tid").c_str());
        if (!ok(r)) return err("query");
        std::vector<PendingRequest> out;
        out.reserve(static_cast<size_t>(PQntuples(r.get())));
        for (int i = 0; i < PQntuples(r.get()); ++i) out.push_back(pending_row(r.get(), i));
        return out;
    }
    Status decide_pending(BytesView tid, bool approve, const std::string& actor, const std::string& reason,
                          int64_t when) override {
        auto lk = use();
        X2SEC_TRY_STATUS(exec("BEGIN"));
        auto body = [&]() -> Status {
            auto q = run("SELECT state FROM pending WHERE tid = $1 FOR UPDATE", Params().bin(tid));
            if (!ok(q)) return err("query");
            if (PQntuples(q.get()) == 0)
                return Error(ErrorDomain::Pki, 2, "no request " + to_hex(tid) + " awaits approval");
            std::string st = text(q.get(), 0, 0);
            if (st != "pending") return Error(ErrorDomain::Pki, 3, "request " + to_hex(tid) + " is already " + st);
            auto u = run("UPDATE pending SET state = $1, decided_by = $2, reason = $3, decided_at = $4 WHERE tid = $5",
                         Params().txt(approve ? "approved" : "rejected").txt(actor).txt(reason).num(when).bin(tid));
            if (!ok(u)) return err("decide");
            return append_audit_locked({0, when, actor, approve ? "approve" : "reject", to_hex(tid), reason, {}, {}});
        };
        return finish(body());
    }
    Status set_pending_state(BytesView tid, const std::string& state) override {
        auto lk = use();
        auto u = run("UPDATE pending SET state = $1 WHERE tid = $2", Params().txt(state).bin(tid));
        if (!ok(u)) return err("update pending");
        return ok_status();
    }
    Status append_audit(const AuditEntry& e) override {
        auto lk = use();
        X2SEC_TRY_STATUS(exec("BEGIN"));
        return finish(append_audit_locked(e));
    }
    Result<std::vector<AuditEntry>> audit_log() override {
        auto lk = use();
        auto r = run("SELECT seq, at, actor, action, object, reason, prev_hash, hash FROM audit ORDER BY seq");
        if (!ok(r)) return err("query");
        std::vector<AuditEntry> out;
        PGresult* g = r.get();
        out.reserve(static_cast<size_t>(PQntuples(g)));
        for (int i = 0; i < PQntuples(g); ++i)
            out.push_back({be64(PQgetvalue(g, i, 0)), be64(PQgetvalue(g, i, 1)), text(g, i, 2), text(g, i, 3),
                           text(g, i, 4), text(g, i, 5), bytes(g, i, 6), bytes(g, i, 7)});
        return out;
    }

private:
    // COMMIT after a successful body, ROLLBACK otherwise (the body's error is returned).
    Status finish(Status st) {
        if (!st) {
            (void)exec("ROLLBACK");
            return st;
        }
        auto c = exec("COMMIT");
        if (!c) (void)exec("ROLLBACK");
        return c;
    }
    // Inside a transaction: the table lock serialises appenders across instances, so no two
    // entries share a predecessor.
    Status append_audit_locked(AuditEntry e) {
        X2SEC_TRY_STATUS(exec("LOCK TABLE audit IN SHARE ROW EXCLUSIVE MODE"));
        auto q = run("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1");
        if (!ok(q)) return err("audit query");
        if (PQntuples(q.get()) == 1) {
            e.seq = be64(PQgetvalue(q.get(), 0, 0)) + 1;
            e.prev_hash = bytes(q.get(), 0, 1);
        } else {
            e.seq = 1;
            e.prev_hash.clear();
        }
        e.hash = audit_entry_hash(e);
        auto r =
            run("INSERT INTO audit(seq, at, actor, action, object, reason, prev_hash, hash) "
                "VALUES($1,$2,$3,$4,$5,$6,$7,$8)",
                Params()
                    .num(e.seq)
                    .num(e.at)
                    .txt(e.actor)
                    .txt(e.action)
                    .txt(e.object)
                    .txt(e.reason)
                    .bin(e.prev_hash)
                    .bin(e.hash));
        if (!ok(r)) return err("audit append");
        return ok_status();
    }
    PGconn* m_c;
    std::vector<std::string> m_secrets;
    std::mutex m_mu;
};

bool is_uri(std::string_view s) {
    return s.rfind("postgresql://", 0) == 0 || s.rfind("postgres://", 0) == 0;
}

// "user:secret@host" -> "user:***@host"; "...?a=b&password=secret" -> "...&password=***".
std::string redact_uri(std::string s) {
    size_t auth = s.find("://") + 3;
    size_t end = s.find_first_of("/?#", auth);
    size_t at = s.rfind('@', end == std::string::npos ? s.size() : end);
    if (at != std::string::npos && at >= auth) {
        size_t colon = s.find(':', auth);
        if (colon != std::string::npos && colon < at) s.replace(colon + 1, at - colon - 1, "***");
    }
    size_t q = s.find('?');
    while (q != std::string::npos) {
        size_t key = q + 1;
        size_t eq = s.find('=', key);
        size_t amp = s.find('&', key);
        if (eq != std::string::npos && (amp == std::string::npos || eq < amp) &&
            s.compare(key, eq - key, "password") == 0)
            s.replace(eq + 1, (amp == std::string::npos ? s.size() : amp) - eq - 1, "***");
        q = s.find('&', key);
    }
    return s;
}

// Keyword/value form: keyword [ws] = [ws] (value | 'quoted value with \' escapes').
std::string redact_keywords(const std::string& s) {
    std::string out;
    size_t i = 0, n = s.size();
    while (i < n) {
        while (i < n && std::isspace(static_cast<unsigned char>(s[i]))) out += s[i++];
        size_t k = i;
        while (i < n && s[i] != '=' && !std::isspace(static_cast<unsigned char>(s[i]))) ++i;
        std::string keyword = s.substr(k, i - k);
        out += keyword;
        while (i < n && std::isspace(static_cast<unsigned char>(s[i]))) out += s[i++];
        if (i >= n || s[i] != '=') continue;
        out += s[i++];
        while (i < n && std::isspace(static_cast<unsigned char>(s[i]))) out += s[i++];
        size_t v = i;
        if (i < n && s[i] == '\'') {
            for (++i; i < n && s[i] != '\''; ++i)
                if (s[i] == '\\' && i + 1 < n) ++i;
            if (i < n) ++i;
        } else {
            while (i < n && !std::isspace(static_cast<unsigned char>(s[i]))) {
                if (s[i] == '\\' && i + 1 < n) ++i;
                ++i;
            }
        }
        out += keyword == "password" ? std::string("***") : s.substr(v, i - v);
    }
    return out;
}

}  // namespace

std::string redact_conninfo(const std::string& conninfo) {
    return is_uri(conninfo) ? redact_uri(conninfo) : redact_keywords(conninfo);
}

Result<std::unique_ptr<Store>> open_postgres_store(const std::string& conninfo) {
    auto secrets = conninfo_passwords(conninfo);
    PGconn* c = PQconnectdb(conninfo.c_str());
    if (PQstatus(c) != CONNECTION_OK) {
        std::string m = c ? PQerrorMessage(c) : "out of memory";
        PQfinish(c);
        return Error(ErrorDomain::Io, 0,
                     scrub("cannot connect to PostgreSQL (" + redact_conninfo(conninfo) + "): " + m, secrets));
    }
    auto s = std::make_unique<PgStore>(c, std::move(secrets));
    X2SEC_TRY_STATUS(s->exec("SET client_min_messages = warning"));
    X2SEC_TRY_STATUS(s->exec(kPgSchema));
    return std::unique_ptr<Store>(std::move(s));
}

}  // namespace x2sec::cmp
