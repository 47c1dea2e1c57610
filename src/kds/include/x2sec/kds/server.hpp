// The KDS server engine (sans-I/O): the transport authenticates the client (mutual TLS, or the
// backhaul tunnel's authenticated identity) and hands the engine that identity plus the
// request bytes; the engine answers with response bytes.
//
// Rules:
//  * the authenticated identity must be a configured H(e)NB, and the request's Requester must
//    be that identity;
//  * the requested Peer must be a configured H(e)NB and {requester, peer} an authorised
//    neighbour relation;
//  * the first request for a pair creates a fresh 256-bit key (from the injected Rng) with a
//    16-octet identifier and a lifetime; both members of the pair receive that same key;
//  * a key is zeroised when it expires, when it is replaced by a rekey, and as soon as both
//    members have received it (the identifier and expiry are kept, so a rekey request naming
//    the old key id is recognised);
//  * rekey (flag set, PreviousKeyId = the current id): a new generation is created once; the
//    other member asking with the same old id gets the new generation too (redistribution).
//  * keys are never logged: only key ids (hex) and generations appear in logs.
#pragma once

#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>
#include <x2sec/common/counters.hpp>
#include <x2sec/common/rng.hpp>
#include <x2sec/common/time.hpp>
#include <x2sec/kds/protocol.hpp>

namespace x2sec::kds {

struct NodeEntry {
    std::string name;      // e.g. "henb-a1"
    std::string identity;  // certificate SAN dNSName / IKE ID_FQDN
};

struct ServerConfig {
    std::vector<NodeEntry> nodes;
    std::vector<std::pair<std::string, std::string>> relations;  // by node name, unordered
    uint32_t key_lifetime_s = 3600;
    // Wipe a key as soon as both members have it (default).  Turn off to let a member that
    // lost its key fetch the same one again until expiry.
    bool wipe_after_delivery = true;
};
Status validate(const ServerConfig& c);

// What the engine decided for one request (for logs, tests and `x2sec status`).
struct Outcome {
    bool granted = false;
    ErrorCode error = ErrorCode::Internal;
    std::string detail;
    std::string key_id_hex;
    uint32_t generation = 0;
    bool new_key = false;
};

class Server {
public:
    Server(ServerConfig config, Rng& rng);

    // Bytes in, bytes out.  `client_identity` is what the transport authenticated.
    SecureBytes handle(std::string_view client_identity, BytesView request, Millis now, Outcome* outcome = nullptr);
    // The same on a decoded request.
    Message handle_request(std::string_view client_identity, const KeyRequest& req, Millis now,
                           Outcome* outcome = nullptr);
    // SIGHUP: replaces nodes, relations, key lifetime and wipe policy (validated first; on an
    // error nothing changes).  Keys of pairs still related, with both members' identities
    // unchanged, stay as they are; all others are wiped (counted kds.key.dropped_by_reload).
    Status reload(ServerConfig config);
    // Drop expired keys (also done on every request).
    void expire(Millis now);

    size_t pairs_with_key_material() const;
    size_t pairs_known() const;
    const Counters& counters() const { return m_counters; }
    void count(std::string_view name) { m_counters.inc(name); }
    std::optional<std::string> node_for_identity(std::string_view identity) const;

private:
    struct PairKey {
        Bytes key_id;
        SecureBytes key;  // empty once wiped
        Millis expires_at = 0;
        uint32_t generation = 0;
        std::set<std::string> delivered;  // node names
    };
    using PairName = std::pair<std::string, std::string>;  // sorted
    Message error(uint32_t id, ErrorCode c, std::string text, Outcome* o);
    void new_generation(PairKey& pk, Millis now);

    mutable std::mutex m_mutex;
    ServerConfig m_config;
    Rng& m_rng;
    std::map<std::string, std::string, std::less<>> m_by_identity;  // identity -> name
    std::map<std::string, std::string, std::less<>> m_identity_of;  // name -> identity
    std::set<PairName> m_relations;
    std::map<PairName, PairKey> m_keys;
    Counters m_counters;
};

}  // namespace x2sec::kds
