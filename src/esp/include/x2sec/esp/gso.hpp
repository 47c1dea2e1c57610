// TUN offloads (IFF_VNET_HDR): with TSO enabled the kernel hands the TUN reader TCP
// super-packets of up to 64 KiB with a virtio_net_hdr, and packets whose transport checksum
// is left partial (NEEDS_CSUM).  The TX path splits super-packets into MSS-sized segments
// here, in user space, before encrypting each one, which saves the kernel the per-segment
// work of the TCP stack and one read() per segment.
#pragma once

#include <cstddef>
#include <cstdint>

namespace x2sec::esp {

inline constexpr size_t kVnetHdrLen = 10;  // struct virtio_net_hdr

struct VnetHdr {
    uint8_t flags = 0;     // 1 = NEEDS_CSUM, 2 = DATA_VALID
    uint8_t gso_type = 0;  // 0 none, 1 TCPv4, 4 TCPv6, | 0x80 ECN
    uint16_t hdr_len = 0, gso_size = 0, csum_start = 0, csum_offset = 0;
    static VnetHdr parse(const uint8_t* p);  // native byte order (legacy virtio header)
};

// RFC 1071 one's-complement sum, not folded.
uint64_t csum_add(uint64_t sum, const uint8_t* p, size_t n);
uint16_t csum_fold(uint64_t sum);

// Fills in a partial checksum: the 16-bit field at csum_start + csum_offset holds the
// pseudo-header sum; the result covers csum_start .. len.  False if the offsets are out of
// range.
bool complete_checksum(uint8_t* pkt, size_t len, const VnetHdr& h);

// TCP segmentation of a TSO super-packet (IPv4 or IPv6 without extension headers).
struct TsoInfo {
    size_t ip_hl = 0, tcp_hl = 0, payload = 0, mss = 0;
    size_t segments = 0;
    bool v6 = false;
};
// Validates the super-packet and describes it; false if it cannot be segmented.
bool tso_inspect(const uint8_t* pkt, size_t len, const VnetHdr& h, TsoInfo& info);
// Writes segment i (a complete IP packet with valid IP and TCP checksums) to out; returns
// its length, or 0 if it does not fit.
size_t tso_segment(const uint8_t* pkt, const TsoInfo& info, size_t i, uint8_t* out, size_t cap);

}  // namespace x2sec::esp
