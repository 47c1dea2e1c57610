// CMP over HTTP/HTTPS on loopback (ephemeral ports): real client, real sockets.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>
#include <x2sec/cmp/client.hpp>
#include <x2sec/cmp/http.hpp>
#include <x2sec/cmp/lab_pki.hpp>

using namespace x2sec;
using namespace x2sec::cmp;

namespace {

LabPki& lab() {
    static LabPki p = make_lab_pki();
    return p;
}

// Sends raw bytes, returns the whole response (the server closes the connection).
std::string raw_http(int port, const std::string& data, bool half_close = true) {
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
        ::close(fd);
        return {};
    }
    (void)::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
    if (half_close) ::shutdown(fd, SHUT_WR);
    std::string out;
    char buf[4096];
    ssize_t n;
    while ((n = ::recv(fd, buf, sizeof buf, 0)) > 0) out.append(buf, static_cast<size_t>(n));
    ::close(fd);
    return out;
}

int status_of(const std::string& rsp) {
    if (rsp.size() < 12) return 0;
    return std::atoi(rsp.c_str() + 9);
}

struct HttpFixture : ::testing::Test {
    std::unique_ptr<Store> store = std::move(open_sqlite_store(":memory:").value());
    std::unique_ptr<Server> server = std::make_unique<Server>(lab().server_config(), *store);
    std::unique_ptr<HttpServer> http;
    void start(bool tls = false) {
        HttpOptions o;
        o.threads = 4;
        o.max_body = 8192;
        o.request_timeout_ms = 2000;
        if (tls) {
            o.tls_cert = lab().ra.cert.get();
            o.tls_key = lab().ra.key.get();
            o.tls_chain = {lab().operator_issuing.cert.get()};
        }
        http = std::make_unique<HttpServer>(*server, o);
        auto st = http->start();
        ASSERT_TRUE(st.ok()) << st.error().detail();
    }
    EnrollRequest req(const LabCredential& dev, EVP_PKEY* k, const std::string& id, const std::string& url) {
        EnrollRequest r;
        r.server_url = url;
        r.auth_key = dev.key.get();
        r.auth_cert = dev.cert.get();
        r.auth_chain = dev.chain_ptrs();
        r.new_key = k;
        r.subject = "/CN=" + id;
        r.dns = {id};
        r.timeout_s = 10;
        return r;
    }
    int64_t certs() { return store->counts()->certificates; }
};

}  // namespace

TEST_F(HttpFixture, EnrolOverHttpOnEveryPath) {
    start();
    int i = 0;
    for (std::string path : {"/.well-known/cmp", "/.well-known/cmp/p/henb", "/pkix/"}) {
        std::string eui = "0023a1b2c3e" + std::to_string(i++);
        auto dev = lab().device(lab().vendor_a, eui, "henb.vendor-a.example");
        auto k = pki::generate_key(pki::KeyAlg::EcP256).value();
        auto e = Client::enroll(req(dev, k.get(), eui + ".henb.vendor-a.example",
                                    "http://127.0.0.1:" + std::to_string(http->port()) + path));
        ASSERT_TRUE(e.ok()) << path << ": " << e.error().detail();
    }
    EXPECT_EQ(certs(), 3);
    EXPECT_EQ(server->counters().get("http.ok.cmp"), 6u);  // ir + certConf each
}

TEST_F(HttpFixture, EnrolOverHttpsWithOperatorTlsTrust) {
    start(true);
    auto dev = lab().device(lab().vendor_a, "0023a1b2c3f0", "henb.vendor-a.example");
    auto k = pki::generate_key(pki::KeyAlg::EcP256).value();
    auto r = req(dev, k.get(), "0023a1b2c3f0.henb.vendor-a.example",
                 "https://127.0.0.1:" + std::to_string(http->port()) + "/.well-known/cmp");
    r.tls.trust = {lab().operator_root.cert.get()};
    auto e = Client::enroll(r);
    ASSERT_TRUE(e.ok()) << e.error().detail();
    EXPECT_EQ(certs(), 1);
    // a client that does not trust the TLS server certificate fails before any CMP
    auto other = make_root_ca("Elsewhere");
    auto k2 = pki::generate_key(pki::KeyAlg::EcP256).value();
    auto r2 = req(dev, k2.get(), "0023a1b2c3f0.henb.vendor-a.example",
                  "https://127.0.0.1:" + std::to_string(http->port()) + "/.well-known/cmp");
    r2.tls.trust = {other.cert.get()};
    EXPECT_FALSE(Client::enroll(r2).ok());
    EXPECT_EQ(certs(), 1);
}

TEST_F(HttpFixture, HttpNegativesAre4xxAndWriteNothing) {
    start();
    int p = http->port();
    Bytes ir;
    {
        auto dev = lab().device(lab().vendor_a, "0023a1b2c3f1", "henb.vendor-a.example");
        auto k = pki::generate_key(pki::KeyAlg::EcP256).value();
        auto r = req(dev, k.get(), "0023a1b2c3f1.henb.vendor-a.example", "");
        r.transfer = [&](BytesView m) -> Result<Bytes> {
            ir.assign(m.begin(), m.end());
            return Error("captured");
        };
        (void)Client::enroll(r);
    }
    ASSERT_FALSE(ir.empty());
    std::string body(ir.begin(), ir.end());
    auto post = [&](const std::string& path, const std::string& ctype, const std::string& b, const std::string& clen) {
        return "POST " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: " + ctype + "\r\nContent-Length: " + clen +
               "\r\n\r\n" + b;
    };
    EXPECT_EQ(status_of(raw_http(p, post("/.well-known/cmp", "text/plain", body, std::to_string(body.size())))), 415);
    EXPECT_EQ(status_of(raw_http(p, "GET /.well-known/cmp HTTP/1.1\r\nHost: x\r\n\r\n")), 405);
    EXPECT_EQ(status_of(raw_http(p, post("/elsewhere", "application/pkixcmp", body, std::to_string(body.size())))), 404);
    EXPECT_EQ(status_of(raw_http(p, post("/.well-known/cmp/p/../x", "application/pkixcmp", body, std::to_string(body.size())))), 404);
    EXPECT_EQ(status_of(raw_http(p, post("/.well-known/cmp", "application/pkixcmp", "", "100000"))), 413);
    // truncated: Content-Length larger than what is sent, then EOF
    EXPECT_EQ(status_of(raw_http(p, post("/.well-known/cmp", "application/pkixcmp", body.substr(0, body.size() / 2),
                                         std::to_string(body.size())))), 400);
    // a complete body that is not a PKIMessage
    EXPECT_EQ(status_of(raw_http(p, post("/.well-known/cmp", "application/pkixcmp", "garbage!", "8"))), 400);
    // no Content-Length
    EXPECT_EQ(status_of(raw_http(p, "POST /pkix/ HTTP/1.1\r\nContent-Type: application/pkixcmp\r\n\r\n")), 411);
    EXPECT_EQ(status_of(raw_http(p, "NONSENSE\r\n\r\n")), 400);
    EXPECT_EQ(certs(), 0);
    EXPECT_EQ(store->counts()->transactions, 0);
    auto& k = server->counters();
    EXPECT_EQ(k.get("http.reject.content_type"), 1u);
    EXPECT_EQ(k.get("http.reject.method"), 1u);
    EXPECT_EQ(k.get("http.reject.not_found"), 2u);
    EXPECT_EQ(k.get("cmp.http.rejected.body_too_large"), 1u);
    EXPECT_EQ(k.get("http.reject.truncated"), 1u);
    EXPECT_EQ(k.get("http.reject.not_cmp"), 1u);
    EXPECT_EQ(k.get("http.reject.length_required"), 1u);
    // and the real message still works
    auto ok = raw_http(p, post("/.well-known/cmp", "application/pkixcmp", body, std::to_string(body.size())));
    EXPECT_EQ(status_of(ok), 200);
    EXPECT_NE(ok.find("application/pkixcmp"), std::string::npos);
    EXPECT_EQ(certs(), 1);
}

TEST_F(HttpFixture, CrlServedAtDistributionPoint) {
    start();
    auto rsp = raw_http(http->port(), "GET /crl HTTP/1.1\r\nHost: x\r\n\r\n");
    ASSERT_EQ(status_of(rsp), 200);
    EXPECT_NE(rsp.find("application/pkix-crl"), std::string::npos);
    auto body = rsp.substr(rsp.find("\r\n\r\n") + 4);
    const unsigned char* q = reinterpret_cast<const unsigned char*>(body.data());
    X509_CRL* crl = d2i_X509_CRL(nullptr, &q, static_cast<long>(body.size()));
    ASSERT_NE(crl, nullptr);
    EXPECT_EQ(X509_CRL_verify(crl, X509_get0_pubkey(lab().operator_issuing.cert.get())), 1);
    X509_CRL_free(crl);
}

TEST_F(HttpFixture, ManyConcurrentClients) {
    start();
    std::vector<std::thread> ts;
    std::atomic<int> ok{0};
    for (int t = 0; t < 8; ++t)
        ts.emplace_back([&, t] {
            for (int i = 0; i < 3; ++i) {
                char eui[13];
                std::snprintf(eui, sizeof eui, "0400000000%x%x", t, i);
                auto dev = lab().device(lab().vendor_b, eui, "henb.vendor-b.example");
                auto k = pki::generate_key(pki::KeyAlg::EcP256).value();
                auto e = Client::enroll(req(dev, k.get(), std::string(eui) + ".henb.vendor-b.example",
                                            "http://127.0.0.1:" + std::to_string(http->port()) + "/.well-known/cmp"));
                if (e) ++ok;
            }
        });
    for (auto& t : ts) t.join();
    EXPECT_EQ(ok.load(), 24);
    EXPECT_EQ(certs(), 24);
}
