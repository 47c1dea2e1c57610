// libFuzzer target: a responder engine fed a sequence of datagrams (see responder_replay.hpp).
// The committed corpus holds recorded initiator sessions, so mutations reach IKE_AUTH,
// CREATE_CHILD_SA and INFORMATIONAL processing behind valid keys.
#include "responder_replay.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    static bool quiet = [] {
        x2sec::log::set_level("off");
        return true;
    }();
    (void)quiet;
    (void)x2sec::test::replay_to_responder(x2sec::BytesView(data, size));
    return 0;
}
