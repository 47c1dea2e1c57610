// net::StreamServer with a toy line protocol ("<text>\n" -> "echo <text>\n") on loopback.
#include <gtest/gtest.h>

#include <chrono>
#include <stdexcept>
#include <thread>
#include <x2sec/common/counters.hpp>
#include <x2sec/net/stream_server.hpp>
#include <x2sec/test/slow_clients.hpp>

using namespace x2sec;

namespace {

struct LineProto : net::Protocol {
    net::Frame frame(BytesView in, net::FrameState& st, bool eof) override {
        net::Frame f;
        for (size_t i = st.scanned; i < in.size(); ++i)
            if (in[i] == '\n') {
                f.kind = net::Frame::Complete;
                f.size = i + 1;
                return f;
            }
        st.scanned = in.size();
        if (in.size() > 64) {
            f.kind = net::Frame::Reject;
            f.reply = Bytes{'t', 'o', 'o', ' ', 'l', 'o', 'n', 'g', '\n'};
            f.counter = "t.rejected.line_too_long";
            f.why = "line too long";
        } else if (eof) {
            f.kind = net::Frame::Reject;
        }
        return f;
    }
    SecureBytes handle(net::Request req) override {
        std::string line(req.data.begin(), req.data.end());
        if (line == "throw\n") throw std::runtime_error("handler failure");
        std::string out = "echo " + line;
        return SecureBytes(as_bytes(out));
    }
    Bytes refusal(net::Refusal r, bool) override {
        std::string s = std::string("refused ") + net::to_string(r) + "\n";
        return Bytes(s.begin(), s.end());
    }
};

std::string exchange(int port, const std::string& data) {
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
        ::close(fd);
        return "(connect failed)";
    }
    timeval tv{5, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    (void)!::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
    std::string out;
    char buf[256];
    ssize_t n;
    while ((n = ::recv(fd, buf, sizeof buf, 0)) > 0) out.append(buf, static_cast<size_t>(n));
    ::close(fd);
    return out;
}

struct StreamServerTest : ::testing::Test {
    LineProto proto;
    Counters counters;
    std::unique_ptr<net::StreamServer> server;
    void start(net::Limits l) {
        net::ServerOptions o;
        o.limits = l;
        o.counter_prefix = "t";
        o.name = "test";
        server = std::make_unique<net::StreamServer>(proto, o, [this](std::string_view n) { counters.inc(n); });
        auto st = server->start();
        ASSERT_TRUE(st.ok()) << st.error().detail();
    }
};

}  // namespace

TEST(StreamServerLimits, ValidateNamesTheBadLimit) {
    net::Limits l;
    EXPECT_TRUE(net::validate(l).ok());
    l.max_connections = 0;
    EXPECT_NE(net::validate(l).error().detail().find("max_connections"), std::string::npos);
    l = {};
    l.max_per_source = l.max_connections + 1;
    EXPECT_NE(net::validate(l).error().detail().find("max_per_source"), std::string::npos);
    l = {};
    l.request_deadline_ms = 10;
    EXPECT_NE(net::validate(l).error().detail().find("deadline"), std::string::npos);
    l = {};
    l.workers = 0;
    EXPECT_NE(net::validate(l).error().detail().find("workers"), std::string::npos);
}

TEST_F(StreamServerTest, OneWorkerServesWhileIdleClientsHoldConnections) {
    net::Limits l;
    l.workers = 1;
    l.request_deadline_ms = 20000;
    start(l);
    // 50 idle connections: with a thread per connection and one worker, nobody else would get in
    test::SlowClients idle(server->port(), 50, 10, 5, {{"", std::nullopt}}, 1000);
    ASSERT_EQ(idle.opened(), 50);
    for (int i = 0; i < 5; ++i) EXPECT_EQ(exchange(server->port(), "hello\n"), "echo hello\n");
    EXPECT_EQ(idle.closed_by_server(), 0);
}

TEST_F(StreamServerTest, HandlerExceptionIsCountedAndTheServerGoesOn) {
    start({});
    EXPECT_EQ(exchange(server->port(), "throw\n"), "");  // closed without an answer
    EXPECT_EQ(counters.get("t.handler_exception"), 1u);
    EXPECT_EQ(exchange(server->port(), "after\n"), "echo after\n");
}

TEST_F(StreamServerTest, FramerRejectAnsweredAndCounted) {
    start({});
    EXPECT_EQ(exchange(server->port(), std::string(100, 'x')), "too long\n");
    EXPECT_EQ(counters.get("t.rejected.line_too_long"), 1u);
}

TEST_F(StreamServerTest, OverLimitConnectionGetsTheProtocolsRefusal) {
    net::Limits l;
    l.max_connections = 2;
    l.max_per_source = 2;
    l.request_deadline_ms = 20000;
    start(l);
    test::SlowClients idle(server->port(), 2, 2, 6, {{"", std::nullopt}}, 1000);
    auto end = std::chrono::steady_clock::now() + std::chrono::seconds(3);
    while (server->open_connections() < 2 && std::chrono::steady_clock::now() < end)
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    EXPECT_EQ(exchange(server->port(), "x\n"), "refused too_many_connections\n");
    EXPECT_EQ(counters.get("t.rejected.too_many_connections"), 1u);
}

TEST_F(StreamServerTest, DeadlineRefusalSentAndCounted) {
    net::Limits l;
    l.request_deadline_ms = 300;
    start(l);
    EXPECT_EQ(exchange(server->port(), "no newline"), "refused deadline\n");
    EXPECT_EQ(counters.get("t.rejected.deadline"), 1u);
    auto end = std::chrono::steady_clock::now() + std::chrono::seconds(3);  // the drain after the answer ends
    while (server->open_connections() > 0 && std::chrono::steady_clock::now() < end)
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    EXPECT_EQ(server->open_connections(), 0u);
}
