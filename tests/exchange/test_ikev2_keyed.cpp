// The keyed fuzz harness (tests/fuzz/ikev2_keyed) does what it claims: its seeds, recorded from
// real exchanges, are decrypted and accepted by the engine they are fed to and complete the
// exchange; a mutated chain passes the integrity check and is refused by payload processing
// (not by the ICV); a corrupted ICV is refused by the integrity check.
#include <gtest/gtest.h>

#include "../fuzz/ikev2_keyed/keyed_harness.hpp"

using namespace x2sec;
using namespace x2sec::test;
using namespace x2sec::test::keyed;

namespace {

void expect_seeds_accepted(std::span<const Scenario> list, size_t min_seeds) {
    auto seeds = record_seeds(list);
    EXPECT_GE(seeds.size(), min_seeds);
    for (const auto& s : seeds) {
        SCOPED_TRACE(s.stem);
        auto o = run(s.input, list);
        EXPECT_TRUE(o.opened);
        EXPECT_EQ(o.invalid_syntax, 0u);
        EXPECT_EQ(o.index_error, "");
        if (s.stem != name(s.scenario)) continue;  // another exchange's request in this slot
        switch (s.scenario) {
            case Scenario::AuthRequest:
            case Scenario::AuthResponse:
            case Scenario::CreateChildRequest:
            case Scenario::NewChildResponse:
            case Scenario::ChildRekeyResponse:
            case Scenario::IkeRekeyResponse:
            case Scenario::LivenessResponse:
                // The real message completes its exchange: both ends end up established with
                // Child SAs installed.
                EXPECT_TRUE(o.a_established);
                EXPECT_TRUE(o.b_established);
                EXPECT_GT(o.a_children, 0u);
                EXPECT_GT(o.b_children, 0u);
                break;
            default:
                break;
        }
    }
}

}  // namespace

TEST(KeyedHarness, ResponderSeedsAreRealMessagesTheResponderAccepts) {
    // IKE_AUTH, a's Child SA rekey and liveness check, plus a's requests of the response scenarios.
    expect_seeds_accepted(kResponderScenarios, 3);
}

TEST(KeyedHarness, InitiatorSeedsAreRealMessagesTheInitiatorAccepts) {
    expect_seeds_accepted(kInitiatorScenarios, std::size(kInitiatorScenarios));
}

TEST(KeyedHarness, MutatedChainPassesTheIcvAndIsRefusedByPayloadChecks) {
    // IKE_AUTH request to the responder with an IDi and nothing else: authentic, but no AUTH.
    wire::IdPayload idi;
    idi.id_type = 2;
    idi.data = to_bytes("a.henb.example");
    Writer w;
    uint8_t first = wire::encode_chain(w, {{wire::PayloadType::IDi, false, idi}});
    auto in = encode_input(static_cast<Scenario>(0), 0, first, w.data());
    auto o = run(in, kResponderScenarios);
    EXPECT_TRUE(o.opened);
    EXPECT_GE(o.invalid_syntax, 1u);
    EXPECT_FALSE(o.b_established);
    // Both ends forget the refused IKE SA completely, including the Child SPI reserved for it.
    EXPECT_EQ(o.index_error, "")
        << "the Child SPI reserved for the IKE_AUTH Child SA of a refused IKE_AUTH must be given back";
    // The same with the ICV corrupted: refused by the integrity check.
    in[1] = 32;
    o = run(in, kResponderScenarios);
    EXPECT_FALSE(o.opened);
    EXPECT_EQ(o.invalid_syntax, 0u);
}
