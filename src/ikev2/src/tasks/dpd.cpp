// INFORMATIONAL liveness checks (RFC 7296 2.4) and notifies, both roles: the dpd task (an empty
// request as initiator; answering a peer's empty request as responder) and the notify task
// (initiator: our INVALID_MESSAGE_ID notify, 2.3; responder: the error notifies of a peer's
// INFORMATIONAL request).  DELETEs are the delete tasks (tasks/delete.cpp).
#include "common.hpp"

namespace x2sec::ike {

using namespace wire;
using namespace task_util;

namespace {

struct DpdTask final : Task {
    const char* name() const override { return "dpd"; }
    Status build_i(EngineImpl&, IkeSa&, std::vector<Payload>&, Millis) override { return {}; }
    Status process_i(EngineImpl&, IkeSa&, const Checked&, Millis) override { return {}; }
    Status process_r(EngineImpl& e, IkeSa& sa, const Request& req, Millis) override {
        if (!req.in.all().empty()) return {};
        e.count("liveness_check");
        e.m_log->debug("IKE SA #{} ({}): liveness check (empty INFORMATIONAL request #{}) from {}, answering", sa.id,
                       e.peer(sa).name, req.mid, sa.remote.to_string());
        return {};
    }
    // An empty request is answered empty.
    Status build_r(EngineImpl&, IkeSa&, const Request&, std::vector<Payload>&, Millis) override { return {}; }
};

// RFC 7296 2.3 / 3.10.1: an INVALID_MESSAGE_ID notify goes in a new INFORMATIONAL request of
// ours (never in a response: the invalid request is not acknowledged), with the offending
// four-octet Message ID as notification data.  As responder: the peer's error notifies raise
// events; AUTHENTICATION_FAILED on an IKE SA we answered as up deletes it.
struct NotifyTask final : Task {
    uint32_t bad_mid = 0;
    bool auth_failed = false;
    const char* name() const override { return "notify"; }
    Status build_i(EngineImpl&, IkeSa&, std::vector<Payload>& out, Millis) override {
        Bytes data{static_cast<uint8_t>(bad_mid >> 24), static_cast<uint8_t>(bad_mid >> 16),
                   static_cast<uint8_t>(bad_mid >> 8), static_cast<uint8_t>(bad_mid)};
        out.push_back(
            {PayloadType::Notify, false, NotifyPayload{ProtocolId::None, {}, notify::InvalidMessageId, data}});
        return {};
    }
    Status process_i(EngineImpl&, IkeSa& sa, const Checked&, Millis) override {
        sa.invalid_mid_pending = false;
        return {};
    }
    void abort(EngineImpl&, IkeSa& sa, Millis) override { sa.invalid_mid_pending = false; }
    Status process_r(EngineImpl& e, IkeSa& sa, const Request& req, Millis) override {
        for (const auto& x : req.in.all()) {
            auto* n = x.as<NotifyPayload>();
            if (!n || !notify::is_error(n->type)) continue;
            if (n->type == notify::AuthenticationFailed && sa.state == SaState::Established && !sa.initiator) {
                e.event(sa, Event::Kind::AuthFailed, auth_failure::PeerRejected, "peer rejected our authentication");
                auth_failed = true;
            } else {
                e.event(sa, Event::Kind::PeerNotify, n->type, std::string("peer sent ") + notify::name(n->type));
            }
        }
        return {};
    }
    Status build_r(EngineImpl&, IkeSa&, const Request&, std::vector<Payload>&, Millis) override { return {}; }
    void responded(EngineImpl& e, IkeSa& sa, Millis now) override {
        if (auth_failed) ike_deleted_by_peer(e, sa, now);
    }
};

}  // namespace

Exchange make_dpd_exchange() {
    return exchange_of(ExchangeType::Informational, std::make_unique<DpdTask>());
}

Exchange make_invalid_mid_exchange(uint32_t bad_mid) {
    auto t = std::make_unique<NotifyTask>();
    t->bad_mid = bad_mid;
    return exchange_of(ExchangeType::Informational, std::move(t));
}

std::unique_ptr<Task> make_dpd_task() {
    return std::make_unique<DpdTask>();
}

std::unique_ptr<Task> make_notify_task() {
    return std::make_unique<NotifyTask>();
}

}  // namespace x2sec::ike
