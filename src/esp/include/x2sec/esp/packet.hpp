// ESP packet codec (RFC 4303), with the GCM (RFC 4106) and CBC+HMAC transforms, and the UDP
// encapsulation rules of RFC 3948.  Everything works in place on caller-owned buffers: no
// allocation per packet.
//
//   ESP packet: SPI(4) | Sequence(4) | IV(8 or 16) | ciphertext(payload | padding |
//               pad length(1) | next header(1)) | ICV(16)
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <x2sec/common/child_sa.hpp>
#include <x2sec/esp/cipher.hpp>

namespace x2sec::esp {

// Why a packet was dropped; counted as "esp.drop.<to_string(reason)>".
enum class DropReason : uint8_t {
    Truncated,      // shorter than header + IV + ICV, or ciphertext not block aligned
    UnknownSpi,     // no inbound SA with this SPI
    Replay,         // duplicate within the window
    ReplayOld,      // left of the window
    SeqZero,        // sequence number 0 (never sent)
    Auth,           // ICV did not verify
    BadPadding,     // pad length beyond the payload, or padding bytes not 1, 2, 3, ...
    BadNextHeader,  // next header not IPv4/IPv6 in tunnel mode (or unknown in transport)
    Policy,         // inner addresses/ports outside the SA's traffic selectors
    NoPolicy,       // outbound packet matches no policy
    Malformed,      // not an IP packet / bad IP header
    SeqExhausted,   // outbound sequence numbers used up: rekey needed
    Expired,        // SA hit a hard lifetime
    TooBig,         // does not fit the buffer
    Crypto,         // OpenSSL failure
    NotEsp,         // UDP payload that is neither ESP, IKE nor a keepalive
    Count
};
const char* to_string(DropReason r);

// RFC 3948 classification of a datagram received on the NAT-T port.
enum class UdpKind : uint8_t { Esp, Ike, Keepalive, Invalid };
// Esp: SPI != 0 and at least 8 octets.  Ike: non-ESP marker (4 zero octets) then the IKE
// message (the marker must be stripped).  Keepalive: the single octet 0xFF.
UdpKind classify_udp_encap(std::span<const uint8_t> payload);

// Next-header values.
inline constexpr uint8_t kNextIpv4 = 4;
inline constexpr uint8_t kNextIpv6 = 41;
inline constexpr uint8_t kNextNone = 59;  // dummy packet (RFC 4303 2.6)

// Fields of an inner IP packet that policies look at.
struct IpFlow {
    IpAddress src, dst;
    uint8_t proto = 0;
    uint16_t src_port = 0, dst_port = 0;  // ICMP: type << 8 | code in src_port
    size_t header_len = 0;                // IPv4/IPv6 (fixed) header length
    size_t total_len = 0;                 // from the IP header
};
// Parses an IPv4 or IPv6 packet header; false if malformed or the length fields disagree
// with len.
bool parse_ip(const uint8_t* p, size_t len, IpFlow& out);

// Space a caller must leave in front of the payload for the ESP header and IV, and after it
// for padding, trailer and ICV (maxima over all transforms).
inline constexpr size_t kMaxHeadroom = 8 + 16;
inline constexpr size_t kMaxTailroom = 15 + 2 + 16;

// Encapsulate in place.  buf[payload_off .. payload_off+payload_len) holds the payload and
// payload_off >= 8 + iv_len; the ESP packet is written to buf starting at
// payload_off - 8 - iv_len.  The IV must be iv_len() octets; for GCM, iv == nullptr takes
// the next IV from the SA's invocation counter (SaCipher::gcm_seal_next).  Returns the length,
// or 0 if buf is too small or OpenSSL failed.
size_t seal(SaCipher& c, uint32_t spi, uint64_t seq, bool esn, const uint8_t* iv, uint8_t next_header,
            std::span<uint8_t> buf, size_t payload_off, size_t payload_len);

struct OpenResult {
    bool ok = false;
    DropReason reason = DropReason::Truncated;
    uint8_t next_header = 0;
    size_t payload_off = 0;  // into the span given to open()
    size_t payload_len = 0;
};
// Authenticate and decrypt an ESP packet in place, given the full sequence number
// (inferred by the replay window for ESN).  Checks the ICV, then the padding.
OpenResult open(SaCipher& c, bool esn, uint64_t full_seq, std::span<uint8_t> pkt);

inline uint32_t load_be32(const uint8_t* p) {
    return (uint32_t(p[0]) << 24) | (uint32_t(p[1]) << 16) | (uint32_t(p[2]) << 8) | p[3];
}
inline void store_be32(uint8_t* p, uint32_t v) {
    p[0] = uint8_t(v >> 24);
    p[1] = uint8_t(v >> 16);
    p[2] = uint8_t(v >> 8);
    p[3] = uint8_t(v);
}

}  // namespace x2sec::esp
