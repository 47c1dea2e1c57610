// The RA/CA store: every issued certificate, its serial, the CMP transaction that produced it,
// its status and its revocation.  SQLite (WAL, one transaction per write) by default;
// PostgreSQL (libpq) when configured, so several RA/CA instances can share one operator CA.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>
#include <x2sec/common/bytes.hpp>
#include <x2sec/common/result.hpp>
#include <x2sec/pki/pki.hpp>

namespace x2sec::cmp {

struct CertRecord {
    Bytes serial;
    Bytes transaction_id;
    std::string subject;
    std::string sans;       // comma separated dNSNames
    std::string requester;  // subject of the certificate that authenticated the request
    std::string body;       // "ir", "kur", "cr", "p10cr"
    int64_t not_before = 0;
    int64_t not_after = 0;
    int64_t issued_at = 0;
    Bytes der;
    std::string status;  // "unconfirmed", "confirmed", "implicit", "rejected-by-client", "aborted"
    bool revoked = false;
    int64_t revoked_at = 0;
    int revocation_reason = 0;
    // Written by record_issued into open_requests (same transaction) when status is
    // "unconfirmed" and request is not empty: the request message as it came (DER) and our
    // senderNonce of the ip/cp/kup, so that any instance can finish the transaction (certConf).
    Bytes open_request;
    Bytes open_nonce;
};

// A transaction whose certificate awaits its certConf (issue 13 item 4: any instance sharing
// the store can take the certConf).
struct OpenRequest {
    Bytes transaction_id;
    Bytes request_der;  // the ir/cr/p10cr/kur (or the approved request) as it came
    Bytes nonce;        // our senderNonce of the ip/cp/kup: the certConf's recipNonce
    int64_t created = 0;
};

struct StoreCounts {
    int64_t certificates = 0;
    int64_t transactions = 0;
    int64_t revoked = 0;
};

// A certificate request held for an operator's decision (profile approval = "manual").
struct PendingRequest {
    Bytes transaction_id;
    std::string profile;  // "" = default profile
    std::string body;     // "ir", "cr", "p10cr", "kur"
    std::string subject, sans, requester;
    Bytes request_der;  // the original PKIMessage: any instance can answer the polls
    int64_t created = 0;
    std::string state;  // "pending" -> "approved" | "rejected"; "approved" -> "issued"
    std::string decided_by, reason;
    int64_t decided_at = 0;
};

// One entry of the append-only audit log.  hash = SHA-256 over prev_hash and the fields
// (audit_entry_hash); each entry carries its predecessor's hash, so a rewritten or removed
// entry breaks the chain (verify_audit_chain).
struct AuditEntry {
    int64_t seq = 0;  // 1, 2, ... assigned by the store
    int64_t at = 0;
    std::string actor, action, object, reason;
    Bytes prev_hash, hash;
};
Bytes audit_entry_hash(const AuditEntry& e);  // over seq, at, actor, action, object, reason, prev_hash
// Ok, or an Error naming the first entry whose hash, predecessor link or sequence is wrong.
Status verify_audit_chain(const std::vector<AuditEntry>& entries);

class Store {
public:
    virtual ~Store() = default;
    // Records a transaction and the certificate it issued, atomically.  Fails with code 1 when
    // the transactionID is already present, code 4 when the serial is (issue again with a new
    // one), code 0 when the store failed.
    virtual Status record_issued(const CertRecord& rec) = 0;
    // Records a transaction that issued nothing (rr, genm) so its ID cannot be reused.
    virtual Status record_transaction(BytesView tid, const std::string& body, const std::string& status) = 0;
    virtual Result<bool> transaction_exists(BytesView tid) = 0;
    virtual Status set_status(BytesView tid, const std::string& status) = 0;
    virtual Result<std::optional<CertRecord>> find_by_serial(BytesView serial) = 0;
    virtual Result<std::optional<CertRecord>> find_by_transaction(BytesView tid) = 0;
    // Error code 2 when the serial is unknown, 3 when it is already revoked.
    virtual Status revoke(BytesView serial, int reason, int64_t when) = 0;
    // Every certificate, oldest first (x2sec ca list).
    virtual Result<std::vector<CertRecord>> list_certificates() = 0;
    virtual Result<std::vector<pki::Revoked>> revoked() = 0;
    virtual Result<StoreCounts> counts() = 0;
    virtual Result<int64_t> next_crl_number() = 0;
    virtual std::string kind() const = 0;

    // Approval (RFC 9483 5.1.4 polling).  record_pending fails with code 1 when the
    // transactionID is already known; transaction_exists also sees pending requests.
    virtual Status record_pending(const PendingRequest& p) = 0;
    virtual Result<std::optional<PendingRequest>> find_pending(BytesView tid) = 0;
    virtual Result<std::vector<PendingRequest>> list_pending() = 0;
    // pending -> approved/rejected, and the audit entry, in one transaction.  Code 2: unknown
    // transactionID, 3: already decided.
    virtual Status decide_pending(BytesView tid, bool approve, const std::string& actor, const std::string& reason,
                                  int64_t when) = 0;
    virtual Status set_pending_state(BytesView tid, const std::string& state) = 0;
    // Appends one entry (seq and hashes filled in, under the store's write lock).
    virtual Status append_audit(const AuditEntry& e) = 0;
    virtual Result<std::vector<AuditEntry>> audit_log() = 0;
    // --- shared by several instances (issue 13 item 4)
    // Certificates still `unconfirmed` whose transaction began before `before` (their RA/CA
    // session has ended: timed out, or its process died): status `unconfirmed-timeout`, revoked
    // (cessationOfOperation) at `now`, in one transaction, by whichever instance runs it
    // first.  Returns their serials.
    virtual Result<std::vector<Bytes>> expire_unconfirmed(int64_t before, int64_t now) = 0;
    // The open request of an `unconfirmed` transaction (none once it is closed).
    virtual Result<std::optional<OpenRequest>> find_open_request(BytesView tid) = 0;
    // unconfirmed -> `status` and its open request removed, in one transaction; true when this
    // call made the change, false when the transaction was no longer unconfirmed (another
    // instance confirmed or revoked it, or it is unknown).  So a transaction closes once.
    virtual Result<bool> close_unconfirmed(BytesView tid, const std::string& status) = 0;
    // The same, and the transaction's certificate revoked (reason, when) with it; false (nothing
    // changed) when the transaction was no longer unconfirmed.
    virtual Result<bool> revoke_unconfirmed(BytesView tid, const std::string& status, int reason, int64_t when) = 0;
    // The current CRL, one for all instances: when a revocation was recorded since the stored
    // CRL was built, or it is `max_age` old, `build(number, revoked)` makes a new one with the
    // next CRL number and it is stored; otherwise the stored DER is returned.  Serialised in the
    // database (row lock / write transaction), so CRL numbers only grow and every instance
    // serves the newest CRL.
    using CrlBuilder = std::function<Result<Bytes>(int64_t number, const std::vector<pki::Revoked>& revoked)>;
    virtual Result<Bytes> current_crl(int64_t now, int64_t max_age, const CrlBuilder& build) = 0;
    // Write transactions committed so far by this handle (SQLite's group commit: concurrent
    // writes share one; benchmarks and tests), 0 when the backend does not count them.
    virtual uint64_t write_commits() const { return 0; }
};

// path: file name (":memory:" for tests).
Result<std::unique_ptr<Store>> open_sqlite_store(const std::string& path);
// conninfo: a libpq connection string ("host=/tmp/x dbname=x2sec").
Result<std::unique_ptr<Store>> open_postgres_store(const std::string& conninfo);
// "sqlite:<path>", "postgresql:<conninfo>", a libpq URI "postgresql://user:pw@host/db" (or a
// plain path = sqlite).  Errors never carry the connection's password.
Result<std::unique_ptr<Store>> open_store(const std::string& url);
// The connection string with every password replaced by "***" (password=..., quoted or not;
// URI user:password@ and ?password=), for errors and logs.
std::string redact_conninfo(const std::string& conninfo);

}  // namespace x2sec::cmp
