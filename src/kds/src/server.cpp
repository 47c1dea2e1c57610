#include <x2sec/common/log.hpp>
#include <x2sec/kds/server.hpp>

namespace x2sec::kds {

namespace {
std::string lower(std::string_view s) {
    std::string out(s);
    for (auto& c : out) c = char(std::tolower(static_cast<unsigned char>(c)));
    return out;
}
}  // namespace

Status validate(const ServerConfig& c) {
    std::set<std::string> names, ids;
    for (auto& n : c.nodes) {
        if (n.name.empty()) return Error(ErrorDomain::Config, 0, "KDS node with an empty name");
        if (!valid_identity(n.identity))
            return Error(ErrorDomain::Config, 0, "KDS node '" + n.name + "': invalid identity '" + n.identity + "'");
        if (!names.insert(n.name).second) return Error(ErrorDomain::Config, 0, "duplicate KDS node '" + n.name + "'");
        if (!ids.insert(lower(n.identity)).second)
            return Error(ErrorDomain::Config, 0, "duplicate KDS identity '" + n.identity + "'");
    }
    for (auto& [a, b] : c.relations) {
        if (!names.count(a)) return Error(ErrorDomain::Config, 0, "relation names unknown node '" + a + "'");
        if (!names.count(b)) return Error(ErrorDomain::Config, 0, "relation names unknown node '" + b + "'");
        if (a == b) return Error(ErrorDomain::Config, 0, "relation of node '" + a + "' with itself");
    }
    if (c.key_lifetime_s == 0) return Error(ErrorDomain::Config, 0, "key lifetime must be positive");
    return {};
}

Server::Server(ServerConfig config, Rng& rng) : m_config(std::move(config)), m_rng(rng) {
    for (auto& n : m_config.nodes) {
        m_by_identity[lower(n.identity)] = n.name;
        m_identity_of[n.name] = n.identity;
    }
    for (auto& [a, b] : m_config.relations) m_relations.insert(a < b ? PairName{a, b} : PairName{b, a});
}

Status Server::reload(ServerConfig config) {
    X2SEC_TRY_STATUS(validate(config));
    std::lock_guard lock(m_mutex);
    auto old_identity = std::move(m_identity_of);
    m_config = std::move(config);
    m_by_identity.clear();
    m_identity_of.clear();
    m_relations.clear();
    for (auto& n : m_config.nodes) {
        m_by_identity[lower(n.identity)] = n.name;
        m_identity_of[n.name] = n.identity;
    }
    for (auto& [a, b] : m_config.relations) m_relations.insert(a < b ? PairName{a, b} : PairName{b, a});
    auto same = [&](const std::string& name) {
        auto o = old_identity.find(name);
        auto n = m_identity_of.find(name);
        return o != old_identity.end() && n != m_identity_of.end() && lower(o->second) == lower(n->second);
    };
    size_t dropped = 0;
    for (auto it = m_keys.begin(); it != m_keys.end();) {
        if (m_relations.count(it->first) && same(it->first.first) && same(it->first.second)) {
            ++it;
            continue;
        }
        it = m_keys.erase(it);  // PairKey's SecureBytes wipe the key
        ++dropped;
    }
    if (dropped) m_counters.inc("kds.key.dropped_by_reload", dropped);
    log::get("kds")->info("configuration reloaded: {} nodes, {} relations, {} pair key(s) dropped",
                          m_config.nodes.size(), m_relations.size(), dropped);
    return {};
}

std::optional<std::string> Server::node_for_identity(std::string_view identity) const {
    auto it = m_by_identity.find(lower(identity));
    if (it == m_by_identity.end()) return std::nullopt;
    return it->second;
}

Message Server::error(uint32_t id, ErrorCode c, std::string text, Outcome* o) {
    m_counters.inc(std::string("kds.refused.") + to_string(c));
    log::get("kds")->warn("refused: {} ({})", to_string(c), text);
    if (o) {
        o->granted = false;
        o->error = c;
        o->detail = text;
    }
    return ErrorMessage{id, c, std::move(text)};
}

void Server::new_generation(PairKey& pk, Millis now) {
    pk.key = SecureBytes(kKeySize);
    m_rng.fill(pk.key.span());
    pk.key_id = m_rng.bytes(kKeyIdSize);
    pk.expires_at = now + Millis(m_config.key_lifetime_s) * 1000;
    pk.generation += 1;
    pk.delivered.clear();
    m_counters.inc("kds.key.generated");
}

void Server::expire(Millis now) {
    for (auto it = m_keys.begin(); it != m_keys.end();) {
        if (it->second.expires_at <= now) {
            log::get("kds")->info("key {} for {}<->{} expired", to_hex(it->second.key_id), it->first.first,
                                  it->first.second);
            m_counters.inc("kds.key.expired");
            it = m_keys.erase(it);  // SecureBytes zeroises
        } else {
            ++it;
        }
    }
}

Message Server::handle_request(std::string_view client_identity, const KeyRequest& req, Millis now, Outcome* o) {
    std::lock_guard lock(m_mutex);
    expire(now);
    auto self = node_for_identity(client_identity);
    if (!self)
        return error(req.request_id, ErrorCode::UnknownClient,
                     "client identity '" + std::string(client_identity) + "' is not a known H(e)NB", o);
    if (lower(req.requester) != lower(client_identity))
        return error(req.request_id, ErrorCode::IdentityMismatch,
                     "requester '" + req.requester + "' is not the authenticated identity '" +
                         std::string(client_identity) + "'",
                     o);
    auto peer = node_for_identity(req.peer);
    if (!peer) return error(req.request_id, ErrorCode::UnknownPeer, "peer '" + req.peer + "' is not a known H(e)NB", o);
    PairName pair = *self < *peer ? PairName{*self, *peer} : PairName{*peer, *self};
    if (!m_relations.count(pair))
        return error(req.request_id, ErrorCode::UnauthorisedPair,
                     *self + " and " + *peer + " are not an authorised neighbour relation", o);

    auto it = m_keys.find(pair);
    bool fresh = false;
    if (it == m_keys.end()) {
        it = m_keys.emplace(pair, PairKey{}).first;
        new_generation(it->second, now);
        fresh = true;
    } else if (req.rekey) {
        // Only the first member asking to replace the current id creates a new generation.
        if (!req.previous_key_id.empty() && ct_equal(req.previous_key_id, it->second.key_id)) {
            new_generation(it->second, now);
            m_counters.inc("kds.key.rekeyed");
            fresh = true;
        }
    } else if (it->second.key.empty()) {
        // Both members already took (and we wiped) this key; a member asks again: it lost its
        // copy.  Hand out a new generation; the other member learns it on its next request.
        new_generation(it->second, now);
        fresh = true;
    }
    PairKey& pk = it->second;
    if (pk.key.empty()) {
        // Rekey request naming an older id, after both took the current one: redistribute by
        // creating a new generation.
        new_generation(pk, now);
        fresh = true;
    }
    KeyResponse resp;
    resp.request_id = req.request_id;
    resp.key_id = pk.key_id;
    resp.key = pk.key;
    resp.lifetime_s = uint32_t(std::max<Millis>(1, (pk.expires_at - now) / 1000));
    resp.generation = pk.generation;
    const auto& ia = m_identity_of[pair.first];
    const auto& ib = m_identity_of[pair.second];
    resp.identity_a = ia;
    resp.identity_b = ib;
    pk.delivered.insert(*self);
    m_counters.inc("kds.key.delivered");
    log::get("kds")->info("key {} gen {} for {}<->{} delivered to {}{}", to_hex(pk.key_id), pk.generation, pair.first,
                          pair.second, *self, fresh ? " (new)" : "");
    if (o) {
        o->granted = true;
        o->key_id_hex = to_hex(pk.key_id);
        o->generation = pk.generation;
        o->new_key = fresh;
    }
    if (m_config.wipe_after_delivery && pk.delivered.count(pair.first) && pk.delivered.count(pair.second)) {
        pk.key.clear();
        m_counters.inc("kds.key.wiped_after_delivery");
    }
    return resp;
}

SecureBytes Server::handle(std::string_view client_identity, BytesView request, Millis now, Outcome* o) {
    auto msg = decode(request);
    if (!msg.ok()) {
        m_counters.inc("kds.rx.malformed");
        auto code = static_cast<ErrorCode>(msg.error().code());
        if (code != ErrorCode::UnsupportedVersion) code = ErrorCode::Malformed;
        log::get("kds")->warn("bad request from '{}': {}", client_identity, msg.error().detail());
        if (o) {
            o->granted = false;
            o->error = code;
            o->detail = msg.error().detail();
        }
        return encode(ErrorMessage{0, code, msg.error().detail()});
    }
    auto* req = std::get_if<KeyRequest>(&*msg);
    if (!req) {
        m_counters.inc("kds.rx.unexpected");
        if (o) {
            o->granted = false;
            o->error = ErrorCode::Malformed;
            o->detail = "not a KeyRequest";
        }
        return encode(ErrorMessage{0, ErrorCode::Malformed, "expected a KeyRequest"});
    }
    return encode(handle_request(client_identity, *req, now, o));
}

size_t Server::pairs_with_key_material() const {
    std::lock_guard lock(m_mutex);
    size_t n = 0;
    for (auto& [p, k] : m_keys) n += k.key.empty() ? 0 : 1;
    return n;
}

size_t Server::pairs_known() const {
    std::lock_guard lock(m_mutex);
    return m_keys.size();
}

}  // namespace x2sec::kds
