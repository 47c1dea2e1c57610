#include "peer_index.hpp"

#include <algorithm>

namespace x2sec::ike {

std::string PeerIndex::id_key(const Identity& id) {
    std::string k(1, static_cast<char>(id.type));
    k.append(id.data.begin(), id.data.end());
    return k;
}

std::string PeerIndex::addr_key(const PeerConfig& p) {
    std::string k;
    auto addr = [&k](const IpAddress& a) {
        k.push_back(a.v6 ? '6' : '4');
        k.append(a.bytes.begin(), a.bytes.end());
    };
    auto port = [&k](uint16_t v) {
        k.push_back(static_cast<char>(v >> 8));
        k.push_back(static_cast<char>(v & 0xff));
    };
    addr(p.local_addr);
    addr(p.remote_addr);
    port(p.local_port);
    port(p.remote_port);
    port(p.local_natt_port);
    port(p.remote_natt_port);
    return k;
}

void PeerIndex::insert_sorted(std::vector<size_t>& v, size_t i) {
    auto it = std::lower_bound(v.begin(), v.end(), i);
    if (it == v.end() || *it != i) v.insert(it, i);
}

void PeerIndex::erase(std::vector<size_t>& v, size_t i) {
    auto it = std::lower_bound(v.begin(), v.end(), i);
    if (it != v.end() && *it == i) v.erase(it);
}

void PeerIndex::add(const std::vector<PeerConfig>& peers, size_t i, const PeerConfig* old) {
    const PeerConfig& p = peers[i];
    if (old) {
        if (old->remote_id) {
            auto it = m_id.find(id_key(*old->remote_id));
            if (it != m_id.end()) {
                erase(it->second, i);
                if (it->second.empty()) m_id.erase(it);
            }
        } else {
            erase(m_any_id, i);
        }
        auto it = m_addr.find(addr_key(*old));
        if (it != m_addr.end()) {
            erase(it->second.peers, i);
            if (it->second.peers.empty())
                m_addr.erase(it);
            else
                it->second.first = it->second.peers.front();
        }
    }
    m_name.emplace(p.name, i);  // the first config of a name wins, as the scans did
    if (p.remote_id)
        insert_sorted(m_id[id_key(*p.remote_id)], i);
    else
        insert_sorted(m_any_id, i);
    auto& cls = m_addr[addr_key(p)];
    insert_sorted(cls.peers, i);
    cls.first = cls.peers.front();
}

void PeerIndex::rebuild(const std::vector<PeerConfig>& peers) {
    m_name.clear();
    m_id.clear();
    m_any_id.clear();
    m_addr.clear();
    for (size_t i = 0; i < peers.size(); ++i) add(peers, i);
}

std::optional<size_t> PeerIndex::by_name(const std::string& name) const {
    auto it = m_name.find(name);
    if (it == m_name.end()) return std::nullopt;
    return it->second;
}

const std::vector<size_t>& PeerIndex::by_remote_id(const Identity& id) const {
    static const std::vector<size_t> none;
    auto it = m_id.find(id_key(id));
    return it == m_id.end() ? none : it->second;
}

}  // namespace x2sec::ike
