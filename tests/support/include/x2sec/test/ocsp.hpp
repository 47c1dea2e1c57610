// OCSP fixtures for tests (RFC 6960):
//  * OpensslOcspResponder: `openssl ocsp -port` on 127.0.0.1 answering for one CA from an index
//    (serial -> good / revoked), signing with a responder certificate; on a port below the
//    ephemeral range (ports.hpp), moved to another port when the one picked was taken before
//    the responder bound it.  Mint the certificates that name url() after start().
//  * make_ocsp_response: a DER OCSPResponse about one certificate, signed in-process with
//    OpenSSL's OCSP API.
#pragma once

#include <openssl/types.h>
#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>
#include <x2sec/common/bytes.hpp>

namespace x2sec::test {

class OpensslOcspResponder {
public:
    // A revoked entry is revoked at 2024-01-01T00:00:00Z (1704067200), reason keyCompromise.
    struct Entry {
        std::string serial_hex;  // upper case, even length ("1001", "5E01")
        std::string subject;     // "/CN=good.example"
        bool revoked = false;
    };

    // Writes the CA certificate, the signer's certificate and key (0600) and the index into a
    // fresh directory below /tmp; throws std::runtime_error when it cannot.
    OpensslOcspResponder(const std::string& ca_pem, const std::string& signer_pem, BytesView signer_key_pem,
                         const std::vector<Entry>& index);
    ~OpensslOcspResponder();  // stops it and removes the directory
    OpensslOcspResponder(const OpensslOcspResponder&) = delete;
    OpensslOcspResponder& operator=(const OpensslOcspResponder&) = delete;

    static bool available();  // the openssl CLI is installed

    // Starts it (answers valid for 10 minutes: -nmin 10) and waits until it listens; "" on
    // success, else what went wrong (its log).  `slot` as for free_tcp_port().
    std::string start(unsigned slot = 0);
    void stop();  // SIGTERM and wait; the port stays reserved for url()
    bool running() const { return m_pid > 0; }

    uint16_t port() const { return m_port; }
    std::string url() const;  // "http://127.0.0.1:<port>/"
    const std::string& dir() const { return m_dir; }

private:
    bool start_on(uint16_t port, std::string& why);
    std::string m_dir;
    uint16_t m_port = 0;
    pid_t m_pid = -1;
};

// A DER OCSPResponse (successful, BasicOCSPResponse) about `cert` issued by `issuer` with
// status V_OCSP_CERTSTATUS_* (revoked: at revoked_at, keyCompromise), signed by
// signer_cert/signer_key (included in the response).  Empty on an OpenSSL failure.
Bytes make_ocsp_response(X509* cert, X509* issuer, int status, X509* signer_cert, EVP_PKEY* signer_key,
                         int64_t this_update, int64_t next_update, int64_t revoked_at);

}  // namespace x2sec::test
