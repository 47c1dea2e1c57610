// A tiny HTTP/1.1 server on 127.0.0.1 for tests that fetch something over HTTP (CRLs at a
// cRLDistributionPoint): one thread, one request per connection, the same body for every GET
// (set_body() changes it while running), or a status without body.  Counts the requests.
#pragma once

#include <atomic>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>
#include <x2sec/common/bytes.hpp>

namespace x2sec::test {

class HttpBodyServer {
public:
    HttpBodyServer();  // binds 127.0.0.1:<ephemeral> and starts serving; throws on failure
    ~HttpBodyServer();
    HttpBodyServer(const HttpBodyServer&) = delete;
    HttpBodyServer& operator=(const HttpBodyServer&) = delete;

    uint16_t port() const { return m_port; }
    std::string url(const std::string& path = "/crl") const;
    void set_body(Bytes body, std::string content_type = "application/pkix-crl");
    void set_status(int status);  // e.g. 404: answers that status with an empty body
    uint64_t requests() const { return m_requests.load(); }

    // A URL on 127.0.0.1 where nothing listens (x2sec::test::unused_http_url, ports.hpp).
    static std::string unreachable_url();

private:
    void run();
    int m_listen = -1;
    uint16_t m_port = 0;
    std::atomic<bool> m_stop{false};
    std::atomic<uint64_t> m_requests{0};
    std::mutex m_mu;
    Bytes m_body;
    std::string m_type = "application/pkix-crl";
    int m_status = 200;
    std::thread m_thread;
};

}  // namespace x2sec::test
