// x2sec::kds — the Key Distribution Service protocol of Solution 2 (an operator entity such as
// the MME, HeNB-GW or SeGW hands two neighbouring H(e)NBs the same fresh pairwise key, which
// they then use for IKEv2 pre-shared-key authentication).
//
// Wire format (all integers in network byte order):
//
//   0      1      2      4                8
//   +------+------+------+----------------+------------------------------+
//   | ver  | type | rsvd |  body length   |  TLVs ...                    |
//   +------+------+------+----------------+------------------------------+
//     ver = 1, type = MsgType, rsvd = 0, body length <= kMaxBody
//
//   TLV: type (u16) | length (u16) | value.  A TLV type with the high bit set (0x8000) is
//   critical: a receiver that does not know it rejects the message; unknown non-critical TLVs
//   are skipped.  A TLV may appear at most once.
//
// Messages: KeyRequest (H(e)NB -> KDS), KeyResponse (KDS -> H(e)NB), Error (KDS -> H(e)NB).
#pragma once

#include <cstdint>
#include <string>
#include <variant>
#include <x2sec/common/bytes.hpp>
#include <x2sec/common/result.hpp>

namespace x2sec::kds {

inline constexpr uint8_t kVersion = 1;
inline constexpr size_t kHeaderSize = 8;
inline constexpr size_t kMaxBody = 4096;
inline constexpr size_t kKeySize = 32;  // 256-bit pairwise key
inline constexpr size_t kKeyIdSize = 16;
inline constexpr size_t kMaxIdentity = 253;  // an FQDN

enum class MsgType : uint8_t { KeyRequest = 1, KeyResponse = 2, Error = 3 };
const char* to_string(MsgType t);

enum class TlvType : uint16_t {
    RequestId = 1,      // u32, echoed in the answer
    Requester = 2,      // identity (FQDN) of the asking H(e)NB
    Peer = 3,           // identity of the neighbour it wants a key for
    Flags = 4,          // u8, bit 0 = rekey
    PreviousKeyId = 5,  // 16 octets: the key id being replaced (rekey)
    KeyId = 6,          // 16 octets
    Key = 7,            // 32 octets
    Lifetime = 8,       // u32 seconds remaining
    IdentityA = 9,      // the pair, lexicographically smaller identity first
    IdentityB = 10,
    Generation = 11,  // u32, 1 for the first key of a pair, +1 per rekey
    ErrorCode = 12,   // u16
    ErrorText = 13,   // UTF-8, <= 512 octets
};

enum class ErrorCode : uint16_t {
    Malformed = 1,
    UnsupportedVersion = 2,
    UnknownClient = 3,     // the authenticated client identity is not a known H(e)NB
    UnauthorisedPair = 4,  // the two nodes are not an authorised neighbour relation
    IdentityMismatch = 5,  // Requester differs from the authenticated identity
    UnknownPeer = 6,
    Internal = 7,
    CertificateRevoked = 8,      // the client certificate (or one of its CAs) is on a CRL
    CertificateExpired = 9,      // outside its validity period (or not yet valid)
    RevocationUnavailable = 10,  // no current CRL for the client certificate (stale / unreachable, hard policy)
};
const char* to_string(ErrorCode c);

struct KeyRequest {
    uint32_t request_id = 0;
    std::string requester;
    std::string peer;
    bool rekey = false;
    Bytes previous_key_id;  // empty or kKeyIdSize octets
};

struct KeyResponse {
    uint32_t request_id = 0;
    Bytes key_id;     // kKeyIdSize octets
    SecureBytes key;  // kKeySize octets, never logged
    uint32_t lifetime_s = 0;
    uint32_t generation = 0;
    std::string identity_a, identity_b;
};

struct ErrorMessage {
    uint32_t request_id = 0;
    ErrorCode code = ErrorCode::Internal;
    std::string text;
};

using Message = std::variant<KeyRequest, KeyResponse, ErrorMessage>;

// Encodes into a buffer that is zeroised when released (a KeyResponse carries the key).
SecureBytes encode(const Message& m);
// Decodes one complete message (header + body, nothing after it).  Errors: ErrorDomain::Kds,
// code = ErrorCode (Malformed or UnsupportedVersion), detail naming the bad field.
Result<Message> decode(BytesView data);
// Stream framing: given at least kHeaderSize octets, the total size of the message.
Result<size_t> frame_size(BytesView header);

// Identities are FQDN-like: 1..253 octets of [A-Za-z0-9.-].
bool valid_identity(std::string_view id);

}  // namespace x2sec::kds
