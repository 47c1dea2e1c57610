// Untrusted DER that reaches x2sec::x509 / x2sec::crypto from the network (CERT payloads, AUTH
// AlgorithmIdentifiers, ID_DER_ASN1_DN, KE values): nothing may crash, hang or leak.
#include <cstddef>
#include <cstdint>
#include <openssl/evp.h>
#include <x2sec/crypto/crypto.hpp>
#include <x2sec/x509/x509.hpp>

using namespace x2sec;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const BytesView in(data, size);
    (void)crypto::sig_scheme_from_algorithm_identifier(in);
    (void)x509::Crl::from_der(in);
    if (auto k = crypto::public_key_from_der(in); k.ok()) EVP_PKEY_free(*k);
    auto cert = x509::Certificate::from_der(in);
    if (cert.ok()) {
        const auto& c = *cert;
        (void)c.subject();
        (void)c.issuer();
        (void)c.san_dns();
        (void)c.san_ip();
        (void)c.san_email();
        (void)c.spki_sha1();
        (void)c.subject_key_id();
        (void)c.crl_distribution_points();
        (void)c.not_before();
        (void)c.not_after();
        (void)c.is_ca();
        (void)c.self_signed();
        (void)x509::match_identity(c, x509::IdType::Fqdn, as_bytes("a.example"));
        (void)x509::match_identity(c, x509::IdType::DerAsn1Dn, c.subject_der());
        x509::TrustStore ts;
        ts.add_anchor(c, "fuzz");
        (void)ts.verify(c, {}, 1'800'000'000);
    }
    // The same bytes as KE data for the EC groups.
    for (auto g : {crypto::DhGroup::Ecp256, crypto::DhGroup::Ecp384, crypto::DhGroup::Curve25519}) {
        static auto kp256 = crypto::DhKeyPair::generate(crypto::DhGroup::Ecp256);
        static auto kp384 = crypto::DhKeyPair::generate(crypto::DhGroup::Ecp384);
        static auto kp25519 = crypto::DhKeyPair::generate(crypto::DhGroup::Curve25519);
        auto& kp = g == crypto::DhGroup::Ecp256 ? kp256 : g == crypto::DhGroup::Ecp384 ? kp384 : kp25519;
        if (kp.ok()) (void)kp->derive(in);
    }
    crypto::openssl_errors();  // keep the thread's error queue from growing
    return 0;
}
