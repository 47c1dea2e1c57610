// x2sec::net::MetricsServer — `GET /metrics` in the Prometheus text format, for every daemon.
//
// Built on StreamServer (its own event loop and one worker thread, bounded connections and
// deadlines), so a scrape never runs on, or blocks, the daemon's own loop: the collector runs
// on the metrics worker and must only read thread-safe state (Counters, snapshots the daemon
// hands over).  HTTP/1.0 and 1.1, one request per connection; GET or HEAD of /metrics is
// answered 200 with text/plain; version=0.0.4, any other path 404, any other method 405, a
// header block over 8 KiB 431, anything unparsable 400.  Counted under "metrics.http.*" in
// the Counters given.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <x2sec/common/counters.hpp>
#include <x2sec/common/result.hpp>

namespace x2sec::net {

class StreamServer;

struct MetricsListen {
    std::string host;  // IPv4 or IPv6 literal
    int port = 0;
};
// "127.0.0.1:9101", "[::1]:9101", "0.0.0.0:9101" (port 0..65535; 0 = ephemeral, for tests).
Result<MetricsListen> parse_metrics_listen(const std::string& text);

class MetricsServer {
public:
    using Collect = std::function<std::string()>;  // the exposition text
    MetricsServer(MetricsListen listen, Collect collect, Counters& counters);
    ~MetricsServer();
    MetricsServer(const MetricsServer&) = delete;
    MetricsServer& operator=(const MetricsServer&) = delete;
    Status start();
    void stop();
    int port() const;

private:
    struct Proto;
    std::unique_ptr<Proto> m_proto;
    std::unique_ptr<StreamServer> m_server;
    MetricsListen m_listen;
};

}  // namespace x2sec::net
