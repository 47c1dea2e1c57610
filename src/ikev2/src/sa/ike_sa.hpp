// The IKE SA and Child SA records (RFC 7296 2.8, 1.3) and their states.  The IKE SA's state
// changes only through EngineImpl::transition() (sa/state.cpp), a Child SA's only through
// ChildSaTable::set_state() (sa/child_sa_table.hpp).
#pragma once

#include <list>
#include <optional>
#include <string>
#include <vector>
#include <x2sec/ikev2/engine.hpp>
#include <x2sec/ikev2/keymat.hpp>

#include "../tasks/task.hpp"

namespace x2sec::ike {

enum class SaState { Created, Connecting, Established, Rekeying, Rekeyed, Deleting, Destroyed };
const char* state_name(SaState s);

struct ChildSa {
    enum class St { Installed, Rekeying, Rekeyed, Deleting };
    std::string name;
    size_t cfg = 0;
    uint32_t reqid = 0;
    uint32_t spi_in = 0, spi_out = 0;
    EspCipher cipher = EspCipher::AesGcm16_128;
    bool esn = false;
    std::optional<crypto::DhGroup> pfs;
    IpsecMode mode = IpsecMode::Tunnel;
    std::vector<TrafficSelector> ts_local, ts_remote;
    Millis established_at = 0;
    Millis rekey_at = 0;  // 0: none
    // The state, written only by ChildSaTable::set_state().
    St st() const { return m_st; }
    bool installed = false;
    bool down_reported = false;  // ChildSaDown already raised (hard expiry): the delete completes quietly
    // Set when we answered the peer's REKEY_SA for this child while our own rekey of it was
    // pending (RFC 7296 2.8 collision): the child we created and the nonces of their exchange.
    uint32_t collision_spi_in = 0;
    Bytes collision_ni, collision_nr;
    // The rekeyed (old) child replaced by this one, for set_outbound on its deletion.
    uint32_t replaces_spi_in = 0;

private:
    friend class ChildSaTable;
    St m_st = St::Installed;
};
const char* state_name(ChildSa::St s);

struct IkeRekeyState {
    // Our own rekey exchange (initiator): new SPI and our nonce, DH key.
    uint64_t new_spi = 0;
    Bytes ni;
    std::optional<crypto::DhKeyPair> dh;
    // The peer's rekey we answered while ours was pending (collision), or answered alone.
    uint64_t theirs_id = 0;  // the new IkeSa created as responder
    Bytes their_ni, their_nr;
};

constexpr Millis kNoTimer = INT64_MAX;

struct IkeSa {
    uint64_t id = 0;
    size_t peer_idx = 0;
    bool initiator = false;
    SaState state = SaState::Created;  // written only by EngineImpl::transition()
    uint64_t spi_i = 0, spi_r = 0;
    Endpoint local, remote;
    bool natt_port = false;  // using the NAT-T ports with the non-ESP marker
    bool nat_local = false, nat_remote = false, encap = false;
    bool fake_nat = false;

    IkeAlgorithms algs;
    std::optional<crypto::Prf> prf;
    std::optional<crypto::SkCipher> cipher_out, cipher_in;
    SecureBytes sk_d, sk_pi, sk_pr;
    Bytes ni, nr;
    Bytes init_req, init_resp;  // the IKE_SA_INIT messages as sent, for AUTH
    std::optional<crypto::DhKeyPair> dh;
    Bytes cookie;
    unsigned init_attempts = 0;

    bool peer_frag = false;
    bool peer_sent_hashes = false;
    // The responder's IKE_SA_INIT CERTREQ of encoding 14 (RFC 4806), when it sent one: the key
    // hashes of the OCSP responders it trusts (maybe none).
    std::optional<std::vector<Bytes>> peer_asked_ocsp;
    std::vector<uint16_t> peer_hashes;
    std::vector<Bytes> peer_certreq;  // SHA-1 SPKI hashes from the peer's CERTREQs, no duplicates

    uint32_t my_mid = 0;    // Message ID of our next request
    uint32_t peer_mid = 0;  // Message ID of the peer's next request
    std::optional<Outstanding> outstanding;
    // std::list, not std::deque: an empty libstdc++ deque already holds a 512-octet node and its
    // map (~576 B per IKE SA, most of which never queue anything; docs/bench-ike.md "Heap per
    // IKE SA").
    std::list<Exchange> queue;
    std::optional<CachedResponse> cached;
    Reassembly frag_req, frag_resp;

    // Changed only through EngineImpl::attach_child / detach_child (they keep m_child_owner).
    std::vector<ChildSa> children;
    // established_at and up(): set by transition() on entering ESTABLISHED from CONNECTING or
    // CREATED (its entry effect), never elsewhere.  up(): the SA has come up (was announced).
    Millis created_at = 0, established_at = 0, rekey_at = 0, last_rx = 0;
    // The liveness check is due dpd_wait after last_rx (dpd_interval with its jitter, sa/timer_jitter.hpp).
    Millis dpd_wait = 0;
    bool up() const { return m_up; }

private:
    friend class EngineImpl;
    bool m_up = false;

public:
    std::string local_id_text, remote_id_text, local_auth_desc, remote_auth_desc;
    // The key of this SA's EngineImpl::m_by_identities entry while it has one (set when the SA
    // comes up, from the identity texts, which do not change after that).
    std::optional<uint64_t> identities_hash;
    // The peer certificate's subject as DER, formatted only when the SA is listed (RFC 2253
    // formatting costs more than the DER copy, ~5 us, on every authentication).
    Bytes peer_cert_subject_der;
    std::string peer_cert_anchor;
    IkeRekeyState rekey;
    uint64_t rekeyed_from = 0;       // the old IKE SA this one replaced
    uint64_t children_moved_to = 0;  // the IKE SA that took over this one's children (rekey)
    // Responder: the endpoints the IKE_SA_INIT came on; the peer configs whose addresses (and
    // ports) match them are the candidates IKE_AUTH re-selects peer_idx among by IDi / IDr.
    bool has_candidates = false;
    Endpoint candidate_local, candidate_remote;
    // Responder, while half-open: the source address counted in m_half_open_by_source.
    std::string half_open_source;
    // ... and when it is next checked for expiry (sa/half_open_expiry.hpp).
    Millis half_open_until = 0;
    // INVALID_MESSAGE_ID notifies (RFC 7296 2.3): when we last sent one, and whether one is
    // queued or outstanding (at most one at a time).
    std::optional<Millis> invalid_mid_notified_at;
    bool invalid_mid_pending = false;
    // Timer bookkeeping (EngineImpl::m_timers): the deadline of this SA's live heap entry
    // (kNoTimer: none), and whether it is on the touched list for re-arming.
    Millis armed_at = kNoTimer;
    bool touched = false;
};

}  // namespace x2sec::ike
