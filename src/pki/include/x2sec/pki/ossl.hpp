// RAII owners for OpenSSL objects used by the PKI and CMP modules, and a helper that drains
// OpenSSL's error queue into an x2sec::Error detail.
#pragma once

#include <algorithm>
#include <memory>
#include <vector>
#include <string>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <x2sec/common/result.hpp>

namespace x2sec::pki {

struct OsslFree {
    void operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); }
    void operator()(X509* p) const { X509_free(p); }
    void operator()(X509_CRL* p) const { X509_CRL_free(p); }
    void operator()(X509_NAME* p) const { X509_NAME_free(p); }
    void operator()(X509_STORE* p) const { X509_STORE_free(p); }
    void operator()(X509_STORE_CTX* p) const { X509_STORE_CTX_free(p); }
    void operator()(BIO* p) const { BIO_free_all(p); }
    void operator()(ASN1_INTEGER* p) const { ASN1_INTEGER_free(p); }
    void operator()(STACK_OF(X509) * p) const { sk_X509_pop_free(p, X509_free); }
};
using PkeyPtr = std::unique_ptr<EVP_PKEY, OsslFree>;
using X509Ptr = std::unique_ptr<X509, OsslFree>;
using CrlPtr = std::unique_ptr<X509_CRL, OsslFree>;
using NamePtr = std::unique_ptr<X509_NAME, OsslFree>;
using StorePtr = std::unique_ptr<X509_STORE, OsslFree>;
using BioPtr = std::unique_ptr<BIO, OsslFree>;
using CertStackPtr = std::unique_ptr<STACK_OF(X509), OsslFree>;

// Shares ownership of an X509 (X509_up_ref) - certificates are passed around by value.
X509Ptr up_ref(X509* x);
PkeyPtr up_ref(EVP_PKEY* k);
// New stack holding up-referenced copies of the given certificates.
CertStackPtr make_stack(const std::vector<X509*>& certs);

// Drain the OpenSSL error queue into one line ("what: lib reason; lib reason").
std::string ossl_errors();
Error ossl_error(ErrorDomain d, std::string what);

// "CN=...,O=..." (RFC 2253 order) for messages; empty when name is null.
std::string name_to_string(const X509_NAME* name);
// Parses "/O=Example/CN=name" (OpenSSL's -subj syntax) or "CN=name,O=Example" (RFC 2253,
// most significant last).  Error names the offending component.
Result<NamePtr> parse_name(const std::string& text);

}  // namespace x2sec::pki
