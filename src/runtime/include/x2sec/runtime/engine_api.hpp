// What the runtime needs from an IKE engine: exactly the ike::Engine facade, as an interface,
// so the runtime's I/O (sockets, NAT-T marker, keepalives, control socket, shutdown) is tested
// with a scripted engine, and ike::Engine is plugged in with EngineAdapter<ike::Engine>.
#pragma once

#include <memory>
#include <x2sec/ikev2/engine.hpp>

namespace x2sec::runtime {

class EngineApi {
public:
    virtual ~EngineApi() = default;
    virtual Status initiate(const std::string& peer, Millis now) = 0;
    virtual void handle_datagram(const ike::Datagram& d, Millis now) = 0;
    virtual void tick(Millis now) = 0;
    virtual std::optional<Millis> next_deadline() const = 0;
    virtual void child_sa_expired(uint32_t spi_in, ChildSaExpiry kind, Millis now) = 0;
    virtual std::vector<ike::Datagram> take_outgoing() = 0;
    virtual std::vector<ike::Event> take_events() = 0;
    virtual Status rekey_ike(uint64_t ike_sa_id, Millis now) = 0;
    virtual Status rekey_child(uint64_t ike_sa_id, uint32_t spi_in, Millis now) = 0;
    virtual Status create_child(uint64_t ike_sa_id, const std::string& child_name, Millis now) = 0;
    virtual Status delete_child(uint64_t ike_sa_id, uint32_t spi_in, Millis now) = 0;
    virtual Status delete_ike(uint64_t ike_sa_id, Millis now) = 0;
    virtual std::vector<ike::IkeSaInfo> list_sas() const = 0;
    virtual const Counters& counters() const = 0;
    // The receive queue's COOKIE check of a new IKE_SA_INIT (ike::Engine::check_init_cookie);
    // an engine without COOKIEs says None (every new IKE_SA_INIT is a plain one).
    virtual ike::CookieCheck check_init_cookie(const ike::Datagram&) const { return ike::CookieCheck::None; }
    virtual void set_key_logger(std::function<void(const ike::IkeSaKeys&)> on_ike_keys,
                                std::function<void(const ChildSaParams&)> on_child_keys) = 0;
};

// Forwards to an engine with the ike::Engine interface (which it owns).
template <typename E>
class EngineAdapter final : public EngineApi {
public:
    template <typename... Args>
    explicit EngineAdapter(Args&&... args) : m_e(std::forward<Args>(args)...) {}
    E& engine() { return m_e; }
    Status initiate(const std::string& peer, Millis now) override { return m_e.initiate(peer, now); }
    void handle_datagram(const ike::Datagram& d, Millis now) override { m_e.handle_datagram(d, now); }
    void tick(Millis now) override { m_e.tick(now); }
    std::optional<Millis> next_deadline() const override { return m_e.next_deadline(); }
    void child_sa_expired(uint32_t spi, ChildSaExpiry k, Millis now) override { m_e.child_sa_expired(spi, k, now); }
    std::vector<ike::Datagram> take_outgoing() override { return m_e.take_outgoing(); }
    std::vector<ike::Event> take_events() override { return m_e.take_events(); }
    Status rekey_ike(uint64_t id, Millis now) override { return m_e.rekey_ike(id, now); }
    Status rekey_child(uint64_t id, uint32_t spi, Millis now) override { return m_e.rekey_child(id, spi, now); }
    Status create_child(uint64_t id, const std::string& n, Millis now) override { return m_e.create_child(id, n, now); }
    Status delete_child(uint64_t id, uint32_t spi, Millis now) override { return m_e.delete_child(id, spi, now); }
    Status delete_ike(uint64_t id, Millis now) override { return m_e.delete_ike(id, now); }
    std::vector<ike::IkeSaInfo> list_sas() const override { return m_e.list_sas(); }
    const Counters& counters() const override { return m_e.counters(); }
    ike::CookieCheck check_init_cookie(const ike::Datagram& d) const override { return m_e.check_init_cookie(d); }
    void set_key_logger(std::function<void(const ike::IkeSaKeys&)> a,
                        std::function<void(const ChildSaParams&)> b) override {
        m_e.set_key_logger(std::move(a), std::move(b));
    }

private:
    E m_e;
};

}  // namespace x2sec::runtime
