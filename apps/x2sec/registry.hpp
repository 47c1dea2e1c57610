// Subcommand registry for the `x2sec` binary.  A command file does:
//
//   static x2sec::app::Command reg("demo", "Run every case of the contribution on loopback",
//       [](CLI::App& sub) { ...add options...; return [&]() -> int { ...run...; }; });
//
// The setup function adds the command's options to its CLI11 sub-app and returns the function
// that runs it (called only when that subcommand was chosen).
#pragma once

#include <CLI/CLI.hpp>
#include <functional>
#include <string>
#include <vector>

namespace x2sec::app {

using Runner = std::function<int()>;
using Setup = std::function<Runner(CLI::App&)>;

struct CommandInfo {
    std::string name;
    std::string description;
    Setup setup;
};

std::vector<CommandInfo>& registry();

struct Command {
    Command(std::string name, std::string description, Setup setup) {
        registry().push_back({std::move(name), std::move(description), std::move(setup)});
    }
};

}  // namespace x2sec::app
