#include <x2sec/runtime/udp.hpp>

#include <algorithm>
#include <arpa/inet.h>
#include <array>
#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>
#include <x2sec/common/codec.hpp>
#include <x2sec/common/log.hpp>

namespace x2sec::runtime {

namespace {

Error io_error(const std::string& what) {
    return Error(ErrorDomain::Io, errno, what + ": " + std::strerror(errno));
}

bool is_unspecified(const IpAddress& a) {
    for (size_t i = 0; i < a.size(); ++i)
        if (a.bytes[i]) return false;
    return true;
}

socklen_t to_sockaddr(const ike::Endpoint& e, sockaddr_storage& ss) {
    std::memset(&ss, 0, sizeof ss);
    if (e.addr.v6) {
        auto* s6 = reinterpret_cast<sockaddr_in6*>(&ss);
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons(e.port);
        std::memcpy(&s6->sin6_addr, e.addr.bytes.data(), 16);
        return sizeof(sockaddr_in6);
    }
    auto* s4 = reinterpret_cast<sockaddr_in*>(&ss);
    s4->sin_family = AF_INET;
    s4->sin_port = htons(e.port);
    std::memcpy(&s4->sin_addr, e.addr.bytes.data(), 4);
    return sizeof(sockaddr_in);
}

ike::Endpoint from_sockaddr(const sockaddr_storage& ss) {
    ike::Endpoint e;
    if (ss.ss_family == AF_INET6) {
        const auto* s6 = reinterpret_cast<const sockaddr_in6*>(&ss);
        e.addr.v6 = true;
        std::memcpy(e.addr.bytes.data(), &s6->sin6_addr, 16);
        e.port = ntohs(s6->sin6_port);
    } else {
        const auto* s4 = reinterpret_cast<const sockaddr_in*>(&ss);
        std::memcpy(e.addr.bytes.data(), &s4->sin_addr, 4);
        e.port = ntohs(s4->sin_port);
    }
    return e;
}

// The local address the datagram was sent to, from IP_PKTINFO / IPV6_PKTINFO.
void learn_local(msghdr& msg, ike::Endpoint& local) {
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level == IPPROTO_IP && c->cmsg_type == IP_PKTINFO) {
            in_pktinfo pi;
            std::memcpy(&pi, CMSG_DATA(c), sizeof pi);
            std::memcpy(local.addr.bytes.data(), &pi.ipi_addr, 4);
            local.addr.v6 = false;
        } else if (c->cmsg_level == IPPROTO_IPV6 && c->cmsg_type == IPV6_PKTINFO) {
            in6_pktinfo pi;
            std::memcpy(&pi, CMSG_DATA(c), sizeof pi);
            std::memcpy(local.addr.bytes.data(), &pi.ipi6_addr, 16);
            local.addr.v6 = true;
        }
    }
}

constexpr size_t kBufSize = 65536;  // larger than any UDP payload over IPv4 or (non-jumbo) IPv6
constexpr size_t kCmsgSize = 128;   // one IP_PKTINFO / IPV6_PKTINFO
constexpr uint8_t kIkeHeaderSize = 28;
constexpr uint8_t kIkeFlagResponse = 0x20;

}  // namespace

RxHeader classify_ike(BytesView datagram) {
    RxHeader h;
    if (datagram.size() < kIkeHeaderSize) return h;  // NotIke
    Reader r(datagram);
    h.spi_i = r.u64();
    h.spi_r = r.u64();
    r.skip(1);  // next payload
    r.skip(1);  // version: the engine answers other major versions (RFC 7296 2.5)
    h.exchange = r.u8();
    h.flags = r.u8();
    h.message_id = r.u32();
    if (!r.ok()) return RxHeader{};
    h.cls = (h.flags & kIkeFlagResponse) || h.spi_r != 0 ? RxClass::Known : RxClass::NewInit;
    return h;
}

NattKind classify_natt(BytesView p) {
    if (p.size() == 1 && p[0] == 0xFF) return NattKind::Keepalive;
    if (p.size() >= 4 && p[0] == 0 && p[1] == 0 && p[2] == 0 && p[3] == 0)
        return p.size() > 4 ? NattKind::Ike : NattKind::Invalid;
    if (p.size() >= 8) return NattKind::Esp;  // SPI (non-zero) + sequence number
    return NattKind::Invalid;
}

Result<UdpSocket> UdpSocket::bind(const ike::Endpoint& local) {
    UdpSocket s;
    int family = local.addr.v6 ? AF_INET6 : AF_INET;
    s.m_fd = ::socket(family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (s.m_fd < 0) return io_error("socket");
    int one = 1;
    if (local.addr.v6) {
        ::setsockopt(s.m_fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
        ::setsockopt(s.m_fd, IPPROTO_IPV6, IPV6_RECVPKTINFO, &one, sizeof one);
    } else {
        ::setsockopt(s.m_fd, IPPROTO_IP, IP_PKTINFO, &one, sizeof one);
    }
    // SO_REUSEADDR only for a given port: with it on both sockets, Linux hands out for port 0 an
    // ephemeral port that another SO_REUSEADDR socket on the same address already holds, and the
    // datagrams for that port then reach only one of the two (a load generator's socket took a
    // responder's IKE port in the same process and answered its initiators' IKE_SA_INITs).
    if (local.port != 0) ::setsockopt(s.m_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    // A SeGW after a power cut gets thousands of IKE_SA_INITs at once: the default receive
    // buffer (~212 KiB, a few hundred datagrams with their overhead) overflows and every lost
    // request costs its initiator a retransmission timeout.  Ask for 4 MiB (the kernel caps it
    // at net.core.rmem_max unless
    // the process may force it; docs/bench-ike.md "Power cut").
    // SO_RCVBUFFORCE (CAP_NET_ADMIN, e.g. the daemon as root) is not capped by rmem_max.
    int rcvbuf = 4 << 20;
    if (::setsockopt(s.m_fd, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof rcvbuf) != 0)
        ::setsockopt(s.m_fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    sockaddr_storage ss;
    socklen_t len = to_sockaddr(local, ss);
    if (::bind(s.m_fd, reinterpret_cast<sockaddr*>(&ss), len) != 0) return io_error("bind UDP " + local.to_string());
    len = sizeof ss;
    if (::getsockname(s.m_fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return io_error("getsockname");
    s.m_local = from_sockaddr(ss);
    s.m_wildcard = is_unspecified(local.addr);
    return s;
}

UdpSocket::UdpSocket(UdpSocket&& o) noexcept : m_fd(o.m_fd), m_local(o.m_local), m_wildcard(o.m_wildcard) {
    o.m_fd = -1;
}
UdpSocket& UdpSocket::operator=(UdpSocket&& o) noexcept {
    if (this != &o) {
        if (m_fd >= 0) ::close(m_fd);
        m_fd = o.m_fd;
        m_local = o.m_local;
        m_wildcard = o.m_wildcard;
        o.m_fd = -1;
    }
    return *this;
}
UdpSocket::~UdpSocket() {
    if (m_fd >= 0) ::close(m_fd);
}

Status UdpSocket::send(const ike::Endpoint& from, const ike::Endpoint& to, BytesView payload) const {
    sockaddr_storage ss;
    socklen_t len = to_sockaddr(to, ss);
    iovec iov{const_cast<uint8_t*>(payload.data()), payload.size()};
    msghdr msg{};
    msg.msg_name = &ss;
    msg.msg_namelen = len;
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    alignas(cmsghdr) unsigned char cbuf[CMSG_SPACE(sizeof(in6_pktinfo))]{};
    if (m_wildcard && !is_unspecified(from.addr) && from.addr.v6 == to.addr.v6) {
        msg.msg_control = cbuf;
        if (to.addr.v6) {
            msg.msg_controllen = CMSG_SPACE(sizeof(in6_pktinfo));
            cmsghdr* c = CMSG_FIRSTHDR(&msg);
            c->cmsg_level = IPPROTO_IPV6;
            c->cmsg_type = IPV6_PKTINFO;
            c->cmsg_len = CMSG_LEN(sizeof(in6_pktinfo));
            in6_pktinfo pi{};
            std::memcpy(&pi.ipi6_addr, from.addr.bytes.data(), 16);
            std::memcpy(CMSG_DATA(c), &pi, sizeof pi);
        } else {
            msg.msg_controllen = CMSG_SPACE(sizeof(in_pktinfo));
            cmsghdr* c = CMSG_FIRSTHDR(&msg);
            c->cmsg_level = IPPROTO_IP;
            c->cmsg_type = IP_PKTINFO;
            c->cmsg_len = CMSG_LEN(sizeof(in_pktinfo));
            in_pktinfo pi{};
            std::memcpy(&pi.ipi_spec_dst, from.addr.bytes.data(), 4);
            std::memcpy(CMSG_DATA(c), &pi, sizeof pi);
        }
    }
    ssize_t n = ::sendmsg(m_fd, &msg, 0);
    if (n < 0) return io_error("sendto " + to.to_string());
    if (static_cast<size_t>(n) != payload.size())
        return Error(ErrorDomain::Io, 0, "short UDP send to " + to.to_string());
    return {};
}

Result<std::optional<UdpSocket::Received>> UdpSocket::receive() const {
    Received r;
    r.data.resize(65536);
    sockaddr_storage ss{};
    iovec iov{r.data.data(), r.data.size()};
    alignas(cmsghdr) unsigned char cbuf[256];
    msghdr msg{};
    msg.msg_name = &ss;
    msg.msg_namelen = sizeof ss;
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf;
    msg.msg_controllen = sizeof cbuf;
    ssize_t n = ::recvmsg(m_fd, &msg, 0);
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return std::optional<Received>{};
        return io_error("recvmsg");
    }
    r.data.resize(static_cast<size_t>(n));
    r.remote = from_sockaddr(ss);
    r.local = m_local;
    learn_local(msg, r.local);
    return std::optional<Received>(std::move(r));
}

BatchReceiver::BatchReceiver() : m_buf(new uint8_t[kBatch * kBufSize]) {}  // not zeroed: pages touched as used

Result<size_t> BatchReceiver::receive(const UdpSocket& s, std::vector<UdpSocket::Received>& out, size_t max,
                                      Stats& stats) {
    size_t want = std::min(max, kBatch);
    if (want == 0) return size_t{0};
    std::array<mmsghdr, kBatch> msgs{};
    std::array<iovec, kBatch> iovs{};
    std::array<sockaddr_storage, kBatch> names{};
    struct alignas(cmsghdr) Cmsg {
        unsigned char b[kCmsgSize];
    };
    std::array<Cmsg, kBatch> cbufs{};
    for (size_t i = 0; i < want; ++i) {
        iovs[i] = {m_buf.get() + i * kBufSize, kBufSize};
        msgs[i].msg_hdr.msg_name = &names[i];
        msgs[i].msg_hdr.msg_namelen = sizeof names[i];
        msgs[i].msg_hdr.msg_iov = &iovs[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
        msgs[i].msg_hdr.msg_control = cbufs[i].b;
        msgs[i].msg_hdr.msg_controllen = sizeof cbufs[i].b;
    }
    int n = ::recvmmsg(s.fd(), msgs.data(), static_cast<unsigned>(want), MSG_DONTWAIT, nullptr);
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return size_t{0};
        return io_error("recvmmsg");
    }
    if (n == 0) return size_t{0};
    ++stats.calls;
    if (static_cast<size_t>(n) == want) ++stats.full;
    size_t appended = 0;
    for (int i = 0; i < n; ++i) {
        auto& m = msgs[static_cast<size_t>(i)];
        if (m.msg_hdr.msg_flags & MSG_TRUNC) {
            ++stats.truncated;
            continue;
        }
        UdpSocket::Received r;
        const uint8_t* p = m_buf.get() + static_cast<size_t>(i) * kBufSize;
        r.data.assign(p, p + std::min<size_t>(m.msg_len, kBufSize));
        r.remote = from_sockaddr(names[static_cast<size_t>(i)]);
        r.local = s.local();
        learn_local(m.msg_hdr, r.local);
        out.push_back(std::move(r));
        ++appended;
    }
    return appended;
}

Result<std::unique_ptr<PlainNattTransport>> PlainNattTransport::bind(const ike::Endpoint& local, Counters* counters) {
    auto s = UdpSocket::bind(local);
    if (!s) return std::move(s).error();
    return std::unique_ptr<PlainNattTransport>(new PlainNattTransport(std::move(*s), counters));
}

Status PlainNattTransport::send_ike(const ike::Datagram& d) {
    Bytes buf;
    buf.reserve(d.data.size() + 4);
    buf.insert(buf.end(), 4, 0);
    buf.insert(buf.end(), d.data.begin(), d.data.end());
    return m_socket.send(d.local, d.remote, buf);
}

void PlainNattTransport::service() {
    for (int i = 0; i < 64; ++i) {  // bounded, so one busy socket cannot starve the loop
        auto r = m_socket.receive();
        if (!r) {
            log::get("runtime")->warn("NAT-T socket {}: {}", m_socket.local().to_string(), r.error().detail());
            return;
        }
        if (!r->has_value()) return;
        auto& rx = **r;
        switch (classify_natt(rx.data)) {
            case NattKind::Keepalive:
                if (m_counters) m_counters->inc("runtime.rx.natt_keepalive");
                break;
            case NattKind::Esp:
                // No data plane owns this socket: nothing can decrypt ESP here.
                if (m_counters) m_counters->inc("runtime.rx.esp_without_dataplane");
                break;
            case NattKind::Invalid:
                if (m_counters) m_counters->inc("runtime.rx.natt_invalid");
                log::get("runtime")->debug(
                    "dropping {}-octet datagram from {} on NAT-T port: neither IKE, ESP nor keepalive", rx.data.size(),
                    rx.remote.to_string());
                break;
            case NattKind::Ike: {
                ike::Datagram d;
                d.local = rx.local;
                d.remote = rx.remote;
                d.data.assign(rx.data.begin() + 4, rx.data.end());
                d.non_esp_marker = true;
                if (m_receiver) m_receiver(std::move(d));
                break;
            }
        }
    }
}

}  // namespace x2sec::runtime
