#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <ctime>
#include <x2sec/common/log.hpp>
#include <x2sec/kds/tls.hpp>

namespace x2sec::kds {

namespace {

std::string ssl_errors() {
    std::string out;
    unsigned long e;
    char buf[256];
    while ((e = ERR_get_error()) != 0) {
        ERR_error_string_n(e, buf, sizeof buf);
        if (!out.empty()) out += "; ";
        out += buf;
    }
    return out;
}

Error io_error(const std::string& what) {
    std::string ssl = ssl_errors();
    return Error(ErrorDomain::Io, 0, what + (ssl.empty() ? "" : ": " + ssl));
}

struct CtxFree {
    void operator()(SSL_CTX* c) const { SSL_CTX_free(c); }
};
struct SslFree {
    void operator()(SSL* s) const { SSL_free(s); }
};

Status load_credentials(SSL_CTX* ctx, const TlsCredentials& creds) {
    // Certificate chain.
    BIO* b = BIO_new_mem_buf(creds.cert_pem.data(), int(creds.cert_pem.size()));
    X509* leaf = PEM_read_bio_X509(b, nullptr, nullptr, nullptr);
    if (!leaf) {
        BIO_free(b);
        return io_error("TLS: cannot parse own certificate");
    }
    if (SSL_CTX_use_certificate(ctx, leaf) != 1) {
        X509_free(leaf);
        BIO_free(b);
        return io_error("TLS: cannot use own certificate");
    }
    X509_free(leaf);
    while (X509* extra = PEM_read_bio_X509(b, nullptr, nullptr, nullptr)) {
        if (SSL_CTX_add_extra_chain_cert(ctx, extra) != 1) {
            X509_free(extra);
            BIO_free(b);
            return io_error("TLS: cannot add chain certificate");
        }
    }
    ERR_clear_error();
    BIO_free(b);
    // Private key.
    BIO* kb = BIO_new_mem_buf(creds.key_pem.data(), int(creds.key_pem.size()));
    EVP_PKEY* pkey = PEM_read_bio_PrivateKey(kb, nullptr, nullptr, nullptr);
    BIO_free(kb);
    if (!pkey) return io_error("TLS: cannot parse own private key");
    int ok = SSL_CTX_use_PrivateKey(ctx, pkey);
    EVP_PKEY_free(pkey);
    if (ok != 1 || SSL_CTX_check_private_key(ctx) != 1) return io_error("TLS: private key does not match certificate");
    // Anchors.
    X509_STORE* store = SSL_CTX_get_cert_store(ctx);
    BIO* ab = BIO_new_mem_buf(creds.anchors_pem.data(), int(creds.anchors_pem.size()));
    int n = 0;
    while (X509* a = PEM_read_bio_X509(ab, nullptr, nullptr, nullptr)) {
        X509_STORE_add_cert(store, a);
        X509_free(a);
        ++n;
    }
    ERR_clear_error();
    BIO_free(ab);
    if (n == 0) return Error(ErrorDomain::Io, 0, "TLS: no trust anchors given");
    return {};
}

// The KDS lets a client certificate outside its validity period through the handshake (and
// only that: every other verification error still fails it), so that authorise_client can
// answer with a KDS CERTIFICATE_EXPIRED error and count it instead of a bare TLS alert.
int server_verify_cb(int preverify_ok, X509_STORE_CTX* ctx) {
    if (preverify_ok == 1) return 1;
    const int err = X509_STORE_CTX_get_error(ctx);
    return err == X509_V_ERR_CERT_HAS_EXPIRED || err == X509_V_ERR_CERT_NOT_YET_VALID ? 1 : 0;
}

Result<std::unique_ptr<SSL_CTX, CtxFree>> make_ctx(bool server, const TlsCredentials& creds) {
    std::unique_ptr<SSL_CTX, CtxFree> ctx(SSL_CTX_new(server ? TLS_server_method() : TLS_client_method()));
    if (!ctx) return io_error("TLS: SSL_CTX_new");
    SSL_CTX_set_min_proto_version(ctx.get(), TLS1_3_VERSION);
    X2SEC_TRY_STATUS(load_credentials(ctx.get(), creds));
    SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_PEER | (server ? SSL_VERIFY_FAIL_IF_NO_PEER_CERT : 0),
                       server ? server_verify_cb : nullptr);
    if (server) SSL_CTX_set_num_tickets(ctx.get(), 0);  // no resumption: every client authenticates
    return ctx;
}

void set_timeouts(int fd, int ms) {
    timeval tv{ms / 1000, (ms % 1000) * 1000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

// Reads exactly one framed KDS message from a TLS connection.
Result<SecureBytes> read_message(SSL* ssl) {
    SecureBytes buf(kHeaderSize);
    size_t have = 0;
    while (have < kHeaderSize) {
        int r = SSL_read(ssl, buf.data() + have, int(kHeaderSize - have));
        if (r <= 0) return io_error("TLS read (header)");
        have += size_t(r);
    }
    X2SEC_TRY(size_t total, frame_size(buf.view()));
    buf.resize(total);
    while (have < total) {
        int r = SSL_read(ssl, buf.data() + have, int(total - have));
        if (r <= 0) return io_error("TLS read (body)");
        have += size_t(r);
    }
    return buf;
}

Status write_all(SSL* ssl, BytesView data) {
    size_t off = 0;
    while (off < data.size()) {
        int w = SSL_write(ssl, data.data() + off, int(data.size() - off));
        if (w <= 0) return io_error("TLS write");
        off += size_t(w);
    }
    return {};
}

// Round-trip counting: a read that returns data right after a write completes one round trip.
struct RttCounter {
    bool last_was_write = false;
    size_t round_trips = 0;
};
long rtt_callback(BIO* b, int oper, const char*, size_t, int, long, int ret, size_t* processed) {
    auto* c = reinterpret_cast<RttCounter*>(BIO_get_callback_arg(b));
    if (!c) return ret;
    if (oper == (BIO_CB_WRITE | BIO_CB_RETURN) && ret > 0) c->last_was_write = true;
    if (oper == (BIO_CB_READ | BIO_CB_RETURN) && ret > 0 && processed && *processed > 0) {
        if (c->last_was_write) ++c->round_trips;
        c->last_was_write = false;
    }
    return ret;
}

}  // namespace

std::string first_san_dns(const void* xv) {
    auto* x = static_cast<X509*>(const_cast<void*>(xv));
    auto* names = static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(x, NID_subject_alt_name, nullptr, nullptr));
    std::string out;
    if (!names) return out;
    for (int i = 0; i < sk_GENERAL_NAME_num(names); ++i) {
        GENERAL_NAME* g = sk_GENERAL_NAME_value(names, i);
        if (g->type == GEN_DNS) {
            auto* s = g->d.dNSName;
            out.assign(reinterpret_cast<const char*>(ASN1_STRING_get0_data(s)), size_t(ASN1_STRING_length(s)));
            break;
        }
    }
    GENERAL_NAMES_free(names);
    return out;
}

TlsServer::TlsServer(Server& engine, const Clock& clock) : m_engine(engine), m_clock(clock) {}

TlsServer::~TlsServer() { stop(); }

Status TlsServer::start(const std::string& host, uint16_t port, const TlsCredentials& creds) {
    X2SEC_TRY(auto ctx, make_ctx(true, creds));
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(port);
    if (inet_pton(AF_INET, host.c_str(), &sa.sin_addr) != 1)
        return Error(ErrorDomain::Config, 0, "KDS listen address '" + host + "' is not an IPv4 address");
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return Error(ErrorDomain::Io, errno, std::string("socket: ") + strerror(errno));
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (::bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0 || ::listen(fd, 16) != 0) {
        int e = errno;
        ::close(fd);
        return Error(ErrorDomain::Io, e, "KDS bind " + host + ":" + std::to_string(port) + ": " + strerror(e));
    }
    socklen_t len = sizeof sa;
    getsockname(fd, reinterpret_cast<sockaddr*>(&sa), &len);
    m_port = ntohs(sa.sin_port);
    m_listen = fd;
    m_ctx = ctx.release();
    m_stop = false;
    m_thread = std::thread([this] { run(); });
    log::get("kds")->info("KDS listening on {}:{} (mutual TLS 1.3)", host, m_port);
    return {};
}

void TlsServer::stop() {
    m_stop = true;
    if (m_thread.joinable()) m_thread.join();
    if (m_listen >= 0) ::close(m_listen);
    m_listen = -1;
    if (m_ctx) SSL_CTX_free(static_cast<SSL_CTX*>(m_ctx));
    m_ctx = nullptr;
}

void TlsServer::run() {
    while (!m_stop) {
        pollfd p{m_listen, POLLIN, 0};
        int r = ::poll(&p, 1, 100);
        if (r <= 0) continue;
        int fd = ::accept4(m_listen, nullptr, nullptr, SOCK_CLOEXEC);
        if (fd < 0) continue;
        ++m_connections;
        serve_one(fd);
        ::close(fd);
    }
}

void TlsServer::serve_one(int fd) {
    set_timeouts(fd, 3000);
    std::unique_ptr<SSL, SslFree> ssl(SSL_new(static_cast<SSL_CTX*>(m_ctx)));
    SSL_set_fd(ssl.get(), fd);
    auto logger = log::get("kds");
    if (SSL_accept(ssl.get()) != 1) {
        long v = SSL_get_verify_result(ssl.get());
        logger->warn("TLS handshake refused: {} ({})", ssl_errors(),
                     v == X509_V_OK ? "no verify error" : X509_verify_cert_error_string(v));
        m_engine.count("kds.tls.handshake_failed");
        return;
    }
    X509* peer = SSL_get1_peer_certificate(ssl.get());
    std::string identity = peer ? first_san_dns(peer) : "";
    if (peer) X509_free(peer);
    auto req = read_message(ssl.get());
    if (!req.ok()) {
        logger->warn("KDS: reading request failed: {}", req.error().detail());
        return;
    }
    if (auto refused = authorise_client(ssl.get(), req->view())) {
        (void)write_all(ssl.get(), encode(*refused).view());
        SSL_shutdown(ssl.get());
        return;
    }
    if (identity.empty()) identity = "(certificate without dNSName)";
    SecureBytes resp = m_engine.handle(identity, req->view(), m_clock.now());
    (void)write_all(ssl.get(), resp.view());
    SSL_shutdown(ssl.get());
}

// Before the engine sees a request: the client certificate must be within its validity and
// not revoked (CRL from the RA/CA, files or URLs, through the revocation checker).  A refusal
// is a KDS Error naming the reason, counted kds.auth.rejected.<reason>.
std::optional<ErrorMessage> TlsServer::authorise_client(void* sslv, BytesView request) {
    SSL* ssl = static_cast<SSL*>(sslv);
    uint32_t request_id = 0;
    if (auto m = decode(request); m.ok())
        if (auto* r = std::get_if<KeyRequest>(&*m)) request_id = r->request_id;
    X509* leaf = SSL_get0_peer_certificate(ssl);
    std::string who = leaf ? "client certificate '" + first_san_dns(leaf) + "'" : "client certificate";
    if (leaf) {
        X509_up_ref(leaf);
        who += " (serial " + x509::Certificate::adopt(leaf).serial_hex() + ")";
    }
    auto refuse = [&](ErrorCode code, const char* counter, const std::string& text) {
        m_engine.count(counter);
        log::get("kds")->warn("KDS: refused {}: {}", who, text);
        return ErrorMessage{request_id, code, text};
    };
    const long v = SSL_get_verify_result(ssl);
    if (v == X509_V_ERR_CERT_HAS_EXPIRED || v == X509_V_ERR_CERT_NOT_YET_VALID)
        return refuse(ErrorCode::CertificateExpired, "kds.auth.rejected.expired",
                      who + ": " + X509_verify_cert_error_string(v));
    if (v != X509_V_OK)
        return refuse(ErrorCode::UnknownClient, "kds.auth.rejected.untrusted",
                      who + ": " + X509_verify_cert_error_string(v));
    if (!m_revocation) return std::nullopt;
    std::vector<x509::Certificate> chain;
    STACK_OF(X509)* sk = SSL_get0_verified_chain(ssl);
    for (int i = 0; sk != nullptr && i < sk_X509_num(sk); ++i) {
        X509* x = sk_X509_value(sk, i);
        X509_up_ref(x);
        chain.push_back(x509::Certificate::adopt(x));
    }
    if (chain.empty())
        return refuse(ErrorCode::UnknownClient, "kds.auth.rejected.untrusted", who + ": no verified chain");
    x509::RevocationChecker::Verdict verdict{};
    auto st = m_revocation->check(chain, static_cast<int64_t>(::time(nullptr)), &verdict);
    if (st.ok()) return std::nullopt;
    switch (verdict) {
        case x509::RevocationChecker::Verdict::Revoked:
            return refuse(ErrorCode::CertificateRevoked, "kds.auth.rejected.revoked", st.error().detail());
        case x509::RevocationChecker::Verdict::Stale:
            return refuse(ErrorCode::RevocationUnavailable, "kds.auth.rejected.crl_stale", st.error().detail());
        default:
            return refuse(ErrorCode::RevocationUnavailable, "kds.auth.rejected.crl_unavailable", st.error().detail());
    }
}

Result<KeyResponse> fetch_key(const std::string& host, uint16_t port, const std::string& server_name,
                              const TlsCredentials& creds, const KeyRequest& req, TransferStats* stats,
                              int timeout_ms) {
    X2SEC_TRY(auto ctx, make_ctx(false, creds));
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(port);
    if (inet_pton(AF_INET, host.c_str(), &sa.sin_addr) != 1)
        return Error(ErrorDomain::Config, 0, "KDS address '" + host + "' is not an IPv4 address");
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return Error(ErrorDomain::Io, errno, std::string("socket: ") + strerror(errno));
    set_timeouts(fd, timeout_ms);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) {
        int e = errno;
        ::close(fd);
        return Error(ErrorDomain::Io, e,
                     "KDS " + host + ":" + std::to_string(port) + " unreachable: " + strerror(e));
    }
    std::unique_ptr<SSL, SslFree> ssl(SSL_new(ctx.get()));
    BIO* bio = BIO_new_socket(fd, BIO_CLOSE);
    RttCounter rtt;
    BIO_set_callback_ex(bio, rtt_callback);
    BIO_set_callback_arg(bio, reinterpret_cast<char*>(&rtt));
    SSL_set_bio(ssl.get(), bio, bio);
    SSL_set1_host(ssl.get(), server_name.c_str());
    SSL_set_tlsext_host_name(ssl.get(), server_name.c_str());
    auto finish_stats = [&] {
        if (stats) {
            stats->bytes_sent += BIO_number_written(bio);
            stats->bytes_received += BIO_number_read(bio);
            stats->round_trips += rtt.round_trips + 1;  // +1: the TCP handshake
        }
    };
    if (SSL_connect(ssl.get()) != 1) {
        long v = SSL_get_verify_result(ssl.get());
        std::string why = ssl_errors();
        if (v != X509_V_OK) why += std::string(" (server certificate: ") + X509_verify_cert_error_string(v) + ")";
        finish_stats();
        return Error(ErrorDomain::Io, 0, "KDS TLS handshake failed: " + why);
    }
    SecureBytes out = encode(req);
    X2SEC_TRY_STATUS(write_all(ssl.get(), out.view()));
    auto in = read_message(ssl.get());
    SSL_shutdown(ssl.get());
    finish_stats();
    if (stats) stats->messages += in.ok() ? 2 : 1;
    if (!in.ok()) return std::move(in).error().context("KDS response");
    X2SEC_TRY(Message m, decode(in->view()));
    if (auto* e = std::get_if<ErrorMessage>(&m))
        return Error(ErrorDomain::Kds, int(e->code), std::string(to_string(e->code)) + ": " + e->text);
    auto* r = std::get_if<KeyResponse>(&m);
    if (!r) return Error(ErrorDomain::Kds, int(ErrorCode::Malformed), "KDS answered with a request");
    if (r->request_id != req.request_id) return Error(ErrorDomain::Kds, int(ErrorCode::Malformed), "KDS answered another request id");
    return std::move(*r);
}

}  // namespace x2sec::kds
