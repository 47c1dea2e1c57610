// Internal state of the IKEv2 engine: IKE SAs, Child SAs, tasks and the task manager.  Where each
// member is defined: docs/ikev2.md "Source layout".
#pragma once

#include <deque>
#include <list>
#include <map>
#include <memory>
#include <optional>
#include <queue>
#include <set>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>
#include <x2sec/common/log.hpp>
#include <x2sec/ikev2/cookie.hpp>
#include <x2sec/ikev2/engine.hpp>
#include <x2sec/ikev2/keymat.hpp>
#include <x2sec/ikev2/wire.hpp>

#include "sa/child_sa_table.hpp"
#include "sa/half_open_expiry.hpp"
#include "sa/ike_sa.hpp"
#include "sa/peer_index.hpp"
#include "tasks/task.hpp"

namespace x2sec::ike {

class EngineImpl {
public:
    EngineImpl(EngineConfig config, ChildSaBackend& backend, Rng& rng);

    // facade
    Status initiate(const std::string& name, Millis now);
    void handle_datagram(const Datagram& d, Millis now);
    void tick(Millis now);
    std::optional<Millis> next_deadline() const;
    void child_sa_expired(uint32_t spi_in, ChildSaExpiry kind, Millis now);
    Status rekey_ike(uint64_t id, Millis now);
    Status rekey_child(uint64_t id, uint32_t spi_in, Millis now);
    Status create_child(uint64_t id, const std::string& name, Millis now);
    Status delete_child(uint64_t id, uint32_t spi_in, Millis now);
    Status delete_ike(uint64_t id, Millis now);
    Status send_dpd(uint64_t id, Millis now);
    std::vector<IkeSaInfo> list_sas() const;
    Status update_peer(const PeerConfig& peer);

    // used by tasks
    EngineConfig m_config;
    PeerIndex m_peer_index;  // over m_config.peers, kept by the constructor and update_peer
    ChildSaBackend& m_backend;
    Rng& m_rng;
    Counters m_counters;
    std::shared_ptr<spdlog::logger> m_log;
    std::vector<Datagram> m_out;
    std::vector<Event> m_events;
    std::function<void(const IkeSaKeys&)> m_on_ike_keys;
    std::function<void(const ChildSaParams&)> m_on_child_keys;

    std::map<uint64_t, std::unique_ptr<IkeSa>> m_sas;  // by id
    // Indexes kept consistent with m_sas (entries go when the SA is reaped in tick()):
    // our SPI -> id; responder SAs from IKE_SA_INIT by (SPIi, remote address) -> id; inbound
    // Child SA SPIs handed out; the number of half-open responder SAs (state Connecting).
    std::unordered_map<uint64_t, uint64_t> m_by_spi;
    std::unordered_map<std::string, uint64_t> m_by_init;
    std::unordered_set<uint32_t> m_child_spis;
    // Unique identities and INITIAL_CONTACT without walking every SA (at 2,000 SAs the walks
    // were 16 % of a responder's and 10 % of an initiator's CPU per setup): the SAs that have
    // come up, by a hash of (local_id_text, remote_id_text) (IkeSa::identities_hash; entered on
    // coming up, left on DESTROYED; equal texts are compared on look-up), and the number of SAs
    // not DESTROYED per peer config (IkeSa::peer_idx changes only through set_peer_idx()).
    std::unordered_multimap<uint64_t, uint64_t> m_by_identities;
    std::vector<size_t> m_live_by_peer;
    static uint64_t identities_hash(const IkeSa& sa);
    void set_peer_idx(IkeSa& sa, size_t peer_idx);
    // The Child SA table: inbound SPI of every Child SA held in some IkeSa::children -> that
    // IKE SA's id, exactly (attach_child() / detach_child() go through it, the only places
    // that change IkeSa::children), and the one writer of Child SA states (set_child_state).
    // A Child SA moving to a rekeyed IKE SA is detached and attached (move_children()).  Used
    // for the data plane's lifetime events, which name only the inbound SPI.
    ChildSaTable m_children;
    Status set_child_state(IkeSa& sa, ChildSa& c, ChildSa::St to) {
        touch(sa);
        return m_children.set_state(sa, c, to);
    }
    ChildSa& attach_child(IkeSa& sa, ChildSa child);
    ChildSa detach_child(IkeSa& sa, std::vector<ChildSa>::iterator it);
    void move_children(IkeSa& from, IkeSa& to);
    // The IKE SA (not yet reaped) holding the Child SA with this inbound SPI, or null.
    IkeSa* child_owner(uint32_t spi_in);
    // Checks m_child_owner and m_child_spis against the SAs (Engine::check_indexes, tests).
    Status check_indexes() const;
    size_t m_half_open = 0;
    // Half-open responder SAs per source address (IkeSa::half_open_source), for
    // EngineConfig::max_half_open_per_source; entries go when they reach 0.
    std::unordered_map<std::string, size_t> m_half_open_by_source;
    HalfOpenOrder m_half_open_order;  // when half-open SAs expire (sa/half_open_expiry.hpp)
    static std::string source_key(const IpAddress& a);
    // Timers: a min-heap of (deadline, IKE SA id), one live entry per SA (IkeSa::armed_at);
    // entries whose deadline no longer equals armed_at, or whose SA is gone, are stale and
    // dropped.  Whatever may move an SA's deadline earlier touches the SA (find_sa, new_sa,
    // transition, start_next, schedule_rekeys, install_child ...); every facade call ends with
    // rearm(), which pushes the touched SAs' earlier deadlines.  A deadline that moved later
    // (DPD after traffic, a retransmission answered) keeps its old entry until it reaches the
    // top, where settle_timers() re-files it — so next_deadline() is exact and tick() pops only
    // due entries, O(log n) each, instead of scanning every SA.
    struct TimerEntry {
        Millis at;
        uint64_t id;
        bool operator>(const TimerEntry& o) const { return at != o.at ? at > o.at : id > o.id; }
    };
    mutable std::priority_queue<TimerEntry, std::vector<TimerEntry>, std::greater<TimerEntry>> m_timers;
    // Makes the heap's top exact: drops stale entries and re-files a live entry whose SA's
    // deadline moved later (each SA at most once per call); O(log n) per entry touched.
    void settle_timers() const;
    std::vector<uint64_t> m_touched;
    std::vector<uint64_t> m_destroyed;  // destroyed SAs, reaped at the end of tick()
    void touch(IkeSa& sa) {
        if (!sa.touched) {
            sa.touched = true;
            m_touched.push_back(sa.id);
        }
    }
    void rearm();
    // The earliest time a timer of this SA is due (retransmission, half-open expiry, IKE and
    // Child rekey, DPD), under the same conditions run_timers() acts on.
    std::optional<Millis> sa_deadline(const IkeSa& sa) const;
    void run_timers(IkeSa& sa, Millis now);
    uint64_t m_next_id = 1;
    uint32_t m_next_reqid = 1;

    // cookies (also checked by the runtime's receive queue through Engine::check_init_cookie)
    CookieJar m_cookies;

    // rate limit of unprotected INVALID_IKE_SPI / INVALID_MAJOR_VERSION answers (one-second windows)
    Millis m_unprot_window_start = -1;
    unsigned m_unprot_in_window = 0;
    bool allow_unprotected_answer(Millis now);

    const PeerConfig& peer(const IkeSa& sa) const { return m_config.peers[sa.peer_idx]; }
    IkeSa* find_sa(uint64_t id);
    IkeSa* find_by_spi(uint64_t my_spi);
    void index_spi(IkeSa& sa);  // after our SPI (spi_i as initiator, spi_r as responder) is set
    static std::string init_key(uint64_t spi_i, const IpAddress& remote);
    IkeSa* find_by_init(uint64_t spi_i, const IpAddress& remote);
    void reap(IkeSa& sa);  // drop the index entries of a destroyed SA about to be erased
    IkeSa& new_sa(size_t peer_idx, bool initiator, Millis now);
    // The IKE SA state machine (sa/state.cpp): the only writer of IkeSa::state.  Refuses an
    // illegal transition (named error, counter ike.sa.illegal_transition, state unchanged) and
    // runs the entry effects: half-open accounting on entering / leaving CONNECTING (responder),
    // on entering ESTABLISHED the SA comes up (established_at, rekey timer; from CONNECTING
    // also Event::IkeSaUp), on entering DESTROYED the SA is queued for reaping.
    Status transition(IkeSa& sa, SaState to, Millis now);
    void event(const IkeSa& sa, Event::Kind k, int code = 0, std::string detail = "");
    void destroy(IkeSa& sa, Millis now, bool remove_children, const std::string& why);
    int64_t unix_now() const;
    void count(const std::string& what) { m_counters.inc("ike.rx." + what); }
    void drop(const Datagram& d, const std::string& counter, const std::string& why);

    // task manager
    void queue_exchange(IkeSa& sa, Exchange ex, Millis now);
    void start_next(IkeSa& sa, Millis now);
    void send_packets(IkeSa& sa, const std::vector<Bytes>& packets);
    // Encrypts (and fragments) a message, its payloads in the order of the exchange's rule.
    Result<std::vector<Bytes>> protect(IkeSa& sa, wire::Header h, std::vector<wire::Payload> payloads);
    void send_response(IkeSa& sa, wire::ExchangeType type, uint32_t mid, const std::vector<wire::Payload>& payloads);
    void send_error_response(IkeSa& sa, wire::ExchangeType type, uint32_t mid, uint16_t notify_type, Bytes data = {});
    void send_unprotected_notify(const Datagram& d, const wire::Header& req, uint16_t notify_type, Bytes data);
    void handle_init_request(const Datagram& d, wire::Message& m, Millis now);
    void handle_init_response(const Datagram& d, wire::Message& m, Millis now);
    void handle_protected(const Datagram& d, wire::Message& m, Millis now);
    // Frees the state only the IKE_SA_INIT/IKE_AUTH exchanges need, once the responder has
    // answered IKE_AUTH and the SA is established.
    void release_setup_state(IkeSa& sa);
    void process_request(IkeSa& sa, const Datagram& d, const wire::Header& h, const wire::Checked& in, Millis now);
    void process_response(IkeSa& sa, const wire::Header& h, const wire::Checked& in, Millis now);
    // A request whose Message ID is neither the expected one nor the cached retransmission:
    // answered with INVALID_MESSAGE_ID (in a new INFORMATIONAL request, rate limited) or dropped.
    void out_of_window_request(IkeSa& sa, const Datagram& d, const wire::Message& m, Millis now);
    void fail_outstanding(IkeSa& sa, Millis now, const std::string& why);
    // Aborts the exchange in flight and the queued ones (their tasks undo what they started);
    // whether one was in flight.
    bool abandon_exchanges(IkeSa& sa, Millis now);
    // The operations on an established IKE SA (operations.cpp): `make` builds the exchange.
    Status queue_on(uint64_t id, Millis now, const std::function<Result<Exchange>(IkeSa&)>& make);
    // A response task `t` cannot use (why: an INVALID_SYNTAX, TS_UNACCEPTABLE or
    // NO_PROPOSAL_CHOSEN error): counted ike.rx.<invalid_syntax|ts_unacceptable|
    // no_proposal_chosen>.<purpose>, logged as an error naming the peer and what was wrong, and
    // the task refuses it (Task::refuse).
    void refuse_response(IkeSa& sa, Task& t, wire::ResponsePurpose purpose, const Error& why, Millis now);
    // Tells the peer to delete the Child SA it created for a request of ours that we refused:
    // an INFORMATIONAL DELETE naming `spi_in`, the inbound SPI we proposed (RFC 7296 3.11),
    // which no Child SA of ours holds.  The delete exchange takes over the SPI's reservation
    // and releases it when answered or failed.
    void queue_delete_spi(IkeSa& sa, uint32_t spi_in, Millis now);

    // An INFORMATIONAL request sent once, not retransmitted and not waited for (the SA goes
    // away right after): DELETE or AUTHENTICATION_FAILED to a peer we stop talking to.
    void send_one_shot_request(IkeSa& sa, const std::vector<wire::Payload>& payloads);
    // Unique identities (RFC 7296 2.4, PeerConfig::unique): the other live, authenticated IKE
    // SAs with the same pair of identities as `sa` (responder_only: only those the peer
    // initiated too, so two ends initiating at once do not delete each other's).
    std::vector<uint64_t> same_identities(const IkeSa& sa, bool responder_only);
    // Whether another IKE SA (any state) with sa's peer config exists: if not, our IKE_AUTH
    // carries INITIAL_CONTACT.
    bool has_contact(const IkeSa& sa) const;
    // After `sa` authenticated the peer as responder: INITIAL_CONTACT deletes the others at
    // once (the peer says it holds none), else unique = replace deletes the older ones the
    // peer initiated (a DELETE is sent on each).  Counted ike.auth.initial_contact_deleted /
    // ike.auth.unique_replaced.
    void enforce_unique(IkeSa& sa, bool initial_contact, Millis now);

    // Answers a request through its responder tasks (tasks/*.cpp): every process_r, then every
    // build_r, then the response goes out and every task's responded() runs.  A role returning
    // an error has answered itself (answer_error) or decided nothing is sent.
    void respond(IkeSa& sa, const Request& req, Exchange ex, Millis now);
    // Answers `req` with an error notify alone (logged: "<exchange> refused: <notify>") and
    // returns the error a responder role gives back to say so.
    Error answer_error(IkeSa& sa, const Request& req, uint16_t notify_type, Bytes data = {});
    // RFC 7296 2.21: a request missing a payload it needs (`why`) is answered INVALID_SYNTAX;
    // counted ike.rx.invalid_syntax.<counter> and logged as an error naming the peer.
    Error answer_invalid(IkeSa& sa, const Request& req, const Error& why, const char* counter);
    // IKE_AUTH responder: re-select sa.peer_idx by IDi (and IDr) among the configs whose
    // addresses matched the IKE_SA_INIT (sa.candidate_local / candidate_remote).
    Status select_peer(IkeSa& sa, const wire::Checked& in);
    // The address score of peers[i] for a datagram local <- remote (higher is better), or -1
    // if its addresses do not match.
    int address_score(const PeerConfig& p, const Endpoint& local, const Endpoint& remote) const;

    // shared pieces
    Status derive_ike(IkeSa& sa, BytesView g_ir, const SecureBytes* old_sk_d, const crypto::Prf* old_prf) const;
    std::vector<wire::Payload> natd_payloads(const IkeSa& sa, const Endpoint& local, const Endpoint& remote) const;
    void process_natd(IkeSa& sa, const std::vector<wire::Payload>& pl, const Endpoint& local, const Endpoint& remote);
    void float_ports(IkeSa& sa);
    Status build_auth(IkeSa& sa, std::vector<wire::Payload>& out) const;
    // `in` is complete under a rule requiring the peer's ID and AUTH.
    Status verify_auth(IkeSa& sa, const wire::Checked& in, bool peer_is_initiator);
    // The one install path of a Child SA, for either role: the record (new_child_record) goes
    // to the backend, is attached to `sa` and announced (Event::ChildSaUp).
    Status install_child(IkeSa& sa, ChildSa& child, const ChildKeys& keys, bool we_initiated);
    void remove_child(IkeSa& sa, uint32_t spi_in, bool notify_event, const std::string& why);
    ChildSa* child_by_in(IkeSa& sa, uint32_t spi_in);
    ChildSa* child_by_out(IkeSa& sa, uint32_t spi_out);
    uint32_t new_child_spi();
    // Gives back an SPI from new_child_spi() that no Child SA was attached with.
    void release_child_spi(uint32_t spi) { m_child_spis.erase(spi); }
    uint64_t new_ike_spi();
    Bytes make_nonce() { return m_rng.bytes(32); }
    // DH key pairs from the injected Rng, the same code for OsRng and a DeterministicRng (which
    // so replays whole exchanges).
    Result<crypto::DhKeyPair> make_dh(crypto::DhGroup g);
    CookieCheck check_init_cookie(const Datagram& d) const;
    size_t half_open_count() const;
    void schedule_rekeys(IkeSa& sa, Millis now);
    // Records the hashes of the CERTREQ payloads in `pl` and raises Event::PeerCertReq (when
    // there is at least one CERTREQ payload).
    void note_certreq(IkeSa& sa, const std::vector<wire::Payload>& pl);
    // sa.peer_certreq mapped to our trust anchors (the SA's config's store first).
    std::vector<CertReqAnchor> map_certreq(const IkeSa& sa) const;
    void finish_ike_rekey(IkeSa& old_sa, IkeSa& ns, Millis now);
};

// Exchange builders (src/tasks/*.cpp, beside the task they carry): initiator exchanges...
Exchange make_ike_init_exchange();
Exchange make_ike_auth_exchange(size_t child_cfg);
Exchange make_create_child_exchange(size_t child_cfg);
Exchange make_rekey_child_exchange(uint32_t old_spi_in);
Exchange make_rekey_ike_exchange();
Exchange make_delete_child_exchange(std::vector<uint32_t> spis_in);
// A DELETE of inbound SPIs no Child SA of ours holds (refused responses); the SPIs stay
// reserved until the exchange ends.
Exchange make_delete_refused_child_exchange(const std::vector<uint32_t>& spis_in);
Exchange make_delete_ike_exchange();
Exchange make_dpd_exchange();
Exchange make_invalid_mid_exchange(uint32_t bad_mid);

// ... and the responder's tasks for a request (run by EngineImpl::respond).
Exchange make_ike_auth_responder();
// CREATE_CHILD_SA: an IKE SA rekey (IKE proposal), a Child SA rekey (REKEY_SA) or a new Child SA.
Exchange make_create_child_responder(const wire::Checked& in);
Exchange make_informational_responder();

// Proposal helpers (proposals.cpp).
wire::Proposal ike_proposal_to_wire(const IkeProposal& p, uint8_t number, BytesView spi);
std::optional<IkeAlgorithms> select_ike(const std::vector<IkeProposal>& mine, const wire::SaPayload& theirs,
                                        std::optional<uint16_t> ke_group, uint8_t* number,
                                        crypto::DhGroup* preferred_group);
std::vector<wire::Proposal> child_proposals_to_wire(const ChildConfig& c, uint32_t spi, bool with_dh);
struct ChildChoice {
    EspCipher cipher;
    bool esn = false;
    std::optional<crypto::DhGroup> dh;
    uint8_t number = 1;
    uint32_t peer_spi = 0;
};
// ke_group: the peer's KE group when present.  *wanted_group is set when the proposal matches
// except for the KE group (INVALID_KE_PAYLOAD).
std::optional<ChildChoice> select_child(const ChildConfig& c, const wire::SaPayload& theirs, bool allow_dh,
                                        std::optional<uint16_t> ke_group, std::optional<crypto::DhGroup>* wanted_group);
wire::Proposal child_choice_to_wire(const ChildChoice& c, uint32_t my_spi);
std::optional<ChildChoice> parse_child_choice(const wire::SaPayload& sa);
std::optional<IkeAlgorithms> parse_ike_choice(const wire::SaPayload& sa, Bytes* spi);
std::string encr_name(const EncrAlg& e);
// Whether one of the proposals contains every algorithm of `algs` (integrity ignored for AEAD).
bool proposals_allow(const std::vector<IkeProposal>& proposals, const IkeAlgorithms& algs);
const char* integ_name(crypto::IntegId i);
const char* prf_name(crypto::PrfId p);
// "AES_GCM_16_128/PRF_HMAC_SHA2_256/ECP_256": the names of the IKE SA's algorithms joined by '/',
// without an empty field for an AEAD cipher's absent integrity algorithm.
std::string ike_algs_name(const IkeAlgorithms& a);
// Traffic selectors.
std::vector<TrafficSelector> narrow(const std::vector<TrafficSelector>& proposed,
                                    const std::vector<TrafficSelector>& allowed);
// Whether every selector of `got` lies within one of `proposed` (same address family, its
// address and port ranges inside, its IP protocol the proposed one unless that is 0 = any):
// RFC 7296 2.9, a responder may narrow the initiator's selectors, never widen them.  An empty
// `got` is no subset.
bool ts_subset(const std::vector<TrafficSelector>& got, const std::vector<TrafficSelector>& proposed);
// "a, b" for logs.
std::string ts_text(const std::vector<TrafficSelector>& ts);

}  // namespace x2sec::ike
