// Internal: DER certificate parsing without OpenSSL 3.0's per-certificate decoder set-up
// (der_parse.cpp says how and when it applies).
#pragma once

#include <x2sec/common/bytes.hpp>
#include <x2sec/x509/x509.hpp>

namespace x2sec::x509::detail {

// The certificate with its public key attached, exactly as d2i_X509 would give it, or nullptr
// when this path does not handle the certificate (the caller then uses d2i_X509; malformed
// input included, so the caller's error message is the usual one).  *provider_key receives a
// provider-native copy of an EC public key for signature checks (nullptr for RSA, whose key in
// the certificate serves); the caller owns both.
X509* parse_der_fast(BytesView der, EVP_PKEY** provider_key);

}  // namespace x2sec::x509::detail
