// The contract between the IKEv2 engine (which negotiates Child SAs) and a data plane (which
// carries ESP): the engine hands over a ChildSaParams on install and an SPI pair on delete;
// the data plane reports lifetime expiry and sequence-number exhaustion back through
// ChildSaEvents so the engine can rekey.  Those callbacks run on the data plane's threads; the
// loop that drives the engine connects them to a ChildSaEventQueue (event_queue.hpp) and hands
// what it takes to ike::Engine::child_sa_expired() on its own thread.  The ESP module
// implements ChildSaBackend with TUN and in-memory backends; MemoryChildSaBackend here just
// records calls.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <vector>
#include <x2sec/common/bytes.hpp>
#include <x2sec/common/result.hpp>

namespace x2sec {

// An IP address (v4 or v6) in network byte order.
struct IpAddress {
    bool v6 = false;
    std::array<uint8_t, 16> bytes{};  // v4 uses the first 4
    static std::optional<IpAddress> parse(const std::string& text);
    static IpAddress v4(uint8_t a, uint8_t b, uint8_t c, uint8_t d);
    std::string to_string() const;
    size_t size() const { return v6 ? 16 : 4; }
    BytesView view() const { return {bytes.data(), size()}; }
    auto operator<=>(const IpAddress&) const = default;
};

// One traffic selector (RFC 7296 3.13.1): an address range, a port range and an IP protocol
// (0 = any).  X2-C is SCTP (132) port 36422, X2-U is UDP (17) port 2152.
struct TrafficSelector {
    uint8_t ip_protocol = 0;
    uint16_t start_port = 0;
    uint16_t end_port = 65535;
    IpAddress start_addr;
    IpAddress end_addr;
    static TrafficSelector from_prefix(const IpAddress& addr, unsigned prefix_len, uint8_t proto = 0,
                                       uint16_t port_lo = 0, uint16_t port_hi = 65535);
    bool contains(const IpAddress& a, uint8_t proto, uint16_t port) const;
    std::string to_string() const;  // "192.0.2.0/24[udp/2152]" style
    auto operator<=>(const TrafficSelector&) const = default;
};

enum class EspCipher : uint8_t {
    AesGcm16_128,  // ENCR_AES_GCM_16, 128-bit key + 4-octet salt (RFC 4106)
    AesGcm16_256,
    AesCbc128_HmacSha256_128,  // ENCR_AES_CBC + AUTH_HMAC_SHA2_256_128
    AesCbc256_HmacSha256_128,
};
const char* to_string(EspCipher c);
// KEYMAT layout per direction (RFC 7296 2.17, RFC 4106 8.1): encryption key octets (GCM: key +
// 4-octet salt) and integrity key octets (0 for GCM).  The IKE engine takes these from KEYMAT
// and the ESP data plane checks them; one definition serves both.
size_t esp_encr_key_size(EspCipher c);
size_t esp_integ_key_size(EspCipher c);

enum class IpsecMode : uint8_t { Tunnel, Transport };

struct Lifetime {
    uint64_t soft_seconds = 0, hard_seconds = 0;  // 0 = unlimited
    uint64_t soft_bytes = 0, hard_bytes = 0;
    uint64_t soft_packets = 0, hard_packets = 0;
};

// Keys for one direction.  For GCM, enc_key holds key || salt (KEYMAT layout of RFC 4106 8.1);
// for CBC+HMAC, enc_key is the AES key and integ_key the HMAC key.
struct DirectionKeys {
    SecureBytes enc_key;
    SecureBytes integ_key;
};

struct ChildSaParams {
    uint64_t ike_sa_id = 0;  // engine-local handle of the owning IKE SA
    uint32_t reqid = 0;      // stable across rekeys of the same Child SA
    uint32_t spi_in = 0;     // SPI we chose: peer sends to it
    uint32_t spi_out = 0;    // SPI the peer chose
    EspCipher cipher = EspCipher::AesGcm16_128;
    bool esn = false;
    IpsecMode mode = IpsecMode::Tunnel;
    IpAddress local_addr, remote_addr;               // outer (tunnel endpoint) addresses
    uint16_t local_port = 4500, remote_port = 4500;  // UDP encapsulation ports
    bool udp_encap = true;
    std::vector<TrafficSelector> ts_local, ts_remote;  // narrowed, as agreed
    DirectionKeys keys_in, keys_out;
    Lifetime lifetime;
    uint32_t replay_window = 1024;
    std::string name;  // connection/child name for status output
};

// Which lifetime of a Child SA ran out: soft (please rekey) or hard (the data plane removed it).
enum class ChildSaExpiry : uint8_t { Soft, Hard };
const char* to_string(ChildSaExpiry e);

// One data-plane notification, as queued for the IKE loop.
struct ChildSaExpired {
    uint32_t spi_in = 0;
    ChildSaExpiry kind = ChildSaExpiry::Soft;
    bool operator==(const ChildSaExpired&) const = default;
};

// Data-plane notifications to the IKE side (called on the data plane's threads).
struct ChildSaEvents {
    std::function<void(uint32_t spi_in)> soft_expired;  // please rekey
    std::function<void(uint32_t spi_in)> hard_expired;  // SA removed
};

class ChildSaBackend {
public:
    virtual ~ChildSaBackend() = default;
    virtual Status install(const ChildSaParams& params) = 0;
    // Remove both directions of the Child SA whose inbound SPI is spi_in.
    virtual Status remove(uint32_t spi_in) = 0;
    // Rekey switch-over: new SA already installed; tell the backend to send on it from now on.
    virtual Status set_outbound(uint32_t /*old_spi_in*/, uint32_t /*new_spi_in*/) { return {}; }
    virtual void set_events(ChildSaEvents events) { m_events = std::move(events); }

protected:
    ChildSaEvents m_events;
};

// Records installs and removals; used by IKE tests and until a real data plane is wired in.
class MemoryChildSaBackend final : public ChildSaBackend {
public:
    Status install(const ChildSaParams& params) override;
    Status remove(uint32_t spi_in) override;
    Status set_outbound(uint32_t old_spi_in, uint32_t new_spi_in) override;
    std::vector<uint32_t> installed_spis() const;
    std::optional<ChildSaParams> find(uint32_t spi_in) const;
    size_t install_count() const { return m_installs; }
    size_t remove_count() const { return m_removes; }

private:
    mutable std::mutex m_mutex;
    std::map<uint32_t, ChildSaParams> m_sas;
    size_t m_installs = 0, m_removes = 0;
};

}  // namespace x2sec
