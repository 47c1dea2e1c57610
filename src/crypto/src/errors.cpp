#include <openssl/err.h>
#include <x2sec/crypto/crypto.hpp>

namespace x2sec::crypto {

std::string openssl_errors() {
    std::string out;
    const char* file = nullptr;
    const char* func = nullptr;
    const char* data = nullptr;
    int line = 0;
    int flags = 0;
    unsigned long e;
    while ((e = ERR_get_error_all(&file, &line, &func, &data, &flags)) != 0) {
        char buf[256];
        ERR_error_string_n(e, buf, sizeof(buf));
        if (!out.empty()) out += "; ";
        out += buf;
        if (data != nullptr && (flags & ERR_TXT_STRING) != 0 && *data != '\0') {
            out += " (";
            out += data;
            out += ")";
        }
    }
    return out;
}

Error crypto_error(const std::string& what) {
    std::string q = openssl_errors();
    return Error(ErrorDomain::Crypto, 0, q.empty() ? what : what + ": " + q);
}

}  // namespace x2sec::crypto
