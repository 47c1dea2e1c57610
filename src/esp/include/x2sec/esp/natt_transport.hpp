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
//   auto rt = runtime::IkeRuntime::create(config, engine, ro, clock);
//   dp.set_events(rt->child_sa_events());                  // soft -> rekey, hard -> delete, on the loop
#pragma once

#include <memory>
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

// A RuntimeOptions::natt_factory: the backend's socket for its own local endpoint (port 0 in
// the request matches any port), a plain runtime socket for every other endpoint.
runtime::NattFactory make_natt_factory(TunBackend& backend);

}  // namespace x2sec::esp
