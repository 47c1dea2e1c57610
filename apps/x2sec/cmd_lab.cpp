// `x2sec lab`: the demo's cases as root, in network namespaces with TUN devices and real IP
// traffic (see src/scenario/include/x2sec/scenario/lab.hpp and docs/node.md).
#include <iostream>
#include <x2sec/common/file.hpp>
#include <x2sec/common/log.hpp>
#include <x2sec/scenario/lab.hpp>

#include "registry.hpp"

static x2sec::app::Command reg(
    "lab", "Run every case in network namespaces with TUN devices and real IP traffic (root)", [](CLI::App& app) {
        auto opt = std::make_shared<x2sec::scenario::LabOptions>();
        auto verbose = std::make_shared<bool>(false);
        auto json = std::make_shared<bool>(false);
        auto show_status = std::make_shared<bool>(false);
        auto teardown = std::make_shared<bool>(false);
        app.add_option("--case", opt->cases, "Run only these cases: scenario1, scenario2, solution2, ipsec-off");
        app.add_option("--gtpu", opt->gtpu_datagrams, "GTP-U datagrams per direction per case");
        app.add_option("--tcp-bytes", opt->tcp_bytes, "TCP transfer per case (initiator to responder)");
        app.add_option("--wait", opt->wait_s, "Seconds to wait for one process start or IKE exchange");
        app.add_option("--workdir", opt->workdir, "Keep certificates, configurations and process logs here");
        app.add_option("--x2sec", opt->x2sec_binary, "x2sec binary to run in the namespaces (default: this one)");
        auto deployment = std::make_shared<std::string>();
        app.add_option("--deployment", *deployment,
                       "Deployment TOML to use instead of the embedded one (the demo's ${...} placeholders)")
            ->check(CLI::ExistingFile);
        auto faults = std::make_shared<std::vector<std::string>>();
        app.add_option("--fault", *faults,
                       "Negative case: ra-down (no RA/CA), kds-refuses (no authorised pair at the KDS)")
            ->check(CLI::IsMember({"ra-down", "kds-refuses"}));
        app.add_flag("--keep", opt->keep, "Leave namespaces, processes and files up for inspection");
        app.add_flag("--teardown", *teardown, "Remove what an earlier `x2sec lab --keep` left, then exit");
        app.add_flag("--json", *json, "Print the report as JSON");
        app.add_flag("--status", *show_status, "Print each H(e)NB's per-neighbour status at the end");
        app.add_flag("-v,--verbose", *verbose, "Log the agents' decisions and the modules' steps on stderr");
        return [opt, verbose, json, show_status, teardown, faults, deployment]() -> int {
            using namespace x2sec;
            if (!deployment->empty()) {
                auto text = read_text_file(*deployment);
                if (!text.ok()) {
                    std::cerr << "x2sec lab: " << text.error().to_string() << "\n";
                    return 2;
                }
                opt->deployment = *text;
            }
            for (auto& f : *faults) {
                if (f == "ra-down") opt->ra_down = true;
                if (f == "kds-refuses") opt->kds_refuses = true;
            }
            if (*teardown) {
                auto removed = scenario::lab_teardown();
                for (auto& r : removed) std::cout << "removed " << r << "\n";
                if (removed.empty()) std::cout << "nothing to remove\n";
                return 0;
            }
            if (auto why = scenario::lab_unavailable_reason(); !why.empty()) {
                std::cerr << "x2sec lab: cannot run here: " << why << "\n"
                          << "  (`x2sec demo` runs the same cases on loopback without root)\n";
                return 2;
            }
            log::set_level(*verbose ? "info" : "error");
            auto r = scenario::run_lab(*opt);
            if (!r.ok()) {
                std::cerr << "x2sec lab: " << r.error().to_string() << "\n";
                return 1;
            }
            if (*json)
                std::cout << scenario::report_json(*r) << "\n";
            else
                std::cout << scenario::render_report(*r);
            if (*show_status)
                for (auto& [name, text] : r->node_status) std::cout << "\n" << text;
            if (opt->keep)
                std::cerr << "x2sec lab: left up (--keep): namespaces x2slab" << ::getpid() << "-*, files in "
                          << r->workdir << "; inspect with `ip netns exec x2slab" << ::getpid()
                          << "-henb-a1 x2sec ike list-sas --control " << r->workdir
                          << "/henb-a1-backhaul.sock`; remove with `x2sec lab --teardown`\n";
            bool all_ok = !r->cases.empty();
            for (auto& c : r->cases) all_ok = all_ok && (c.ok || !c.available);
            return all_ok ? 0 : 3;
        };
    });
