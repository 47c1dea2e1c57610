// Adversarial-peer suite (issue 11): a real x2sec IKE daemon (IkeRuntime with ike::Engine, real
// UDP on 127.0.0.1, its control socket on a temporary unix socket) and a scripted attacker
// (attacker.hpp: the wire codec and the key schedule, not a second engine).  Each case runs on a
// fresh IKE SA after a real IKE_SA_INIT, sends one hostile message, and asserts
//   - the named answer (a notify type) or a silent drop (proved by a later message being the
//     first thing answered),
//   - the counter that counts it,
//   - that the daemon is alive: its loop runs and the control socket answers list-sas and events.
#include <gtest/gtest.h>

#include <chrono>
#include <csignal>
#include <cstring>
#include <filesystem>
#include <poll.h>
#include <sys/wait.h>
#include <unistd.h>
#include <x2sec/common/child_sa.hpp>
#include <x2sec/common/log.hpp>
#include <x2sec/ikev2/engine.hpp>
#include <x2sec/runtime/control.hpp>
#include <x2sec/runtime/engine_api.hpp>
#include <x2sec/runtime/ike_runtime.hpp>

#include "attacker.hpp"

using namespace x2sec;
using namespace x2sec::test;
using nlohmann::json;
namespace n = x2sec::ike::wire::notify;
using PT = x2sec::ike::wire::PayloadType;
using EX = x2sec::ike::wire::ExchangeType;

namespace {

const std::string kPsk = "x2 shared secret handed out by the network";
const IpAddress kAttackerInner = IpAddress::v4(203, 0, 113, 1);
const IpAddress kDaemonInner = IpAddress::v4(203, 0, 113, 2);

TrafficSelector host(const IpAddress& a) {
    return TrafficSelector::from_prefix(a, 32);
}

// The daemon runs in a child process (fork), so a crash is an assertion ("the daemon died"),
// not the end of the suite.
class Daemon {
public:
    Daemon() {
        m_dir = (std::filesystem::temp_directory_path() /
                 ("x2sec-adv-" + std::to_string(::getpid()) + "-" + std::to_string(s_count++)))
                    .string();
        std::filesystem::remove_all(m_dir);
        std::filesystem::create_directories(m_dir);
        m_socket = m_dir + "/ctl.sock";
        int fds[2];
        if (::pipe(fds) != 0) throw std::runtime_error("pipe");
        m_pid = ::fork();
        if (m_pid < 0) throw std::runtime_error("fork");
        if (m_pid == 0) {
            ::close(fds[0]);
            ::_exit(child(fds[1]));
        }
        ::close(fds[1]);
        uint16_t port = 0;
        pollfd p{fds[0], POLLIN, 0};
        if (::poll(&p, 1, 10000) == 1 && ::read(fds[0], &port, sizeof port) == sizeof port) m_port = port;
        ::close(fds[0]);
        if (m_port == 0) throw std::runtime_error("the daemon did not start");
    }
    ~Daemon() {
        if (alive()) {
            (void)ctl({{"cmd", "stop"}});
            for (int i = 0; i < 100 && alive(); ++i) ::usleep(20'000);
            if (alive()) ::kill(m_pid, SIGKILL);
        }
        if (!m_reaped) ::waitpid(m_pid, nullptr, 0);
        std::filesystem::remove_all(m_dir);
    }
    uint16_t port() const { return m_port; }
    Result<json> ctl(const json& req) { return runtime::control_request(m_socket, req, 5000); }
    uint64_t counter(const std::string& name) {
        auto r = ctl({{"cmd", "counters"}});
        if (!r) return ~0ull;
        return (*r)["counters"].value(name, uint64_t(0));
    }
    // A counter and its refinements: "ike.rx.invalid_syntax" plus "ike.rx.invalid_syntax.<where>".
    uint64_t counter_family(const std::string& name) {
        auto r = ctl({{"cmd", "counters"}});
        if (!r) return ~0ull;
        uint64_t sum = 0;
        for (const auto& [k, v] : (*r)["counters"].items())
            if (k == name || k.rfind(name + ".", 0) == 0) sum += v.get<uint64_t>();
        return sum;
    }
    // Waits, bounded, until counter_family(name) reaches `want`, and returns its value then (or
    // ~0 once the daemon does not answer).  A datagram the attacker sent is processed some time
    // after its send() returned: loopback delivery runs in softirq context, which a loaded machine
    // defers to ksoftirqd, so a later control request (a unix socket, delivered at once) can be
    // served first.  A response the daemon does not answer gives no other point to wait for.
    uint64_t wait_counter_family(const std::string& name, uint64_t want, int timeout_ms = 10000) {
        auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
        uint64_t v = counter_family(name);
        while (v < want && v != ~0ull && std::chrono::steady_clock::now() < until) {
            ::usleep(10'000);
            v = counter_family(name);
        }
        return v;
    }
    json sas() {
        auto r = ctl({{"cmd", "list-sas"}});
        return r ? (*r)["sas"] : json::array();
    }
    bool alive() {
        if (m_reaped) return false;
        int status = 0;
        if (::waitpid(m_pid, &status, WNOHANG) == m_pid) {
            m_reaped = true;
            m_status = status;
            return false;
        }
        return true;
    }
    // The process runs and the control socket answers list-sas and events.
    void expect_alive() {
        ASSERT_TRUE(alive()) << "the daemon died: "
                             << (WIFSIGNALED(m_status) ? std::string("signal ") + strsignal(WTERMSIG(m_status))
                                                       : "exit " + std::to_string(WEXITSTATUS(m_status)));
        auto l = ctl({{"cmd", "list-sas"}});
        EXPECT_TRUE(l.ok()) << "list-sas: " << (l ? "" : l.error().detail());
        auto e = ctl({{"cmd", "events"}, {"since", 0}});
        EXPECT_TRUE(e.ok()) << "events: " << (e ? "" : e.error().detail());
    }

private:
    int child(int port_fd) {
        ike::PeerConfig p;
        p.name = "henb-a";
        p.local_addr = p.remote_addr = IpAddress::v4(127, 0, 0, 1);
        p.local_port = p.local_natt_port = 0;  // ephemeral: tests run in parallel
        p.local_id = ike::Identity::parse("fqdn:b.henb.example").value();
        p.remote_id = ike::Identity::parse("fqdn:a.henb.example").value();
        p.local_auth = p.remote_auth = ike::AuthMethod::Psk;
        p.psk = SecureBytes(as_bytes(kPsk));
        p.ike_proposals = {ike::parse_ike_proposal("aes128gcm16-prfsha256-ecp256").value()};
        ike::ChildConfig c;
        c.name = "x2";
        c.local_ts = {host(kDaemonInner)};
        c.remote_ts = {host(kAttackerInner)};
        c.proposals = {ike::parse_child_proposal("aes128gcm16").value()};
        c.rekey_seconds = 0;
        p.children = {c};
        p.dpd_interval_ms = 0;
        p.ike_rekey_seconds = 0;
        ike::EngineConfig cfg;
        cfg.peers = {p};
        MemoryChildSaBackend backend;
        DeterministicRng rng(42);
        SystemClock clock;
        auto engine = std::make_unique<runtime::EngineAdapter<ike::Engine>>(cfg, backend, rng);
        runtime::RuntimeOptions opts;
        opts.control_socket = m_socket;
        opts.shutdown_grace_ms = 200;  // the attacker does not answer the daemon's deletes
        auto rt = runtime::IkeRuntime::create(cfg, std::move(engine), opts, clock);
        if (!rt) return 3;
        uint16_t port = (*rt)->ike_endpoints().at(0).port;
        if (::write(port_fd, &port, sizeof port) != sizeof port) return 4;
        ::close(port_fd);
        return (*rt)->run();
    }

    static inline int s_count = 0;
    std::string m_dir, m_socket;
    pid_t m_pid = -1;
    uint16_t m_port = 0;
    bool m_reaped = false;
    int m_status = 0;
};

class Adversarial : public ::testing::Test {
protected:
    static void SetUpTestSuite() { log::set_level("warn"); }
    Daemon d;
    uint64_t seed = 1000;

    // A fresh IKE SA after a real IKE_SA_INIT.
    std::unique_ptr<Attacker> fresh() {
        auto a = std::make_unique<Attacker>(d.port(), seed++);
        std::string why;
        EXPECT_TRUE(a->ike_sa_init(why)) << why;
        return a;
    }
    // The payloads of a correct IKE_AUTH request.
    std::vector<w::Payload> auth_payloads(Attacker& a, uint8_t id_type = 2, Bytes id = to_bytes("a.henb.example")) {
        w::IdPayload idp{id_type, id};
        return {{PT::IDi, false, idp},
                a.auth_for(idp, as_bytes(kPsk)),
                Attacker::esp_sa(0xa0000001),
                Attacker::ts(true, {host(kAttackerInner)}),
                Attacker::ts(false, {host(kDaemonInner)})};
    }
    static std::vector<w::Payload> without(std::vector<w::Payload> v, PT t) {
        std::erase_if(v, [&](const w::Payload& p) { return p.type == t; });
        return v;
    }
    // Sends a request and returns the response to it.
    std::optional<Received> ask(Attacker& a, EX ex, const std::vector<w::Payload>& inner, const SealOptions& o = {}) {
        uint32_t mid = a.next_mid();
        a.request(ex, inner, o);
        return a.response_to(mid);
    }
    // An established IKE SA with Child SA "x2".
    std::unique_ptr<Attacker> established() {
        auto a = fresh();
        auto r = ask(*a, EX::IkeAuth, auth_payloads(*a));
        EXPECT_TRUE(r && r->protected_ && w::find_payload(r->payloads, PT::AUTH)) << "IKE_AUTH not completed";
        return a;
    }
    // Expects an answer carrying exactly this error notify.
    static std::string notifies(const Received& r) {
        std::string s;
        for (const auto& p : r.payloads)
            if (auto* nt = p.as<w::NotifyPayload>()) s += std::string(s.empty() ? "" : ", ") + n::name(nt->type);
        return s.empty() ? "none" : s;
    }
    static void expect_notify(const std::optional<Received>& r, uint16_t type) {
        ASSERT_TRUE(r.has_value()) << "no answer (expected " << n::name(type) << ")";
        EXPECT_TRUE(r->notify(type) != nullptr)
            << "the answer has no " << n::name(type) << " (its notifies: " << notifies(*r) << ")";
    }
    // Proves a silent drop: a liveness check sent afterwards (with the Message ID the dropped
    // request would have used) is the first request answered.
    static void expect_dropped_then_alive(Attacker& a, uint32_t mid) {
        a.set_next_mid(mid);
        uint32_t probe = a.next_mid();
        a.request(EX::Informational, {});
        auto r = a.response_to(probe);
        ASSERT_TRUE(r.has_value()) << "no answer to the liveness check after the dropped message";
        EXPECT_TRUE(r->protected_);
        EXPECT_TRUE(r->payloads.empty());
    }
    bool any_child_with_ts(const std::string& ts) {
        for (const auto& s : d.sas())
            for (const auto& c : s["children"])
                for (const char* k : {"ts_local", "ts_remote"})
                    for (const auto& t : c[k])
                        if (t.get<std::string>() == ts) return true;
        return false;
    }
    size_t children() {
        size_t k = 0;
        for (const auto& s : d.sas()) k += s["children"].size();
        return k;
    }
};

// ------------------------------------------------------------------ identities

TEST_F(Adversarial, InvalidUtf8FqdnIsRefusedEscapedAndTheControlSocketSurvives) {
    for (uint8_t type : {uint8_t(2), uint8_t(3)}) {  // ID_FQDN, ID_RFC822_ADDR
        SCOPED_TRACE(int(type));
        auto a = fresh();
        uint64_t before = d.counter("ike.auth.no_peer_config");
        auto r = ask(*a, EX::IkeAuth, auth_payloads(*a, type, {0xff, 0xfe}));
        expect_notify(r, n::AuthenticationFailed);
        EXPECT_EQ(d.counter("ike.auth.no_peer_config"), before + 1);
        d.expect_alive();
        if (HasFatalFailure()) return;
        // The identity is in the events, escaped.
        auto ev = d.ctl({{"cmd", "events"}, {"since", 0}});
        ASSERT_TRUE(ev.ok());
        bool found = false;
        for (const auto& e : (*ev)["events"])
            found |= e["detail"].get<std::string>().find(type == 2 ? "fqdn:\\xff\\xfe" : "email:\\xff\\xfe") !=
                     std::string::npos;
        EXPECT_TRUE(found) << ev->dump();
    }
}

TEST_F(Adversarial, OversizedIdentityIsRefused) {
    auto a = fresh();
    uint64_t before = d.counter("ike.auth.no_peer_config");
    auto r = ask(*a, EX::IkeAuth, auth_payloads(*a, 2, Bytes(8000, 'x')));
    expect_notify(r, n::AuthenticationFailed);
    EXPECT_EQ(d.counter("ike.auth.no_peer_config"), before + 1);
    d.expect_alive();
    auto ev = d.ctl({{"cmd", "events"}, {"since", 0}});
    ASSERT_TRUE(ev.ok());
    EXPECT_LT(runtime::control_dump(*ev).size(), runtime::kMaxControlFrame);
}

// ------------------------------------------------------------------ IKE_AUTH, missing and duplicated payloads

TEST_F(Adversarial, IkeAuthWithMissingPayloadsIsAnsweredInvalidSyntax) {
    for (PT missing : {PT::IDi, PT::AUTH, PT::SA, PT::TSi, PT::TSr}) {
        SCOPED_TRACE(w::to_string(missing));
        auto a = fresh();
        uint64_t before = d.counter_family("ike.rx.invalid_syntax");
        auto r = ask(*a, EX::IkeAuth, without(auth_payloads(*a), missing));
        expect_notify(r, n::InvalidSyntax);
        EXPECT_EQ(d.counter_family("ike.rx.invalid_syntax"), before + 1)
            << "an IKE_AUTH request without " << w::to_string(missing)
            << " must be refused as INVALID_SYNTAX (checked payload accessors: needs h-ike for SA/TSi/TSr)";
        EXPECT_EQ(children(), 0u) << "no Child SA from an IKE_AUTH without " << w::to_string(missing);
        d.expect_alive();
        if (HasFatalFailure()) return;
    }
}

TEST_F(Adversarial, DuplicatedPayloadsAreAnsweredInvalidSyntax) {
    for (PT dup : {PT::IDi, PT::AUTH, PT::SA, PT::TSi}) {
        SCOPED_TRACE(w::to_string(dup));
        auto a = fresh();
        auto pl = auth_payloads(*a);
        for (const auto& p : std::vector<w::Payload>(pl))
            if (p.type == dup) pl.push_back(p);
        uint64_t before = d.counter_family("ike.rx.invalid_syntax");
        expect_notify(ask(*a, EX::IkeAuth, pl), n::InvalidSyntax);
        EXPECT_EQ(d.counter_family("ike.rx.invalid_syntax"), before + 1);
        d.expect_alive();
        if (HasFatalFailure()) return;
    }
}

TEST_F(Adversarial, UnknownCriticalPayloadIsAnsweredUnsupportedCriticalPayload) {
    auto a = fresh();
    auto pl = auth_payloads(*a);
    pl.insert(pl.begin() + 1, w::Payload{static_cast<PT>(200), true, w::UnknownPayload{200, Bytes{1, 2, 3, 4}}});
    uint64_t before = d.counter("ike.rx.unsupported_critical_payload");
    auto r = ask(*a, EX::IkeAuth, pl);
    expect_notify(r, n::UnsupportedCriticalPayload);
    if (r && r->notify(n::UnsupportedCriticalPayload)) {
        EXPECT_EQ(r->notify(n::UnsupportedCriticalPayload)->data, Bytes{200});
    }
    EXPECT_EQ(d.counter("ike.rx.unsupported_critical_payload"), before + 1);
    d.expect_alive();
    // On an established SA, in an INFORMATIONAL request: the same answer, the SA survives.
    auto b = established();
    before = d.counter("ike.rx.unsupported_critical_payload");
    expect_notify(ask(*b, EX::Informational, {{static_cast<PT>(201), true, w::UnknownPayload{201, {}}}}),
                  n::UnsupportedCriticalPayload);
    EXPECT_EQ(d.counter("ike.rx.unsupported_critical_payload"), before + 1);
    expect_dropped_then_alive(*b, b->next_mid());
    d.expect_alive();
}

// ------------------------------------------------------------------ traffic selectors and transforms (responder)

TEST_F(Adversarial, WidenedSelectorsAreNarrowedOrRefused) {
    auto a = fresh();
    auto pl = auth_payloads(*a);
    pl[3] = Attacker::ts(true, {TrafficSelector::from_prefix(IpAddress::v4(0, 0, 0, 0), 0)});
    pl[4] = Attacker::ts(false, {TrafficSelector::from_prefix(IpAddress::v4(0, 0, 0, 0), 0)});
    auto r = ask(*a, EX::IkeAuth, pl);
    ASSERT_TRUE(r.has_value());
    EXPECT_FALSE(any_child_with_ts("0.0.0.0/0")) << "the daemon installed the attacker's widened selectors";
    if (auto* tsr = w::find_payload(r->payloads, PT::TSr)) {
        for (const auto& t : tsr->as<w::TsPayload>()->selectors) {
            EXPECT_EQ(t, host(kDaemonInner));
        }
    }
    d.expect_alive();
}

TEST_F(Adversarial, MalformedSelectorsAreRefused) {
    // A TS of type 7 with a bad length does not decode: INVALID_SYNTAX.
    {
        auto a = fresh();
        auto pl = auth_payloads(*a);
        pl[3] = w::Payload{PT::TSi, false,
                           w::UnknownPayload{44, hex("01000000"
                                                     "07000011"
                                                     "0000ffff"
                                                     "cb007101"
                                                     "cb00710100")}};
        uint64_t before = d.counter_family("ike.rx.invalid_syntax");
        expect_notify(ask(*a, EX::IkeAuth, pl), n::InvalidSyntax);
        EXPECT_EQ(d.counter_family("ike.rx.invalid_syntax"), before + 1);
        EXPECT_EQ(children(), 0u);
        d.expect_alive();
        if (HasFatalFailure()) return;
    }
    // Start address above end address: well-formed on the wire but selecting nothing, so no
    // intersection with the policy: TS_UNACCEPTABLE (or INVALID_SYNTAX), never a Child SA.
    auto a = fresh();
    auto pl = auth_payloads(*a);
    pl[3] = w::Payload{PT::TSi, false,
                       w::UnknownPayload{44, hex("01000000"
                                                 "07000010"
                                                 "0000ffff"
                                                 "cb007102"
                                                 "cb007101")}};
    auto r = ask(*a, EX::IkeAuth, pl);
    ASSERT_TRUE(r.has_value());
    EXPECT_TRUE(r->notify(n::TsUnacceptable) || r->notify(n::InvalidSyntax)) << notifies(*r);
    EXPECT_EQ(children(), 0u);
    d.expect_alive();
}

TEST_F(Adversarial, UnofferedTransformsAreAnsweredNoProposalChosen) {
    auto a = fresh();
    auto pl = auth_payloads(*a);
    pl[2] = Attacker::esp_sa(0xa0000002, 12, 256);  // AES-CBC-256/HMAC-SHA256: not configured
    auto r = ask(*a, EX::IkeAuth, pl);
    ASSERT_TRUE(r.has_value());
    // RFC 7296 1.2/2.21.1: the IKE SA is established, the Child SA refused.
    EXPECT_TRUE(r->notify(n::NoProposalChosen) != nullptr);
    EXPECT_EQ(children(), 0u);
    d.expect_alive();
}

// ------------------------------------------------------------------ protection: ICV, padding, replays, window

TEST_F(Adversarial, BadIcvAndBadPaddingAreDroppedSilently) {
    auto a = established();
    for (int k = 0; k < 2; ++k) {
        SCOPED_TRACE(k == 0 ? "bad ICV" : "bad padding");
        SealOptions o;
        if (k == 0)
            o.corrupt_icv = true;
        else
            o.pad_length = 200;
        uint64_t before = d.counter("ike.rx.integrity_check_failed");
        uint32_t mid = a->next_mid();
        a->request(EX::Informational, {}, o);
        expect_dropped_then_alive(*a, mid);
        EXPECT_EQ(d.counter("ike.rx.integrity_check_failed"), before + 1);
    }
    // Also on the half-open SA, in IKE_AUTH: dropped, and the real IKE_AUTH still completes.
    auto b = fresh();
    uint64_t before = d.counter("ike.rx.integrity_check_failed");
    SealOptions bad;
    bad.corrupt_icv = true;
    b->request(EX::IkeAuth, auth_payloads(*b), bad);
    b->set_next_mid(1);
    auto r = ask(*b, EX::IkeAuth, auth_payloads(*b));
    ASSERT_TRUE(r.has_value());
    EXPECT_TRUE(w::find_payload(r->payloads, PT::AUTH) != nullptr);
    EXPECT_EQ(d.counter("ike.rx.integrity_check_failed"), before + 1);
    d.expect_alive();
}

TEST_F(Adversarial, ReplaysAreAnsweredFromTheCacheOrDropped) {
    auto a = fresh();
    uint32_t mid = a->next_mid();
    Bytes auth = a->request(EX::IkeAuth, auth_payloads(*a));
    auto first = a->response_to(mid);
    ASSERT_TRUE(first.has_value());
    // The same IKE_AUTH again: a retransmission, answered with the cached response.
    uint64_t before = d.counter("ike.rx.retransmit");
    a->send_raw(auth);
    auto again = a->response_to(mid);
    ASSERT_TRUE(again.has_value());
    EXPECT_EQ(d.counter("ike.rx.retransmit"), before + 1);
    // Liveness #2, then the IKE_AUTH (#1) once more: behind the window now... #1 is still the
    // cached exchange only until #2 is answered; after that it is stale and dropped.
    ASSERT_TRUE(ask(*a, EX::Informational, {}).has_value());
    before = d.counter("ike.rx.invalid_message_id");
    a->send_raw(auth);
    expect_dropped_then_alive(*a, a->next_mid());
    EXPECT_EQ(d.counter("ike.rx.invalid_message_id"), before + 1);
    EXPECT_EQ(children(), 1u) << "a replayed IKE_AUTH created another Child SA";
    d.expect_alive();
}

TEST_F(Adversarial, OutOfWindowMessageIdsAreNotProcessed) {
    auto a = established();
    uint64_t before = d.counter("ike.rx.invalid_message_id");
    uint64_t tx_before = d.counter("ike.tx.invalid_message_id");
    uint32_t expected = a->next_mid();
    // Ahead of the window: not processed; answered with INVALID_MESSAGE_ID in a new request.
    a->set_next_mid(expected + 40);
    a->request(EX::Informational, {{PT::Delete, false, w::DeletePayload{w::ProtocolId::Ike, 0, {}}}});
    auto note = a->receive();
    ASSERT_TRUE(note.has_value()) << "no INVALID_MESSAGE_ID notify";
    EXPECT_FALSE(note->header.response());
    EXPECT_TRUE(note->notify(n::InvalidMessageId) != nullptr);
    EXPECT_EQ(d.counter("ike.rx.invalid_message_id"), before + 1);
    EXPECT_EQ(d.counter("ike.tx.invalid_message_id"), tx_before + 1);
    // Answer the daemon's request (we are polite), then show that the SA lives (the Delete of
    // the out-of-window request was not processed).
    a->send_raw(a->seal(EX::Informational, note->header.message_id, {}, SealOptions{false, std::nullopt, true}));
    expect_dropped_then_alive(*a, expected);
    EXPECT_EQ(d.sas().size(), 1u);
    // Far behind (a huge Message ID wrapping around): dropped silently.
    before = d.counter("ike.rx.invalid_message_id");
    a->set_next_mid(0xfffffff0u);
    a->request(EX::Informational, {});
    expect_dropped_then_alive(*a, expected + 1);
    EXPECT_GE(d.counter("ike.rx.invalid_message_id"), before + 1);
    d.expect_alive();
}

// ------------------------------------------------------------------ CREATE_CHILD_SA requests to the daemon

TEST_F(Adversarial, CreateChildSaRequestsWithMissingPayloadsAreAnsweredInvalidSyntax) {
    // A new Child SA request needs SA, Nonce, TSi, TSr; an IKE SA rekey needs SA, Nonce, KE.
    struct Case {
        const char* what;
        bool ike_rekey;
        PT missing;
    };
    for (const Case& c : {Case{"child: no Nonce", false, PT::Nonce}, Case{"child: no SA", false, PT::SA},
                          Case{"child: no TSi", false, PT::TSi}, Case{"IKE rekey: no KE", true, PT::KE},
                          Case{"IKE rekey: no Nonce", true, PT::Nonce}, Case{"IKE rekey: no SA", true, PT::SA}}) {
        SCOPED_TRACE(c.what);
        auto a = established();
        std::vector<w::Payload> pl;
        if (c.ike_rekey) {
            w::Proposal pr;
            pr.protocol = w::ProtocolId::Ike;
            pr.spi = Bytes(8, 0x5a);
            pr.transforms = {w::Transform::make(w::TransformType::Encr, 20, 128),
                             w::Transform::make(w::TransformType::Prf, 5),
                             w::Transform::make(w::TransformType::Dh, 19)};
            pl = {{PT::SA, false, w::SaPayload{{pr}}}, a->nonce(), a->ke()};
        } else {
            pl = {Attacker::esp_sa(0xa0000003), a->nonce(), Attacker::ts(true, {host(kAttackerInner)}),
                  Attacker::ts(false, {host(kDaemonInner)})};
        }
        pl = without(pl, c.missing);
        uint64_t before = d.counter_family("ike.rx.invalid_syntax");
        size_t sas_before = d.sas().size(), children_before = children();
        auto r = ask(*a, EX::CreateChildSa, pl);
        expect_notify(r, n::InvalidSyntax);
        EXPECT_EQ(d.counter_family("ike.rx.invalid_syntax"), before + 1);
        EXPECT_EQ(d.sas().size(), sas_before);
        EXPECT_EQ(children(), children_before);
        expect_dropped_then_alive(*a, a->next_mid());
        d.expect_alive();
        if (HasFatalFailure()) return;
        // Leave: delete the IKE SA.
        ask(*a, EX::Informational, {{PT::Delete, false, w::DeletePayload{w::ProtocolId::Ike, 0, {}}}});
    }
}

// ------------------------------------------------------------------ CREATE_CHILD_SA responses to the daemon

// The daemon rekeys (control socket) and the attacker answers its CREATE_CHILD_SA request.
class AdversarialResponder : public Adversarial {
protected:
    // Established SA, then the daemon's rekey request (child "x2" or the IKE SA).
    std::optional<Received> rekey_request(Attacker& a, bool child) {
        auto sas = d.sas();
        if (sas.size() != 1) return std::nullopt;
        json req{{"cmd", "rekey"}, {"ike_sa_id", sas[0]["id"]}};
        if (child) req["child"] = "x2";
        if (!d.ctl(req)) return std::nullopt;
        auto r = a.receive();
        if (!r || r->header.response() || r->header.exchange != EX::CreateChildSa) return std::nullopt;
        return r;
    }
    void answer(Attacker& a, const Received& req, const std::vector<w::Payload>& pl) {
        SealOptions o;
        o.response = true;
        a.send_raw(a.seal(EX::CreateChildSa, req.header.message_id, pl, o));
    }
    // The response a correct peer would give to a child rekey request.
    std::vector<w::Payload> child_answer(Attacker& a, const Received& req) {
        std::vector<w::Payload> pl{Attacker::esp_sa(0xb0000001, 20, 128, true), a.nonce()};
        if (auto* p = w::find_payload(req.payloads, PT::TSi)) pl.push_back(*p);
        if (auto* p = w::find_payload(req.payloads, PT::TSr)) pl.push_back(*p);
        // Echo the ESN choice the daemon offered (its first proposal's ESN transform).
        if (auto* sa = w::find_payload(req.payloads, PT::SA))
            if (auto* s = sa->as<w::SaPayload>(); s && !s->proposals.empty()) {
                auto prop = s->proposals[0];
                prop.spi = {0xb0, 0, 0, 1};
                pl[0] = w::Payload{PT::SA, false, w::SaPayload{{prop}}};
            }
        return pl;
    }
};

TEST_F(AdversarialResponder, ChildRekeyResponsesWithMissingPayloadsFailTheRekeyNotTheDaemon) {
    for (PT missing : {PT::Nonce, PT::SA, PT::TSi, PT::TSr}) {
        SCOPED_TRACE(w::to_string(missing));
        auto a = established();
        auto req = rekey_request(*a, true);
        ASSERT_TRUE(req.has_value()) << "the daemon sent no CREATE_CHILD_SA request";
        uint64_t before = d.counter_family("ike.rx.invalid_syntax");
        answer(*a, *req, without(child_answer(*a, *req), missing));
        // The daemon counts it and does not crash (issue 11: a missing Nonce was a SIGSEGV).
        uint64_t after = d.wait_counter_family("ike.rx.invalid_syntax", before + 1);
        d.expect_alive();
        if (HasFatalFailure()) return;
        EXPECT_EQ(after, before + 1) << "a CREATE_CHILD_SA response without " << w::to_string(missing)
                                     << " must count as invalid_syntax";
        EXPECT_FALSE(any_child_with_ts("0.0.0.0/0"));
        // Nothing of the failed rekey is installed: at most the old "x2".
        EXPECT_LE(children(), 1u);
        ask(*a, EX::Informational, {{PT::Delete, false, w::DeletePayload{w::ProtocolId::Ike, 0, {}}}});
    }
}

TEST_F(AdversarialResponder, IkeRekeyResponseWithoutKeFailsTheRekeyNotTheDaemon) {
    auto a = established();
    auto req = rekey_request(*a, false);
    ASSERT_TRUE(req.has_value()) << "the daemon sent no CREATE_CHILD_SA request";
    auto* sa = w::find_payload(req->payloads, PT::SA);
    ASSERT_NE(sa, nullptr);
    auto prop = sa->as<w::SaPayload>()->proposals.at(0);
    prop.spi = Bytes(8, 0x77);
    uint64_t before = d.counter_family("ike.rx.invalid_syntax");
    answer(*a, *req, {{PT::SA, false, w::SaPayload{{prop}}}, a->nonce()});  // no KE
    uint64_t after = d.wait_counter_family("ike.rx.invalid_syntax", before + 1);
    d.expect_alive();
    EXPECT_EQ(after, before + 1);
    EXPECT_EQ(d.sas().size(), 1u) << "a half-done IKE rekey left another IKE SA";
}

TEST_F(AdversarialResponder, WidenedSelectorsInAResponseAreNotInstalled) {
    auto a = established();
    auto req = rekey_request(*a, true);
    ASSERT_TRUE(req.has_value());
    auto pl = child_answer(*a, *req);
    pl[2] = Attacker::ts(true, {TrafficSelector::from_prefix(IpAddress::v4(0, 0, 0, 0), 0)});
    pl[3] = Attacker::ts(false, {TrafficSelector::from_prefix(IpAddress::v4(0, 0, 0, 0), 0)});
    uint64_t before = d.counter_family("ike.rx.ts_unacceptable");
    answer(*a, *req, pl);
    // Checked once the daemon has processed the answer (not before: that would pass vacuously).
    EXPECT_EQ(d.wait_counter_family("ike.rx.ts_unacceptable", before + 1), before + 1);
    d.expect_alive();
    EXPECT_FALSE(any_child_with_ts("0.0.0.0/0"))
        << "the daemon installed selectors the responder widened (needs h-ike: initiator-side subset check)";
}

TEST_F(AdversarialResponder, UnofferedTransformInAResponseIsNotInstalled) {
    auto a = established();
    auto req = rekey_request(*a, true);
    ASSERT_TRUE(req.has_value());
    auto pl = child_answer(*a, *req);
    pl[0] = Attacker::esp_sa(0xb0000002, 12, 256);  // AES-CBC-256/HMAC-SHA256, never offered
    uint64_t before = d.counter_family("ike.rx.no_proposal_chosen");
    answer(*a, *req, pl);
    EXPECT_EQ(d.wait_counter_family("ike.rx.no_proposal_chosen", before + 1), before + 1);
    d.expect_alive();
    for (const auto& s : d.sas())
        for (const auto& c : s["children"])
            EXPECT_EQ(c["cipher"], "AES_GCM_16_128")
                << "the daemon installed a transform it did not offer (needs h-ike: chosen-transform check)";
}

}  // namespace
