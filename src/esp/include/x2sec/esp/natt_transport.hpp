// The IKE runtime's NattTransport (src/runtime udp.hpp) on top of the ESP data plane's UDP
// socket: the data plane owns port 4500 (it must see ESP first), IKE messages with the non-ESP
// marker go to the runtime's receiver, and the runtime sends IKE through send_ike().
//
// Wiring in the IKE daemon (what `x2sec ike run` needs to carry Child SAs with no manual step):
//
//   esp::DataPlane dp(counters);                           // the ChildSaBackend
//   auto backend = esp::TunBackend::create(dp, tun, opts); // owns UDP local:4500
//   runtime::RuntimeOptions ro;
//   ro.natt_factory = esp::make_natt_factory(**backend);   // IKE shares the socket
//   ike::Engine engine(config, dp, rng);                   // installs Child SAs into dp
//   dp.set_events({...soft -> engine rekey, hard -> engine delete...});
#pragma once

#include <memory>
#include <mutex>
#include <x2sec/common/child_sa.hpp>
#include <x2sec/esp/tun_backend.hpp>
#include <x2sec/runtime/ike_runtime.hpp>
#include <x2sec/runtime/udp.hpp>

namespace x2sec::esp {

class EspNattTransport final : public runtime::NattTransport {
public:
    explicit EspNattTransport(TunBackend& backend) : m_backend(backend) {}
    ike::Endpoint local() const override;
    Status send_ike(const ike::Datagram& d) override;
    void set_ike_receiver(std::function<void(ike::Datagram)> receiver) override;

private:
    TunBackend& m_backend;
};

// Sits between the IKE engine and the data plane (the engine's ChildSaBackend): install,
// remove and set_outbound pass through; lifetime events, which the data plane raises on its
// RX thread, are posted to the IKE runtime's loop so the engine rekeys (soft) or deletes
// (hard) at once instead of at its next timer.  Before attach() (and after detach) events go
// straight to the engine's handlers, which are thread-safe queues.
class RuntimeEventBridge final : public ChildSaBackend {
public:
    explicit RuntimeEventBridge(ChildSaBackend& inner) : m_inner(inner) {}
    Status install(const ChildSaParams& p) override { return m_inner.install(p); }
    Status remove(uint32_t spi_in) override { return m_inner.remove(spi_in); }
    Status set_outbound(uint32_t old_spi, uint32_t new_spi) override { return m_inner.set_outbound(old_spi, new_spi); }
    void set_events(ChildSaEvents events) override;
    void attach(runtime::IkeRuntime* rt);  // nullptr detaches; thread-safe

private:
    void deliver(bool soft, uint32_t spi);
    ChildSaBackend& m_inner;
    std::mutex m_mutex;
    runtime::IkeRuntime* m_runtime = nullptr;
    ChildSaEvents m_engine_events;
};

// A RuntimeOptions::natt_factory: the backend's socket for its own local endpoint (port 0 in
// the request matches any port), a plain runtime socket for every other endpoint.
runtime::NattFactory make_natt_factory(TunBackend& backend);

}  // namespace x2sec::esp
