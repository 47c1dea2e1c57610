// INFORMATIONAL liveness checks (RFC 7296 2.4) and the INVALID_MESSAGE_ID notify (2.3): the dpd
// and invalid-mid tasks (initiator); the responder answers in respond_informational
// (tasks/delete.cpp).
#include "common.hpp"

namespace x2sec::ike {

using namespace wire;
using namespace task_util;

namespace {

struct DpdTask final : Task {
    const char* name() const override { return "dpd"; }
    Status build(EngineImpl&, IkeSa&, std::vector<Payload>&, Millis) override { return {}; }
    Status process(EngineImpl&, IkeSa&, const Checked&, Millis) override { return {}; }
};

// RFC 7296 2.3 / 3.10.1: an INVALID_MESSAGE_ID notify goes in a new INFORMATIONAL request of
// ours (never in a response: the invalid request is not acknowledged), with the offending
// four-octet Message ID as notification data.
struct InvalidMidNotifyTask final : Task {
    uint32_t bad_mid = 0;
    const char* name() const override { return "invalid_message_id"; }
    Status build(EngineImpl&, IkeSa&, std::vector<Payload>& out, Millis) override {
        Bytes data{static_cast<uint8_t>(bad_mid >> 24), static_cast<uint8_t>(bad_mid >> 16),
                   static_cast<uint8_t>(bad_mid >> 8), static_cast<uint8_t>(bad_mid)};
        out.push_back(
            {PayloadType::Notify, false, NotifyPayload{ProtocolId::None, {}, notify::InvalidMessageId, data}});
        return {};
    }
    Status process(EngineImpl&, IkeSa& sa, const Checked&, Millis) override {
        sa.invalid_mid_pending = false;
        return {};
    }
    void abort(EngineImpl&, IkeSa& sa, Millis) override { sa.invalid_mid_pending = false; }
};

}  // namespace

Exchange make_dpd_exchange() {
    return exchange_of(ExchangeType::Informational, std::make_unique<DpdTask>());
}

Exchange make_invalid_mid_exchange(uint32_t bad_mid) {
    auto t = std::make_unique<InvalidMidNotifyTask>();
    t->bad_mid = bad_mid;
    return exchange_of(ExchangeType::Informational, std::move(t));
}

}  // namespace x2sec::ike
