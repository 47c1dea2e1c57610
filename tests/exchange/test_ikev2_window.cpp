// Message ID window (RFC 7296 2.3, 3.10.1): requests outside the window are never processed or
// acknowledged; an authenticated one ahead of the window on an established IKE SA draws an
// INVALID_MESSAGE_ID notify in a new INFORMATIONAL request (rate limited), everything else is
// dropped silently.  The test plays the initiator's side of the wire with the IKE SA keys the
// key logger exports, so it can send authenticated requests with any Message ID.
#include <gtest/gtest.h>

#include <x2sec/common/codec.hpp>

#include "ikev2_harness.hpp"

using namespace x2sec;
using namespace x2sec::ike;
using namespace x2sec::test;

namespace {

crypto::SkCipher gcm128(const SecureBytes& key) {
    return crypto::SkCipher::create(crypto::EncrId::AesGcm16, 128, crypto::IntegId::None, key, SecureBytes()).value();
}

// A protected message as `a` (the original initiator) would send it to b.
Bytes seal_from_a(const IkeSaKeys& k, wire::ExchangeType ex, uint32_t mid, const std::vector<wire::Payload>& inner,
                  bool response = false, bool corrupt = false) {
    Writer body;
    uint8_t first = wire::encode_chain(body, inner);
    auto c = gcm128(k.sk_ei);
    Writer w;
    wire::Header h;
    h.spi_i = k.spi_i;
    h.spi_r = k.spi_r;
    h.exchange = ex;
    h.flags = static_cast<uint8_t>(wire::kFlagInitiator | (response ? wire::kFlagResponse : 0));
    h.message_id = mid;
    h.next_payload = static_cast<uint8_t>(wire::PayloadType::SK);
    size_t sealed_len = c.sealed_size(body.data().size());
    h.length = static_cast<uint32_t>(wire::kHeaderSize + wire::kGenericHeaderSize + sealed_len);
    h.encode(w);
    w.u8(first);
    w.u8(0);
    w.u16(static_cast<uint16_t>(wire::kGenericHeaderSize + sealed_len));
    DeterministicRng rng(99);
    auto sealed = c.seal(w.data(), body.data(), rng).value();
    if (corrupt) sealed.back() ^= 0x01;
    w.bytes(sealed);
    return w.take();
}

// Opens a message b sent to a; returns its header and inner payloads.
struct Opened {
    wire::Header header;
    std::vector<wire::Payload> payloads;
};
Opened open_from_b(const IkeSaKeys& k, const Bytes& data) {
    auto m = wire::Message::decode(data).value();
    auto* sk = m.payloads.at(0).as<wire::SkPayload>();
    EXPECT_NE(sk, nullptr);
    auto c = gcm128(k.sk_er);
    auto pt = c.open(BytesView(data.data(), wire::kHeaderSize + wire::kGenericHeaderSize), sk->data).value();
    return Opened{m.header, wire::decode_chain(pt, sk->inner_next).value()};
}

struct Established {
    Pair p{base_peer(true), base_peer(false)};
    std::vector<IkeSaKeys> keys;
    Established() {
        p.a.engine->set_key_logger([this](const IkeSaKeys& k) { keys.push_back(k); }, nullptr);
    }
    // a -> b, as delivered by the network.
    void inject(const Bytes& data) {
        Datagram d;
        d.local = Endpoint{IpAddress::v4(192, 0, 2, 2), 500};
        d.remote = Endpoint{IpAddress::v4(192, 0, 2, 1), 500};
        d.data = data;
        p.b.engine->handle_datagram(d, p.clock.now());
    }
};

}  // namespace

TEST(IkeWindow, AuthenticatedRequestAheadOfWindowDrawsInvalidMessageId) {
    Established t;
    ASSERT_TRUE(t.p.connect());
    ASSERT_EQ(t.keys.size(), 1u);
    const auto& k = t.keys[0];
    // b expects request #2 next (IKE_SA_INIT #0, IKE_AUTH #1).  a's request #7 is authentic.
    t.inject(seal_from_a(k, wire::ExchangeType::Informational, 7, {}));
    EXPECT_EQ(t.p.b.counter("ike.rx.invalid_message_id"), 1u);
    EXPECT_EQ(t.p.b.counter("ike.tx.invalid_message_id"), 1u);
    auto out = t.p.b.engine->take_outgoing();
    ASSERT_EQ(out.size(), 1u);
    auto o = open_from_b(k, out[0].data);
    // Not a response (the invalid request is not acknowledged): b's own request #0.
    EXPECT_FALSE(o.header.response());
    EXPECT_FALSE(o.header.initiator());
    EXPECT_EQ(o.header.exchange, wire::ExchangeType::Informational);
    EXPECT_EQ(o.header.message_id, 0u);
    auto* n = wire::find_notify(o.payloads, wire::notify::InvalidMessageId);
    ASSERT_NE(n, nullptr);
    EXPECT_EQ(n->data, (Bytes{0, 0, 0, 7}));
    // a receives b's request, answers it and reports the notify; the SA lives on.
    Datagram in{out[0].remote, out[0].local, out[0].data, out[0].non_esp_marker};
    t.p.a.engine->handle_datagram(in, t.p.clock.now());
    t.p.pump();
    auto* ev = t.p.a.find(Event::Kind::PeerNotify);
    ASSERT_NE(ev, nullptr);
    EXPECT_EQ(ev->code, wire::notify::InvalidMessageId);
    EXPECT_TRUE(t.p.established());
    // The request was not processed: b still expects #2, so a's next exchange works.
    ASSERT_TRUE(t.p.a.engine->send_dpd(t.p.a.engine->list_sas()[0].id, t.p.clock.now()).ok());
    EXPECT_EQ(t.p.pump(), 2u);
    EXPECT_TRUE(t.p.established());
}

TEST(IkeWindow, InvalidMessageIdIsRateLimited) {
    Established t;
    ASSERT_TRUE(t.p.connect());
    const auto& k = t.keys[0];
    t.inject(seal_from_a(k, wire::ExchangeType::Informational, 9, {}));
    auto first = t.p.b.engine->take_outgoing();
    ASSERT_EQ(first.size(), 1u);
    // While that notify is unanswered, and within the interval, more are not answered.
    t.inject(seal_from_a(k, wire::ExchangeType::Informational, 10, {}));
    EXPECT_TRUE(t.p.b.engine->take_outgoing().empty());
    // Deliver b's notify request to a and a's answer back: nothing pending any more, but the
    // interval (1 s) has not passed.
    Datagram in{first[0].remote, first[0].local, first[0].data, first[0].non_esp_marker};
    t.p.a.engine->handle_datagram(in, t.p.clock.now());
    t.p.pump();
    t.inject(seal_from_a(k, wire::ExchangeType::Informational, 11, {}));
    EXPECT_TRUE(t.p.b.engine->take_outgoing().empty());
    EXPECT_EQ(t.p.b.counter("ike.tx.invalid_message_id_suppressed"), 1u);
    t.p.advance(1000);
    t.inject(seal_from_a(k, wire::ExchangeType::Informational, 12, {}));
    auto again = t.p.b.engine->take_outgoing();
    ASSERT_EQ(again.size(), 1u);
    auto o = open_from_b(k, again[0].data);
    EXPECT_EQ(o.header.message_id, 1u);  // b's next request
    ASSERT_NE(wire::find_notify(o.payloads, wire::notify::InvalidMessageId), nullptr);
    EXPECT_EQ(wire::find_notify(o.payloads, wire::notify::InvalidMessageId)->data, (Bytes{0, 0, 0, 12}));
    EXPECT_EQ(t.p.b.counter("ike.rx.invalid_message_id"), 4u);
    EXPECT_EQ(t.p.b.counter("ike.tx.invalid_message_id"), 2u);
}

// The silent cases: nothing goes back, but each is counted.
TEST(IkeWindow, SilentlyDroppedCases) {
    Established t;
    ASSERT_TRUE(t.p.connect());
    const auto& k = t.keys[0];
    // Forged (ICV fails) ahead of the window: no answer to unauthenticated traffic.
    t.inject(seal_from_a(k, wire::ExchangeType::Informational, 40, {}, false, true));
    EXPECT_TRUE(t.p.b.engine->take_outgoing().empty());
    EXPECT_EQ(t.p.b.counter("ike.rx.invalid_message_id_unauthenticated"), 1u);
    // Authentic but behind the window (#0, not the cached #1): a stale duplicate.
    t.inject(seal_from_a(k, wire::ExchangeType::Informational, 0, {}));
    EXPECT_TRUE(t.p.b.engine->take_outgoing().empty());
    // A response nobody asked for (b has no request outstanding).
    t.inject(seal_from_a(k, wire::ExchangeType::Informational, 5, {}, true));
    EXPECT_TRUE(t.p.b.engine->take_outgoing().empty());
    EXPECT_EQ(t.p.b.counter("ike.rx.invalid_message_id"), 3u);
    EXPECT_EQ(t.p.b.counter("ike.tx.invalid_message_id"), 0u);
    // Disabled by configuration.
    EngineConfig ca, cb;
    ca.peers = {base_peer(true)};
    cb.peers = {base_peer(false)};
    cb.invalid_mid_notify_interval_ms = 0;
    Pair q(ca, cb, 3);
    std::vector<IkeSaKeys> qk;
    q.a.engine->set_key_logger([&](const IkeSaKeys& x) { qk.push_back(x); }, nullptr);
    ASSERT_TRUE(q.connect());
    Datagram d;
    d.local = Endpoint{IpAddress::v4(192, 0, 2, 2), 500};
    d.remote = Endpoint{IpAddress::v4(192, 0, 2, 1), 500};
    d.data = seal_from_a(qk.at(0), wire::ExchangeType::Informational, 8, {});
    q.b.engine->handle_datagram(d, q.clock.now());
    EXPECT_TRUE(q.b.engine->take_outgoing().empty());
    EXPECT_EQ(q.b.counter("ike.rx.invalid_message_id"), 1u);
    EXPECT_TRUE(t.p.established());
    EXPECT_TRUE(q.established());
}

// Before the IKE SA is established (IKE_AUTH not done) nothing is answered either.
TEST(IkeWindow, NotAnsweredBeforeEstablishment) {
    Established t;
    // Lose a's IKE_AUTH request: b has keys but no established SA.
    t.p.drop = [](const Datagram& d, bool from_a) {
        auto m = wire::Message::decode(d.data);
        return from_a && m.ok() && m->header.exchange == wire::ExchangeType::IkeAuth;
    };
    ASSERT_TRUE(t.p.a.engine->initiate("to-b", t.p.clock.now()).ok());
    t.p.pump();
    ASSERT_EQ(t.keys.size(), 1u);
    ASSERT_EQ(t.p.b.engine->list_sas().at(0).state, "CONNECTING");
    t.inject(seal_from_a(t.keys[0], wire::ExchangeType::Informational, 4, {}));
    EXPECT_TRUE(t.p.b.engine->take_outgoing().empty());
    EXPECT_EQ(t.p.b.counter("ike.rx.invalid_message_id"), 1u);
    EXPECT_EQ(t.p.b.counter("ike.tx.invalid_message_id"), 0u);
}
