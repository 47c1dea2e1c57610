// x2sec: one binary, many subcommands (demo, lab, pki, ca, enroll, kds, ike, esp, status,
// sim, bench).  Each subcommand is registered from its own cmd_*.cpp file.
#include <algorithm>
#include <iostream>
#include <map>

#include <x2sec/common/log.hpp>

#include "registry.hpp"

int main(int argc, char** argv) {
    CLI::App app{"x2sec — security for the direct interface (X2) between H(e)NBs: IKEv2, ESP, CMPv2"};
    app.require_subcommand(1);
    std::string level = "info";
    app.add_option("--log-level", level, "trace, debug, info, warn, error, off")
        ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "critical", "off"}));
    app.set_version_flag("--version", "x2sec 0.1.0");

    auto& commands = x2sec::app::registry();
    std::sort(commands.begin(), commands.end(), [](const auto& a, const auto& b) { return a.name < b.name; });
    std::map<CLI::App*, x2sec::app::Runner> runners;
    for (auto& c : commands) {
        CLI::App* sub = app.add_subcommand(c.name, c.description);
        runners[sub] = c.setup(*sub);
    }
    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        return app.exit(e);
    }
    x2sec::log::set_level(level);
    for (auto& [sub, run] : runners) {
        if (sub->parsed()) {
            try {
                return run();
            } catch (const std::exception& e) {
                std::cerr << "x2sec " << sub->get_name() << ": " << e.what() << "\n";
                return 1;
            }
        }
    }
    return 2;
}
