// Codec vectors: positive ones round-trip byte for byte, negative ones fail with the named
// notify error.
#include <gtest/gtest.h>

#include <x2sec/ikev2/wire.hpp>

using namespace x2sec;
using namespace x2sec::ike::wire;

namespace {

// IKE_SA_INIT request as strongSwan lays it out: SA(aes128gcm16-prfsha256-ecp256), KE(19),
// Nonce, N(IKEV2_FRAGMENTATION_SUPPORTED), N(SIGNATURE_HASH_ALGORITHMS 2,3,4), V.
std::string sa_init_hex() {
    std::string h;
    h += "0011223344556677"
         "0000000000000000"
         "21"
         "20"
         "22"
         "08"
         "00000000"
         "000000ce";
    h += "22000028"
         "00000024"
         "01010003"
         "0300000c"
         "01000014"
         "800e0080"
         "03000008"
         "02000005"
         "00000008"
         "04000013";
    h += "28000048"
         "00130000" +
         std::string(128, 'a');
    h += "29000024" + std::string(64, 'b');
    h += "29000008"
         "0000402e";
    h += "2b00000e"
         "0000402f"
         "000200030004";
    h += "00000008"
         "78327331";
    return h;
}

// The hex of an IKEv2 header for the negative tests: SPIs 0011223344556677 / 0, version 2.0,
// INFORMATIONAL (37), flags 08 (initiator), message ID 1, length 0 (with_length() sets it),
// first payload `next` (a hex octet).
std::string informational_header(const std::string& next) {
    return "0011223344556677"
           "0000000000000000" +
           next +
           "20"
           "25"
           "08"
           "00000001"
           "00000000";
}

Bytes with_length(Bytes b) {
    uint32_t n = static_cast<uint32_t>(b.size());
    b[24] = uint8_t(n >> 24);
    b[25] = uint8_t(n >> 16);
    b[26] = uint8_t(n >> 8);
    b[27] = uint8_t(n);
    return b;
}

}  // namespace

TEST(WireVector, IkeSaInitRequestRoundTrips) {
    Bytes raw = hex(sa_init_hex());
    ASSERT_EQ(raw.size(), 0xceu);
    auto m = Message::decode(raw);
    ASSERT_TRUE(m.ok()) << m.error().to_string();
    EXPECT_EQ(m->header.spi_i, 0x0011223344556677u);
    EXPECT_EQ(m->header.exchange, ExchangeType::IkeSaInit);
    EXPECT_TRUE(m->header.initiator());
    EXPECT_FALSE(m->header.response());
    ASSERT_EQ(m->payloads.size(), 6u);
    auto* sa = m->payloads[0].as<SaPayload>();
    ASSERT_NE(sa, nullptr);
    ASSERT_EQ(sa->proposals.size(), 1u);
    const auto& p = sa->proposals[0];
    EXPECT_EQ(p.protocol, ProtocolId::Ike);
    ASSERT_EQ(p.transforms.size(), 3u);
    EXPECT_EQ(p.transforms[0].type, TransformType::Encr);
    EXPECT_EQ(p.transforms[0].id, 20);
    EXPECT_EQ(p.transforms[0].key_length(), std::optional<uint16_t>(128));
    EXPECT_EQ(p.transforms[2].id, 19);
    auto* ke = m->payloads[1].as<KePayload>();
    ASSERT_NE(ke, nullptr);
    EXPECT_EQ(ke->group, 19);
    EXPECT_EQ(ke->data.size(), 64u);
    EXPECT_EQ(m->payloads[2].as<NoncePayload>()->data.size(), 32u);
    EXPECT_NE(find_notify(m->payloads, notify::Ikev2FragmentationSupported), nullptr);
    auto* sha = find_notify(m->payloads, notify::SignatureHashAlgorithms);
    ASSERT_NE(sha, nullptr);
    EXPECT_EQ(sha->data, hex("000200030004"));
    EXPECT_EQ(m->payloads[5].as<VendorIdPayload>()->data, to_bytes("x2s1"));
    EXPECT_TRUE(check_rules(*find_rule(ExchangeType::IkeSaInit, false), m->payloads).ok());
    EXPECT_EQ(m->encode(), raw);
}

TEST(WireVector, BuiltMessageRoundTrips) {
    Message m;
    m.header.spi_i = 1;
    m.header.spi_r = 2;
    m.header.exchange = ExchangeType::CreateChildSa;
    m.header.flags = kFlagInitiator;
    m.header.message_id = 7;
    SaPayload sa;
    Proposal p;
    p.protocol = ProtocolId::Esp;
    p.spi = hex("c0ffee01");
    p.transforms = {Transform::make(TransformType::Encr, 20, 256), Transform::make(TransformType::Esn, 0)};
    sa.proposals = {p, p};
    sa.proposals[1].number = 2;
    m.payloads.push_back({PayloadType::SA, false, sa});
    m.payloads.push_back({PayloadType::Nonce, false, NoncePayload{Bytes(32, 0x5a)}});
    NotifyPayload rekey{ProtocolId::Esp, hex("01020304"), notify::RekeySa, {}};
    m.payloads.push_back({PayloadType::Notify, false, rekey});
    TsPayload tsi;
    tsi.selectors.push_back(TrafficSelector::from_prefix(IpAddress::v4(192, 0, 2, 0), 24, 132, 36422, 36422));
    tsi.selectors.push_back(TrafficSelector::from_prefix(*IpAddress::parse("2001:db8::"), 32));
    m.payloads.push_back({PayloadType::TSi, false, tsi});
    m.payloads.push_back({PayloadType::TSr, false, tsi});
    DeletePayload del;
    del.spis = {hex("aabbccdd"), hex("11223344")};
    m.payloads.push_back({PayloadType::Delete, false, del});
    m.payloads.push_back({PayloadType::CP, false, CpPayload{1, {{1, {}}, {8, {}}}}});
    Bytes raw = m.encode();
    auto back = Message::decode(raw);
    ASSERT_TRUE(back.ok()) << back.error().to_string();
    ASSERT_EQ(back->payloads.size(), 7u);
    EXPECT_EQ(back->payloads[0].as<SaPayload>()->proposals[1].number, 2);
    EXPECT_EQ(back->payloads[0].as<SaPayload>()->proposals[0].transforms, p.transforms);
    EXPECT_EQ(back->payloads[3].as<TsPayload>()->selectors, tsi.selectors);
    EXPECT_EQ(back->payloads[5].as<DeletePayload>()->spis, del.spis);
    EXPECT_EQ(back->encode(), raw);
}

TEST(WireVector, SkAndSkfAreLast) {
    Message m;
    m.header.exchange = ExchangeType::IkeAuth;
    m.payloads.push_back({PayloadType::SK, false, SkPayload{35, Bytes(48, 1)}});
    Bytes raw = m.encode();
    EXPECT_EQ(raw[16], 46);  // next payload SK
    EXPECT_EQ(raw[28], 35);  // SK's next = IDi
    auto back = Message::decode(raw);
    ASSERT_TRUE(back.ok()) << back.error().to_string();
    EXPECT_EQ(back->payloads[0].as<SkPayload>()->inner_next, 35);
    EXPECT_EQ(back->encode(), raw);

    Message f;
    f.header.exchange = ExchangeType::IkeAuth;
    f.payloads.push_back({PayloadType::SKF, false, SkfPayload{0, 2, 3, Bytes(40, 2)}});
    Bytes fraw = f.encode();
    auto fb = Message::decode(fraw);
    ASSERT_TRUE(fb.ok()) << fb.error().to_string();
    EXPECT_EQ(fb->payloads[0].as<SkfPayload>()->number, 2);
    EXPECT_EQ(fb->payloads[0].as<SkfPayload>()->total, 3);
    EXPECT_EQ(fb->encode(), fraw);

    // SKF claiming fragment 4 of 3.
    Bytes bad = fraw;
    bad[32] = 0;
    bad[33] = 4;
    auto e = Message::decode(bad);
    ASSERT_FALSE(e.ok());
    EXPECT_EQ(e.error().code(), notify::InvalidSyntax);
}

TEST(WireNegative, HeaderErrors) {
    Bytes raw = hex(sa_init_hex());
    auto t = Message::decode(BytesView(raw).first(27));
    ASSERT_FALSE(t.ok());
    EXPECT_EQ(t.error().domain(), ErrorDomain::Ike);
    EXPECT_EQ(t.error().code(), notify::InvalidSyntax);

    Bytes shorter(raw.begin(), raw.end() - 1);  // length field says 206
    auto l = Message::decode(shorter);
    ASSERT_FALSE(l.ok());
    EXPECT_EQ(l.error().code(), notify::InvalidSyntax);
    EXPECT_NE(l.error().detail().find("length"), std::string::npos);

    Bytes v3 = raw;
    v3[17] = 0x30;
    auto v = Message::decode(v3);
    ASSERT_FALSE(v.ok());
    EXPECT_EQ(v.error().code(), notify::InvalidMajorVersion);
}

TEST(WireNegative, PayloadLengthsAndSubstructures) {
    Bytes raw = hex(sa_init_hex());
    Bytes b = raw;
    b[28 + 40 + 72 + 3] = 0xff;  // Nonce payload length beyond the message
    auto e1 = Message::decode(b);
    ASSERT_FALSE(e1.ok());
    EXPECT_EQ(e1.error().code(), notify::InvalidSyntax);

    b = raw;
    b[28 + 3] = 0x02;  // SA payload length 2 < generic header
    auto e2 = Message::decode(b);
    ASSERT_FALSE(e2.ok());
    EXPECT_EQ(e2.error().code(), notify::InvalidSyntax);

    b = raw;
    b[28 + 4 + 8] = 0x00;  // first transform marked last while 3 are announced
    auto e3 = Message::decode(b);
    ASSERT_FALSE(e3.ok());
    EXPECT_EQ(e3.error().code(), notify::InvalidSyntax);
    EXPECT_NE(e3.error().detail().find("SA"), std::string::npos);

    // Nonce of 8 octets.
    std::string h =
        "0011223344556677"
        "0000000000000000"
        "28"
        "20"
        "22"
        "08"
        "00000000"
        "00000028";
    h += "0000000c"
         "0102030405060708";
    auto e4 = Message::decode(hex(h));
    ASSERT_FALSE(e4.ok());
    EXPECT_EQ(e4.error().code(), notify::InvalidSyntax);
    EXPECT_NE(e4.error().detail().find("nonce"), std::string::npos);
}

TEST(WireNegative, UnknownPayloads) {
    // Non-critical unknown payload type 200 between Nonce-less chain: skipped and kept.
    const std::string base = informational_header("c8");
    Bytes skip = with_length(hex(base + "29000008"
                                        "deadbeef"
                                        "00000008"
                                        "00004000"));
    auto ok = Message::decode(skip);
    ASSERT_TRUE(ok.ok()) << ok.error().to_string();
    ASSERT_EQ(ok->payloads.size(), 2u);
    EXPECT_NE(ok->payloads[0].as<UnknownPayload>(), nullptr);
    EXPECT_EQ(ok->encode(), skip);

    Bytes crit = with_length(hex(base + "29800008"
                                        "deadbeef"
                                        "00000008"
                                        "00004000"));
    auto bad = Message::decode(crit);
    ASSERT_FALSE(bad.ok());
    EXPECT_EQ(bad.error().code(), notify::UnsupportedCriticalPayload);
    EXPECT_EQ(critical_payload_type(bad.error()), std::optional<uint8_t>(200));
}

TEST(WireNegative, TrailingGarbageAndSkNotLast) {
    const std::string base = informational_header("29");
    auto e = Message::decode(with_length(hex(base + "00000008"
                                                    "00004000"
                                                    "ffff")));
    ASSERT_FALSE(e.ok());
    EXPECT_EQ(e.error().code(), notify::InvalidSyntax);
    const std::string sk = informational_header("2e");
    auto e2 = Message::decode(with_length(hex(sk + "29000008"
                                                   "01020304"
                                                   "00000008"
                                                   "00004000")));
    ASSERT_FALSE(e2.ok());
    EXPECT_NE(e2.error().detail().find("last"), std::string::npos);
}

TEST(WireNegative, PayloadValidation) {
    const std::string base = informational_header("29");
    // COOKIE with 65 octets.
    auto c = Message::decode(with_length(hex(base +
                                             "0000004d"
                                             "00004006" +
                                             std::string(130, '1'))));
    ASSERT_FALSE(c.ok());
    EXPECT_EQ(c.error().code(), notify::InvalidSyntax);
    // Delete with SPI count not matching.
    const std::string d = informational_header("2a");
    auto del = Message::decode(with_length(hex(d + "0000000c"
                                                   "03040002"
                                                   "01020304")));
    ASSERT_FALSE(del.ok());
    EXPECT_EQ(del.error().code(), notify::InvalidSyntax);
    // TS with an unknown selector type.
    const std::string ts = informational_header("2c");
    auto t = Message::decode(with_length(hex(ts + "00000018"
                                                  "01000000"
                                                  "09000010"
                                                  "0000ffff"
                                                  "c0000201"
                                                  "c00002ff")));
    ASSERT_FALSE(t.ok());
    EXPECT_EQ(t.error().code(), notify::InvalidSyntax);
}

TEST(WireRules, CountsAndPlacement) {
    auto* rule = find_rule(ExchangeType::IkeSaInit, false);
    ASSERT_NE(rule, nullptr);
    std::vector<Payload> pl;
    pl.push_back({PayloadType::Nonce, false, NoncePayload{Bytes(32, 1)}});
    auto st = check_rules(*rule, pl);
    ASSERT_FALSE(st.ok());
    EXPECT_EQ(st.error().code(), notify::InvalidSyntax);
    EXPECT_NE(st.error().detail().find("SA"), std::string::npos);
    auto* info = find_rule(ExchangeType::Informational, false);
    ASSERT_NE(info, nullptr);
    EXPECT_TRUE(check_rules(*info, {}).ok());
    EXPECT_FALSE(check_rules(*info, pl).ok());  // Nonce not allowed in INFORMATIONAL
    auto* auth = find_rule(ExchangeType::IkeAuth, false);
    std::vector<Payload> two_auth;
    two_auth.push_back({PayloadType::IDi, false, IdPayload{2, to_bytes("a.example")}});
    two_auth.push_back({PayloadType::AUTH, false, AuthPayload{2, Bytes(32, 0)}});
    EXPECT_TRUE(check_rules(*auth, two_auth).ok());
    two_auth.push_back({PayloadType::AUTH, false, AuthPayload{2, Bytes(32, 0)}});
    EXPECT_FALSE(check_rules(*auth, two_auth).ok());
}

namespace {
Payload notify_of(uint16_t type, Bytes data = {}) {
    return {PayloadType::Notify, false, NotifyPayload{ProtocolId::None, {}, type, std::move(data)}};
}
}  // namespace

TEST(WireRules, SufficientPayloadAnswersInsteadOfTheRequiredOnes) {
    const MessageRule& rule = purpose_rule(ResponsePurpose::RekeyIke);
    std::vector<Payload> pl;
    pl.push_back({PayloadType::Nonce, false, NoncePayload{Bytes(32, 1)}});
    // No error notify: SA and KE are required.
    auto st = check_rules(rule, pl);
    ASSERT_FALSE(st.ok());
    EXPECT_EQ(st.error().code(), notify::InvalidSyntax);
    EXPECT_NE(st.error().detail().find("no SA payload"), std::string::npos) << st.error().detail();
    // A status notify is no answer; an error notify is.
    pl.push_back(notify_of(notify::UseTransportMode));
    EXPECT_FALSE(check_rules(rule, pl).ok());
    pl.push_back(notify_of(notify::TemporaryFailure));
    auto answered = check_rules(rule, pl);
    ASSERT_TRUE(answered.ok());
    EXPECT_FALSE(answered->complete());
    ASSERT_NE(answered->answer(), nullptr);
    ASSERT_NE(answered->error(), nullptr);
    EXPECT_EQ(answered->error()->type, notify::TemporaryFailure);
    // Asking an incomplete message for a required payload is a defect of the caller.
    EXPECT_THROW((void)answered->get<SaPayload>(PayloadType::SA), std::logic_error);
    EXPECT_NE(answered->find<NoncePayload>(PayloadType::Nonce), nullptr);
}

TEST(WireRules, CookieIsSufficientOnlyInTheIkeSaInitResponse) {
    std::vector<Payload> pl{notify_of(notify::Cookie, Bytes(16, 7))};
    auto init = check_rules(purpose_rule(ResponsePurpose::IkeSaInit), pl);
    ASSERT_TRUE(init.ok());
    EXPECT_FALSE(init->complete());
    EXPECT_NE(init->notify(notify::Cookie), nullptr);
    EXPECT_FALSE(check_rules(purpose_rule(ResponsePurpose::CreateChild), pl).ok());
}

TEST(WireRules, CompleteMessageGivesItsRequiredPayloads) {
    std::vector<Payload> pl;
    pl.push_back({PayloadType::IDr, false, IdPayload{2, to_bytes("b.example")}});
    pl.push_back({PayloadType::AUTH, false, AuthPayload{2, Bytes(32, 3)}});
    pl.push_back(notify_of(notify::TsUnacceptable));  // the Child SA's error: not the IKE SA's
    auto auth = check_rules(purpose_rule(ResponsePurpose::IkeAuth), pl);
    ASSERT_TRUE(auth.ok());
    EXPECT_TRUE(auth->complete());
    EXPECT_EQ(auth->get<IdPayload>(PayloadType::IDr).data, to_bytes("b.example"));
    EXPECT_EQ(auth->get<AuthPayload>(PayloadType::AUTH).method, 2);
    // CERT is not guaranteed by the rule: get() refuses even though find() may be asked.
    EXPECT_THROW((void)auth->get<CertPayload>(PayloadType::CERT), std::logic_error);
    EXPECT_EQ(auth->find<CertPayload>(PayloadType::CERT), nullptr);
    // The Child SA's own rule: answered by the error notify.
    auto child = check_rules(purpose_rule(ResponsePurpose::AuthChild), pl);
    ASSERT_TRUE(child.ok());
    EXPECT_FALSE(child->complete());
}

TEST(WireRules, NotifyCountsAgainstItsMostSpecificRow) {
    const MessageRule* rule = find_rule(ExchangeType::IkeSaInit, false);
    ASSERT_NE(rule, nullptr);
    std::vector<Payload> pl;
    pl.push_back({PayloadType::SA, false, SaPayload{}});
    pl.push_back({PayloadType::KE, false, KePayload{19, Bytes(64, 1)}});
    pl.push_back({PayloadType::Nonce, false, NoncePayload{Bytes(32, 1)}});
    pl.push_back(notify_of(notify::Cookie, Bytes(8, 1)));
    EXPECT_TRUE(check_rules(*rule, pl).ok());
    pl.push_back(notify_of(notify::Cookie, Bytes(8, 2)));  // the COOKIE row allows one
    auto two = check_rules(*rule, pl);
    ASSERT_FALSE(two.ok());
    EXPECT_NE(two.error().detail().find("COOKIE"), std::string::npos) << two.error().detail();
}

TEST(WireRules, OrderPayloadsFollowsTheRows) {
    const MessageRule* rule = find_rule(ExchangeType::IkeSaInit, false);
    ASSERT_NE(rule, nullptr);
    std::vector<Payload> pl;
    pl.push_back(notify_of(notify::NatDetectionSourceIp, Bytes(20, 1)));
    pl.push_back({PayloadType::Nonce, false, NoncePayload{Bytes(32, 1)}});
    pl.push_back({PayloadType::SA, false, SaPayload{}});
    pl.push_back(notify_of(notify::NatDetectionDestinationIp, Bytes(20, 2)));
    pl.push_back({PayloadType::KE, false, KePayload{19, Bytes(64, 1)}});
    pl.push_back(notify_of(notify::Cookie, Bytes(8, 1)));
    order_payloads(*rule, pl);
    std::vector<uint16_t> notifies;
    std::vector<PayloadType> types;
    for (const auto& p : pl) {
        types.push_back(p.type);
        if (auto* n = p.as<NotifyPayload>()) notifies.push_back(n->type);
    }
    EXPECT_EQ(types, (std::vector<PayloadType>{PayloadType::Notify, PayloadType::SA, PayloadType::KE,
                                               PayloadType::Nonce, PayloadType::Notify, PayloadType::Notify}));
    // COOKIE first; the other notifies keep their order.
    EXPECT_EQ(notifies,
              (std::vector<uint16_t>{notify::Cookie, notify::NatDetectionSourceIp, notify::NatDetectionDestinationIp}));
}

TEST(WireRules, EveryPurposeHasItsOwnRule) {
    for (auto p : {ResponsePurpose::IkeSaInit, ResponsePurpose::IkeAuth, ResponsePurpose::AuthChild,
                   ResponsePurpose::CreateChild, ResponsePurpose::RekeyIke, ResponsePurpose::CreateChildRequest}) {
        const MessageRule& r = purpose_rule(p);
        EXPECT_EQ(std::string(to_string(p)), std::string(r.name));
        EXPECT_FALSE(r.closed);
        bool any_required = false;
        for (const auto& row : r.payloads) any_required |= row.presence == Presence::Required;
        EXPECT_TRUE(any_required) << r.name;
    }
    EXPECT_STRNE(to_string(ResponsePurpose::IkeAuth), to_string(ResponsePurpose::AuthChild));
}
