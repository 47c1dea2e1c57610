#include <openssl/evp.h>
#include <x2sec/cmp/store.hpp>

namespace x2sec::cmp {

namespace {
void put_field(EVP_MD_CTX* c, const std::string& s) {  // length-prefixed: no two field lists collide
    uint64_t n = s.size();
    unsigned char len[8];
    for (int i = 7; i >= 0; --i, n >>= 8) len[i] = static_cast<unsigned char>(n & 0xff);
    EVP_DigestUpdate(c, len, sizeof len);
    EVP_DigestUpdate(c, s.data(), s.size());
}
}  // namespace

Bytes audit_entry_hash(const AuditEntry& e) {
    EVP_MD_CTX* c = EVP_MD_CTX_new();
    EVP_DigestInit_ex(c, EVP_sha256(), nullptr);
    put_field(c, "x2sec-audit-v1");
    put_field(c, std::to_string(e.seq));
    put_field(c, std::to_string(e.at));
    put_field(c, e.actor);
    put_field(c, e.action);
    put_field(c, e.object);
    put_field(c, e.reason);
    put_field(c, std::string(e.prev_hash.begin(), e.prev_hash.end()));
    Bytes out(32);
    unsigned int n = 0;
    EVP_DigestFinal_ex(c, out.data(), &n);
    EVP_MD_CTX_free(c);
    out.resize(n);
    return out;
}

Status verify_audit_chain(const std::vector<AuditEntry>& entries) {
    Bytes prev;
    int64_t seq = 0;
    for (auto& e : entries) {
        ++seq;
        if (e.seq != seq)
            return Error(
                ErrorDomain::Pki, 1,
                "audit entry " + std::to_string(seq) + " is missing (next entry is " + std::to_string(e.seq) + ")");
        if (e.prev_hash != prev)
            return Error(ErrorDomain::Pki, 2,
                         "audit entry " + std::to_string(e.seq) +
                             " does not link to its predecessor (an entry before it was changed or removed)");
        if (audit_entry_hash(e) != e.hash)
            return Error(ErrorDomain::Pki, 3, "audit entry " + std::to_string(e.seq) + " was modified (hash mismatch)");
        prev = e.hash;
    }
    return ok_status();
}

}  // namespace x2sec::cmp
