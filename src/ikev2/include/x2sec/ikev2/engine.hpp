// x2sec::ike — the sans-I/O IKEv2 engine facade (RFC 7296).  The engine never opens a socket
// or reads a clock: the runtime (or a test, or the simulator) hands it datagrams and the
// current time, and takes back datagrams to send, the next deadline and events.  Child SAs go
// to a ChildSaBackend (ESP data plane, or MemoryChildSaBackend in tests).  The engine is
// single-threaded and holds no lock: every call comes from the loop that owns it, including
// the data plane's lifetime events, which that loop takes from a ChildSaEventQueue
// (x2sec/common/event_queue.hpp) and passes to child_sa_expired().
//
//   runtime loop:  engine.handle_datagram(d, now); engine.tick(now);
//                  expiries.deliver(engine, now);   // engine.child_sa_expired(spi, kind, now)
//                  for (auto& out : engine.take_outgoing()) send(out);
//                  for (auto& ev : engine.take_events()) ...;
//                  poll(timeout = engine.next_deadline() - now)
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>
#include <x2sec/common/bytes.hpp>
#include <x2sec/common/child_sa.hpp>
#include <x2sec/common/counters.hpp>
#include <x2sec/common/result.hpp>
#include <x2sec/common/rng.hpp>
#include <x2sec/common/time.hpp>
#include <x2sec/crypto/crypto.hpp>
#include <x2sec/ikev2/cookie.hpp>
#include <x2sec/x509/x509.hpp>

namespace x2sec::x509 {
class OcspStapler;  // x2sec/x509/ocsp_stapler.hpp
}

namespace x2sec::ike {

// ---------------------------------------------------------------- configuration
// An IKE proposal; each list holds acceptable choices in preference order.
// Text form (strongSwan style): "aes128gcm16-prfsha256-ecp256", "aes256-sha256-modp2048",
// several algorithms joined with '-': "aes128gcm16-aes256gcm16-prfsha256-prfsha384-ecp256-x25519".
struct EncrAlg {
    crypto::EncrId id;
    unsigned key_bits;  // 128/192/256
    auto operator<=>(const EncrAlg&) const = default;
};
struct IkeProposal {
    std::vector<EncrAlg> encr;
    std::vector<crypto::IntegId> integ;  // empty for AEAD
    std::vector<crypto::PrfId> prf;
    std::vector<crypto::DhGroup> dh;
};
Result<IkeProposal> parse_ike_proposal(const std::string& text);
std::string to_string(const IkeProposal& p);

// ESP proposal: "aes128gcm16", "aes256gcm16-esn", "aes128-sha256", "aes128gcm16-ecp256" (PFS).
struct ChildProposal {
    std::vector<EspCipher> ciphers;
    std::vector<bool> esn;             // acceptable ESN choices, default {false}
    std::vector<crypto::DhGroup> pfs;  // empty: no PFS
};
Result<ChildProposal> parse_child_proposal(const std::string& text);
std::string to_string(const ChildProposal& p);

// An IKE identity (RFC 7296 3.5).  parse(): "fqdn:x", "ipv4:a.b.c.d", "ipv6:..", "dn:CN=..",
// "email:..", or auto: an IP address -> IPv4/IPv6, contains '=' -> DN, else FQDN.
struct Identity {
    x509::IdType type = x509::IdType::Fqdn;
    Bytes data;
    static Result<Identity> parse(const std::string& text);
    std::string to_string() const;
    bool operator==(const Identity&) const = default;
};

enum class AuthMethod : uint8_t { Certificate, Psk };
const char* to_string(AuthMethod m);

struct ChildConfig {
    std::string name;
    std::vector<TrafficSelector> local_ts, remote_ts;
    std::vector<ChildProposal> proposals;
    IpsecMode mode = IpsecMode::Tunnel;
    Lifetime lifetime;              // data plane lifetimes (soft triggers rekey)
    uint64_t rekey_seconds = 3600;  // engine-side rekey timer, 0 = none
    uint32_t replay_window = 1024;
};

// What to do when a peer authenticates with the identities of an IKE SA we already hold
// (like strongSwan's `unique`).  RFC 7296 2.4 INITIAL_CONTACT is honoured unless Never.
//   No:      keep both; INITIAL_CONTACT deletes the older ones
//   Never:   keep both, ignore INITIAL_CONTACT (and never send it)
//   Keep:    refuse the new IKE SA (AUTHENTICATION_FAILED) unless it carries INITIAL_CONTACT
//   Replace: delete the older ones (DELETE sent to the peer)
enum class UniquePolicy : uint8_t { No, Never, Keep, Replace };
const char* to_string(UniquePolicy u);
Result<UniquePolicy> parse_unique_policy(const std::string& text);

// OCSP in IKEv2 (RFC 4806): off; request (CERTREQ encoding 14, a stapled response is used when
// sent, else the configured revocation check); require (no usable `good` staple: refused).
enum class OcspStapling : uint8_t { Off, Request, Require };
const char* to_string(OcspStapling s);
Result<OcspStapling> parse_ocsp_stapling(const std::string& text);

struct PeerConfig {
    std::string name;
    IpAddress local_addr, remote_addr;
    uint16_t local_port = 500,
             remote_port = 500;  // IKE ports; NAT-T floats to 4500 (or +4000 of a custom port pair, configurable below)
    uint16_t local_natt_port = 4500, remote_natt_port = 4500;
    Identity local_id;
    std::optional<Identity> remote_id;  // nullopt: any identity the credentials allow
    AuthMethod local_auth = AuthMethod::Certificate;
    AuthMethod remote_auth = AuthMethod::Certificate;
    SecureBytes psk;  // for AuthMethod::Psk (either direction)
    std::shared_ptr<const crypto::Signer> private_key;
    std::vector<x509::Certificate> cert_chain;      // leaf first, then intermediates
    std::shared_ptr<const x509::TrustStore> trust;  // anchors for the peer's certificate
    bool send_certreq = true;
    OcspStapling ocsp_stapling = OcspStapling::Off;  // asking the peer for its OCSP response
    // Our own OCSP response, sent (CERT encoding 14) when the peer's CERTREQ asks for it: this
    // DER file when set (read at each use), else what ocsp_stapler has cached (fetched from our
    // certificate's AIA OCSP URL in the background; the exchange never waits for it).
    std::string ocsp_staple_file;
    std::shared_ptr<x509::OcspStapler> ocsp_stapler;
    // OCSP responders trusted for the peer's certificate whatever its CA authorised (RFC 6960
    // 2.2 "Trusted Responder"): their key hashes go in our CERTREQ of encoding 14 (RFC 4806),
    // and a stapled response one of them signed is accepted.
    std::vector<x509::Certificate> ocsp_responders;
    // Responder: other IKE SAs the peer initiated with the same pair of identities (the SeGW
    // facing a rebooted H(e)NB).  Initiator: INITIAL_CONTACT is sent in IKE_AUTH on the first
    // IKE SA to this peer unless Never.
    UniquePolicy unique = UniquePolicy::Replace;
    std::vector<IkeProposal> ike_proposals;
    std::vector<ChildConfig> children;   // the first is created in IKE_AUTH
    uint64_t ike_rekey_seconds = 14400;  // 0 = none
    uint64_t dpd_interval_ms = 30000;    // 0 = none
    // Each liveness check is due dpd_interval minus U(0, this percent of it) after the last
    // datagram from the peer (drawn anew for every check), so SAs that came up together do not
    // check together; 0 = exactly dpd_interval.
    uint32_t dpd_jitter_percent = 10;
    bool fragmentation = true;
    size_t fragment_size = 1280;  // path MTU the fragments must fit (IP datagram)
    bool force_encap = false;     // behave as if behind NAT (float to 4500)
    bool auto_initiate = false;   // runtime initiates at start
};

struct RetransmitConfig {
    Millis timeout_ms = 4000;  // first retransmission
    double backoff = 1.8;      // multiplier per try
    unsigned tries = 5;        // then the SA is deleted and an event raised
    // Each wait is shortened by U(0, this percent of it), so initiators that started together
    // (H(e)NBs after a power cut) do not retransmit in lockstep; 0 = exact.
    uint32_t jitter_percent = 0;
};

struct EngineConfig {
    std::vector<PeerConfig> peers;
    RetransmitConfig retransmit;
    uint32_t cookie_threshold = 50;  // half-open IKE SAs before the responder demands COOKIEs
    // Hard caps on half-open responder IKE SAs (IKE_SA_INIT answered, IKE_AUTH not yet), checked
    // after the COOKIE (so above cookie_threshold only initiators that can receive at their
    // source address count): overall, and per source address.  An IKE_SA_INIT over a cap is
    // dropped unanswered, counted ike.rx.dropped.half_open_cap / .half_open_cap_per_source.
    uint32_t max_half_open = 5000;
    uint32_t max_half_open_per_source = 64;
    size_t max_message_size = 64 * 1024;
    Millis half_open_timeout_ms = 30000;
    // Wall clock (unix seconds) for certificate validity; empty: the system clock.  Tests pass
    // a ManualClock's unix_seconds.
    std::function<int64_t()> unix_time;
    Millis cookie_secret_lifetime_ms = 120000;  // the COOKIE secret rotates (the old one stays valid once)
    unsigned max_fragments = 64;                // RFC 7383 reassembly limits
    // RFC 7296 2.3: an authenticated request ahead of the Message ID window on an established
    // IKE SA is answered with an INVALID_MESSAGE_ID notify (in a new INFORMATIONAL request), at
    // most once per IKE SA per this interval; 0 = never answer (drop only).
    Millis invalid_mid_notify_interval_ms = 1000;
    // RFC 7296 1.5 / 2.21.4: unprotected error answers to messages that match no IKE SA
    // (INVALID_IKE_SPI) or speak a higher major version (INVALID_MAJOR_VERSION, 2.5) are rate
    // limited, since anyone can provoke them with a forged source: at most this many per second
    // over the whole engine, the rest dropped and counted; 0 = never answer.
    unsigned max_unprotected_notifies_per_s = 10;
};

// ---------------------------------------------------------------- I/O types
struct Endpoint {
    IpAddress addr;
    uint16_t port = 0;
    bool operator==(const Endpoint&) const = default;
    std::string to_string() const;
};

// An IKE message as it goes over UDP.  `data` never includes the non-ESP marker: the runtime
// strips it on receive and adds it on send when non_esp_marker is set (port 4500 sockets).
struct Datagram {
    Endpoint local, remote;
    Bytes data;
    bool non_esp_marker = false;
};

// ---------------------------------------------------------------- events and status
// A certification authority the peer asked for in a CERTREQ payload (RFC 7296 3.7: the SHA-1
// hash of the CA's SubjectPublicKeyInfo), mapped to our configured trust anchors when one has
// that key.  Every trust store of the engine's peer configs is searched, the IKE SA's own
// config first.
struct CertReqAnchor {
    Bytes spki_sha1;      // 20 octets, as received
    std::string label;    // label of our trust anchor with this key; "" when not ours
    std::string subject;  // that anchor's subject DN; "" when not ours
    bool known() const { return !label.empty(); }
};

struct Event {
    enum class Kind {
        IkeSaUp,
        IkeSaDown,
        IkeSaRekeyed,
        ChildSaUp,
        ChildSaDown,
        ChildSaRekeyed,
        AuthFailed,  // detail says which check failed (untrusted CA, ID/SAN mismatch, ...)
        PeerNotify,  // the peer sent an error notify; code = notify type
        PeerDead,    // DPD or retransmission timeout
        NegotiationFailed,
        PeerCertReq,  // the peer's CERTREQ payloads arrived; `certreq` lists the CAs it asked for
    };
    Kind kind;
    std::string peer;  // PeerConfig::name
    uint64_t ike_sa_id = 0;
    int code = 0;  // notify type, x509::VerifyFailure, ...
    std::string detail;
    std::vector<CertReqAnchor> certreq = {};  // Kind::PeerCertReq only
};
const char* to_string(Event::Kind k);

// Event::code of AuthFailed: an x509::VerifyFailure value (1..9) for certificate checks, or one
// of these.
namespace auth_failure {
constexpr int PskMismatch = 100;     // the peer's PSK AUTH does not verify
constexpr int MethodMismatch = 101;  // peer used PSK where a certificate is required, or v.v.
constexpr int PeerRejected = 102;    // the peer answered AUTHENTICATION_FAILED
constexpr int NoCredentials = 103;   // no key/certificate/PSK configured for our side
// Responder: the peer config selected by IDi/IDr at IKE_AUTH does not accept the IKE proposal
// chosen at IKE_SA_INIT (and no other candidate for that identity does).
constexpr int ProposalMismatch = 104;
}  // namespace auth_failure

struct ChildSaInfo {
    std::string name;
    uint32_t reqid = 0;
    uint32_t spi_in = 0, spi_out = 0;
    std::string cipher;  // "AES_GCM_16_128"
    bool esn = false;
    std::string pfs;  // DH group name or ""
    std::vector<TrafficSelector> ts_local, ts_remote;
    Millis established_at = 0;
    std::string state;  // "INSTALLED", "REKEYING", "DELETING"
};

struct IkeSaInfo {
    uint64_t id = 0;
    std::string peer;
    std::string state;  // "CONNECTING", "ESTABLISHED", "REKEYING", "DELETING"
    bool initiator = false;
    uint64_t spi_i = 0, spi_r = 0;
    Endpoint local, remote;
    std::string local_id, remote_id;
    std::string local_auth, remote_auth;  // "ECDSA-SHA256 certificate", "pre-shared key"
    std::string encr, integ, prf, dh;     // algorithm names
    bool nat_local = false, nat_remote = false, encap = false;
    Millis established_at = 0;
    std::string peer_cert_subject;  // and the anchor it chained to
    std::string peer_cert_anchor;
    // The CAs of the peer's CERTREQ payloads, in order, without duplicates (empty: none sent).
    std::vector<CertReqAnchor> peer_certreq;
    std::vector<ChildSaInfo> children;
};

// Keys for Wireshark's IKEv2 decryption table (opt-in debug only; never logged).
struct IkeSaKeys {
    uint64_t spi_i = 0, spi_r = 0;
    SecureBytes sk_ei, sk_er, sk_ai, sk_ar;
    std::string encr_name;   // Wireshark's names, e.g. "AES-GCM-128 with 16 octet ICV [RFC5282]"
    std::string integ_name;  // e.g. "HMAC_SHA2_256_128 [RFC4868]" or "NONE [RFC4306]"
};

// ---------------------------------------------------------------- the engine
class Engine {
public:
    // rng supplies SPIs, nonces, IVs and cookie secrets (a DeterministicRng in tests).
    Engine(EngineConfig config, ChildSaBackend& backend, Rng& rng);
    ~Engine();
    Engine(const Engine&) = delete;
    Engine& operator=(const Engine&) = delete;

    // Start an IKE SA (and the first Child SA) with the named peer.
    Status initiate(const std::string& peer, Millis now);
    // Feed one received datagram (any peer, any state).  Never throws, never crashes: bad
    // input is dropped or answered with a notify, counted and logged.
    void handle_datagram(const Datagram& d, Millis now);
    // Run due timers (retransmissions, rekeys, DPD, half-open expiry).
    void tick(Millis now);
    std::optional<Millis> next_deadline() const;
    // The data plane reports that a lifetime of the Child SA with this inbound SPI ran out:
    // soft -> CREATE_CHILD_SA rekey (if the Child SA is installed and idle), hard -> the Child
    // SA is gone from the data plane and is deleted with the peer.  An unknown SPI is ignored
    // (counted ike.child.expired_unknown_spi).  Called on the engine's loop, like the rest.
    void child_sa_expired(uint32_t spi_in, ChildSaExpiry kind, Millis now);
    std::vector<Datagram> take_outgoing();
    std::vector<Event> take_events();

    // Operations on established SAs.
    Status rekey_ike(uint64_t ike_sa_id, Millis now);
    Status rekey_child(uint64_t ike_sa_id, uint32_t spi_in, Millis now);
    Status create_child(uint64_t ike_sa_id, const std::string& child_name, Millis now);
    Status delete_child(uint64_t ike_sa_id, uint32_t spi_in, Millis now);
    Status delete_ike(uint64_t ike_sa_id, Millis now);
    Status send_dpd(uint64_t ike_sa_id, Millis now);

    std::vector<IkeSaInfo> list_sas() const;
    // For the runtime's receive queue, before the datagram is queued: whether an IKE_SA_INIT
    // request carries a COOKIE this engine handed out (same secrets and rule as the engine's
    // own check above cookie_threshold, which still runs when the request is handled).  A walk
    // over the generic payload headers and one SHA-256 at most; changes nothing.
    CookieCheck check_init_cookie(const Datagram& d) const;
    const Counters& counters() const;
    // Self-check for tests: the engine's internal indexes (inbound Child SPI -> owning IKE
    // SA, SPIs handed out) agree exactly with its SAs.  The error names the first mismatch.
    Status check_indexes() const;
    // Opt-in key export for Wireshark (the runtime writes the files, with a warning).
    void set_key_logger(std::function<void(const IkeSaKeys&)> on_ike_keys,
                        std::function<void(const ChildSaParams&)> on_child_keys);
    // Replace a peer's credentials (e.g. after CMP enrolment of an operator certificate).
    Status update_peer(const PeerConfig& peer);

private:
    Status rearmed(Status st);  // re-arms the timers of the SAs the call touched
    struct Impl;
    std::unique_ptr<Impl> m_impl;
};

}  // namespace x2sec::ike
