// MetricsServer: /metrics over HTTP on loopback, the refusals, and the listen-address parser.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <string>
#include <x2sec/net/metrics_server.hpp>

using namespace x2sec;

namespace {
// Sends `req` to 127.0.0.1:port and reads until the server closes.
std::string exchange(int port, const std::string& req) {
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
        ::close(fd);
        return "connect failed";
    }
    (void)!::write(fd, req.data(), req.size());
    std::string out;
    char buf[4096];
    for (ssize_t n; (n = ::read(fd, buf, sizeof buf)) > 0;) out.append(buf, static_cast<size_t>(n));
    ::close(fd);
    return out;
}
}  // namespace

TEST(MetricsListen, Parses) {
    auto a = net::parse_metrics_listen("127.0.0.1:9101");
    ASSERT_TRUE(a) << a.error().detail();
    EXPECT_EQ(a->host, "127.0.0.1");
    EXPECT_EQ(a->port, 9101);
    auto b = net::parse_metrics_listen("[::1]:0");
    ASSERT_TRUE(b) << b.error().detail();
    EXPECT_EQ(b->host, "::1");
    EXPECT_EQ(b->port, 0);
    for (const char* bad : {"", "127.0.0.1", "127.0.0.1:", "127.0.0.1:65536", "localhost:9101", "[::1:9101", "::1:9101",
                            "127.0.0.1:9x"}) {
        auto r = net::parse_metrics_listen(bad);
        EXPECT_FALSE(r) << bad;
        if (!r) {
            EXPECT_NE(r.error().detail().find("expected ADDRESS:PORT"), std::string::npos);
        }
    }
}

TEST(MetricsServer, ServesTheCollectorsTextAndRefusesOtherRequests) {
    Counters c;
    std::atomic<int> calls{0};
    net::MetricsServer s(
        {"127.0.0.1", 0},
        [&] {
            ++calls;
            return std::string("# HELP x2sec_up up\n# TYPE x2sec_up gauge\nx2sec_up 1\n");
        },
        c);
    ASSERT_TRUE(s.start());
    ASSERT_GT(s.port(), 0);
    std::string r = exchange(s.port(), "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    EXPECT_EQ(r.rfind("HTTP/1.1 200 OK\r\n", 0), 0u) << r;
    EXPECT_NE(r.find("Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n"), std::string::npos) << r;
    EXPECT_NE(r.find("Content-Length: 52\r\n"), std::string::npos) << r;
    EXPECT_NE(r.find("\r\n\r\n# HELP x2sec_up up\n# TYPE x2sec_up gauge\nx2sec_up 1\n"), std::string::npos) << r;
    r = exchange(s.port(), "GET /metrics?x=1 HTTP/1.0\r\n\r\n");
    EXPECT_EQ(r.rfind("HTTP/1.1 200 OK\r\n", 0), 0u) << r;
    r = exchange(s.port(), "HEAD /metrics HTTP/1.1\r\n\r\n");
    EXPECT_EQ(r.rfind("HTTP/1.1 200 OK\r\n", 0), 0u) << r;
    EXPECT_EQ(r.find("x2sec_up"), std::string::npos) << "HEAD has no body: " << r;
    EXPECT_EQ(calls.load(), 3);
    EXPECT_EQ(exchange(s.port(), "GET / HTTP/1.1\r\n\r\n").rfind("HTTP/1.1 404", 0), 0u);
    EXPECT_EQ(exchange(s.port(), "POST /metrics HTTP/1.1\r\n\r\n").rfind("HTTP/1.1 405", 0), 0u);
    EXPECT_EQ(exchange(s.port(), "garbage\r\n\r\n").rfind("HTTP/1.1 400", 0), 0u);
    EXPECT_EQ(exchange(s.port(), "GET /metrics HTTP/1.1\r\nX: " + std::string(9000, 'a')).rfind("HTTP/1.1 431", 0), 0u);
    EXPECT_EQ(calls.load(), 3);
    EXPECT_EQ(c.get("metrics.http.scrapes"), 3u);
    EXPECT_EQ(c.get("metrics.http.not_found"), 1u);
    EXPECT_EQ(c.get("metrics.http.method"), 1u);
    EXPECT_EQ(c.get("metrics.http.bad_request"), 1u);
    EXPECT_EQ(c.get("metrics.http.header_too_large"), 1u);
    s.stop();
}

TEST(MetricsServer, ACollectorThatThrowsGives500AndTheServerGoesOn) {
    Counters c;
    bool fail = true;
    net::MetricsServer s(
        {"127.0.0.1", 0},
        [&]() -> std::string {
            if (fail) throw std::runtime_error("boom");
            return "x2sec_up 1\n";
        },
        c);
    ASSERT_TRUE(s.start());
    EXPECT_EQ(exchange(s.port(), "GET /metrics HTTP/1.1\r\n\r\n").rfind("HTTP/1.1 500", 0), 0u);
    EXPECT_EQ(c.get("metrics.http.collect_error"), 1u);
    fail = false;
    EXPECT_NE(exchange(s.port(), "GET /metrics HTTP/1.1\r\n\r\n").find("x2sec_up 1"), std::string::npos);
}

TEST(MetricsServer, BindFailureNamesTheAddress) {
    Counters c;
    net::MetricsServer a(
        {"127.0.0.1", 0}, [] { return std::string(); }, c);
    ASSERT_TRUE(a.start());
    net::MetricsServer b(
        {"127.0.0.1", a.port()}, [] { return std::string(); }, c);
    auto st = b.start();
    ASSERT_FALSE(st);
    EXPECT_NE(st.error().detail().find("metrics listener on 127.0.0.1:" + std::to_string(a.port())), std::string::npos)
        << st.error().detail();
}
