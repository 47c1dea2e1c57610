// The Prometheus text exposition format (version 0.0.4) of x2sec::metrics, and the gauges and
// histograms of Counters.
#include <gtest/gtest.h>

#include <sstream>
#include <thread>
#include <x2sec/common/counters.hpp>
#include <x2sec/common/metrics.hpp>

using namespace x2sec;
using namespace x2sec::metrics;

namespace {
std::vector<std::string> lines(const std::string& s) {
    std::vector<std::string> out;
    std::istringstream in(s);
    for (std::string l; std::getline(in, l);) out.push_back(l);
    return out;
}
}  // namespace

TEST(Metrics, EscapesLabelValuesAndHelp) {
    EXPECT_EQ(escape_label_value("a\\b\"c\nd"), "a\\\\b\\\"c\\nd");
    EXPECT_EQ(escape_label_value("plain value"), "plain value");
    // HELP escapes backslash and line feed, not the double quote.
    EXPECT_EQ(escape_help("say \"x\"\\\n"), "say \"x\"\\\\\\n");
}

TEST(Metrics, SanitizesNames) {
    EXPECT_EQ(sanitize_metric_name("esp.drop.replay"), "esp_drop_replay");
    EXPECT_EQ(sanitize_metric_name("9lives"), "_9lives");
    EXPECT_EQ(sanitize_metric_name("a:b-c"), "a:b_c");
    EXPECT_EQ(sanitize_label_name("a:b"), "a_b");
    EXPECT_EQ(sanitize_label_name("__name"), "_name");
    EXPECT_TRUE(valid_metric_name("x2sec_ike_sas"));
    EXPECT_TRUE(valid_metric_name(":recorded"));
    EXPECT_FALSE(valid_metric_name("1x"));
    EXPECT_FALSE(valid_metric_name("a.b"));
    EXPECT_FALSE(valid_label_name("__reserved"));
    EXPECT_FALSE(valid_label_name("a:b"));
    EXPECT_TRUE(valid_label_name("reason"));
}

TEST(Metrics, FormatsValues) {
    EXPECT_EQ(format_value(0), "0");
    EXPECT_EQ(format_value(18446744073709551615.0), "1.8446744073709552e+19");
    EXPECT_EQ(format_value(123456789), "123456789");
    EXPECT_EQ(format_value(-3), "-3");
    EXPECT_EQ(format_value(0.25), "0.25");
    EXPECT_EQ(format_value(0.1), "0.1");
    EXPECT_EQ(format_value(0.1 + 0.2), "0.30000000000000004");
    EXPECT_EQ(format_value(1.0 / 0.0), "+Inf");
    EXPECT_EQ(format_value(-1.0 / 0.0), "-Inf");
    EXPECT_EQ(format_value(0.0 / 0.0), "NaN");
}

TEST(Metrics, FamiliesHaveHelpAndTypeOnceWithTheirSamplesTogether) {
    Exposition e;
    e.add("x2sec_a_total", Type::Counter, "first \"family\"", {{"k", "1"}}, 1);
    e.add("x2sec_b", Type::Gauge, "second", {}, 7);
    e.add("x2sec_a_total", Type::Counter, "ignored help", {{"k", "v\"q\\\n"}}, 2);
    e.add("x2sec_a_total", Type::Gauge, "other type: dropped", {}, 9);
    EXPECT_EQ(e.families(), 2u);
    EXPECT_EQ(e.text(),
              "# HELP x2sec_a_total first \"family\"\n"
              "# TYPE x2sec_a_total counter\n"
              "x2sec_a_total{k=\"1\"} 1\n"
              "x2sec_a_total{k=\"v\\\"q\\\\\\n\"} 2\n"
              "# HELP x2sec_b second\n"
              "# TYPE x2sec_b gauge\n"
              "x2sec_b 7\n");
}

TEST(Metrics, HistogramIsCumulativeWithInfSumAndCount) {
    Histogram h({0.1, 1, 0.5, 0.5});  // sorted, duplicates removed
    for (double v : {0.05, 0.1, 0.3, 0.7, 2.0, 5.0}) h.observe(v);
    h.observe(0.0 / 0.0);  // NaN is not an observation
    auto s = h.snapshot();
    ASSERT_EQ(s.bounds, (std::vector<double>{0.1, 0.5, 1}));
    EXPECT_EQ(s.buckets, (std::vector<uint64_t>{2, 3, 4, 6}));  // le=0.1 includes 0.1 itself
    EXPECT_EQ(s.count, 6u);
    EXPECT_DOUBLE_EQ(s.sum, 8.15);
    Exposition e;
    e.add_histogram("x2sec_lat_seconds", "latency", {{"op", "ir"}}, s);
    auto l = lines(e.text());
    ASSERT_EQ(l.size(), 8u);
    EXPECT_EQ(l[0], "# HELP x2sec_lat_seconds latency");
    EXPECT_EQ(l[1], "# TYPE x2sec_lat_seconds histogram");
    EXPECT_EQ(l[2], "x2sec_lat_seconds_bucket{op=\"ir\",le=\"0.1\"} 2");
    EXPECT_EQ(l[3], "x2sec_lat_seconds_bucket{op=\"ir\",le=\"0.5\"} 3");
    EXPECT_EQ(l[4], "x2sec_lat_seconds_bucket{op=\"ir\",le=\"1\"} 4");
    EXPECT_EQ(l[5], "x2sec_lat_seconds_bucket{op=\"ir\",le=\"+Inf\"} 6");
    EXPECT_EQ(l[6], "x2sec_lat_seconds_sum{op=\"ir\"} 8.15");
    EXPECT_EQ(l[7], "x2sec_lat_seconds_count{op=\"ir\"} 6");
}

TEST(Metrics, HistogramObservedFromManyThreadsKeepsCountAndInfEqual) {
    Histogram h;
    std::vector<std::thread> t;
    for (int i = 0; i < 4; ++i)
        t.emplace_back([&] {
            for (int k = 0; k < 10000; ++k) h.observe(k % 7 * 0.01);
        });
    for (auto& x : t) x.join();
    auto s = h.snapshot();
    EXPECT_EQ(s.count, 40000u);
    EXPECT_EQ(s.buckets.back(), s.count);
    for (size_t i = 1; i < s.buckets.size(); ++i) EXPECT_LE(s.buckets[i - 1], s.buckets[i]);
}

TEST(Metrics, CountersMapOntoFamiliesByRules) {
    Counters c;
    c.inc("esp.drop.replay", 3);
    c.inc("esp.drop.bad_icv");
    c.inc("esp.rx.packets", 10);
    c.inc("odd-name.x");
    Registry r;  // not the process's: this test owns it
    r.set_gauge("ike.sas.open", 2);
    r.observe("ike.setup_seconds", 0.02);
    std::vector<Rule> rules{{"esp.drop.", "x2sec_esp_drops_total", "reason", "ESP packets dropped, by reason"},
                            {"esp.rx.packets", "x2sec_esp_rx_packets_total", "", "ESP packets received"},
                            {"ike.setup_seconds", "x2sec_ike_setup_seconds", "", "IKE SA setup time"}};
    Exposition e;
    e.add_counters(c, rules, {{"instance_name", "a"}});
    e.add_registry(r, rules, {{"instance_name", "a"}});
    std::string t = e.text();
    EXPECT_NE(t.find("# TYPE x2sec_esp_drops_total counter\n"
                     "x2sec_esp_drops_total{instance_name=\"a\",reason=\"bad_icv\"} 1\n"
                     "x2sec_esp_drops_total{instance_name=\"a\",reason=\"replay\"} 3\n"),
              std::string::npos)
        << t;
    EXPECT_NE(t.find("x2sec_esp_rx_packets_total{instance_name=\"a\"} 10\n"), std::string::npos) << t;
    // No rule: a generic family with the counter's name, sanitized.
    EXPECT_NE(t.find("# HELP x2sec_odd_name_x_total x2sec counter 'odd-name.x'\n"
                     "# TYPE x2sec_odd_name_x_total counter\n"),
              std::string::npos)
        << t;
    EXPECT_NE(t.find("# TYPE x2sec_ike_sas_open gauge\nx2sec_ike_sas_open{instance_name=\"a\"} 2\n"), std::string::npos)
        << t;
    EXPECT_NE(t.find("x2sec_ike_setup_seconds_bucket{instance_name=\"a\",le=\"0.025\"} 1\n"), std::string::npos) << t;
    EXPECT_NE(t.find("x2sec_ike_setup_seconds_count{instance_name=\"a\"} 1\n"), std::string::npos) << t;
    // Every sample line is name{labels} value, with a valid name.
    for (const auto& l : lines(t)) {
        if (l.rfind("# ", 0) == 0) continue;
        auto name = l.substr(0, l.find_first_of("{ "));
        EXPECT_TRUE(valid_metric_name(name)) << l;
    }
}

TEST(MetricsRegistry, GaugesAndHistogramsAreStable) {
    Registry c;
    auto& g = c.gauge("x.level");
    g.store(5);
    c.set_gauge("x.level", -2);
    EXPECT_EQ(g.load(), -2);
    EXPECT_EQ(c.gauges().at("x.level"), -2);
    auto& h = c.histogram("x.lat", {1, 2});
    EXPECT_EQ(&h, &c.histogram("x.lat"));  // bounds of the first call stay
    c.observe("x.lat", 1.5);
    auto s = c.histograms().at("x.lat");
    EXPECT_EQ(s.bounds, (std::vector<double>{1, 2}));
    EXPECT_EQ(s.buckets, (std::vector<uint64_t>{0, 1, 1}));
}
