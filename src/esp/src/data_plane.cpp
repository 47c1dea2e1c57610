#include <openssl/rand.h>
#include <algorithm>
#include <array>
#include <atomic>
#include <cstring>
#include <limits>
#include <mutex>
#include <unordered_set>
#include <x2sec/common/log.hpp>
#include <x2sec/esp/data_plane.hpp>
#include <x2sec/esp/natt_checksum.hpp>

namespace x2sec::esp {

struct DataPlane::Child {
    uint32_t reqid = 0, policy_key = 0;
    uint64_t install_order = 0;
    std::string name;
    Lifetime lifetime;
    std::vector<TrafficSelector> ts_local, ts_remote;
    InboundSa in;
    OutboundSa out;
    uint64_t seq_limit = 0;
    Millis installed_at = -1;  // the first tick after install
    Millis queued_at = -1;     // when its live entry in m_deadlines is due; -1: none
    bool soft_timed = false;   // the soft time limit has been reached
    uint64_t examined_in = 0;  // the tick (m_tick_serial) that last examined it
    std::atomic<bool> soft_pending{false}, soft_fired{false}, hard_pending{false};
    Child(uint32_t window, bool esn) : in(window, esn) {}
};

namespace {

// The first time limit of l after `from` (ms), counted from `start`; -1: none.  Saturating:
// a limit beyond the clock's range never falls due (as `age >= limit` never held).
Millis limit_at(uint64_t seconds, Millis start) {
    if (seconds == 0 || start < 0) return -1;
    const Millis max = std::numeric_limits<Millis>::max();
    if (seconds > uint64_t(max - start) / 1000) return -1;
    return start + Millis(seconds) * 1000;
}

// Min-heap order of m_deadlines: earliest first, ties by install order.
struct Later {
    template <typename D>
    bool operator()(const D& a, const D& b) const {
        return a.at != b.at ? a.at > b.at : a.sa.order > b.sa.order;
    }
};

bool ts_match(const std::vector<TrafficSelector>& list, const IpAddress& a, uint8_t proto, uint16_t port) {
    for (const auto& ts : list)
        if (ts.contains(a, proto, port)) return true;
    return false;
}

uint16_t ip_checksum(const uint8_t* p, size_t n) {
    uint32_t sum = 0;
    for (size_t i = 0; i + 1 < n; i += 2) sum += (uint32_t(p[i]) << 8) | p[i + 1];
    if (n & 1) sum += uint32_t(p[n - 1]) << 8;
    while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
    return static_cast<uint16_t>(~sum);
}

}  // namespace

DataPlane::DataPlane(Counters& counters, DataPlaneOptions options)
    : m_counters(counters),
      m_options(options),
      m_tx_packets(counters.counter("esp.tx.packets")),
      m_tx_bytes(counters.counter("esp.tx.bytes")),
      m_rx_packets(counters.counter("esp.rx.packets")),
      m_rx_bytes(counters.counter("esp.rx.bytes")),
      m_rx_dummy(counters.counter("esp.rx.dummy")),
      m_rx_natt_fixed(counters.counter("esp.rx.natt_checksum_fixed")),
      m_rx_after_rekey(counters.counter("esp.rx.after_rekey")) {
    for (size_t i = 0; i < static_cast<size_t>(DropReason::Count); ++i)
        m_drop[i] = &counters.counter(std::string("esp.drop.") + to_string(static_cast<DropReason>(i)));
}

DataPlane::~DataPlane() = default;

void DataPlane::set_events(ChildSaEvents events) {
    std::lock_guard lock(m_events_mutex);
    m_events = std::move(events);
}

Status DataPlane::install(const ChildSaParams& p) {
    if (p.spi_in == 0 || p.spi_out == 0) return Error(ErrorDomain::Esp, 0, "SPI 0 is reserved (RFC 4303 2.1)");
    if (p.mode == IpsecMode::Tunnel && (p.ts_local.empty() || p.ts_remote.empty()))
        return Error(ErrorDomain::Esp, 0, "tunnel-mode Child SA needs local and remote traffic selectors");
    if (p.local_addr.v6 != p.remote_addr.v6) return Error(ErrorDomain::Esp, 0, "outer addresses of different families");
    X2SEC_TRY(auto enc, SaCipher::create(p.cipher, p.keys_out, true));
    X2SEC_TRY(auto dec, SaCipher::create(p.cipher, p.keys_in, false));
    auto c = std::make_shared<Child>(p.replay_window, p.esn);
    c->reqid = p.reqid;
    c->policy_key = p.reqid ? p.reqid : p.spi_in;
    c->name = p.name;
    c->lifetime = p.lifetime;
    c->ts_local = p.ts_local;
    c->ts_remote = p.ts_remote;
    c->in.spi = p.spi_in;
    c->in.reqid = p.reqid;
    c->in.mode = p.mode;
    c->in.local_addr = p.local_addr;
    c->in.remote_addr = p.remote_addr;
    c->in.cipher = std::move(dec);
    c->in.ts_local = p.ts_local;
    c->in.ts_remote = p.ts_remote;
    if (p.mode == IpsecMode::Transport && p.udp_encap) {
        c->in.natt_fixup = true;
        auto single = [&](const std::vector<TrafficSelector>& ts, IpAddress& out) {
            if (ts.size() != 1 || ts[0].start_addr != ts[0].end_addr || ts[0].start_addr.v6 != p.local_addr.v6)
                return false;
            out = ts[0].start_addr;
            return true;
        };
        c->in.have_orig = single(p.ts_remote, c->in.orig_src) && single(p.ts_local, c->in.orig_dst);
    }
    c->out.spi = p.spi_out;
    c->out.spi_in = p.spi_in;
    c->out.esn = p.esn;
    c->out.mode = p.mode;
    c->out.local_addr = p.local_addr;
    c->out.remote_addr = p.remote_addr;
    c->out.local_port = p.local_port;
    c->out.remote_port = p.remote_port;
    c->out.udp_encap = p.udp_encap;
    c->out.cipher = std::move(enc);
    c->seq_limit = p.esn ? UINT64_MAX : UINT32_MAX;

    std::unique_lock lock(m_mutex);
    if (m_sad.count(p.spi_in))
        return Error(ErrorDomain::Esp, 0, "inbound SPI already installed: " + std::to_string(p.spi_in));
    m_draining.erase(p.spi_in);  // an SPI handed out again: the new SA owns it
    static std::atomic<uint64_t> order{0};
    c->install_order = ++order;
    m_sad.emplace(p.spi_in, c);
    m_sas_of_policy[c->policy_key].push_back(p.spi_in);
    m_unstarted.push_back({p.spi_in, c->install_order});
    if (!m_spd_index.count(c->policy_key)) {
        Policy pol;
        pol.key = c->policy_key;
        pol.ts_local = p.ts_local;
        pol.ts_remote = p.ts_remote;
        if (p.mode == IpsecMode::Transport && pol.ts_local.empty()) {
            pol.ts_local.push_back(TrafficSelector::from_prefix(p.local_addr, p.local_addr.v6 ? 128 : 32));
            pol.ts_remote.push_back(TrafficSelector::from_prefix(p.remote_addr, p.remote_addr.v6 ? 128 : 32));
        }
        pol.active = c;
        m_spd_index.emplace(pol.key, m_spd.size());
        m_spd.push_back(std::move(pol));
        spd_changed();
    }
    // else: a rekey; outbound stays on the old SA until set_outbound() or its removal.
    m_counters.inc("esp.sa.installed");
    log::get("esp")->info("installed Child SA {} in {:08x} out {:08x} {} reqid {} ({})", p.name, p.spi_in, p.spi_out,
                          to_string(p.cipher), p.reqid, p.udp_encap ? "ESP in UDP" : "raw ESP");
    return {};
}

Status DataPlane::remove_locked(uint32_t spi_in) {
    auto it = m_sad.find(spi_in);
    if (it == m_sad.end()) return Error(ErrorDomain::Esp, 0, "no such inbound SPI: " + std::to_string(spi_in));
    std::shared_ptr<Child> c = it->second;
    m_sad.erase(it);
    if (c->queued_at >= 0) {
        c->queued_at = -1;
        ++m_deadlines_stale;
    }
    compact_locked();
    std::shared_ptr<Child> next;  // the newest SA left for the same policy: c was rekeyed
    if (auto sp = m_sas_of_policy.find(c->policy_key); sp != m_sas_of_policy.end()) {
        auto& spis = sp->second;
        spis.erase(std::remove(spis.begin(), spis.end(), spi_in), spis.end());
        for (uint32_t spi : spis)
            if (auto o = m_sad.find(spi); o != m_sad.end() && (!next || o->second->install_order > next->install_order))
                next = o->second;
        if (spis.empty()) m_sas_of_policy.erase(sp);
    }
    if (auto pi = m_spd_index.find(c->policy_key); pi != m_spd_index.end() && m_spd[pi->second].active == c) {
        if (next) {
            m_spd[pi->second].active = next;
        } else {
            const size_t idx = pi->second;
            m_spd_index.erase(pi);
            m_spd.erase(m_spd.begin() + static_cast<std::ptrdiff_t>(idx));
            for (size_t i = idx; i < m_spd.size(); ++i) m_spd_index[m_spd[i].key] = i;
            spd_changed();
        }
    }
    const Millis now = m_now.load(std::memory_order_relaxed);
    purge_draining_locked(now);
    if (next) {
        m_draining[spi_in] = Draining{c, now + kRekeyDrainMs};
        m_drain_queue.push_back({now + kRekeyDrainMs, {spi_in, c->install_order}});
    }
    m_counters.inc("esp.sa.removed");
    log::get("esp")->info("removed Child SA in {:08x} out {:08x}", c->in.spi, c->out.spi);
    return {};
}

void DataPlane::observe(Millis now) {
    Millis seen = m_now.load(std::memory_order_relaxed);
    while (now > seen && !m_now.compare_exchange_weak(seen, now, std::memory_order_relaxed)) {
    }
}

void DataPlane::purge_draining_locked(Millis now) {
    while (!m_drain_queue.empty() && m_drain_queue.front().until <= now) {
        const DrainEntry e = m_drain_queue.front();
        m_drain_queue.pop_front();
        // Skip it if that SPI was installed again (the new SA owns it) or drains another SA.
        auto it = m_draining.find(e.sa.spi);
        if (it != m_draining.end() && it->second.child->install_order == e.sa.order && it->second.until <= now)
            m_draining.erase(it);
    }
}

void DataPlane::compact_locked() {
    // Stale deadlines of removed SAs: dropped once they are more than half of the heap, so it
    // holds at most twice the live ones plus a constant, at O(1) amortized per removal.
    if (m_deadlines_stale > 1024 && m_deadlines_stale * 2 > m_deadlines.size()) {
        auto live = [&](const Deadline& d) {
            auto it = m_sad.find(d.sa.spi);
            return it != m_sad.end() && it->second->install_order == d.sa.order && it->second->queued_at == d.at;
        };
        std::erase_if(m_deadlines, [&](const Deadline& d) { return !live(d); });
        std::make_heap(m_deadlines.begin(), m_deadlines.end(), Later{});
        m_deadlines_stale = 0;
    }
    // Installed and removed again without a tick in between (a data plane nobody ticks).
    if (m_unstarted.size() > 2 * m_sad.size() + 1024) {
        std::erase_if(m_unstarted, [&](const SaRef& r) {
            auto it = m_sad.find(r.spi);
            return it == m_sad.end() || it->second->install_order != r.order;
        });
    }
}

Status DataPlane::remove(uint32_t spi_in) {
    std::unique_lock lock(m_mutex);
    return remove_locked(spi_in);
}

Status DataPlane::set_outbound(uint32_t old_spi_in, uint32_t new_spi_in) {
    std::unique_lock lock(m_mutex);
    auto it = m_sad.find(new_spi_in);
    if (it == m_sad.end())
        return Error(ErrorDomain::Esp, 0, "set_outbound: no such inbound SPI: " + std::to_string(new_spi_in));
    if (auto pi = m_spd_index.find(it->second->policy_key); pi != m_spd_index.end()) {
        m_spd[pi->second].active = it->second;
        m_counters.inc("esp.sa.outbound_switched");
        log::get("esp")->info("outbound switched from Child SA {:08x} to {:08x}", old_spi_in, new_spi_in);
        return {};
    }
    return Error(ErrorDomain::Esp, 0, "set_outbound: no policy for SPI " + std::to_string(new_spi_in));
}

void DataPlane::check_soft(Child& c, bool outbound) {
    const Lifetime& l = c.lifetime;
    const SaUsage& u = outbound ? c.out.usage : c.in.usage;
    uint64_t bytes = u.bytes.load(std::memory_order_relaxed);
    uint64_t packets = u.packets.load(std::memory_order_relaxed);
    if ((l.hard_bytes && bytes >= l.hard_bytes) || (l.hard_packets && packets >= l.hard_packets))
        raise(c, c.hard_pending);
    else if (!c.soft_fired.load(std::memory_order_relaxed) &&
             ((l.soft_bytes && bytes >= l.soft_bytes) || (l.soft_packets && packets >= l.soft_packets)))
        raise(c, c.soft_pending);
}

void DataPlane::raise(Child& c, std::atomic<bool>& flag) {
    // protect() and unprotect() may raise the same flag at once: exchange() lets one queue it.
    if (flag.load(std::memory_order_relaxed) || flag.exchange(true, std::memory_order_relaxed)) return;
    std::lock_guard lock(m_flag_mutex);
    m_flagged.push_back({c.in.spi, c.install_order});
}

namespace {
// protect()'s flow cache, one per thread (TX threads call protect() concurrently under the
// shared lock): direct-mapped by a hash of the flow; an entry names the DataPlane and SPD
// generation it was filled for, so a stale one is never used.
struct SpdCacheEntry {
    const void* owner = nullptr;
    uint64_t gen = 0;
    size_t idx = 0;
    IpAddress src, dst;
    uint8_t proto = 0;
    uint16_t src_port = 0, dst_port = 0;
};
SpdCacheEntry& spd_cache_slot(const IpFlow& f) {
    thread_local std::array<SpdCacheEntry, 256> cache;
    uint64_t h = 1469598103934665603ULL;  // FNV-1a over the flow
    auto mix = [&](uint8_t b) { h = (h ^ b) * 1099511628211ULL; };
    for (size_t i = 0; i < f.src.size(); ++i) mix(f.src.bytes[i]);
    for (size_t i = 0; i < f.dst.size(); ++i) mix(f.dst.bytes[i]);
    mix(f.proto);
    mix(static_cast<uint8_t>(f.src_port));
    mix(static_cast<uint8_t>(f.src_port >> 8));
    mix(static_cast<uint8_t>(f.dst_port));
    mix(static_cast<uint8_t>(f.dst_port >> 8));
    return cache[(h ^ (h >> 32)) & 255];
}
}  // namespace

void DataPlane::spd_changed() {
    static std::atomic<uint64_t> generation{0};
    m_spd_gen = ++generation;
}

DataPlane::ProtectResult DataPlane::protect(std::span<uint8_t> buf, size_t ip_len, Millis now) {
    observe(now);
    ProtectResult r;
    auto fail = [&](DropReason why) {
        drop(why);
        r.reason = why;
        return r;
    };
    if (buf.size() < kMaxHeadroom + ip_len + kMaxTailroom) return fail(DropReason::TooBig);
    uint8_t* ip = buf.data() + kMaxHeadroom;
    IpFlow f;
    if (!parse_ip(ip, ip_len, f)) return fail(DropReason::Malformed);
    std::shared_lock lock(m_mutex);
    const Policy* pol = nullptr;
    SpdCacheEntry& ce = spd_cache_slot(f);
    if (ce.owner == this && ce.gen == m_spd_gen && ce.idx < m_spd.size() && ce.proto == f.proto &&
        ce.src_port == f.src_port && ce.dst_port == f.dst_port && ce.src == f.src && ce.dst == f.dst) {
        pol = &m_spd[ce.idx];
    } else {
        for (size_t i = 0; i < m_spd.size(); ++i) {
            const Policy& p = m_spd[i];
            if (ts_match(p.ts_local, f.src, f.proto, f.src_port) && ts_match(p.ts_remote, f.dst, f.proto, f.dst_port)) {
                pol = &p;
                ce = {this, m_spd_gen, i, f.src, f.dst, f.proto, f.src_port, f.dst_port};
                break;
            }
        }
    }
    if (!pol) return fail(DropReason::NoPolicy);
    Child& c = *pol->active;
    OutboundSa& o = c.out;
    if (c.hard_pending.load(std::memory_order_relaxed)) return fail(DropReason::Expired);
    uint64_t last = o.seq.load(std::memory_order_relaxed);
    if (last >= c.seq_limit) {
        raise(c, c.soft_pending);
        return fail(DropReason::SeqExhausted);
    }
    size_t payload_off = kMaxHeadroom, payload_len = f.total_len;
    uint8_t nh = f.src.v6 ? kNextIpv6 : kNextIpv4;
    if (o.mode == IpsecMode::Transport) {
        payload_off += f.header_len;
        payload_len -= f.header_len;
        nh = f.proto;
    }
    uint64_t seq = last + 1;
    // GCM: the IV comes from the SA's invocation counter (unique per key, RFC 4106 3.1).
    // CBC: an unpredictable IV (RFC 3602 2.3).
    uint8_t iv[16];
    const uint8_t* ivp = nullptr;
    if (!o.cipher->aead()) {
        if (RAND_bytes(iv, 16) != 1) return fail(DropReason::Crypto);
        ivp = iv;
    }
    size_t n = seal(*o.cipher, o.spi, seq, o.esn, ivp, nh, buf, payload_off, payload_len);
    if (n == 0) return fail(DropReason::Crypto);
    o.seq.store(seq, std::memory_order_relaxed);
    o.usage.bytes.fetch_add(payload_len, std::memory_order_relaxed);
    o.usage.packets.fetch_add(1, std::memory_order_relaxed);
    if (c.seq_limit - seq <= m_options.seq_soft_margin && !c.soft_fired.load(std::memory_order_relaxed))
        raise(c, c.soft_pending);
    if (c.lifetime.soft_bytes | c.lifetime.hard_bytes | c.lifetime.soft_packets | c.lifetime.hard_packets)
        check_soft(c, true);
    m_tx_packets.fetch_add(1, std::memory_order_relaxed);
    m_tx_bytes.fetch_add(n, std::memory_order_relaxed);
    r.ok = true;
    r.esp_off = payload_off - 8 - o.cipher->iv_len();
    r.esp_len = n;
    r.local_addr = o.local_addr;
    r.remote_addr = o.remote_addr;
    r.local_port = o.local_port;
    r.remote_port = o.remote_port;
    r.spi = o.spi;
    r.udp_encap = o.udp_encap;
    return r;
}

DataPlane::UnprotectResult DataPlane::unprotect(std::span<uint8_t> buf, size_t off, size_t len, Millis now) {
    observe(now);
    UnprotectResult r;
    auto fail = [&](DropReason why) {
        drop(why);
        r.reason = why;
        return r;
    };
    if (off > buf.size() || len > buf.size() - off) return fail(DropReason::TooBig);
    if (len < 8) return fail(DropReason::Truncated);
    uint8_t* esp = buf.data() + off;
    uint32_t spi = load_be32(esp);
    r.spi = spi;
    std::shared_lock lock(m_mutex);
    Child* found = nullptr;
    bool draining = false;  // sent before the rekey's DELETE, arriving after it
    if (auto it = m_sad.find(spi); it != m_sad.end()) {
        found = it->second.get();
    } else if (auto d = m_draining.find(spi); d != m_draining.end() && now < d->second.until) {
        found = d->second.child.get();
        draining = true;
    }
    if (found == nullptr) return fail(DropReason::UnknownSpi);
    Child& c = *found;
    InboundSa& in = c.in;
    if (c.hard_pending.load(std::memory_order_relaxed)) return fail(DropReason::Expired);
    uint64_t seq = 0;
    switch (in.replay.check(load_be32(esp + 4), &seq)) {
        case ReplayWindow::Verdict::Ok:
            break;
        case ReplayWindow::Verdict::Replayed:
            return fail(DropReason::Replay);
        case ReplayWindow::Verdict::TooOld:
            return fail(DropReason::ReplayOld);
        case ReplayWindow::Verdict::Zero:
            return fail(DropReason::SeqZero);
    }
    OpenResult o = open(*in.cipher, in.replay.esn(), seq, std::span<uint8_t>(esp, len));
    if (!o.ok) return fail(o.reason);
    // Authenticated: only now may the window move (RFC 4303 3.4.3).
    in.replay.update(seq);
    in.usage.bytes.fetch_add(o.payload_len, std::memory_order_relaxed);
    in.usage.packets.fetch_add(1, std::memory_order_relaxed);
    if (c.lifetime.soft_bytes | c.lifetime.hard_bytes | c.lifetime.soft_packets | c.lifetime.hard_packets)
        check_soft(c, false);
    m_rx_packets.fetch_add(1, std::memory_order_relaxed);
    if (draining) m_rx_after_rekey.fetch_add(1, std::memory_order_relaxed);
    m_rx_bytes.fetch_add(len, std::memory_order_relaxed);
    if (o.next_header == kNextNone) {
        m_rx_dummy.fetch_add(1, std::memory_order_relaxed);
        r.ok = true;
        r.dummy = true;
        return r;
    }
    size_t ip_off = off + o.payload_off, ip_len = o.payload_len;
    if (in.mode == IpsecMode::Tunnel) {
        if (o.next_header != kNextIpv4 && o.next_header != kNextIpv6) return fail(DropReason::BadNextHeader);
    } else {
        // Transport: rebuild the IP header from the outer addresses in front of the payload.
        size_t h = in.remote_addr.v6 ? 40 : 20;
        if (ip_off < h || ip_len + h > 65535) return fail(DropReason::TooBig);
        ip_off -= h;
        uint8_t* p = buf.data() + ip_off;
        std::memset(p, 0, h);
        if (!in.remote_addr.v6) {
            size_t total = ip_len + 20;
            p[0] = 0x45;
            p[2] = uint8_t(total >> 8);
            p[3] = uint8_t(total);
            p[8] = 64;
            p[9] = o.next_header;
            std::memcpy(p + 12, in.remote_addr.bytes.data(), 4);
            std::memcpy(p + 16, in.local_addr.bytes.data(), 4);
            uint16_t sum = ip_checksum(p, 20);
            p[10] = uint8_t(sum >> 8);
            p[11] = uint8_t(sum);
        } else {
            p[0] = 0x60;
            p[4] = uint8_t(ip_len >> 8);
            p[5] = uint8_t(ip_len);
            p[6] = o.next_header;
            p[7] = 64;
            std::memcpy(p + 8, in.remote_addr.bytes.data(), 16);
            std::memcpy(p + 24, in.local_addr.bytes.data(), 16);
        }
        ip_len += h;
    }
    if (in.natt_fixup) {
        // RFC 3948 3.1.2: the rebuilt header carries the (possibly NATed) outer addresses,
        // the peer's checksum its original ones.
        ChecksumFix fix = fix_transport_checksum(buf.data() + ip_off, ip_len, in.have_orig ? &in.orig_src : nullptr,
                                                 in.have_orig ? &in.orig_dst : nullptr);
        if (fix != ChecksumFix::None) m_rx_natt_fixed.fetch_add(1, std::memory_order_relaxed);
    }
    IpFlow f;
    if (!parse_ip(buf.data() + ip_off, ip_len, f)) return fail(DropReason::Malformed);
    if (in.have_orig) {  // selectors name the original addresses (RFC 7296 2.23.1)
        f.src = in.orig_src;
        f.dst = in.orig_dst;
    }
    if (in.mode == IpsecMode::Tunnel && (f.src.v6 != (o.next_header == kNextIpv6)))
        return fail(DropReason::BadNextHeader);
    // RFC 4301 5.2: the inner packet must match the SA's selectors.
    if (in.mode == IpsecMode::Tunnel || !in.ts_local.empty()) {
        if (!ts_match(in.ts_remote, f.src, f.proto, f.src_port) || !ts_match(in.ts_local, f.dst, f.proto, f.dst_port))
            return fail(DropReason::Policy);
    }
    r.ok = true;
    r.ip_off = ip_off;
    r.ip_len = f.total_len;
    return r;
}

void DataPlane::examine_locked(Child& c, Millis now, std::vector<uint32_t>& soft, std::vector<uint32_t>& hard) {
    // Met twice in one tick (say due and flagged): its event is raised once.
    const bool first = c.examined_in != m_tick_serial;
    c.examined_in = m_tick_serial;
    m_tick_examined.fetch_add(1, std::memory_order_relaxed);
    if (c.installed_at < 0) c.installed_at = now;
    const Lifetime& l = c.lifetime;
    const Millis soft_at = limit_at(l.soft_seconds, c.installed_at), hard_at = limit_at(l.hard_seconds, c.installed_at);
    if (hard_at >= 0 && now >= hard_at) c.hard_pending = true;
    if (soft_at >= 0 && now >= soft_at) {
        c.soft_pending = true;
        c.soft_timed = true;
    }
    if (c.hard_pending) {
        if (first) hard.push_back(c.in.spi);
        return;  // removed by the caller
    }
    if (first && c.soft_pending && !c.soft_fired) {
        c.soft_fired = true;
        soft.push_back(c.in.spi);
    }
    if (c.queued_at >= 0) return;  // its next deadline is queued already
    Millis next = hard_at;
    if (soft_at >= 0 && !c.soft_timed && (next < 0 || soft_at < next)) next = soft_at;
    if (next < 0) return;  // no time limits
    c.queued_at = next;
    m_deadlines.push_back({next, {c.in.spi, c.install_order}});
    std::push_heap(m_deadlines.begin(), m_deadlines.end(), Later{});
}

void DataPlane::tick(Millis now) {
    observe(now);
    std::vector<uint32_t> soft, hard;
    {
        std::unique_lock lock(m_mutex);
        purge_draining_locked(now);
        ++m_tick_serial;
        auto child = [&](const SaRef& r) -> Child* {
            auto it = m_sad.find(r.spi);
            return it != m_sad.end() && it->second->install_order == r.order ? it->second.get() : nullptr;
        };
        // Lifetimes start now for the SAs installed since the last tick.
        for (const SaRef& r : m_unstarted)
            if (Child* c = child(r)) examine_locked(*c, now, soft, hard);
        m_unstarted.clear();
        // Time deadlines due, earliest first.
        while (!m_deadlines.empty() && m_deadlines.front().at <= now) {
            std::pop_heap(m_deadlines.begin(), m_deadlines.end(), Later{});
            const Deadline d = m_deadlines.back();
            m_deadlines.pop_back();
            Child* c = child(d.sa);
            if (c == nullptr || c->queued_at != d.at) {  // removed (or rekeyed away) since
                m_tick_examined.fetch_add(1, std::memory_order_relaxed);
                if (m_deadlines_stale > 0) --m_deadlines_stale;
                continue;
            }
            c->queued_at = -1;
            examine_locked(*c, now, soft, hard);
        }
        // Byte, packet and sequence-number limits the data path crossed since the last tick.
        std::vector<SaRef> flagged;
        {
            std::lock_guard flock(m_flag_mutex);
            flagged.swap(m_flagged);
        }
        for (const SaRef& r : flagged)
            if (Child* c = child(r)) examine_locked(*c, now, soft, hard);
        for (uint32_t spi : hard) (void)remove_locked(spi);
    }
    if (soft.empty() && hard.empty()) return;
    ChildSaEvents ev;
    {
        std::lock_guard lock(m_events_mutex);
        ev = m_events;
    }
    m_counters.inc("esp.sa.soft_expired", soft.size());
    m_counters.inc("esp.sa.hard_expired", hard.size());
    for (uint32_t spi : soft) {
        log::get("esp")->info("Child SA {:08x} reached a soft limit: asking for a rekey", spi);
        if (ev.soft_expired) ev.soft_expired(spi);
    }
    for (uint32_t spi : hard) {
        log::get("esp")->info("Child SA {:08x} reached a hard limit: removed", spi);
        if (ev.hard_expired) ev.hard_expired(spi);
    }
}

Status DataPlane::set_outbound_seq(uint32_t spi_in, uint64_t seq) {
    std::unique_lock lock(m_mutex);
    auto it = m_sad.find(spi_in);
    if (it == m_sad.end()) return Error(ErrorDomain::Esp, 0, "no such inbound SPI: " + std::to_string(spi_in));
    it->second->out.seq.store(seq);
    return {};
}

std::vector<ChildSaStatus> DataPlane::status() const {
    std::shared_lock lock(m_mutex);
    std::vector<ChildSaStatus> out;
    out.reserve(m_sad.size());
    // The SAs carrying outbound traffic, once: a look-up per SA instead of a walk over the SPD
    // (the TUN backend calls status() for NAT keepalives; 10,000 SAs made that 10^8 steps).
    std::unordered_set<const Child*> active;
    active.reserve(m_spd.size());
    for (const auto& p : m_spd) active.insert(p.active.get());
    for (const auto& [spi, c] : m_sad) {
        ChildSaStatus s;
        s.spi_in = spi;
        s.spi_out = c->out.spi;
        s.reqid = c->reqid;
        s.name = c->name;
        s.outbound_active = active.count(c.get()) != 0;
        s.in_bytes = c->in.usage.bytes;
        s.in_packets = c->in.usage.packets;
        s.out_bytes = c->out.usage.bytes;
        s.out_packets = c->out.usage.packets;
        s.out_seq = c->out.seq;
        s.replay_top = c->in.replay.top();
        s.soft_fired = c->soft_fired;
        s.hard_expired = c->hard_pending;
        s.remote_addr = c->out.remote_addr;
        s.remote_port = c->out.remote_port;
        s.udp_encap = c->out.udp_encap;
        out.push_back(s);
    }
    std::sort(out.begin(), out.end(), [](auto& a, auto& b) { return a.spi_in < b.spi_in; });
    return out;
}

size_t DataPlane::sa_count() const {
    std::shared_lock lock(m_mutex);
    return m_sad.size();
}

size_t DataPlane::draining_count() const {
    std::shared_lock lock(m_mutex);
    return m_draining.size();
}

std::string DataPlane::check_indexes() const {
    std::shared_lock lock(m_mutex);
    if (m_spd_index.size() != m_spd.size())
        return "SPD index has " + std::to_string(m_spd_index.size()) + " entries, SPD " + std::to_string(m_spd.size());
    for (size_t i = 0; i < m_spd.size(); ++i) {
        auto pi = m_spd_index.find(m_spd[i].key);
        if (pi == m_spd_index.end() || pi->second != i)
            return "SPD index misses policy " + std::to_string(m_spd[i].key);
    }
    size_t indexed = 0;
    for (const auto& [key, spis] : m_sas_of_policy) {
        if (spis.empty()) return "empty SA list for policy " + std::to_string(key);
        for (uint32_t spi : spis) {
            auto it = m_sad.find(spi);
            if (it == m_sad.end() || it->second->policy_key != key)
                return "SA index names SPI " + std::to_string(spi) + " wrongly";
        }
        indexed += spis.size();
    }
    if (indexed != m_sad.size())
        return "SA index has " + std::to_string(indexed) + " SPIs, SAD " + std::to_string(m_sad.size());
    return {};
}

}  // namespace x2sec::esp
