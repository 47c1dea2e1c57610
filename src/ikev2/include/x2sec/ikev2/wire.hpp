// x2sec::ike::wire — IKEv2 message and payload codecs (RFC 7296 section 3, RFC 7383 2.5).
// One struct per payload with decode(Reader&) / encode(Writer&) / validate(); a generic chain
// walker (next payload, critical bit, lengths); the message header codec; and per-exchange
// rule tables as data.  Errors are ErrorDomain::Ike with code = the Notify error type that
// answers them (INVALID_SYNTAX, UNSUPPORTED_CRITICAL_PAYLOAD, ...).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>
#include <x2sec/common/bytes.hpp>
#include <x2sec/common/child_sa.hpp>
#include <x2sec/common/codec.hpp>
#include <x2sec/common/result.hpp>

namespace x2sec::ike::wire {

enum class ExchangeType : uint8_t { IkeSaInit = 34, IkeAuth = 35, CreateChildSa = 36, Informational = 37 };
const char* to_string(ExchangeType e);

enum class PayloadType : uint8_t {
    None = 0,
    SA = 33,
    KE = 34,
    IDi = 35,
    IDr = 36,
    CERT = 37,
    CERTREQ = 38,
    AUTH = 39,
    Nonce = 40,
    Notify = 41,
    Delete = 42,
    VendorId = 43,
    TSi = 44,
    TSr = 45,
    SK = 46,
    CP = 47,
    EAP = 48,
    SKF = 53,
};
const char* to_string(PayloadType p);

// Notify message types (RFC 7296 3.10.1 and the IANA registry).
namespace notify {
constexpr uint16_t UnsupportedCriticalPayload = 1;
constexpr uint16_t InvalidIkeSpi = 4;
constexpr uint16_t InvalidMajorVersion = 5;
constexpr uint16_t InvalidSyntax = 7;
constexpr uint16_t InvalidMessageId = 9;
constexpr uint16_t InvalidSpi = 11;
constexpr uint16_t NoProposalChosen = 14;
constexpr uint16_t InvalidKePayload = 17;
constexpr uint16_t AuthenticationFailed = 24;
constexpr uint16_t SinglePairRequired = 34;
constexpr uint16_t NoAdditionalSas = 35;
constexpr uint16_t InternalAddressFailure = 36;
constexpr uint16_t FailedCpRequired = 37;
constexpr uint16_t TsUnacceptable = 38;
constexpr uint16_t InvalidSelectors = 39;
constexpr uint16_t TemporaryFailure = 43;
constexpr uint16_t ChildSaNotFound = 44;
constexpr uint16_t InitialContact = 16384;
constexpr uint16_t SetWindowSize = 16385;
constexpr uint16_t AdditionalTsPossible = 16386;
constexpr uint16_t NatDetectionSourceIp = 16388;
constexpr uint16_t NatDetectionDestinationIp = 16389;
constexpr uint16_t Cookie = 16390;
constexpr uint16_t UseTransportMode = 16391;
constexpr uint16_t RekeySa = 16393;
constexpr uint16_t EspTfcPaddingNotSupported = 16394;
constexpr uint16_t NonFirstFragmentsAlso = 16395;
constexpr uint16_t MobikeSupported = 16396;
constexpr uint16_t Ikev2FragmentationSupported = 16430;
constexpr uint16_t SignatureHashAlgorithms = 16431;
const char* name(uint16_t type);  // "INVALID_KE_PAYLOAD", or "NOTIFY(<n>)"
inline bool is_error(uint16_t type) {
    return type < 16384;
}
}  // namespace notify

enum class ProtocolId : uint8_t { None = 0, Ike = 1, Ah = 2, Esp = 3 };
enum class TransformType : uint8_t { Encr = 1, Prf = 2, Integ = 3, Dh = 4, Esn = 5 };
constexpr uint16_t kAttrKeyLength = 14;

// Header flags.
constexpr uint8_t kFlagInitiator = 0x08;
constexpr uint8_t kFlagVersion = 0x10;
constexpr uint8_t kFlagResponse = 0x20;
constexpr size_t kHeaderSize = 28;
constexpr size_t kGenericHeaderSize = 4;

// Error helpers: ErrorDomain::Ike with the notify type as code.
Error syntax_error(std::string detail);
Error critical_error(uint8_t payload_type, std::string detail);

struct Header {
    uint64_t spi_i = 0, spi_r = 0;
    uint8_t next_payload = 0;
    uint8_t version = 0x20;  // major 2, minor 0
    ExchangeType exchange = ExchangeType::IkeSaInit;
    uint8_t flags = 0;
    uint32_t message_id = 0;
    uint32_t length = 0;
    bool initiator() const { return flags & kFlagInitiator; }
    bool response() const { return flags & kFlagResponse; }
    void encode(Writer& w) const;
    // Checks the version (major 2) and the length field against the datagram size.
    static Result<Header> decode(BytesView datagram);
};

// ---------------------------------------------------------------- payload bodies
struct Attribute {
    uint16_t type = 0;
    bool tv = true;      // AF bit: TV (2-octet value) or TLV
    uint16_t value = 0;  // TV value
    Bytes data;          // TLV value
    bool operator==(const Attribute&) const = default;
};

struct Transform {
    TransformType type = TransformType::Encr;
    uint16_t id = 0;
    std::vector<Attribute> attributes;
    std::optional<uint16_t> key_length() const;
    static Transform make(TransformType t, uint16_t id, std::optional<uint16_t> key_bits = std::nullopt);
    bool operator==(const Transform&) const = default;
};

struct Proposal {
    uint8_t number = 1;
    ProtocolId protocol = ProtocolId::Ike;
    Bytes spi;
    std::vector<Transform> transforms;
    bool operator==(const Proposal&) const = default;
};

struct SaPayload {
    std::vector<Proposal> proposals;
    static Result<SaPayload> decode(Reader& r);
    void encode(Writer& w) const;
    Status validate() const;
};

struct KePayload {
    uint16_t group = 0;
    Bytes data;
    static Result<KePayload> decode(Reader& r);
    void encode(Writer& w) const;
    Status validate() const;
};

struct IdPayload {  // IDi and IDr
    uint8_t id_type = 2;
    Bytes data;
    static Result<IdPayload> decode(Reader& r);
    void encode(Writer& w) const;
    Status validate() const;
};

struct CertPayload {
    uint8_t encoding = 4;  // X.509 Certificate - Signature
    Bytes data;
    static Result<CertPayload> decode(Reader& r);
    void encode(Writer& w) const;
    Status validate() const;
};

struct CertReqPayload {
    uint8_t encoding = 4;
    Bytes data;  // concatenated 20-octet SHA-1 SPKI hashes for encoding 4
    static Result<CertReqPayload> decode(Reader& r);
    void encode(Writer& w) const;
    Status validate() const;
    std::vector<Bytes> hashes() const;
};

struct AuthPayload {
    uint8_t method = 0;  // 1 RSA, 2 PSK, 14 digital signature
    Bytes data;
    static Result<AuthPayload> decode(Reader& r);
    void encode(Writer& w) const;
    Status validate() const;
};

struct NoncePayload {
    Bytes data;
    static Result<NoncePayload> decode(Reader& r);
    void encode(Writer& w) const;
    Status validate() const;  // 16..256 octets
};

struct NotifyPayload {
    ProtocolId protocol = ProtocolId::None;
    Bytes spi;
    uint16_t type = 0;
    Bytes data;
    static Result<NotifyPayload> decode(Reader& r);
    void encode(Writer& w) const;
    Status validate() const;
};

struct DeletePayload {
    ProtocolId protocol = ProtocolId::Esp;
    uint8_t spi_size = 4;
    std::vector<Bytes> spis;
    static Result<DeletePayload> decode(Reader& r);
    void encode(Writer& w) const;
    Status validate() const;
};

struct VendorIdPayload {
    Bytes data;
    static Result<VendorIdPayload> decode(Reader& r);
    void encode(Writer& w) const;
    Status validate() const;
};

struct TsPayload {  // TSi and TSr
    std::vector<TrafficSelector> selectors;
    static Result<TsPayload> decode(Reader& r);
    void encode(Writer& w) const;
    Status validate() const;
};

struct CpPayload {
    uint8_t cfg_type = 1;  // CFG_REQUEST
    struct Attr {
        uint16_t type = 0;
        Bytes value;
        bool operator==(const Attr&) const = default;
    };
    std::vector<Attr> attributes;
    static Result<CpPayload> decode(Reader& r);
    void encode(Writer& w) const;
    Status validate() const;
};

// SK: IV || ciphertext || ICV.  inner_next is the first inner payload's type (the SK generic
// header's Next Payload field).
struct SkPayload {
    uint8_t inner_next = 0;
    Bytes data;
    static Result<SkPayload> decode(Reader& r);
    void encode(Writer& w) const;
    Status validate() const;
};

// SKF (RFC 7383 2.5): fragment number, total fragments, then IV || ciphertext || ICV.
// inner_next is the first inner payload's type in fragment 1 and 0 in the others.
struct SkfPayload {
    uint8_t inner_next = 0;
    uint16_t number = 1, total = 1;
    Bytes data;
    static Result<SkfPayload> decode(Reader& r);
    void encode(Writer& w) const;
    Status validate() const;
};

struct UnknownPayload {
    uint8_t type = 0;
    Bytes data;
};

using PayloadBody =
    std::variant<SaPayload, KePayload, IdPayload, CertPayload, CertReqPayload, AuthPayload, NoncePayload, NotifyPayload,
                 DeletePayload, VendorIdPayload, TsPayload, CpPayload, SkPayload, SkfPayload, UnknownPayload>;

struct Payload {
    PayloadType type = PayloadType::None;
    bool critical = false;
    PayloadBody body;
    template <typename T>
    const T* as() const {
        return std::get_if<T>(&body);
    }
    template <typename T>
    T* as() {
        return std::get_if<T>(&body);
    }
};

// Decode a payload chain starting with `first` from r (to its end).  Unknown non-critical
// payloads are skipped (kept as UnknownPayload); unknown critical ones fail with
// UNSUPPORTED_CRITICAL_PAYLOAD (error detail names the type; Error code 1).  SK and SKF must be
// the last payload.  Each known payload is decoded and validated.
Result<std::vector<Payload>> decode_chain(BytesView data, uint8_t first);
// Encodes the chain with generic headers; returns the first payload's type (0 if empty).
// SK/SKF bodies write their inner_next as Next Payload and must be last.
uint8_t encode_chain(Writer& w, const std::vector<Payload>& payloads);

// A whole message (outer view: for encrypted messages the chain ends with SK or SKF).
struct Message {
    Header header;
    std::vector<Payload> payloads;
    static Result<Message> decode(BytesView datagram);
    Bytes encode() const;  // fills next_payload and length
};

// For UNSUPPORTED_CRITICAL_PAYLOAD answers: the offending type, when the error came from one.
std::optional<uint8_t> critical_payload_type(const Error& e);

// ---------------------------------------------------------------- rule tables
// What each message may and must carry, as data (src/ikev2/src/wire/rules.cpp, after
// strongSwan's payload rules), enforced once by the generic walker check_rules() before an
// exchange handler or task reads a payload; they then read through the Checked view.
enum class Presence : uint8_t {
    Required,    // at least once, unless a Sufficient payload answers the message instead
    Optional,    // up to max times
    Sufficient,  // optional; when present the message is complete without its Required payloads
};
const char* to_string(Presence p);

// Which notifies a Notify row covers: one type, every error type (< 16384) or every type.  A
// notify counts against the most specific row of the rule that covers it.
constexpr uint32_t kAnyNotify = 0x10000;
constexpr uint32_t kErrorNotify = 0x10001;

struct PayloadRule {
    PayloadType type;
    Presence presence;
    uint8_t max;
    uint32_t notify = kAnyNotify;  // Notify rows: the notify type, kErrorNotify or kAnyNotify
};

// The rows are in the order the payloads are written (order_payloads()).
struct MessageRule {
    std::string_view name;  // "IKE_SA_INIT request", "CREATE_CHILD_SA response (IKE SA rekey)"
    std::vector<PayloadRule> payloads;
    // Closed (the per-exchange rules): a payload no row covers is refused.  Open (what one task
    // reads from a message): payloads no row covers are another task's.
    bool closed = true;
};
// The rule of every message of an exchange (closed; null for an unknown exchange).
const MessageRule* find_rule(ExchangeType exchange, bool response);

// What a response that accepts a request must hold, by the purpose of the request (open rules:
// each task of an exchange has its own, so a Child SA refused in IKE_AUTH does not make the
// IKE SA's IDr and AUTH optional); and what a request must hold once its purpose is known.
enum class ResponsePurpose : uint8_t {
    IkeSaInit,    // IKE_SA_INIT: SA, KE, Nonce (or a COOKIE / error notify)
    IkeAuth,      // IKE_AUTH authentication: IDr, AUTH (or an error notify)
    AuthChild,    // the Child SA of IKE_AUTH: SA, TSi, TSr (or an error notify)
    CreateChild,  // CREATE_CHILD_SA new or rekeyed Child SA: SA, Nonce, TSi, TSr (KE when PFS, checked by the task)
    RekeyIke,     // CREATE_CHILD_SA IKE SA rekey: SA, Nonce, KE (or an error notify)
    CreateChildRequest,  // a CREATE_CHILD_SA request for a Child SA: TSi, TSr besides SA and Nonce
};
const char* to_string(ResponsePurpose p);
const MessageRule& purpose_rule(ResponsePurpose p);

// The body type each payload type decodes to (for messages naming a wrong body).
const char* body_name(const Payload& p);

// A payload chain that passed check_rules(): the payloads (not owned; they outlive the view)
// and the rule.  Every payload an exchange handler or task reads goes through it.
class Checked {
public:
    const std::vector<Payload>& all() const { return *m_payloads; }
    const MessageRule& rule() const { return *m_rule; }
    // Every Required row is present (when false, a Sufficient payload answers the message).
    bool complete() const { return m_complete; }
    // The first Sufficient payload present (the error notify or COOKIE answering it), or null.
    const Payload* answer() const { return m_answer; }
    // The first payload of type `t`, which a Required row of the rule guarantees when
    // complete().  Asking for a payload the rule does not guarantee is a defect of the code
    // (not of the input): std::logic_error naming the rule and the payload.
    template <typename T>
    const T& get(PayloadType t) const {
        if (!m_complete || !required(t)) missing(t);
        const T* b = find<T>(t);
        if (!b) missing(t);
        return *b;
    }
    // The first payload of type `t` as body T, or null.
    template <typename T>
    const T* find(PayloadType t) const {
        for (const auto& p : *m_payloads)
            if (p.type == t)
                if (const T* b = p.as<T>()) return b;
        return nullptr;
    }
    // The first notify of this type, or null; the first error notify, or null.
    const NotifyPayload* notify(uint16_t type) const;
    const NotifyPayload* error() const;

private:
    friend Result<Checked> check_rules(const MessageRule& rule, const std::vector<Payload>& payloads);
    Checked(const MessageRule& r, const std::vector<Payload>& p) : m_rule(&r), m_payloads(&p) {}
    bool required(PayloadType t) const;
    [[noreturn]] void missing(PayloadType t) const;
    const MessageRule* m_rule;
    const std::vector<Payload>* m_payloads;
    bool m_complete = true;
    const Payload* m_answer = nullptr;
};

// The generic walker: counts each payload against the most specific row covering it (unknown
// non-critical payloads are skipped; SK/SKF inside a message are refused; in a closed rule a
// payload no row covers is refused), checks each row's maximum, and checks that every Required
// row is present unless a Sufficient payload is.  Fails with INVALID_SYNTAX naming the rule and
// what is wrong ("IKE_AUTH response: no AUTH payload").
Result<Checked> check_rules(const MessageRule& rule, const std::vector<Payload>& payloads);
// Sorts a message we build into the rule's row order (stable: payloads of one row keep theirs).
void order_payloads(const MessageRule& rule, std::vector<Payload>& payloads);

// Checked accessor: the first payload of type `t` as body T, or INVALID_SYNTAX naming what is
// absent or wrong ("CREATE_CHILD_SA response: no Nonce payload").  Every payload an exchange
// handler reads goes through require() (present by protocol) or find_body() (may be absent).
template <typename T>
Result<const T*> require(const std::vector<Payload>& payloads, PayloadType t, std::string_view where) {
    for (const auto& p : payloads) {
        if (p.type != t || std::holds_alternative<UnknownPayload>(p.body)) continue;
        if (const T* b = p.as<T>()) return b;
        return syntax_error(std::string(where) + ": " + to_string(t) + " payload has the wrong body (" + body_name(p) +
                            ")");
    }
    return syntax_error(std::string(where) + ": no " + to_string(t) + " payload");
}
// Like require(), but an absent payload is no error (null); a wrong-typed one still is.
template <typename T>
Result<const T*> find_body(const std::vector<Payload>& payloads, PayloadType t, std::string_view where) {
    for (const auto& p : payloads) {
        if (p.type != t || std::holds_alternative<UnknownPayload>(p.body)) continue;
        if (const T* b = p.as<T>()) return b;
        return syntax_error(std::string(where) + ": " + to_string(t) + " payload has the wrong body (" + body_name(p) +
                            ")");
    }
    return static_cast<const T*>(nullptr);
}

// Whether `chosen` (a responder's SA payload) is exactly one of the proposals we `offered`
// (RFC 7296 3.3.6): one proposal whose number and protocol match one of ours, an SPI of the
// protocol's size (none for IKE_SA_INIT), exactly one transform of each type that offered
// proposal carries and none of any other type, each transform (with its attributes) one we
// offered in it.  Fails with NO_PROPOSAL_CHOSEN naming what differs.
Status check_chosen_proposal(const SaPayload& offered, const SaPayload& chosen, size_t spi_size);

// Convenience lookups.
const Payload* find_payload(const std::vector<Payload>& payloads, PayloadType t);
const NotifyPayload* find_notify(const std::vector<Payload>& payloads, uint16_t type);

}  // namespace x2sec::ike::wire
