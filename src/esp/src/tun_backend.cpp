#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <x2sec/common/log.hpp>
#include <x2sec/esp/gso.hpp>
#include <x2sec/esp/tun_backend.hpp>
#include <x2sec/esp/tun_coalesce.hpp>

namespace x2sec::esp {
namespace {

Error io_error(const std::string& what) {
    return Error(ErrorDomain::Io, errno, what + ": " + std::strerror(errno));
}

const SystemClock kSystemClock;

socklen_t to_sockaddr(const IpAddress& a, uint16_t port, sockaddr_storage& ss) {
    std::memset(&ss, 0, sizeof(ss));
    if (a.v6) {
        sockaddr_in6 s6{};
        s6.sin6_family = AF_INET6;
        s6.sin6_port = htons(port);
        std::memcpy(&s6.sin6_addr, a.bytes.data(), 16);
        std::memcpy(&ss, &s6, sizeof(s6));
        return sizeof(s6);
    }
    sockaddr_in s4{};
    s4.sin_family = AF_INET;
    s4.sin_port = htons(port);
    std::memcpy(&s4.sin_addr, a.bytes.data(), 4);
    std::memcpy(&ss, &s4, sizeof(s4));
    return sizeof(s4);
}

void from_sockaddr(const sockaddr_storage& ss, IpAddress& a, uint16_t& port) {
    a = IpAddress{};
    if (ss.ss_family == AF_INET6) {
        sockaddr_in6 s6;
        std::memcpy(&s6, &ss, sizeof(s6));
        a.v6 = true;
        std::memcpy(a.bytes.data(), &s6.sin6_addr, 16);
        port = ntohs(s6.sin6_port);
    } else {
        sockaddr_in s4;
        std::memcpy(&s4, &ss, sizeof(s4));
        std::memcpy(a.bytes.data(), &s4.sin_addr, 4);
        port = ntohs(s4.sin_port);
    }
}

constexpr size_t kBufSize = 65536 + 128;
constexpr size_t kRxOff = 64;  // room to rebuild an IP header in transport mode

int ifreq_socket() {
    return ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
}

}  // namespace

// ---------------------------------------------------------------- TunDevice

Result<TunDevice> TunDevice::open(const std::string& name, bool offload) {
    if (name.size() >= IFNAMSIZ) return Error(ErrorDomain::Config, 0, "TUN name too long: " + name);
    int fd = ::open("/dev/net/tun", O_RDWR | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) return io_error("opening /dev/net/tun");
    ifreq ifr{};
    // IFF_NAPI: writes go through NAPI, so the kernel can GRO-coalesce decrypted TCP segments.
    ifr.ifr_flags = static_cast<short>(IFF_TUN | IFF_NO_PI | (offload ? IFF_VNET_HDR | IFF_NAPI : 0));
    std::memcpy(ifr.ifr_name, name.data(), name.size());
    if (::ioctl(fd, TUNSETIFF, &ifr) < 0) {
        Error e = io_error("TUNSETIFF " + name);
        ::close(fd);
        return e;
    }
    TunDevice t;
    t.m_fd = fd;
    t.m_name = ifr.ifr_name;
    if (offload) {
        int hdr = int(kVnetHdrLen);
        unsigned features = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN;
        if (::ioctl(fd, TUNSETVNETHDRSZ, &hdr) < 0) return io_error("TUNSETVNETHDRSZ " + name);
        if (::ioctl(fd, TUNSETOFFLOAD, features) < 0) return io_error("TUNSETOFFLOAD " + name);
        t.m_vnet = true;
    }
    return t;
}

TunDevice& TunDevice::operator=(TunDevice&& o) noexcept {
    if (this != &o) {
        if (m_fd >= 0) ::close(m_fd);
        m_fd = o.m_fd;
        m_name = std::move(o.m_name);
        o.m_fd = -1;
    }
    return *this;
}

TunDevice::~TunDevice() {
    if (m_fd >= 0) ::close(m_fd);
}

Status TunDevice::set_mtu(int mtu) {
    int s = ifreq_socket();
    if (s < 0) return io_error("socket");
    ifreq ifr{};
    std::strncpy(ifr.ifr_name, m_name.c_str(), IFNAMSIZ - 1);
    ifr.ifr_mtu = mtu;
    int rc = ::ioctl(s, SIOCSIFMTU, &ifr);
    Status st = rc < 0 ? Status(io_error("SIOCSIFMTU " + m_name)) : Status();
    ::close(s);
    return st;
}

Status TunDevice::set_up() {
    int s = ifreq_socket();
    if (s < 0) return io_error("socket");
    ifreq ifr{};
    std::strncpy(ifr.ifr_name, m_name.c_str(), IFNAMSIZ - 1);
    Status st;
    if (::ioctl(s, SIOCGIFFLAGS, &ifr) < 0) {
        st = io_error("SIOCGIFFLAGS " + m_name);
    } else {
        ifr.ifr_flags = static_cast<short>(ifr.ifr_flags | IFF_UP | IFF_RUNNING);
        if (::ioctl(s, SIOCSIFFLAGS, &ifr) < 0) st = io_error("SIOCSIFFLAGS " + m_name);
    }
    ::close(s);
    return st;
}

Status TunDevice::add_ipv4(const IpAddress& addr, unsigned prefix_len) {
    if (addr.v6 || prefix_len > 32) return Error(ErrorDomain::Config, 0, "add_ipv4 needs an IPv4 address");
    int s = ifreq_socket();
    if (s < 0) return io_error("socket");
    ifreq ifr{};
    std::strncpy(ifr.ifr_name, m_name.c_str(), IFNAMSIZ - 1);
    sockaddr_in sin{};
    sin.sin_family = AF_INET;
    std::memcpy(&sin.sin_addr, addr.bytes.data(), 4);
    std::memcpy(&ifr.ifr_addr, &sin, sizeof(sin));
    Status st;
    if (::ioctl(s, SIOCSIFADDR, &ifr) < 0) st = io_error("SIOCSIFADDR " + m_name);
    if (st.ok()) {
        uint32_t mask = prefix_len ? htonl(~uint32_t(0) << (32 - prefix_len)) : 0;
        std::memcpy(&sin.sin_addr, &mask, 4);
        std::memcpy(&ifr.ifr_netmask, &sin, sizeof(sin));
        if (::ioctl(s, SIOCSIFNETMASK, &ifr) < 0) st = io_error("SIOCSIFNETMASK " + m_name);
    }
    ::close(s);
    return st;
}

// ---------------------------------------------------------------- TunBackend

TunBackend::TunBackend(DataPlane& dp, TunDevice tun, TunBackendOptions options)
    : m_dp(dp),
      m_tun(std::move(tun)),
      m_opts(std::move(options)),
      m_clock(m_opts.clock != nullptr ? m_opts.clock : &kSystemClock) {}

Result<std::unique_ptr<TunBackend>> TunBackend::create(DataPlane& dp, TunDevice tun, TunBackendOptions options) {
    if (options.batch == 0 || options.batch > 1024) options.batch = 32;
    std::unique_ptr<TunBackend> b(new TunBackend(dp, std::move(tun), std::move(options)));
    const IpAddress& a = b->m_opts.bind_addr;
    b->m_udp = ::socket(a.v6 ? AF_INET6 : AF_INET, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (b->m_udp < 0) return io_error("UDP socket");
    int one = 1;
    // SO_REUSEADDR only for a given port (a restart while the old socket lingers): on an ephemeral
    // (port 0) bind Linux may then hand out a port another SO_REUSEADDR socket holds (UdpSocket too).
    if (b->m_opts.port != 0) ::setsockopt(b->m_udp, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (a.v6) ::setsockopt(b->m_udp, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    int sz = b->m_opts.socket_buffer;
    ::setsockopt(b->m_udp, SOL_SOCKET, SO_RCVBUF, &sz, sizeof(sz));
    ::setsockopt(b->m_udp, SOL_SOCKET, SO_SNDBUF, &sz, sizeof(sz));
    sockaddr_storage ss;
    socklen_t len = to_sockaddr(a, b->m_opts.port, ss);
    if (::bind(b->m_udp, reinterpret_cast<sockaddr*>(&ss), len) < 0)
        return io_error("binding UDP " + a.to_string() + ":" + std::to_string(b->m_opts.port));
    socklen_t sl = sizeof(ss);
    ::getsockname(b->m_udp, reinterpret_cast<sockaddr*>(&ss), &sl);
    IpAddress bound;
    from_sockaddr(ss, bound, b->m_port);
    if (b->m_opts.udp_offload) {
        // Receive coalesced runs of equal-sized ESP datagrams in one recvmmsg slot.
        b->m_udp_gro = ::setsockopt(b->m_udp, IPPROTO_UDP, UDP_GRO, &one, sizeof(one)) == 0;
    }
    if (b->m_opts.raw_esp) {
        // Raw ESP: the kernel adds (IPv4: and on receive keeps) the IP header.  A kernel with
        // its own ESP (xfrm) still hands every ESP packet to raw sockets as well; one without
        // it would answer "protocol unreachable" were it not for this socket.
        b->m_raw = ::socket(a.v6 ? AF_INET6 : AF_INET, SOCK_RAW | SOCK_CLOEXEC | SOCK_NONBLOCK, IPPROTO_ESP);
        if (b->m_raw >= 0) {
            ::setsockopt(b->m_raw, SOL_SOCKET, SO_RCVBUF, &sz, sizeof(sz));
            ::setsockopt(b->m_raw, SOL_SOCKET, SO_SNDBUF, &sz, sizeof(sz));
            sockaddr_storage rs;
            socklen_t rl = to_sockaddr(a, 0, rs);
            if (::bind(b->m_raw, reinterpret_cast<sockaddr*>(&rs), rl) < 0) {
                log::get("esp")->warn("raw ESP socket: binding {}: {}", a.to_string(), std::strerror(errno));
                ::close(b->m_raw);
                b->m_raw = -1;
            }
        } else {
            log::get("esp")->warn(
                "no raw ESP socket (IP protocol 50): {}; Child SAs without UDP "
                "encapsulation cannot carry traffic",
                std::strerror(errno));
        }
    }
    b->m_stop_fd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (b->m_stop_fd < 0) return io_error("eventfd");
    return b;
}

TunBackend::~TunBackend() {
    stop();
    if (m_udp >= 0) ::close(m_udp);
    if (m_raw >= 0) ::close(m_raw);
    if (m_stop_fd >= 0) ::close(m_stop_fd);
}

Status TunBackend::start() {
    if (m_running.exchange(true)) return {};
    m_tx = std::thread([this] { tx_loop(); });
    m_rx = std::thread([this] { rx_loop(); });
    log::get("esp")->info("TUN backend on {} <-> UDP {}:{}{} ({} packets per batch)", m_tun.name(),
                          m_opts.bind_addr.to_string(), m_port, m_raw >= 0 ? " and raw ESP" : "", m_opts.batch);
    return {};
}

void TunBackend::stop() {
    if (!m_running.exchange(false)) return;
    uint64_t one = 1;
    (void)!::write(m_stop_fd, &one, sizeof(one));
    if (m_tx.joinable()) m_tx.join();
    if (m_rx.joinable()) m_rx.join();
}

void TunBackend::set_ike_receiver(std::function<void(IkeMessage)> receiver) {
    std::lock_guard lock(m_ike_mutex);
    m_ike_receiver = std::move(receiver);
}

Status TunBackend::send_ike(const IpAddress& remote, uint16_t remote_port, BytesView msg) {
    Bytes d(4 + msg.size(), 0);  // non-ESP marker
    std::memcpy(d.data() + 4, msg.data(), msg.size());
    sockaddr_storage ss;
    socklen_t len = to_sockaddr(remote, remote_port, ss);
    if (::sendto(m_udp, d.data(), d.size(), 0, reinterpret_cast<sockaddr*>(&ss), len) < 0)
        return io_error("sending IKE to " + remote.to_string());
    m_dp.counters().inc("esp.tx.ike");
    return {};
}

Status TunBackend::send_keepalive(const IpAddress& remote, uint16_t remote_port) {
    uint8_t ff = 0xFF;
    sockaddr_storage ss;
    socklen_t len = to_sockaddr(remote, remote_port, ss);
    if (::sendto(m_udp, &ff, 1, 0, reinterpret_cast<sockaddr*>(&ss), len) < 0)
        return io_error("sending keepalive to " + remote.to_string());
    m_dp.counters().inc("esp.tx.keepalive");
    return {};
}

void TunBackend::tx_loop() {
    const size_t n = m_opts.batch;
    const bool vnet = m_tun.vnet();
    // Offload mode: slots hold single segments (<= 64 KiB when the MTU is large).
    std::vector<std::vector<uint8_t>> bufs(n, std::vector<uint8_t>(kBufSize));
    std::vector<uint8_t> big(vnet ? 65536 + kVnetHdrLen + 64 : 0);
    std::vector<iovec> iov(n);
    std::vector<sockaddr_storage> dst(n);
    Counters& c = m_dp.counters();
    auto& tun_read_err = c.counter("esp.tx.tun_read_error");
    auto& send_err = c.counter("esp.tx.send_error");
    auto& batches = c.counter("esp.tx.batches");
    auto& gso_super = c.counter("esp.tx.gso_super_packets");
    auto& gso_err = c.counter("esp.tx.gso_error");
    size_t count = 0;
    Millis now = 0;

    // UDP GSO (UDP_SEGMENT): runs of ESP packets to the same peer with equal length (the last
    // may be shorter) — what the segments of one TSO super-packet become — go down the stack
    // as one datagram train per sendmmsg entry.  Falls back to one entry per packet if the
    // kernel refuses.
    bool gso_ok = m_opts.udp_offload;
    std::vector<mmsghdr> groups(n);
    constexpr size_t kCtrl = 64;
    std::vector<uint64_t> ctrl(n * kCtrl / sizeof(uint64_t));
    std::vector<socklen_t> dst_len(n);
    std::vector<uint8_t> raw(n);  // slot goes out as raw ESP (IP protocol 50)
    std::vector<mmsghdr> raw_msgs(n);
    auto& gso_sends = c.counter("esp.tx.udp_gso_sends");
    auto& raw_packets = c.counter("esp.tx.raw_packets");
    auto& no_raw = c.counter("esp.tx.no_raw_socket");
    auto flush = [&] {
        size_t g = 0, rg = 0;
        for (size_t i = 0; i < count;) {
            if (raw[i]) {
                mmsghdr& m = raw_msgs[rg++];
                m = {};
                m.msg_hdr.msg_name = &dst[i];
                m.msg_hdr.msg_namelen = dst_len[i];
                m.msg_hdr.msg_iov = &iov[i];
                m.msg_hdr.msg_iovlen = 1;
                ++i;
                continue;
            }
            size_t j = i + 1, seg = iov[i].iov_len, total = seg;
            if (gso_ok) {
                while (j < count && !raw[j] && j - i < 64 && iov[j - 1].iov_len == seg && iov[j].iov_len <= seg &&
                       total + iov[j].iov_len <= 65000 && dst_len[j] == dst_len[i] &&
                       std::memcmp(&dst[j], &dst[i], dst_len[i]) == 0) {
                    total += iov[j].iov_len;
                    ++j;
                }
            }
            mmsghdr& m = groups[g];
            m = {};
            m.msg_hdr.msg_name = &dst[i];
            m.msg_hdr.msg_namelen = dst_len[i];
            m.msg_hdr.msg_iov = &iov[i];
            m.msg_hdr.msg_iovlen = j - i;
            if (j - i > 1) {
                auto* cbuf = reinterpret_cast<char*>(ctrl.data()) + g * kCtrl;
                std::memset(cbuf, 0, kCtrl);
                m.msg_hdr.msg_control = cbuf;
                m.msg_hdr.msg_controllen = CMSG_SPACE(sizeof(uint16_t));
                cmsghdr* cm = CMSG_FIRSTHDR(&m.msg_hdr);
                cm->cmsg_level = SOL_UDP;
                cm->cmsg_type = UDP_SEGMENT;
                cm->cmsg_len = CMSG_LEN(sizeof(uint16_t));
                uint16_t gs = uint16_t(seg);
                std::memcpy(CMSG_DATA(cm), &gs, sizeof(gs));
                gso_sends.fetch_add(1, std::memory_order_relaxed);
            }
            ++g;
            i = j;
        }
        size_t sent = 0;
        while (sent < g) {
            int k = ::sendmmsg(m_udp, groups.data() + sent, unsigned(g - sent), 0);
            if (k < 0) {
                if (errno == EINTR) continue;
                if (errno == EAGAIN || errno == ENOBUFS) {
                    pollfd w{m_udp, POLLOUT, 0};
                    ::poll(&w, 1, 10);
                    continue;
                }
                if (gso_ok && (errno == EIO || errno == EINVAL || errno == EOPNOTSUPP || errno == EMSGSIZE)) {
                    // No UDP GSO here: send the rest one packet per entry from now on.
                    gso_ok = false;
                    log::get("esp")->info("UDP GSO not available ({}): sending one datagram per packet",
                                          std::strerror(errno));
                    for (size_t q = sent; q < g; ++q) {
                        mmsghdr& m = groups[q];
                        size_t first = size_t(static_cast<iovec*>(m.msg_hdr.msg_iov) - iov.data());
                        for (size_t r = 0; r < m.msg_hdr.msg_iovlen; ++r) {
                            msghdr h{};
                            h.msg_name = m.msg_hdr.msg_name;
                            h.msg_namelen = m.msg_hdr.msg_namelen;
                            h.msg_iov = &iov[first + r];
                            h.msg_iovlen = 1;
                            if (::sendmsg(m_udp, &h, 0) < 0) send_err.fetch_add(1, std::memory_order_relaxed);
                        }
                    }
                    break;
                }
                send_err.fetch_add(g - sent, std::memory_order_relaxed);
                break;
            }
            sent += size_t(k);
        }
        for (size_t rs = 0; rs < rg;) {
            int k = ::sendmmsg(m_raw, raw_msgs.data() + rs, unsigned(rg - rs), 0);
            if (k < 0) {
                if (errno == EINTR) continue;
                if (errno == EAGAIN || errno == ENOBUFS) {
                    pollfd w{m_raw, POLLOUT, 0};
                    ::poll(&w, 1, 10);
                    continue;
                }
                send_err.fetch_add(rg - rs, std::memory_order_relaxed);
                break;
            }
            raw_packets.fetch_add(size_t(k), std::memory_order_relaxed);
            rs += size_t(k);
        }
        if (count) batches.fetch_add(1, std::memory_order_relaxed);
        count = 0;
    };
    // Protect the IP packet in bufs[count] (at kMaxHeadroom) and queue it.
    auto add = [&](size_t ip_len) {
        uint8_t* b = bufs[count].data();
        auto res = m_dp.protect(std::span<uint8_t>(b, kBufSize), ip_len, now);
        if (!res.ok) return;  // counted by the data plane
        iov[count] = {b + res.esp_off, res.esp_len};
        raw[count] = !res.udp_encap;
        if (raw[count] && m_raw < 0) {
            no_raw.fetch_add(1, std::memory_order_relaxed);
            return;
        }
        dst_len[count] = to_sockaddr(res.remote_addr, raw[count] ? 0 : res.remote_port, dst[count]);
        if (++count == n) flush();
    };
    const size_t room = kBufSize - kMaxHeadroom - kMaxTailroom;

    pollfd pfd[2] = {{m_tun.fd(), POLLIN, 0}, {m_stop_fd, POLLIN, 0}};
    while (m_running.load(std::memory_order_relaxed)) {
        if (::poll(pfd, 2, 500) < 0 && errno != EINTR) break;
        if (pfd[1].revents) break;
        if (!(pfd[0].revents & POLLIN)) continue;
        now = m_clock->now();
        // Read until the TUN device is drained; send whenever a batch is full, and at the end.
        for (;;) {
            if (!vnet) {
                ssize_t r = ::read(m_tun.fd(), bufs[count].data() + kMaxHeadroom, room);
                if (r < 0) {
                    if (errno != EAGAIN && errno != EINTR) tun_read_err.fetch_add(1, std::memory_order_relaxed);
                    break;
                }
                add(size_t(r));
                continue;
            }
            ssize_t r = ::read(m_tun.fd(), big.data(), big.size());
            if (r < 0) {
                if (errno != EAGAIN && errno != EINTR) tun_read_err.fetch_add(1, std::memory_order_relaxed);
                break;
            }
            if (r < ssize_t(kVnetHdrLen)) continue;
            VnetHdr h = VnetHdr::parse(big.data());
            uint8_t* pkt = big.data() + kVnetHdrLen;
            size_t len = size_t(r) - kVnetHdrLen;
            if ((h.gso_type & 0x7f) == 0) {
                if (((h.flags & 1) && !complete_checksum(pkt, len, h)) || len > room) {
                    gso_err.fetch_add(1, std::memory_order_relaxed);
                    continue;
                }
                std::memcpy(bufs[count].data() + kMaxHeadroom, pkt, len);
                add(len);
                continue;
            }
            TsoInfo t;
            if (!tso_inspect(pkt, len, h, t)) {
                gso_err.fetch_add(1, std::memory_order_relaxed);
                continue;
            }
            gso_super.fetch_add(1, std::memory_order_relaxed);
            for (size_t i = 0; i < t.segments; ++i) {
                size_t sl = tso_segment(pkt, t, i, bufs[count].data() + kMaxHeadroom, room);
                if (sl) add(sl);
            }
        }
        flush();
    }
}

void TunBackend::rx_loop() {
    const size_t n = m_opts.batch;
    std::vector<std::vector<uint8_t>> bufs(n, std::vector<uint8_t>(kBufSize));
    std::vector<mmsghdr> msgs(n);
    std::vector<iovec> iov(n);
    std::vector<sockaddr_storage> src(n);
    constexpr size_t kCtrl = 64;
    std::vector<uint64_t> ctrl(n * kCtrl / sizeof(uint64_t));
    for (size_t i = 0; i < n; ++i) {
        iov[i] = {bufs[i].data() + kRxOff, kBufSize - kRxOff};
        msgs[i].msg_hdr = {};
        msgs[i].msg_hdr.msg_name = &src[i];
        msgs[i].msg_hdr.msg_iov = &iov[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
    }
    auto& gro_trains = m_dp.counters().counter("esp.rx.udp_gro_trains");
    Counters& c = m_dp.counters();
    auto& keepalive = c.counter("esp.rx.keepalive");
    auto& ike = c.counter("esp.rx.ike");
    auto& not_esp = c.counter("esp.drop.not_esp");
    auto& tun_write_err = c.counter("esp.rx.tun_write_error");
    auto& batches = c.counter("esp.rx.batches");
    const bool vnet = m_tun.vnet();
    Millis next_tick = 0, next_keepalive = m_clock->now() + m_opts.keepalive_ms;
    Millis now = m_clock->now();
    auto& raw_rx = c.counter("esp.rx.raw_packets");
    auto& co_super = c.counter("esp.rx.tun_super_packets");
    auto& co_segs = c.counter("esp.rx.tun_coalesced_segments");
    int tun_fd = m_tun.fd();
    TunCoalescer co(
        [](void* ctx, const iovec* v, int cnt) -> ssize_t { return ::writev(*static_cast<int*>(ctx), v, cnt); },
        &tun_fd);
    const bool coalesce = vnet && m_opts.tun_coalesce;
    uint64_t co_super_seen = 0, co_segs_seen = 0, co_err_seen = 0;
    // Writes what the coalescer holds; must run before the receive buffers are reused.
    auto co_flush = [&] {
        if (!coalesce) return;
        co.flush();
        co_super.fetch_add(co.super_packets - co_super_seen, std::memory_order_relaxed);
        co_segs.fetch_add(co.coalesced_segments - co_segs_seen, std::memory_order_relaxed);
        tun_write_err.fetch_add(co.write_errors - co_err_seen, std::memory_order_relaxed);
        co_super_seen = co.super_packets;
        co_segs_seen = co.coalesced_segments;
        co_err_seen = co.write_errors;
    };
    auto& raw_bad = c.counter("esp.drop.raw_malformed");
    auto esp_in = [&](uint8_t* b, size_t off, size_t len) {
        auto r = m_dp.unprotect(std::span<uint8_t>(b, kBufSize), off, len, now);
        if (!r.ok || r.dummy) return;
        uint8_t* ip = b + r.ip_off;
        size_t ip_len = r.ip_len;
        if (coalesce) {  // r.ip_off >= off + 16 > kVnetHdrLen: room in front
            co.push(ip, ip_len);
            return;
        }
        if (vnet) {  // r.ip_off >= off + 16 > kVnetHdrLen: room in front
            ip -= kVnetHdrLen;
            ip_len += kVnetHdrLen;
            std::memset(ip, 0, kVnetHdrLen);
            // Authenticated by the ICV: the kernel need not verify the transport
            // checksum again (VIRTIO_NET_HDR_F_DATA_VALID).
            ip[0] = 2;
        }
        if (::write(m_tun.fd(), ip, ip_len) < 0) tun_write_err.fetch_add(1, std::memory_order_relaxed);
    };
    auto handle = [&](uint8_t* b, size_t off, size_t len, const sockaddr_storage& from) {
        BytesView payload(b + off, len);
        switch (classify_udp_encap(payload)) {
            case UdpKind::Esp:
                esp_in(b, off, len);
                break;
            case UdpKind::Ike: {
                ike.fetch_add(1, std::memory_order_relaxed);
                std::function<void(IkeMessage)> rcv;
                {
                    std::lock_guard lock(m_ike_mutex);
                    rcv = m_ike_receiver;
                }
                if (rcv) {  // control plane: allocation is fine here
                    IkeMessage m;
                    m.local_addr = m_opts.bind_addr;
                    m.local_port = m_port;
                    from_sockaddr(from, m.remote_addr, m.remote_port);
                    m.data.assign(payload.begin() + 4, payload.end());
                    rcv(std::move(m));
                }
                break;
            }
            case UdpKind::Keepalive:
                keepalive.fetch_add(1, std::memory_order_relaxed);
                break;
            case UdpKind::Invalid:
                not_esp.fetch_add(1, std::memory_order_relaxed);
                break;
        }
    };
    pollfd pfd[3] = {{m_udp, POLLIN, 0}, {m_stop_fd, POLLIN, 0}, {m_raw, POLLIN, 0}};
    const bool v6 = m_opts.bind_addr.v6;
    auto drain_raw = [&] {
        for (;;) {
            for (size_t i = 0; i < n; ++i) {
                msgs[i].msg_hdr.msg_namelen = sizeof(sockaddr_storage);
                msgs[i].msg_hdr.msg_control = nullptr;
                msgs[i].msg_hdr.msg_controllen = 0;
            }
            int k = ::recvmmsg(m_raw, msgs.data(), unsigned(n), MSG_DONTWAIT, nullptr);
            if (k <= 0) return;
            batches.fetch_add(1, std::memory_order_relaxed);
            now = m_clock->now();
            for (int i = 0; i < k; ++i) {
                uint8_t* b = bufs[size_t(i)].data();
                size_t total = msgs[size_t(i)].msg_len, off = kRxOff;
                if (!v6) {  // IPv4 raw sockets deliver the IP header (reassembled packet)
                    const uint8_t* ip = b + kRxOff;
                    size_t ihl = total >= 20 ? size_t(ip[0] & 15) * 4 : 0;
                    if (total < 20 || (ip[0] >> 4) != 4 || ihl < 20 || ihl > total) {
                        raw_bad.fetch_add(1, std::memory_order_relaxed);
                        continue;
                    }
                    off += ihl;
                    total -= ihl;
                }
                raw_rx.fetch_add(1, std::memory_order_relaxed);
                esp_in(b, off, total);
            }
            co_flush();
            if (size_t(k) < n) return;
        }
    };
    while (m_running.load(std::memory_order_relaxed)) {
        now = m_clock->now();
        if (now >= next_tick) {
            m_dp.tick(now);
            next_tick = now + m_opts.tick_ms;
        }
        if (m_opts.keepalive_ms > 0 && now >= next_keepalive) {
            for (const auto& s : m_dp.status())
                if (s.outbound_active) (void)send_keepalive(s.remote_addr, s.remote_port);
            next_keepalive = now + m_opts.keepalive_ms;
        }
        int timeout = int(std::max<Millis>(1, next_tick - now));
        if (::poll(pfd, m_raw >= 0 ? 3 : 2, timeout) < 0 && errno != EINTR) break;
        if (pfd[1].revents) break;
        if (m_raw >= 0 && (pfd[2].revents & POLLIN)) drain_raw();
        if (!(pfd[0].revents & POLLIN)) continue;
        for (;;) {
            for (size_t i = 0; i < n; ++i) {
                msgs[i].msg_hdr.msg_namelen = sizeof(sockaddr_storage);
                msgs[i].msg_hdr.msg_control = reinterpret_cast<char*>(ctrl.data()) + i * kCtrl;
                msgs[i].msg_hdr.msg_controllen = kCtrl;
            }
            int k = ::recvmmsg(m_udp, msgs.data(), unsigned(n), MSG_DONTWAIT, nullptr);
            if (k <= 0) break;
            batches.fetch_add(1, std::memory_order_relaxed);
            now = m_clock->now();
            for (int i = 0; i < k; ++i) {
                uint8_t* b = bufs[size_t(i)].data();
                size_t total = msgs[size_t(i)].msg_len;
                // UDP GRO: a train of datagrams of gso octets each (the last may be shorter).
                size_t gso = 0;
                for (cmsghdr* cm = CMSG_FIRSTHDR(&msgs[size_t(i)].msg_hdr); cm;
                     cm = CMSG_NXTHDR(&msgs[size_t(i)].msg_hdr, cm)) {
                    if (cm->cmsg_level == SOL_UDP && cm->cmsg_type == UDP_GRO) {
                        int v = 0;
                        std::memcpy(&v, CMSG_DATA(cm), sizeof(v));
                        gso = v > 0 ? size_t(v) : 0;
                    }
                }
                if (gso == 0 || gso >= total) {
                    handle(b, kRxOff, total, src[size_t(i)]);
                    continue;
                }
                gro_trains.fetch_add(1, std::memory_order_relaxed);
                // Processed in order: each datagram may overwrite the tail of the previous
                // one (transport-mode header rebuild, the virtio header) — already written.
                for (size_t off = 0; off < total; off += gso)
                    handle(b, kRxOff + off, std::min(gso, total - off), src[size_t(i)]);
            }
            co_flush();
            if (size_t(k) < n) break;
        }
    }
}

}  // namespace x2sec::esp
