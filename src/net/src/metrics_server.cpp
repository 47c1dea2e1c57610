#include <arpa/inet.h>

#include <charconv>
#include <x2sec/common/log.hpp>
#include <x2sec/common/metrics.hpp>
#include <x2sec/net/metrics_server.hpp>
#include <x2sec/net/stream_server.hpp>

namespace x2sec::net {

namespace {
constexpr size_t kMaxHeader = 8 * 1024;

Bytes to_bytes(std::string_view s) {
    return Bytes(s.begin(), s.end());
}
SecureBytes secure(std::string_view s) {
    return SecureBytes(BytesView(reinterpret_cast<const uint8_t*>(s.data()), s.size()));
}

std::string response(int code, const char* reason, std::string_view type, std::string_view body, bool head = false) {
    std::string r = "HTTP/1.1 " + std::to_string(code) + " " + reason + "\r\nContent-Type: " + std::string(type) +
                    "\r\nContent-Length: " + std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n";
    if (!head) r += body;
    return r;
}
}  // namespace

Result<MetricsListen> parse_metrics_listen(const std::string& text) {
    auto bad = [&](const std::string& why) {
        return Error(
            ErrorDomain::Config, 0,
            "metrics listen '" + text + "': " + why + " (expected ADDRESS:PORT, e.g. 127.0.0.1:9101 or [::1]:9101)");
    };
    MetricsListen l;
    std::string port;
    if (!text.empty() && text[0] == '[') {
        auto close = text.find(']');
        if (close == std::string::npos || close + 1 >= text.size() || text[close + 1] != ':')
            return bad("no ']:' after the IPv6 address");
        l.host = text.substr(1, close - 1);
        port = text.substr(close + 2);
        in6_addr a6;
        if (inet_pton(AF_INET6, l.host.c_str(), &a6) != 1) return bad("'" + l.host + "' is not an IPv6 address");
    } else {
        auto colon = text.rfind(':');
        if (colon == std::string::npos) return bad("no port");
        l.host = text.substr(0, colon);
        port = text.substr(colon + 1);
        in_addr a4;
        if (inet_pton(AF_INET, l.host.c_str(), &a4) != 1) return bad("'" + l.host + "' is not an IPv4 address");
    }
    int p = -1;
    auto [ptr, ec] = std::from_chars(port.data(), port.data() + port.size(), p);
    if (port.empty() || ec != std::errc() || ptr != port.data() + port.size() || p < 0 || p > 65535)
        return bad("port '" + port + "' is not 0..65535");
    l.port = p;
    return l;
}

struct MetricsServer::Proto final : Protocol {
    Proto(Collect c, Counters& cs) : collect(std::move(c)), counters(cs) {}
    Collect collect;
    Counters& counters;

    Frame reject(int code, const char* reason, const char* counter) {
        Frame f;
        f.kind = Frame::Reject;
        f.reply = to_bytes(response(code, reason, "text/plain", std::string(reason) + "\n"));
        f.counter = std::string("metrics.http.") + counter;
        return f;
    }
    Frame frame(BytesView in, FrameState& st, bool eof) override {
        std::string_view sv(reinterpret_cast<const char*>(in.data()), in.size());
        auto end = sv.find("\r\n\r\n", st.scanned);
        if (end == std::string_view::npos)
            end = sv.find("\n\n", st.scanned);  // bare LF, as curl -0 never sends but nc may
        if (end == std::string_view::npos) {
            if (in.size() > kMaxHeader) return reject(431, "Request Header Fields Too Large", "header_too_large");
            if (eof) {
                Frame f;
                f.kind = Frame::Reject;
                return f;
            }
            st.scanned = in.size() >= 3 ? in.size() - 3 : 0;
            return {};
        }
        if (end > kMaxHeader) return reject(431, "Request Header Fields Too Large", "header_too_large");
        auto line_end = sv.find_first_of("\r\n");
        std::string_view line = sv.substr(0, line_end);
        auto sp1 = line.find(' ');
        auto sp2 = sp1 == std::string_view::npos ? sp1 : line.find(' ', sp1 + 1);
        if (sp2 == std::string_view::npos || line.substr(sp2 + 1).substr(0, 5) != "HTTP/")
            return reject(400, "Bad Request", "bad_request");
        std::string_view method = line.substr(0, sp1), target = line.substr(sp1 + 1, sp2 - sp1 - 1);
        auto q = target.find('?');
        std::string_view path = target.substr(0, q);
        if (path != "/metrics") return reject(404, "Not Found", "not_found");
        if (method != "GET" && method != "HEAD") return reject(405, "Method Not Allowed", "method");
        Frame f;
        f.kind = Frame::Complete;
        f.size = end + (sv.compare(end, 4, "\r\n\r\n") == 0 ? 4 : 2);
        return f;
    }
    SecureBytes handle(Request req) override {
        bool head =
            req.data.size() >= 4 && std::string_view(reinterpret_cast<const char*>(req.data.data()), 4) == "HEAD";
        counters.inc("metrics.http.scrapes");
        std::string body;
        try {
            body = collect();
        } catch (const std::exception& e) {
            counters.inc("metrics.http.collect_error");
            log::get("metrics")->warn("metrics: collecting failed: {}", e.what());
            std::string r = response(500, "Internal Server Error", "text/plain", "collecting the metrics failed\n");
            return secure(r);
        }
        std::string r = response(200, "OK", metrics::kContentType, body, head);
        return secure(r);
    }
    Bytes refusal(Refusal r, bool) override {
        if (r == Refusal::Deadline)
            return to_bytes(response(408, "Request Timeout", "text/plain", "request timeout\n"));
        return to_bytes(response(503, "Service Unavailable", "text/plain", "busy\n"));
    }
};

MetricsServer::MetricsServer(MetricsListen listen, Collect collect, Counters& counters)
    : m_proto(std::make_unique<Proto>(std::move(collect), counters)), m_listen(std::move(listen)) {
    ServerOptions so;
    so.bind = m_listen.host;
    so.port = m_listen.port;
    so.limits.max_connections = 16;
    so.limits.max_per_source = 8;
    so.limits.request_deadline_ms = 5000;
    so.limits.write_deadline_ms = 5000;
    so.limits.max_request = kMaxHeader + 4;
    so.limits.workers = 1;
    so.limits.backlog = 64;
    so.counter_prefix = "metrics.http";
    so.log_module = "metrics";
    so.name = "metrics";
    Counters* c = &counters;
    m_server = std::make_unique<StreamServer>(*m_proto, so, [c](std::string_view n) { c->inc(n); });
}

MetricsServer::~MetricsServer() {
    stop();
}

Status MetricsServer::start() {
    auto st = m_server->start();
    if (!st)
        return Error(
            ErrorDomain::Io, 0,
            "metrics listener on " + m_listen.host + ":" + std::to_string(m_listen.port) + ": " + st.error().detail());
    log::get("metrics")->info("serving /metrics on {}:{}", m_listen.host, m_server->port());
    return ok_status();
}

void MetricsServer::stop() {
    if (m_server) m_server->stop();
}

int MetricsServer::port() const {
    return m_server->port();
}

}  // namespace x2sec::net
