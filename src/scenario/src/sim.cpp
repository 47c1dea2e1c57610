// x2sec sim: see sim.hpp.
#include <x2sec/scenario/sim.hpp>

#include <algorithm>
#include <ctime>
#include <functional>
#include <iomanip>
#include <queue>
#include <sstream>
#include <x2sec/common/event_queue.hpp>
#include <x2sec/common/log.hpp>
#include <x2sec/common/rng.hpp>
#include <x2sec/node/agent.hpp>

#include <openssl/pem.h>

#include <x2sec/cmp/client.hpp>
#include <x2sec/cmp/server.hpp>
#include <x2sec/cmp/store.hpp>
#include <x2sec/esp/data_plane.hpp>
#include <x2sec/esp/memory_backend.hpp>
#include <x2sec/ikev2/engine.hpp>
#include <x2sec/kds/protocol.hpp>
#include <x2sec/kds/server.hpp>
#include <x2sec/scenario/lab_pki.hpp>
#include <x2sec/scenario/x2_traffic.hpp>
#include <x2sec/pki/pki.hpp>
#include <x2sec/x509/x509.hpp>

#include <x2sec/node/ike_glue.hpp>

#include "operations.hpp"

namespace x2sec::scenario {

using namespace x2sec::node;  // the agent and its types

namespace {

const char* kVendorLabels[] = {"vendor-a", "vendor-b", "vendor-c", "vendor-d", "vendor-e", "vendor-f"};
const char* kVendorNames[] = {"Vendor A", "Vendor B", "Vendor C", "Vendor D", "Vendor E", "Vendor F"};

// Deterministic choices from the seed (not for keys).
struct Dice {
    DeterministicRng rng;
    explicit Dice(uint64_t seed) : rng(seed) {}
    double uniform() { return double(rng.u32()) / 4294967296.0; }
    uint32_t below(uint32_t n) { return n ? rng.u32() % n : 0; }
};

Status validate(const SimOptions& o) {
    if (o.nodes.empty()) {
        if (o.node_count < 2 || o.node_count > 500)
            return Error(ErrorDomain::Config, 0, "sim: --nodes must be 2..500, got " + std::to_string(o.node_count));
        if (o.degree < 2 || o.degree > 16 || o.degree % 2)
            return Error(ErrorDomain::Config, 0, "sim: --degree must be even, 2..16, got " + std::to_string(o.degree));
        if (o.degree >= o.node_count && o.node_count > 2)
            return Error(ErrorDomain::Config, 0, "sim: --degree must be below --nodes");
        if (o.vendors < 1 || o.vendors > 6)
            return Error(ErrorDomain::Config, 0, "sim: --vendors must be 1..6, got " + std::to_string(o.vendors));
        for (double s : {o.cmp_share, o.ipsec_off_share, o.psk_share, o.hint_share})
            if (s < 0 || s > 1) return Error(ErrorDomain::Config, 0, "sim: shares must be within 0..1");
        if (o.ipsec_off_share + o.psk_share > 1)
            return Error(ErrorDomain::Config, 0, "sim: --ipsec-off + --psk shares exceed 1");
    } else {
        if (o.nodes.size() < 2 || o.nodes.size() > 500) return Error(ErrorDomain::Config, 0, "sim: 2..500 nodes");
        for (auto& n : o.nodes)
            if (n.vendor >= 6) return Error(ErrorDomain::Config, 0, "sim: vendor index must be < 6");
        for (auto& r : o.relations)
            if (r.a >= o.nodes.size() || r.b >= o.nodes.size() || r.a == r.b)
                return Error(ErrorDomain::Config, 0, "sim: relation names an unknown node or a node with itself");
    }
    if (o.duration_ms <= 0 || o.duration_ms > 24 * 3600 * 1000LL)
        return Error(ErrorDomain::Config, 0, "sim: --duration must be 1 s .. 24 h");
    if (o.latency_ms < 0 || o.core_latency_ms < 0) return Error(ErrorDomain::Config, 0, "sim: negative latency");
    return {};
}

// The topology: explicit, or generated from the seed (ring lattice, mixed vendors/policies).
[[maybe_unused]] void build_topology(const SimOptions& o, std::vector<SimNode>& nodes, std::vector<SimRelation>& rels) {
    if (!o.nodes.empty()) {
        nodes = o.nodes;
        rels = o.relations;
        return;
    }
    Dice d(o.seed * 0x9e3779b97f4a7c15ULL + 1);
    nodes.resize(o.node_count);
    for (auto& n : nodes) {
        n.vendor = d.below(o.vendors);
        n.cmp = d.uniform() < o.cmp_share;
    }
    for (unsigned i = 0; i < o.node_count; ++i)
        for (unsigned k = 1; k <= o.degree / 2; ++k) {
            unsigned j = (i + k) % o.node_count;
            if (i == j) continue;
            bool dup = false;
            for (auto& r : rels) dup |= (r.a == j && r.b == i) || (r.a == i && r.b == j);
            if (dup) continue;
            SimRelation r;
            r.a = std::min(i, j);
            r.b = std::max(i, j);
            double u = d.uniform();
            if (u < o.ipsec_off_share) {
                r.ipsec = policy::IpsecPolicy::Off;
            } else if (u < o.ipsec_off_share + o.psk_share) {
                r.auth = policy::AuthMode::PskFromNetwork;
            } else {
                r.auth = d.uniform() < 0.5 ? policy::AuthMode::Auto : policy::AuthMode::Certificate;
                // Where the CAs differ and a side cannot enrol, nothing a peer shows in IKE tells
                // the other side that a PSK is wanted: the operator configures the facts.
                bool differ = nodes[r.a].vendor != nodes[r.b].vendor;
                r.hint = d.uniform() < o.hint_share || (differ && (!nodes[r.a].cmp || !nodes[r.b].cmp));
            }
            rels.push_back(r);
        }
    // The KDS refuses the first `kds_refuse` PSK relations (in order).
    unsigned refused = 0;
    for (auto& r : rels)
        if (refused < o.kds_refuse && r.auth == policy::AuthMode::PskFromNetwork) {
            r.kds_authorised = false;
            ++refused;
        }
}

[[maybe_unused]] std::string node_name(unsigned i) {
    std::ostringstream o;
    o << "henb-" << std::setw(3) << std::setfill('0') << i;
    return o.str();
}

}  // namespace

namespace {

using glue::IkeSide;

IpAddress node_addr(unsigned i) {
    // 500 nodes at most: 198.51.100.1-250 then 203.0.113.1-250 (documentation ranges).
    return i < 250 ? IpAddress::v4(198, 51, 100, uint8_t(i + 1)) : IpAddress::v4(203, 0, 113, uint8_t(i - 249));
}
const IpAddress kSegwAddr = IpAddress::v4(192, 0, 2, 1);
constexpr uint16_t kIkePort = 500;

Result<pki::X509Ptr> pem_x509(const std::string& pem) {
    pki::BioPtr b(BIO_new_mem_buf(pem.data(), int(pem.size())));
    X509* x = PEM_read_bio_X509(b.get(), nullptr, nullptr, nullptr);
    if (!x) return Error(ErrorDomain::Pki, 0, "cannot parse a PEM certificate");
    return pki::X509Ptr(x);
}

struct Relation {
    SimRelation cfg;
    std::string outcome = "pending";
    Millis settled_at = 0;
};

// The virtual-clock fabric: datagrams in memory with a fixed latency, the RA/CA and the KDS
// called in process; m_now advances only with message latency.
class SimWorld final : public Fabric {
public:
    explicit SimWorld(const SimOptions& o) : m_opt(o) {}

    // Fabric
    Millis now() override { return m_now; }
    double clock_ms() override { return double(m_now); }
    Agent& agent(const std::string& henb) override { return *m_nodes.at(m_index.at(henb)).agent; }
    NodeKeys& keys(const std::string& henb) override { return m_nodes.at(m_index.at(henb)); }
    bool has_kds() const override { return true; }
    Result<Carried> backhaul(const policy::HenbConfig& h) override;
    Result<Enrolled> enrol(const policy::HenbConfig& h) override;
    Result<FetchedKey> fetch_key(const policy::HenbConfig& h, const policy::NeighbourConfig& n) override;
    Result<Carried> ike(IkeAttempt& attempt) override;

    Status build();
    void run();
    SimReport report();

private:
    struct Node : NodeKeys {
        std::string name, identity;
        IpAddress addr;
        SimNode cfg;
        std::unique_ptr<Counters> counters;
        std::unique_ptr<esp::DataPlane> dp;
        std::unique_ptr<ChildSaEventQueue> expiries;  // dp's lifetime events, delivered on the sim's loop
        std::unique_ptr<DeterministicRng> rng;
        std::unique_ptr<ike::Engine> engine;
        std::vector<ike::Event> events;
        std::unique_ptr<Agent> agent;
        std::vector<std::pair<unsigned, size_t>> neighbours;  // node, relation index
        Millis free_at = 0;
        bool revoked = false;
    };
    struct Wake {
        Millis at;
        uint64_t seq;
        int node;
        int rel;  // -1: boot/backhaul, -2: revocation
        bool operator>(const Wake& o) const { return at != o.at ? at > o.at : seq > o.seq; }
    };

    bool exchange(unsigned a, std::optional<unsigned> b, const std::string& cls, const std::function<bool()>& done,
                  const std::function<bool()>& failed, glue::CertreqGuard* guard);
    void teardown(unsigned a, unsigned b);
    void carry_x2(size_t r);
    void settle(size_t r, Millis now);
    void push(Millis at, int node, int rel) { m_wakes.push(Wake{at, m_seq++, node, rel}); }
    Millis rtt_core() const { return 2 * (m_opt.latency_ms + m_opt.core_latency_ms); }
    std::vector<std::pair<std::string, std::string>> anchors_of(const Node& n) const;
    void revoke_now();

    SimOptions m_opt;
    std::vector<Node> m_nodes;
    std::map<std::string, unsigned> m_index;  // node name -> index in m_nodes
    std::vector<Relation> m_rels;
    std::unique_ptr<LabCa> m_operator;
    std::vector<LabCa> m_vendor_cas;
    LabCredential m_segw_cred;
    std::unique_ptr<Counters> m_segw_counters;
    std::unique_ptr<esp::DataPlane> m_segw_dp;
    std::unique_ptr<ChildSaEventQueue> m_segw_expiries;
    std::unique_ptr<DeterministicRng> m_segw_rng;
    std::unique_ptr<ike::Engine> m_segw;
    std::vector<ike::Event> m_segw_events;
    std::unique_ptr<cmp::Store> m_store;
    std::unique_ptr<cmp::Server> m_ra;
    std::unique_ptr<DeterministicRng> m_kds_rng;
    std::unique_ptr<kds::Server> m_kds;
    std::optional<x509::Crl> m_crl;
    std::vector<std::pair<std::string, std::string>> m_all_anchors;  // label, PEM
    int64_t m_unix0 = 0;

    Millis m_now = 0;  // the virtual clock (the cursor of the exchange being run)
    uint64_t m_seq = 0;
    std::priority_queue<Wake, std::vector<Wake>, std::greater<Wake>> m_wakes;
    std::map<std::string, SimTraffic> m_traffic;
    std::map<std::string, size_t> m_counters;
    std::vector<std::string> m_faults;
    size_t m_x2_sent = 0, m_x2_delivered = 0;
};

std::vector<std::pair<std::string, std::string>> SimWorld::anchors_of(const Node& n) const {
    std::vector<std::pair<std::string, std::string>> out;
    out.emplace_back(kVendorLabels[n.cfg.vendor], m_vendor_cas[n.cfg.vendor].root_pem());
    out.emplace_back("operator", m_operator->root_pem());
    return out;
}

Status SimWorld::build() {
    std::vector<SimNode> nodes;
    std::vector<SimRelation> rels;
    build_topology(m_opt, nodes, rels);
    m_unix0 = SystemClock{}.unix_seconds();
    int64_t nb = m_unix0 - 3600;
    unsigned vendors = 1;
    for (auto& n : nodes) vendors = std::max(vendors, n.vendor + 1);
    for (unsigned v = 0; v < vendors; ++v) {
        X2SEC_TRY(LabCa ca, LabCa::create(std::string(kVendorNames[v]) + " Root CA", kVendorNames[v], nb, 3650));
        m_all_anchors.emplace_back(kVendorLabels[v], ca.root_pem());
        m_vendor_cas.push_back(std::move(ca));
    }
    X2SEC_TRY(LabCa op, LabCa::create("Operator Root CA", "Operator", nb, 3650));
    m_operator = std::make_unique<LabCa>(std::move(op));
    m_all_anchors.emplace_back("operator", m_operator->root_pem());
    X2SEC_TRY(m_segw_cred, m_operator->issue("segw.operator.example", nb, 365));

    // ---------------------------------------------------------------- RA/CA (in process)
    X2SEC_TRY(m_store, cmp::open_sqlite_store(":memory:"));
    cmp::ServerConfig sc;
    sc.ca_cert = pki::up_ref(m_operator->cert());
    sc.ca_key = pki::up_ref(m_operator->key());
    X2SEC_TRY(auto ra, m_operator->issue("ra.operator.example", nb, 365));
    X2SEC_TRY(sc.ra_cert, pem_x509(ra.cert_pem));
    X2SEC_TRY(sc.ra_key, pki::private_key_from_pem(ra.key_pem.view()));
    sc.ra_chain.push_back(pki::up_ref(m_operator->cert()));
    for (auto& ca : m_vendor_cas) sc.vendor_roots.push_back(pki::up_ref(ca.cert()));
    m_ra = std::make_unique<cmp::Server>(std::move(sc), *m_store);

    // ---------------------------------------------------------------- the H(e)NBs
    m_nodes.resize(nodes.size());
    for (unsigned i = 0; i < nodes.size(); ++i) {
        Node& n = m_nodes[i];
        n.cfg = nodes[i];
        n.name = node_name(i);
        m_index[n.name] = i;
        n.identity = eui48_fqdn((uint64_t(0x0023a1 + n.cfg.vendor) << 24) | i,
                                std::string("henb.") + kVendorLabels[n.cfg.vendor] + ".example");
        n.addr = node_addr(i);
        X2SEC_TRY(n.vendor, m_vendor_cas[n.cfg.vendor].issue(n.identity, nb, 365));
    }
    // KDS: every IPsec relation is an authorised pair unless a fault says otherwise.
    kds::ServerConfig kc;
    for (auto& n : m_nodes) kc.nodes.push_back({n.name, n.identity});
    for (auto& r : rels) {
        Relation rel;
        rel.cfg = r;
        m_rels.push_back(rel);
        size_t idx = m_rels.size() - 1;
        m_nodes[r.a].neighbours.emplace_back(r.b, idx);
        m_nodes[r.b].neighbours.emplace_back(r.a, idx);
        if (r.ipsec == policy::IpsecPolicy::Required && r.kds_authorised)
            kc.relations.emplace_back(m_nodes[r.a].name, m_nodes[r.b].name);
        if (!r.kds_authorised)
            m_faults.push_back("KDS: pair " + m_nodes[r.a].name + "<->" + m_nodes[r.b].name + " not authorised");
    }
    kc.key_lifetime_s = 3600;
    m_kds_rng = std::make_unique<DeterministicRng>(m_opt.seed ^ 0x6b64730000ULL);
    m_kds = std::make_unique<kds::Server>(kc, *m_kds_rng);

    // ---------------------------------------------------------------- engines
    auto engine_config = [this] {
        ike::EngineConfig ec;
        ec.retransmit.timeout_ms = 1000;
        ec.retransmit.tries = 3;
        ec.unix_time = [this] { return m_unix0 + m_now / 1000; };
        return ec;
    };
    X2SEC_TRY(auto segw_id, ike::Identity::parse("fqdn:segw.operator.example"));
    IkeSide segw{"segw", segw_id, kSegwAddr, kIkePort, kSegwAddr};
    auto core = TrafficSelector::from_prefix(IpAddress::v4(192, 0, 2, 0), 28);
    ike::EngineConfig segw_ec = engine_config();
    std::vector<std::pair<std::string, std::string>> vendor_roots(m_all_anchors.begin(), m_all_anchors.end() - 1);
    for (unsigned i = 0; i < m_nodes.size(); ++i) {
        Node& n = m_nodes[i];
        X2SEC_TRY(auto id, ike::Identity::parse("fqdn:" + n.identity));
        IkeSide me{n.name, id, n.addr, kIkePort, n.addr};
        n.counters = std::make_unique<Counters>();
        n.dp = std::make_unique<esp::DataPlane>(*n.counters);
        n.rng = std::make_unique<DeterministicRng>(m_opt.seed * 1000003ULL + i);
        auto ec = engine_config();
        X2SEC_TRY(auto to_segw, glue::peer_config("segw", me, segw, Credential::VendorCertificate, n.vendor.chain_pem,
                                                  n.vendor.key_pem, {{"operator", m_operator->root_pem()}}, {}, core));
        to_segw.fragmentation = false;
        ec.peers.push_back(to_segw);
        n.engine = std::make_unique<ike::Engine>(ec, *n.dp, *n.rng);
        n.expiries = std::make_unique<ChildSaEventQueue>();
        n.dp->set_events(n.expiries->events());
        // The SeGW's configuration for this node: any address (the SeGW does not know where
        // a node connects from), told apart from the others by IDi at IKE_AUTH.
        X2SEC_TRY(auto from_node,
                  glue::peer_config(n.name, segw, me, Credential::VendorCertificate, m_segw_cred.chain_pem,
                                    m_segw_cred.key_pem, vendor_roots, {}, TrafficSelector::from_prefix(n.addr, 32)));
        from_node.remote_addr = IpAddress{};
        from_node.remote_port = 0;
        from_node.fragmentation = false;
        from_node.children[0].local_ts = {core};
        segw_ec.peers.push_back(from_node);
    }
    m_segw_counters = std::make_unique<Counters>();
    m_segw_dp = std::make_unique<esp::DataPlane>(*m_segw_counters);
    m_segw_rng = std::make_unique<DeterministicRng>(m_opt.seed * 7919ULL + 17);
    m_segw = std::make_unique<ike::Engine>(segw_ec, *m_segw_dp, *m_segw_rng);
    m_segw_expiries = std::make_unique<ChildSaEventQueue>();
    m_segw_dp->set_events(m_segw_expiries->events());

    // ---------------------------------------------------------------- agents
    for (unsigned i = 0; i < m_nodes.size(); ++i) {
        Node& n = m_nodes[i];
        policy::DeploymentConfig d;
        for (auto& [label, pem] : m_all_anchors) d.anchors.push_back({label, ""});
        d.segw = policy::SegwConfig{{"192.0.2.1", kIkePort}, "segw.operator.example"};
        d.cmp = policy::CmpConfig{"http://192.0.2.2/.well-known/cmp/p/henb", "henb"};
        d.kds = policy::KdsClientConfig{{"192.0.2.3", 7443}, "kds.operator.example"};
        d.backoff = m_opt.backoff;
        policy::HenbConfig h;
        h.name = n.name;
        h.identity = n.identity;
        h.vendor = kVendorLabels[n.cfg.vendor];
        h.address = {n.addr.to_string(), kIkePort};
        h.certificate_anchor = kVendorLabels[n.cfg.vendor];
        h.trust_anchors = {kVendorLabels[n.cfg.vendor], "operator"};
        h.cmp = n.cfg.cmp;
        for (auto& [j, r] : n.neighbours) {
            const Node& o = m_nodes[j];
            const SimRelation& rc = m_rels[r].cfg;
            policy::NeighbourConfig nc;
            nc.name = o.name;
            nc.identity = o.identity;
            nc.address = {o.addr.to_string(), kIkePort};
            nc.ipsec = rc.ipsec;
            nc.auth = rc.auth;
            if (rc.hint) {
                nc.peer_anchor = kVendorLabels[o.cfg.vendor];
                nc.peer_cmp = o.cfg.cmp;
            }
            h.neighbours.push_back(nc);
        }
        d.henbs.push_back(std::move(h));
        n.agent = std::make_unique<Agent>(std::move(d), n.name, make_operations(*this));
    }
    return {};
}

bool SimWorld::exchange(unsigned a, std::optional<unsigned> b, const std::string& cls,
                        const std::function<bool()>& done, const std::function<bool()>& failed,
                        glue::CertreqGuard* guard) {
    Node& na = m_nodes[a];
    ike::Engine& ea = *na.engine;
    ike::Engine& eb = b ? *m_nodes[*b].engine : *m_segw;
    ChildSaEventQueue& qa = *na.expiries;
    ChildSaEventQueue& qb = b ? *m_nodes[*b].expiries : *m_segw_expiries;
    std::vector<ike::Event>& va = na.events;
    std::vector<ike::Event>& vb = b ? m_nodes[*b].events : m_segw_events;
    const IpAddress& addr_b = b ? m_nodes[*b].addr : kSegwAddr;
    struct InFlight {
        Millis at;
        uint64_t seq;
        ike::Datagram d;
    };
    auto later = [](const InFlight& x, const InFlight& y) { return x.at != y.at ? x.at > y.at : x.seq > y.seq; };
    std::priority_queue<InFlight, std::vector<InFlight>, decltype(later)> q(later);
    uint64_t seq = 0;
    SimTraffic& t = m_traffic[cls];
    auto send = [&](ike::Datagram&& d) {
        t.messages += 1;
        t.bytes += d.data.size() + (d.non_esp_marker ? 4 : 0);
        q.push({m_now + m_opt.latency_ms, seq++, std::move(d)});
    };
    auto collect = [&] {
        qa.deliver(ea, m_now);
        qb.deliver(eb, m_now);
        for (auto& d : ea.take_outgoing()) send(std::move(d));
        for (auto& d : eb.take_outgoing()) send(std::move(d));
        for (auto& e : ea.take_events()) va.push_back(std::move(e));
        for (auto& e : eb.take_events()) vb.push_back(std::move(e));
    };
    const Millis give_up = m_now + 60'000;
    int drain = -1;  // after a failure: deliver what is in flight (e.g. the AUTHENTICATION_FAILED)
    for (;;) {
        collect();
        if (drain < 0 && done()) return true;
        if (drain < 0 && failed()) drain = 8;
        if (drain == 0) return false;
        if (q.empty()) {
            if (drain >= 0) return false;
            std::optional<Millis> next = ea.next_deadline();
            auto nb = eb.next_deadline();
            if (nb && (!next || *nb < *next)) next = nb;
            if (!next || *next > give_up) return false;
            m_now = std::max(m_now, *next);
            ea.tick(m_now);
            eb.tick(m_now);
            continue;
        }
        InFlight f = q.top();
        q.pop();
        if (drain > 0) --drain;
        m_now = std::max(m_now, f.at);
        ike::Datagram rx;
        rx.local = f.d.remote;
        rx.remote = f.d.local;
        rx.data = std::move(f.d.data);
        rx.non_esp_marker = f.d.non_esp_marker;
        if (rx.local.addr == na.addr) {
            ea.handle_datagram(rx, m_now);
            if (guard)
                for (auto& keep : guard->on_received(rx, m_now)) send(std::move(keep));
        } else if (rx.local.addr == addr_b) {
            eb.handle_datagram(rx, m_now);
        }
        // anything else: a node that is not part of this exchange; dropped
    }
}

void SimWorld::teardown(unsigned a, unsigned b) {
    Node& na = m_nodes[a];
    Node& nb = m_nodes[b];
    for (auto& sa : na.engine->list_sas())
        if (sa.peer == nb.name) (void)na.engine->delete_ike(sa.id, m_now);
    auto none = [&] {
        for (auto& sa : na.engine->list_sas())
            if (sa.peer == nb.name) return false;
        for (auto& sa : nb.engine->list_sas())
            if (sa.peer == na.name) return false;
        return true;
    };
    exchange(
        a, b, "ike-direct", none, [] { return false; }, nullptr);
}

Result<Carried> SimWorld::backhaul(const policy::HenbConfig& h) {
    unsigned i = m_index.at(h.name);
    Node& n = m_nodes[i];
    n.events.clear();
    m_segw_events.clear();
    auto before = m_traffic["ike-backhaul"];
    X2SEC_TRY_STATUS(n.engine->initiate("segw", m_now));
    bool ok = exchange(
        i, std::nullopt, "ike-backhaul",
        [&] {
            return glue::has_event(n.events, "segw", ike::Event::Kind::ChildSaUp) &&
                   glue::has_event(m_segw_events, n.name, ike::Event::Kind::ChildSaUp);
        },
        [&] { return glue::failure_event(n.events, "segw") || glue::failure_event(m_segw_events, n.name); }, nullptr);
    auto after = m_traffic["ike-backhaul"];
    if (!ok) {
        const auto* f = glue::failure_event(n.events, "segw");
        if (!f) f = glue::failure_event(m_segw_events, n.name);
        return Error(ErrorDomain::Ike, 0, f ? f->detail : "no answer from the SeGW");
    }
    Carried c;
    c.measure.messages = after.messages - before.messages;
    c.measure.bytes = after.bytes - before.bytes;
    c.detail = "IKE SA + Child SA with the SeGW (device certificate)";
    return c;
}

Result<Enrolled> SimWorld::enrol(const policy::HenbConfig& h) {
    Node& n = m_nodes[m_index.at(h.name)];
    if (m_opt.ra_down && m_now >= m_opt.ra_down->first && m_now < m_opt.ra_down->second) {
        m_now += rtt_core();  // the connection attempt is refused
        m_counters["cmp enrolment failures"] += 1;
        return Error(
            ErrorDomain::Io, 111,
            "RA/CA unreachable: connection refused (down from t=" + std::to_string(m_opt.ra_down->first / 1000) +
                " s to t=" + std::to_string(m_opt.ra_down->second / 1000) + " s)");
    }
    X2SEC_TRY(auto vkey, pki::private_key_from_pem(n.vendor.key_pem.view()));
    X2SEC_TRY(auto vcert, pem_x509(n.vendor.cert_pem));
    X2SEC_TRY(auto newkey, pki::generate_key(pki::KeyAlg::EcP256));
    X2SEC_TRY(auto oproot, pem_x509(m_operator->root_pem()));
    cmp::EnrollRequest r;
    r.server_url = "http://192.0.2.2/.well-known/cmp/p/henb";
    r.auth_key = vkey.get();
    r.auth_cert = vcert.get();
    r.new_key = newkey.get();
    r.subject = "/O=Operator/CN=" + h.identity;
    r.dns = {h.identity};
    r.operator_roots = {oproot.get()};
    size_t msgs = 0, bytes = 0;
    r.transfer = [&](BytesView req) -> Result<Bytes> {
        msgs += 1;
        bytes += req.size();
        m_now += rtt_core();
        X2SEC_TRY(auto resp, m_ra->handle(req, cmp::RequestContext{"", static_cast<int64_t>(std::time(nullptr))}));
        msgs += 1;
        bytes += resp.size();
        return resp;
    };
    auto e = cmp::Client::enroll(r);
    m_traffic["cmp"].messages += msgs;
    m_traffic["cmp"].bytes += bytes;
    if (!e.ok()) {
        m_counters["cmp enrolment failures"] += 1;
        return std::move(e).error();
    }
    Enrolled out;
    X2SEC_TRY(out.key_pem, pki::private_key_pem(newkey.get()));
    out.cert_pem = pki::cert_pem(e->cert.get());
    for (auto& c : e->chain) out.cert_pem += pki::cert_pem(c.get());
    out.serial_hex = pki::serial_hex(e->cert.get());
    m_counters["cmp enrolments"] += 1;
    out.carried.measure.messages = msgs;
    out.carried.measure.bytes = bytes;
    out.carried.detail = "serial " + out.serial_hex;
    return out;
}

Result<FetchedKey> SimWorld::fetch_key(const policy::HenbConfig& h, const policy::NeighbourConfig& nc) {
    kds::KeyRequest req;
    req.request_id = uint32_t(++m_counters["kds requests"]);
    req.requester = h.identity;
    req.peer = nc.identity;
    SecureBytes wire = kds::encode(kds::Message{req});
    // The KDS authenticates the requester by its backhaul tunnel's identity.
    SecureBytes answer = m_kds->handle(h.identity, wire.view(), m_now);
    m_now += rtt_core();
    m_traffic["kds"].messages += 2;
    m_traffic["kds"].bytes += wire.size() + answer.size();
    X2SEC_TRY(auto msg, kds::decode(answer.view()));
    if (auto* err = std::get_if<kds::ErrorMessage>(&msg)) {
        m_counters["kds refusals"] += 1;
        return Error(ErrorDomain::Kds, int(err->code), std::string(kds::to_string(err->code)) + ": " + err->text);
    }
    auto* resp = std::get_if<kds::KeyResponse>(&msg);
    if (!resp) return Error(ErrorDomain::Kds, 0, "unexpected KDS answer");
    m_counters["kds keys delivered"] += 1;
    FetchedKey k{std::move(resp->key), to_hex(resp->key_id), {}};
    k.carried.measure.messages = 2;
    k.carried.measure.bytes = wire.size() + answer.size();
    k.carried.measure.round_trips = 1;
    k.carried.detail = "generation " + std::to_string(resp->generation);
    return k;
}

Result<Carried> SimWorld::ike(IkeAttempt& at) {
    unsigned i = m_index.at(at.initiator.name), j = m_index.at(at.responder.name);
    Node& me = m_nodes[i];
    Node& them = m_nodes[j];
    const IkeEnd& ia = at.initiator;
    const IkeEnd& ib = at.responder;
    m_counters["ike attempts"] += 1;
    X2SEC_TRY(auto myid, ike::Identity::parse("fqdn:" + me.identity));
    X2SEC_TRY(auto theirid, ike::Identity::parse("fqdn:" + them.identity));
    IkeSide a{me.name, myid, me.addr, kIkePort, me.addr};
    IkeSide b{them.name, theirid, them.addr, kIkePort, them.addr};
    X2SEC_TRY(auto pa, glue::peer_config(them.name, a, b, ia.cred, ia.cert_pem, ia.key_pem, anchors_of(me), *ia.psk,
                                         TrafficSelector::from_prefix(them.addr, 32)));
    X2SEC_TRY(auto pb, glue::peer_config(me.name, b, a, ib.cred, ib.cert_pem, ib.key_pem, anchors_of(them), *ib.psk,
                                         TrafficSelector::from_prefix(me.addr, 32)));
    for (auto* p : {&pa, &pb}) {
        p->send_certreq = m_opt.certreq;
        p->fragmentation = false;  // in-memory: no MTU, and message counts stay deterministic
    }
    if (m_crl && ia.cred == Credential::OperatorCertificate && ib.cred == Credential::OperatorCertificate)
        for (auto* p : {&pa, &pb}) {
            auto t = std::make_shared<x509::TrustStore>(*p->trust);
            t->add_crl(*m_crl);
            t->set_crl_check(true);
            p->trust = t;
        }
    X2SEC_TRY_STATUS(me.engine->update_peer(pa));
    X2SEC_TRY_STATUS(them.engine->update_peer(pb));
    me.events.clear();
    them.events.clear();
    glue::CertreqGuard guard(*me.agent, ia.cred, *me.engine, them.name);
    auto before = m_traffic["ike-direct"];
    X2SEC_TRY_STATUS(me.engine->initiate(them.name, m_now));
    bool ok = exchange(
        i, j, "ike-direct", [&] { return glue::both_child_up(me.events, me.name, them.events, them.name); },
        [&] { return glue::exchange_failed(guard, me.events, me.name, them.events, them.name); }, &guard);
    auto after = m_traffic["ike-direct"];
    if (!ok) {
        m_counters["ike failures"] += 1;
        if (guard.aborted()) m_counters["ike stopped after IKE_SA_INIT (CERTREQ)"] += 1;
        std::string why = glue::classify_failure(me.events, them.events, ia.cred, ib.cred, guard, at.failure,
                                                 at.responder_agent, me.name, them.name, m_now);
        if (at.failure.untrusted_ca) m_counters["ike untrusted-CA failures"] += 1;
        // The responder's half-open or established SA from this attempt is dropped too.
        for (auto& sa : them.engine->list_sas())
            if (sa.peer == me.name) (void)them.engine->delete_ike(sa.id, m_now);
        (void)them.engine->take_outgoing();
        return Error(ErrorDomain::Ike, 0, why);
    }
    Carried c;
    c.measure.messages = after.messages - before.messages;
    c.measure.bytes = after.bytes - before.bytes;
    for (auto& sa : me.engine->list_sas())
        if (sa.peer == them.name && sa.state == "ESTABLISHED")
            c.detail = sa.encr + "/" + sa.prf + "/" + sa.dh + ", auth " + sa.local_auth;
    return c;
}

void SimWorld::carry_x2(size_t r) {
    Node& a = m_nodes[m_rels[r].cfg.a];
    Node& b = m_nodes[m_rels[r].cfg.b];
    auto mix_ab = x2_traffic_mix(a.addr, b.addr, 1);
    auto mix_ba = x2_traffic_mix(b.addr, a.addr, 1);
    auto* sa = a.agent->neighbour(b.name);
    if (sa->state == LinkState::PlainX2) {
        for (auto* mix : {&mix_ab, &mix_ba})
            for (auto& p : *mix) {
                m_traffic["x2-plain"].messages += 1;
                m_traffic["x2-plain"].bytes += p.size();
                m_x2_sent += 1;
                m_x2_delivered += 1;  // nothing in between on the direct link
            }
        m_now += m_opt.latency_ms;
        return;
    }
    esp::MemoryEndpoint ea(*a.dp), eb(*b.dp);
    ea.connect(eb);
    eb.connect(ea);
    std::vector<Bytes> got_a, got_b;
    ea.on_deliver = [&](BytesView p) { got_a.emplace_back(p.begin(), p.end()); };
    eb.on_deliver = [&](BytesView p) { got_b.emplace_back(p.begin(), p.end()); };
    bool plaintext = false;
    auto tap = [&](Bytes& d) {
        m_traffic["x2-esp"].messages += 1;
        m_traffic["x2-esp"].bytes += d.size();
        plaintext |= contains(d, as_bytes("X2AP")) || contains(d, as_bytes("GTP-U"));
        return true;
    };
    ea.on_wire = tap;
    eb.on_wire = tap;
    for (auto& p : mix_ab) ea.send(p, m_now);
    for (auto& p : mix_ba) eb.send(p, m_now);
    m_now += m_opt.latency_ms;
    m_x2_sent += mix_ab.size() + mix_ba.size();
    for (size_t k = 0; k < mix_ab.size() && k < got_b.size(); ++k) m_x2_delivered += got_b[k] == mix_ab[k] ? 1 : 0;
    for (size_t k = 0; k < mix_ba.size() && k < got_a.size(); ++k) m_x2_delivered += got_a[k] == mix_ba[k] ? 1 : 0;
    if (plaintext) m_counters["x2 plaintext seen on an IPsec link"] += 1;
}

namespace {
std::string outcome_of(const NeighbourStatus& x, const NeighbourStatus& y) {
    if (x.state == LinkState::PlainX2 && y.state == LinkState::PlainX2) return "ipsec-off: plain X2 (Proposal 1)";
    if (x.state == LinkState::Disabled || y.state == LinkState::Disabled) return "direct interface disabled";
    if (x.state == LinkState::Up && y.state == LinkState::Up) {
        switch (x.credential) {
            case Credential::VendorCertificate:
                return "scenario1: same CA, vendor certificates (Proposal 2)";
            case Credential::OperatorCertificate:
                return "scenario2: CMPv2 enrolment, operator certificates (Proposal 3)";
            case Credential::PairwiseKey:
                return "solution2: KDS pairwise key, IKEv2-PSK";
            default:
                break;
        }
    }
    return "down";
}

std::string reason_class(const std::string& r) {
    if (r.find("UNAUTHORISED_PAIR") != std::string::npos) return "KDS refused the pair (UNAUTHORISED_PAIR)";
    if (r.find("revoked") != std::string::npos || r.find("Revoked") != std::string::npos)
        return "operator certificate revoked";
    if (r.find("RA/CA") != std::string::npos || r.find("CMPv2 enrolment failed") != std::string::npos)
        return "RA/CA unreachable / enrolment failed";
    if (r.find("does not support CMPv2") != std::string::npos || r.find("cannot enrol") != std::string::npos)
        return "different CAs, no CMPv2 on a side: no usable certificate";
    if (r.find("names neither") != std::string::npos) return "peer's CERTREQ names none of our anchors";
    return r.substr(0, 80);
}
}  // namespace

void SimWorld::settle(size_t r, Millis now) {
    Relation& rel = m_rels[r];
    const Node& a = m_nodes[rel.cfg.a];
    const Node& b = m_nodes[rel.cfg.b];
    std::string o = outcome_of(*a.agent->neighbour(b.name), *b.agent->neighbour(a.name));
    if (o != rel.outcome) {
        rel.outcome = o;
        rel.settled_at = now;
    }
}

void SimWorld::revoke_now() {
    std::vector<unsigned> victims;
    for (unsigned i = 0; i < m_nodes.size() && victims.size() < m_opt.revoke; ++i)
        if (!m_nodes[i].op_serial_hex.empty() && !m_nodes[i].revoked) victims.push_back(i);
    for (unsigned v : victims) {
        Node& n = m_nodes[v];
        auto serial = from_hex(n.op_serial_hex);
        Status st = serial ? m_ra->revoke(*serial, 1) : Status(Error("bad serial"));
        n.revoked = st.ok();
        m_faults.push_back("t=" + std::to_string(m_now / 1000) + " s: operator revoked " + n.name +
                           "'s operator certificate (serial " + n.op_serial_hex + ")" +
                           (st.ok() ? "" : ": " + st.error().detail()));
        m_counters["operator certificates revoked"] += n.revoked ? 1 : 0;
    }
    if (victims.empty()) {
        m_faults.push_back("t=" + std::to_string(m_now / 1000) + " s: no operator certificate to revoke");
        return;
    }
    auto crl = m_ra->crl_der(static_cast<int64_t>(std::time(nullptr)));
    if (!crl.ok()) {
        m_faults.push_back("CRL unavailable: " + crl.error().detail());
        return;
    }
    auto c = x509::Crl::from_der(*crl);
    if (c.ok()) m_crl = *c;
    m_faults.push_back("t=" + std::to_string(m_now / 1000) + " s: CRL (" + std::to_string(crl->size()) +
                       " bytes) distributed to every node; their tunnels on operator certificates are re-established");
    // Tunnels that rely on a revoked certificate are torn down and re-run (and must fail).
    for (size_t r = 0; r < m_rels.size(); ++r) {
        unsigned a = m_rels[r].cfg.a, b = m_rels[r].cfg.b;
        if (!m_nodes[a].revoked && !m_nodes[b].revoked) continue;
        auto* sa = m_nodes[a].agent->neighbour(m_nodes[b].name);
        if (sa->state != LinkState::Up || sa->credential != Credential::OperatorCertificate) continue;
        teardown(a, b);
        m_nodes[a].agent->reset(m_nodes[b].name);
        m_nodes[b].agent->reset(m_nodes[a].name);
        push(m_now, int(a), int(r));
    }
}

void SimWorld::run() {
    Dice boot(m_opt.seed ^ 0xb0075eedULL);
    for (unsigned i = 0; i < m_nodes.size(); ++i)
        push(Millis(boot.below(uint32_t(std::max<Millis>(m_opt.boot_spread_ms, 1)))), int(i), -1);
    if (m_opt.revoke) push(m_opt.revoke_at_ms, -1, -2);
    if (m_opt.ra_down)
        m_faults.push_back("RA/CA down from t=" + std::to_string(m_opt.ra_down->first / 1000) +
                           " s to t=" + std::to_string(m_opt.ra_down->second / 1000) + " s");
    while (!m_wakes.empty()) {
        Wake w = m_wakes.top();
        if (w.at > m_opt.duration_ms) break;
        m_wakes.pop();
        m_now = std::max(m_now, w.at);
        if (w.rel == -2) {
            revoke_now();
            continue;
        }
        Node& n = m_nodes[size_t(w.node)];
        m_now = std::max(m_now, n.free_at);
        if (w.rel == -1) {
            bool up = n.agent->ensure_backhaul(m_now);
            n.free_at = m_now;
            if (!up) {
                if (auto t = n.agent->next_retry()) push(std::max(*t, m_now), w.node, -1);
                continue;
            }
            for (auto& [j, r] : n.neighbours)
                if (m_rels[r].cfg.a == unsigned(w.node)) push(m_now, w.node, int(r));
            continue;
        }
        size_t r = size_t(w.rel);
        Node& o = m_nodes[m_rels[r].cfg.b];
        m_now = std::max(m_now, o.free_at);
        NeighbourStatus* st = n.agent->neighbour(o.name);
        if (st->state == LinkState::Up || st->state == LinkState::PlainX2 || st->state == LinkState::Disabled) {
            settle(r, m_now);
            continue;
        }
        n.agent->prepare(o.name, m_now);
        if (st->state == LinkState::Ready) n.agent->connect(o.name, m_now);
        if (st->state == LinkState::PlainX2) o.agent->prepare(n.name, m_now);
        auto* back = o.agent->neighbour(n.name);
        if ((st->state == LinkState::Up && back->state == LinkState::Up) ||
            (st->state == LinkState::PlainX2 && back->state == LinkState::PlainX2))
            carry_x2(r);
        n.free_at = o.free_at = m_now;
        settle(r, m_now);
        if (st->state == LinkState::Down && st->next_retry_at) {
            m_counters["retries scheduled"] += 1;
            push(std::max(*st->next_retry_at, m_now), w.node, int(r));
        }
    }
}

SimReport SimWorld::report() {
    SimReport rep;
    rep.seed = m_opt.seed;
    rep.nodes = unsigned(m_nodes.size());
    rep.traffic = m_traffic;
    rep.counters = m_counters;
    rep.faults = m_faults;
    rep.x2_sent = m_x2_sent;
    rep.x2_delivered = m_x2_delivered;
    bool more = !m_wakes.empty();
    rep.ended_at_ms = more ? m_opt.duration_ms : m_now;
    for (size_t r = 0; r < m_rels.size(); ++r) {
        settle(r, m_now);
        const Relation& rel = m_rels[r];
        const Node& a = m_nodes[rel.cfg.a];
        const Node& b = m_nodes[rel.cfg.b];
        const NeighbourStatus* x = a.agent->neighbour(b.name);
        const NeighbourStatus* y = b.agent->neighbour(a.name);
        SimRelationResult res;
        res.a = rel.cfg.a;
        res.b = rel.cfg.b;
        res.a_name = a.name;
        res.b_name = b.name;
        res.outcome = rel.outcome;
        res.state_a = to_string(x->state);
        res.state_b = to_string(y->state);
        res.credential = to_string(x->credential);
        res.settled_at = rel.settled_at;
        res.failed_attempts = x->attempts;
        if (rel.outcome == "down") {
            res.reason = a.name + ": " + (x->reason.empty() ? to_string(x->state) : x->reason);
            if (!y->reason.empty()) res.reason += "; " + b.name + ": " + y->reason;
            rep.down_reasons[reason_class(res.reason)] += 1;
        }
        std::string all;
        for (auto& s : x->steps) all += s.text + "\n";
        if (rel.cfg.hint && rel.outcome.rfind("scenario", 0) == 0) res.learnt = "hint";
        if (all.find("IKE_AUTH not sent") != std::string::npos)
            res.learnt = "CERTREQ";
        else if (all.find("peer's CA not trusted") != std::string::npos)
            res.learnt = "AUTH_FAILED";
        if (m_opt.keep_steps) {
            for (auto& s : x->steps) res.steps_a.push_back(s.text);
            for (auto& s : y->steps) res.steps_b.push_back(s.text);
        }
        rep.cases[rel.outcome] += 1;
        if (!res.learnt.empty()) rep.counters["CA question settled by " + res.learnt] += 1;
        rep.converged_at_ms = std::max(rep.converged_at_ms, rel.settled_at);
        rep.relations.push_back(std::move(res));
    }
    // Converged: nothing changed for at least one full maximum back-off (retries of the
    // relations that stay down kept failing the same way), or nothing was left to do.
    rep.converged = !more || rep.ended_at_ms - rep.converged_at_ms >= m_opt.backoff.max_ms;
    return rep;
}

}  // namespace

Result<SimReport> run_sim(const SimOptions& o) {
    X2SEC_TRY_STATUS(validate(o));
    SimWorld w(o);
    X2SEC_TRY_STATUS(w.build());
    w.run();
    return w.report();
}

std::string render_sim_report(const SimReport& r) {
    std::ostringstream o;
    size_t rels = r.relations.size();
    o << "x2sec sim: " << r.nodes << " H(e)NBs, " << rels << " neighbour relations, seed " << r.seed << "\n";
    if (!r.faults.empty()) {
        o << "\nfaults injected:\n";
        for (auto& f : r.faults) o << "  " << f << "\n";
    }
    o << "\nrelations by case:\n";
    for (auto& [k, v] : r.cases) o << "  " << std::setw(5) << v << "  " << k << "\n";
    if (!r.down_reasons.empty()) {
        o << "\ndown, by reason (never downgraded; retried with back-off):\n";
        for (auto& [k, v] : r.down_reasons) o << "  " << std::setw(5) << v << "  " << k << "\n";
    }
    o << "\nmessages and bytes (virtual network):\n";
    size_t tm = 0, tb = 0;
    for (auto& [k, v] : r.traffic) {
        o << "  " << std::left << std::setw(14) << k << std::right << std::setw(9) << v.messages << " msgs "
          << std::setw(12) << v.bytes << " bytes\n";
        tm += v.messages;
        tb += v.bytes;
    }
    o << "  " << std::left << std::setw(14) << "total" << std::right << std::setw(9) << tm << " msgs " << std::setw(12)
      << tb << " bytes\n";
    o << "\ncounters:\n";
    for (auto& [k, v] : r.counters) o << "  " << std::setw(7) << v << "  " << k << "\n";
    o << "\nX2 test packets: " << r.x2_delivered << "/" << r.x2_sent << " delivered intact\n";
    o << std::fixed << std::setprecision(3);
    o << (r.converged ? "converged" : "NOT converged") << " at t=" << double(r.converged_at_ms) / 1000.0
      << " s (virtual); run ended at t=" << double(r.ended_at_ms) / 1000.0 << " s\n";
    return o.str();
}

}  // namespace x2sec::scenario
