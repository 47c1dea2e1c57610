#include <gtest/gtest.h>
#include <x2sec/esp/replay.hpp>

using x2sec::esp::ReplayWindow;
using V = ReplayWindow::Verdict;

namespace {
V accept(ReplayWindow& w, uint32_t lo, uint64_t* full = nullptr) {
    uint64_t s = 0;
    V v = w.check(lo, &s);
    if (v == V::Ok) w.update(s);
    if (full) *full = s;
    return v;
}
}  // namespace

TEST(ReplayWindow, DefaultSizeAndRounding) {
    EXPECT_EQ(ReplayWindow().size(), 1024u);
    EXPECT_EQ(ReplayWindow(1).size(), 64u);
    EXPECT_EQ(ReplayWindow(100).size(), 128u);
    EXPECT_EQ(ReplayWindow(4096).size(), 4096u);
}

TEST(ReplayWindow, InOrderDuplicateAndZero) {
    ReplayWindow w(64);
    uint64_t s;
    EXPECT_EQ(w.check(0, &s), V::Zero);
    for (uint32_t i = 1; i <= 200; ++i) EXPECT_EQ(accept(w, i), V::Ok) << i;
    EXPECT_EQ(w.top(), 200u);
    EXPECT_EQ(accept(w, 200), V::Replayed);
    EXPECT_EQ(accept(w, 150), V::Replayed);
}

TEST(ReplayWindow, LateWithinWindowAcceptedOnceAndTooOldRejected) {
    ReplayWindow w(1024);
    EXPECT_EQ(accept(w, 2000), V::Ok);
    EXPECT_EQ(accept(w, 2000 - 1023), V::Ok);  // oldest slot still inside
    EXPECT_EQ(accept(w, 2000 - 1023), V::Replayed);
    EXPECT_EQ(accept(w, 2000 - 1024), V::TooOld);  // just left of the window
    EXPECT_EQ(accept(w, 1500), V::Ok);
    EXPECT_EQ(accept(w, 1500), V::Replayed);
    EXPECT_EQ(accept(w, 1), V::TooOld);
}

TEST(ReplayWindow, FarAheadJumpClearsTheWholeWindow) {
    ReplayWindow w(128);
    for (uint32_t i = 1; i <= 128; ++i) ASSERT_EQ(accept(w, i), V::Ok);
    EXPECT_EQ(accept(w, 100000), V::Ok);
    // Everything between is new; slots that aliased old bits must have been cleared.
    for (uint32_t i = 100000 - 127; i < 100000; ++i) EXPECT_EQ(accept(w, i), V::Ok) << i;
    EXPECT_EQ(accept(w, 100000 - 128), V::TooOld);
}

TEST(ReplayWindow, SmallJumpClearsOnlyTheSkippedSlots) {
    ReplayWindow w(64);
    for (uint32_t i = 1; i <= 64; ++i) ASSERT_EQ(accept(w, i), V::Ok);
    EXPECT_EQ(accept(w, 70), V::Ok);
    for (uint32_t i = 65; i < 70; ++i) EXPECT_EQ(accept(w, i), V::Ok) << i;
    for (uint32_t i = 7; i <= 70; ++i) EXPECT_EQ(accept(w, i), V::Replayed) << i;
}

TEST(ReplayWindow, CheckDoesNotAdvanceWithoutUpdate) {
    // The data plane calls update() only after the ICV verified: a forged far-ahead packet
    // that fails authentication must not move the window.
    ReplayWindow w(64);
    ASSERT_EQ(accept(w, 10), V::Ok);
    uint64_t s;
    EXPECT_EQ(w.check(1000000, &s), V::Ok);  // forged; never updated
    EXPECT_EQ(w.top(), 10u);
    EXPECT_EQ(accept(w, 9), V::Ok);
}

TEST(ReplayWindow, NonEsnCounterAtTheTopOfTheSpace) {
    ReplayWindow w(64);
    EXPECT_EQ(accept(w, 0xffffffffu), V::Ok);
    EXPECT_EQ(accept(w, 0xffffffffu), V::Replayed);
    EXPECT_EQ(accept(w, 0xfffffff0u), V::Ok);
    // Without ESN a wrapped counter is not a newer packet.
    EXPECT_EQ(accept(w, 1), V::TooOld);
}

TEST(ReplayWindow, EsnWrapInfersNextSubspace) {
    ReplayWindow w(1024, true);
    uint64_t full = 0;
    ASSERT_EQ(accept(w, 0xfffffff0u, &full), V::Ok);
    EXPECT_EQ(full, 0xfffffff0u);
    // The low 32 bits wrap: the high half must become 1.
    ASSERT_EQ(accept(w, 5, &full), V::Ok);
    EXPECT_EQ(full, 0x100000005ULL);
    EXPECT_EQ(w.top(), 0x100000005ULL);
    // A late packet from before the wrap still maps to the old subspace (case B).
    ASSERT_EQ(accept(w, 0xfffffff8u, &full), V::Ok);
    EXPECT_EQ(full, 0xfffffff8ULL);
    EXPECT_EQ(accept(w, 0xfffffff0u, &full), V::Replayed);
    EXPECT_EQ(accept(w, 5, &full), V::Replayed);
}

TEST(ReplayWindow, EsnHighBitInferenceCaseA) {
    ReplayWindow w(64, true);
    uint64_t full = 0;
    w.update(0x0000000700001000ULL);
    // Within the window below the top: same subspace.
    ASSERT_EQ(w.check(0x00000fd0u, &full), V::Ok);
    EXPECT_EQ(full, 0x0000000700000fd0ULL);
    // Below the window's bottom: interpreted as the next subspace (far ahead).
    ASSERT_EQ(w.check(0x00000100u, &full), V::Ok);
    EXPECT_EQ(full, 0x0000000800000100ULL);
    // Above the top: same subspace, ahead.
    ASSERT_EQ(w.check(0x00002000u, &full), V::Ok);
    EXPECT_EQ(full, 0x0000000700002000ULL);
}

TEST(ReplayWindow, EsnHighBitInferenceCaseB) {
    ReplayWindow w(64, true);
    uint64_t full = 0;
    w.update(0x0000000300000010ULL);                // low half smaller than the window
    ASSERT_EQ(w.check(0xffffffe0u, &full), V::Ok);  // in the window, previous subspace
    EXPECT_EQ(full, 0x00000002ffffffe0ULL);
    ASSERT_EQ(w.check(0x00000020u, &full), V::Ok);  // ahead, same subspace
    EXPECT_EQ(full, 0x0000000300000020ULL);
    EXPECT_EQ(w.check(0x00000010u, &full), V::Replayed);
}

TEST(ReplayWindow, ConfigurableSizes) {
    for (uint32_t size : {64u, 256u, 1024u, 4096u}) {
        ReplayWindow w(size);
        ASSERT_EQ(accept(w, 100000), V::Ok);
        EXPECT_EQ(accept(w, 100000 - size + 1), V::Ok) << size;
        EXPECT_EQ(accept(w, 100000 - size), V::TooOld) << size;
    }
}
