#include <arpa/inet.h>
#include <openssl/cmp.h>
#include <algorithm>
#include <cctype>
#include <cstring>
#include <string_view>
#include <openssl/evp.h>
#include <x2sec/cmp/profile.hpp>
#include <x2sec/pki/pki.hpp>

namespace x2sec::cmp {

namespace {

// Text joined with one allocation (error messages built inside loops).
template <class... T>
std::string cat(const T&... parts) {
    std::string out;
    (out.append(std::string_view(parts)), ...);
    return out;
}

std::string lower(std::string s) {
    for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return s;
}

std::string expand(const std::string& pattern, const std::string& identity) {
    size_t dot = identity.find('.');
    std::string eui = identity.substr(0, dot), realm = dot == std::string::npos ? "" : identity.substr(dot + 1);
    std::string out;
    for (size_t i = 0; i < pattern.size();) {
        auto take = [&](const char* ph, const std::string& v) {
            size_t n = std::strlen(ph);
            if (pattern.compare(i, n, ph) != 0) return false;
            out += v;
            i += n;
            return true;
        };
        if (take("{identity}", identity) || take("{eui}", eui) || take("{realm}", realm)) continue;
        out += pattern[i++];
    }
    return out;
}

// `*` matches one or more characters other than sep.
bool glob(const char* p, const char* v, char sep) {
    if (*p == 0) return *v == 0;
    if (*p == '*') {
        for (const char* q = v; *q && *q != sep; ++q)
            if (glob(p + 1, q + 1, sep)) return true;
        return false;
    }
    return *p == *v && glob(p + 1, v + 1, sep);
}

struct Cidr {
    int family = 0;
    unsigned char addr[16] = {};
    int prefix = 0;
};

Result<Cidr> parse_cidr(const std::string& s) {
    Cidr c;
    std::string a = s;
    int prefix = -1;
    if (auto slash = s.find('/'); slash != std::string::npos) {
        a = s.substr(0, slash);
        std::string p = s.substr(slash + 1);
        if (p.empty() || p.size() > 3 ||
            !std::all_of(p.begin(), p.end(), [](char ch) { return ch >= '0' && ch <= '9'; }))
            return Error(ErrorDomain::Config, 0, "bad prefix length in '" + s + "'");
        prefix = std::stoi(p);
    }
    if (inet_pton(AF_INET, a.c_str(), c.addr) == 1) {
        c.family = AF_INET;
        c.prefix = prefix < 0 ? 32 : prefix;
        if (c.prefix > 32) return Error(ErrorDomain::Config, 0, "prefix length over 32 in '" + s + "'");
    } else if (inet_pton(AF_INET6, a.c_str(), c.addr) == 1) {
        c.family = AF_INET6;
        c.prefix = prefix < 0 ? 128 : prefix;
        if (c.prefix > 128) return Error(ErrorDomain::Config, 0, "prefix length over 128 in '" + s + "'");
    } else {
        return Error(ErrorDomain::Config, 0, "'" + s + "' is not an IPv4 or IPv6 address or range");
    }
    return c;
}

const char* type_text(const std::string& t) {
    return t == "dns" ? "dNSName" : t == "ip" ? "iPAddress" : "uniformResourceIdentifier";
}

std::string profile_label(const IssuanceProfile& p) {
    return p.name.empty() ? std::string("the default profile") : "profile '" + p.name + "'";
}

}  // namespace

std::string expand_pattern(const std::string& pattern, const std::string& identity) {
    return expand(pattern, identity);
}

std::string key_type_of(EVP_PKEY* key) {
    if (!key) return "";
    if (EVP_PKEY_is_a(key, "EC")) {
        char curve[64] = {};
        size_t len = 0;
        if (!EVP_PKEY_get_utf8_string_param(key, "group", curve, sizeof curve, &len)) return "";
        std::string c(curve, len);
        return c == "prime256v1" || c == "P-256" ? "p256" : c == "secp384r1" || c == "P-384" ? "p384" : "";
    }
    if (EVP_PKEY_is_a(key, "RSA")) {
        int bits = EVP_PKEY_get_bits(key);
        return bits == 2048 ? "rsa2048" : bits == 3072 ? "rsa3072" : "";
    }
    return "";
}

ProfileVerdict check_key_type(const IssuanceProfile& p, EVP_PKEY* key) {
    if (p.key_types.empty()) return {};
    std::string have = key_type_of(key);
    for (auto& k : p.key_types) {
        auto want = pki::parse_key_alg(k);
        if (want.ok() && !have.empty() && pki::parse_key_alg(have).ok() && *pki::parse_key_alg(have) == *want)
            return {};
    }
    std::string list;
    for (auto& k : p.key_types) list += (list.empty() ? "" : ", ") + k;
    return ProfileVerdict{OSSL_CMP_PKIFAILUREINFO_badAlg,
                          "public key type " +
                              (have.empty() ? std::string("(not P-256, P-384, RSA-2048/3072)") : have) +
                              " is not permitted by " + profile_label(p) + " (" + list + ")",
                          "key_type"};
}

bool match_dns_pattern(const std::string& pattern, const std::string& value, const std::string& identity) {
    std::string p = lower(expand(pattern, identity)), v = lower(value);
    return glob(p.c_str(), v.c_str(), '.');
}

bool match_uri_pattern(const std::string& pattern, const std::string& value, const std::string& identity) {
    std::string p = expand(pattern, identity);
    return glob(p.c_str(), value.c_str(), '/');
}

Result<bool> ip_in_range(const std::string& cidr, const std::string& ip) {
    X2SEC_TRY(auto range, parse_cidr(cidr));
    X2SEC_TRY(auto addr, parse_cidr(ip));
    if (range.family != addr.family) return false;
    int full = range.prefix / 8, rest = range.prefix % 8;
    if (std::memcmp(range.addr, addr.addr, static_cast<size_t>(full)) != 0) return false;
    if (rest == 0) return true;
    auto mask = static_cast<unsigned char>(0xff << (8 - rest));
    return (range.addr[full] & mask) == (addr.addr[full] & mask);
}

Status IssuanceProfile::validate() const {
    std::string where = profile_label(*this);
    for (auto& r : required) {
        if (r != "dns" && r != "ip" && r != "uri")
            return Error(ErrorDomain::Config, 0, cat(where, ": required type '", r, "' is not dns, ip or uri"));
        if ((r == "dns" && dns.empty()) || (r == "ip" && ip.empty()) || (r == "uri" && uri.empty()))
            return Error(ErrorDomain::Config, 0, cat(where, ": ", r, " is required but no ", r, " value is permitted"));
    }
    for (auto& c : ip)
        if (auto r = parse_cidr(c); !r) return Error(ErrorDomain::Config, 0, where + ": ip: " + r.error().detail());
    for (auto* v : {&dns, &uri})
        for (auto& p : *v)
            if (p.empty()) return Error(ErrorDomain::Config, 0, where + ": empty pattern");
    for (auto& k : key_types)
        if (auto a = pki::parse_key_alg(k); !a)
            return Error(ErrorDomain::Config, 0, where + ": key_types: " + a.error().detail());
    if (validity_days && *validity_days < 1)
        return Error(ErrorDomain::Config, 0, where + ": validity_days must be >= 1");
    return ok_status();
}

ProfileVerdict check_request(const IssuanceProfile& p, const RequestedNames& names, const std::string& subject_cn,
                             const std::vector<std::string>& identities, bool check_values) {
    const std::string where = profile_label(p);
    auto refuse = [](int bit, std::string text, const char* counter) {
        return ProfileVerdict{bit, std::move(text), counter};
    };
    if (!names.malformed.empty())
        return refuse(OSSL_CMP_PKIFAILUREINFO_badCertTemplate, "malformed subjectAltName " + names.malformed.front(),
                      "bad_san");
    if (!names.other.empty())
        return refuse(OSSL_CMP_PKIFAILUREINFO_badCertTemplate,
                      "subjectAltName type " + names.other.front() + " is not permitted by " + where, "san_type");
    struct Kind {
        const char* type;
        const std::vector<std::string>& values;
        const std::vector<std::string>& allowed;
    } kinds[] = {{"dns", names.dns, p.dns}, {"ip", names.ip, p.ip}, {"uri", names.uri, p.uri}};
    for (auto& k : kinds) {
        if (!k.values.empty() && k.allowed.empty())
            return refuse(OSSL_CMP_PKIFAILUREINFO_badCertTemplate,
                          std::string(type_text(k.type)) + " subjectAltNames are not permitted by " + where,
                          "san_type");
        bool required = std::find(p.required.begin(), p.required.end(), k.type) != p.required.end();
        // dNSName falls back to the node identity when none is requested (see the server).
        if (required && k.values.empty() && std::string(k.type) != "dns")
            return refuse(OSSL_CMP_PKIFAILUREINFO_badCertTemplate,
                          where + " requires an " + type_text(k.type) + " subjectAltName", "san_missing");
    }
    if (!check_values) return {};
    if (identities.empty())
        return refuse(OSSL_CMP_PKIFAILUREINFO_notAuthorized,
                      "the signing certificate carries no <EUI>.<realm> identity in subjectAltName", "not_authorized");
    auto any_identity = [&](auto&& pred) { return std::any_of(identities.begin(), identities.end(), pred); };
    auto dns_ok = [&](const std::string& v) {
        return any_identity([&](const std::string& id) {
            return std::any_of(p.dns.begin(), p.dns.end(),
                               [&](const std::string& pat) { return match_dns_pattern(pat, v, id); });
        });
    };
    for (auto& d : names.dns)
        if (!dns_ok(d))
            return refuse(OSSL_CMP_PKIFAILUREINFO_notAuthorized,
                          cat("requested identity ", d, " does not match the signer's identity ", identities.front(),
                              " under ", where),
                          "identity_mismatch");
    for (auto& ip : names.ip) {
        bool ok = false;
        for (auto& r : p.ip)
            if (auto in = ip_in_range(r, ip); in && *in) ok = true;
        if (!ok)
            return refuse(OSSL_CMP_PKIFAILUREINFO_notAuthorized,
                          cat("requested iPAddress ", ip, " is outside the ranges of ", where), "san_not_allowed");
    }
    for (auto& u : names.uri) {
        bool ok = any_identity([&](const std::string& id) {
            return std::any_of(p.uri.begin(), p.uri.end(),
                               [&](const std::string& pat) { return match_uri_pattern(pat, u, id); });
        });
        if (!ok)
            return refuse(
                OSSL_CMP_PKIFAILUREINFO_notAuthorized,
                cat("requested URI ", u, " does not match the patterns of ", where, " for ", identities.front()),
                "san_not_allowed");
    }
    if (!subject_cn.empty()) {
        std::string cn = lower(subject_cn);
        if (std::find(identities.begin(), identities.end(), cn) == identities.end() && !dns_ok(cn))
            return refuse(OSSL_CMP_PKIFAILUREINFO_notAuthorized,
                          "requested subject CN " + cn + " does not match the signer's identity " + identities.front(),
                          "identity_mismatch");
    }
    return {};
}

}  // namespace x2sec::cmp
