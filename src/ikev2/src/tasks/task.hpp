// Tasks (both roles of one exchange) and the per-IKE-SA state of the task manager (the exchange in flight, the queue,
// the response cache, fragment reassembly).
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <vector>
#include <x2sec/ikev2/engine.hpp>
#include <x2sec/ikev2/wire.hpp>

namespace x2sec::ike {

struct IkeSa;
class EngineImpl;

// A request being answered: the exchange, its Message ID and what passed the exchange's rule.
struct Request {
    wire::ExchangeType type;
    uint32_t mid;
    const wire::Checked& in;
};

// One exchange's part, in both roles (the task pattern of strongSwan's libcharon): as
// initiator, build_i writes the task's payloads into our request and process_i reads the
// response; as responder, process_r reads the peer's request and build_r writes the task's
// payloads into our response.  The task manager runs the tasks of an exchange in order (for a
// response: every process_r, then every build_r, then sends it).
//
// A responder role that returns an error has answered itself (an error response, see
// EngineImpl::answer_error) or decided that nothing is sent: the task manager stops there.
struct Task {
    virtual ~Task() = default;
    virtual const char* name() const = 0;
    virtual Status build_i(EngineImpl& e, IkeSa& sa, std::vector<wire::Payload>& out, Millis now) = 0;
    // `in` passed the exchange's rule and, when purpose() names one, that purpose's rule: the
    // task reads it through the checked accessors and never re-checks presence.
    virtual Status process_i(EngineImpl& e, IkeSa& sa, const wire::Checked& in, Millis now) = 0;
    virtual Status process_r(EngineImpl& e, IkeSa& sa, const Request& req, Millis now) = 0;
    virtual Status build_r(EngineImpl& e, IkeSa& sa, const Request& req, std::vector<wire::Payload>& out,
                           Millis now) = 0;
    // After the response was sent (an SA the request deletes goes now, not before).
    virtual void responded(EngineImpl&, IkeSa&, Millis) {}
    // The exchange failed (retransmission timeout, error notify, SA going away).
    virtual void abort(EngineImpl&, IkeSa&, Millis) {}
    // The rule of what this task reads from the response (wire::purpose_rule, enforced once by
    // EngineImpl::process_response before process_i()); none: the exchange's rule is enough.
    virtual std::optional<wire::ResponsePurpose> purpose() const { return std::nullopt; }
    // The response is unusable (a required payload absent, selectors widened, a transform we did
    // not offer): give up the exchange and undo, and have the peer delete, what it created.
    // Called through EngineImpl::refuse_response (which counts and logs).  Default: abort().
    virtual void refuse(EngineImpl& e, IkeSa& sa, const Error&, Millis now) { abort(e, sa, now); }
    // An inbound Child SPI this task holds reserved but not yet attached to a Child SA (0 if
    // none); EngineImpl::check_indexes accounts for it.
    virtual uint32_t reserved_child_spi() const { return 0; }
};

struct Exchange {
    wire::ExchangeType type = wire::ExchangeType::Informational;
    std::vector<std::unique_ptr<Task>> tasks;
};

struct Outstanding {
    uint32_t mid = 0;
    std::vector<Bytes> packets;
    Exchange exchange;
    unsigned tries = 0;
    Millis next_retransmit = 0;
    bool unprotected = false;  // IKE_SA_INIT
};

struct CachedResponse {
    uint32_t mid = 0;
    std::vector<Bytes> packets;
};

struct Reassembly {
    uint32_t mid = 0;
    uint16_t total = 0;
    uint8_t first_next = 0;
    std::map<uint16_t, Bytes> parts;
    size_t bytes = 0;
    bool active = false;
    void reset() { *this = Reassembly{}; }
};

}  // namespace x2sec::ike
