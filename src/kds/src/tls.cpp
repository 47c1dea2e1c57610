#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <pthread.h>
#include <csignal>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <x2sec/common/log.hpp>
#include <x2sec/common/metrics.hpp>
#include <x2sec/crypto/crypto.hpp>
#include <x2sec/kds/tls.hpp>
#include <x2sec/net/stream_server.hpp>

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
    // PEM, or a pkcs11: URI naming a key in a token.
    auto pkey = crypto::PrivateKey::from_pem(
        BytesView(reinterpret_cast<const uint8_t*>(creds.key_pem.data()), creds.key_pem.size()));
    if (!pkey) return Error(ErrorDomain::Io, 0, "TLS: cannot load own private key: " + pkey.error().detail());
    int ok = SSL_CTX_use_PrivateKey(ctx, pkey->get());
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

// Blocks SIGPIPE on this thread while a client connection is used: OpenSSL writes with
// write(2), and a KDS that closes the connection (a refused connection, a deadline) must be an
// error, not the end of the calling process.  A SIGPIPE raised meanwhile is consumed.
class SigpipeBlock {
public:
    SigpipeBlock() {
        sigemptyset(&m_set);
        sigaddset(&m_set, SIGPIPE);
        sigset_t pending;
        sigpending(&pending);
        m_was_pending = sigismember(&pending, SIGPIPE) == 1;
        pthread_sigmask(SIG_BLOCK, &m_set, &m_old);
    }
    ~SigpipeBlock() {
        if (!m_was_pending) {
            sigset_t pending;
            sigpending(&pending);
            if (sigismember(&pending, SIGPIPE) == 1) {
                timespec zero{0, 0};
                while (sigtimedwait(&m_set, nullptr, &zero) == -1 && errno == EINTR) {
                }
            }
        }
        pthread_sigmask(SIG_SETMASK, &m_old, nullptr);
    }
    SigpipeBlock(const SigpipeBlock&) = delete;
    SigpipeBlock& operator=(const SigpipeBlock&) = delete;

private:
    sigset_t m_set, m_old;
    bool m_was_pending = false;
};

// Round-trip counting: a read that returns data right after a write completes one round trip.
struct RttCounter {
    bool last_was_write = false;
    size_t round_trips = 0;
};
// NOLINTNEXTLINE(readability-non-const-parameter): the signature of OpenSSL's BIO_callback_fn_ex
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

std::string first_san_dns(const void* x509) {
    auto* x = static_cast<X509*>(const_cast<void*>(x509));
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

Status validate(const TransportLimits& l) {
    if (l.max_frame < kHeaderSize || l.max_frame > kHeaderSize + kMaxBody)
        return Error(
            ErrorDomain::Config, 0,
            "max_frame must be " + std::to_string(kHeaderSize) + ".." + std::to_string(kHeaderSize + kMaxBody));
    net::Limits n;
    n.max_connections = l.max_connections;
    n.max_per_source = l.max_per_source;
    n.request_deadline_ms = l.request_timeout_ms;
    n.write_deadline_ms = l.write_timeout_ms;
    n.workers = l.workers;
    return net::validate(n);
}

// KDS framing on the event loop: one request frame per connection.
class TlsServer::Proto final : public net::Protocol {
public:
    Proto(TlsServer& owner) : m_owner(owner) {}
    net::Frame frame(BytesView in, net::FrameState& st, bool eof) override {
        net::Frame f;
        if (!st.need) {
            if (in.size() < kHeaderSize) {
                if (eof) {
                    f.kind = net::Frame::Reject;
                    if (!in.empty()) f.counter = "kds.rx.truncated";
                }
                return f;
            }
            auto total = frame_size(in.first(kHeaderSize));
            if (!total.ok() || *total > m_owner.m_limits.max_frame) {
                auto code = total.ok() ? ErrorCode::Malformed : static_cast<ErrorCode>(total.error().code());
                bool too_large = code == ErrorCode::Malformed;
                std::string why = total.ok()
                                      ? "request frame of " + std::to_string(*total) + " octets exceeds max_frame " +
                                            std::to_string(m_owner.m_limits.max_frame)
                                      : total.error().detail();
                f.kind = net::Frame::Reject;
                f.counter = too_large ? "kds.rejected.frame_too_large" : "kds.rx.malformed";
                f.why = why;
                SecureBytes e = encode(ErrorMessage{0, code, why});
                f.reply.assign(e.data(), e.data() + e.size());
                return f;
            }
            st.need = *total;
        }
        if (in.size() >= st.need) {
            f.kind = net::Frame::Complete;
            f.size = st.need;
        } else if (eof) {
            f.kind = net::Frame::Reject;
            f.counter = "kds.rx.truncated";
        }
        return f;
    }
    SecureBytes handle(net::Request req) override {
        auto t0 = std::chrono::steady_clock::now();
        SecureBytes r = m_owner.serve_one(req);
        metrics::registry().observe("kds.request_seconds",
                                    std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
        return r;
    }
    std::string handshake_failed(SSL* ssl) override {
        long v = SSL_get_verify_result(ssl);
        return "TLS handshake refused: " + ssl_errors() + " (" +
               (v == X509_V_OK ? "no verify error" : X509_verify_cert_error_string(v)) + ")";
    }

private:
    TlsServer& m_owner;
};

TlsServer::TlsServer(Server& engine, const Clock& clock, TransportLimits limits)
    : m_engine(engine), m_clock(clock), m_limits(limits) {}

TlsServer::~TlsServer() {
    stop();
}

size_t TlsServer::connections() const {
    return m_net ? m_net->accepted() : 0;
}
size_t TlsServer::open_connections() const {
    return m_net ? m_net->open_connections() : 0;
}

Status TlsServer::start(const std::string& host, uint16_t port, const TlsCredentials& creds) {
    X2SEC_TRY_STATUS(validate(m_limits));
    X2SEC_TRY(auto ctx, make_ctx(true, creds));
    in_addr probe{};
    if (inet_pton(AF_INET, host.c_str(), &probe) != 1)
        return Error(ErrorDomain::Config, 0, "KDS listen address '" + host + "' is not an IPv4 address");
    net::ServerOptions so;
    so.bind = host;
    so.port = port;
    so.limits.max_connections = m_limits.max_connections;
    so.limits.max_per_source = m_limits.max_per_source;
    so.limits.request_deadline_ms = m_limits.request_timeout_ms;
    so.limits.write_deadline_ms = m_limits.write_timeout_ms;
    so.limits.workers = m_limits.workers;
    so.limits.max_request = m_limits.max_frame;
    so.tls = ctx.get();
    so.counter_prefix = "kds";
    so.log_module = "kds";
    so.name = "KDS";
    m_proto = std::make_unique<Proto>(*this);
    m_net = std::make_unique<net::StreamServer>(*m_proto, so, [this](std::string_view n) { m_engine.count(n); });
    if (auto st = m_net->start(); !st.ok()) {
        m_net.reset();
        return Error(ErrorDomain::Io, st.error().code(), "KDS: " + st.error().detail());
    }
    m_port = static_cast<uint16_t>(m_net->port());
    m_ctx = ctx.release();
    log::get("kds")->info("KDS listening on {}:{} (mutual TLS 1.3; max {} connections, {} per source, deadline {} ms)",
                          host, m_port, m_limits.max_connections, m_limits.max_per_source, m_limits.request_timeout_ms);
    return {};
}

void TlsServer::stop() {
    if (m_net) m_net->stop();
    m_net.reset();
    if (m_ctx) SSL_CTX_free(static_cast<SSL_CTX*>(m_ctx));
    m_ctx = nullptr;
}

SecureBytes TlsServer::serve_one(const net::Request& req) {
    if (auto refused = authorise_client(req)) return encode(*refused);
    std::string identity = req.peer_cert ? first_san_dns(req.peer_cert.get()) : "";
    if (identity.empty()) identity = "(certificate without dNSName)";
    return m_engine.handle(identity, req.data, m_clock.now());
}

// Before the engine sees a request: the client certificate must be within its validity and
// not revoked (CRL from the RA/CA, files or URLs, through the revocation checker).  A refusal
// is a KDS Error naming the reason, counted kds.auth.rejected.<reason>.
std::optional<ErrorMessage> TlsServer::authorise_client(const net::Request& req) {
    uint32_t request_id = 0;
    if (auto m = decode(req.data); m.ok())
        if (auto* r = std::get_if<KeyRequest>(&*m)) request_id = r->request_id;
    X509* leaf = req.peer_cert.get();
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
    const long v = req.verify_result;
    if (v == X509_V_ERR_CERT_HAS_EXPIRED || v == X509_V_ERR_CERT_NOT_YET_VALID)
        return refuse(ErrorCode::CertificateExpired, "kds.auth.rejected.expired",
                      who + ": " + X509_verify_cert_error_string(v));
    if (v != X509_V_OK)
        return refuse(ErrorCode::UnknownClient, "kds.auth.rejected.untrusted",
                      who + ": " + X509_verify_cert_error_string(v));
    if (!m_revocation) return std::nullopt;
    std::vector<x509::Certificate> chain;
    for (const auto& x : req.peer_chain) {
        X509_up_ref(x.get());
        chain.push_back(x509::Certificate::adopt(x.get()));
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
    SigpipeBlock no_sigpipe;
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
        return Error(ErrorDomain::Io, e, "KDS " + host + ":" + std::to_string(port) + " unreachable: " + strerror(e));
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
    if (r->request_id != req.request_id)
        return Error(ErrorDomain::Kds, int(ErrorCode::Malformed), "KDS answered another request id");
    return std::move(*r);
}

}  // namespace x2sec::kds
