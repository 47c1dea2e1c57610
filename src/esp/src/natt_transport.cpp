#include <x2sec/esp/natt_transport.hpp>

namespace x2sec::esp {

ike::Endpoint EspNattTransport::local() const {
    return {m_backend.local_addr(), m_backend.local_port()};
}

Status EspNattTransport::send_ike(const ike::Datagram& d) {
    return m_backend.send_ike(d.remote.addr, d.remote.port, d.data);
}

void EspNattTransport::set_ike_receiver(std::function<void(ike::Datagram)> receiver) {
    if (!receiver) {
        m_backend.set_ike_receiver({});
        return;
    }
    m_backend.set_ike_receiver([rcv = std::move(receiver)](IkeMessage m) {
        ike::Datagram d;
        d.local = {m.local_addr, m.local_port};
        d.remote = {m.remote_addr, m.remote_port};
        d.data = std::move(m.data);
        d.non_esp_marker = true;
        rcv(std::move(d));
    });
}

runtime::NattFactory make_natt_factory(TunBackend& backend) {
    return
        [&backend](const ike::Endpoint& local, Counters* counters) -> Result<std::unique_ptr<runtime::NattTransport>> {
            if (local.addr == backend.local_addr() && (local.port == 0 || local.port == backend.local_port()))
                return std::unique_ptr<runtime::NattTransport>(new EspNattTransport(backend));
            auto plain = runtime::PlainNattTransport::bind(local, counters);
            if (!plain) return std::move(plain).error();
            return std::unique_ptr<runtime::NattTransport>(std::move(*plain));
        };
}

}  // namespace x2sec::esp
