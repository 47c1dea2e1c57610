// CMP over HTTP and HTTPS (RFC 6712 / RFC 9811) for a cmp::Server: POST only, Content-Type
// application/pkixcmp, 200 only for a CMP response; paths /.well-known/cmp,
// /.well-known/cmp/p/<profile> and /pkix/ (OpenSSL's default).  GET <crl_path> serves the
// DER CRL (application/pkix-crl).  Bad requests get a 4xx and a counter
// ("http.reject.<why>") and never reach the CA.  A fixed pool of threads accepts and serves
// connections (one request per connection, `Connection: close`).
#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <vector>
#include <x2sec/cmp/server.hpp>

namespace x2sec::cmp {

struct HttpOptions {
    std::string bind = "127.0.0.1";
    int port = 0;                    // 0: ephemeral, see HttpServer::port()
    int threads = 8;
    size_t max_body = 64 * 1024;     // larger bodies: 413
    int io_timeout_ms = 10000;       // per read/write
    std::string crl_path = "/crl";
    // HTTPS when set
    X509* tls_cert = nullptr;
    EVP_PKEY* tls_key = nullptr;
    std::vector<X509*> tls_chain;
};

class HttpServer {
public:
    HttpServer(Server& server, HttpOptions opts);
    ~HttpServer();
    HttpServer(const HttpServer&) = delete;
    HttpServer& operator=(const HttpServer&) = delete;
    Status start();
    void stop();
    int port() const { return m_port; }
    bool tls() const { return m_ssl_ctx != nullptr; }

private:
    void worker();
    void serve(int fd);
    Server& m_server;
    HttpOptions m_opts;
    int m_listen = -1;
    int m_port = 0;
    std::atomic<bool> m_stop{false};
    std::vector<std::thread> m_threads;
    struct ssl_ctx_st* m_ssl_ctx = nullptr;
};

}  // namespace x2sec::cmp
