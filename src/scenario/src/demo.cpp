// The loopback demo world.  See demo.hpp.
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <iomanip>
#include <sstream>
#include <x2sec/common/file.hpp>
#include <x2sec/common/log.hpp>
#include <x2sec/common/rng.hpp>
#include <x2sec/kds/server.hpp>
#include <x2sec/kds/tls.hpp>
#include <x2sec/scenario/demo.hpp>
#include <x2sec/scenario/lab_pki.hpp>
#include <x2sec/scenario/x2_traffic.hpp>
#include <x2sec/policy/config.hpp>

#include "demo_world.hpp"

namespace x2sec::scenario {

using namespace x2sec::node;  // the agent and its types

namespace fs = std::filesystem;

std::string default_deployment_template() {
    return R"(# x2sec demo deployment (embedded default).  Every H(e)NB, the SeGW, the operator RA/CA
# and the KDS run on 127.0.0.1 with distinct ports; ${...} are filled in at start.
[[anchor]]
label = "vendor-a"
file = "vendor-a-root.pem"
[[anchor]]
label = "vendor-b"
file = "vendor-b-root.pem"
[[anchor]]
label = "operator"
file = "operator-root.pem"

[segw]
address = "127.0.0.1:${PORT_segw}"
identity = "segw.operator.example"
[cmp]
url = "http://127.0.0.1:${PORT_cmp}/.well-known/cmp/p/henb"
profile = "henb"
[kds]
address = "127.0.0.1:${PORT_kds}"
identity = "kds.operator.example"
[backoff]
initial_ms = 1000
max_ms = 60000

# Vendor A, enterprise H(e)NB with CMPv2 support
[[henb]]
name = "henb-a1"
identity = "0023a1000001.henb.vendor-a.example"
vendor = "vendor-a"
address = "127.0.0.1:${PORT_henb-a1}"
certificate_anchor = "vendor-a"
trust_anchors = ["vendor-a", "operator"]
cmp = true
  [[henb.neighbour]]        # Scenario 1: same CA
  name = "henb-a2"
  auth = "certificate"
  peer_anchor = "vendor-a"
  [[henb.neighbour]]        # Scenario 2: different CAs
  name = "henb-b1"
  auth = "certificate"
  peer_anchor = "vendor-b"
  [[henb.neighbour]]        # enterprise link secured physically: IPsec off (Proposal 1)
  name = "henb-a3"
  ipsec = "off"

# Vendor A, no CMPv2 (Proposal 4: optional)
[[henb]]
name = "henb-a2"
identity = "0023a1000002.henb.vendor-a.example"
vendor = "vendor-a"
address = "127.0.0.1:${PORT_henb-a2}"
certificate_anchor = "vendor-a"
trust_anchors = ["vendor-a", "operator"]
cmp = false
  [[henb.neighbour]]
  name = "henb-a1"
  auth = "certificate"
  peer_anchor = "vendor-a"
  [[henb.neighbour]]        # Solution 2: pairwise key from the KDS
  name = "henb-b2"
  auth = "psk-from-network"

[[henb]]
name = "henb-a3"
identity = "0023a1000003.henb.vendor-a.example"
vendor = "vendor-a"
address = "127.0.0.1:${PORT_henb-a3}"
certificate_anchor = "vendor-a"
trust_anchors = ["vendor-a", "operator"]
  [[henb.neighbour]]
  name = "henb-a1"
  ipsec = "off"

# Vendor B, with CMPv2 support
[[henb]]
name = "henb-b1"
identity = "0023b2000001.henb.vendor-b.example"
vendor = "vendor-b"
address = "127.0.0.1:${PORT_henb-b1}"
certificate_anchor = "vendor-b"
trust_anchors = ["vendor-b", "operator"]
cmp = ${B1_CMP}
  [[henb.neighbour]]
  name = "henb-a1"
  auth = "certificate"
  peer_anchor = "vendor-a"

# Vendor B, no CMPv2
[[henb]]
name = "henb-b2"
identity = "0023b2000002.henb.vendor-b.example"
vendor = "vendor-b"
address = "127.0.0.1:${PORT_henb-b2}"
certificate_anchor = "vendor-b"
trust_anchors = ["vendor-b", "operator"]
  [[henb.neighbour]]
  name = "henb-a2"
  auth = "psk-from-network"
)";
}

namespace {

std::string substitute(std::string text, const std::map<std::string, std::string>& vars) {
    for (auto& [k, v] : vars) {
        std::string key = "${" + k + "}";
        for (size_t p = text.find(key); p != std::string::npos; p = text.find(key, p + v.size()))
            text.replace(p, key.size(), v);
    }
    return text;
}

double ms_since(std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

struct CaseDef {
    std::string id, title, a, b;
};

const std::vector<CaseDef>& case_defs() {
    static const std::vector<CaseDef> defs = {
        {"scenario1", "Scenario 1: same CA, IKEv2 with current certificates (Proposal 2)", "henb-a1", "henb-a2"},
        {"scenario2", "Scenario 2 / Solution 1: CMPv2 enrolment, IKEv2 with operator certificates (Proposal 3)",
         "henb-a1", "henb-b1"},
        {"solution2", "Solution 2: pairwise key from the KDS, IKEv2 with PSK", "henb-a2", "henb-b2"},
        {"ipsec-off", "IPsec off by operator policy: plain X2 (Proposal 1)", "henb-a1", "henb-a3"},
    };
    return defs;
}

}  // namespace

Result<DemoReport> run_demo(const DemoOptions& opt) {
    DemoReport report;
    // ------------------------------------------------------------ working directory
    std::string dir = opt.workdir;
    bool remove_dir = false;
    if (dir.empty()) {
        std::string tmpl = (fs::temp_directory_path() / "x2sec-demo-XXXXXX").string();
        std::vector<char> buf(tmpl.begin(), tmpl.end());
        buf.push_back(0);
        if (!mkdtemp(buf.data())) return Error(ErrorDomain::Io, errno, "cannot create a working directory");
        dir = buf.data();
        remove_dir = !opt.keep_workdir;
    } else {
        fs::create_directories(dir);
    }
    report.workdir = dir;
    struct Cleanup {
        std::string d;
        bool on;
        ~Cleanup() {
            std::error_code ec;
            if (on) fs::remove_all(d, ec);
        }
    } cleanup{dir, remove_dir};

    // ------------------------------------------------------------ ports
    uint16_t base = opt.base_port ? opt.base_port : uint16_t(20000 + (getpid() % 2000) * 16);
    std::map<std::string, uint16_t> ports = {{"segw", base},
                                             {"henb-a1", uint16_t(base + 2)},
                                             {"henb-a2", uint16_t(base + 4)},
                                             {"henb-a3", uint16_t(base + 6)},
                                             {"henb-b1", uint16_t(base + 8)},
                                             {"henb-b2", uint16_t(base + 10)},
                                             {"kds", uint16_t(base + 12)},
                                             {"cmp", uint16_t(base + 13)}};
    std::map<std::string, std::string> vars;
    for (auto& [k, v] : ports) vars["PORT_" + k] = std::to_string(v);
    vars["B1_CMP"] = opt.peer_without_cmp ? "false" : "true";

    // ------------------------------------------------------------ the world
    World world(dir, ports, opt);
    X2SEC_TRY_STATUS(world.create_pki());
    std::string toml = opt.config_override.empty() ? substitute(default_deployment_template(), vars)
                                                   : substitute(opt.config_override, vars);
    X2SEC_TRY_STATUS(write_file_atomic(dir + "/deployment.toml", toml));
    auto cfg = policy::parse_config(toml, "deployment.toml", dir);
    if (!cfg.ok()) return std::move(cfg).error().context("embedded deployment");
    X2SEC_TRY_STATUS(world.start(*cfg));

    // ------------------------------------------------------------ backhaul first
    auto t0 = std::chrono::steady_clock::now();
    Millis now = 0;
    for (auto& [name, agent] : world.agents()) agent->ensure_backhaul(now);
    for (auto& [name, agent] : world.agents())
        for (auto& p : agent->node_phases())
            if (p.name == "backhaul") report.backhaul += p.measure;
    report.backhaul.time_ms = ms_since(t0);
    if (!cfg->segw) {
        report.backhaul_note = "no SeGW configured";
    } else {
        size_t up = 0;
        for (auto& [name, agent] : world.agents()) up += agent->backhaul_up() ? 1 : 0;
        report.backhaul_note = std::to_string(up) + "/" + std::to_string(world.agents().size()) +
                               " H(e)NBs have their backhaul IKE SA to the SeGW up (device certificates)";
    }

    // ------------------------------------------------------------ the cases
    for (auto& def : case_defs()) {
        if (!opt.cases.empty() && std::find(opt.cases.begin(), opt.cases.end(), def.id) == opt.cases.end()) continue;
        CaseReport c = world.run_case(def.id, def.title, def.a, def.b, now);
        report.cases.push_back(std::move(c));
        now += 1;
    }
    for (auto& [name, agent] : world.agents()) report.node_status[name] = agent->status_text();
    world.stop();
    return report;
}

namespace {

std::string fmt_bytes(size_t b) {
    return std::to_string(b);
}

std::string pad(const std::string& s, size_t w) {
    // width in code points is close enough for our ASCII table
    if (s.size() >= w) return s;
    return s + std::string(w - s.size(), ' ');
}

std::string fmt_ms(double ms) {
    std::ostringstream o;
    o << std::fixed << std::setprecision(ms < 10 ? 2 : 1) << ms;
    return o.str();
}

}  // namespace

std::string render_report(const DemoReport& r) {
    std::ostringstream o;
    o << (r.environment.empty() ? "x2sec demo" : "x2sec lab")
      << " — security of the direct X2 interface between H(e)NBs (3GPP TS 33.320 clause 11)\n";
    if (r.environment.empty())
        o << "everything on 127.0.0.1, working directory " << r.workdir << "\n\n";
    else
        o << r.environment << ", working directory " << r.workdir << "\n";
    for (auto& t : r.topology) o << "  " << t << "\n";
    for (auto& n : r.notes) o << "  note: " << n << "\n";
    if (!r.environment.empty()) o << "\n";
    o << "Backhaul: " << r.backhaul_note << "\n";
    if (r.backhaul.messages)
        o << "  " << r.backhaul.messages << " IKE messages, " << r.backhaul.bytes << " bytes, "
          << r.backhaul.round_trips << " round trips, " << fmt_ms(r.backhaul.time_ms) << " ms\n";
    o << "\n";
    for (auto& c : r.cases) {
        o << "=== " << c.title << "\n";
        o << "    " << c.a << " <-> " << c.b << "\n";
        for (auto& w : c.warnings) o << "    !!! WARNING: " << w << "\n";
        for (auto& s : c.steps) o << "    " << s << "\n";
        if (!c.available) o << "    not available: " << c.not_available << "\n";
        for (auto& [name, m] : c.phases)
            o << "    phase " << pad(name, 14) << m.messages << " messages, " << m.bytes << " bytes, " << m.round_trips
              << " round trips, " << fmt_ms(m.time_ms) << " ms\n";
        if (c.x2_sent)
            o << "    X2 traffic: " << c.x2_delivered_intact << "/" << c.x2_sent
              << (r.environment.empty() ? " packets (X2AP/SCTP 36422 + GTP-U/UDP 2152)" : " GTP-U datagrams (UDP 2152)")
              << " delivered byte for byte; plaintext " << (c.plaintext_on_wire ? "VISIBLE" : "not visible")
              << " on the wire (" << c.traffic.bytes << " bytes on the wire)\n";
        if (c.tcp_sent)
            o << "    TCP transfer: " << c.tcp_received << "/" << c.tcp_sent << " bytes, "
              << (c.tcp_intact ? "identical" : "DIFFERENT") << "\n";
        if (!r.environment.empty() && c.x2_sent)
            o << "    on the LAN: " << c.esp_packets_on_wire << " ESP-in-UDP packets (" << c.esp_bytes_on_wire
              << " bytes); frames with an inner X2 address in clear: " << c.clear_inner_frames_on_wire << "\n";
        for (auto& d : c.dataplane) o << "    data plane " << d << "\n";
        o << "    outcome: " << (c.ok ? "OK" : (c.available ? "FAILED" : "NOT AVAILABLE")) << " — " << c.outcome
          << "\n\n";
    }
    // Table 1 with measured numbers.
    o << "Table 1 (measured in this run): establishing protection for one direct interface\n";
    const size_t w0 = 26, w = 26;
    o << pad("", w0);
    for (auto& c : r.cases) o << pad(c.id, w);
    o << "\n";
    auto row = [&](const std::string& label, auto f) {
        o << pad(label, w0);
        for (auto& c : r.cases) o << pad(f(c), w);
        o << "\n";
    };
    row("outcome",
        [](const CaseReport& c) { return std::string(c.ok ? "OK" : (c.available ? "FAILED" : "not available")); });
    row("mechanism", [](const CaseReport& c) {
        if (c.id == "scenario1") return std::string("IKEv2 vendor certs");
        if (c.id == "scenario2") return std::string("CMPv2 + IKEv2 op. certs");
        if (c.id == "solution2") return std::string("KDS + IKEv2-PSK");
        return std::string("none (plain X2)");
    });
    row("entities involved",
        [](const CaseReport& c) { return c.available ? std::to_string(c.setup.entities.size()) : std::string("-"); });
    row("protocol phases", [](const CaseReport& c) {
        if (!c.available) return std::string("-");
        std::string s;
        for (auto& [name, m] : c.phases) s += (s.empty() ? "" : "+") + name;
        return s.empty() ? std::string("none") : s;
    });
    row("messages",
        [](const CaseReport& c) { return c.available ? std::to_string(c.setup.messages) : std::string("-"); });
    row("bytes", [](const CaseReport& c) { return c.available ? fmt_bytes(c.setup.bytes) : std::string("-"); });
    row("round trips",
        [](const CaseReport& c) { return c.available ? std::to_string(c.setup.round_trips) : std::string("-"); });
    row("set-up time (ms)",
        [](const CaseReport& c) { return c.available ? fmt_ms(c.setup.time_ms) : std::string("-"); });
    row("X2 packets intact", [](const CaseReport& c) {
        return c.x2_sent ? std::to_string(c.x2_delivered_intact) + "/" + std::to_string(c.x2_sent) : std::string("-");
    });
    row("X2 plaintext on wire", [](const CaseReport& c) {
        return c.x2_sent ? std::string(c.plaintext_on_wire ? "yes" : "no") : std::string("-");
    });
    o << "\n";
    for (auto& c : r.cases) {
        o << "  " << pad(c.id, 11) << " entities: ";
        bool first = true;
        for (auto& e : c.setup.entities) {
            o << (first ? "" : ", ") << e;
            first = false;
        }
        o << "\n";
    }
    // The contribution's qualitative rows, with what was measured behind them.
    for (auto& c : r.cases) {
        if (!c.ok) continue;
        if (c.id == "scenario2" && c.phases.count("cmp-enrolment")) {
            auto& m = c.phases.at("cmp-enrolment");
            o << "\nSolution 1: the operator RA/CA took part with " << m.messages << " CMP messages (" << m.bytes
              << " bytes) for two enrolments; once enrolled, further neighbours need only IKEv2 between the H(e)NBs.";
        }
        if (c.id == "solution2" && c.phases.count("kds-fetch")) {
            auto& m = c.phases.at("kds-fetch");
            o << "\nSolution 2: the KDS took part with " << m.messages << " messages (" << m.bytes
              << " bytes incl. mutual TLS) for this one pair; every further pair and every key renewal needs it again.";
        }
    }
    o << "\n";
    return o.str();
}

}  // namespace x2sec::scenario
