// `x2sec demo`: every case of the contribution on loopback, one command, no root.
#include <iostream>
#include <x2sec/common/log.hpp>
#include <x2sec/scenario/demo.hpp>

#include "registry.hpp"

static x2sec::app::Command reg(
    "demo", "Run every case of the contribution on loopback (no root needed)", [](CLI::App& app) {
        auto opt = std::make_shared<x2sec::scenario::DemoOptions>();
        auto verbose = std::make_shared<bool>(false);
        auto show_status = std::make_shared<bool>(false);
        auto print_config = std::make_shared<bool>(false);
        auto base_port = std::make_shared<int>(0);
        app.add_option("--case", opt->cases, "Run only these cases: scenario1, scenario2, solution2, ipsec-off");
        app.add_option("--base-port", *base_port, "First of 14 consecutive loopback ports (default: from the pid)");
        app.add_option("--messages", opt->x2_messages, "X2AP + GTP-U packets per direction per case");
        app.add_option("--workdir", opt->workdir, "Keep certificates, keys and the deployment file here");
        auto keys = std::make_shared<std::string>("file");
        app.add_option(
               "--keys", *keys,
               "Where the H(e)NBs' keys live: file, or pkcs11 (each H(e)NB's vendor and operator keys generated in "
               "its own SoftHSM2 token, never leaving it)")
            ->check(CLI::IsMember({"file", "pkcs11"}))
            ->capture_default_str();
        app.add_flag("--status", *show_status, "Print each H(e)NB's per-neighbour status at the end");
        app.add_flag("--print-config", *print_config, "Print the embedded deployment file and exit");
        app.add_flag("-v,--verbose", *verbose, "Log every module's decisions and protocol steps");
        return [opt, verbose, show_status, print_config, base_port, keys]() -> int {
            using namespace x2sec;
            if (*print_config) {
                std::cout << scenario::default_deployment_template();
                return 0;
            }
            log::set_level(*verbose ? "info" : "error");
            opt->base_port = uint16_t(*base_port);
            opt->keys = *keys == "pkcs11" ? x2sec::scenario::DemoOptions::Keys::Pkcs11
                                          : x2sec::scenario::DemoOptions::Keys::File;
            if (!opt->workdir.empty()) opt->keep_workdir = true;
            auto r = scenario::run_demo(*opt);
            if (!r.ok()) {
                std::cerr << "x2sec demo: " << r.error().to_string() << "\n";
                return 1;
            }
            std::cout << scenario::render_report(*r);
            if (*show_status)
                for (auto& [name, text] : r->node_status) std::cout << "\n" << text;
            bool all_ok = true;
            for (auto& c : r->cases) all_ok = all_ok && (c.ok || !c.available);
            return all_ok ? 0 : 3;
        };
    });
