// Keyed fuzz harness: two engines (a initiates, b responds; PSK, AES-GCM, fixed seeds, manual
// clock) run a real IKE_SA_INIT (and, for the later exchanges, a real IKE_AUTH), then one
// message of a chosen exchange is replaced by the fuzzer's: the input is the PLAINTEXT inner
// payload chain plus a few header bits, which the harness encrypts and integrity-protects with
// the IKE SA's real keys (exported by the key logger), so every mutation passes the ICV check
// and reaches the exchange's payload processing.
//
// Input: [scenario][flags][first payload type][inner payload chain ...]
//   scenario  selects where the message goes (Scenario below, modulo the target's list)
//   flags     bit 0 toggle the Response flag, bit 1 toggle the Initiator flag, bit 2 Message ID
//             +1, bit 3 Message ID -1, bit 4 swap CREATE_CHILD_SA <-> INFORMATIONAL (IKE_AUTH
//             <-> CREATE_CHILD_SA for the IKE_AUTH scenarios), bit 5 corrupt the ICV, bit 6 set
//             the critical bit on the SK payload, bit 7 send it twice (a replay)
//   first     the SK payload's Next Payload (type of the first inner payload)
// After the message the engines exchange whatever follows, the clock runs through
// retransmissions and timers, and both engines' internal indexes are checked.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>
#include <x2sec/common/codec.hpp>
#include <x2sec/common/log.hpp>

#include "../../exchange/ikev2_harness.hpp"

namespace x2sec::test::keyed {

enum class Scenario : uint8_t {
    // Requests to the responder b.
    AuthRequest = 0,           // IKE_AUTH request (after IKE_SA_INIT)
    CreateChildRequest = 1,    // CREATE_CHILD_SA request on the established IKE SA
    InformationalRequest = 2,  // INFORMATIONAL request
    // Responses to the initiator a, to its own request of that exchange.
    AuthResponse = 3,        // IKE_AUTH response
    NewChildResponse = 4,    // CREATE_CHILD_SA response: a asked for a new Child SA ("x2u")
    ChildRekeyResponse = 5,  // CREATE_CHILD_SA response: a rekeys Child SA "x2"
    IkeRekeyResponse = 6,    // CREATE_CHILD_SA response: a rekeys the IKE SA
    DeleteResponse = 7,      // INFORMATIONAL response: a deletes Child SA "x2"
    LivenessResponse = 8,    // INFORMATIONAL response: a's empty liveness check
    // Requests from b to the initiator a (the other direction).
    InformationalToInitiator = 9,
    CreateChildToInitiator = 10,
    Count = 11,
};

inline const char* name(Scenario s) {
    static const char* names[] = {
        "auth_request",       "create_child_request",       "informational_request",    "auth_response",
        "new_child_response", "child_rekey_response",       "ike_rekey_response",       "delete_response",
        "liveness_response",  "informational_to_initiator", "create_child_to_initiator"};
    return static_cast<size_t>(s) < std::size(names) ? names[static_cast<size_t>(s)] : "?";
}

inline bool to_responder(Scenario s) {
    return s <= Scenario::InformationalRequest;
}

struct Outcome {
    bool opened = false;                                // the receiver decrypted it (no integrity failure)
    uint64_t invalid_syntax = 0;                        // the receiver's ike.rx.invalid_syntax grew by this much
    bool a_established = false, b_established = false;  // an ESTABLISHED IKE SA at the end
    std::string index_error;                            // the engines' internal indexes disagree (a finding)
    size_t a_children = 0, b_children = 0;
};

inline Bytes encode_input(Scenario s, uint8_t flags, uint8_t first, BytesView chain) {
    Bytes b{static_cast<uint8_t>(s), flags, first};
    b.insert(b.end(), chain.begin(), chain.end());
    return b;
}

struct World {
    Pair p;
    std::vector<IkeSaKeys> keys;
    World() : p(two_child_peers().first, two_child_peers().second, 7) {
        p.a.engine->set_key_logger([this](const IkeSaKeys& k) { keys.push_back(k); }, nullptr);
    }

    static Datagram to(bool to_a, Bytes data) {
        Datagram d;
        d.local = Endpoint{to_a ? IpAddress::v4(192, 0, 2, 1) : IpAddress::v4(192, 0, 2, 2), 500};
        d.remote = Endpoint{to_a ? IpAddress::v4(192, 0, 2, 2) : IpAddress::v4(192, 0, 2, 1), 500};
        d.data = std::move(data);
        return d;
    }
    void deliver(bool to_a, const Bytes& data) {
        (to_a ? p.a : p.b).engine->handle_datagram(to(to_a, data), p.clock.now());
    }
    // Carries one round: what each side has queued goes to the other.
    void exchange_once() {
        auto out_a = p.a.engine->take_outgoing();
        auto out_b = p.b.engine->take_outgoing();
        for (auto& d : out_a) deliver(false, d.data);
        for (auto& d : out_b) deliver(true, d.data);
        p.collect();
    }

    // Seals a message from `from_a`'s side with the current IKE SA's keys.
    Bytes seal(bool from_a, wire::ExchangeType ex, uint8_t flags, uint32_t mid, uint8_t first, BytesView chain,
               bool critical_sk, bool corrupt) const {
        const IkeSaKeys& k = keys.back();
        // a is the original initiator: it sends with SK_ei; b with SK_er (a rekeyed IKE SA keeps
        // the roles of the exchange that created it; these scenarios never use a rekeyed one).
        auto c = crypto::SkCipher::create(crypto::EncrId::AesGcm16, 128, crypto::IntegId::None,
                                          from_a ? k.sk_ei : k.sk_er, SecureBytes())
                     .value();
        Writer w;
        wire::Header h;
        h.spi_i = k.spi_i;
        h.spi_r = k.spi_r;
        h.exchange = ex;
        h.flags = flags;
        h.message_id = mid;
        h.next_payload = static_cast<uint8_t>(wire::PayloadType::SK);
        size_t sealed_len = c.sealed_size(chain.size());
        h.length = static_cast<uint32_t>(wire::kHeaderSize + wire::kGenericHeaderSize + sealed_len);
        h.encode(w);
        w.u8(first);
        w.u8(critical_sk ? 0x80 : 0);
        w.u16(static_cast<uint16_t>(wire::kGenericHeaderSize + sealed_len));
        DeterministicRng rng(99);
        auto sealed = c.seal(w.data(), chain, rng).value();
        if (corrupt) sealed.back() ^= 0x01;
        w.bytes(sealed);
        return w.take();
    }

    // Opens a message sent by `from_a` with the current keys: header, SK Next Payload, plaintext.
    struct Plain {
        wire::Header header;
        uint8_t first = 0;
        Bytes chain;
    };
    std::optional<Plain> open(bool from_a, const Bytes& data) const {
        auto m = wire::Message::decode(data);
        if (!m || m->payloads.size() != 1) return std::nullopt;
        auto* sk = m->payloads[0].as<wire::SkPayload>();
        if (!sk) return std::nullopt;
        const IkeSaKeys& k = keys.back();
        auto c = crypto::SkCipher::create(crypto::EncrId::AesGcm16, 128, crypto::IntegId::None,
                                          from_a ? k.sk_ei : k.sk_er, SecureBytes())
                     .value();
        auto pt = c.open(BytesView(data.data(), wire::kHeaderSize + wire::kGenericHeaderSize), sk->data);
        if (!pt) return std::nullopt;
        return Plain{m->header, sk->inner_next, std::move(pt).value()};
    }

    uint64_t sa_id(const Node& n) const {
        auto sas = n.engine->list_sas();
        return sas.empty() ? 0 : sas[0].id;
    }
    uint32_t child_spi(const Node& n, const std::string& child) const {
        for (const auto& s : n.engine->list_sas())
            for (const auto& c : s.children)
                if (c.name == child) return c.spi_in;
        return 0;
    }
};

// What the scenario's sender would put in the header; the message the fuzz input replaces.
struct Slot {
    bool to_a = false;  // receiver
    wire::ExchangeType exchange{};
    uint8_t flags = 0;
    uint32_t mid = 0;
    std::optional<Bytes> real;       // the real message the engine (the sender) produced, if any
    std::optional<Bytes> a_request;  // response scenarios: a's request (a seed for the responder)
};

// Brings the world to the scenario's point.  Returns nullopt if the set-up failed (a bug in
// the engine's happy path; the caller aborts).  With `record`, a's request of a response
// scenario goes to b so that b's real response is recorded (for the seeds); without, b never
// sees it (a retransmits it later, and b's real answer then follows the fuzzed one).
inline std::optional<Slot> prepare(World& w, Scenario s, bool record = false) {
    auto& p = w.p;
    const Millis now = p.clock.now();
    if (!p.a.engine->initiate(p.a.cfg.peers[0].name, now).ok()) return std::nullopt;
    w.exchange_once();  // IKE_SA_INIT request -> b
    auto init_resp = p.b.engine->take_outgoing();
    if (init_resp.size() != 1) return std::nullopt;
    w.deliver(true, init_resp[0].data);  // response -> a, which now sends IKE_AUTH
    auto auth = p.a.engine->take_outgoing();
    if (auth.size() != 1 || w.keys.empty()) return std::nullopt;
    Slot slot;
    if (s == Scenario::AuthRequest) {
        slot = Slot{false, wire::ExchangeType::IkeAuth, wire::kFlagInitiator, 1, auth[0].data, std::nullopt};
        return slot;
    }
    w.deliver(false, auth[0].data);
    auto auth_resp = p.b.engine->take_outgoing();
    if (auth_resp.size() != 1) return std::nullopt;
    if (s == Scenario::AuthResponse) {
        slot = Slot{true, wire::ExchangeType::IkeAuth, wire::kFlagResponse, 1, auth_resp[0].data, std::nullopt};
        return slot;
    }
    w.deliver(true, auth_resp[0].data);
    p.collect();
    if (!p.established()) return std::nullopt;
    const uint64_t ida = w.sa_id(p.a), idb = w.sa_id(p.b);
    const uint32_t x2a = w.child_spi(p.a, "x2"), x2b = w.child_spi(p.b, "x2");
    // The requests whose answers the scenarios replace (and, for the seeds, whose real
    // counterparts are recorded).
    auto a_request = [&](Status st, wire::ExchangeType ex) -> std::optional<Slot> {
        if (!st.ok()) return std::nullopt;
        auto out = p.a.engine->take_outgoing();
        if (out.size() != 1) return std::nullopt;
        auto h = wire::Header::decode(out[0].data);
        if (!h) return std::nullopt;
        Slot r{true, ex, wire::kFlagResponse, h->message_id, std::nullopt, out[0].data};
        if (record) {
            w.deliver(false, out[0].data);  // b answers it: the real response
            auto resp = p.b.engine->take_outgoing();
            p.collect();
            if (resp.size() == 1) r.real = resp[0].data;
        }
        return r;
    };
    auto b_request = [&](Status st, wire::ExchangeType ex) -> std::optional<Slot> {
        if (!st.ok()) return std::nullopt;
        auto out = p.b.engine->take_outgoing();
        if (out.size() != 1) return std::nullopt;
        auto h = wire::Header::decode(out[0].data);
        if (!h) return std::nullopt;
        return Slot{true, ex, 0, h->message_id, out[0].data, std::nullopt};
    };
    switch (s) {
        case Scenario::CreateChildRequest:
        case Scenario::InformationalRequest: {
            // a's next request would be #2; the real one for the seeds is a's child rekey / DPD.
            auto st = s == Scenario::CreateChildRequest ? p.a.engine->rekey_child(ida, x2a, now)
                                                        : p.a.engine->send_dpd(ida, now);
            if (!st.ok()) return std::nullopt;
            auto out = p.a.engine->take_outgoing();
            if (out.size() != 1) return std::nullopt;
            return Slot{false,
                        s == Scenario::CreateChildRequest ? wire::ExchangeType::CreateChildSa
                                                          : wire::ExchangeType::Informational,
                        wire::kFlagInitiator,
                        2,
                        out[0].data,
                        std::nullopt};
        }
        case Scenario::NewChildResponse:
            return a_request(p.a.engine->create_child(ida, "x2u", now), wire::ExchangeType::CreateChildSa);
        case Scenario::ChildRekeyResponse:
            return a_request(p.a.engine->rekey_child(ida, x2a, now), wire::ExchangeType::CreateChildSa);
        case Scenario::IkeRekeyResponse:
            return a_request(p.a.engine->rekey_ike(ida, now), wire::ExchangeType::CreateChildSa);
        case Scenario::DeleteResponse:
            return a_request(p.a.engine->delete_child(ida, x2a, now), wire::ExchangeType::Informational);
        case Scenario::LivenessResponse:
            return a_request(p.a.engine->send_dpd(ida, now), wire::ExchangeType::Informational);
        case Scenario::InformationalToInitiator:
            return b_request(p.b.engine->delete_child(idb, x2b, now), wire::ExchangeType::Informational);
        case Scenario::CreateChildToInitiator:
            return b_request(p.b.engine->rekey_child(idb, x2b, now), wire::ExchangeType::CreateChildSa);
        default:
            return std::nullopt;
    }
}

// Runs one input.  Outcome::index_error says whether the engines' internal indexes disagree
// afterwards (the fuzz targets abort on it: a finding).
inline Outcome run(BytesView input, std::span<const Scenario> scenarios) {
    Outcome o;
    if (input.size() < 3 || scenarios.empty()) return o;
    const Scenario s = scenarios[input[0] % scenarios.size()];
    const uint8_t flags = input[1], first = input[2];
    BytesView chain = input.subspan(3);
    World w;
    auto slot = prepare(w, s);
    if (!slot) {
        std::fprintf(stderr, "keyed harness: set-up of %s failed\n", name(s));
        std::abort();
    }
    Node& rx = slot->to_a ? w.p.a : w.p.b;
    (void)(slot->to_a ? w.p.b : w.p.a).engine->take_outgoing();  // the real message is replaced
    uint8_t hflags = slot->flags;
    if (flags & 1) hflags ^= wire::kFlagResponse;
    if (flags & 2) hflags ^= wire::kFlagInitiator;
    uint32_t mid = slot->mid;
    if (flags & 4) mid += 1;
    if (flags & 8) mid -= 1;
    wire::ExchangeType ex = slot->exchange;
    if (flags & 16) {
        using E = wire::ExchangeType;
        ex = ex == E::CreateChildSa   ? E::Informational
             : ex == E::Informational ? E::CreateChildSa
             : ex == E::IkeAuth       ? E::CreateChildSa
                                      : E::IkeAuth;
    }
    const uint64_t icv_before = rx.counter("ike.rx.integrity_check_failed");
    const uint64_t syntax_before = rx.counter("ike.rx.invalid_syntax");
    Bytes msg = w.seal(!slot->to_a, ex, hflags, mid, first, chain, flags & 64, flags & 32);
    w.deliver(slot->to_a, msg);
    if (flags & 128) w.deliver(slot->to_a, msg);
    o.opened = rx.counter("ike.rx.integrity_check_failed") == icv_before;
    o.invalid_syntax = rx.counter("ike.rx.invalid_syntax") - syntax_before;
    // Whatever follows: answers, new requests, retransmissions, expiries.
    w.p.pump(50);
    for (int i = 0; i < 6; ++i) {
        w.p.advance(10'000);
        w.p.pump(50);
    }
    for (Node* n : {&w.p.a, &w.p.b}) {
        if (auto st = n->engine->check_indexes(); !st.ok() && o.index_error.empty())
            o.index_error = std::string(n == &w.p.a ? "initiator a" : "responder b") + " after " + name(s) + ": " +
                            st.error().detail();
        (void)n->engine->next_deadline();
    }
    auto established = [](const std::vector<IkeSaInfo>& v) {
        for (const auto& i : v)
            if (i.state == "ESTABLISHED") return true;
        return false;
    };
    o.a_established = established(w.p.a.engine->list_sas());
    o.b_established = established(w.p.b.engine->list_sas());
    o.a_children = w.p.a.backend.installed_spis().size();
    o.b_children = w.p.b.backend.installed_spis().size();
    return o;
}

// Seed inputs for a target with these scenarios: the real message of each, decrypted (what a
// correct peer sends); for the responder's CREATE_CHILD_SA and INFORMATIONAL requests every
// request a makes in the response scenarios (new Child SA, Child SA rekey, IKE SA rekey,
// delete, liveness check).  Each seed: {scenario, file name stem, input}.
struct Seed {
    Scenario scenario;
    std::string stem;
    Bytes input;
};
inline std::vector<Seed> record_seeds(std::span<const Scenario> scenarios) {
    std::vector<Seed> out;
    auto index_of = [&](Scenario s) -> std::optional<uint8_t> {
        for (size_t i = 0; i < scenarios.size(); ++i)
            if (scenarios[i] == s) return static_cast<uint8_t>(i);
        return std::nullopt;
    };
    for (uint8_t i = 0; i < static_cast<uint8_t>(Scenario::Count); ++i) {
        auto s = static_cast<Scenario>(i);
        World w;
        auto slot = prepare(w, s, true);
        if (!slot) continue;
        if (auto idx = index_of(s); idx && slot->real)
            if (auto plain = w.open(!slot->to_a, *slot->real))
                out.push_back({s, name(s), encode_input(static_cast<Scenario>(*idx), 0, plain->first, plain->chain)});
        if (slot->a_request) {
            auto plain = w.open(true, *slot->a_request);
            if (!plain) continue;
            Scenario rs = plain->header.exchange == wire::ExchangeType::CreateChildSa ? Scenario::CreateChildRequest
                                                                                      : Scenario::InformationalRequest;
            if (auto idx = index_of(rs))
                out.push_back({rs, std::string(name(rs)) + "_as_" + name(s),
                               encode_input(static_cast<Scenario>(*idx), 0, plain->first, plain->chain)});
        }
    }
    return out;
}

// The fuzz targets' body.
inline void fuzz_one(BytesView input, std::span<const Scenario> scenarios) {
    auto o = run(input, scenarios);
    if (!o.index_error.empty()) {
        std::fprintf(stderr, "keyed harness: engine indexes disagree: %s\n", o.index_error.c_str());
        std::abort();
    }
}

inline void quiet() {
    static bool once = [] {
        log::set_level("off");
        return true;
    }();
    (void)once;
}

inline constexpr Scenario kResponderScenarios[] = {Scenario::AuthRequest, Scenario::CreateChildRequest,
                                                   Scenario::InformationalRequest};
inline constexpr Scenario kInitiatorScenarios[] = {Scenario::AuthResponse,
                                                   Scenario::NewChildResponse,
                                                   Scenario::ChildRekeyResponse,
                                                   Scenario::IkeRekeyResponse,
                                                   Scenario::DeleteResponse,
                                                   Scenario::LivenessResponse,
                                                   Scenario::InformationalToInitiator,
                                                   Scenario::CreateChildToInitiator};

}  // namespace x2sec::test::keyed
