#include <cctype>
#include <x2sec/pki/pki.hpp>

namespace x2sec::pki {
namespace {
bool valid_realm(std::string_view r) {
    if (r.empty() || r.size() > 240 || r.front() == '.' || r.back() == '.') return false;
    size_t label = 0;
    for (size_t i = 0; i < r.size(); ++i) {
        char c = r[i];
        if (c == '.') {
            if (label == 0 || r[i - 1] == '-') return false;
            label = 0;
            continue;
        }
        if (!(std::islower(static_cast<unsigned char>(c)) || std::isdigit(static_cast<unsigned char>(c)) || c == '-'))
            return false;
        if (label == 0 && c == '-') return false;
        if (++label > 63) return false;
    }
    return r.find('.') != std::string_view::npos;
}
}  // namespace

Result<std::string> make_identity(std::string_view eui48, std::string_view realm) {
    std::string hexid;
    for (char c : eui48) {
        if (c == ':' || c == '-' || c == '.') continue;
        if (!std::isxdigit(static_cast<unsigned char>(c)))
            return Error(ErrorDomain::Pki, 0, "EUI '" + std::string(eui48) + "' has a non-hex character");
        hexid += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    }
    if (hexid.size() != 12 && hexid.size() != 16)
        return Error(ErrorDomain::Pki, 0,
                     "EUI '" + std::string(eui48) + "' must have 12 (EUI-48) or 16 (EUI-64) hex digits");
    std::string lr;
    for (char c : realm) lr += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if (!valid_realm(lr))
        return Error(ErrorDomain::Pki, 0, "realm '" + std::string(realm) + "' is not a valid domain name");
    return hexid + "." + lr;
}

bool is_node_identity(std::string_view fqdn) {
    auto dot = fqdn.find('.');
    if (dot != 12 && dot != 16) return false;
    for (size_t i = 0; i < dot; ++i) {
        char c = fqdn[i];
        if (!(std::isdigit(static_cast<unsigned char>(c)) || (c >= 'a' && c <= 'f'))) return false;
    }
    return valid_realm(fqdn.substr(dot + 1));
}

std::vector<std::string> node_identities(X509* x) {
    std::vector<std::string> out;
    for (auto& d : san_dns(x)) {
        std::string l;
        for (char c : d) l += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        if (is_node_identity(l)) out.push_back(l);
    }
    return out;
}

}  // namespace x2sec::pki
