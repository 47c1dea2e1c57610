// TUN backend: real IP traffic through the ESP data plane.
//
//   TX thread:  read IP packets from the TUN device -> DataPlane::protect (policy lookup,
//               encrypt in place) -> sendmmsg on the UDP encapsulation socket (port 4500).
//   RX thread:  recvmmsg on the UDP socket -> RFC 3948 classification: ESP ->
//               DataPlane::unprotect (SPI, replay, ICV, padding, selectors) -> write to TUN;
//               IKE (non-ESP marker) -> the IKE receiver with the marker stripped;
//               0xFF -> NAT keepalive, counted.  The RX thread also runs DataPlane::tick()
//               and sends NAT keepalives.
//
// The UDP socket is shared with IKE (RFC 3948 / RFC 7296 2.23): the data plane owns it and
// the IKE runtime sends through send_ike() and receives through set_ike_receiver().  All
// buffers are allocated once at start; the packet paths do not allocate.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>
#include <x2sec/common/bytes.hpp>
#include <x2sec/common/child_sa.hpp>
#include <x2sec/common/result.hpp>
#include <x2sec/esp/data_plane.hpp>

namespace x2sec::esp {

// A Linux TUN device (IFF_TUN | IFF_NO_PI: one IP packet per read/write).
class TunDevice {
public:
    // Creates (or attaches to) the device `name` ("" = kernel picks x2s%d style name is not
    // applied: the kernel's tun%d).
    // offload: IFF_VNET_HDR with TSO4/TSO6/CSUM offloads (reads may return TCP super-packets
    // that the backend segments; every read and write carries a virtio_net_hdr).
    static Result<TunDevice> open(const std::string& name, bool offload = false);
    TunDevice(TunDevice&& o) noexcept : m_fd(o.m_fd), m_name(std::move(o.m_name)), m_vnet(o.m_vnet) { o.m_fd = -1; }
    TunDevice& operator=(TunDevice&& o) noexcept;
    TunDevice(const TunDevice&) = delete;
    ~TunDevice();
    int fd() const { return m_fd; }
    const std::string& name() const { return m_name; }
    bool vnet() const { return m_vnet; }
    // Interface configuration through ioctl (no external tools).
    Status set_mtu(int mtu);
    Status set_up();
    Status add_ipv4(const IpAddress& addr, unsigned prefix_len);

private:
    TunDevice() = default;
    int m_fd = -1;
    std::string m_name;
    bool m_vnet = false;
};

struct IkeMessage {
    IpAddress local_addr, remote_addr;
    uint16_t local_port = 0, remote_port = 0;
    Bytes data;  // without the non-ESP marker
};

struct TunBackendOptions {
    std::string tun_name = "x2s0";
    int mtu = 1400;
    IpAddress bind_addr;      // local outer address (any of the SAs' local_addr)
    uint16_t port = 4500;     // UDP encapsulation port (shared with IKE)
    size_t batch = 32;        // packets per recvmmsg/sendmmsg (offload mode: at least 128)
    Millis tick_ms = 100;     // lifetime checks
    Millis keepalive_ms = 0;  // NAT keepalives to every SA peer (0 = off; TS 29.139: 20 s)
    int socket_buffer = 4 << 20;
    bool udp_offload = true;  // UDP GSO on send (UDP_SEGMENT), UDP GRO on receive
    // With a vnet TUN device: decrypted TCP segments of one flow leave as one TSO
    // super-packet per receive batch (TunCoalescer) instead of one write() each.
    bool tun_coalesce = true;
    // Raw ESP (IP protocol 50, RFC 4303) for SAs without UDP encapsulation (no NAT detected,
    // encap not forced): a raw socket, which needs CAP_NET_RAW.  Without it such SAs cannot
    // send (esp.tx.no_raw_socket) and the backend logs why.
    bool raw_esp = true;
    // The clock whose time the backend passes to the data plane (protect/unprotect/tick); the
    // data plane reads none itself.  nullptr: the monotonic system clock.
    const Clock* clock = nullptr;
};

class TunBackend {
public:
    static Result<std::unique_ptr<TunBackend>> create(DataPlane& dp, TunDevice tun, TunBackendOptions options);
    ~TunBackend();
    Status start();
    void stop();  // joins the threads; idempotent

    // IKE on the shared port: receiver runs on the RX thread; send_ike is thread-safe.
    void set_ike_receiver(std::function<void(IkeMessage)> receiver);
    Status send_ike(const IpAddress& remote, uint16_t remote_port, BytesView msg);
    Status send_keepalive(const IpAddress& remote, uint16_t remote_port);
    uint16_t local_port() const { return m_port; }
    const IpAddress& local_addr() const { return m_opts.bind_addr; }
    int socket_fd() const { return m_udp; }
    bool raw_esp() const { return m_raw >= 0; }
    TunDevice& tun() { return m_tun; }

private:
    TunBackend(DataPlane& dp, TunDevice tun, TunBackendOptions options);
    void tx_loop();
    void rx_loop();
    DataPlane& m_dp;
    TunDevice m_tun;
    TunBackendOptions m_opts;
    const Clock* m_clock;  // m_opts.clock or the system clock
    int m_udp = -1, m_raw = -1, m_stop_fd = -1;
    uint16_t m_port = 0;
    bool m_udp_gro = false;
    std::atomic<bool> m_running{false};
    std::thread m_tx, m_rx;
    std::function<void(IkeMessage)> m_ike_receiver;
    std::mutex m_ike_mutex;
};

}  // namespace x2sec::esp
