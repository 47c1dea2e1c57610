// Two IKEv2 engines in one process: fixed RNGs, a manual clock, in-memory Child SA backends,
// and a shuttle that carries datagrams between them (optionally dropping some).
#pragma once

#include <gtest/gtest.h>

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>
#include <x2sec/common/child_sa.hpp>
#include <x2sec/common/event_queue.hpp>
#include <x2sec/common/rng.hpp>
#include <x2sec/common/time.hpp>
#include <x2sec/crypto/crypto.hpp>
#include <x2sec/ikev2/engine.hpp>
#include <x2sec/ikev2/wire.hpp>
#include <x2sec/pki/pki.hpp>

namespace x2sec::test {

using namespace x2sec::ike;

inline IkeProposal proposal(const std::string& s) {
    return parse_ike_proposal(s).value();
}
inline ChildProposal child_proposal(const std::string& s) {
    return parse_child_proposal(s).value();
}

// One end: "a" is 192.0.2.1 protecting 203.0.113.1, "b" is 192.0.2.2 protecting 203.0.113.2.
inline PeerConfig base_peer(bool is_a) {
    PeerConfig p;
    p.name = is_a ? "to-b" : "to-a";
    p.local_addr = is_a ? IpAddress::v4(192, 0, 2, 1) : IpAddress::v4(192, 0, 2, 2);
    p.remote_addr = is_a ? IpAddress::v4(192, 0, 2, 2) : IpAddress::v4(192, 0, 2, 1);
    p.local_id = Identity::parse(is_a ? "fqdn:a.henb.example" : "fqdn:b.henb.example").value();
    p.remote_id = Identity::parse(is_a ? "fqdn:b.henb.example" : "fqdn:a.henb.example").value();
    p.local_auth = p.remote_auth = AuthMethod::Psk;
    p.psk = SecureBytes(as_bytes("x2 shared secret handed out by the network"));
    p.ike_proposals = {proposal("aes128gcm16-prfsha256-ecp256")};
    ChildConfig c;
    c.name = "x2";
    c.local_ts = {
        TrafficSelector::from_prefix(is_a ? IpAddress::v4(203, 0, 113, 1) : IpAddress::v4(203, 0, 113, 2), 32)};
    c.remote_ts = {
        TrafficSelector::from_prefix(is_a ? IpAddress::v4(203, 0, 113, 2) : IpAddress::v4(203, 0, 113, 1), 32)};
    c.proposals = {child_proposal("aes128gcm16")};
    p.children = {c};
    p.dpd_interval_ms = 0;
    p.ike_rekey_seconds = 0;
    p.children[0].rekey_seconds = 0;
    return p;
}

// base_peer() for a and b with a second child "x2u" (GTP-U only: UDP 2152 on a's side) besides "x2".
inline std::pair<PeerConfig, PeerConfig> two_child_peers() {
    auto pa = base_peer(true), pb = base_peer(false);
    ChildConfig u = pa.children[0];
    u.name = "x2u";
    u.local_ts[0].ip_protocol = 17;
    u.local_ts[0].start_port = u.local_ts[0].end_port = 2152;
    pa.children.push_back(u);
    ChildConfig ub = pb.children[0];
    ub.name = "x2u";
    ub.remote_ts[0].ip_protocol = 17;
    pb.children.push_back(ub);
    return {pa, pb};
}

// MemoryChildSaBackend plus what tests need to see: outbound switches, and a way to play the
// data plane reporting lifetime expiry.
struct TestBackend final : ChildSaBackend {
    MemoryChildSaBackend mem;
    std::vector<std::pair<uint32_t, uint32_t>> outbound_switches;
    Status install(const ChildSaParams& p) override { return mem.install(p); }
    Status remove(uint32_t spi) override { return mem.remove(spi); }
    Status set_outbound(uint32_t o, uint32_t n) override {
        outbound_switches.emplace_back(o, n);
        return mem.set_outbound(o, n);
    }
    std::vector<uint32_t> installed_spis() const { return mem.installed_spis(); }
    std::optional<ChildSaParams> find(uint32_t spi) const { return mem.find(spi); }
    size_t install_count() const { return mem.install_count(); }
    size_t remove_count() const { return mem.remove_count(); }
    void fire_soft_expiry(uint32_t spi) { m_events.soft_expired(spi); }
    void fire_hard_expiry(uint32_t spi) { m_events.hard_expired(spi); }
};

struct Node {
    EngineConfig cfg;
    TestBackend backend;
    // The backend's lifetime events, queued for the harness's loop (advance() hands them to the
    // engine, as the runtime's loop does).
    ChildSaEventQueue expiries;
    std::unique_ptr<DeterministicRng> rng;
    std::unique_ptr<Engine> engine;
    std::vector<Event> events;
    size_t count(Event::Kind k) const {
        size_t n = 0;
        for (const auto& e : events) n += e.kind == k;
        return n;
    }
    const Event* find(Event::Kind k) const {
        for (const auto& e : events)
            if (e.kind == k) return &e;
        return nullptr;
    }
    uint64_t counter(const std::string& name) const { return engine->counters().get(name); }
};

struct Pair {
    ManualClock clock{1000, 1'800'000'000};
    Node a, b;
    // Return true to drop a datagram (from_a: sent by a).
    std::function<bool(const Datagram&, bool from_a)> drop;
    // Runs first on every datagram carried: may rewrite it (see Tamper).
    std::function<void(Datagram&, bool from_a)> tamper;
    std::vector<std::pair<bool, Datagram>> log;  // everything that was sent

    Pair(PeerConfig pa, PeerConfig pb, uint64_t seed = 1) {
        a.cfg.peers = {std::move(pa)};
        b.cfg.peers = {std::move(pb)};
        start(seed);
    }
    Pair(EngineConfig ca, EngineConfig cb, uint64_t seed) {
        a.cfg = std::move(ca);
        b.cfg = std::move(cb);
        start(seed);
    }
    void start(uint64_t seed) {
        a.cfg.unix_time = [this] { return clock.unix_seconds(); };
        b.cfg.unix_time = [this] { return clock.unix_seconds(); };
        a.rng = std::make_unique<DeterministicRng>(seed * 2);
        b.rng = std::make_unique<DeterministicRng>(seed * 2 + 1);
        a.engine = std::make_unique<Engine>(a.cfg, a.backend, *a.rng);
        b.engine = std::make_unique<Engine>(b.cfg, b.backend, *b.rng);
        a.backend.set_events(a.expiries.events());
        b.backend.set_events(b.expiries.events());
    }

    // Carries datagrams until neither side has anything to send.  Returns the number carried.
    size_t pump(size_t max = 200) {
        size_t n = 0;
        for (size_t round = 0; round < max; ++round) {
            auto out_a = a.engine->take_outgoing();
            auto out_b = b.engine->take_outgoing();
            collect();
            if (out_a.empty() && out_b.empty()) break;
            for (auto& d : out_a) deliver(d, true), ++n;
            for (auto& d : out_b) deliver(d, false), ++n;
            collect();
        }
        return n;
    }
    void deliver(const Datagram& sent, bool from_a) {
        Datagram d = sent;
        if (tamper) tamper(d, from_a);
        log.emplace_back(from_a, d);
        if (drop && drop(d, from_a)) return;
        Datagram in;
        in.local = d.remote;
        in.remote = d.local;
        in.data = d.data;
        in.non_esp_marker = d.non_esp_marker;
        (from_a ? b : a).engine->handle_datagram(in, clock.now());
    }
    void collect() {
        for (auto& e : a.engine->take_events()) a.events.push_back(e);
        for (auto& e : b.engine->take_events()) b.events.push_back(e);
    }
    void advance(Millis ms) {
        clock.advance(ms);
        a.expiries.deliver(*a.engine, clock.now());
        b.expiries.deliver(*b.engine, clock.now());
        a.engine->tick(clock.now());
        b.engine->tick(clock.now());
    }
    bool connect() {
        if (!a.engine->initiate(a.cfg.peers[0].name, clock.now()).ok()) return false;
        pump();
        return established();
    }
    bool established() {
        auto sa = a.engine->list_sas(), sb = b.engine->list_sas();
        return sa.size() == 1 && sb.size() == 1 && sa[0].state == "ESTABLISHED" && sb[0].state == "ESTABLISHED";
    }
};

// A peer that misbehaves with correct keys: b's IKE SA keys (AES-GCM-16 SAs) are taken from
// its key logger, and `edit` may rewrite the decrypted payloads of every encrypted message
// carried (either direction; unfragmented), which is then re-encrypted with the same keys, so
// the receiver's integrity check passes.  IKE_SA_INIT messages (unprotected) are handed to
// `edit_plain`.  An edit returns true when it changed the message.
struct Tamper {
    using Edit = std::function<bool(const wire::Header&, std::vector<wire::Payload>&, bool from_a)>;
    Edit edit, edit_plain;
    std::map<std::pair<uint64_t, uint64_t>, IkeSaKeys> keys;
    DeterministicRng rng{4242};
    size_t edited = 0;

    void attach(Pair& p) {
        p.b.engine->set_key_logger([this](const IkeSaKeys& k) { keys[{k.spi_i, k.spi_r}] = k; }, nullptr);
        p.tamper = [this](Datagram& d, bool from_a) { rewrite(d, from_a); };
    }
    void rewrite(Datagram& d, bool from_a) {
        auto m = wire::Message::decode(d.data);
        if (!m.ok() || m->payloads.empty()) return;
        if (m->header.exchange == wire::ExchangeType::IkeSaInit) {
            if (edit_plain && edit_plain(m->header, m->payloads, from_a)) {
                d.data = m->encode();
                ++edited;
            }
            return;
        }
        auto* sk = m->payloads.back().as<wire::SkPayload>();
        auto it = keys.find({m->header.spi_i, m->header.spi_r});
        if (!sk || !edit || it == keys.end()) return;
        bool from_initiator = m->header.initiator();
        const SecureBytes& key = from_initiator ? it->second.sk_ei : it->second.sk_er;
        auto cipher = crypto::SkCipher::create(crypto::EncrId::AesGcm16, static_cast<unsigned>((key.size() - 4) * 8),
                                               crypto::IntegId::None, key, SecureBytes());
        if (!cipher.ok()) return;
        BytesView aad(d.data.data(), wire::kHeaderSize + wire::kGenericHeaderSize);
        auto pt = cipher->open(aad, sk->data);
        if (!pt.ok()) return;
        auto inner = wire::decode_chain(*pt, sk->inner_next);
        if (!inner.ok()) return;
        std::vector<wire::Payload> pl = std::move(inner).value();
        if (!edit(m->header, pl, from_a)) return;
        Writer in;
        uint8_t first = wire::encode_chain(in, pl);
        wire::Header h = m->header;
        h.next_payload = static_cast<uint8_t>(wire::PayloadType::SK);
        h.length = static_cast<uint32_t>(wire::kHeaderSize + wire::kGenericHeaderSize + cipher->sealed_size(in.size()));
        Writer w;
        h.encode(w);
        w.u8(first);
        w.u8(0);
        w.u16(static_cast<uint16_t>(wire::kGenericHeaderSize + cipher->sealed_size(in.size())));
        auto sealed = cipher->seal(w.data(), in.data(), rng);
        if (!sealed.ok()) return;
        w.bytes(*sealed);
        d.data = w.take();
        ++edited;
    }
    // Helpers for edits.
    static void erase(std::vector<wire::Payload>& pl, wire::PayloadType t) {
        std::erase_if(pl, [&](const wire::Payload& p) { return p.type == t; });
    }
    template <typename T>
    static T* body(std::vector<wire::Payload>& pl, wire::PayloadType t) {
        for (auto& p : pl)
            if (p.type == t)
                if (T* b = p.as<T>()) return b;
        return nullptr;
    }
};

// A small PKI over x2sec::pki: roots, intermediates, leaves, CRLs.
struct TestCa {
    pki::PkeyPtr key;
    pki::X509Ptr cert;
    x509::Certificate certificate() const { return x509::Certificate::from_der(pki::cert_der(cert.get())).value(); }
};

inline pki::NamePtr name(const std::string& cn, const std::string& o) {
    return pki::parse_name("/O=" + o + "/CN=" + cn).value();
}

inline TestCa make_root(const std::string& o, pki::KeyAlg alg = pki::KeyAlg::EcP256) {
    TestCa ca;
    ca.key = pki::generate_key(alg).value();
    auto n = name(o + " Root CA", o);
    pki::IssueRequest r;
    r.profile = pki::Profile::RootCa;
    r.subject = n.get();
    r.public_key = ca.key.get();
    r.validity_days = 3650;
    r.not_before = 1'700'000'000;
    r.not_after = 2'100'000'000;
    ca.cert = pki::issue_certificate(r, nullptr, ca.key.get()).value();
    return ca;
}

inline TestCa make_intermediate(const TestCa& root, const std::string& o, pki::KeyAlg alg = pki::KeyAlg::EcP256) {
    TestCa ca;
    ca.key = pki::generate_key(alg).value();
    auto n = name(o + " Issuing CA", o);
    pki::IssueRequest r;
    r.profile = pki::Profile::IntermediateCa;
    r.subject = n.get();
    r.public_key = ca.key.get();
    r.not_before = 1'700'000'000;
    r.not_after = 2'100'000'000;
    ca.cert = pki::issue_certificate(r, root.cert.get(), root.key.get()).value();
    return ca;
}

struct Leaf {
    pki::PkeyPtr key;
    pki::X509Ptr cert;
    std::shared_ptr<crypto::PrivateKey> signer;
    x509::Certificate certificate() const { return x509::Certificate::from_der(pki::cert_der(cert.get())).value(); }
};

// What a leaf may carry besides its name: validity, key, the revocation URLs a revocation test
// points at (cRLDistributionPoints, authorityInfoAccess id-ad-ocsp) and a chosen serial.
struct LeafOptions {
    int64_t not_before = 1'700'000'000;
    int64_t not_after = 2'000'000'000;
    pki::KeyAlg alg = pki::KeyAlg::EcP256;
    std::vector<std::string> crl_urls;
    std::vector<std::string> ocsp_urls;
    Bytes serial;  // empty: random
};

inline Leaf make_leaf(const TestCa& issuer, const std::string& fqdn, const LeafOptions& o) {
    Leaf l;
    l.key = pki::generate_key(o.alg).value();
    auto n = name(fqdn, "x2sec test");
    pki::IssueRequest r;
    r.profile = pki::Profile::BaseStation;
    r.subject = n.get();
    r.public_key = l.key.get();
    r.dns = {fqdn};
    r.crl_urls = o.crl_urls;
    r.ocsp_urls = o.ocsp_urls;
    r.serial = o.serial;
    r.not_before = o.not_before;
    r.not_after = o.not_after;
    l.cert = pki::issue_certificate(r, issuer.cert.get(), issuer.key.get()).value();
    auto pem = pki::private_key_pem(l.key.get()).value();
    l.signer = std::make_shared<crypto::PrivateKey>(crypto::PrivateKey::from_pem(pem).value());
    return l;
}

inline Leaf make_leaf(const TestCa& issuer, const std::string& fqdn, int64_t not_before = 1'700'000'000,
                      int64_t not_after = 2'000'000'000, pki::KeyAlg alg = pki::KeyAlg::EcP256) {
    LeafOptions o;
    o.not_before = not_before;
    o.not_after = not_after;
    o.alg = alg;
    return make_leaf(issuer, fqdn, o);
}

// A leaf whose cRLDistributionPoints names crl_url (the CRL a revocation checker fetches).
inline Leaf make_leaf_with_cdp(const TestCa& issuer, const std::string& fqdn, const std::string& crl_url) {
    LeafOptions o;
    o.crl_urls = {crl_url};
    return make_leaf(issuer, fqdn, o);
}

// Why a node refused (its first AuthFailed event), for assertion messages ("" when it did not);
// and that event's code, -1 when there was none.
inline std::string why_failed(const Node& n) {
    const Event* f = n.find(Event::Kind::AuthFailed);
    return f ? f->detail : "";
}
inline int failure_code(const Node& n) {
    const Event* f = n.find(Event::Kind::AuthFailed);
    return f ? f->code : -1;
}

// Switches a peer config to certificate authentication.
inline void use_cert(PeerConfig& p, const Leaf& leaf, std::vector<x509::Certificate> intermediates,
                     std::shared_ptr<const x509::TrustStore> trust) {
    p.local_auth = p.remote_auth = AuthMethod::Certificate;
    p.psk = SecureBytes();
    p.private_key = leaf.signer;
    p.cert_chain = {leaf.certificate()};
    for (auto& c : intermediates) p.cert_chain.push_back(c);
    p.trust = std::move(trust);
}

// After an IKE_AUTH the responder refused: the initiator was told (AUTHENTICATION_FAILED from
// the peer: an AuthFailed event with PeerRejected), and neither end holds an IKE SA or an
// installed Child SA.
inline void expect_refused_by_responder(const Pair& p) {
    const Event* fa = p.a.find(Event::Kind::AuthFailed);
    ASSERT_NE(fa, nullptr);
    EXPECT_EQ(fa->code, auth_failure::PeerRejected);
    EXPECT_TRUE(p.a.backend.installed_spis().empty());
    EXPECT_TRUE(p.b.backend.installed_spis().empty());
    EXPECT_TRUE(p.a.engine->list_sas().empty());
    EXPECT_TRUE(p.b.engine->list_sas().empty());
}

}  // namespace x2sec::test
