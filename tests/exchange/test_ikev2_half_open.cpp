// The responder under an IKE_SA_INIT flood (bounded: 5,000 messages, in process): spoofed
// sources are answered statelessly with COOKIEs above cookie_threshold, sources that do answer
// COOKIEs are held at max_half_open_per_source and max_half_open, and a legitimate initiator
// (which answers the COOKIE) still establishes.  The figures are printed ("[ figures ]") and
// recorded in docs/ikev2.md.
#include <random>

#include "ikev2_harness.hpp"

namespace x2sec::test {
namespace {

constexpr int kFlood = 5000;

struct Flood {
    Pair p;
    Bytes init_template;  // a real IKE_SA_INIT request (valid KE), re-sent with other SPIs
    uint64_t next_spi = 0x5000'0000'0000'0001ull;
    size_t answered = 0, cookies = 0;

    static std::pair<PeerConfig, PeerConfig> peers() {
        auto pa = base_peer(true), pb = base_peer(false);
        pb.remote_addr = IpAddress{};  // a SeGW: any source address
        return {pa, pb};
    }
    static EngineConfig responder(uint32_t cookie_threshold, uint32_t cap, uint32_t per_source) {
        EngineConfig c;
        c.peers = {peers().second};
        c.cookie_threshold = cookie_threshold;
        c.max_half_open = cap;
        c.max_half_open_per_source = per_source;
        c.half_open_timeout_ms = 10000;
        return c;
    }
    explicit Flood(EngineConfig b) : p(make_a(), std::move(b), 3) {
        // The template comes from a throwaway initiator with the same configuration.
        TestBackend be;
        DeterministicRng rng(99);
        Engine e(p.a.cfg, be, rng);
        EXPECT_TRUE(e.initiate("to-b", p.clock.now()).ok());
        auto out = e.take_outgoing();
        EXPECT_EQ(out.size(), 1u);
        init_template = out.at(0).data;
    }
    static EngineConfig make_a() {
        EngineConfig c;
        c.peers = {peers().first};
        return c;
    }
    // Source address number i: 198.51.100.1.. then 203.0.113.1.. (documentation ranges).
    static IpAddress source(int i) {
        i %= 500;
        return i < 250 ? IpAddress::v4(198, 51, 100, static_cast<uint8_t>(1 + i))
                       : IpAddress::v4(203, 0, 113, static_cast<uint8_t>(1 + i - 250));
    }
    Datagram from(const IpAddress& src, const Bytes& data) {
        Datagram d;
        d.local = Endpoint{IpAddress::v4(192, 0, 2, 2), 500};
        d.remote = Endpoint{src, 500};
        d.data = data;
        return d;
    }
    Bytes init_with(uint64_t spi, const Bytes* cookie) {
        auto m = wire::Message::decode(init_template).value();
        m.header.spi_i = spi;
        if (cookie)
            m.payloads.insert(
                m.payloads.begin(),
                wire::Payload{wire::PayloadType::Notify, false,
                              wire::NotifyPayload{wire::ProtocolId::None, {}, wire::notify::Cookie, *cookie}});
        return m.encode();
    }
    // One IKE_SA_INIT from src; a source that can receive answers a COOKIE demand once.
    void send_init(const IpAddress& src, bool answers_cookies) {
        auto& b = *p.b.engine;
        uint64_t spi = next_spi++;
        b.handle_datagram(from(src, init_with(spi, nullptr)), p.clock.now());
        auto out = b.take_outgoing();
        answered += !out.empty();
        if (out.empty() || !answers_cookies) return;
        auto r = wire::Message::decode(out[0].data);
        if (!r.ok()) return;
        const auto* c = wire::find_notify(r->payloads, wire::notify::Cookie);
        if (!c) return;
        ++cookies;
        Bytes cookie = c->data;
        b.handle_datagram(from(src, init_with(spi, &cookie)), p.clock.now());
        (void)b.take_outgoing();
    }
    // The legitimate initiator (a) connects while the flood's half-open SAs are still there.
    bool legitimate_connects() {
        if (!p.a.engine->initiate("to-b", p.clock.now()).ok()) return false;
        p.pump();
        auto sas = p.a.engine->list_sas();
        return sas.size() == 1 && sas[0].state == "ESTABLISHED" && p.a.count(Event::Kind::ChildSaUp) == 1 &&
               p.b.count(Event::Kind::IkeSaUp) == 1;
    }
    size_t half_open() const {
        size_t n = 0;
        for (const auto& s : p.b.engine->list_sas()) n += s.state == "CONNECTING";
        return n;
    }
    void figures(const char* what) const {
        std::cout << "[ figures ] " << what << ": " << kFlood << " IKE_SA_INIT sent, half-open held " << half_open()
                  << ", COOKIEs sent " << p.b.counter("ike.tx.cookie") << ", dropped at the cap "
                  << p.b.counter("ike.rx.dropped.half_open_cap") << ", dropped at the per-source cap "
                  << p.b.counter("ike.rx.dropped.half_open_cap_per_source") << "\n";
    }
};

TEST(IkeHalfOpen, SpoofedFloodIsAnsweredWithCookiesAndALegitimateInitiatorEstablishes) {
    Flood f(Flood::responder(50, 500, 8));
    for (int i = 0; i < kFlood; ++i) f.send_init(Flood::source(i), false);  // spoofed: never answer
    f.figures("spoofed sources (500 addresses), cookie_threshold 50");
    EXPECT_EQ(f.half_open(), 50u);  // state only below the threshold
    EXPECT_EQ(f.p.b.counter("ike.tx.cookie"), static_cast<uint64_t>(kFlood - 50));
    EXPECT_EQ(f.p.b.counter("ike.rx.dropped.half_open_cap"), 0u);
    // The legitimate initiator answers the COOKIE and gets through.
    ASSERT_TRUE(f.legitimate_connects());
    EXPECT_EQ(f.p.b.counter("ike.tx.cookie"),
              static_cast<uint64_t>(kFlood - 50 + 1));  // a answered its COOKIE
    EXPECT_EQ(f.half_open(), 50u);
    EXPECT_TRUE(f.p.b.engine->check_indexes().ok());
}

TEST(IkeHalfOpen, CookieAnsweringSourcesAreHeldPerSource) {
    // 20 sources that receive (so they answer COOKIEs), 250 IKE_SA_INIT each: 8 half-open SAs
    // per source, 160 in all, below the overall cap; the legitimate initiator establishes.
    Flood f(Flood::responder(50, 500, 8));
    for (int i = 0; i < kFlood; ++i) f.send_init(Flood::source(i % 20), true);
    f.figures("20 cookie-answering sources, max_half_open_per_source 8");
    EXPECT_EQ(f.half_open(), 160u);
    EXPECT_EQ(f.p.b.counter("ike.rx.dropped.half_open_cap_per_source"), static_cast<uint64_t>(kFlood - 160));
    EXPECT_EQ(f.p.b.counter("ike.rx.dropped.half_open_cap"), 0u);
    ASSERT_TRUE(f.legitimate_connects());
    EXPECT_EQ(f.half_open(), 160u);
    EXPECT_TRUE(f.p.b.engine->check_indexes().ok());
}

TEST(IkeHalfOpen, OverallCapHoldsAndFreesWhenHalfOpenSasExpire) {
    // 500 cookie-answering sources, 10 each: the overall cap of 300 holds.  A legitimate
    // initiator is dropped while the table is full, and establishes once the half-open SAs
    // have expired (half_open_timeout 10 s).
    Flood f(Flood::responder(50, 300, 8));
    for (int i = 0; i < kFlood; ++i) f.send_init(Flood::source(i), true);
    f.figures("500 cookie-answering sources, max_half_open 300");
    EXPECT_EQ(f.half_open(), 300u);
    EXPECT_GT(f.p.b.counter("ike.rx.dropped.half_open_cap"), 0u);
    EXPECT_EQ(f.p.b.counter("ike.rx.dropped.half_open_cap") + f.p.b.counter("ike.rx.dropped.half_open_cap_per_source"),
              static_cast<uint64_t>(kFlood - 300));
    uint64_t capped = f.p.b.counter("ike.rx.dropped.half_open_cap");
    ASSERT_TRUE(f.p.a.engine->initiate("to-b", f.p.clock.now()).ok());
    f.p.pump();
    EXPECT_FALSE(f.p.established());
    EXPECT_EQ(f.p.b.counter("ike.rx.dropped.half_open_cap"), capped + 1);
    // The flood's half-open SAs expire; a's retransmission (with its COOKIE) gets through.
    for (int i = 0; i < 20 && !f.p.established(); ++i) {
        f.p.advance(1000);
        f.p.pump();
    }
    EXPECT_TRUE(f.p.established());
    EXPECT_EQ(f.half_open(), 0u);
    EXPECT_TRUE(f.p.b.engine->check_indexes().ok());
}

// A SeGW after a power cut: half-open SAs wait for the responder to get to their IKE_AUTH.  While
// the responder is loaded (cookie_threshold half-open SAs or more) and keeps bringing SAs up,
// half-open SAs are kept past half_open_timeout (up to 4 x), so their initiators are not
// stranded; once nothing comes up for 2 s they expire as before (sa/half_open_expiry.hpp).
struct Busy : Flood {
    Busy(uint32_t cookie_threshold) : Flood(responder(cookie_threshold, 500, 8)) {
        for (int i = 0; i < 100; ++i) send_init(source(i), true);  // 100 waiting half-open SAs
        EXPECT_EQ(half_open(), 100u);
    }
    // One second: the legitimate initiator brings one IKE SA up (each replaces the last).
    void serve_one_second() {
        EXPECT_TRUE(p.a.engine->initiate("to-b", p.clock.now()).ok());
        p.pump();
        p.advance(1000);
        p.pump();
    }
    uint64_t expired() const { return p.b.counter("ike.half_open_expired"); }
};

TEST(IkeHalfOpen, LoadedResponderThatKeepsServingKeepsHalfOpenSasPastTheTimeout) {
    Busy f(50);
    for (int s = 0; s < 15; ++s) f.serve_one_second();  // 15 s > half_open_timeout 10 s
    EXPECT_EQ(f.half_open(), 100u);
    EXPECT_EQ(f.expired(), 0u);
    EXPECT_EQ(f.p.b.counter("ike.half_open_extended"), 100u);  // once per SA
    EXPECT_GE(f.p.b.count(Event::Kind::IkeSaUp), 15u);
    // The responder stops bringing SAs up (the last came up 1 s ago): more than 2 s after the
    // last one (checked every second) they expire.
    f.p.advance(1000);
    f.p.pump();
    EXPECT_EQ(f.half_open(), 100u);
    f.p.advance(1000);
    f.p.pump();
    EXPECT_EQ(f.half_open(), 0u);
    EXPECT_EQ(f.expired(), 100u);
    EXPECT_TRUE(f.p.b.engine->check_indexes().ok());
}

TEST(IkeHalfOpen, KeptAtMostFourTimesTheTimeout) {
    Busy f(50);
    for (int s = 0; s < 39; ++s) f.serve_one_second();
    EXPECT_EQ(f.half_open(), 100u);
    f.serve_one_second();  // 40 s = 4 x half_open_timeout
    EXPECT_EQ(f.half_open(), 0u);
    EXPECT_EQ(f.expired(), 100u);
}

TEST(IkeHalfOpen, BelowTheCookieThresholdHalfOpenSasExpireOnTimeEvenWhileServing) {
    Busy f(500);  // 100 half-open SAs: not loaded
    for (int s = 0; s < 9; ++s) f.serve_one_second();
    EXPECT_EQ(f.half_open(), 100u);
    f.serve_one_second();  // 10 s
    EXPECT_EQ(f.half_open(), 0u);
    EXPECT_EQ(f.expired(), 100u);
    EXPECT_EQ(f.p.b.counter("ike.half_open_extended"), 0u);
}

// ------------------------------------------------------------------ the receive queue's COOKIE check
// Engine::check_init_cookie (what the runtime asks before it queues a new IKE_SA_INIT, so one
// with a valid COOKIE is served before a flood of plain ones) follows the engine's own rule:
// same secrets, the previous secret still valid, the one before that not; malformed requests
// are Malformed, never Valid, never a crash.

struct CookieProbe : Flood {
    static constexpr Millis kLifetime = 1000;
    static EngineConfig config() {
        auto c = Flood::responder(0, 500, 64);  // every IKE_SA_INIT without a COOKIE is asked for one
        c.cookie_secret_lifetime_ms = kLifetime;
        return c;
    }
    CookieProbe() : Flood(config()) {}
    // The COOKIE the responder demands from src for a plain IKE_SA_INIT with this SPI.
    Bytes demand(const IpAddress& src, uint64_t spi) {
        auto& b = *p.b.engine;
        b.handle_datagram(from(src, init_with(spi, nullptr)), p.clock.now());
        auto out = b.take_outgoing();
        EXPECT_EQ(out.size(), 1u);
        if (out.empty()) return {};
        auto m = wire::Message::decode(out[0].data);
        EXPECT_TRUE(m.ok());
        if (!m.ok()) return {};
        const auto* c = wire::find_notify(m->payloads, wire::notify::Cookie);
        EXPECT_NE(c, nullptr);
        return c ? c->data : Bytes{};
    }
    CookieCheck check(const IpAddress& src, const Bytes& data) {
        return p.b.engine->check_init_cookie(from(src, data));
    }
    // Handles the IKE_SA_INIT; true when the responder answered it with its SA (accepted), false
    // when with a (new) COOKIE demand.
    bool accepted(const IpAddress& src, const Bytes& data) {
        auto& b = *p.b.engine;
        b.handle_datagram(from(src, data), p.clock.now());
        auto out = b.take_outgoing();
        if (out.size() != 1) return false;
        auto m = wire::Message::decode(out[0].data);
        return m.ok() && !wire::find_notify(m->payloads, wire::notify::Cookie) &&
               wire::find_payload(m->payloads, wire::PayloadType::SA);
    }
};

const IpAddress kSrc = IpAddress::v4(198, 51, 100, 7);

TEST(IkeCookie, ValidCookieIsRecognisedAndWrongOnesAreNot) {
    CookieProbe f;
    constexpr uint64_t kSpi = 0x7700'0000'0000'0001ull;
    // Before the first IKE_SA_INIT there is no secret: nothing verifies.
    Bytes guess(CookieJar::kCookieSize, 0x01);
    EXPECT_EQ(f.check(kSrc, f.init_with(kSpi, nullptr)), CookieCheck::None);
    EXPECT_EQ(f.check(kSrc, f.init_with(kSpi, &guess)), CookieCheck::Bad);
    Bytes cookie = f.demand(kSrc, kSpi);
    ASSERT_EQ(cookie.size(), CookieJar::kCookieSize);
    EXPECT_EQ(f.check(kSrc, f.init_with(kSpi, &cookie)), CookieCheck::Valid);
    // One bit off, another initiator's address or SPI, a short one: bad.
    Bytes flipped = cookie;
    flipped.back() ^= 1;
    EXPECT_EQ(f.check(kSrc, f.init_with(kSpi, &flipped)), CookieCheck::Bad);
    Bytes version_off = cookie;
    version_off[3] ^= 1;
    EXPECT_EQ(f.check(kSrc, f.init_with(kSpi, &version_off)), CookieCheck::Bad);
    EXPECT_EQ(f.check(IpAddress::v4(198, 51, 100, 8), f.init_with(kSpi, &cookie)), CookieCheck::Bad);
    EXPECT_EQ(f.check(kSrc, f.init_with(kSpi + 1, &cookie)), CookieCheck::Bad);
    Bytes short_one(cookie.begin(), cookie.begin() + 8);
    EXPECT_EQ(f.check(kSrc, f.init_with(kSpi, &short_one)), CookieCheck::Bad);
    // The check changed nothing; the engine agrees: the wrong one is refused, the right one taken.
    EXPECT_EQ(f.p.b.counter("ike.rx.bad_cookie"), 0u);
    EXPECT_FALSE(f.accepted(kSrc, f.init_with(kSpi, &flipped)));
    EXPECT_EQ(f.p.b.counter("ike.rx.bad_cookie"), 1u);
    EXPECT_TRUE(f.accepted(kSrc, f.init_with(kSpi, &cookie)));
    EXPECT_EQ(f.half_open(), 1u);
}

TEST(IkeCookie, PreviousSecretIsValidTheOneBeforeIsNot) {
    CookieProbe f;
    constexpr uint64_t kSpi = 0x7800'0000'0000'0001ull;
    Bytes c1 = f.demand(kSrc, kSpi), c2 = f.demand(kSrc, kSpi + 1);
    f.p.advance(CookieProbe::kLifetime);  // one rotation: c1, c2 are of the previous secret
    EXPECT_EQ(f.check(kSrc, f.init_with(kSpi, &c1)), CookieCheck::Valid);
    EXPECT_EQ(f.check(kSrc, f.init_with(kSpi + 1, &c2)), CookieCheck::Valid);
    EXPECT_TRUE(f.accepted(kSrc, f.init_with(kSpi + 1, &c2)));
    Bytes c3 = f.demand(kSrc, kSpi + 2);  // of the current secret
    ASSERT_EQ(c3.size(), CookieJar::kCookieSize);
    EXPECT_NE(Bytes(c3.begin(), c3.begin() + 4), Bytes(c1.begin(), c1.begin() + 4)) << "a new secret version";
    f.p.advance(CookieProbe::kLifetime);  // two rotations: c1's secret is gone, c3's is the previous one
    EXPECT_EQ(f.check(kSrc, f.init_with(kSpi, &c1)), CookieCheck::Bad);
    EXPECT_EQ(f.check(kSrc, f.init_with(kSpi + 2, &c3)), CookieCheck::Valid);
    uint64_t bad = f.p.b.counter("ike.rx.bad_cookie");
    EXPECT_FALSE(f.accepted(kSrc, f.init_with(kSpi, &c1)));  // the engine's own check agrees
    EXPECT_EQ(f.p.b.counter("ike.rx.bad_cookie"), bad + 1);
    EXPECT_TRUE(f.accepted(kSrc, f.init_with(kSpi + 2, &c3)));
}

TEST(IkeCookie, TruncatedOrIncompleteInitsAreMalformedNeverValid) {
    CookieProbe f;
    constexpr uint64_t kSpi = 0x7900'0000'0000'0001ull;
    Bytes cookie = f.demand(kSrc, kSpi);
    Bytes full = f.init_with(kSpi, &cookie);
    ASSERT_EQ(f.check(kSrc, full), CookieCheck::Valid);
    // Every truncation: the header, or a payload running past the end.
    for (size_t n = 0; n < full.size(); ++n)
        EXPECT_EQ(f.check(kSrc, Bytes(full.begin(), full.begin() + static_cast<std::ptrdiff_t>(n))),
                  CookieCheck::Malformed)
            << n << " of " << full.size() << " octets";
    auto m = wire::Message::decode(full).value();
    // A COOKIE but no Nonce (the COOKIE cannot be checked; the engine refuses it as invalid syntax).
    auto no_nonce = m;
    std::erase_if(no_nonce.payloads, [](const wire::Payload& p) { return p.type == wire::PayloadType::Nonce; });
    ASSERT_EQ(no_nonce.payloads.size(), m.payloads.size() - 1);
    EXPECT_EQ(f.check(kSrc, no_nonce.encode()), CookieCheck::Malformed);
    // Two COOKIEs.
    auto two = m;
    two.payloads.insert(two.payloads.begin(), m.payloads.front());
    EXPECT_EQ(f.check(kSrc, two.encode()), CookieCheck::Malformed);
    // Not an IKE_SA_INIT request: a response, another exchange, a Message ID.
    for (auto tweak :
         {+[](wire::Message& x) { x.header.flags = static_cast<uint8_t>(x.header.flags | wire::kFlagResponse); },
          +[](wire::Message& x) { x.header.exchange = wire::ExchangeType::IkeAuth; },
          +[](wire::Message& x) { x.header.message_id = 1; }, +[](wire::Message& x) { x.header.spi_r = 5; }}) {
        auto t = m;
        tweak(t);
        EXPECT_EQ(f.check(kSrc, t.encode()), CookieCheck::Malformed);
    }
    // A payload length field that lies (past the end, below the generic header).
    for (uint16_t len : {uint16_t{0}, uint16_t{3}, uint16_t{0xffff}}) {
        Bytes lying = full;
        lying[28 + 2] = static_cast<uint8_t>(len >> 8);
        lying[28 + 3] = static_cast<uint8_t>(len);
        EXPECT_EQ(f.check(kSrc, lying), CookieCheck::Malformed) << len;
    }
    // Random bytes behind a valid IKE_SA_INIT header: never Valid, never a crash.
    std::mt19937 prng(151);  // fixed seed: reproducible
    for (int i = 0; i < 3000; ++i) {
        Bytes junk(full.begin(), full.begin() + 28);
        junk.resize(28 + static_cast<size_t>(prng() % 200));
        for (size_t k = 28; k < junk.size(); ++k) junk[k] = static_cast<uint8_t>(prng());
        if (i % 2) junk[16] = static_cast<uint8_t>(i % 4 ? 41 : 40);  // starts with a Notify or a Nonce
        EXPECT_NE(f.check(kSrc, junk), CookieCheck::Valid);
    }
}

}  // namespace
}  // namespace x2sec::test
