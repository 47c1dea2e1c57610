// KDS transport: mutual TLS (TLS 1.3 only) over TCP with OpenSSL's SSL API.  The H(e)NB
// authenticates with its device (or operator) certificate; the KDS maps the certificate's
// subjectAltName dNSName to a configured node (a certificate without a dNSName, or one not
// chaining to the configured client anchors, is refused in the handshake / by the engine).
// One message each way per connection.
#pragma once

#include <atomic>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <x2sec/common/result.hpp>
#include <x2sec/common/time.hpp>
#include <x2sec/kds/protocol.hpp>
#include <x2sec/kds/server.hpp>
#include <x2sec/x509/revocation.hpp>

namespace x2sec::kds {

struct TlsCredentials {
    std::string cert_pem;     // own certificate chain (leaf first), PEM text
    SecureBytes key_pem;      // own private key, PEM text
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
    TlsServer(Server& engine, const Clock& clock);
    ~TlsServer();
    // Binds host:port (port 0 = any free port) and serves on a thread until stop().
    Status start(const std::string& host, uint16_t port, const TlsCredentials& creds);
    void stop();
    // Client certificate revocation (CRLs from the RA/CA, reloaded by the checker); set before
    // start().  Without it only the handshake's chain and validity checks apply.
    void set_revocation(std::shared_ptr<const x509::RevocationChecker> r) { m_revocation = std::move(r); }
    uint16_t port() const { return m_port; }
    size_t connections() const { return m_connections.load(); }

private:
    void run();
    void serve_one(int fd);
    std::optional<ErrorMessage> authorise_client(void* ssl, BytesView request);
    Server& m_engine;
    std::shared_ptr<const x509::RevocationChecker> m_revocation;
    const Clock& m_clock;
    void* m_ctx = nullptr;  // SSL_CTX
    int m_listen = -1;
    uint16_t m_port = 0;
    std::atomic<bool> m_stop{false};
    std::atomic<size_t> m_connections{0};
    std::thread m_thread;
};

// One request over mutual TLS.  `server_name` is checked against the KDS certificate's SAN.
// A KDS Error answer comes back as Error{Kds, code = ErrorCode, text}.
Result<KeyResponse> fetch_key(const std::string& host, uint16_t port, const std::string& server_name,
                              const TlsCredentials& creds, const KeyRequest& req,
                              TransferStats* stats = nullptr, int timeout_ms = 5000);

// The first SAN dNSName of a PEM/X509 certificate ("" if none); exposed for tests.
std::string first_san_dns(const void* x509);

}  // namespace x2sec::kds
