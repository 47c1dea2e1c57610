#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <chrono>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <optional>
#include <variant>
#include <x2sec/cmp/http.hpp>
#include <x2sec/common/log.hpp>
#include <x2sec/common/metrics.hpp>

namespace x2sec::cmp {
namespace {

std::string lower(std::string s) {
    for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return s;
}
std::string trim(std::string s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.erase(s.begin());
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) s.pop_back();
    return s;
}

// The certificate profile a CMP path selects: "" for /.well-known/cmp and /pkix/, <name> for
// /.well-known/cmp/p/<name>; nullopt for anything else (404).
std::optional<std::string> cmp_profile(const std::string& target) {
    std::string path = target.substr(0, target.find('?'));
    if (path == "/.well-known/cmp" || path == "/.well-known/cmp/" || path == "/pkix/" || path == "/pkix") return "";
    const std::string pfx = "/.well-known/cmp/p/";
    if (path.rfind(pfx, 0) == 0) {
        std::string prof = path.substr(pfx.size());
        if (!prof.empty() && prof.back() == '/') prof.pop_back();
        if (prof.empty() || prof.size() > 64) return std::nullopt;
        for (char c : prof)
            if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.')) return std::nullopt;
        return prof;
    }
    return std::nullopt;
}

const char* reason_phrase(int code) {
    switch (code) {
        case 200:
            return "OK";
        case 400:
            return "Bad Request";
        case 404:
            return "Not Found";
        case 405:
            return "Method Not Allowed";
        case 408:
            return "Request Timeout";
        case 411:
            return "Length Required";
        case 413:
            return "Payload Too Large";
        case 415:
            return "Unsupported Media Type";
        case 431:
            return "Request Header Fields Too Large";
        case 500:
            return "Internal Server Error";
        case 501:
            return "Not Implemented";
        default:
            return "Error";
    }
}

Bytes response(int code, std::string_view ctype, BytesView body, bool retry_after = false,
               std::string_view allow = "POST", bool keep_alive = false) {
    std::string h = "HTTP/1.1 " + std::to_string(code) + " " + reason_phrase(code) + "\r\n";
    if (code == 405) h += "Allow: " + std::string(allow) + "\r\n";
    if (retry_after) h += "Retry-After: 1\r\n";
    h += "Content-Type: " + std::string(ctype) + "\r\nContent-Length: " + std::to_string(body.size()) +
         "\r\nCache-Control: no-cache\r\nConnection: " + (keep_alive ? "keep-alive" : "close") + "\r\n\r\n";
    Bytes out(h.begin(), h.end());
    out.insert(out.end(), body.begin(), body.end());
    return out;
}
Bytes text_response(int code, const std::string& msg, bool retry_after = false) {
    std::string b = msg + "\n";
    return response(code, "text/plain", as_bytes(b), retry_after);
}

// The request line and header fields (without the final empty line).
struct Head {
    std::string method, target, path, ctype;
    long long clen = -1;
    bool chunked = false;
    bool keep_alive = false;  // HTTP/1.1 without "Connection: close", or HTTP/1.0 with "keep-alive"
};
struct HeadError {
    int code;
    std::string msg;
    const char* counter;
};

std::variant<Head, HeadError> parse_head(const std::string& head) {
    Head h;
    auto eol = head.find("\r\n");
    std::string line = head.substr(0, eol);
    auto sp1 = line.find(' '), sp2 = line.rfind(' ');
    if (sp1 == std::string::npos || sp2 == sp1)
        return HeadError{400, "malformed request line", "http.reject.bad_request"};
    h.method = line.substr(0, sp1);
    h.target = line.substr(sp1 + 1, sp2 - sp1 - 1);
    std::string version = line.substr(sp2 + 1);
    if (version != "HTTP/1.1" && version != "HTTP/1.0")
        return HeadError{400, "unsupported HTTP version", "http.reject.bad_request"};
    bool close = false, keep = false;
    size_t pos = eol == std::string::npos ? head.size() : eol + 2;
    while (pos < head.size()) {
        auto e = head.find("\r\n", pos);
        if (e == std::string::npos) e = head.size();
        std::string f = head.substr(pos, e - pos);
        pos = e + 2;
        auto colon = f.find(':');
        if (colon == std::string::npos) return HeadError{400, "malformed header line", "http.reject.bad_request"};
        std::string name = lower(trim(f.substr(0, colon))), value = trim(f.substr(colon + 1));
        if (name == "content-type")
            h.ctype = lower(value);
        else if (name == "content-length") {
            char* endp = nullptr;
            errno = 0;
            long long v = std::strtoll(value.c_str(), &endp, 10);
            if (value.empty() || *endp || errno || v < 0 || (h.clen >= 0 && h.clen != v))
                return HeadError{400, "bad Content-Length", "http.reject.bad_request"};
            h.clen = v;
        } else if (name == "transfer-encoding" && lower(value) != "identity") {
            h.chunked = true;
        } else if (name == "connection") {  // a list of tokens (RFC 9110 7.6.1)
            std::string v = lower(value);
            for (size_t b = 0; b <= v.size();) {
                size_t e2 = v.find(',', b);
                if (e2 == std::string::npos) e2 = v.size();
                std::string tok = trim(v.substr(b, e2 - b));
                if (tok == "close")
                    close = true;
                else if (tok == "keep-alive")
                    keep = true;
                b = e2 + 1;
            }
        }
    }
    h.keep_alive = !close && (version == "HTTP/1.1" || keep);
    h.path = h.target.substr(0, h.target.find('?'));
    return h;
}

// RFC 6960 A.1: GET {url}/{url-encoding of base-64 encoding of the DER OCSPRequest}.  Empty
// when the text is not that (the responder then answers malformedRequest).
Bytes ocsp_get_request(std::string_view enc) {
    std::string b64;
    for (size_t i = 0; i < enc.size(); ++i) {
        if (enc[i] == '%') {
            if (i + 2 >= enc.size() || !std::isxdigit(static_cast<unsigned char>(enc[i + 1])) ||
                !std::isxdigit(static_cast<unsigned char>(enc[i + 2])))
                return {};
            b64 += static_cast<char>(std::stoi(std::string(enc.substr(i + 1, 2)), nullptr, 16));
            i += 2;
        } else {
            b64 += enc[i];
        }
    }
    if (b64.empty() || b64.size() % 4 != 0) return {};
    Bytes out(b64.size() / 4 * 3);
    int n =
        EVP_DecodeBlock(out.data(), reinterpret_cast<const unsigned char*>(b64.data()), static_cast<int>(b64.size()));
    if (n < 0) return {};
    size_t pad = 0;
    while (pad < 2 && b64[b64.size() - 1 - pad] == '=') ++pad;
    out.resize(static_cast<size_t>(n) - pad);
    return out;
}

}  // namespace

// The HTTP framing and request handling behind the event loop.
class HttpServer::Proto final : public net::Protocol {
public:
    Proto(Server& server, const HttpOptions& o, bool tls) : m_server(server), m_opts(o), m_tls(tls) {}

    // On the event-loop thread (frame() and refusal() run there): the limits they read.
    void set_limits(const HttpOptions& o) {
        m_opts.max_body = o.max_body;
        m_opts.max_header = o.max_header;
        m_opts.request_timeout_ms = o.request_timeout_ms;
    }

    net::Frame frame(BytesView in, net::FrameState& st, bool eof) override {
        if (st.need) {
            if (in.size() >= st.need) return complete(st.need);
            if (eof) return reject(400, "truncated body", "http.reject.truncated", "body shorter than Content-Length");
            return {};
        }
        std::string_view sv(reinterpret_cast<const char*>(in.data()), in.size());
        auto end = sv.find("\r\n\r\n", st.scanned);
        if (end == std::string_view::npos) {
            if (in.size() > m_opts.max_header) return header_too_large();
            if (eof) {
                net::Frame f;
                f.kind = net::Frame::Reject;
                if (!in.empty()) f.counter = "http.reject.truncated_head";
                return f;
            }
            st.scanned = in.size() >= 3 ? in.size() - 3 : 0;
            return {};
        }
        size_t head_len = end + 4;
        if (head_len > m_opts.max_header) return header_too_large();
        m_server.counters().inc("http.rx.requests");
        auto parsed = parse_head(std::string(sv.substr(0, end + 2)));
        if (auto* e = std::get_if<HeadError>(&parsed)) return reject(e->code, e->msg, e->counter);
        Head& h = std::get<Head>(parsed);
        // A GET/HEAD: a body (unusual) is read and ignored, so that a kept-open connection
        // stays in step; the same limits as for a POST.
        auto get = [&]() -> net::Frame {
            if (h.chunked)
                return reject(411, "chunked bodies are not accepted; send Content-Length",
                              "http.reject.length_required");
            size_t body = h.clen > 0 ? static_cast<size_t>(h.clen) : 0;
            if (body > m_opts.max_body)
                return reject(413, "body exceeds " + std::to_string(m_opts.max_body) + " bytes",
                              "cmp.http.rejected.body_too_large");
            st.need = head_len + body;
            if (in.size() >= st.need) return complete(st.need);
            if (eof) return reject(400, "truncated body", "http.reject.truncated", "body shorter than Content-Length");
            return {};
        };
        if (h.path == m_opts.crl_path && (h.method == "GET" || h.method == "HEAD")) return get();
        std::string_view ctype_needed = "application/pkixcmp";
        if (ocsp_target(h.path)) {
            if (h.method == "GET" && h.path.size() > m_opts.ocsp_path.size() + 1) return get();
            if (h.method != "POST")
                return reject(405, "OCSP requires POST, or GET " + m_opts.ocsp_path + "/<base64 request>",
                              "http.reject.method", {}, "GET, POST");
            ctype_needed = "application/ocsp-request";
        } else if (!m_opts.serve_cmp || !cmp_profile(h.target)) {
            return reject(404, std::string("no ") + (m_opts.serve_cmp ? "CMP" : "OCSP") + " endpoint at " + h.path,
                          "http.reject.not_found");
        } else if (h.method != "POST") {
            return reject(405, "CMP requires POST", "http.reject.method");
        }
        auto semi = h.ctype.find(';');
        if (trim(h.ctype.substr(0, semi)) != ctype_needed)
            return reject(415, "Content-Type must be " + std::string(ctype_needed), "http.reject.content_type");
        if (h.chunked)
            return reject(411, "chunked bodies are not accepted; send Content-Length", "http.reject.length_required");
        if (h.clen < 0) return reject(411, "Content-Length required", "http.reject.length_required");
        if (static_cast<unsigned long long>(h.clen) > m_opts.max_body)
            return reject(
                413, "body exceeds " + std::to_string(m_opts.max_body) + " bytes", "cmp.http.rejected.body_too_large",
                "Content-Length " + std::to_string(h.clen) + " over max_body " + std::to_string(m_opts.max_body));
        st.need = head_len + static_cast<size_t>(h.clen);
        if (in.size() >= st.need) return complete(st.need);
        if (eof) return reject(400, "truncated body", "http.reject.truncated", "body shorter than Content-Length");
        return {};
    }

    SecureBytes handle(net::Request req) override { return respond(std::move(req)).data; }

    net::Reply respond(net::Request req) override {
        std::string_view sv(reinterpret_cast<const char*>(req.data.data()), req.data.size());
        size_t end = sv.find("\r\n\r\n");
        auto parsed = parse_head(std::string(sv.substr(0, end + 2)));
        Head& h = std::get<Head>(parsed);  // the framer accepted this head
        BytesView body(req.data.data() + end + 4, req.data.size() - end - 4);
        // Persistent connection when the client wants one and the event loop offers it; every
        // answer below is complete (Content-Length), so any of them can keep the connection.
        const bool keep = h.keep_alive && req.may_keep_open;
        auto done = [&](int code, std::string_view ctype, BytesView content, const char* counter) {
            m_server.counters().inc(counter);
            Bytes out = response(code, ctype, content, false, "POST", keep);
            return net::Reply{SecureBytes(BytesView(out)), keep};
        };
        auto text = [&](int code, const std::string& msg, const char* counter) {
            std::string b = msg + "\n";
            return done(code, "text/plain", as_bytes(b), counter);
        };
        if (h.path == m_opts.crl_path && (h.method == "GET" || h.method == "HEAD")) {
            auto crl = m_server.crl_der(static_cast<int64_t>(std::time(nullptr)));
            if (!crl) return text(500, "CRL unavailable", "http.error.crl");
            if (h.method == "HEAD") return done(200, "application/pkix-crl", {}, "http.ok.crl");
            return done(200, "application/pkix-crl", *crl, "http.ok.crl");
        }
        if (ocsp_target(h.path)) {
            Bytes get_req;
            if (h.method == "GET") {
                get_req = ocsp_get_request(std::string_view(h.path).substr(m_opts.ocsp_path.size() + 1));
                body = get_req;
            }
            return done(200, "application/ocsp-response", m_opts.ocsp->respond(body), "http.ok.ocsp");
        }
        // The wall clock is read here, at the I/O edge; the CMP server takes the time from us.
        std::string profile = cmp_profile(h.target).value_or("");
        auto t0 = std::chrono::steady_clock::now();
        auto rsp = m_server.handle(body, RequestContext{profile, static_cast<int64_t>(std::time(nullptr))});
        metrics::registry().observe("cmp.request_seconds",
                                    std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
        if (!rsp) return text(400, rsp.error().detail(), "http.reject.not_cmp");
        return done(200, "application/pkixcmp", *rsp, "http.ok.cmp");
    }

    Bytes refusal(net::Refusal r, bool tls) override {
        if (m_tls && !tls) return {};  // nothing readable before a TLS session
        switch (r) {
            case net::Refusal::TooManyConnections:
                return text_response(503, "too many connections; retry later", true);
            case net::Refusal::PerSource:
                return text_response(503, "too many connections from this address; retry later", true);
            case net::Refusal::Busy:
                return text_response(503, "server busy; retry later", true);
            case net::Refusal::Deadline:
                return text_response(
                    408, "request not complete within " + std::to_string(m_opts.request_timeout_ms) + " ms");
        }
        return {};
    }

    std::string handshake_failed(SSL* ssl) override {
        unsigned long e = ERR_peek_error();
        if (ERR_GET_LIB(e) == ERR_LIB_SSL && ERR_GET_REASON(e) == SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE) {
            m_server.counters().inc("cmp.http.tls.client_cert_missing");
            return "TLS handshake refused: no client certificate (client_auth = require)";
        }
        if (ERR_GET_LIB(e) == ERR_LIB_SSL && ERR_GET_REASON(e) == SSL_R_CERTIFICATE_VERIFY_FAILED) {
            m_server.counters().inc("cmp.http.tls.client_cert_rejected");
            long vr = ssl ? SSL_get_verify_result(ssl) : X509_V_ERR_UNSPECIFIED;
            return std::string("TLS handshake refused: client certificate rejected: ") +
                   X509_verify_cert_error_string(vr) + " (client_ca)";
        }
        char buf[256] = "no error detail";
        if (e) ERR_error_string_n(e, buf, sizeof buf);
        return std::string("TLS handshake failed: ") + buf;
    }

private:
    static net::Frame complete(size_t n) {
        net::Frame f;
        f.kind = net::Frame::Complete;
        f.size = n;
        return f;
    }
    bool ocsp_target(const std::string& path) const {
        if (!m_opts.ocsp) return false;
        const std::string& p = m_opts.ocsp_path;
        return path == p || path.rfind(p + "/", 0) == 0;
    }
    static net::Frame reject(int code, const std::string& msg, const char* counter, const std::string& why = {},
                             std::string_view allow = "POST") {
        net::Frame f;
        f.kind = net::Frame::Reject;
        f.reply = response(code, "text/plain", as_bytes(msg + "\n"), false, allow);
        f.counter = counter;
        f.why = why.empty() ? std::to_string(code) + " " + msg : std::to_string(code) + " " + why;
        return f;
    }
    net::Frame header_too_large() const {
        return reject(431, "request head too large", "cmp.http.rejected.header_too_large",
                      "header block over max_header " + std::to_string(m_opts.max_header) + " octets");
    }
    Server& m_server;
    HttpOptions m_opts;
    bool m_tls;
};

Result<HttpOptions::ClientAuth> parse_client_auth(std::string_view s) {
    if (s == "none") return HttpOptions::ClientAuth::None;
    if (s == "optional") return HttpOptions::ClientAuth::Optional;
    if (s == "require") return HttpOptions::ClientAuth::Require;
    return Error(ErrorDomain::Config, 0,
                 "client_auth must be \"none\", \"optional\" or \"require\", not \"" + std::string(s) + "\"");
}

const char* to_string(HttpOptions::ClientAuth a) {
    switch (a) {
        case HttpOptions::ClientAuth::None:
            return "none";
        case HttpOptions::ClientAuth::Optional:
            return "optional";
        case HttpOptions::ClientAuth::Require:
            return "require";
    }
    return "?";
}

Result<SSL_CTX*> HttpServer::make_ssl_ctx(const HttpOptions& o) {
    if (!o.tls_cert || !o.tls_key) return Error(ErrorDomain::Config, 0, "HTTPS needs a TLS certificate and key");
    if (o.client_auth != HttpOptions::ClientAuth::None && o.client_ca.empty())
        return Error(ErrorDomain::Config, 0,
                     std::string("client_auth = ") + to_string(o.client_auth) + " needs client_ca trust anchors");
    if (o.verify_depth < 0 || o.verify_depth > 16) return Error(ErrorDomain::Config, 0, "verify_depth must be 0..16");
    std::unique_ptr<SSL_CTX, decltype(&SSL_CTX_free)> ctx(SSL_CTX_new(TLS_server_method()), SSL_CTX_free);
    if (!ctx) return pki::ossl_error(ErrorDomain::Crypto, "SSL_CTX_new");
    SSL_CTX_set_min_proto_version(ctx.get(), TLS1_2_VERSION);
    if (SSL_CTX_use_certificate(ctx.get(), o.tls_cert) != 1 || SSL_CTX_use_PrivateKey(ctx.get(), o.tls_key) != 1 ||
        SSL_CTX_check_private_key(ctx.get()) != 1)
        return pki::ossl_error(ErrorDomain::Crypto, "TLS server credential");
    for (X509* x : o.tls_chain)
        if (SSL_CTX_add1_chain_cert(ctx.get(), x) != 1) return pki::ossl_error(ErrorDomain::Crypto, "TLS chain");
    if (o.client_auth != HttpOptions::ClientAuth::None) {
        X509_STORE* st = SSL_CTX_get_cert_store(ctx.get());
        for (X509* x : o.client_ca) {
            if (X509_STORE_add_cert(st, x) != 1) return pki::ossl_error(ErrorDomain::Crypto, "client_ca");
            if (SSL_CTX_add_client_CA(ctx.get(), x) != 1) return pki::ossl_error(ErrorDomain::Crypto, "client_ca");
        }
        int mode = SSL_VERIFY_PEER | SSL_VERIFY_CLIENT_ONCE;
        if (o.client_auth == HttpOptions::ClientAuth::Require) mode |= SSL_VERIFY_FAIL_IF_NO_PEER_CERT;
        SSL_CTX_set_verify(ctx.get(), mode, nullptr);
        SSL_CTX_set_verify_depth(ctx.get(), o.verify_depth);
        // A session is resumed only in the context (client-CA set) it was made in.
        static const unsigned char kSid[] = "x2sec-cmp";
        SSL_CTX_set_session_id_context(ctx.get(), kSid, sizeof kSid - 1);
    }
    return ctx.release();
}

net::Limits HttpServer::limits_of(const HttpOptions& o) {
    net::Limits l;
    l.max_connections = o.max_connections;
    l.max_per_source = o.max_per_source;
    l.request_deadline_ms = o.request_timeout_ms;
    l.write_deadline_ms = o.write_timeout_ms;
    l.workers = std::max(1, o.threads);
    l.max_request = o.max_header + o.max_body + 16;
    l.keep_alive_idle_ms = o.keep_alive_idle_ms;
    l.max_requests_per_connection = o.max_requests_per_connection;
    return l;
}

HttpServer::HttpServer(Server& server, HttpOptions opts) : m_server(server), m_opts(std::move(opts)) {}
HttpServer::~HttpServer() {
    stop();
    SSL_CTX_free(m_ssl_ctx);
}

Status HttpServer::start() {
    if (m_opts.max_header < 64 || m_opts.max_header > (1u << 20))
        return Error(ErrorDomain::Config, 0, "max_header must be 64..1048576 octets");
    if (m_opts.max_body < 1 || m_opts.max_body > (64u << 20))
        return Error(ErrorDomain::Config, 0, "max_body must be 1..67108864 octets");
    if (m_opts.ocsp && (m_opts.ocsp_path.size() < 2 || m_opts.ocsp_path[0] != '/' || m_opts.ocsp_path.back() == '/' ||
                        m_opts.ocsp_path == m_opts.crl_path))
        return Error(ErrorDomain::Config, 0, "OCSP path must be /<name> (no trailing /) and not the CRL path");
    if (m_opts.tls_cert && m_opts.tls_key && !m_ssl_ctx) {
        X2SEC_TRY(m_ssl_ctx, make_ssl_ctx(m_opts));
    } else if (!m_opts.tls_cert && m_opts.client_auth != HttpOptions::ClientAuth::None) {
        return Error(ErrorDomain::Config, 0, "client_auth needs HTTPS (a TLS certificate and key)");
    }
    m_proto = std::make_unique<Proto>(m_server, m_opts, m_ssl_ctx != nullptr);
    net::ServerOptions so;
    so.bind = m_opts.bind;
    so.port = m_opts.port;
    so.limits = limits_of(m_opts);
    so.tls = m_ssl_ctx;
    so.counter_prefix = "cmp.http";
    so.log_module = "cmp";
    so.name = !m_opts.serve_cmp ? "OCSP HTTP" : m_ssl_ctx ? "CMP HTTPS" : "CMP HTTP";
    m_net =
        std::make_unique<net::StreamServer>(*m_proto, so, [this](std::string_view n) { m_server.counters().inc(n); });
    if (auto st = m_net->start(); !st) {
        m_net.reset();
        return st;
    }
    log::get("cmp")->info(
        "{} server listening on {}:{} (max {} connections, {} per source, request deadline {} ms{})", so.name,
        m_opts.bind, m_net->port(), m_opts.max_connections, m_opts.max_per_source, m_opts.request_timeout_ms,
        m_ssl_ctx ? std::string(", TLS client_auth ") + to_string(m_opts.client_auth) : std::string());
    return ok_status();
}

Status HttpServer::check_reload(const HttpOptions& next) const {
    auto restart = [](const std::string& what) {
        return Error(ErrorDomain::Config, 0, what + " changed: needs a restart");
    };
    if (next.bind != m_opts.bind) return restart("bind address");
    if (next.port != m_opts.port && next.port != 0 && m_opts.port != 0) return restart("port");
    if (next.threads != m_opts.threads) return restart("threads");
    if (next.crl_path != m_opts.crl_path || next.ocsp_path != m_opts.ocsp_path || next.serve_cmp != m_opts.serve_cmp ||
        (next.ocsp == nullptr) != (m_opts.ocsp == nullptr))
        return restart("paths or OCSP");
    if ((next.tls_cert != nullptr) != (m_ssl_ctx != nullptr)) return restart("HTTP/HTTPS");
    if (next.max_header < 64 || next.max_header > (1u << 20))
        return Error(ErrorDomain::Config, 0, "max_header must be 64..1048576 octets");
    if (next.max_body < 1 || next.max_body > (64u << 20))
        return Error(ErrorDomain::Config, 0, "max_body must be 1..67108864 octets");
    net::Limits l = limits_of(next);
    l.workers = limits_of(m_opts).workers;
    X2SEC_TRY_STATUS(net::validate(l));
    if (m_ssl_ctx) {
        X2SEC_TRY(auto* ctx, make_ssl_ctx(next));
        SSL_CTX_free(ctx);
    }
    return ok_status();
}

Status HttpServer::reload(const HttpOptions& next) {
    X2SEC_TRY_STATUS(check_reload(next));
    net::Limits l = limits_of(next);
    l.workers = limits_of(m_opts).workers;
    SSL_CTX* ctx = nullptr;
    if (m_ssl_ctx) {
        X2SEC_TRY(ctx, make_ssl_ctx(next));
    }
    if (!m_net) return Error(ErrorDomain::Config, 0, "server not running");
    Status applied = ok_status();
    m_net->run_in_loop([&] {
        applied = m_net->set_limits(l);
        if (!applied) return;
        if (ctx) m_net->set_tls(ctx);
        m_proto->set_limits(next);
    });
    if (!applied) {
        SSL_CTX_free(ctx);
        return applied;
    }
    if (ctx) {
        SSL_CTX_free(m_ssl_ctx);  // the event loop holds its own reference until it switched
        m_ssl_ctx = ctx;
    }
    m_opts.max_body = next.max_body;
    m_opts.max_header = next.max_header;
    m_opts.max_connections = next.max_connections;
    m_opts.max_per_source = next.max_per_source;
    m_opts.request_timeout_ms = next.request_timeout_ms;
    m_opts.write_timeout_ms = next.write_timeout_ms;
    m_opts.keep_alive_idle_ms = next.keep_alive_idle_ms;
    m_opts.max_requests_per_connection = next.max_requests_per_connection;
    m_opts.tls_cert = next.tls_cert;
    m_opts.tls_key = next.tls_key;
    m_opts.tls_chain = next.tls_chain;
    m_opts.client_auth = next.client_auth;
    m_opts.client_ca = next.client_ca;
    m_opts.verify_depth = next.verify_depth;
    log::get("cmp")->info(
        "{} server on {}:{}: reloaded (max {} connections, {} per source, max_body {}{})",
        m_ssl_ctx ? "CMP HTTPS" : "CMP HTTP", m_opts.bind, port(), m_opts.max_connections, m_opts.max_per_source,
        m_opts.max_body, m_ssl_ctx ? std::string(", TLS client_auth ") + to_string(m_opts.client_auth) : std::string());
    return ok_status();
}

void HttpServer::stop() {
    if (m_net) m_net->stop();
}

}  // namespace x2sec::cmp
