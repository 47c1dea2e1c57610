// Audit entries that both stores (store_sqlite.cpp, store_pg.cpp) write in the same words.
#pragma once

#include <string>
#include <x2sec/cmp/store.hpp>

namespace x2sec::cmp {

// "hold": a request put aside for an operator's decision (record_pending).  seq and the
// hashes are filled in by the store's append.
inline AuditEntry hold_audit_entry(const PendingRequest& p) {
    return {0,
            p.created,
            p.requester,
            "hold",
            to_hex(p.transaction_id),
            "profile " + (p.profile.empty() ? std::string("default") : p.profile) + " requires approval: " + p.subject +
                " " + p.sans,
            {},
            {}};
}

}  // namespace x2sec::cmp
