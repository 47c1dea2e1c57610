// The ESP data plane proper: the SAD (inbound SAs by SPI), the SPD (outbound policies by
// traffic selectors, one per Child SA reqid), lifetimes and the anti-replay window.  It is
// sans-I/O: backends (in-memory, TUN) feed it IP packets and UDP payloads with the current
// time and send what it returns.  It implements ChildSaBackend, so the IKE engine installs,
// switches and removes Child SAs directly.
//
// Threading: install/remove/set_outbound/tick may run on any thread (exclusive lock).
// protect() may run on one thread at a time and unprotect() on one thread at a time (they
// touch disjoint state: outbound vs inbound SAs, but for a short list of SAs that crossed a
// byte/packet/sequence limit, under its own mutex), concurrently with each other.
// ChildSaEvents callbacks are called from tick(), outside the lock; the packet paths only
// flag the SA for the next tick.
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <map>
#include <mutex>
#include <memory>
#include <shared_mutex>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>
#include <x2sec/common/child_sa.hpp>
#include <x2sec/common/counters.hpp>
#include <x2sec/common/time.hpp>
#include <x2sec/esp/cipher.hpp>
#include <x2sec/esp/packet.hpp>
#include <x2sec/esp/replay.hpp>

namespace x2sec::esp {

// Per-direction lifetime accounting.
struct SaUsage {
    std::atomic<uint64_t> bytes{0}, packets{0};
};

struct OutboundSa {
    uint32_t spi = 0;
    uint32_t spi_in = 0;           // the Child SA's inbound SPI (its handle)
    std::atomic<uint64_t> seq{0};  // last sequence number sent (written by the TX thread only)
    bool esn = false;
    IpsecMode mode = IpsecMode::Tunnel;
    IpAddress local_addr, remote_addr;
    uint16_t local_port = 4500, remote_port = 4500;
    bool udp_encap = true;  // false: raw ESP (IP protocol 50)
    std::unique_ptr<SaCipher> cipher;
    SaUsage usage;
};

struct InboundSa {
    uint32_t spi = 0;
    uint32_t reqid = 0;
    IpsecMode mode = IpsecMode::Tunnel;
    IpAddress local_addr, remote_addr;
    std::unique_ptr<SaCipher> cipher;
    ReplayWindow replay;
    std::vector<TrafficSelector> ts_local, ts_remote;
    // Transport mode in UDP (NAT-T): the addresses the peer put in its TCP/UDP checksums (RFC
    // 7296 2.23.1: from the transport-mode traffic selectors), for the RFC 3948 3.1.2 fix-up.
    bool natt_fixup = false, have_orig = false;
    IpAddress orig_src, orig_dst;
    SaUsage usage;
    InboundSa(uint32_t window, bool esn) : replay(window, esn) {}
};

// How long the inbound half of a rekeyed-away SA still accepts packets after its removal.
inline constexpr int kRekeyDrainMs = 2000;

struct DataPlaneOptions {
    // Ask for a rekey when this many outbound sequence numbers are left (soft expiry).
    uint64_t seq_soft_margin = 1u << 20;
};

// Status of one Child SA, for `x2sec status` style output and tests.
struct ChildSaStatus {
    uint32_t spi_in = 0, spi_out = 0, reqid = 0;
    std::string name;
    bool outbound_active = false;  // this SA carries the policy's outbound traffic
    uint64_t in_bytes = 0, in_packets = 0, out_bytes = 0, out_packets = 0;
    uint64_t out_seq = 0, replay_top = 0;
    bool soft_fired = false, hard_expired = false;
    IpAddress remote_addr;
    uint16_t remote_port = 0;
    bool udp_encap = true;
};

class DataPlane final : public ChildSaBackend {
public:
    explicit DataPlane(Counters& counters, DataPlaneOptions options = {});
    ~DataPlane() override;

    Status install(const ChildSaParams& params) override;
    Status remove(uint32_t spi_in) override;
    Status set_outbound(uint32_t old_spi_in, uint32_t new_spi_in) override;
    void set_events(ChildSaEvents events) override;

    struct ProtectResult {
        bool ok = false;
        DropReason reason = DropReason::NoPolicy;
        size_t esp_off = 0, esp_len = 0;  // the UDP payload to send
        IpAddress local_addr, remote_addr;
        uint16_t local_port = 0, remote_port = 0;
        uint32_t spi = 0;
        bool udp_encap = true;  // send in UDP (RFC 3948); false: raw ESP, IP protocol 50
    };
    // Outbound.  buf[kMaxHeadroom .. kMaxHeadroom+ip_len) holds an IP packet read from the
    // TUN side; buf must have kMaxTailroom octets after it.  Selects the policy, encrypts in
    // place and returns where the ESP packet is.  Drops are counted.
    ProtectResult protect(std::span<uint8_t> buf, size_t ip_len, Millis now);

    struct UnprotectResult {
        bool ok = false;
        DropReason reason = DropReason::Truncated;
        size_t ip_off = 0, ip_len = 0;  // the inner IP packet for the TUN side
        uint32_t spi = 0;
        bool dummy = false;  // next header 59: valid, nothing to deliver
    };
    // Inbound.  buf[off .. off+len) holds an ESP packet (UDP payload after classification).
    // For transport mode off must be >= 40 so the IP header can be rebuilt in front.
    UnprotectResult unprotect(std::span<uint8_t> buf, size_t off, size_t len, Millis now);

    // Time-based lifetimes and deferred hard expiry; call every few hundred ms.  Its work is
    // proportional to the SAs that need it (a time deadline due, a byte/packet/sequence limit
    // crossed on the data path, installed since the last tick), not to the SAs installed.
    void tick(Millis now);
    // SAs tick() has examined so far (each due deadline, stale ones included, each SA flagged
    // by the data path or newly installed): tests and benchmarks see tick's work through it.
    uint64_t tick_examined() const { return m_tick_examined.load(std::memory_order_relaxed); }

    // Set the last outbound sequence number of a Child SA (tests of sequence exhaustion, and
    // restoring state); the next packet uses seq + 1.
    Status set_outbound_seq(uint32_t spi_in, uint64_t seq);

    std::vector<ChildSaStatus> status() const;
    size_t sa_count() const;
    // Rekeyed-away SAs kept for packets in flight; each is dropped by the first tick() or
    // remove() at or after the end of its kRekeyDrainMs.
    size_t draining_count() const;
    // The SPD and SAD indexes agree with the SPD and the SAD (tests): "" or what is wrong.
    std::string check_indexes() const;
    Counters& counters() { return m_counters; }

private:
    struct Child;  // both directions of one installed Child SA
    struct Policy {
        uint32_t key = 0;  // reqid, or spi_in of the first SA when reqid is 0
        std::vector<TrafficSelector> ts_local, ts_remote;
        std::shared_ptr<Child> active;  // outbound SA in use
    };
    void drop(DropReason r) { m_drop[static_cast<size_t>(r)]->fetch_add(1, std::memory_order_relaxed); }
    Status remove_locked(uint32_t spi_in);
    void check_soft(Child& c, bool outbound);
    // Sets a soft/hard pending flag from the data path (shared lock); the first time it is set
    // the SA goes on m_flagged for the next tick.
    void raise(Child& c, std::atomic<bool>& flag);
    // What tick() does for one SA that needs it (unique lock): the time checks, then the
    // soft or hard event, then the SA's next time deadline.
    void examine_locked(Child& c, Millis now, std::vector<uint32_t>& soft, std::vector<uint32_t>& hard);
    void compact_locked();

    Counters& m_counters;
    DataPlaneOptions m_options;
    mutable std::shared_mutex m_mutex;
    std::unordered_map<uint32_t, std::shared_ptr<Child>> m_sad;  // by inbound SPI
    // Inbound SAs removed after a rekey (a newer SA of the same policy remains), still accepted
    // for kRekeyDrainMs: ESP sent on the old SA before the peer's DELETE can reach us after it,
    // since IKE (UDP 500) and raw ESP (IP protocol 50) arrive on different sockets.
    struct Draining {
        std::shared_ptr<Child> child;
        Millis until = 0;  // the caller's clock
    };
    std::unordered_map<uint32_t, Draining> m_draining;  // by inbound SPI
    void purge_draining_locked(Millis now);
    // Lifetime scheduling (docs/esp.md "How lifetimes are scheduled"), all under the unique
    // lock but m_flagged.  A Child SA is named by (inbound SPI, install_order): the SPI finds
    // it in m_sad, the order (unique per install) tells an SA removed since, or an SPI handed
    // out again, from the one meant; such stale entries are skipped when met (lazy deletion).
    struct SaRef {
        uint32_t spi = 0;
        uint64_t order = 0;
    };
    // Time deadlines, a min-heap by (time, install_order): at most one live entry per SA, for
    // its next soft or hard time limit (Child::queued_at); removed SAs leave stale entries,
    // dropped by compact_locked() when they outnumber the live ones.
    struct Deadline {
        Millis at = 0;
        SaRef sa;
    };
    std::vector<Deadline> m_deadlines;
    size_t m_deadlines_stale = 0;
    std::vector<SaRef> m_unstarted;  // installed since the last tick: lifetimes start there
    std::mutex m_flag_mutex;         // protect()/unprotect() append under the shared lock
    std::vector<SaRef> m_flagged;    // a data-path limit crossed: hard/soft pending set
    // Draining SAs in the order they were removed; their `until` never decreases (m_now + a
    // constant), so the front is the next to go.
    struct DrainEntry {
        Millis until = 0;
        SaRef sa;
    };
    std::deque<DrainEntry> m_drain_queue;
    uint64_t m_tick_serial = 0;
    std::atomic<uint64_t> m_tick_examined{0};
    // The latest time a caller passed in (protect/unprotect/tick): remove() has no time of its
    // own (ChildSaBackend), so a rekeyed-away SA drains until this + kRekeyDrainMs.
    void observe(Millis now);
    std::atomic<Millis> m_now{0};
    std::vector<Policy> m_spd;
    // m_spd by policy key (index into m_spd), and the inbound SPIs of the installed SAs of each
    // policy key (one, two while a rekey overlaps): install(), remove() and set_outbound() look
    // up instead of walking the SPD and the SAD (O(SAs) per call: 50,000 SAs, ~5 MB walked per
    // install).  Under the unique lock; check_indexes() verifies them.
    std::unordered_map<uint64_t, size_t> m_spd_index;
    std::unordered_map<uint64_t, std::vector<uint32_t>> m_sas_of_policy;
    // Changes (process-wide unique value) whenever m_spd gains or loses a policy, under the
    // unique lock: protect()'s per-thread flow cache (flow -> index of its first matching
    // policy) is valid only for the generation it was filled in.  Without it every outbound
    // packet scanned the SPD linearly (10,000 Child SAs: 0.03 Gbit/s; docs/esp.md "Many SAs").
    uint64_t m_spd_gen = 0;
    void spd_changed();
    std::atomic<uint64_t>* m_drop[static_cast<size_t>(DropReason::Count)] = {};
    std::atomic<uint64_t>& m_tx_packets;
    std::atomic<uint64_t>& m_tx_bytes;
    std::atomic<uint64_t>& m_rx_packets;
    std::atomic<uint64_t>& m_rx_bytes;
    std::atomic<uint64_t>& m_rx_dummy;
    std::atomic<uint64_t>& m_rx_natt_fixed;
    std::atomic<uint64_t>& m_rx_after_rekey;  // accepted on a draining SA
    std::mutex m_events_mutex;
};

}  // namespace x2sec::esp
