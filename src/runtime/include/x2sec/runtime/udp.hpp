// UDP sockets for IKE: plain (port 500) and NAT-T (port 4500: IKE behind a 4-octet zero
// non-ESP marker, ESP, and 1-octet 0xFF NAT keepalives on one socket, RFC 3948 / RFC 7296 2.23).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <x2sec/common/bytes.hpp>
#include <x2sec/common/child_sa.hpp>
#include <x2sec/common/counters.hpp>
#include <x2sec/common/result.hpp>
#include <x2sec/ikev2/engine.hpp>

namespace x2sec::runtime {

// What arrived on a NAT-T port (RFC 3948 2.2): classification of one UDP payload.
enum class NattKind { Ike, Esp, Keepalive, Invalid };
NattKind classify_natt(BytesView payload);

// What the runtime's receive queue makes of one IKE datagram, from the fixed IKE header only
// (RFC 7296 3.1, read with checked accessors; the length field is neither trusted nor used, the
// engine checks it): whether it belongs to an IKE SA that may exist (served first when the
// responder is behind) or would start a new one.
enum class RxClass {
    Known,       // a response, or a request with a non-zero responder SPI (IKE_AUTH, CREATE_CHILD_SA,
                 // INFORMATIONAL of an SA)
    NewInit,     // a request with responder SPI zero: a new IKE_SA_INIT (or one the engine refuses)
    CookieInit,  // a NewInit that carries a COOKIE the engine verified (IkeRuntime::queue_rx
                 // decides it, not classify_ike, which reads the fixed header only)
    NotIke,      // shorter than the IKE header: dropped before it reaches the engine
};
struct RxHeader {
    RxClass cls = RxClass::NotIke;
    uint64_t spi_i = 0, spi_r = 0;
    uint8_t exchange = 0, flags = 0;
    uint32_t message_id = 0;
};
RxHeader classify_ike(BytesView datagram);

// A bound, non-blocking UDP socket (IPv4 or IPv6; IPv6 sockets are V6ONLY).  When bound to the
// wildcard address it learns each datagram's local address from IP_PKTINFO/IPV6_PKTINFO and
// sends from the datagram's local address the same way.
class UdpSocket {
public:
    static Result<UdpSocket> bind(const ike::Endpoint& local);
    UdpSocket(UdpSocket&&) noexcept;
    UdpSocket& operator=(UdpSocket&&) noexcept;
    UdpSocket(const UdpSocket&) = delete;
    UdpSocket& operator=(const UdpSocket&) = delete;
    ~UdpSocket();

    int fd() const { return m_fd; }
    const ike::Endpoint& local() const { return m_local; }  // with the real port after bind
    bool wildcard() const { return m_wildcard; }
    // Sends payload to `to`, from `from` (used when the socket is bound to the wildcard).
    Status send(const ike::Endpoint& from, const ike::Endpoint& to, BytesView payload) const;
    struct Received {
        ike::Endpoint local, remote;
        Bytes data;
    };
    // nullopt when nothing is pending (EAGAIN); errors are returned as Error.
    Result<std::optional<Received>> receive() const;

private:
    UdpSocket() = default;
    int m_fd = -1;
    ike::Endpoint m_local;
    bool m_wildcard = false;
};

// Drains a UDP socket with recvmmsg(2): up to kBatch datagrams per system call into buffers it
// owns (64 KiB each, allocated once, so no datagram is cut short), each copied out at its own
// size.  One per runtime loop; not thread-safe.
class BatchReceiver {
public:
    static constexpr size_t kBatch = 64;
    BatchReceiver();
    struct Stats {
        uint64_t calls = 0;      // recvmmsg calls that returned datagrams
        uint64_t full = 0;       // of them, calls that filled the batch (more was waiting)
        uint64_t truncated = 0;  // datagrams larger than the buffer (MSG_TRUNC): dropped
    };
    // Appends what is pending, at most `max` datagrams, to `out`; returns how many were
    // appended (0 when nothing was pending).  Errors other than EAGAIN/EINTR are returned.
    Result<size_t> receive(const UdpSocket& s, std::vector<UdpSocket::Received>& out, size_t max, Stats& stats);

private:
    std::unique_ptr<uint8_t[]> m_buf;  // kBatch x kBufSize
};

// The port-4500 socket as seen by the IKE runtime.  The ESP data plane owns this socket on
// its fast path (it must see ESP first); it hands IKE messages (marker already stripped) to
// the receiver the runtime installs, and sends IKE messages for the runtime with the marker
// added.  PlainNattTransport is the runtime's own implementation for when no data plane
// owns the socket: it drops ESP (counted) and ignores keepalives.
//
// Thread safety: send_ike() may be called from the runtime thread while the implementation
// runs its own thread; the receiver may be called from any thread (the runtime queues).
class NattTransport {
public:
    virtual ~NattTransport() = default;
    // The local address and port this transport is bound to.
    virtual ike::Endpoint local() const = 0;
    // Send one IKE message; the implementation prepends the non-ESP marker.
    virtual Status send_ike(const ike::Datagram& d) = 0;
    // Install the function that receives IKE messages (d.data without the marker,
    // d.non_esp_marker = true).
    virtual void set_ike_receiver(std::function<void(ike::Datagram)> receiver) = 0;
    // For implementations without their own thread: a descriptor the runtime polls, and the
    // call it makes when the descriptor is readable.  -1 = the transport runs itself.
    virtual int poll_fd() const { return -1; }
    virtual void service() {}
};

class PlainNattTransport final : public NattTransport {
public:
    // counters may be null.
    static Result<std::unique_ptr<PlainNattTransport>> bind(const ike::Endpoint& local, Counters* counters = nullptr);
    ike::Endpoint local() const override { return m_socket.local(); }
    Status send_ike(const ike::Datagram& d) override;
    void set_ike_receiver(std::function<void(ike::Datagram)> receiver) override { m_receiver = std::move(receiver); }
    int poll_fd() const override { return m_socket.fd(); }
    void service() override;

private:
    PlainNattTransport(UdpSocket s, Counters* c) : m_socket(std::move(s)), m_counters(c) {}
    UdpSocket m_socket;
    Counters* m_counters;
    std::function<void(ike::Datagram)> m_receiver;
};

}  // namespace x2sec::runtime
