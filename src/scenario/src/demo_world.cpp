#include "demo_world.hpp"

#include <chrono>
#include <ctime>
#include <optional>
#include <set>
#include <x2sec/common/event_queue.hpp>
#include <x2sec/common/file.hpp>
#include <x2sec/common/log.hpp>
#include <x2sec/scenario/x2_traffic.hpp>

#include "udp_net.hpp"

#include <openssl/pem.h>

#include <x2sec/crypto/crypto.hpp>
#include <x2sec/ikev2/engine.hpp>
#include <x2sec/x509/x509.hpp>

#include <x2sec/node/ike_glue.hpp>
#include <x2sec/esp/data_plane.hpp>
#include <x2sec/esp/memory_backend.hpp>
#include <x2sec/cmp/client.hpp>
#include <x2sec/cmp/http.hpp>
#include <x2sec/cmp/server.hpp>
#include <x2sec/cmp/store.hpp>
#include <x2sec/pki/pki.hpp>

namespace x2sec::scenario {

using namespace x2sec::node;  // the agent and its types

namespace {

double ms_since(std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

std::string entity(const std::string& henb) {
    return "H(e)NB " + henb;
}

using glue::IkeSide;
using glue::peer_config;

}  // namespace

namespace detail {
Result<pki::X509Ptr> pem_to_x509(const std::string& pem) {
    pki::BioPtr b(BIO_new_mem_buf(pem.data(), int(pem.size())));
    X509* x = PEM_read_bio_X509(b.get(), nullptr, nullptr, nullptr);
    if (!x) return Error(ErrorDomain::Pki, 0, "cannot parse a PEM certificate");
    return pki::X509Ptr(x);
}

// CMP over HTTP (RFC 6712): one POST per PKIMessage, on a fresh connection.  Our own small
// client so the demo can count what goes over the wire.
Result<Bytes> http_post_cmp(const std::string& url, BytesView body, size_t& wire_out, size_t& wire_in) {
    X2SEC_TRY(auto u, cmp::parse_server_url(url));
    if (u.tls) return Error(ErrorDomain::Cmp, -1, "the demo's CMP transport is plain HTTP");
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return Error(ErrorDomain::Io, errno, "socket");
    timeval tv{5, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(uint16_t(u.port));
    inet_pton(AF_INET, u.host.c_str(), &sa.sin_addr);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) {
        int e = errno;
        ::close(fd);
        return Error(ErrorDomain::Io, e,
                     "RA/CA " + u.host + ":" + std::to_string(u.port) + " unreachable: " + strerror(e));
    }
    std::string head = "POST " + u.path + " HTTP/1.1\r\nHost: " + u.host + ":" + std::to_string(u.port) +
                       "\r\nContent-Type: application/pkixcmp\r\nContent-Length: " + std::to_string(body.size()) +
                       "\r\nConnection: close\r\n\r\n";
    Bytes req = to_bytes(head);
    req.insert(req.end(), body.begin(), body.end());
    size_t off = 0;
    while (off < req.size()) {
        ssize_t n = ::send(fd, req.data() + off, req.size() - off, MSG_NOSIGNAL);
        if (n <= 0) {
            ::close(fd);
            return Error(ErrorDomain::Io, errno, "RA/CA: send failed");
        }
        off += size_t(n);
    }
    Bytes resp;
    uint8_t buf[16384];
    for (;;) {
        ssize_t n = ::recv(fd, buf, sizeof buf, 0);
        if (n <= 0) break;
        resp.insert(resp.end(), buf, buf + n);
    }
    ::close(fd);
    wire_out += req.size();
    wire_in += resp.size();
    std::string text(resp.begin(), resp.end());
    auto hdr_end = text.find("\r\n\r\n");
    if (hdr_end == std::string::npos) return Error(ErrorDomain::Io, 0, "RA/CA: malformed HTTP response");
    if (text.rfind("HTTP/1.1 200", 0) != 0 && text.rfind("HTTP/1.0 200", 0) != 0)
        return Error(ErrorDomain::Cmp, -1, "RA/CA answered " + text.substr(0, text.find("\r\n")));
    return Bytes(resp.begin() + long(hdr_end + 4), resp.end());
}
Result<OperatorEnrolment> enrol_operator(const std::string& url, const LabCredential& vendor,
                                         const std::string& operator_root_pem, const std::string& identity,
                                         const std::string& key_token) {
    X2SEC_TRY(auto vkey, pki::private_key_from_pem(vendor.key_pem.view()));
    X2SEC_TRY(auto vcert, pem_to_x509(vendor.cert_pem));
    X2SEC_TRY(auto newkey, pki::generate_key(pki::KeyAlg::EcP256, key_token));
    X2SEC_TRY(auto oproot, pem_to_x509(operator_root_pem));
    cmp::EnrollRequest r;
    r.server_url = url;
    r.auth_key = vkey.get();
    r.auth_cert = vcert.get();
    r.new_key = newkey.get();
    r.subject = "/O=Operator/CN=" + identity;
    r.dns = {identity};
    r.operator_roots = {oproot.get()};
    r.timeout_s = 5;
    OperatorEnrolment out;
    size_t sent = 0, received = 0;
    r.transfer = [&](BytesView req) -> Result<Bytes> {
        ++out.messages;
        X2SEC_TRY(auto resp, http_post_cmp(url, req, sent, received));
        ++out.messages;
        return resp;
    };
    auto e = cmp::Client::enroll(r);
    if (!e.ok()) return std::move(e).error();
    X2SEC_TRY(auto kpem, pki::private_key_pem(newkey.get()));
    out.key_pem = std::move(kpem);
    out.cert_pem = pki::cert_pem(e->cert.get());
    for (auto& c : e->chain) out.cert_pem += pki::cert_pem(c.get());
    out.serial_hex = pki::serial_hex(e->cert.get());
    out.bytes = sent + received;
    return out;
}

}  // namespace detail
using detail::pem_to_x509;

// ------------------------------------------------------------------ module glue
struct World::Impl {
    UdpNet net;
    std::chrono::steady_clock::time_point epoch = std::chrono::steady_clock::now();
    Millis now() const {
        return Millis(
            std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - epoch).count());
    }
    struct Node {
        std::unique_ptr<Counters> counters;
        std::unique_ptr<ChildSaBackend> backend;
        std::unique_ptr<ChildSaEventQueue> expiries;  // the data plane's lifetime events, for the loop
        std::unique_ptr<ike::Engine> engine;
        std::vector<ike::Event> events;
        uint16_t ike_port = 0, natt_port = 0;
    };
    std::map<std::string, Node> nodes;  // henbs and "segw"
    std::map<uint16_t, std::string> owner;
    OsRng rng;

    void pump_once() {
        Millis t = now();
        for (auto& [name, n] : nodes) {
            n.expiries->deliver(*n.engine, t);
            n.engine->tick(t);
            for (auto& d : n.engine->take_outgoing()) {
                Bytes wire = d.data;
                if (d.non_esp_marker) wire.insert(wire.begin(), 4, 0);
                net.send(d.local.port, d.remote.port, wire);
            }
            for (auto& e : n.engine->take_events()) n.events.push_back(std::move(e));
        }
        for (auto& rx : net.poll(2)) {
            auto it = owner.find(rx.local_port);
            if (it == owner.end()) continue;
            auto& n = nodes[it->second];
            ike::Datagram d;
            d.local = {IpAddress::v4(127, 0, 0, 1), rx.local_port};
            d.remote = {IpAddress::v4(127, 0, 0, 1), rx.remote_port};
            if (rx.local_port == n.natt_port) {
                if (rx.data.size() < 4 || rx.data[0] || rx.data[1] || rx.data[2] || rx.data[3])
                    continue;  // ESP: in-memory here
                d.non_esp_marker = true;
                d.data.assign(rx.data.begin() + 4, rx.data.end());
            } else {
                d.data = std::move(rx.data);
            }
            n.engine->handle_datagram(d, now());
            if (on_rx)
                for (auto& keep : on_rx(it->second, d)) {
                    Bytes wire = keep.data;
                    if (keep.non_esp_marker) wire.insert(wire.begin(), 4, 0);
                    net.send(keep.local.port, keep.remote.port, wire);
                }
        }
    }
    // Sees every datagram a node handled (after the engine did); returns datagrams to send.
    std::function<std::vector<ike::Datagram>(const std::string& node, const ike::Datagram&)> on_rx;

    // Runs the engines until `done` or a failure event for the pair, or the timeout.
    bool pump_until(const std::function<bool()>& done, const std::function<bool()>& failed, int timeout_ms) {
        auto t0 = std::chrono::steady_clock::now();
        while (ms_since(t0) < timeout_ms) {
            pump_once();
            if (done()) return true;
            if (failed()) {
                // Let the last messages (e.g. the notify) arrive, then stop.
                for (int i = 0; i < 20; ++i) pump_once();
                return false;
            }
        }
        return false;
    }

    // Installs (or replaces) a node's configuration for one peer.  Every node here is
    // 127.0.0.1; the responder keeps every matching configuration as a candidate at
    // IKE_SA_INIT and picks the one whose remote_id is the initiator's IDi at IKE_AUTH
    // (tests/exchange/test_ikev2_peer_select), so the other peers' configurations stay as
    // they are.
    Status activate(const std::string& node, const ike::PeerConfig& active) {
        return nodes[node].engine->update_peer(active);
    }

    std::unique_ptr<cmp::Store> store;
    std::unique_ptr<cmp::Server> cmp_server;
    std::unique_ptr<cmp::HttpServer> http;
};

World::World(std::string dir, std::map<std::string, uint16_t> ports, const DemoOptions& opt)
    : m_dir(std::move(dir)), m_ports(std::move(ports)), m_opt(opt), m_impl(std::make_unique<Impl>()) {}

World::~World() {
    stop();
}

void World::stop() {
    if (m_kds_tls) m_kds_tls->stop();
    if (m_impl && m_impl->http) m_impl->http->stop();
}

kds::ServerConfig detail::kds_server_config(const policy::DeploymentConfig& cfg, bool refuse_pairs) {
    kds::ServerConfig kc;
    for (auto& h : cfg.henbs) kc.nodes.push_back({h.name, h.identity});
    std::set<std::pair<std::string, std::string>> rel;
    for (auto& h : cfg.henbs)
        for (auto& n : h.neighbours)
            if (n.auth == policy::AuthMode::PskFromNetwork && !refuse_pairs)
                rel.insert(h.name < n.name ? std::make_pair(h.name, n.name) : std::make_pair(n.name, h.name));
    for (auto& r : rel) kc.relations.push_back(r);
    kc.key_lifetime_s = 3600;
    return kc;
}

Status World::create_pki() {
    int64_t nb = m_clock.unix_seconds() - 3600;
    X2SEC_TRY(LabCa a, LabCa::create("Vendor A Root CA", "Vendor A", nb, 3650));
    X2SEC_TRY(LabCa b, LabCa::create("Vendor B Root CA", "Vendor B", nb, 3650));
    X2SEC_TRY(LabCa op, LabCa::create("Operator Root CA", "Operator", nb, 3650));
    m_vendor_a = std::make_unique<LabCa>(std::move(a));
    m_vendor_b = std::make_unique<LabCa>(std::move(b));
    m_infra = std::make_unique<LabCa>(std::move(op));
    m_operator_root_pem = m_infra->root_pem();
    X2SEC_TRY(m_kds_cred, m_infra->issue("kds.operator.example", nb, 365));
    X2SEC_TRY(m_segw_cred, m_infra->issue("segw.operator.example", nb, 365));
    X2SEC_TRY_STATUS(write_file_atomic(m_dir + "/vendor-a-root.pem", m_vendor_a->root_pem()));
    X2SEC_TRY_STATUS(write_file_atomic(m_dir + "/vendor-b-root.pem", m_vendor_b->root_pem()));
    X2SEC_TRY_STATUS(write_file_atomic(m_dir + "/operator-root.pem", m_operator_root_pem));
    return {};
}

Status World::start(const policy::DeploymentConfig& cfg) {
    m_cfg = cfg;
    int64_t nb = m_clock.unix_seconds() - 3600;
    uint8_t host = 10;
    std::optional<detail::DemoTokens> tokens;
    if (m_opt.keys == DemoOptions::Keys::Pkcs11) {
        std::vector<std::string> names;
        for (auto& h : m_cfg.henbs) names.push_back(h.name);
        X2SEC_TRY(tokens, detail::make_demo_tokens(m_dir, names));
    }
    for (auto& h : m_cfg.henbs) {
        LabCa* ca = h.certificate_anchor == "vendor-b" ? m_vendor_b.get() : m_vendor_a.get();
        NodeCreds c;
        if (tokens) {
            X2SEC_TRY(c.vendor, detail::issue_in_token(*ca, h.identity, nb, 365, tokens->uri(h.name, "vendor")));
            c.op_key_token = tokens->uri(h.name, "operator");
        } else {
            X2SEC_TRY(c.vendor, ca->issue(h.identity, nb, 365));
        }
        c.inner = IpAddress::v4(198, 51, 100, host++);
        X2SEC_TRY_STATUS(write_file_atomic(m_dir + "/" + h.name + "-vendor.pem", c.vendor.chain_pem));
        X2SEC_TRY_STATUS(write_file_atomic(m_dir + "/" + h.name + "-vendor.key", c.vendor.key_pem.view(), 0600));
        m_creds[h.name] = std::move(c);
    }
    // ---------------------------------------------------------------- KDS
    if (m_cfg.kds) {
        kds::ServerConfig kc = detail::kds_server_config(m_cfg, m_opt.kds_without_relation);
        m_kds = std::make_unique<kds::Server>(kc, os_rng());
        // Every demo node connects from 127.0.0.1: the per-source limit is the overall one.
        kds::TransportLimits kl;
        kl.max_per_source = kl.max_connections;
        m_kds_tls = std::make_unique<kds::TlsServer>(*m_kds, m_clock, kl);
        kds::TlsCredentials tc{m_kds_cred.chain_pem, m_kds_cred.key_pem,
                               m_vendor_a->root_pem() + m_vendor_b->root_pem() + m_operator_root_pem};
        X2SEC_TRY_STATUS(m_kds_tls->start(m_cfg.kds->address.host, m_cfg.kds->address.port, tc));
    }
    // ---------------------------------------------------------------- RA/CA
    if (m_cfg.cmp && !m_opt.ra_down) {
        X2SEC_TRY(m_impl->store, cmp::open_sqlite_store(":memory:"));
        cmp::ServerConfig sc;
        sc.ca_cert = pki::up_ref(m_infra->cert());
        sc.ca_key = pki::up_ref(m_infra->key());
        // The CMP protection (RA) certificate needs digitalSignature: a separate end entity.
        X2SEC_TRY(auto ra, m_infra->issue("ra.operator.example", m_clock.unix_seconds() - 3600, 365));
        X2SEC_TRY(sc.ra_cert, pem_to_x509(ra.cert_pem));
        X2SEC_TRY(sc.ra_key, pki::private_key_from_pem(ra.key_pem.view()));
        sc.ra_chain.push_back(pki::up_ref(m_infra->cert()));
        sc.vendor_roots.push_back(pki::up_ref(m_vendor_a->cert()));
        if (!m_opt.vendor_b_unknown_to_ra) sc.vendor_roots.push_back(pki::up_ref(m_vendor_b->cert()));
        m_impl->cmp_server = std::make_unique<cmp::Server>(std::move(sc), *m_impl->store);
        cmp::HttpOptions ho;
        ho.bind = "127.0.0.1";
        ho.port = m_ports.at("cmp");
        ho.threads = 2;
        ho.max_per_source = ho.max_connections;  // every demo node connects from 127.0.0.1
        m_impl->http = std::make_unique<cmp::HttpServer>(*m_impl->cmp_server, ho);
        X2SEC_TRY_STATUS(m_impl->http->start());
    }
    // ---------------------------------------------------------------- IKE engines
    auto add_node = [&](const std::string& name, uint16_t port) -> Status {
        Impl::Node n;
        n.counters = std::make_unique<Counters>();
        n.backend = std::make_unique<esp::DataPlane>(*n.counters);
        ike::EngineConfig ec;
        ec.retransmit.timeout_ms = 1000;
        ec.retransmit.tries = 3;
        n.engine = std::make_unique<ike::Engine>(ec, *n.backend, m_impl->rng);
        n.expiries = std::make_unique<ChildSaEventQueue>();
        n.backend->set_events(n.expiries->events());
        n.ike_port = port;
        n.natt_port = uint16_t(port + 1);
        X2SEC_TRY_STATUS(m_impl->net.open(n.ike_port).ok() ? Status{} : Status(m_impl->net.open(n.ike_port).error()));
        auto natt = m_impl->net.open(n.natt_port);
        if (!natt.ok()) return natt.error();
        m_impl->owner[n.ike_port] = name;
        m_impl->owner[n.natt_port] = name;
        m_impl->nodes[name] = std::move(n);
        return {};
    };
    if (m_cfg.segw) X2SEC_TRY_STATUS(add_node("segw", m_cfg.segw->address.port));
    for (auto& h : m_cfg.henbs) X2SEC_TRY_STATUS(add_node(h.name, h.address.port));
    for (auto& h : m_cfg.henbs) m_agents[h.name] = std::make_unique<Agent>(m_cfg, h.name, make_operations(*this));
    return {};
}

// ---------------------------------------------------------------- the loopback fabric
Millis World::now() {
    return m_impl->now();
}
double World::clock_ms() {
    return ms_since(m_epoch);
}
Agent& World::agent(const std::string& henb) {
    return *m_agents.at(henb);
}
NodeKeys& World::keys(const std::string& henb) {
    return m_creds[henb];
}

Result<Carried> World::backhaul(const policy::HenbConfig& h) {
    auto& creds = m_creds[h.name];
    X2SEC_TRY(auto hid, ike::Identity::parse("fqdn:" + h.identity));
    X2SEC_TRY(auto sid, ike::Identity::parse("fqdn:" + m_cfg.segw->identity));
    IkeSide me{h.name, hid, IpAddress::v4(127, 0, 0, 1), h.address.port, creds.inner};
    IkeSide segw{"segw", sid, IpAddress::v4(127, 0, 0, 1), m_cfg.segw->address.port, IpAddress::v4(203, 0, 113, 1)};
    auto core = TrafficSelector::from_prefix(IpAddress::v4(203, 0, 113, 0), 24);
    X2SEC_TRY(auto mine, peer_config("segw", me, segw, Credential::VendorCertificate, creds.vendor.chain_pem,
                                     creds.vendor.key_pem, {{"operator", m_operator_root_pem}}, {}, core));
    X2SEC_TRY(auto theirs,
              peer_config(h.name, segw, me, Credential::VendorCertificate, m_segw_cred.chain_pem, m_segw_cred.key_pem,
                          {{"vendor-a", m_vendor_a->root_pem()}, {"vendor-b", m_vendor_b->root_pem()}}, {},
                          TrafficSelector::from_prefix(creds.inner, 32)));
    theirs.children[0].local_ts = {core};
    auto& n = m_impl->nodes[h.name];
    auto& s = m_impl->nodes["segw"];
    X2SEC_TRY_STATUS(m_impl->activate(h.name, mine));
    X2SEC_TRY_STATUS(m_impl->activate("segw", theirs));
    m_impl->net.reset(n.ike_port, s.ike_port);
    m_impl->net.reset(n.natt_port, s.natt_port);
    n.events.clear();
    s.events.clear();
    X2SEC_TRY_STATUS(n.engine->initiate("segw", m_impl->now()));
    bool ok = m_impl->pump_until(
        [&] {
            return glue::has_event(n.events, "segw", ike::Event::Kind::ChildSaUp) &&
                   glue::has_event(s.events, h.name, ike::Event::Kind::ChildSaUp);
        },
        [&] { return glue::failure_event(n.events, "segw") || glue::failure_event(s.events, h.name); }, 8000);
    if (!ok) {
        const auto* f = glue::failure_event(n.events, "segw");
        if (!f) f = glue::failure_event(s.events, h.name);
        return Error(ErrorDomain::Ike, f ? f->code : 0, f ? f->detail : "no answer from the SeGW");
    }
    Carried c;
    auto l1 = m_impl->net.link(n.ike_port, s.ike_port), l2 = m_impl->net.link(n.natt_port, s.natt_port);
    c.measure.messages = l1.datagrams + l2.datagrams;
    c.measure.bytes = l1.bytes + l2.bytes;
    c.measure.round_trips = l1.round_trips + l2.round_trips;
    c.detail = "IKE SA + Child SA with the SeGW (device certificate)";
    return c;
}

Result<Enrolled> World::enrol(const policy::HenbConfig& h) {
    auto& creds = m_creds[h.name];
    X2SEC_TRY(auto e, detail::enrol_operator(m_cfg.cmp->url, creds.vendor, m_operator_root_pem, h.identity,
                                             creds.op_key_token));
    Enrolled r{std::move(e.key_pem), std::move(e.cert_pem), e.serial_hex, {}};
    r.carried.measure.messages = e.messages;
    r.carried.measure.bytes = e.bytes;  // HTTP requests and responses incl. headers
    r.carried.detail = "serial " + e.serial_hex + ", issuer Operator Root CA";
    return r;
}

Result<FetchedKey> World::fetch_key(const policy::HenbConfig& h, const policy::NeighbourConfig& n) {
    auto& creds = m_creds[h.name];
    kds::TlsCredentials tc{creds.vendor.chain_pem, creds.vendor.key_pem, m_operator_root_pem};
    kds::KeyRequest req;
    req.request_id = os_rng().u32();
    req.requester = h.identity;
    req.peer = n.identity;
    kds::TransferStats st;
    X2SEC_TRY(auto resp,
              kds::fetch_key(m_cfg.kds->address.host, m_cfg.kds->address.port, m_cfg.kds->identity, tc, req, &st));
    FetchedKey k{std::move(resp.key), to_hex(resp.key_id), {}};
    k.carried.measure.messages = st.messages;
    k.carried.measure.bytes = st.bytes_sent + st.bytes_received;  // incl. the TLS 1.3 handshake
    k.carried.measure.round_trips = st.round_trips;
    k.carried.detail =
        "generation " + std::to_string(resp.generation) + ", lifetime " + std::to_string(resp.lifetime_s) + " s";
    return k;
}

Result<Carried> World::ike(IkeAttempt& at) {
    const IkeEnd& ia = at.initiator;
    const IkeEnd& ib = at.responder;
    auto& me = m_creds[ia.name];
    auto& them = m_creds[ib.name];
    X2SEC_TRY(auto myid, ike::Identity::parse("fqdn:" + ia.identity));
    X2SEC_TRY(auto theirid, ike::Identity::parse("fqdn:" + ib.identity));
    IkeSide a{ia.name, myid, IpAddress::v4(127, 0, 0, 1), ia.henb->address.port, me.inner};
    IkeSide b{ib.name, theirid, IpAddress::v4(127, 0, 0, 1), ib.henb->address.port, them.inner};
    std::optional<x509::Crl> crl;
    if (!m_crl_der.empty()) {
        auto c = x509::Crl::from_der(m_crl_der);
        if (c.ok()) crl = *c;
    }
    auto anchors_of = [&](const std::string& node) {
        std::vector<std::pair<std::string, std::string>> out;
        for (const auto& label : m_cfg.henb(node)->trust_anchors) {
            auto f = read_text_file(m_cfg.anchor(label)->file);
            if (f.ok()) out.emplace_back(label, *f);
        }
        return out;
    };
    X2SEC_TRY(auto pa, peer_config(ib.name, a, b, ia.cred, ia.cert_pem, ia.key_pem, anchors_of(ia.name), *ia.psk,
                                   TrafficSelector::from_prefix(them.inner, 32)));
    X2SEC_TRY(auto pb, peer_config(ia.name, b, a, ib.cred, ib.cert_pem, ib.key_pem, anchors_of(ib.name), *ib.psk,
                                   TrafficSelector::from_prefix(me.inner, 32)));
    if (crl && pa.trust) {
        auto t = std::make_shared<x509::TrustStore>(*pa.trust);
        t->add_crl(*crl);
        t->set_crl_check(true);
        pa.trust = t;
    }
    auto& na = m_impl->nodes[ia.name];
    auto& nb = m_impl->nodes[ib.name];
    X2SEC_TRY_STATUS(m_impl->activate(ia.name, pa));
    X2SEC_TRY_STATUS(m_impl->activate(ib.name, pb));
    m_impl->net.reset(na.ike_port, nb.ike_port);
    m_impl->net.reset(na.natt_port, nb.natt_port);
    na.events.clear();
    nb.events.clear();
    glue::CertreqGuard guard(*m_agents.at(ia.name), ia.cred, *na.engine, ib.name);
    m_impl->on_rx = [&](const std::string& node, const ike::Datagram& d) -> std::vector<ike::Datagram> {
        if (node != ia.name) return {};
        return guard.on_received(d, m_impl->now());
    };
    X2SEC_TRY_STATUS(na.engine->initiate(ib.name, m_impl->now()));
    bool ok =
        m_impl->pump_until([&] { return glue::both_child_up(na.events, ia.name, nb.events, ib.name); },
                           [&] { return glue::exchange_failed(guard, na.events, ia.name, nb.events, ib.name); }, 8000);
    m_impl->on_rx = nullptr;
    if (!ok) {
        std::string why = glue::classify_failure(na.events, nb.events, ia.cred, ib.cred, guard, at.failure,
                                                 at.responder_agent, ia.name, ib.name, m_impl->now());
        return Error(ErrorDomain::Ike, 0, why);
    }
    Carried c;
    auto l1 = m_impl->net.link(na.ike_port, nb.ike_port), l2 = m_impl->net.link(na.natt_port, nb.natt_port);
    c.measure.messages = l1.datagrams + l2.datagrams;
    c.measure.bytes = l1.bytes + l2.bytes;
    c.measure.round_trips = l1.round_trips + l2.round_trips;
    for (auto& sa : na.engine->list_sas())
        if (sa.peer == ib.name && sa.state == "ESTABLISHED") {
            c.detail = sa.encr + (sa.integ.empty() ? "" : "/" + sa.integ) + "/" + sa.prf + "/" + sa.dh + ", auth " +
                       sa.local_auth +
                       (sa.peer_cert_anchor.empty() ? "" : ", peer chains to '" + sa.peer_cert_anchor + "'");
        }
    return c;
}

void World::plain_traffic(CaseReport& c, const std::string& a, const std::string& b) {
    UdpNet net;
    auto pa = net.open(0), pb = net.open(0);
    if (!pa.ok() || !pb.ok()) {
        c.outcome = "cannot open loopback sockets";
        return;
    }
    auto t0 = std::chrono::steady_clock::now();
    auto mix_ab = x2_traffic_mix(m_creds[a].inner, m_creds[b].inner, m_opt.x2_messages);
    auto mix_ba = x2_traffic_mix(m_creds[b].inner, m_creds[a].inner, m_opt.x2_messages);
    auto run = [&](const std::vector<Bytes>& mix, uint16_t from, uint16_t to) {
        for (auto& pkt : mix) {
            net.send(from, to, pkt);
            c.x2_sent += 1;
            for (int tries = 0; tries < 50; ++tries) {
                auto rx = net.poll(20);
                bool got = false;
                for (auto& r : rx)
                    if (r.local_port == to) {
                        got = true;
                        if (r.data == pkt) c.x2_delivered_intact += 1;
                        // The wire carries the inner packet as is: X2AP and GTP-U readable.
                        if (contains(r.data, as_bytes("X2AP")) || contains(r.data, as_bytes("GTP-U")))
                            c.plaintext_on_wire = true;
                    }
                if (got) break;
            }
        }
    };
    run(mix_ab, *pa, *pb);
    run(mix_ba, *pb, *pa);
    auto l = net.link(*pa, *pb);
    c.traffic.messages = l.datagrams;
    c.traffic.bytes = l.bytes;
    c.traffic.time_ms = ms_since(t0);
}

void World::traffic(CaseReport& c, const std::string& a, const std::string& b) {
    auto* dpa = dynamic_cast<esp::DataPlane*>(m_impl->nodes[a].backend.get());
    auto* dpb = dynamic_cast<esp::DataPlane*>(m_impl->nodes[b].backend.get());
    if (!dpa || !dpb) return;
    esp::MemoryEndpoint ea(*dpa), eb(*dpb);
    ea.connect(eb);
    eb.connect(ea);
    std::vector<Bytes> delivered_a, delivered_b;
    ea.on_deliver = [&](BytesView p) { delivered_a.emplace_back(p.begin(), p.end()); };
    eb.on_deliver = [&](BytesView p) { delivered_b.emplace_back(p.begin(), p.end()); };
    auto tap = [&](Bytes& d) {
        c.traffic.messages += 1;
        c.traffic.bytes += d.size();
        if (contains(d, as_bytes("X2AP")) || contains(d, as_bytes("GTP-U"))) c.plaintext_on_wire = true;
        return true;
    };
    ea.on_wire = tap;
    eb.on_wire = tap;
    auto t0 = std::chrono::steady_clock::now();
    auto mix_ab = x2_traffic_mix(m_creds[a].inner, m_creds[b].inner, m_opt.x2_messages);
    auto mix_ba = x2_traffic_mix(m_creds[b].inner, m_creds[a].inner, m_opt.x2_messages);
    for (auto& p : mix_ab) ea.send(p, m_impl->now());
    for (auto& p : mix_ba) eb.send(p, m_impl->now());
    c.traffic.time_ms = ms_since(t0);
    c.x2_sent = mix_ab.size() + mix_ba.size();
    for (size_t i = 0; i < mix_ab.size() && i < delivered_b.size(); ++i)
        if (delivered_b[i] == mix_ab[i]) c.x2_delivered_intact += 1;
    for (size_t i = 0; i < mix_ba.size() && i < delivered_a.size(); ++i)
        if (delivered_a[i] == mix_ba[i]) c.x2_delivered_intact += 1;
}

CaseReport World::run_case(const std::string& id, const std::string& title, const std::string& a, const std::string& b,
                           Millis now) {
    CaseReport c;
    auto [aa, ab] = detail::case_agents(c, id, title, a, b, m_agents);
    if (aa == nullptr) return c;
    auto t0 = std::chrono::steady_clock::now();
    Millis t = m_impl->now() + now;
    ab->prepare(a, t);  // the responder decides on its own
    aa->prepare(b, t);
    if (aa->neighbour(b)->state == LinkState::Ready) aa->connect(b, m_impl->now() + now);
    // Revocation check (negative scenario): the RA/CA revokes the peer's operator certificate;
    // the initiator receives the CRL and re-runs IKEv2: the tunnel must not come up.
    if (id == "scenario2" && m_opt.revoke_peer_operator_cert && aa->neighbour(b)->state == LinkState::Up &&
        m_impl->cmp_server) {
        auto serial = from_hex(m_creds[b].op_serial_hex);
        auto st = serial ? m_impl->cmp_server->revoke(*serial, 1) : Status(Error("bad serial"));
        c.steps.push_back("[operator] revoked " + b + "'s operator certificate (serial " + m_creds[b].op_serial_hex +
                          "): " + (st.ok() ? "ok" : st.error().detail()));
        auto crl = m_impl->cmp_server->crl_der(static_cast<int64_t>(std::time(nullptr)));
        if (crl.ok()) {
            m_crl_der = *crl;
            c.steps.push_back("[operator] CRL published (" + std::to_string(crl->size()) + " bytes); " + a +
                              " now checks revocation");
        } else {
            c.steps.push_back("[operator] CRL unavailable: " + crl.error().detail());
        }
        aa->reset(b);
        ab->reset(a);
        aa->prepare(b, m_impl->now() + now);
        if (aa->neighbour(b)->state == LinkState::Ready) aa->connect(b, m_impl->now() + now);
    }
    double setup_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();

    auto* na = aa->neighbour(b);
    auto* nb = ab->neighbour(a);
    detail::record_negotiation(c, *na, *nb);
    c.setup.time_ms = setup_ms;

    if (na->state == LinkState::PlainX2 && nb->state == LinkState::PlainX2) {
        plain_traffic(c, a, b);
        c.ok = c.x2_sent > 0 && c.x2_delivered_intact == c.x2_sent;
        c.outcome = "plain X2, unprotected by policy: " + std::to_string(c.x2_delivered_intact) + "/" +
                    std::to_string(c.x2_sent) + " packets delivered";
        return c;
    }
    if (na->state == LinkState::Up && nb->state == LinkState::Up) {
        traffic(c, a, b);
        c.ok = c.available && c.x2_sent > 0 && c.x2_delivered_intact == c.x2_sent && !c.plaintext_on_wire;
        c.outcome = std::string("tunnel UP (") + to_string(na->credential) + "): " + na->tunnel_detail;
        if (c.x2_sent == 0) c.outcome += "; no X2 traffic sent";
        return c;
    }
    c.ok = false;
    c.outcome = detail::down_outcome(c, *na, *nb);
    return c;
}

namespace detail {

std::pair<Agent*, Agent*> case_agents(CaseReport& c, const std::string& id, const std::string& title,
                                      const std::string& a, const std::string& b,
                                      const std::map<std::string, std::unique_ptr<Agent>>& agents) {
    c.id = id;
    c.title = title;
    c.a = a;
    c.b = b;
    auto ia = agents.find(a), ib = agents.find(b);
    Agent* aa = ia != agents.end() ? ia->second.get() : nullptr;
    Agent* ab = ib != agents.end() ? ib->second.get() : nullptr;
    if (!aa || !ab || !aa->neighbour(b) || !ab->neighbour(a)) {
        c.available = false;
        c.not_available = "the deployment has no neighbour relation " + a + " <-> " + b;
        c.outcome = c.not_available;
        return {nullptr, nullptr};
    }
    return {aa, ab};
}

void record_negotiation(CaseReport& c, const NeighbourStatus& na, const NeighbourStatus& nb) {
    c.basis = na.decision.basis;
    if (na.decision.warning) c.warnings.push_back(*na.decision.warning);
    for (auto& s : nb.steps) c.steps.push_back("[" + c.b + "] " + s.text);
    for (auto& s : na.steps) c.steps.push_back("[" + c.a + "] " + s.text);
    for (const auto* side : {&na, &nb})
        for (auto& p : side->phases) {
            if (!p.ok) continue;
            c.phases[p.name] += p.measure;
            c.setup += p.measure;
        }
    c.setup.entities.insert(entity(c.a));
    c.setup.entities.insert(entity(c.b));
    c.state_a = to_string(na.state);
    c.state_b = to_string(nb.state);
}

std::string down_outcome(const CaseReport& c, const NeighbourStatus& na, const NeighbourStatus& nb) {
    return c.a + " " + c.state_a + (na.reason.empty() ? "" : " (" + na.reason + ")") + ", " + c.b + " " + c.state_b +
           (nb.reason.empty() ? "" : " (" + nb.reason + ")");
}

}  // namespace detail

}  // namespace x2sec::scenario
