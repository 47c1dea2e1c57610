// Transport mode through NAT (RFC 3948 3.1.2, RFC 7296 2.23.1): the sender computed its TCP or
// UDP checksum over a pseudo-header with the addresses it knew (its own real address, ours as
// it saw it), but the IP header rebuilt after decapsulation carries the outer addresses, which
// a NAT may have changed.  The receiver fixes the checksum before delivering the packet:
//   * incrementally (RFC 1624), replacing the original addresses by the received ones, when the
//     original addresses are known (IKEv1 NAT-OA; in IKEv2 the transport-mode traffic
//     selectors), or
//   * for UDP over IPv4, by setting the checksum to zero (allowed by RFC 768 and RFC 3948), or
//   * otherwise (TCP, UDP over IPv6) by recomputing it; the ESP ICV already authenticated the
//     payload, so nothing is lost by not verifying the old value.
#pragma once

#include <cstddef>
#include <cstdint>
#include <x2sec/common/bytes.hpp>
#include <x2sec/common/child_sa.hpp>

namespace x2sec::esp {

// RFC 1624 eqn. 3: HC' = ~(~HC + ~m + m'), with m and m' given as octet strings of equal,
// even length (16-bit big-endian words).
uint16_t checksum_replace(uint16_t check, BytesView old_words, BytesView new_words);

// The Internet checksum of a TCP/UDP segment with its IPv4/IPv6 pseudo-header (the checksum
// field must be zero or is included as is).
uint16_t transport_checksum(const IpAddress& src, const IpAddress& dst, uint8_t proto, const uint8_t* l4, size_t len);

enum class ChecksumFix : uint8_t {
    None,         // not TCP/UDP, or UDP/IPv4 without a checksum, or too short to touch
    Incremental,  // original addresses known: RFC 1624 update
    UdpZeroed,    // UDP over IPv4: checksum set to 0
    Recomputed,   // full recomputation over the received addresses
};
const char* to_string(ChecksumFix f);

// ip/len: the IP packet as it will be delivered (rebuilt header: outer addresses, protocol,
// L4 header right after a fixed IPv4 (20) or IPv6 (40) header).  orig_src/orig_dst: the
// addresses the sender used, or nullptr if unknown (both or neither).
ChecksumFix fix_transport_checksum(uint8_t* ip, size_t len, const IpAddress* orig_src, const IpAddress* orig_dst);

}  // namespace x2sec::esp
