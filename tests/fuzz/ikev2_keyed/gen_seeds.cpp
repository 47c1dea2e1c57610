// Writes the seed corpora of the keyed fuzz targets from real exchanges:
//   ikev2_keyed_seeds <dir>   ->  <dir>/corpus_responder/*.bin, <dir>/corpus_initiator/*.bin
#include <filesystem>
#include <fstream>
#include <iostream>

#include "keyed_harness.hpp"

int main(int argc, char** argv) {
    using namespace x2sec::test::keyed;
    if (argc != 2) {
        std::cerr << "usage: ikev2_keyed_seeds <tests/fuzz/ikev2_keyed>\n";
        return 2;
    }
    quiet();
    for (auto [sub, list] : {std::pair{"corpus_responder", std::span<const Scenario>(kResponderScenarios)},
                             std::pair{"corpus_initiator", std::span<const Scenario>(kInitiatorScenarios)}}) {
        auto dir = std::filesystem::path(argv[1]) / sub;
        std::filesystem::create_directories(dir);
        for (const auto& s : record_seeds(list)) {
            std::ofstream out(dir / (s.stem + ".bin"), std::ios::binary | std::ios::trunc);
            out.write(reinterpret_cast<const char*>(s.input.data()), static_cast<std::streamsize>(s.input.size()));
            std::cout << (dir / (s.stem + ".bin")).string() << ": " << s.input.size() << " octets\n";
        }
    }
    return 0;
}
