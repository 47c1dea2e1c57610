// CMP over HTTP and HTTPS (RFC 6712 / RFC 9811) for a cmp::Server: POST only, Content-Type
// application/pkixcmp, 200 only for a CMP response; paths /.well-known/cmp,
// /.well-known/cmp/p/<profile> and /pkix/ (OpenSSL's default).  GET <crl_path> serves the
// DER CRL (application/pkix-crl).  Bad requests get a 4xx and a counter
// ("http.reject.<why>") and never reach the CA.  HTTP/1.1 keep-alive: a connection stays open
// after a complete answer unless the client sent `Connection: close` (or spoke HTTP/1.0 without
// `Connection: keep-alive`), for at most `keep_alive_idle_ms` between requests and
// `max_requests_per_connection` requests; refusals (4xx from the framer, 503, 408) always close.
//
// I/O runs on one non-blocking event loop (net::StreamServer): slow or idle clients hold no
// worker; `threads` workers only process complete requests.  Bounded: connections overall and
// per source address (over a limit: 503 on HTTP, a close on HTTPS), the whole request within
// `request_timeout_ms` of the accept, TLS handshake included (else 408), the header block
// (431) and the body (Content-Length required, 411; over `max_body` 413, not read).  Counted
// `cmp.http.rejected.{too_many_connections,per_source,deadline,write_deadline,header_too_large,
// body_too_large,busy}` and `cmp.http.tls.handshake_failed`.
//
// TLS client authentication (HTTPS): `client_auth` None (no certificate requested), Optional
// (requested from the clients; one that is sent must verify against `client_ca`), Require (the
// handshake is refused without a certificate that verifies).  A refused handshake is logged with
// its reason and counted `cmp.http.tls.client_cert_missing` / `cmp.http.tls.client_cert_rejected`
// (beside `cmp.http.tls.handshake_failed`).
//
// reload(): new limits (max_body, max_header, connection limits, timeouts, keep-alive) and a new
// TLS credential / client-CA / client_auth apply to connections accepted (and requests framed)
// from then on; open connections, their TLS sessions and requests in the workers are kept.
#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <vector>
#include <x2sec/cmp/ocsp.hpp>
#include <x2sec/cmp/server.hpp>
#include <x2sec/net/stream_server.hpp>

namespace x2sec::cmp {

struct HttpOptions {
    std::string bind = "127.0.0.1";
    int port = 0;                    // 0: ephemeral, see HttpServer::port()
    int threads = 8;                 // workers processing complete requests
    size_t max_body = 64 * 1024;     // larger bodies: 413
    size_t max_header = 16 * 1024;   // request line + header fields; larger: 431
    int max_connections = 512;       // concurrent connections; more: 503 (HTTP) / closed (HTTPS)
    int max_per_source = 32;         // concurrent connections from one address; more: 503 / closed
    int request_timeout_ms = 10000;  // accept -> complete request, TLS handshake included; then 408
    int write_timeout_ms = 10000;    // response ready -> written
    // HTTP/1.1 persistent connections: idle time allowed between requests (0: one request per
    // connection) and requests per connection (the last answer carries Connection: close).
    int keep_alive_idle_ms = 5000;
    int max_requests_per_connection = 100;
    std::string crl_path = "/crl";
    // OCSP (RFC 6960 appendix A) when set: POST <ocsp_path> (application/ocsp-request) and
    // GET <ocsp_path>/<url-encoded base64 request>; answers application/ocsp-response.
    OcspResponder* ocsp = nullptr;
    std::string ocsp_path = "/ocsp";
    bool serve_cmp = true;  // false: an OCSP (and CRL) listener only; CMP paths are 404
    // HTTPS when set
    X509* tls_cert = nullptr;
    EVP_PKEY* tls_key = nullptr;
    std::vector<X509*> tls_chain;
    // TLS client authentication (HTTPS only)
    enum class ClientAuth { None, Optional, Require };
    ClientAuth client_auth = ClientAuth::None;
    std::vector<X509*> client_ca;  // trust anchors for client certificates (required unless None)
    int verify_depth = 4;          // most intermediates between a client certificate and its anchor
};

// "none" | "optional" | "require"
Result<HttpOptions::ClientAuth> parse_client_auth(std::string_view s);
const char* to_string(HttpOptions::ClientAuth a);

class HttpServer {
public:
    HttpServer(Server& server, HttpOptions opts);
    ~HttpServer();
    HttpServer(const HttpServer&) = delete;
    HttpServer& operator=(const HttpServer&) = delete;
    Status start();
    void stop();
    // Applies the reloadable part of `next` (see above) to new connections and requests; a
    // change that needs a restart (bind, port, threads, paths, OCSP, HTTP <-> HTTPS) or an
    // unusable option refuses the whole reload and changes nothing.
    Status reload(const HttpOptions& next);
    // The checks of reload() without applying anything.
    Status check_reload(const HttpOptions& next) const;
    int port() const { return m_net ? m_net->port() : 0; }
    bool tls() const { return m_ssl_ctx != nullptr; }
    // Connections currently held (all states) and accepted since start.
    size_t open_connections() const { return m_net ? m_net->open_connections() : 0; }
    size_t accepted() const { return m_net ? m_net->accepted() : 0; }
    // The limits the options give (for validation and the event loop).
    static net::Limits limits_of(const HttpOptions& o);
    // The TLS server context the options give (credential, chain, client authentication).
    static Result<struct ssl_ctx_st*> make_ssl_ctx(const HttpOptions& o);

private:
    class Proto;
    Server& m_server;
    HttpOptions m_opts;
    struct ssl_ctx_st* m_ssl_ctx = nullptr;
    std::unique_ptr<Proto> m_proto;
    std::unique_ptr<net::StreamServer> m_net;
};

}  // namespace x2sec::cmp
