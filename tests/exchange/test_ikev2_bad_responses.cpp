// A responder (b) that answers with correct keys but a response the initiator (a) must not use:
// a payload missing, selectors widened, a transform we did not offer.  a refuses the exchange
// (nothing installed), has the peer delete what it created, counts and names the error, and
// never crashes; and the requests a broken initiator sends are answered INVALID_SYNTAX.
#include "ikev2_harness.hpp"

namespace x2sec::test {
namespace {

using wire::ExchangeType;
using wire::PayloadType;

bool is_response_from_b(const wire::Header& h, bool from_a, ExchangeType t) {
    return !from_a && h.response() && h.exchange == t;
}

TrafficSelector any_v4() {
    return TrafficSelector::from_prefix(IpAddress::v4(0, 0, 0, 0), 0);
}

// Both ends hold exactly one installed Child SA, the two halves of one pair.
void expect_one_child_pair(const Pair& p) {
    auto a = p.a.backend.installed_spis(), b = p.b.backend.installed_spis();
    ASSERT_EQ(a.size(), 1u);
    ASSERT_EQ(b.size(), 1u);
    EXPECT_EQ(p.a.backend.find(a[0])->spi_out, b[0]);
    EXPECT_EQ(p.b.backend.find(b[0])->spi_out, a[0]);
}

void expect_indexes_ok(const Pair& p) {
    EXPECT_TRUE(p.a.engine->check_indexes().ok());
    EXPECT_TRUE(p.b.engine->check_indexes().ok());
}

const Event* find_failure(const Node& n, int code) {
    for (const auto& e : n.events)
        if (e.kind == Event::Kind::NegotiationFailed && e.code == code) return &e;
    return nullptr;
}

// Connects with the tamper attached, then runs `op` on a's IKE SA and pumps.
struct Fixture {
    Pair p{base_peer(true), base_peer(false)};
    Tamper t;
    Fixture() { t.attach(p); }
    uint64_t ike_id() { return p.a.engine->list_sas().at(0).id; }
    uint32_t child_in() { return p.a.engine->list_sas().at(0).children.at(0).spi_in; }
};

TEST(IkeBadResponse, RekeyChildResponseWithoutNonceIsRefusedAndItsChildDeleted) {
    Fixture f;
    ASSERT_TRUE(f.p.connect());
    auto before_a = f.p.a.backend.installed_spis(), before_b = f.p.b.backend.installed_spis();
    f.t.edit = [](const wire::Header& h, std::vector<wire::Payload>& pl, bool from_a) {
        if (!is_response_from_b(h, from_a, ExchangeType::CreateChildSa)) return false;
        Tamper::erase(pl, PayloadType::Nonce);
        return true;
    };
    ASSERT_TRUE(f.p.a.engine->rekey_child(f.ike_id(), f.child_in(), f.p.clock.now()).ok());
    f.p.pump();
    EXPECT_EQ(f.t.edited, 1u);
    EXPECT_EQ(f.p.a.counter("ike.rx.invalid_syntax.create_child_response"), 1u);
    EXPECT_EQ(f.p.a.counter("ike.tx.delete_refused_child"), 1u);
    EXPECT_NE(find_failure(f.p.a, wire::notify::InvalidSyntax), nullptr);
    // The old pair stays on both ends; the Child SA b created for the rekey is gone.
    EXPECT_EQ(f.p.a.backend.installed_spis(), before_a);
    EXPECT_EQ(f.p.b.backend.installed_spis(), before_b);
    expect_one_child_pair(f.p);
    EXPECT_TRUE(f.p.established());
    expect_indexes_ok(f.p);
    // And the old Child SA can still be rekeyed (b put it back in use).
    f.t.edit = nullptr;
    ASSERT_TRUE(f.p.a.engine->rekey_child(f.ike_id(), f.child_in(), f.p.clock.now()).ok());
    f.p.pump();
    EXPECT_EQ(f.p.a.count(Event::Kind::ChildSaRekeyed), 1u);
    expect_one_child_pair(f.p);
    EXPECT_NE(f.p.a.backend.installed_spis(), before_a);
    expect_indexes_ok(f.p);
}

TEST(IkeBadResponse, CreateChildResponseWithoutTsOrSaIsRefused) {
    for (PayloadType missing : {PayloadType::TSi, PayloadType::TSr, PayloadType::SA, PayloadType::Nonce}) {
        SCOPED_TRACE(wire::to_string(missing));
        auto [pa, pb] = two_child_peers();
        Pair p(pa, pb);
        Tamper t;
        t.attach(p);
        ASSERT_TRUE(p.connect());
        t.edit = [missing](const wire::Header& h, std::vector<wire::Payload>& pl, bool from_a) {
            if (!is_response_from_b(h, from_a, ExchangeType::CreateChildSa)) return false;
            Tamper::erase(pl, missing);
            return true;
        };
        ASSERT_TRUE(p.a.engine->create_child(p.a.engine->list_sas()[0].id, "x2u", p.clock.now()).ok());
        p.pump();
        EXPECT_EQ(p.a.counter("ike.rx.invalid_syntax.create_child_response"), 1u);
        expect_one_child_pair(p);  // only the first Child SA, on both ends
        EXPECT_EQ(p.a.engine->list_sas()[0].children.size(), 1u);
        EXPECT_EQ(p.b.engine->list_sas()[0].children.size(), 1u);
        expect_indexes_ok(p);
    }
}

TEST(IkeBadResponse, WidenedSelectorsInIkeAuthAreRefusedAndDeleted) {
    Fixture f;
    f.t.edit = [](const wire::Header& h, std::vector<wire::Payload>& pl, bool from_a) {
        if (!is_response_from_b(h, from_a, ExchangeType::IkeAuth)) return false;
        Tamper::body<wire::TsPayload>(pl, PayloadType::TSi)->selectors = {any_v4()};
        Tamper::body<wire::TsPayload>(pl, PayloadType::TSr)->selectors = {any_v4()};
        return true;
    };
    ASSERT_TRUE(f.p.connect());  // the IKE SA stands
    EXPECT_EQ(f.t.edited, 1u);
    EXPECT_EQ(f.p.a.counter("ike.rx.ts_unacceptable.ike_auth_child_response"), 1u);
    EXPECT_NE(find_failure(f.p.a, wire::notify::TsUnacceptable), nullptr);
    // 0.0.0.0/0 was never installed; b's Child SA was deleted by a's DELETE.
    EXPECT_TRUE(f.p.a.backend.installed_spis().empty());
    EXPECT_EQ(f.p.a.backend.install_count(), 0u);
    EXPECT_TRUE(f.p.b.backend.installed_spis().empty());
    EXPECT_EQ(f.p.a.counter("ike.tx.delete_refused_child"), 1u);
    EXPECT_TRUE(f.p.a.engine->list_sas()[0].children.empty());
    EXPECT_TRUE(f.p.b.engine->list_sas()[0].children.empty());
    expect_indexes_ok(f.p);
}

TEST(IkeBadResponse, SelectorsNarrowedByTheResponderAreAccepted) {
    // Narrowing stays allowed: a proposes 203.0.113.0/24 on its side, b answers the /32.
    auto pa = base_peer(true);
    pa.children[0].local_ts = {TrafficSelector::from_prefix(IpAddress::v4(203, 0, 113, 0), 24)};
    Pair p(pa, base_peer(false));
    ASSERT_TRUE(p.connect());
    expect_one_child_pair(p);
    EXPECT_EQ(p.a.counter("ike.rx.ts_unacceptable.ike_auth_child_response"), 0u);
}

TEST(IkeBadResponse, WidenedSelectorsOnRekeyAndNewChildAreRefused) {
    for (bool rekey : {true, false}) {
        SCOPED_TRACE(rekey ? "rekey" : "new child");
        auto [pa, pb] = two_child_peers();
        Pair p(pa, pb);
        Tamper t;
        t.attach(p);
        ASSERT_TRUE(p.connect());
        auto before_a = p.a.backend.installed_spis(), before_b = p.b.backend.installed_spis();
        t.edit = [](const wire::Header& h, std::vector<wire::Payload>& pl, bool from_a) {
            if (!is_response_from_b(h, from_a, ExchangeType::CreateChildSa)) return false;
            // Same count as proposed (the old check compared only counts): widened ports on TSr.
            auto* tsr = Tamper::body<wire::TsPayload>(pl, PayloadType::TSr);
            tsr->selectors[0].start_port = 0;
            tsr->selectors[0].end_port = 65535;
            tsr->selectors[0].ip_protocol = 0;
            auto* tsi = Tamper::body<wire::TsPayload>(pl, PayloadType::TSi);
            tsi->selectors[0] = any_v4();
            return true;
        };
        auto id = p.a.engine->list_sas()[0].id;
        if (rekey)
            ASSERT_TRUE(p.a.engine->rekey_child(id, p.a.engine->list_sas()[0].children[0].spi_in, p.clock.now()).ok());
        else
            ASSERT_TRUE(p.a.engine->create_child(id, "x2u", p.clock.now()).ok());
        p.pump();
        EXPECT_EQ(p.a.counter("ike.rx.ts_unacceptable.create_child_response"), 1u);
        EXPECT_EQ(p.a.counter("ike.tx.delete_refused_child"), 1u);
        EXPECT_EQ(p.a.backend.installed_spis(), before_a);
        EXPECT_EQ(p.b.backend.installed_spis(), before_b);
        expect_one_child_pair(p);
        const auto sas = p.a.engine->list_sas();  // the range-for must not run over a temporary's member
        for (const auto& c : sas.at(0).children) EXPECT_NE(c.ts_local.at(0).to_string(), "0.0.0.0/0");
        expect_indexes_ok(p);
    }
}

// Rewrites the ENCR transform of the one proposal in the SA payload.
void set_encr(std::vector<wire::Payload>& pl, uint16_t id, uint16_t bits) {
    auto* sa = Tamper::body<wire::SaPayload>(pl, PayloadType::SA);
    for (auto& t : sa->proposals.at(0).transforms)
        if (t.type == wire::TransformType::Encr) t = wire::Transform::make(wire::TransformType::Encr, id, bits);
}

TEST(IkeBadResponse, UnofferedEspTransformOrEsnIsRefused) {
    struct Case {
        const char* what;
        std::function<void(std::vector<wire::Payload>&)> change;
    };
    std::vector<Case> cases = {
        {"AES-GCM-256 (we offered AES-GCM-128)", [](auto& pl) { set_encr(pl, 20, 256); }},
        {"ESN on (we offered no ESN)",
         [](auto& pl) {
             for (auto& t : Tamper::body<wire::SaPayload>(pl, PayloadType::SA)->proposals[0].transforms)
                 if (t.type == wire::TransformType::Esn) t.id = 1;
         }},
        {"no ESN transform",
         [](auto& pl) {
             std::erase_if(Tamper::body<wire::SaPayload>(pl, PayloadType::SA)->proposals[0].transforms,
                           [](const wire::Transform& t) { return t.type == wire::TransformType::Esn; });
         }},
        {"two ESN transforms",
         [](auto& pl) {
             Tamper::body<wire::SaPayload>(pl, PayloadType::SA)
                 ->proposals[0]
                 .transforms.push_back(wire::Transform::make(wire::TransformType::Esn, 0));
         }},
        {"proposal number 7",
         [](auto& pl) { Tamper::body<wire::SaPayload>(pl, PayloadType::SA)->proposals[0].number = 7; }},
    };
    for (const auto& c : cases) {
        SCOPED_TRACE(c.what);
        Fixture f;
        f.t.edit = [&](const wire::Header& h, std::vector<wire::Payload>& pl, bool from_a) {
            if (!is_response_from_b(h, from_a, ExchangeType::IkeAuth)) return false;
            c.change(pl);
            return true;
        };
        ASSERT_TRUE(f.p.connect());
        EXPECT_EQ(f.p.a.counter("ike.rx.no_proposal_chosen.ike_auth_child_response"), 1u);
        EXPECT_NE(find_failure(f.p.a, wire::notify::NoProposalChosen), nullptr);
        EXPECT_EQ(f.p.a.backend.install_count(), 0u);
        EXPECT_TRUE(f.p.b.backend.installed_spis().empty());  // deleted at a's request
        expect_indexes_ok(f.p);
    }
}

TEST(IkeBadResponse, UnofferedEspTransformOnRekeyIsRefused) {
    Fixture f;
    ASSERT_TRUE(f.p.connect());
    auto before_a = f.p.a.backend.installed_spis(), before_b = f.p.b.backend.installed_spis();
    f.t.edit = [](const wire::Header& h, std::vector<wire::Payload>& pl, bool from_a) {
        if (!is_response_from_b(h, from_a, ExchangeType::CreateChildSa)) return false;
        set_encr(pl, 20, 256);
        return true;
    };
    ASSERT_TRUE(f.p.a.engine->rekey_child(f.ike_id(), f.child_in(), f.p.clock.now()).ok());
    f.p.pump();
    EXPECT_EQ(f.p.a.counter("ike.rx.no_proposal_chosen.create_child_response"), 1u);
    EXPECT_EQ(f.p.a.backend.installed_spis(), before_a);
    EXPECT_EQ(f.p.b.backend.installed_spis(), before_b);
    expect_indexes_ok(f.p);
}

TEST(IkeBadResponse, UnofferedIkeSaInitProposalIsRefused) {
    struct Case {
        const char* what;
        std::function<void(std::vector<wire::Payload>&)> change;
    };
    std::vector<Case> cases = {
        {"proposal number 2",
         [](auto& pl) { Tamper::body<wire::SaPayload>(pl, PayloadType::SA)->proposals[0].number = 2; }},
        {"AES-GCM-256", [](auto& pl) { set_encr(pl, 20, 256); }},
        {"an extra PRF",
         [](auto& pl) {
             Tamper::body<wire::SaPayload>(pl, PayloadType::SA)
                 ->proposals[0]
                 .transforms.push_back(wire::Transform::make(wire::TransformType::Prf, 7));
         }},
    };
    for (const auto& c : cases) {
        SCOPED_TRACE(c.what);
        auto pa = base_peer(true), pb = base_peer(false);
        // b accepts AES-GCM-256 too, so the IKE SA could be set up with what b chose.
        pb.ike_proposals = {proposal("aes128gcm16-aes256gcm16-prfsha256-ecp256")};
        Pair p(pa, pb);
        Tamper t;
        t.attach(p);
        t.edit_plain = [&](const wire::Header& h, std::vector<wire::Payload>& pl, bool from_a) {
            if (from_a || !h.response()) return false;
            c.change(pl);
            return true;
        };
        EXPECT_FALSE(p.connect());
        EXPECT_EQ(p.a.counter("ike.rx.no_proposal_chosen.ike_sa_init_response"), 1u);
        EXPECT_NE(find_failure(p.a, wire::notify::NoProposalChosen), nullptr);
        EXPECT_TRUE(p.a.engine->list_sas().empty());
        EXPECT_EQ(p.a.count(Event::Kind::IkeSaUp), 0u);
    }
}

TEST(IkeBadResponse, IkeRekeyResponseUnofferedOrIncompleteIsRefused) {
    struct Case {
        const char* what;
        const char* counter;
        std::function<void(std::vector<wire::Payload>&)> change;
    };
    std::vector<Case> cases = {
        {"AES-GCM-256", "ike.rx.no_proposal_chosen.rekey_ike_response", [](auto& pl) { set_encr(pl, 20, 256); }},
        {"no KE", "ike.rx.invalid_syntax.rekey_ike_response", [](auto& pl) { Tamper::erase(pl, PayloadType::KE); }},
        {"no Nonce", "ike.rx.invalid_syntax.rekey_ike_response",
         [](auto& pl) { Tamper::erase(pl, PayloadType::Nonce); }},
    };
    for (const auto& c : cases) {
        SCOPED_TRACE(c.what);
        auto pa = base_peer(true), pb = base_peer(false);
        pb.ike_proposals = {proposal("aes128gcm16-aes256gcm16-prfsha256-ecp256")};
        Pair p(pa, pb);
        Tamper t;
        t.attach(p);
        ASSERT_TRUE(p.connect());
        t.edit = [&](const wire::Header& h, std::vector<wire::Payload>& pl, bool from_a) {
            if (!is_response_from_b(h, from_a, ExchangeType::CreateChildSa)) return false;
            c.change(pl);
            return true;
        };
        uint64_t old_spi_i = p.b.engine->list_sas()[0].spi_i;
        ASSERT_TRUE(p.a.engine->rekey_ike(p.a.engine->list_sas()[0].id, p.clock.now()).ok());
        p.pump();
        EXPECT_EQ(p.a.counter(c.counter), 1u);
        EXPECT_EQ(p.a.count(Event::Kind::IkeSaRekeyed), 0u);
        // b had moved its Child SAs to the IKE SA it created: a deletes the old IKE SA with its
        // Child SAs at once, and the new one (when it could set it up) over itself.  (Here b
        // really runs AES-GCM-128, so a's DELETE under the AES-GCM-256 keys b claimed is never
        // answered and a gives up after its retransmissions.)
        EXPECT_TRUE(p.a.backend.installed_spis().empty());
        for (int i = 0; i < 40 && !p.a.engine->list_sas().empty(); ++i) {
            p.advance(5000);
            p.pump();
        }
        EXPECT_TRUE(p.a.engine->list_sas().empty());
        EXPECT_EQ(p.a.count(Event::Kind::IkeSaDown),
                  1u);  // the old one (the refused one never came up)
        // b saw the old IKE SA deleted; only the one it created for the rekey is left.
        ASSERT_EQ(p.b.engine->list_sas().size(), 1u);
        EXPECT_NE(p.b.engine->list_sas()[0].spi_i, old_spi_i);
        expect_indexes_ok(p);
    }
}

TEST(IkeBadResponse, IkeAuthResponseWithoutAuthIsRefused) {
    Fixture f;
    f.t.edit = [](const wire::Header& h, std::vector<wire::Payload>& pl, bool from_a) {
        if (!is_response_from_b(h, from_a, ExchangeType::IkeAuth)) return false;
        Tamper::erase(pl, PayloadType::AUTH);
        return true;
    };
    EXPECT_FALSE(f.p.connect());
    EXPECT_EQ(f.p.a.counter("ike.rx.invalid_syntax.ike_auth_response"), 1u);
    EXPECT_TRUE(f.p.a.engine->list_sas().empty());
    EXPECT_TRUE(f.p.a.backend.installed_spis().empty());
    // b was told to delete its IKE SA (and with it the Child SA).
    EXPECT_TRUE(f.p.b.engine->list_sas().empty());
    EXPECT_TRUE(f.p.b.backend.installed_spis().empty());
}

TEST(IkeBadRequest, CreateChildRequestWithoutTsIsAnsweredInvalidSyntax) {
    for (PayloadType missing : {PayloadType::TSi, PayloadType::TSr}) {
        SCOPED_TRACE(wire::to_string(missing));
        auto [pa, pb] = two_child_peers();
        Pair p(pa, pb);
        Tamper t;
        t.attach(p);
        ASSERT_TRUE(p.connect());
        t.edit = [missing](const wire::Header& h, std::vector<wire::Payload>& pl, bool from_a) {
            if (!from_a || h.response() || h.exchange != ExchangeType::CreateChildSa) return false;
            Tamper::erase(pl, missing);
            return true;
        };
        ASSERT_TRUE(p.a.engine->create_child(p.a.engine->list_sas()[0].id, "x2u", p.clock.now()).ok());
        p.pump();
        EXPECT_EQ(p.b.counter("ike.rx.invalid_syntax.create_child_request"), 1u);
        EXPECT_NE(find_failure(p.a, wire::notify::InvalidSyntax), nullptr);
        expect_one_child_pair(p);
        EXPECT_TRUE(p.established());
        expect_indexes_ok(p);
    }
}

}  // namespace
}  // namespace x2sec::test
