// The KDS codec and server under attack: every truncation and every single-octet corruption of
// every message type, each field corrupted on purpose with the error it must produce, and the
// same frames sent to the running server over mutual TLS (server alive and serving afterwards).
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <ctime>
#include <functional>

#include <x2sec/common/rng.hpp>
#include <x2sec/common/time.hpp>
#include <x2sec/kds/protocol.hpp>
#include <x2sec/kds/server.hpp>
#include <x2sec/kds/tls.hpp>
#include <x2sec/scenario/lab_pki.hpp>

using namespace x2sec;
using namespace x2sec::kds;

namespace {

const std::string kA1 = "0023a1000001.henb.vendor-a.example";
const std::string kB1 = "0023b2000001.henb.vendor-b.example";

ServerConfig config() {
    ServerConfig c;
    c.nodes = {{"a1", kA1}, {"b1", kB1}};
    c.relations = {{"a1", "b1"}};
    c.key_lifetime_s = 600;
    return c;
}

Bytes wire(const Message& m) {
    auto s = encode(m);
    return Bytes(s.view().begin(), s.view().end());
}

Bytes request_bytes(bool with_previous = true) {
    KeyRequest r;
    r.request_id = 0x01020304;
    r.requester = kA1;
    r.peer = kB1;
    r.rekey = with_previous;
    if (with_previous) r.previous_key_id = Bytes(kKeyIdSize, 0x11);
    return wire(r);
}
Bytes response_bytes() {
    KeyResponse r;
    r.request_id = 9;
    r.key_id = Bytes(kKeyIdSize, 0x22);
    r.key = SecureBytes(BytesView(Bytes(kKeySize, 0x33)));
    r.lifetime_s = 600;
    r.generation = 2;
    r.identity_a = kA1;
    r.identity_b = kB1;
    return wire(r);
}
Bytes error_bytes() {
    return wire(ErrorMessage{5, ErrorCode::UnknownPeer, "no such neighbour"});
}

struct Sample {
    const char* name;
    Bytes bytes;
};
std::vector<Sample> samples() {
    return {{"KeyRequest", request_bytes()},
            {"KeyRequest-plain", request_bytes(false)},
            {"KeyResponse", response_bytes()},
            {"Error", error_bytes()}};
}

// A named codec error: domain Kds, code Malformed or UnsupportedVersion, a detail that says what.
void expect_named(const Result<Message>& r, const std::string& what) {
    ASSERT_FALSE(r.ok()) << what << " was accepted";
    EXPECT_EQ(r.error().domain(), ErrorDomain::Kds) << what;
    EXPECT_TRUE(r.error().code() == int(ErrorCode::Malformed) || r.error().code() == int(ErrorCode::UnsupportedVersion))
        << what << ": code " << r.error().code();
    EXPECT_FALSE(r.error().detail().empty()) << what;
}

// Offsets of the TLVs of a well-formed message: (offset of TLV header, type, length).
struct TlvAt {
    size_t at;
    uint16_t type, len;
};
std::vector<TlvAt> tlvs_of(const Bytes& b) {
    std::vector<TlvAt> out;
    for (size_t i = kHeaderSize; i + 4 <= b.size();) {
        uint16_t t = uint16_t(b[i] << 8 | b[i + 1]), l = uint16_t(b[i + 2] << 8 | b[i + 3]);
        out.push_back({i, t, l});
        i += 4 + l;
    }
    return out;
}
void set_body_len(Bytes& b) {
    uint32_t n = uint32_t(b.size() - kHeaderSize);
    b[4] = uint8_t(n >> 24), b[5] = uint8_t(n >> 16), b[6] = uint8_t(n >> 8), b[7] = uint8_t(n);
}
// Replaces the value of the TLV of `type` (fixing both lengths).
Bytes with_value(const Bytes& b, uint16_t type, const Bytes& value) {
    for (const auto& t : tlvs_of(b))
        if ((t.type & 0x7fff) == type) {
            Bytes out(b.begin(), b.begin() + long(t.at) + 2);
            out.push_back(uint8_t(value.size() >> 8));
            out.push_back(uint8_t(value.size()));
            out.insert(out.end(), value.begin(), value.end());
            out.insert(out.end(), b.begin() + long(t.at + 4 + t.len), b.end());
            set_body_len(out);
            return out;
        }
    ADD_FAILURE() << "no TLV " << type;
    return b;
}
Bytes without(const Bytes& b, uint16_t type) {
    for (const auto& t : tlvs_of(b))
        if ((t.type & 0x7fff) == type) {
            Bytes out(b.begin(), b.begin() + long(t.at));
            out.insert(out.end(), b.begin() + long(t.at + 4 + t.len), b.end());
            set_body_len(out);
            return out;
        }
    ADD_FAILURE() << "no TLV " << type;
    return b;
}
Bytes appended(const Bytes& b, const Bytes& tlv) {
    Bytes out = b;
    out.insert(out.end(), tlv.begin(), tlv.end());
    set_body_len(out);
    return out;
}
std::string detail(const Bytes& b) {
    auto r = decode(b);
    return r.ok() ? std::string("(accepted)") : r.error().detail();
}

}  // namespace

TEST(KdsCodecAttack, EveryTruncationOfEveryMessageIsANamedError) {
    for (const auto& s : samples()) {
        ASSERT_TRUE(decode(s.bytes).ok()) << s.name;
        for (size_t n = 0; n < s.bytes.size(); ++n)
            expect_named(decode(BytesView(s.bytes.data(), n)), std::string(s.name) + " cut to " + std::to_string(n));
        // and the truncated frame with its header length fixed up (a "complete" short message)
        for (size_t n = kHeaderSize; n < s.bytes.size(); ++n) {
            Bytes cut(s.bytes.begin(), s.bytes.begin() + long(n));
            set_body_len(cut);
            auto r = decode(cut);
            if (r.ok()) {
                // only a cut exactly at a TLV boundary after every mandatory TLV can decode
                bool boundary = false;
                for (const auto& t : tlvs_of(s.bytes)) boundary |= t.at == n;
                EXPECT_TRUE(boundary) << s.name << " cut to " << n << " (length fixed) accepted";
            } else {
                expect_named(r, std::string(s.name) + " cut to " + std::to_string(n) + " (length fixed)");
            }
        }
    }
}

// Every octet replaced by every other value: decode either names the error or returns a message
// that re-encodes and decodes again to the same type (never a crash, never an unnamed error).
TEST(KdsCodecAttack, EverySingleOctetCorruptionIsNamedOrConsistent) {
    size_t rejected = 0, accepted = 0;
    for (const auto& s : samples()) {
        for (size_t i = 0; i < s.bytes.size(); ++i)
            for (int v = 0; v < 256; ++v) {
                if (v == s.bytes[i]) continue;
                Bytes m = s.bytes;
                m[i] = uint8_t(v);
                auto r = decode(m);
                if (!r.ok()) {
                    ++rejected;
                    expect_named(r, std::string(s.name) + " octet " + std::to_string(i) + " = " + std::to_string(v));
                    continue;
                }
                ++accepted;
                auto again = decode(encode(*r).view());
                ASSERT_TRUE(again.ok()) << s.name << " octet " << i;
                EXPECT_EQ(again->index(), r->index());
            }
    }
    EXPECT_GT(rejected, accepted);
    std::cout << "[ info ] single-octet corruptions: " << rejected << " rejected (named), " << accepted
              << " accepted as another valid message\n";
}

TEST(KdsCodecAttack, EachFieldCorruptedNamesTheField) {
    const Bytes rq = request_bytes(), rs = response_bytes(), er = error_bytes();
    struct Case {
        const char* what;
        Bytes bytes;
        const char* expect;
    };
    auto hdr = [](Bytes b, size_t i, uint8_t v) {
        b[i] = v;
        return b;
    };
    std::vector<Case> cases = {
        {"version 2", hdr(rq, 0, 2), "unsupported KDS protocol version 2"},
        {"version 0", hdr(rq, 0, 0), "unsupported KDS protocol version 0"},
        {"message type 0", hdr(rq, 1, 0), "unknown message type 0"},
        {"message type 4", hdr(rs, 1, 4), "unknown message type 4"},
        {"reserved", hdr(er, 2, 0x80), "reserved field not zero"},
        {"body length beyond the limit", hdr(rq, 4, 0x01), "exceeds limit"},
        {"body length one short", hdr(rq, 7, uint8_t(rq[7] - 1)), "does not match header"},
        {"TLV overrunning the message", with_value(rq, 2, Bytes(kA1.begin(), kA1.end())), ""},
        {"missing RequestId", without(rq, 1), "missing RequestId"},
        {"RequestId of 3 octets", with_value(rq, 1, Bytes(3, 1)), "RequestId must be 4 octets"},
        {"missing Requester", without(rq, 2), "missing Requester"},
        {"Requester with a space", with_value(rq, 2, Bytes{'a', ' ', 'b'}), "Requester is not a valid identity"},
        {"Requester with octets ff fe", with_value(rq, 2, Bytes{0xff, 0xfe}), "Requester is not a valid identity"},
        {"Requester empty", with_value(rq, 2, Bytes{}), "Requester is not a valid identity"},
        {"Requester of 254 octets", with_value(rq, 2, Bytes(254, 'a')), "Requester is not a valid identity"},
        {"missing Peer", without(rq, 3), "missing Peer"},
        {"Peer with NUL", with_value(rq, 3, Bytes{'a', 0, 'b'}), "Peer is not a valid identity"},
        {"Flags of 2 octets", with_value(rq, 4, Bytes{0, 1}), "Flags must be 1 octet"},
        {"unknown flag bits", with_value(rq, 4, Bytes{0x81}), "unknown flag bits set"},
        {"PreviousKeyId of 15 octets", with_value(rq, 5, Bytes(15, 1)), "PreviousKeyId must be 16 octets, got 15"},
        {"duplicate Peer", appended(rq, {0, 3, 0, 1, 'x'}), "duplicate TLV 3"},
        {"unknown critical TLV", appended(rq, {0x80, 0x40, 0, 0}), "unknown critical TLV 64"},
        {"truncated TLV header", appended(rq, {0, 3}), "truncated TLV header"},
        {"missing KeyId", without(rs, 6), "missing KeyId"},
        {"KeyId of 17 octets", with_value(rs, 6, Bytes(17, 1)), "KeyId must be 16 octets, got 17"},
        {"missing Key", without(rs, 7), "missing Key"},
        {"Key of 31 octets", with_value(rs, 7, Bytes(31, 1)), "Key must be 32 octets"},
        {"missing Lifetime", without(rs, 8), "missing Lifetime"},
        {"Lifetime zero", with_value(rs, 8, Bytes(4, 0)), "Lifetime must not be zero"},
        {"missing Generation", without(rs, 11), "missing Generation"},
        {"IdentityA invalid", with_value(rs, 9, Bytes{'*'}), "IdentityA is not a valid identity"},
        {"missing IdentityB", without(rs, 10), "missing IdentityB"},
        {"missing ErrorCode", without(er, 12), "missing or bad ErrorCode"},
        {"ErrorCode of 1 octet", with_value(er, 12, Bytes{1}), "missing or bad ErrorCode"},
        {"ErrorText of 513 octets", with_value(er, 13, Bytes(513, 'e')), "ErrorText too long"},
        {"ErrorText with octets ff fe", with_value(er, 13, Bytes{'n', 0xff, 0xfe}), "ErrorText is not valid UTF-8"},
        {"ErrorText with a truncated sequence", with_value(er, 13, Bytes{'n', 0xc3}), "ErrorText is not valid UTF-8"},
        {"ErrorText with an overlong NUL", with_value(er, 13, Bytes{0xc0, 0x80}), "ErrorText is not valid UTF-8"},
        {"ErrorText with a surrogate", with_value(er, 13, Bytes{0xed, 0xa0, 0x80}), "ErrorText is not valid UTF-8"},
    };
    // the overrun case: declare a longer value than the message holds
    {
        Bytes b = rq;
        auto t = tlvs_of(b)[1];
        b[t.at + 2] = 0x0f;
        cases[7] = {"TLV overrunning the message", b, "overruns message"};
    }
    for (const auto& c : cases) {
        auto r = decode(c.bytes);
        expect_named(r, c.what);
        if (!r.ok()) {
            EXPECT_NE(r.error().detail().find(c.expect), std::string::npos) << c.what << ": " << detail(c.bytes);
        }
    }
    // The server answers each request-side corruption with a named Error and counts it.
    DeterministicRng rng(3);
    Server s(config(), rng);
    uint64_t before = s.counters().get("kds.rx.malformed");
    size_t answered = 0;
    for (const auto& c : cases) {
        auto out = s.handle(kA1, c.bytes, 0);
        auto m = decode(out.view());
        ASSERT_TRUE(m.ok()) << c.what;
        ASSERT_TRUE(std::holds_alternative<ErrorMessage>(*m)) << c.what;
        auto code = std::get<ErrorMessage>(*m).code;
        EXPECT_TRUE(code == ErrorCode::Malformed || code == ErrorCode::UnsupportedVersion) << c.what;
        EXPECT_FALSE(std::get<ErrorMessage>(*m).text.empty()) << c.what;
        ++answered;
    }
    EXPECT_EQ(s.counters().get("kds.rx.malformed") - before, answered);
    // A well-formed KeyResponse or Error sent to the server is not a request.
    for (const Bytes& b : {rs, er}) {
        auto m = decode(s.handle(kA1, b, 0).view());
        ASSERT_TRUE(m.ok());
        ASSERT_TRUE(std::holds_alternative<ErrorMessage>(*m));
    }
    EXPECT_EQ(s.counters().get("kds.rx.unexpected"), 2u);
    // and the server still grants a valid request
    auto ok = decode(s.handle(kA1, request_bytes(false), 0).view());
    ASSERT_TRUE(ok.ok());
    EXPECT_TRUE(std::holds_alternative<KeyResponse>(*ok));
}

// The encoder never produces an Error its own decoder refuses: long or invalid text is cut at a
// character boundary, well-formed multi-octet text is kept.
TEST(KdsCodecAttack, ErrorTextIsAlwaysEncodedAsValidUtf8) {
    std::string euro;
    for (int i = 0; i < 200; ++i) euro += "\xe2\x82\xac";  // 600 octets of U+20AC
    for (const std::string& text :
         {euro, std::string("bad \xff\xfe tail"), std::string("\xc3"), std::string("caf\xc3\xa9")}) {
        auto m = decode(encode(ErrorMessage{1, ErrorCode::Internal, text}).view());
        ASSERT_TRUE(m.ok()) << m.error().detail();
        const auto& got = std::get<ErrorMessage>(*m).text;
        EXPECT_LE(got.size(), 512u);
        EXPECT_EQ(text.compare(0, got.size(), got), 0);
    }
    EXPECT_EQ(std::get<ErrorMessage>(*decode(encode(ErrorMessage{1, ErrorCode::Internal, euro}).view())).text.size(),
              510u);
    EXPECT_EQ(std::get<ErrorMessage>(*decode(encode(ErrorMessage{1, ErrorCode::Internal, "bad \xff"}).view())).text,
              "bad ");
    EXPECT_EQ(std::get<ErrorMessage>(*decode(encode(ErrorMessage{1, ErrorCode::Internal, "caf\xc3\xa9"}).view())).text,
              "caf\xc3\xa9");
}

// ---------------------------------------------------------------- the same frames over mutual TLS
namespace {

struct SslCtxFree {
    void operator()(SSL_CTX* c) const { SSL_CTX_free(c); }
};
struct SslFree {
    void operator()(SSL* s) const { SSL_free(s); }
};

// A raw mutual-TLS client: sends arbitrary bytes as the request and reads what comes back.
struct RawClient {
    std::unique_ptr<SSL_CTX, SslCtxFree> ctx;
    explicit RawClient(const TlsCredentials& c) : ctx(SSL_CTX_new(TLS_client_method())) {
        BIO* b = BIO_new_mem_buf(c.cert_pem.data(), int(c.cert_pem.size()));
        X509* leaf = PEM_read_bio_X509(b, nullptr, nullptr, nullptr);
        SSL_CTX_use_certificate(ctx.get(), leaf);
        X509_free(leaf);
        while (X509* extra = PEM_read_bio_X509(b, nullptr, nullptr, nullptr))
            SSL_CTX_add1_chain_cert(ctx.get(), extra), X509_free(extra);
        ERR_clear_error();
        BIO_free(b);
        BIO* k = BIO_new_mem_buf(c.key_pem.data(), int(c.key_pem.size()));
        EVP_PKEY* key = PEM_read_bio_PrivateKey(k, nullptr, nullptr, nullptr);
        SSL_CTX_use_PrivateKey(ctx.get(), key);
        EVP_PKEY_free(key);
        BIO_free(k);
        X509_STORE* store = SSL_CTX_get_cert_store(ctx.get());
        BIO* a = BIO_new_mem_buf(c.anchors_pem.data(), int(c.anchors_pem.size()));
        while (X509* x = PEM_read_bio_X509(a, nullptr, nullptr, nullptr)) X509_STORE_add_cert(store, x), X509_free(x);
        ERR_clear_error();
        BIO_free(a);
        SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_PEER, nullptr);
    }
    // Returns the answer bytes ("" when the server closed without answering); false when the
    // connection or handshake failed.
    bool exchange(uint16_t port, BytesView frame, Bytes& answer, bool half_close = true) {
        answer.clear();
        int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        timeval tv{5, 0};
        ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
        sockaddr_in sa{};
        sa.sin_family = AF_INET;
        sa.sin_port = htons(port);
        sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        if (::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) {
            ::close(fd);
            return false;
        }
        std::unique_ptr<SSL, SslFree> ssl(SSL_new(ctx.get()));
        SSL_set_fd(ssl.get(), fd);
        SSL_set1_host(ssl.get(), "kds.operator.example");
        bool ok = SSL_connect(ssl.get()) == 1;
        if (ok) {
            if (!frame.empty()) ok = SSL_write(ssl.get(), frame.data(), int(frame.size())) == int(frame.size());
            if (ok && half_close) SSL_shutdown(ssl.get());  // close_notify: the server sees the end of the request
            uint8_t buf[4096];
            int n;
            while (ok && (n = SSL_read(ssl.get(), buf, sizeof buf)) > 0) answer.insert(answer.end(), buf, buf + n);
        }
        ERR_clear_error();
        ::close(fd);
        return ok;
    }
};

struct Pki {
    scenario::LabCa vendor_a = scenario::LabCa::create("Vendor A Root CA", "Vendor A", 1'700'000'000, 3650).value();
    scenario::LabCa op = scenario::LabCa::create("Operator Root CA", "Operator", 1'700'000'000, 3650).value();
    TlsCredentials creds(scenario::LabCa& ca, const std::string& id, const std::string& anchors) {
        auto c = ca.issue(id, int64_t(time(nullptr)) - 3600, 365).value();
        return TlsCredentials{c.chain_pem, c.key_pem, anchors};
    }
};

}  // namespace

TEST(KdsTlsAttack, MutatedFramesAreRefusedAndTheServerKeepsServing) {
    Pki pki;
    DeterministicRng rng(7);
    SystemClock clock;
    Server engine(config(), rng);
    TlsServer server(engine, clock);
    auto st = server.start("127.0.0.1", 0, pki.creds(pki.op, "kds.operator.example", pki.vendor_a.root_pem()));
    ASSERT_TRUE(st.ok()) << st.error().to_string();
    auto client_creds = pki.creds(pki.vendor_a, kA1, pki.op.root_pem());
    RawClient client(client_creds);

    const Bytes good = request_bytes(false);
    std::vector<std::pair<std::string, Bytes>> frames;
    for (size_t n : {size_t(1), size_t(7), kHeaderSize, kHeaderSize + 3, good.size() - 1})
        frames.emplace_back("cut to " + std::to_string(n), Bytes(good.begin(), good.begin() + long(n)));
    for (size_t i : {size_t(0), size_t(1), size_t(3), size_t(4), size_t(9), size_t(20), good.size() - 1}) {
        Bytes b = good;
        b[i] ^= 0xff;
        frames.emplace_back("octet " + std::to_string(i) + " flipped", b);
    }
    frames.emplace_back("unknown critical TLV", appended(good, {0x80, 0x40, 0, 0}));
    frames.emplace_back("Requester ff fe", with_value(good, 2, Bytes{0xff, 0xfe}));
    frames.emplace_back("a KeyResponse", response_bytes());
    frames.emplace_back("oversized header", Bytes{1, 1, 0, 0, 0xff, 0xff, 0xff, 0xff});
    frames.emplace_back("empty", Bytes{});

    size_t answered = 0, closed = 0;
    for (const auto& [what, frame] : frames) {
        Bytes answer;
        ASSERT_TRUE(client.exchange(server.port(), frame, answer)) << what << ": TLS connection failed";
        if (answer.empty()) {
            ++closed;  // a short or empty frame: nothing to answer, closed unanswered
        } else {
            auto m = decode(answer);
            ASSERT_TRUE(m.ok()) << what << ": answer does not decode";
            ASSERT_TRUE(std::holds_alternative<ErrorMessage>(*m)) << what << ": a mutated frame was granted a key";
            auto code = std::get<ErrorMessage>(*m).code;
            EXPECT_TRUE(code == ErrorCode::Malformed || code == ErrorCode::UnsupportedVersion) << what;
            ++answered;
        }
        // after every attack the server still grants a valid request
        auto k = fetch_key("127.0.0.1", server.port(), "kds.operator.example", client_creds,
                           KeyRequest{uint32_t(answered + closed), kA1, kB1, false, {}});
        ASSERT_TRUE(k.ok()) << "after " << what << ": " << k.error().to_string();
    }
    // 5 flips past the header, the critical TLV, ff fe and the KeyResponse are answered by the
    // engine; the bad version (UNSUPPORTED_VERSION, kds.rx.malformed) and the two oversized body
    // lengths (MALFORMED naming max_frame, kds.rejected.frame_too_large) by the framer; the 5
    // short frames and the empty one are closed.
    EXPECT_EQ(answered, 11u);
    EXPECT_EQ(closed, 6u);
    EXPECT_EQ(engine.counters().get("kds.rejected.frame_too_large"), 2u);
    EXPECT_EQ(engine.counters().get("kds.rx.truncated"), 5u);
    EXPECT_EQ(engine.counters().get("kds.rx.malformed") + engine.counters().get("kds.rx.unexpected") +
                  engine.counters().get("kds.rejected.frame_too_large"),
              answered);
    std::cout << "[ info ] mutated frames over TLS: " << answered << " answered with a named Error, " << closed
              << " closed unanswered (unreadable framing)\n";
    auto k = fetch_key("127.0.0.1", server.port(), "kds.operator.example", client_creds,
                       KeyRequest{99, kA1, kB1, false, {}});
    ASSERT_TRUE(k.ok()) << k.error().to_string();
    server.stop();
}
