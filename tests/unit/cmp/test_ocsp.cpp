// OCSP responder (RFC 6960): requests built and responses checked with OpenSSL's OCSP API,
// in process and over HTTP (POST and GET), against the RA/CA store.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <ctime>
#include <netinet/in.h>
#include <openssl/ocsp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>
#include <x2sec/cmp/client.hpp>
#include <x2sec/cmp/http.hpp>
#include <x2sec/cmp/lab_pki.hpp>
#include <x2sec/cmp/ocsp.hpp>

#include <filesystem>

namespace {
// The system clock's time, for tests that exchange messages as they happen.
x2sec::cmp::RequestContext wall_clock_request() {
    return x2sec::cmp::RequestContext{"", static_cast<int64_t>(std::time(nullptr))};
}
}  // namespace

using namespace x2sec;
using namespace x2sec::cmp;

namespace {

LabPki& lab() {
    static LabPki p = make_lab_pki();
    return p;
}

struct ReqFree {
    void operator()(OCSP_REQUEST* p) const { OCSP_REQUEST_free(p); }
    void operator()(OCSP_RESPONSE* p) const { OCSP_RESPONSE_free(p); }
    void operator()(OCSP_BASICRESP* p) const { OCSP_BASICRESP_free(p); }
    void operator()(OCSP_CERTID* p) const { OCSP_CERTID_free(p); }
};
using OReq = std::unique_ptr<OCSP_REQUEST, ReqFree>;
using ORsp = std::unique_ptr<OCSP_RESPONSE, ReqFree>;
using OBasic = std::unique_ptr<OCSP_BASICRESP, ReqFree>;
using OId = std::unique_ptr<OCSP_CERTID, ReqFree>;

Bytes der_of(OCSP_REQUEST* r) {
    unsigned char* p = nullptr;
    int n = i2d_OCSP_REQUEST(r, &p);
    Bytes out(p, p + n);
    OPENSSL_free(p);
    return out;
}

// What a client learns from a response, verified the way a relying party does.
struct Answer {
    int response_status = -1;
    bool verified = false;
    int nonce = -99;  // OCSP_check_nonce
    int status = -1, reason = -1;
    bool has_next_update = false;
};

Answer check(const Bytes& rsp_der, OCSP_REQUEST* req, const OCSP_CERTID* id) {
    Answer a;
    const unsigned char* p = rsp_der.data();
    ORsp rsp(d2i_OCSP_RESPONSE(nullptr, &p, static_cast<long>(rsp_der.size())));
    if (!rsp) return a;
    a.response_status = OCSP_response_status(rsp.get());
    OBasic bs(OCSP_response_get1_basic(rsp.get()));
    if (!bs) return a;
    pki::StorePtr st(X509_STORE_new());
    X509_STORE_add_cert(st.get(), lab().operator_root.cert.get());
    a.verified = OCSP_basic_verify(bs.get(), nullptr, st.get(), 0) == 1;
    ERR_clear_error();
    a.nonce = OCSP_check_nonce(req, bs.get());
    ASN1_GENERALIZEDTIME *rev = nullptr, *thisupd = nullptr, *nextupd = nullptr;
    if (OCSP_resp_find_status(bs.get(), const_cast<OCSP_CERTID*>(id), &a.status, &a.reason, &rev, &thisupd, &nextupd) !=
        1)
        a.status = -2;
    a.has_next_update = nextupd != nullptr;
    if (thisupd && nextupd && OCSP_check_validity(thisupd, nextupd, 300, -1) != 1) a.verified = false;
    return a;
}

struct OcspFixture : ::testing::Test {
    std::string dir = std::filesystem::temp_directory_path() / ("x2sec-ocsp-" + std::to_string(::getpid()));
    std::unique_ptr<Store> store = std::move(open_sqlite_store(":memory:").value());
    std::unique_ptr<Server> server;
    std::unique_ptr<OcspResponder> ocsp;
    void SetUp() override {
        std::filesystem::remove_all(dir);
        std::filesystem::create_directories(dir);
        auto cfg = lab().server_config();
        cfg.policy.ocsp_urls = {"http://127.0.0.1:1/ocsp"};
        OcspConfig oc;
        auto st = ensure_ocsp_signer(dir, lab().operator_issuing.cert.get(), lab().operator_issuing.key.get(), oc);
        ASSERT_TRUE(st.ok()) << st.error().detail();
        server = std::make_unique<Server>(std::move(cfg), *store);
        ocsp = std::make_unique<OcspResponder>(std::move(oc), *store, server->counters());
    }
    void TearDown() override { std::filesystem::remove_all(dir); }
    pki::X509Ptr enrol(const std::string& eui) {
        auto dev = lab().device(lab().vendor_a, eui, "henb.vendor-a.example");
        auto k = pki::generate_key(pki::KeyAlg::EcP256).value();
        EnrollRequest r;
        r.transfer = [this](BytesView m) { return server->handle(m, wall_clock_request()); };
        r.auth_key = dev.key.get();
        r.auth_cert = dev.cert.get();
        r.auth_chain = dev.chain_ptrs();
        r.new_key = k.get();
        std::string id = eui + ".henb.vendor-a.example";
        r.subject = "/CN=" + id;
        r.dns = {id};
        r.operator_roots = {lab().operator_root.cert.get()};
        auto e = Client::enroll(r);
        EXPECT_TRUE(e.ok()) << e.error().detail();
        return e.ok() ? std::move(e->cert) : nullptr;
    }
    // A one-CertID request for cert (issued by the issuing CA) in the given hash, optionally
    // with a nonce; returns the request and keeps a copy of the CertID in `id`.
    OReq request(X509* cert, OId& id, bool nonce = true, const EVP_MD* md = EVP_sha1(),
                 X509* issuer = lab().operator_issuing.cert.get()) {
        OReq req(OCSP_REQUEST_new());
        OCSP_CERTID* cid = OCSP_cert_to_id(md, cert, issuer);
        id.reset(OCSP_CERTID_dup(cid));
        OCSP_request_add0_id(req.get(), cid);
        if (nonce) OCSP_request_add1_nonce(req.get(), nullptr, -1);
        return req;
    }
    Answer ask(X509* cert, bool nonce = true, const EVP_MD* md = EVP_sha1()) {
        OId id;
        OReq req = request(cert, id, nonce, md);
        return check(ocsp->respond(der_of(req.get())), req.get(), id.get());
    }
    uint64_t count(const char* n) const { return server->counters().get(n); }
};

}  // namespace

TEST_F(OcspFixture, IssuedCertificatesCarryTheOcspUrlInAuthorityInfoAccess) {
    auto cert = enrol("0023a1b2c401");
    ASSERT_TRUE(cert);
    STACK_OF(OPENSSL_STRING)* urls = X509_get1_ocsp(cert.get());
    ASSERT_EQ(sk_OPENSSL_STRING_num(urls), 1);
    EXPECT_STREQ(sk_OPENSSL_STRING_value(urls, 0), "http://127.0.0.1:1/ocsp");
    X509_email_free(urls);
}

TEST_F(OcspFixture, GoodThenRevokedWithReasonSignedByTheDelegatedSigner) {
    auto cert = enrol("0023a1b2c402");
    ASSERT_TRUE(cert);
    Answer a = ask(cert.get());
    EXPECT_EQ(a.response_status, OCSP_RESPONSE_STATUS_SUCCESSFUL);
    EXPECT_TRUE(a.verified);
    EXPECT_EQ(a.nonce, 1);
    EXPECT_EQ(a.status, V_OCSP_CERTSTATUS_GOOD);
    EXPECT_TRUE(a.has_next_update);
    // SHA-256 CertIDs are matched too
    EXPECT_EQ(ask(cert.get(), true, EVP_sha256()).status, V_OCSP_CERTSTATUS_GOOD);
    // without a nonce: no nonce in the answer (OCSP_check_nonce 2: absent in both)
    Answer nn = ask(cert.get(), false);
    EXPECT_EQ(nn.nonce, 2);
    EXPECT_EQ(nn.status, V_OCSP_CERTSTATUS_GOOD);

    ASSERT_TRUE(server->revoke(pki::serial_bytes(X509_get0_serialNumber(cert.get())), 1).ok());
    Answer r = ask(cert.get());
    EXPECT_TRUE(r.verified);
    EXPECT_EQ(r.status, V_OCSP_CERTSTATUS_REVOKED);
    EXPECT_EQ(r.reason, 1);  // keyCompromise
    EXPECT_EQ(count("ocsp.tx.good"), 3u);
    EXPECT_EQ(count("ocsp.tx.revoked"), 1u);
}

TEST_F(OcspFixture, RevokedWithoutReasonHasNoReason) {
    auto cert = enrol("0023a1b2c403");
    ASSERT_TRUE(cert);
    ASSERT_TRUE(server->revoke(pki::serial_bytes(X509_get0_serialNumber(cert.get())), 0).ok());
    Answer r = ask(cert.get());
    EXPECT_EQ(r.status, V_OCSP_CERTSTATUS_REVOKED);
    EXPECT_EQ(r.reason, OCSP_REVOKED_STATUS_NOSTATUS);
}

TEST_F(OcspFixture, UnknownSerialAndForeignIssuerAreUnknown) {
    // a certificate of the issuing CA that the store never recorded (the RA certificate)
    Answer a = ask(lab().ra.cert.get());
    EXPECT_TRUE(a.verified);
    EXPECT_EQ(a.status, V_OCSP_CERTSTATUS_UNKNOWN);
    // a device certificate of a vendor CA: not this responder's issuer
    auto dev = lab().device(lab().vendor_a, "0023a1b2c404", "henb.vendor-a.example");
    OId id;
    OReq req = request(dev.cert.get(), id, true, EVP_sha1(), lab().vendor_a.cert.get());
    Answer f = check(ocsp->respond(der_of(req.get())), req.get(), id.get());
    EXPECT_EQ(f.response_status, OCSP_RESPONSE_STATUS_SUCCESSFUL);
    EXPECT_EQ(f.status, V_OCSP_CERTSTATUS_UNKNOWN);
    EXPECT_EQ(count("ocsp.tx.unknown"), 2u);
}

TEST_F(OcspFixture, BadRequestsAreMalformedRequestUnsignedAndCounted) {
    auto status_of = [](const Bytes& der) {
        const unsigned char* p = der.data();
        ORsp r(d2i_OCSP_RESPONSE(nullptr, &p, static_cast<long>(der.size())));
        if (!r) return -1;
        OBasic bs(OCSP_response_get1_basic(r.get()));
        ERR_clear_error();
        return bs ? 100 : OCSP_response_status(r.get());  // 100: carries a signed body
    };
    EXPECT_EQ(status_of(ocsp->respond(as_bytes(std::string_view("garbage")))), OCSP_RESPONSE_STATUS_MALFORMEDREQUEST);
    EXPECT_EQ(status_of(ocsp->respond({})), OCSP_RESPONSE_STATUS_MALFORMEDREQUEST);
    auto cert = enrol("0023a1b2c405");
    ASSERT_TRUE(cert);
    OId id;
    OReq req = request(cert.get(), id);
    Bytes good = der_of(req.get());
    for (size_t cut : {size_t{1}, good.size() / 2, good.size() - 1})
        EXPECT_EQ(status_of(ocsp->respond(BytesView(good.data(), cut))), OCSP_RESPONSE_STATUS_MALFORMEDREQUEST) << cut;
    Bytes trailing = good;
    trailing.push_back(0);
    EXPECT_EQ(status_of(ocsp->respond(trailing)), OCSP_RESPONSE_STATUS_MALFORMEDREQUEST);
    EXPECT_EQ(count("ocsp.reject.malformed"), 6u);
    // no CertID at all
    OReq empty(OCSP_REQUEST_new());
    EXPECT_EQ(status_of(ocsp->respond(der_of(empty.get()))), OCSP_RESPONSE_STATUS_MALFORMEDREQUEST);
    EXPECT_EQ(count("ocsp.reject.malformed"), 7u);
    // 33 CertIDs (the limit is 32)
    OReq many(OCSP_REQUEST_new());
    for (int i = 0; i < 33; ++i)
        OCSP_request_add0_id(many.get(), OCSP_cert_to_id(nullptr, cert.get(), lab().operator_issuing.cert.get()));
    EXPECT_EQ(status_of(ocsp->respond(der_of(many.get()))), OCSP_RESPONSE_STATUS_MALFORMEDREQUEST);
    EXPECT_EQ(count("ocsp.reject.too_many"), 1u);
    // a 64-octet nonce (RFC 8954: at most 32)
    OId id2;
    OReq big = request(cert.get(), id2, false);
    unsigned char n64[64] = {1};
    OCSP_request_add1_nonce(big.get(), n64, sizeof n64);
    EXPECT_EQ(status_of(ocsp->respond(der_of(big.get()))), OCSP_RESPONSE_STATUS_MALFORMEDREQUEST);
    EXPECT_EQ(count("ocsp.reject.nonce"), 1u);
    // a bit flipped in every octet of a valid request: malformedRequest or a signed answer,
    // never a crash, and the responder still answers afterwards
    for (size_t i = 0; i < good.size(); ++i) {
        Bytes m = good;
        m[i] ^= 0x10;
        int s = status_of(ocsp->respond(m));
        EXPECT_TRUE(s == OCSP_RESPONSE_STATUS_MALFORMEDREQUEST || s == 100) << "octet " << i << ": " << s;
    }
    EXPECT_EQ(ask(cert.get()).status, V_OCSP_CERTSTATUS_GOOD);
}

TEST_F(OcspFixture, SignerIsDelegatedNoCheckShortLivedAndReused) {
    auto c = pki::load_cert(dir + "/ocsp.crt").value();
    EXPECT_TRUE(X509_get_extended_key_usage(c.get()) & XKU_OCSP_SIGN);
    EXPECT_GE(X509_get_ext_by_NID(c.get(), NID_id_pkix_OCSP_noCheck, -1), 0);
    EXPECT_EQ(X509_check_issued(lab().operator_issuing.cert.get(), c.get()), X509_V_OK);
    EXPECT_LE(pki::not_after(c.get()) - std::time(nullptr), 30 * 86400 + 120);
    struct stat sb {};
    ASSERT_EQ(::stat((dir + "/ocsp.key").c_str(), &sb), 0);
    EXPECT_EQ(sb.st_mode & 0777, 0600u);
    // reused while valid
    OcspConfig again;
    ASSERT_TRUE(
        ensure_ocsp_signer(dir, lab().operator_issuing.cert.get(), lab().operator_issuing.key.get(), again).ok());
    EXPECT_EQ(X509_cmp(again.signer_cert.get(), c.get()), 0);
    // a signer of another CA in the directory is replaced
    OcspConfig other;
    ASSERT_TRUE(ensure_ocsp_signer(dir, lab().vendor_b.cert.get(), lab().vendor_b.key.get(), other).ok());
    EXPECT_EQ(X509_check_issued(lab().vendor_b.cert.get(), other.signer_cert.get()), X509_V_OK);
    EXPECT_NE(X509_cmp(other.signer_cert.get(), c.get()), 0);
}

namespace {
std::string http_exchange(int port, const std::string& data) {
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
    ::shutdown(fd, SHUT_WR);
    std::string out;
    char buf[4096];
    ssize_t n;
    while ((n = ::recv(fd, buf, sizeof buf, 0)) > 0) out.append(buf, static_cast<size_t>(n));
    ::close(fd);
    return out;
}
Bytes body_of(const std::string& rsp) {
    auto at = rsp.find("\r\n\r\n");
    if (at == std::string::npos) return {};
    return Bytes(rsp.begin() + static_cast<long>(at) + 4, rsp.end());
}
}  // namespace

TEST_F(OcspFixture, OverHttpPostAndGetAndRefusals) {
    HttpOptions o;
    o.threads = 2;
    o.ocsp = ocsp.get();
    o.serve_cmp = false;
    HttpServer http(*server, o);
    ASSERT_TRUE(http.start().ok());
    auto cert = enrol("0023a1b2c406");
    ASSERT_TRUE(cert);
    OId id;
    OReq req = request(cert.get(), id);
    Bytes der = der_of(req.get());
    std::string post = "POST /ocsp HTTP/1.1\r\nHost: x\r\nContent-Type: application/ocsp-request\r\nContent-Length: " +
                       std::to_string(der.size()) + "\r\n\r\n" + std::string(der.begin(), der.end());
    std::string rsp = http_exchange(http.port(), post);
    ASSERT_EQ(rsp.rfind("HTTP/1.1 200", 0), 0u) << rsp.substr(0, 80);
    EXPECT_NE(rsp.find("Content-Type: application/ocsp-response"), std::string::npos);
    Answer a = check(body_of(rsp), req.get(), id.get());
    EXPECT_TRUE(a.verified);
    EXPECT_EQ(a.status, V_OCSP_CERTSTATUS_GOOD);

    // GET /ocsp/<url-encoded base64>
    std::string b64(((der.size() + 2) / 3) * 4 + 1, '\0');
    b64.resize(static_cast<size_t>(
        EVP_EncodeBlock(reinterpret_cast<unsigned char*>(b64.data()), der.data(), static_cast<int>(der.size()))));
    std::string enc;
    for (char c : b64) enc += c == '/' ? "%2F" : c == '+' ? "%2B" : c == '=' ? "%3D" : std::string(1, c);
    rsp = http_exchange(http.port(), "GET /ocsp/" + enc + " HTTP/1.1\r\nHost: x\r\n\r\n");
    ASSERT_EQ(rsp.rfind("HTTP/1.1 200", 0), 0u) << rsp.substr(0, 80);
    Answer g = check(body_of(rsp), req.get(), id.get());
    EXPECT_TRUE(g.verified);
    EXPECT_EQ(g.status, V_OCSP_CERTSTATUS_GOOD);
    EXPECT_EQ(server->counters().get("http.ok.ocsp"), 2u);

    // GET of something that is not base64 of a request: 200 with malformedRequest
    rsp = http_exchange(http.port(), "GET /ocsp/%ZZnot HTTP/1.1\r\nHost: x\r\n\r\n");
    Bytes b = body_of(rsp);
    const unsigned char* p = b.data();
    ORsp bad(d2i_OCSP_RESPONSE(nullptr, &p, static_cast<long>(b.size())));
    ASSERT_TRUE(bad);
    EXPECT_EQ(OCSP_response_status(bad.get()), OCSP_RESPONSE_STATUS_MALFORMEDREQUEST);
    // refusals: wrong method, wrong content type, a CMP path on the OCSP listener
    EXPECT_EQ(http_exchange(http.port(), "PUT /ocsp HTTP/1.1\r\nContent-Length: 0\r\n\r\n").substr(0, 12),
              "HTTP/1.1 405");
    EXPECT_EQ(
        http_exchange(http.port(), "POST /ocsp HTTP/1.1\r\nContent-Type: text/plain\r\nContent-Length: 1\r\n\r\nx")
            .substr(0, 12),
        "HTTP/1.1 415");
    EXPECT_EQ(http_exchange(http.port(),
                            "POST /.well-known/cmp HTTP/1.1\r\nContent-Type: application/pkixcmp\r\n"
                            "Content-Length: 1\r\n\r\nx")
                  .substr(0, 12),
              "HTTP/1.1 404");
    EXPECT_EQ(count("ocsp.reject.malformed"), 1u);
}
