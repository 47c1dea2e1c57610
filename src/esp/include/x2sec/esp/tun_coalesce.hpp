// Receive-side TCP coalescing for TUN writes (IFF_VNET_HDR): consecutive decrypted TCP/IPv4
// segments of one flow, in sequence, with equal size (the last may be shorter) and only
// ACK/PSH set, leave as one TSO super-packet (virtio_net_hdr GSO_TCPV4, NEEDS_CSUM) in a
// single writev() — the inverse of tso_segment() on the TX side.  Payloads are not copied:
// the iovecs point into the caller's receive buffers, which must stay untouched until
// flush().  Everything else is written as one packet with DATA_VALID (the ESP ICV vouched for
// it).  Nothing is merged that the kernel's own GRO would keep apart.
#pragma once

#include <sys/uio.h>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <x2sec/esp/gso.hpp>

namespace x2sec::esp {

class TunCoalescer {
public:
    static constexpr size_t kMaxSegments = 44;  // 44 x 1460 < 64 KiB

    // write: a function writing an iovec array to the TUN device (returns < 0 on error).
    using WriteFn = ssize_t (*)(void* ctx, const iovec* iov, int n);
    TunCoalescer(WriteFn write, void* ctx) : m_write(write), m_ctx(ctx) {}

    // ip has kVnetHdrLen writable octets in front of it.
    void push(uint8_t* ip, size_t len);
    void flush();

    uint64_t super_packets = 0, coalesced_segments = 0, write_errors = 0;

private:
    static bool eligible(const uint8_t* ip, size_t len);
    bool joins(const uint8_t* ip, size_t len) const;
    void write_single(uint8_t* ip, size_t len);

    WriteFn m_write;
    void* m_ctx;
    bool m_active = false, m_closed = false;
    uint8_t* m_first = nullptr;
    size_t m_first_len = 0, m_hl = 0, m_gso = 0, m_payload = 0, m_segments = 0;
    uint32_t m_next_seq = 0;
    bool m_psh = false;
    uint8_t m_hdr[kVnetHdrLen + 60 + 60] = {};
    iovec m_iov[kMaxSegments + 1] = {};
};

}  // namespace x2sec::esp
