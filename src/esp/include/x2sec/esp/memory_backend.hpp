// In-memory backend: two data planes wired back to back in one process (tests, simulator,
// benchmarks).  An endpoint protects an IP packet, hands the ESP datagram to its peer through
// an optional wire tap (which can drop, tamper, duplicate or delay), and the peer unprotects
// it and delivers the inner packet to its sink.  Buffers are reused between packets.
#pragma once

#include <functional>
#include <vector>
#include <x2sec/common/bytes.hpp>
#include <x2sec/esp/data_plane.hpp>

namespace x2sec::esp {

class MemoryEndpoint {
public:
    explicit MemoryEndpoint(DataPlane& dp);
    void connect(MemoryEndpoint& peer) { m_peer = &peer; }

    // Inner packets that would be written to the TUN device.
    std::function<void(BytesView ip_packet)> on_deliver;
    // The wire between the endpoints: may modify the datagram; return false to drop it.
    std::function<bool(Bytes& datagram)> on_wire;

    // Protect an IP packet and carry it to the peer; false if it was dropped anywhere.
    bool send(BytesView ip_packet, Millis now = 0);
    // Receive a UDP payload from the "network" (RFC 3948 classification applies).
    bool receive(BytesView datagram, Millis now = 0);
    DataPlane& data_plane() { return m_dp; }
    const Bytes& last_datagram() const { return m_wire; }

private:
    DataPlane& m_dp;
    MemoryEndpoint* m_peer = nullptr;
    std::vector<uint8_t> m_tx, m_rx;
    Bytes m_wire;
};

}  // namespace x2sec::esp
