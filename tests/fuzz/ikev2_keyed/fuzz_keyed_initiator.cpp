// libFuzzer target: keyed messages to the initiator (see keyed_harness.hpp).
#include "keyed_harness.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    x2sec::test::keyed::quiet();
    x2sec::test::keyed::fuzz_one(x2sec::BytesView(data, size), x2sec::test::keyed::kInitiatorScenarios);
    return 0;
}
