#include <openssl/err.h>
#include <x2sec/pki/ossl.hpp>

namespace x2sec::pki {

X509Ptr up_ref(X509* x) {
    if (x) X509_up_ref(x);
    return X509Ptr(x);
}
PkeyPtr up_ref(EVP_PKEY* k) {
    if (k) EVP_PKEY_up_ref(k);
    return PkeyPtr(k);
}
CertStackPtr make_stack(const std::vector<X509*>& certs) {
    CertStackPtr sk(sk_X509_new_null());
    for (X509* c : certs) {
        if (!c) continue;
        X509_up_ref(c);
        sk_X509_push(sk.get(), c);
    }
    return sk;
}

std::string ossl_errors() {
    std::string out;
    unsigned long e;
    const char* data = nullptr;
    int flags = 0;
    while ((e = ERR_get_error_all(nullptr, nullptr, nullptr, &data, &flags)) != 0) {
        if (!out.empty()) out += "; ";
        const char* lib = ERR_lib_error_string(e);
        const char* reason = ERR_reason_error_string(e);
        if (lib) {
            out += lib;
            out += ": ";
        }
        out += reason ? reason : ("error " + std::to_string(e));
        if (data && (flags & ERR_TXT_STRING) && *data) {
            out += " (";
            out += data;
            out += ")";
        }
    }
    return out;
}

Error ossl_error(ErrorDomain d, std::string what) {
    auto q = ossl_errors();
    if (!q.empty()) what += ": " + q;
    return Error(d, 0, std::move(what));
}

std::string name_to_string(const X509_NAME* name) {
    if (!name) return {};
    BioPtr b(BIO_new(BIO_s_mem()));
    X509_NAME_print_ex(b.get(), name, 0, XN_FLAG_RFC2253 & ~ASN1_STRFLGS_ESC_MSB);
    char* p = nullptr;
    long n = BIO_get_mem_data(b.get(), &p);
    return std::string(p, static_cast<size_t>(n));
}

namespace {
std::vector<std::string> split(const std::string& s, char sep) {
    std::vector<std::string> out;
    std::string cur;
    for (size_t i = 0; i < s.size(); ++i) {
        if (s[i] == '\\' && i + 1 < s.size()) {
            cur += s[++i];
            continue;
        }
        if (s[i] == sep) {
            out.push_back(cur);
            cur.clear();
            continue;
        }
        cur += s[i];
    }
    out.push_back(cur);
    return out;
}
std::string trim(std::string s) {
    while (!s.empty() && s.front() == ' ') s.erase(s.begin());
    while (!s.empty() && s.back() == ' ') s.pop_back();
    return s;
}
}  // namespace

Result<NamePtr> parse_name(const std::string& text) {
    std::vector<std::string> parts;
    if (!text.empty() && text[0] == '/') {
        parts = split(text.substr(1), '/');
    } else {
        parts = split(text, ',');
        std::reverse(parts.begin(), parts.end());  // RFC 2253: most significant last
    }
    NamePtr name(X509_NAME_new());
    for (auto& raw : parts) {
        auto p = trim(raw);
        if (p.empty()) continue;
        auto eq = p.find('=');
        if (eq == std::string::npos || eq == 0)
            return Error(ErrorDomain::Pki, 0, "name component '" + p + "' is not type=value");
        std::string type = trim(p.substr(0, eq)), value = trim(p.substr(eq + 1));
        if (!X509_NAME_add_entry_by_txt(name.get(), type.c_str(), MBSTRING_UTF8,
                                        reinterpret_cast<const unsigned char*>(value.c_str()), -1, -1, 0)) {
            ERR_clear_error();
            return Error(ErrorDomain::Pki, 0, "unknown attribute type '" + type + "' in name '" + text + "'");
        }
    }
    return name;
}

}  // namespace x2sec::pki
