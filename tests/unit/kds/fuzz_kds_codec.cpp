// Fuzz target: the KDS codec and the server engine must never crash on any input; whatever
// decodes must re-encode to something that decodes to the same message type.
#include <cstdlib>
#include <x2sec/common/rng.hpp>
#include <x2sec/kds/protocol.hpp>
#include <x2sec/kds/server.hpp>

using namespace x2sec;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    BytesView in(data, size);
    (void)kds::frame_size(in);
    auto m = kds::decode(in);
    if (m.ok()) {
        auto again = kds::decode(kds::encode(*m).view());
        if (!again.ok() || again->index() != m->index()) std::abort();
    }
    static DeterministicRng rng(1);
    static kds::Server server(
        kds::ServerConfig{{{"a", "0023a1000001.henb.vendor-a.example"}, {"b", "0023b2000001.henb.vendor-b.example"}},
                          {{"a", "b"}},
                          60,
                          true},
        rng);
    auto out = server.handle("0023a1000001.henb.vendor-a.example", in, 0);
    if (!kds::decode(out.view()).ok()) std::abort();
    return 0;
}
