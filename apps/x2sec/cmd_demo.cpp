// Placeholder until the node agent lands: says what is available instead of pretending.
#include <iostream>

#include "registry.hpp"

static x2sec::app::Command reg("demo", "Run every case of the contribution on loopback", [](CLI::App&) {
    return []() -> int {
        std::cout << "x2sec demo: the node agent that runs the contribution's cases is not built yet.\n";
        return 0;
    };
});
