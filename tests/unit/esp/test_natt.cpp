// The data plane's UDP socket shared with IKE: IKE messages reach the runtime's receiver with
// the non-ESP marker stripped, IKE sent by the runtime goes out with the marker, keepalives
// and junk are counted, ESP still goes to the data plane.  Needs a TUN device (root).
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <x2sec/esp/natt_transport.hpp>

using namespace x2sec;
using namespace x2sec::esp;

TEST(EspNatt, SharesTheUdpSocketWithIke) {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root: opens a TUN device";
    auto tun = TunDevice::open("x2st" + std::to_string(::getpid() % 100000));
    if (!tun.ok()) GTEST_SKIP() << "no TUN device here: " << tun.error().detail();
    Counters counters;
    DataPlane dp(counters);
    TunBackendOptions o;
    o.bind_addr = IpAddress::v4(127, 0, 0, 1);
    o.port = 0;  // any free port
    auto backend = TunBackend::create(dp, std::move(*tun), o);
    ASSERT_TRUE(backend.ok()) << backend.error().to_string();
    ASSERT_TRUE((*backend)->start().ok());

    auto factory = make_natt_factory(**backend);
    auto natt = factory({IpAddress::v4(127, 0, 0, 1), (*backend)->local_port()}, nullptr);
    ASSERT_TRUE(natt.ok());
    EXPECT_EQ((*natt)->local().port, (*backend)->local_port());
    std::mutex m;
    std::condition_variable cv;
    std::vector<ike::Datagram> got;
    (*natt)->set_ike_receiver([&](ike::Datagram d) {
        std::lock_guard l(m);
        got.push_back(std::move(d));
        cv.notify_all();
    });

    // A "peer" socket on loopback.
    int peer = ::socket(AF_INET, SOCK_DGRAM, 0);
    sockaddr_in pa{};
    pa.sin_family = AF_INET;
    pa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(0, ::bind(peer, reinterpret_cast<sockaddr*>(&pa), sizeof(pa)));
    socklen_t pl = sizeof(pa);
    ::getsockname(peer, reinterpret_cast<sockaddr*>(&pa), &pl);
    sockaddr_in ba{};
    ba.sin_family = AF_INET;
    ba.sin_port = htons((*backend)->local_port());
    ba.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    auto to_backend = [&](BytesView b) {
        ASSERT_EQ(ssize_t(b.size()),
                  ::sendto(peer, b.data(), b.size(), 0, reinterpret_cast<sockaddr*>(&ba), sizeof(ba)));
    };

    to_backend(hex("ff"));  // NAT keepalive
    to_backend(
        hex("00000000"
            "0102030405060708aabbccdd"));         // IKE behind the marker
    to_backend(hex("0000"));                      // junk
    to_backend(hex("0000beef0000000100000000"));  // ESP for an unknown SPI
    {
        std::unique_lock l(m);
        ASSERT_TRUE(cv.wait_for(l, std::chrono::seconds(5), [&] { return !got.empty(); }));
        EXPECT_EQ(to_hex(got[0].data), "0102030405060708aabbccdd");
        EXPECT_TRUE(got[0].non_esp_marker);
        EXPECT_EQ(got[0].remote.port, ntohs(pa.sin_port));
    }
    for (int i = 0; i < 50 && counters.get("esp.drop.unknown_spi") == 0; ++i)
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    EXPECT_EQ(counters.get("esp.rx.keepalive"), 1u);
    EXPECT_EQ(counters.get("esp.drop.not_esp"), 1u);
    EXPECT_EQ(counters.get("esp.drop.unknown_spi"), 1u);

    // The runtime sends an IKE message: the peer sees the marker in front.
    ike::Datagram d;
    d.remote = {IpAddress::v4(127, 0, 0, 1), ntohs(pa.sin_port)};
    d.data = hex("deadbeef");
    ASSERT_TRUE((*natt)->send_ike(d).ok());
    pollfd p{peer, POLLIN, 0};
    ASSERT_EQ(1, ::poll(&p, 1, 5000));
    uint8_t buf[64];
    ssize_t n = ::recv(peer, buf, sizeof(buf), 0);
    ASSERT_EQ(n, 8);
    EXPECT_EQ(to_hex(BytesView(buf, 8)), "00000000deadbeef");
    (*backend)->stop();
    ::close(peer);

    // Any other endpoint gets the runtime's own socket.
    auto other = factory({IpAddress::v4(127, 0, 0, 2), 0}, nullptr);
    ASSERT_TRUE(other.ok()) << other.error().to_string();
    EXPECT_EQ((*other)->local().addr, IpAddress::v4(127, 0, 0, 2));
    EXPECT_NE((*other)->poll_fd(), -1);  // the runtime's PlainNattTransport, polled by the runtime
}
