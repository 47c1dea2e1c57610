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
// The child_create task (tasks/child_create.cpp): a new Child SA (in IKE_AUTH when in_auth),
// or the rekey of the one with inbound SPI rekey_of.
std::unique_ptr<Task> make_child_task(size_t cfg, uint32_t rekey_of, bool in_auth);
// Our IKE rekey failed or the SA goes while it was pending, but we answered the peer's: that
// IKE SA takes over (tasks/ike_rekey.cpp).
void adopt_peer_rekey(EngineImpl& e, IkeSa& sa, Millis now);
}  // namespace x2sec::ike
