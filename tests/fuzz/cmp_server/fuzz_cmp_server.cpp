// Fuzz target: the CMP server's request path (cmp::Server::handle, what the HTTP server calls
// with every body).  Three modes, chosen by the first input octet:
//   0 mod 4: the rest is handed to the server as a request body (DER parsing, protection
//         algorithm, extraCerts, signer selection, every message-level refusal);
//   2 mod 4: the rest patches a real signed ir (made once at start): triples (offset u16,
//         xor u8), then a final u16 length to cut it to (structure-aware mutations of a
//         message the server would otherwise accept);
//   odd:  the rest is the content of a request that OpenSSL's CMP client builds and signs with
//         a real vendor device certificate (so it passes the protection check): subject CN,
//         optionally a dNSName SAN (after a 0x00 separator), the request type (ir, cr, p10cr)
//         and implicitConfirm from the bits of the first octet; then the whole exchange (ip,
//         certConf, pkiConf) runs against the server.
// Invariant: no crash, and every answer the server gives is a DER PKIMessage.
#include <openssl/cmp.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <cstdlib>
#include <ctime>
#include <memory>
#include <string>
#include <x2sec/cmp/lab_pki.hpp>
#include <x2sec/cmp/server.hpp>
#include <x2sec/cmp/store.hpp>

namespace {
// The system clock's time, for tests that exchange messages as they happen.
x2sec::cmp::RequestContext wall_clock_request() {
    return x2sec::cmp::RequestContext{"", static_cast<int64_t>(std::time(nullptr))};
}
}  // namespace

using namespace x2sec;

namespace {

struct World {
    cmp::LabPki lab = cmp::make_lab_pki();
    cmp::LabCredential device = lab.device(lab.vendor_a, "0023a1b2c4f0", "henb.vendor-a.example");
    pki::PkeyPtr new_key = pki::generate_key(pki::KeyAlg::EcP256).value();
    std::unique_ptr<cmp::Store> store = std::move(cmp::open_sqlite_store(":memory:").value());
    std::unique_ptr<cmp::Server> server = std::make_unique<cmp::Server>(lab.server_config(), *store);
};

World& world() {
    static World w;
    return w;
}

Bytes g_captured;
OSSL_CMP_MSG* capture(OSSL_CMP_CTX*, const OSSL_CMP_MSG* req) {
    unsigned char* der = nullptr;
    int n = i2d_OSSL_CMP_MSG(req, &der);
    if (n > 0) g_captured.assign(der, der + n);
    OPENSSL_free(der);
    return nullptr;  // nothing is answered: the client gives up, the ir is kept
}

void check_answer(const Result<Bytes>& r) {
    if (!r) return;  // not a PKIMessage: the transport answers 400
    const unsigned char* p = r->data();
    OSSL_CMP_MSG* m = d2i_OSSL_CMP_MSG(nullptr, &p, static_cast<long>(r->size()));
    if (!m) std::abort();
    OSSL_CMP_MSG_free(m);
}

OSSL_CMP_MSG* transfer(OSSL_CMP_CTX*, const OSSL_CMP_MSG* req) {
    unsigned char* der = nullptr;
    int n = i2d_OSSL_CMP_MSG(req, &der);
    if (n <= 0) return nullptr;
    auto r = world().server->handle(BytesView(der, static_cast<size_t>(n)), wall_clock_request());
    OPENSSL_free(der);
    check_answer(r);
    if (!r) return nullptr;
    const unsigned char* p = r->data();
    return d2i_OSSL_CMP_MSG(nullptr, &p, static_cast<long>(r->size()));
}

void signed_request(uint8_t mode, BytesView rest, OSSL_CMP_transfer_cb_t cb = nullptr) {
    World& w = world();
    std::string all(rest.begin(), rest.end());
    auto sep = all.find('\0');
    std::string cn = all.substr(0, sep);
    std::string san = sep == std::string::npos ? std::string() : all.substr(sep + 1);
    OSSL_CMP_CTX* ctx = OSSL_CMP_CTX_new(nullptr, nullptr);
    OSSL_CMP_CTX_set_transfer_cb(ctx, cb ? cb : transfer);
    OSSL_CMP_CTX_set1_cert(ctx, w.device.cert.get());
    OSSL_CMP_CTX_set1_pkey(ctx, w.device.key.get());
    STACK_OF(X509)* extra = sk_X509_new_null();
    for (X509* x : w.device.chain_ptrs()) {
        X509_up_ref(x);
        sk_X509_push(extra, x);
    }
    OSSL_CMP_CTX_set1_extraCertsOut(ctx, extra);
    sk_X509_pop_free(extra, X509_free);
    X509_STORE* ts = X509_STORE_new();
    X509_STORE_add_cert(ts, w.lab.operator_root.cert.get());
    OSSL_CMP_CTX_set0_trustedStore(ctx, ts);
    STACK_OF(X509)* un = sk_X509_new_null();
    X509_up_ref(w.lab.operator_issuing.cert.get());
    sk_X509_push(un, w.lab.operator_issuing.cert.get());
    OSSL_CMP_CTX_set1_untrusted(ctx, un);
    sk_X509_pop_free(un, X509_free);
    EVP_PKEY_up_ref(w.new_key.get());
    OSSL_CMP_CTX_set0_newPkey(ctx, 1, w.new_key.get());
    X509_NAME* name = X509_NAME_new();
    if (!cn.empty())
        X509_NAME_add_entry_by_NID(name, NID_commonName, V_ASN1_UTF8STRING,
                                   reinterpret_cast<const unsigned char*>(cn.data()), static_cast<int>(cn.size()), -1,
                                   0);
    OSSL_CMP_CTX_set1_subjectName(ctx, name);
    X509_NAME_free(name);
    if (!san.empty()) {
        GENERAL_NAME* gn = GENERAL_NAME_new();
        ASN1_IA5STRING* s = ASN1_IA5STRING_new();
        ASN1_STRING_set(s, san.data(), static_cast<int>(san.size()));
        GENERAL_NAME_set0_value(gn, GEN_DNS, s);
        OSSL_CMP_CTX_push1_subjectAltName(ctx, gn);
        GENERAL_NAME_free(gn);
    }
    if (mode & 8) OSSL_CMP_CTX_set_option(ctx, OSSL_CMP_OPT_IMPLICIT_CONFIRM, 1);
    static const int types[] = {OSSL_CMP_IR, OSSL_CMP_CR, OSSL_CMP_P10CR, OSSL_CMP_IR};
    // The certificate belongs to ctx (OSSL_CMP_exec_certreq(3): freed by OSSL_CMP_CTX_free).
    (void)OSSL_CMP_exec_certreq(ctx, types[(mode >> 1) & 3], nullptr);
    OSSL_CMP_CTX_free(ctx);
    ERR_clear_error();
}

const Bytes& real_ir() {
    static const Bytes ir = [] {
        const std::string cn = "0023a1b2c4f0.henb.vendor-a.example";
        signed_request(1, BytesView(reinterpret_cast<const uint8_t*>(cn.data()), cn.size()), capture);
        return g_captured;
    }();
    return ir;
}

void patched_ir(BytesView rest) {
    Bytes m = real_ir();
    if (m.empty()) std::abort();  // the client could not even build the ir
    size_t i = 0;
    for (; i + 3 <= rest.size() && i < 3 * 64; i += 3)
        m[((size_t(rest[i]) << 8) | rest[i + 1]) % m.size()] ^= rest[i + 2];
    if (i + 2 <= rest.size()) m.resize(std::min(m.size(), (size_t(rest[i]) << 8) | rest[i + 1]));
    // A fresh RA each time: the real ir's transactionID is not burnt by an earlier input.
    auto store = std::move(cmp::open_sqlite_store(":memory:").value());
    cmp::Server server(world().lab.server_config(), *store);
    check_answer(server.handle(m, wall_clock_request()));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    if (size == 0) return 0;
    BytesView rest(data + 1, size - 1);
    if (data[0] & 1)
        signed_request(data[0], rest);
    else if (data[0] & 2)
        patched_ir(rest);
    else
        check_answer(world().server->handle(rest, wall_clock_request()));
    ERR_clear_error();
    return 0;
}
