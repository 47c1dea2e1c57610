#include <x2sec/common/result.hpp>

namespace x2sec {

const char* to_string(ErrorDomain d) {
    switch (d) {
        case ErrorDomain::Generic:
            return "error";
        case ErrorDomain::Codec:
            return "codec";
        case ErrorDomain::Crypto:
            return "crypto";
        case ErrorDomain::Ike:
            return "ike";
        case ErrorDomain::Esp:
            return "esp";
        case ErrorDomain::Pki:
            return "pki";
        case ErrorDomain::Cmp:
            return "cmp";
        case ErrorDomain::Kds:
            return "kds";
        case ErrorDomain::Config:
            return "config";
        case ErrorDomain::Io:
            return "io";
    }
    return "error";
}

std::string Error::to_string() const {
    std::string s = x2sec::to_string(m_domain);
    if (m_code != 0) s += "/" + std::to_string(m_code);
    s += ": ";
    s += m_detail;
    return s;
}

}  // namespace x2sec
