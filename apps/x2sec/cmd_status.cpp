// `x2sec status`: per-neighbour decision, its steps and the tunnel state.
//   x2sec status --config deployment.toml [--henb NAME] [--json]
//       the decision each H(e)NB takes for each neighbour from its configuration (no network);
//   x2sec status --demo
//       brings the loopback demo world up and prints every H(e)NB's live per-neighbour state.
#include <iostream>
#include <nlohmann/json.hpp>
#include <x2sec/common/log.hpp>
#include <x2sec/scenario/demo.hpp>
#include <x2sec/policy/config.hpp>

#include "registry.hpp"

static x2sec::app::Command reg("status", "Per-neighbour decision, steps and tunnel state", [](CLI::App& app) {
    auto config = std::make_shared<std::string>();
    auto henb = std::make_shared<std::string>();
    auto json = std::make_shared<bool>(false);
    auto demo = std::make_shared<bool>(false);
    app.add_option("--config,-c", *config, "Deployment file (TOML)");
    app.add_option("--henb", *henb, "Only this H(e)NB");
    app.add_flag("--json", *json, "JSON output");
    app.add_flag("--demo", *demo, "Run the loopback demo world and show its live state");
    return [config, henb, json, demo]() -> int {
        using namespace x2sec;
        if (*demo) {
            log::set_level("error");
            auto r = scenario::run_demo({});
            if (!r.ok()) {
                std::cerr << "x2sec status: " << r.error().to_string() << "\n";
                return 1;
            }
            for (auto& [name, text] : r->node_status)
                if (henb->empty() || *henb == name) std::cout << text << "\n";
            return 0;
        }
        if (config->empty()) {
            std::cerr << "x2sec status: give --config <deployment.toml> or --demo\n";
            return 2;
        }
        auto cfg = policy::load_config(*config);
        if (!cfg.ok()) {
            std::cerr << "x2sec status: " << cfg.error().detail() << "\n";
            return 2;
        }
        nlohmann::json out = nlohmann::json::array();
        for (auto& h : cfg->henbs) {
            if (!henb->empty() && h.name != *henb) continue;
            auto lf = policy::local_facts(*cfg, h);
            if (!*json)
                std::cout << h.name << " (" << h.identity << "), CMPv2 " << (h.cmp ? "supported" : "not supported")
                          << ", certificate from '" << h.certificate_anchor << "'\n";
            nlohmann::json jh{{"henb", h.name}, {"identity", h.identity}};
            for (auto& n : h.neighbours) {
                auto d = policy::decide(lf, policy::peer_facts(*cfg, h, n));
                if (*json) {
                    nlohmann::json jn{{"name", n.name},
                                      {"action", policy::to_string(d.action)},
                                      {"basis", d.basis},
                                      {"steps", d.steps},
                                      {"tunnel", "not running"}};
                    if (d.warning) jn["warning"] = *d.warning;
                    if (d.action == policy::Action::Down) jn["reason"] = d.down_reason;
                    jh["neighbours"].push_back(jn);
                    continue;
                }
                std::cout << "  neighbour " << n.name << " (" << n.identity << " at " << n.address.to_string()
                          << "): " << policy::to_string(d.action) << "\n";
                if (!d.basis.empty()) std::cout << "    basis: " << d.basis << "\n";
                if (d.warning) std::cout << "    WARNING: " << *d.warning << "\n";
                for (auto& s : d.steps) std::cout << "    - " << s << "\n";
                std::cout << "    tunnel: not running (this is the planned decision; `x2sec status --demo` shows live "
                             "state)\n";
            }
            out.push_back(jh);
        }
        if (*json) std::cout << out.dump(2) << "\n";
        return 0;
    };
});
