#pragma once
// Responder look-ups into the configured peers without a scan over all of them: by name, by
// the remote_id a peer config requires (configs without one are kept apart: they match any
// IDi), and by address class (peers with the same addresses and ports share one class, so
// IKE_SA_INIT ranks classes, not peers).  Peers are only appended or replaced in place
// (Engine::update_peer), so indices into EngineConfig::peers stay valid; every list is kept
// in configuration order, which is the tie-break of every selection.
#include <cstddef>
#include <map>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>
#include <x2sec/ikev2/engine.hpp>

namespace x2sec::ike {

class PeerIndex {
public:
    // (Re)indexes peers[i]; `old` is what peers[i] was before a replacement (nullptr for a new one).
    void add(const std::vector<PeerConfig>& peers, size_t i, const PeerConfig* old = nullptr);
    void rebuild(const std::vector<PeerConfig>& peers);

    std::optional<size_t> by_name(const std::string& name) const;
    // Configs whose remote_id equals id, in configuration order (empty if none).
    const std::vector<size_t>& by_remote_id(const Identity& id) const;
    // Configs without a remote_id, in configuration order.
    const std::vector<size_t>& any_remote_id() const { return m_any_id; }
    // One entry per address class: its configuration (from its first peer) and its peers in order.
    struct AddrClass {
        size_t first = 0;
        std::vector<size_t> peers;
    };
    const std::map<std::string, AddrClass>& addr_classes() const { return m_addr; }

private:
    static std::string id_key(const Identity& id);
    static std::string addr_key(const PeerConfig& p);
    static void insert_sorted(std::vector<size_t>& v, size_t i);
    static void erase(std::vector<size_t>& v, size_t i);

    std::unordered_map<std::string, size_t> m_name;
    std::unordered_map<std::string, std::vector<size_t>> m_id;
    std::vector<size_t> m_any_id;
    std::map<std::string, AddrClass> m_addr;
};

}  // namespace x2sec::ike
