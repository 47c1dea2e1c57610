#include <gtest/gtest.h>

#include <x2sec/policy/config.hpp>
#include <x2sec/policy/decision.hpp>

using namespace x2sec;
using namespace x2sec::policy;

namespace {
LocalFacts vendor_a(bool cmp = true, bool kds = true) {
    LocalFacts l;
    l.cmp_supported = cmp;
    l.cmp_server_configured = cmp;
    l.kds_configured = kds;
    l.current_cert_anchor = "vendor-a";
    return l;
}
bool mentions(const Decision& d, const std::string& s) {
    for (auto& st : d.steps)
        if (st.find(s) != std::string::npos) return true;
    return false;
}
}  // namespace

TEST(Decision, DirectInterfaceDisabled) {
    PeerFacts p;
    p.direct_interface = false;
    EXPECT_EQ(decide(vendor_a(), p).action, Action::Disabled);
    LocalFacts l = vendor_a();
    l.direct_interface = false;
    auto d = decide(l, PeerFacts{});
    EXPECT_EQ(d.action, Action::Disabled);
    EXPECT_TRUE(mentions(d, "on this node"));
}

TEST(Decision, IpsecOffGivesPlainX2WithWarning) {
    PeerFacts p;
    p.ipsec = IpsecPolicy::Off;
    auto d = decide(vendor_a(), p);
    EXPECT_EQ(d.action, Action::PlainX2);
    ASSERT_TRUE(d.warning.has_value());
    EXPECT_NE(d.warning->find("unprotected"), std::string::npos);
    EXPECT_EQ(d.basis, "Proposal 1 (IPsec optional)");
}

TEST(Decision, SameCaFromHint) {
    PeerFacts p;
    p.peer_cert_anchor = "vendor-a";
    auto d = decide(vendor_a(), p);
    EXPECT_EQ(d.action, Action::IkeCurrentCert);
    EXPECT_EQ(d.basis, "Proposal 2 (same CA)");
    EXPECT_FALSE(d.warning.has_value());
}

TEST(Decision, SameCaFromCertreq) {
    PeerFacts p;
    p.certreq_anchors = std::vector<std::string>{"operator", "vendor-a"};
    EXPECT_EQ(decide(vendor_a(), p).action, Action::IkeCurrentCert);
}

TEST(Decision, UnknownPeerCaTriesCurrentCertificate) {
    auto d = decide(vendor_a(), PeerFacts{});
    EXPECT_EQ(d.action, Action::IkeCurrentCert);
    EXPECT_TRUE(mentions(d, "not known yet"));
}

TEST(Decision, DifferentCaFromCertreqEnrolsWhenCmpSupported) {
    PeerFacts p;
    p.certreq_anchors = std::vector<std::string>{"vendor-b", "operator"};
    auto d = decide(vendor_a(), p);
    EXPECT_EQ(d.action, Action::EnrolThenIkeOperatorCert);
    EXPECT_TRUE(mentions(d, "does not include our anchor 'vendor-a'"));
}

TEST(Decision, AuthFailedUntrustedCaReRunsToEnrolment) {
    PeerFacts p;
    p.peer_cert_anchor = "vendor-a";  // stale hint: the observation wins
    p.auth_failed_untrusted_ca = true;
    auto d = decide(vendor_a(), p);
    EXPECT_EQ(d.action, Action::EnrolThenIkeOperatorCert);
    EXPECT_TRUE(mentions(d, "untrusted CA"));
}

TEST(Decision, AlreadyEnrolledUsesOperatorCertificates) {
    LocalFacts l = vendor_a();
    l.holds_operator_cert = true;
    PeerFacts p;
    p.peer_holds_operator_cert = true;
    EXPECT_EQ(decide(l, p).action, Action::IkeOperatorCert);
    PeerFacts p2;
    p2.auth_failed_untrusted_ca = true;
    EXPECT_EQ(decide(l, p2).action, Action::IkeOperatorCert);
    p2.peer_cmp_supported = false;
    p2.auth = AuthMode::Certificate;  // with auto and a KDS: Solution 2 (below)
    auto d = decide(l, p2);
    EXPECT_EQ(d.action, Action::Down);
    EXPECT_NE(d.down_reason.find("cannot enrol"), std::string::npos);
}

TEST(Decision, DifferentCaWithoutCmpIsDownInCertificateMode) {
    PeerFacts p;
    p.auth = AuthMode::Certificate;
    p.peer_cert_anchor = "vendor-b";
    auto d = decide(vendor_a(/*cmp=*/false), p);
    EXPECT_EQ(d.action, Action::Down);
    EXPECT_NE(d.down_reason.find("does not support CMPv2"), std::string::npos);
    EXPECT_TRUE(mentions(d, "no silent downgrade"));
}

TEST(Decision, DifferentCaWithoutCmpUsesKdsInAutoMode) {
    PeerFacts p;
    p.peer_cert_anchor = "vendor-b";
    auto d = decide(vendor_a(/*cmp=*/false, /*kds=*/true), p);
    EXPECT_EQ(d.action, Action::KdsPskThenIke);
    auto d2 = decide(vendor_a(false, false), p);
    EXPECT_EQ(d2.action, Action::Down);
}

TEST(Decision, CmpSupportedButNoServer) {
    LocalFacts l = vendor_a();
    l.cmp_server_configured = false;
    l.kds_configured = false;
    PeerFacts p;
    p.peer_cert_anchor = "vendor-b";
    auto d = decide(l, p);
    EXPECT_EQ(d.action, Action::Down);
    EXPECT_NE(d.down_reason.find("no CMP server"), std::string::npos);
}

TEST(Decision, PeerWithoutCmpAndDifferentCa) {
    PeerFacts p;
    p.auth = AuthMode::Certificate;
    p.peer_cert_anchor = "vendor-b";
    p.peer_cmp_supported = false;
    auto d = decide(vendor_a(), p);
    EXPECT_EQ(d.action, Action::Down);
    EXPECT_NE(d.down_reason.find("peer does not support CMPv2"), std::string::npos);
    p.auth = AuthMode::Auto;
    EXPECT_EQ(decide(vendor_a(), p).action, Action::KdsPskThenIke);
}

TEST(Decision, PskFromNetwork) {
    PeerFacts p;
    p.auth = AuthMode::PskFromNetwork;
    auto d = decide(vendor_a(), p);
    EXPECT_EQ(d.action, Action::KdsPskThenIke);
    EXPECT_EQ(d.basis, "Solution 2 (pairwise key from the network)");
    auto d2 = decide(vendor_a(true, false), p);
    EXPECT_EQ(d2.action, Action::Down);
    EXPECT_NE(d2.down_reason.find("no KDS"), std::string::npos);
}

TEST(Backoff, ExponentialAndCapped) {
    Backoff b{1000, 10'000, 2.0};
    EXPECT_EQ(backoff_delay(b, 1), 1000);
    EXPECT_EQ(backoff_delay(b, 2), 2000);
    EXPECT_EQ(backoff_delay(b, 4), 8000);
    EXPECT_EQ(backoff_delay(b, 5), 10'000);
    EXPECT_EQ(backoff_delay(b, 50), 10'000);
}

// ---------------------------------------------------------------- configuration
namespace {
const char* kGood = R"(
[[anchor]]
label = "vendor-a"
file = "a.pem"
[[anchor]]
label = "vendor-b"
file = "/abs/b.pem"
[[anchor]]
label = "operator"
file = "op.pem"

[cmp]
url = "http://127.0.0.1:8829/.well-known/cmp/p/henb"
[kds]
address = "127.0.0.1:7443"
identity = "kds.operator.example"
[backoff]
initial_ms = 500
max_ms = 4000

[[henb]]
name = "a1"
identity = "0023a1000001.henb.vendor-a.example"
address = "127.0.0.1:5101"
certificate_anchor = "vendor-a"
trust_anchors = ["vendor-a", "operator"]
cmp = true
  [[henb.neighbour]]
  name = "b1"
  auth = "auto"
  [[henb.neighbour]]
  name = "enterprise"
  identity = "0023a1000009.henb.vendor-a.example"
  address = "127.0.0.1:5109"
  ipsec = "off"

[[henb]]
name = "b1"
identity = "0023b2000001.henb.vendor-b.example"
address = "127.0.0.1:5201"
certificate_anchor = "vendor-b"
trust_anchors = ["vendor-b", "operator"]
  [[henb.neighbour]]
  name = "a1"
  auth = "psk-from-network"
)";

std::string parse_error(const std::string& text) {
    auto r = parse_config(text, "x.toml", "/cfg");
    return r.ok() ? std::string("(parsed)") : r.error().detail();
}
std::string replace(std::string s, const std::string& from, const std::string& to) {
    auto p = s.find(from);
    if (p == std::string::npos) return s;
    return s.replace(p, from.size(), to);
}
}  // namespace

TEST(Config, ParsesDeployment) {
    auto r = parse_config(kGood, "x.toml", "/cfg");
    ASSERT_TRUE(r.ok()) << r.error().detail();
    auto& d = *r;
    ASSERT_EQ(d.henbs.size(), 2u);
    EXPECT_EQ(d.anchor("vendor-a")->file, "/cfg/a.pem");
    EXPECT_EQ(d.anchor("vendor-b")->file, "/abs/b.pem");
    EXPECT_EQ(d.backoff.initial_ms, 500);
    auto* a1 = d.henb("a1");
    ASSERT_EQ(a1->neighbours.size(), 2u);
    EXPECT_EQ(a1->neighbours[0].identity, "0023b2000001.henb.vendor-b.example");  // resolved
    EXPECT_EQ(a1->neighbours[0].address.port, 5201);
    EXPECT_EQ(a1->neighbours[1].ipsec, IpsecPolicy::Off);
    EXPECT_EQ(d.henb("b1")->neighbours[0].auth, AuthMode::PskFromNetwork);
    auto lf = local_facts(d, *a1);
    EXPECT_TRUE(lf.cmp_supported);
    EXPECT_TRUE(lf.kds_configured);
    EXPECT_EQ(decide(lf, peer_facts(d, *a1, a1->neighbours[1])).action, Action::PlainX2);
}

TEST(Config, ErrorsNameFileLineColumn) {
    EXPECT_EQ(parse_error(replace(kGood, "ipsec = \"off\"", "ipsec = \"maybe\"")),
              "x.toml:35:11: henb.neighbour.ipsec must be one of 'off', 'required', got 'maybe'");
    EXPECT_EQ(parse_error(replace(kGood, "auth = \"auto\"", "auht = \"auto\"")),
              "x.toml:30:3: unknown key 'henb.neighbour.auht'");
    EXPECT_NE(parse_error(replace(kGood, "address = \"127.0.0.1:5101\"", "address = \"127.0.0.1:99999\""))
                  .find("x.toml:24:11: henb.address: port must be 1..65535"),
              std::string::npos)
        << parse_error(replace(kGood, "address = \"127.0.0.1:5101\"", "address = \"127.0.0.1:99999\""));
    EXPECT_NE(parse_error(replace(kGood, "certificate_anchor = \"vendor-b\"", "certificate_anchor = \"vendor-z\""))
                  .find("unknown anchor label 'vendor-z'"),
              std::string::npos);
    EXPECT_NE(parse_error("[[henb]\n").find("x.toml:1:"), std::string::npos);
}

TEST(Config, SemanticChecks) {
    // psk-from-network without a KDS
    std::string no_kds = replace(replace(replace(kGood, "[kds]\n", ""), "address = \"127.0.0.1:7443\"\n", ""),
                                 "identity = \"kds.operator.example\"\n", "");
    EXPECT_NE(parse_error(no_kds).find("needs a [kds] section"), std::string::npos) << parse_error(no_kds);
    // cmp = true without a [cmp] server
    std::string no_cmp =
        replace(replace(kGood, "[cmp]\n", ""), "url = \"http://127.0.0.1:8829/.well-known/cmp/p/henb\"\n", "");
    EXPECT_NE(parse_error(no_cmp).find("cmp = true but there is no [cmp] server"), std::string::npos)
        << parse_error(no_cmp);
    // neighbour that is not a [[henb]] and has no identity
    EXPECT_NE(
        parse_error(replace(kGood, "name = \"a1\"\n  auth", "name = \"zz\"\n  auth")).find("is not a [[henb]] here"),
        std::string::npos);
    // self-neighbour
    EXPECT_NE(parse_error(replace(kGood, "name = \"a1\"\n  auth", "name = \"b1\"\n  auth")).find("lists itself"),
              std::string::npos);
    // duplicate henb
    EXPECT_NE(parse_error(replace(kGood, "name = \"b1\"\nidentity", "name = \"a1\"\nidentity")).find("duplicate henb"),
              std::string::npos);
    // bad cmp url
    EXPECT_NE(parse_error(replace(kGood, "url = \"http://", "url = \"ftp://")).find("cmp.url must start"),
              std::string::npos);
}

// ---------------------------------------------------------------- CERTREQ and the operator root
TEST(Decision, CertreqNamingOperatorRootEnrolsWithoutAFailedAttempt) {
    PeerFacts p;
    p.certreq_anchors = std::vector<std::string>{"unknown:0badc0de", "operator"};
    auto d = decide(vendor_a(), p);
    EXPECT_EQ(d.action, Action::EnrolThenIkeOperatorCert);
    EXPECT_TRUE(mentions(d, "names the operator root 'operator'"));
    EXPECT_TRUE(mentions(d, "decided from the peer's CERTREQ"));
}

TEST(Decision, CertreqNamingNeitherOursNorOperatorDoesNotEnrol) {
    PeerFacts p;
    p.certreq_anchors = std::vector<std::string>{"unknown:0badc0de"};
    p.auth = AuthMode::Certificate;
    auto d = decide(vendor_a(), p);
    EXPECT_EQ(d.action, Action::Down);
    EXPECT_NE(d.down_reason.find("names neither our anchor 'vendor-a' nor the operator root"), std::string::npos)
        << d.down_reason;
    // With auth = auto and a KDS: Solution 2 instead, said so.
    p.auth = AuthMode::Auto;
    auto d2 = decide(vendor_a(), p);
    EXPECT_EQ(d2.action, Action::KdsPskThenIke);
    EXPECT_TRUE(mentions(d2, "names neither"));
    // Holding an operator certificate does not help either.
    LocalFacts l = vendor_a();
    l.holds_operator_cert = true;
    p.auth = AuthMode::Certificate;
    EXPECT_EQ(decide(l, p).action, Action::Down);
}

TEST(Decision, CertreqNamingOperatorUsesEnrolledCertificate) {
    PeerFacts p;
    p.certreq_anchors = std::vector<std::string>{"vendor-b", "operator"};
    LocalFacts l = vendor_a();
    l.holds_operator_cert = true;
    auto d = decide(l, p);
    EXPECT_EQ(d.action, Action::IkeOperatorCert);
}

TEST(Decision, AuthFailedWithoutCmpIsDownNotDowngraded) {
    PeerFacts p;
    p.auth_failed_untrusted_ca = true;
    p.auth = AuthMode::Certificate;
    auto d = decide(vendor_a(/*cmp=*/false), p);
    EXPECT_EQ(d.action, Action::Down);
    EXPECT_NE(d.down_reason.find("does not support CMPv2"), std::string::npos) << d.down_reason;
    EXPECT_TRUE(mentions(d, "untrusted CA"));
}

// Found by `x2sec sim`: a node that enrolled for another neighbour must still fall back to
// Solution 2 (auth = auto) for a peer that cannot enrol, as it did before enrolling.
TEST(Decision, EnrolledNodeStillUsesSolution2ForPeerWithoutCmp) {
    PeerFacts p;
    p.peer_cert_anchor = "vendor-b";
    p.peer_cmp_supported = false;
    LocalFacts l = vendor_a();
    EXPECT_EQ(decide(l, p).action, Action::KdsPskThenIke);
    l.holds_operator_cert = true;
    EXPECT_EQ(decide(l, p).action, Action::KdsPskThenIke);
    p.auth = AuthMode::Certificate;
    EXPECT_EQ(decide(l, p).action, Action::Down);
}
