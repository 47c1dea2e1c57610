// The lab's names: namespace and interface names reach iproute2 only after a strict check, and
// a hostile H(e)NB name in the deployment file is refused, naming it, before anything is created.
#include <gtest/gtest.h>

#include <string>
#include <x2sec/policy/config.hpp>
#include <x2sec/scenario/demo.hpp>
#include <x2sec/scenario/ip_command.hpp>
#include <x2sec/scenario/lab.hpp>

using namespace x2sec;
using namespace x2sec::scenario;

namespace {

TEST(ScenarioNames, NetnsNamesOfTheLabPass) {
    for (const char* n : {"x2slab123-sw", "x2slab123-core", "x2slab1-henb-a1", "a", "A.b_c-1"})
        EXPECT_TRUE(ipcmd::check_netns_name(n).ok()) << n;
    EXPECT_TRUE(ipcmd::check_netns_name(std::string(ipcmd::kMaxNetnsName, 'n')).ok());
}

TEST(ScenarioNames, HostileNetnsNamesAreRefusedWithTheName) {
    struct Case {
        std::string name, why;
    };
    for (const auto& c : std::vector<Case>{{"", "empty"},
                                           {"x; rm -rf /", "only letters, digits"},
                                           {"$(reboot)", "must start with a letter or a digit"},
                                           {"a`id`", "only letters, digits"},
                                           {"a b", "only letters, digits"},
                                           {"../../etc", "must start with a letter or a digit"},
                                           {"a/b", "only letters, digits"},
                                           {"-n", "must start with a letter or a digit"},
                                           {".", "must start with a letter or a digit"},
                                           {"a|b", "only letters, digits"},
                                           {"a\nb", "only letters, digits"},
                                           {std::string(ipcmd::kMaxNetnsName + 1, 'n'), "longer than 64"}}) {
        auto st = ipcmd::check_netns_name(c.name);
        ASSERT_FALSE(st.ok()) << c.name;
        EXPECT_EQ(st.error().domain(), ErrorDomain::Config);
        EXPECT_NE(st.error().detail().find("invalid network namespace name"), std::string::npos) << st.error().detail();
        EXPECT_NE(st.error().detail().find(c.why), std::string::npos) << st.error().detail();
    }
    // Control characters are shown escaped, never raw.
    auto st = ipcmd::check_netns_name("a\nb");
    ASSERT_FALSE(st.ok());
    EXPECT_NE(st.error().detail().find("'a\\x0ab'"), std::string::npos) << st.error().detail();
}

TEST(ScenarioNames, InterfaceNamesAreAtMost15Characters) {
    EXPECT_TRUE(ipcmd::check_ifname("x2slan").ok());
    EXPECT_TRUE(ipcmd::check_ifname("lo").ok());
    EXPECT_TRUE(ipcmd::check_ifname("abcdefghijklmno").ok());
    auto st = ipcmd::check_ifname("abcdefghijklmnop");
    ASSERT_FALSE(st.ok());
    EXPECT_NE(st.error().detail().find("invalid interface name 'abcdefghijklmnop': longer than 15"), std::string::npos)
        << st.error().detail();
    EXPECT_FALSE(ipcmd::check_ifname("eth0;id").ok());
}

// Every helper checks its names before running anything: with a hostile name the command is
// never started (the error is the name check's, not iproute2's).
TEST(ScenarioNames, HelpersRefuseBeforeRunningIp) {
    const std::string bad = "x;touch /tmp/x2sec-pwned";
    for (auto st :
         {ipcmd::netns_add(bad), ipcmd::netns_del(bad), ipcmd::bridge_add(bad, "x2sbr"),
          ipcmd::bridge_add("ok", "bad name"), ipcmd::veth_add("ok", "x2slan", bad, "x2sp0"),
          ipcmd::link_up("ok", "x2slan", "br;x"), ipcmd::addr_add(bad, IpAddress::v4(192, 0, 2, 1), 24, "x2slan")}) {
        ASSERT_FALSE(st.ok());
        EXPECT_NE(st.error().detail().find("invalid "), std::string::npos) << st.error().detail();
    }
    EXPECT_FALSE(ipcmd::netns_pids(bad).ok());
    EXPECT_FALSE(ipcmd::link_stats_json(bad, "x2slan").ok());
    auto argv = ipcmd::netns_exec_argv(bad, {"/bin/true"});
    ASSERT_FALSE(argv.ok());
    EXPECT_NE(argv.error().detail().find("invalid network namespace name 'x;touch /tmp/x2sec-pwned'"),
              std::string::npos);
}

TEST(ScenarioNames, ExecArgvKeepsArgumentsApart) {
    if (ipcmd::ip_binary().empty()) GTEST_SKIP() << "iproute2 `ip` is not installed";
    auto argv = ipcmd::netns_exec_argv("x2slab1-henb-a1", {"/usr/bin/x2sec", "--tun-addr", "203.0.113.1/32; id"});
    ASSERT_TRUE(argv.ok()) << argv.error().detail();
    ASSERT_EQ(argv->size(), 7u);
    EXPECT_EQ((*argv)[1], "netns");
    EXPECT_EQ((*argv)[2], "exec");
    EXPECT_EQ((*argv)[3], "x2slab1-henb-a1");
    EXPECT_EQ((*argv)[6], "203.0.113.1/32; id");  // one argument, never interpreted
}

// The placeholders the demo fills in (distinct ports, CMP on).
void fill_placeholders(std::string& toml) {
    uint16_t port = 20000;
    for (const char* k : {"segw", "henb-a1", "henb-a2", "henb-a3", "henb-b1", "henb-b2", "kds", "cmp"}) {
        const std::string ph = std::string("${PORT_") + k + "}";
        const std::string value = std::to_string(port++);
        for (size_t p = toml.find(ph); p != std::string::npos; p = toml.find(ph)) toml.replace(p, ph.size(), value);
    }
    const std::string cmp = "${B1_CMP}";
    for (size_t p = toml.find(cmp); p != std::string::npos; p = toml.find(cmp)) toml.replace(p, cmp.size(), "true");
}

// A deployment file whose H(e)NB name is not a valid namespace name: the lab refuses it by name.
TEST(ScenarioNames, HostileHenbNameFromTheDeploymentIsRefused) {
    std::string toml = default_deployment_template();
    const std::string from = "name = \"henb-a1\"";
    const std::string hostile = "henb-a1;ip netns del x";
    for (size_t p = toml.find(from); p != std::string::npos; p = toml.find(from, p + 1))
        toml.replace(p, from.size(), "name = \"" + hostile + "\"");
    fill_placeholders(toml);
    auto cfg = policy::parse_config(toml, "deployment.toml", "/nonexistent");
    ASSERT_TRUE(cfg.ok()) << cfg.error().detail();
    ASSERT_NE(cfg->henb(hostile), nullptr);
    auto st = check_lab_names(*cfg, "4242");
    ASSERT_FALSE(st.ok());
    EXPECT_EQ(st.error().domain(), ErrorDomain::Config);
    EXPECT_NE(st.error().detail().find("deployment.toml [[henb]] name: invalid network namespace name "
                                       "'x2slab4242-henb-a1;ip netns del x'"),
              std::string::npos)
        << st.error().detail();

    // The embedded deployment's names all pass.
    std::string good = default_deployment_template();
    fill_placeholders(good);
    auto gcfg = policy::parse_config(good, "deployment.toml", "/nonexistent");
    ASSERT_TRUE(gcfg.ok()) << gcfg.error().detail();
    EXPECT_TRUE(check_lab_names(*gcfg, "4242").ok());
}

}  // namespace
