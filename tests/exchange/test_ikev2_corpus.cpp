// The fuzz corpora are recorded sessions.  X2SEC_WRITE_IKE_CORPUS=<source dir>/tests/fuzz
// regenerates them; without it the committed responder corpus must still replay to an
// established IKE SA (the engine is deterministic under a DeterministicRng).
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "../fuzz/ikev2_responder/responder_replay.hpp"
#include "ikev2_harness.hpp"

using namespace x2sec;
using namespace x2sec::ike;
using namespace x2sec::test;

namespace {

Bytes stream_from(const Pair& p) {
    Writer w;
    for (const auto& [from_a, d] : p.log) {
        if (!from_a) continue;
        w.u8(d.non_esp_marker ? 1 : 0);
        w.u16(static_cast<uint16_t>(d.data.size()));
        w.bytes(d.data);
    }
    return w.take();
}

struct Session {
    std::string name;
    Bytes stream;
    std::vector<Bytes> messages;
};

std::vector<Session> record() {
    std::vector<Session> out;
    auto finish = [&](const std::string& name, Pair& p) {
        Session s{name, stream_from(p), {}};
        for (const auto& [from_a, d] : p.log) s.messages.push_back(d.data);
        out.push_back(std::move(s));
    };
    {
        Pair p(base_peer(true), base_peer(false));
        EXPECT_TRUE(p.connect());
        finish("session_psk_connect", p);
    }
    {
        Pair p(base_peer(true), base_peer(false));
        EXPECT_TRUE(p.connect());
        auto id = p.a.engine->list_sas()[0].id;
        EXPECT_TRUE(p.a.engine->rekey_child(id, p.a.backend.installed_spis()[0], p.clock.now()).ok());
        p.pump();
        EXPECT_TRUE(p.a.engine->rekey_ike(id, p.clock.now()).ok());
        p.pump();
        id = p.a.engine->list_sas()[0].id;
        EXPECT_TRUE(p.a.engine->send_dpd(id, p.clock.now()).ok());
        p.pump();
        EXPECT_TRUE(p.a.engine->delete_child(id, p.a.backend.installed_spis()[0], p.clock.now()).ok());
        p.pump();
        EXPECT_TRUE(p.a.engine->create_child(id, "x2", p.clock.now()).ok());
        p.pump();
        EXPECT_TRUE(p.a.engine->delete_ike(id, p.clock.now()).ok());
        p.pump();
        finish("session_psk_rekey_delete", p);
    }
    {
        auto pa = base_peer(true);
        pa.force_encap = true;
        pa.ike_proposals = {proposal("aes128gcm16-prfsha256-ecp384-ecp256")};
        Pair p(pa, base_peer(false));
        EXPECT_TRUE(p.connect());
        finish("session_natt_invalid_ke", p);
    }
    return out;
}

Bytes read_all(const std::filesystem::path& f) {
    std::ifstream in(f, std::ios::binary);
    return Bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

}  // namespace

TEST(IkeCorpus, RecordedSessionsReplayDeterministically) {
    for (const auto& s : record()) {
        auto r = replay_to_responder(s.stream);
        EXPECT_GT(r.datagrams, 1u) << s.name;
        if (s.name == "session_psk_connect" || s.name == "session_natt_invalid_ke") {
            EXPECT_TRUE(r.established) << s.name;
            EXPECT_EQ(r.children, 1u) << s.name;
        }
    }
}

TEST(IkeCorpus, CommittedResponderCorpusStillEstablishes) {
    std::filesystem::path dir = std::filesystem::path(X2SEC_SOURCE_DIR) / "tests/fuzz/ikev2_responder/corpus";
    auto f = dir / "session_psk_connect.bin";
    if (!std::filesystem::exists(f)) GTEST_SKIP() << "no committed corpus at " << f;
    auto r = replay_to_responder(read_all(f));
    EXPECT_TRUE(r.established) << "the engine's messages changed: regenerate with X2SEC_WRITE_IKE_CORPUS";
}

TEST(IkeCorpus, WriteCorpusWhenAsked) {
    const char* out = std::getenv("X2SEC_WRITE_IKE_CORPUS");
    if (!out) GTEST_SKIP() << "set X2SEC_WRITE_IKE_CORPUS=<source>/tests/fuzz to regenerate the fuzz corpora";
    std::filesystem::path base(out);
    size_t n = 0;
    for (const auto& s : record()) {
        std::ofstream(base / "ikev2_responder/corpus" / (s.name + ".bin"), std::ios::binary)
            .write(reinterpret_cast<const char*>(s.stream.data()), static_cast<std::streamsize>(s.stream.size()));
        for (size_t i = 0; i < s.messages.size(); ++i)
            std::ofstream(base / "ikev2_decode/corpus" / (s.name + "_" + std::to_string(i) + ".bin"), std::ios::binary)
                .write(reinterpret_cast<const char*>(s.messages[i].data()),
                       static_cast<std::streamsize>(s.messages[i].size()));
        ++n;
    }
    EXPECT_EQ(n, 3u);
}
