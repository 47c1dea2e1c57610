// KDS transport: mutual TLS (TLS 1.3 only) over TCP with OpenSSL's SSL API.  The H(e)NB
// authenticates with its device (or operator) certificate; the KDS maps the certificate's
// subjectAltName dNSName to a configured node (a certificate without a dNSName, or one not
// chaining to the configured client anchors, is refused in the handshake / by the engine).
// One message each way per connection.
//
// The server runs on a non-blocking event loop (net::StreamServer: epoll, non-blocking TLS
// handshakes and records), so slow or idle clients cannot stall the others: connections are
// limited overall and per source address (more are closed at once), a connection must complete
// the TLS handshake and its whole request within `request_timeout_ms` of the accept (a total
// deadline that trickled bytes do not extend), and a request frame over `max_frame` octets is
// answered with a MALFORMED Error and closed.  Counted `kds.rejected.{too_many_connections,
// per_source,deadline,write_deadline,frame_too_large}` and `kds.tls.handshake_failed`.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <x2sec/common/result.hpp>
#include <x2sec/common/time.hpp>
#include <x2sec/kds/protocol.hpp>
#include <x2sec/kds/server.hpp>
#include <x2sec/x509/revocation.hpp>

namespace x2sec::net {
class StreamServer;
struct Request;
}  // namespace x2sec::net

namespace x2sec::kds {

// Connection-layer limits of the TLS server ([kds.limits] in kds.toml).
struct TransportLimits {
    int max_connections = 256;                  // concurrent connections
    int max_per_source = 16;                    // concurrent connections from one address
    int request_timeout_ms = 5000;              // accept -> TLS handshake + complete request
    int write_timeout_ms = 5000;                // response ready -> written
    size_t max_frame = kHeaderSize + kMaxBody;  // largest request frame
    int workers = 2;                            // threads running the engine on complete requests
};
Status validate(const TransportLimits& l);

struct TlsCredentials {
    std::string cert_pem;     // own certificate chain (leaf first), PEM text
    SecureBytes key_pem;      // own private key, PEM text or a pkcs11: URI
    std::string anchors_pem;  // trust anchors for the other side, PEM text (one or more)
};

// Counts of traffic for the demo's measurement table.
struct TransferStats {
    size_t bytes_sent = 0, bytes_received = 0;  // TCP payload incl. TLS records
    size_t messages = 0;                        // KDS messages (request + response)
    size_t round_trips = 0;                     // TCP handshake + TLS + request/response
};

class TlsServer {
public:
    TlsServer(Server& engine, const Clock& clock, TransportLimits limits = {});
    ~TlsServer();
    // Binds host:port (port 0 = any free port) and serves on a thread until stop().
    Status start(const std::string& host, uint16_t port, const TlsCredentials& creds);
    void stop();
    // Client certificate revocation (CRLs from the RA/CA, reloaded by the checker); set before
    // start().  Without it only the handshake's chain and validity checks apply.
    void set_revocation(std::shared_ptr<const x509::RevocationChecker> r) { m_revocation = std::move(r); }
    uint16_t port() const { return m_port; }
    size_t connections() const;       // accepted since start
    size_t open_connections() const;  // held now

private:
    class Proto;
    // On a worker thread: the answer to one complete request on a connection whose TLS handshake
    // completed (the request carries the client certificate, the verification result and chain).
    SecureBytes serve_one(const net::Request& req);
    // The client certificate must be within its validity and not revoked; nullopt when it may proceed.
    std::optional<ErrorMessage> authorise_client(const net::Request& req);
    Server& m_engine;
    std::shared_ptr<const x509::RevocationChecker> m_revocation;
    const Clock& m_clock;
    TransportLimits m_limits;
    void* m_ctx = nullptr;  // SSL_CTX
    uint16_t m_port = 0;
    std::unique_ptr<Proto> m_proto;
    std::unique_ptr<net::StreamServer> m_net;
};

// One request over mutual TLS.  `server_name` is checked against the KDS certificate's SAN.
// A KDS Error answer comes back as Error{Kds, code = ErrorCode, text}.
Result<KeyResponse> fetch_key(const std::string& host, uint16_t port, const std::string& server_name,
                              const TlsCredentials& creds, const KeyRequest& req, TransferStats* stats = nullptr,
                              int timeout_ms = 5000);

// The first SAN dNSName of a PEM/X509 certificate ("" if none); exposed for tests.
std::string first_san_dns(const void* x509);

}  // namespace x2sec::kds
