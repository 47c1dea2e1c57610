// RAII for OpenSSL handles, shared by the libraries built on OpenSSL (crypto, x509):
//   using RespPtr = OsslPtr<OCSP_RESPONSE, OCSP_RESPONSE_free>;
// Only the template; each user includes the OpenSSL headers of the types it wraps.
#pragma once

#include <memory>

namespace x2sec::crypto {

template <auto Fn>
struct OsslDeleter {
    template <typename T>
    void operator()(T* p) const {
        Fn(p);
    }
};

template <typename T, auto Fn>
using OsslPtr = std::unique_ptr<T, OsslDeleter<Fn>>;

}  // namespace x2sec::crypto
