#include <cstring>
#include <x2sec/esp/memory_backend.hpp>

namespace x2sec::esp {

namespace {
constexpr size_t kBuf = 65536 + kMaxHeadroom + kMaxTailroom + 64;
constexpr size_t kRxOff = 64;
}  // namespace

MemoryEndpoint::MemoryEndpoint(DataPlane& dp) : m_dp(dp), m_tx(kBuf), m_rx(kBuf) {
    m_wire.reserve(kBuf);
}

bool MemoryEndpoint::send(BytesView ip, Millis now) {
    if (ip.size() > 65535) return false;
    std::memcpy(m_tx.data() + kMaxHeadroom, ip.data(), ip.size());
    auto r = m_dp.protect(m_tx, ip.size(), now);
    if (!r.ok) return false;
    m_wire.assign(m_tx.begin() + static_cast<ptrdiff_t>(r.esp_off),
                  m_tx.begin() + static_cast<ptrdiff_t>(r.esp_off + r.esp_len));
    if (on_wire && !on_wire(m_wire)) return false;
    return m_peer && m_peer->receive(m_wire, now);
}

bool MemoryEndpoint::receive(BytesView d, Millis now) {
    if (d.size() + kRxOff > m_rx.size()) {
        m_dp.counters().inc("esp.drop.too_big");
        return false;
    }
    switch (classify_udp_encap(d)) {
        case UdpKind::Keepalive:
            m_dp.counters().inc("esp.rx.keepalive");
            return false;
        case UdpKind::Ike:
            m_dp.counters().inc("esp.rx.ike");
            return false;
        case UdpKind::Invalid:
            m_dp.counters().inc("esp.drop.not_esp");
            return false;
        case UdpKind::Esp:
            break;
    }
    std::memcpy(m_rx.data() + kRxOff, d.data(), d.size());
    auto r = m_dp.unprotect(m_rx, kRxOff, d.size(), now);
    if (!r.ok) return false;
    if (!r.dummy && on_deliver) on_deliver(BytesView(m_rx.data() + r.ip_off, r.ip_len));
    return true;
}

}  // namespace x2sec::esp
