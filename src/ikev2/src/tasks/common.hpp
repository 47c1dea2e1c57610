// What the task files share: payload and SPI helpers, and the exchange builder.
#pragma once

#include <algorithm>
#include <memory>

#include "../engine_internal.hpp"

namespace x2sec::ike::task_util {

using namespace wire;

inline Payload notify_payload(uint16_t type, Bytes data = {}, ProtocolId proto = ProtocolId::None, Bytes spi = {}) {
    return Payload{PayloadType::Notify, false, NotifyPayload{proto, std::move(spi), type, std::move(data)}};
}

inline Bytes spi4(uint32_t s) {
    return Bytes{uint8_t(s >> 24), uint8_t(s >> 16), uint8_t(s >> 8), uint8_t(s)};
}
inline Bytes spi8(uint64_t s) {
    Writer w;
    w.u64(s);
    return w.take();
}
inline uint32_t read_spi4(BytesView b) {
    return b.size() == 4 ? (uint32_t(b[0]) << 24) | (uint32_t(b[1]) << 16) | (uint32_t(b[2]) << 8) | b[3] : 0;
}
inline uint64_t read_spi8(BytesView b) {
    if (b.size() != 8) return 0;
    Reader r(b);
    return r.u64();
}

// What a responder role returns when the SA is gone and nothing more is to be sent.
inline Error answered_nothing() {
    return Error(ErrorDomain::Ike, -2, "nothing to answer");
}

inline Error sa_gone() {
    return Error(ErrorDomain::Ike, -1, "IKE SA destroyed");
}

inline Identity identity_of(const IdPayload& id) {
    Identity i;
    i.type = static_cast<x509::IdType>(id.id_type);
    i.data = id.data;
    return i;
}

// Lowest of two nonces (byte-wise, a shorter prefix first).
inline const Bytes& lowest(const Bytes& a, const Bytes& b) {
    return std::lexicographical_compare(a.begin(), a.end(), b.begin(), b.end()) ? a : b;
}
inline bool less(const Bytes& a, const Bytes& b) {
    return std::lexicographical_compare(a.begin(), a.end(), b.begin(), b.end());
}

// An exchange of one type carrying the given tasks, in order.
template <typename... Tasks>
Exchange exchange_of(ExchangeType type, std::unique_ptr<Tasks>... tasks) {
    Exchange ex;
    ex.type = type;
    (ex.tasks.push_back(std::move(tasks)), ...);
    return ex;
}

}  // namespace x2sec::ike::task_util

namespace x2sec::ike {
// The child_create task (tasks/child_create.cpp): a new Child SA, in IKE_AUTH when in_auth.
// (The child_rekey task's initiator exchange is make_rekey_child_exchange.)
std::unique_ptr<Task> make_child_task(size_t cfg, bool in_auth);
// The cert task (tasks/cert.cpp): CERTREQ in IKE_SA_INIT (in_init), CERT and CERTREQ in IKE_AUTH.
std::unique_ptr<Task> make_cert_task(bool in_init);
// The natd task (tasks/natd.cpp): NAT detection in IKE_SA_INIT.
std::unique_ptr<Task> make_natd_task();
// The dpd and notify tasks (tasks/dpd.cpp).
std::unique_ptr<Task> make_dpd_task();
std::unique_ptr<Task> make_notify_task();
// The ike_auth task (tasks/ike_auth.cpp).
std::unique_ptr<Task> make_auth_task();
// The child_rekey task, responder role (tasks/child_create.cpp).
std::unique_ptr<Task> make_child_rekey_responder();
// The ike_rekey task, responder role (tasks/ike_rekey.cpp).
std::unique_ptr<Task> make_ike_rekey_responder();
// Our IKE rekey failed or the SA goes while it was pending, but we answered the peer's: that
// IKE SA takes over (tasks/ike_rekey.cpp).
void adopt_peer_rekey(EngineImpl& e, IkeSa& sa, Millis now);
// The peer deleted the IKE SA (an IKE DELETE, or AUTHENTICATION_FAILED after we thought it up):
// it goes now that the response is sent (tasks/delete.cpp).
void ike_deleted_by_peer(EngineImpl& e, IkeSa& sa, Millis now);
// The Child SA record for either role (tasks/child_create.cpp): config `cfg`'s name, the reqid
// of the Child SA it replaces (or a new one), the SPIs and transforms chosen, the mode, the
// selectors and, when the config rekeys, the rekey time with up to 10 % jitter.
// reqid 0: a new one; replaces_spi_in: the inbound SPI of the Child SA a rekey replaces, or 0.
ChildSa new_child_record(EngineImpl& e, const IkeSa& sa, size_t cfg, const ChildChoice& choice, uint32_t spi_in,
                         bool transport, std::vector<TrafficSelector> ts_local, std::vector<TrafficSelector> ts_remote,
                         std::optional<crypto::DhGroup> pfs, uint32_t replaces_spi_in, uint32_t reqid, Millis now);
}  // namespace x2sec::ike
