// libFuzzer target: the IKEv2 message decoder, the payload chain walker and the rule tables.
// Property: whatever decodes re-encodes to something that decodes to the same encoding.
#include <cstdlib>
#include <x2sec/ikev2/wire.hpp>

using namespace x2sec;
using namespace x2sec::ike::wire;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    BytesView in(data, size);
    auto m = Message::decode(in);
    if (m.ok()) {
        Bytes once = m->encode();
        auto again = Message::decode(once);
        if (!again.ok() || again->encode() != once) std::abort();
        if (auto* rule = find_rule(m->header.exchange, m->header.response())) (void)check_rules(*rule, m->payloads);
    }
    // The same bytes as an inner (decrypted) payload chain.
    if (size > 1) {
        auto chain = decode_chain(in.subspan(1), data[0]);
        if (chain.ok()) {
            Writer w;
            encode_chain(w, *chain);
            auto back = decode_chain(w.data(), data[0]);
            if (!back.ok()) std::abort();
            for (const auto* rule :
                 {find_rule(ExchangeType::IkeAuth, false), find_rule(ExchangeType::CreateChildSa, true),
                  find_rule(ExchangeType::Informational, false)})
                (void)check_rules(*rule, *chain);
        }
    }
    return 0;
}
