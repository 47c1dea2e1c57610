// X2 test traffic: IPv4 packets as the direct interface carries them — X2AP-like signalling
// in an SCTP DATA chunk to port 36422 (PPID 27) and user data in GTP-U (G-PDU) over UDP 2152.
#pragma once

#include <cstdint>
#include <string>
#include <vector>
#include <x2sec/common/bytes.hpp>
#include <x2sec/common/child_sa.hpp>

namespace x2sec::scenario {

inline constexpr uint16_t kX2apSctpPort = 36422;
inline constexpr uint32_t kX2apPpid = 27;
inline constexpr uint16_t kGtpuPort = 2152;

// A minimal IPv4/SCTP packet with one DATA chunk (CRC32c checksum).
Bytes x2ap_packet(const IpAddress& src, const IpAddress& dst, uint32_t tsn, BytesView x2ap_pdu);
// A minimal IPv4/UDP packet carrying a GTP-U G-PDU for the given TEID.
Bytes gtpu_packet(const IpAddress& src, const IpAddress& dst, uint32_t teid, BytesView user_payload);
// The X2 traffic mix the demo sends through every tunnel: `n` X2AP messages and `n` GTP-U
// packets with recognisable payloads.
std::vector<Bytes> x2_traffic_mix(const IpAddress& src, const IpAddress& dst, unsigned n);
// True when `needle` occurs in `hay` (used to show that plaintext is / is not on the wire).
bool contains(BytesView hay, BytesView needle);
uint32_t crc32c(BytesView data);

}  // namespace x2sec::scenario
