// kds::Server::reload (SIGHUP of `kds serve`): new nodes and relations served, removed or
// re-identified relations' keys wiped, kept relations' keys unchanged, an invalid config refused
// with nothing changed.
#include <gtest/gtest.h>

#include <x2sec/common/rng.hpp>
#include <x2sec/kds/config.hpp>
#include <x2sec/kds/server.hpp>

using namespace x2sec;
using namespace x2sec::kds;

namespace {
const std::string kA = "0023a1000001.henb.vendor-a.example";
const std::string kB = "0023b2000001.henb.vendor-b.example";
const std::string kC = "0023c3000001.henb.vendor-c.example";

ServerConfig config(std::vector<NodeEntry> nodes, std::vector<std::pair<std::string, std::string>> rel) {
    ServerConfig c;
    c.nodes = std::move(nodes);
    c.relations = std::move(rel);
    c.key_lifetime_s = 600;
    c.wipe_after_delivery = false;
    return c;
}

KeyRequest req(const std::string& from, const std::string& to) {
    KeyRequest r;
    r.request_id = 1;
    r.requester = from;
    r.peer = to;
    return r;
}

std::optional<KeyResponse> key(Server& s, const std::string& from, const std::string& to, ErrorCode* err = nullptr) {
    auto m = s.handle_request(from, req(from, to), 0);
    if (auto* k = std::get_if<KeyResponse>(&m)) return *k;
    if (err)
        if (auto* e = std::get_if<ErrorMessage>(&m)) *err = e->code;
    return std::nullopt;
}
}  // namespace

TEST(KdsReload, AppliesRelationsAndKeepsUnchangedPairsKeys) {
    DeterministicRng rng(3);
    Server s(config({{"a", kA}, {"b", kB}}, {{"a", "b"}}), rng);
    auto ab = key(s, kA, kB);
    ASSERT_TRUE(ab);
    ErrorCode err{};
    EXPECT_FALSE(key(s, kC, kA, &err));
    EXPECT_EQ(err, ErrorCode::UnknownClient);

    ASSERT_TRUE(s.reload(config({{"a", kA}, {"b", kB}, {"c", kC}}, {{"a", "b"}, {"c", "a"}})).ok());
    auto ab2 = key(s, kB, kA);
    ASSERT_TRUE(ab2);
    EXPECT_EQ(ab2->key_id, ab->key_id) << "the a-b key survives a reload that keeps the relation";
    EXPECT_TRUE(ct_equal(ab2->key.view(), ab->key.view()));
    EXPECT_TRUE(key(s, kC, kA)) << "the new node and relation are served";
    EXPECT_EQ(s.counters().get("kds.key.dropped_by_reload"), 0u);

    ASSERT_TRUE(s.reload(config({{"a", kA}, {"b", kB}, {"c", kC}}, {{"c", "a"}})).ok());
    EXPECT_FALSE(key(s, kA, kB, &err));
    EXPECT_EQ(err, ErrorCode::UnauthorisedPair);
    EXPECT_EQ(s.counters().get("kds.key.dropped_by_reload"), 1u);
    EXPECT_EQ(s.pairs_with_key_material(), 1u);
}

TEST(KdsReload, ANodeWithANewIdentityGetsNoOldKey) {
    DeterministicRng rng(4);
    Server s(config({{"a", kA}, {"b", kB}}, {{"a", "b"}}), rng);
    auto ab = key(s, kA, kB);
    ASSERT_TRUE(ab);
    // Node "b" is now a different box (kC): the pair key made for the old one must not reach it.
    ASSERT_TRUE(s.reload(config({{"a", kA}, {"b", kC}}, {{"a", "b"}})).ok());
    EXPECT_EQ(s.counters().get("kds.key.dropped_by_reload"), 1u);
    auto cb = key(s, kC, kA);
    ASSERT_TRUE(cb);
    EXPECT_NE(cb->key_id, ab->key_id);
    ErrorCode err{};
    EXPECT_FALSE(key(s, kB, kA, &err)) << "the old identity is unknown now";
    EXPECT_EQ(err, ErrorCode::UnknownClient);
}

TEST(KdsReload, AnInvalidConfigurationChangesNothing) {
    DeterministicRng rng(5);
    Server s(config({{"a", kA}, {"b", kB}}, {{"a", "b"}}), rng);
    auto ab = key(s, kA, kB);
    ASSERT_TRUE(ab);
    auto st = s.reload(config({{"a", kA}}, {{"a", "b"}}));  // relation names an unknown node
    ASSERT_FALSE(st.ok());
    EXPECT_NE(st.error().detail().find("unknown node 'b'"), std::string::npos) << st.error().detail();
    auto again = key(s, kB, kA);
    ASSERT_TRUE(again);
    EXPECT_EQ(again->key_id, ab->key_id);
}

TEST(KdsConfig, MetricsTableIsCheckedBeforeAnythingIsLoaded) {
    auto r = parse_serve_config("[kds]\n[metrics]\nbogus = 1\n", "kds.toml", ".");
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.error().detail().find("kds.toml:3:1: unknown key 'metrics.bogus'"), std::string::npos)
        << r.error().detail();
    auto t = parse_serve_config("[kds]\n[metrics]\nlisten = 9104\n", "kds.toml", ".");
    ASSERT_FALSE(t.ok());
    EXPECT_NE(t.error().detail().find("metrics.listen must be a string"), std::string::npos) << t.error().detail();
}
