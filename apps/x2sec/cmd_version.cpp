#include <openssl/opensslv.h>
#include <iostream>

#include "registry.hpp"

static x2sec::app::Command reg("version", "Print version and library information", [](CLI::App&) {
    return []() -> int {
        std::cout << "x2sec 0.1.0\n" << OPENSSL_VERSION_TEXT << "\n";
        return 0;
    };
});
