// PKCS#11 keys: the only file of x2sec that uses OpenSSL's (deprecated in 3.0) ENGINE API, for
// Debian's libp11 engine.  The suppression below is confined to this translation unit.
#define OPENSSL_SUPPRESS_DEPRECATED 1

#include <dlfcn.h>
#include <openssl/engine.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/rand.h>
#include <openssl/ui.h>
#include <openssl/x509.h>
#include <p11-kit/pkcs11.h>
#include <p11-kit/uri.h>

#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <vector>
#include <x2sec/common/file.hpp>
#include <x2sec/crypto/pkcs11.hpp>

namespace x2sec::crypto {

namespace {

constexpr const char* kDefaultModule = "/usr/lib/x86_64-linux-gnu/p11-kit-proxy.so";

Error p11_error(const std::string& what) {
    return Error(ErrorDomain::Crypto, 0, "PKCS#11: " + what);
}

std::string rv_text(CK_RV rv) {
    switch (rv) {
        case CKR_PIN_INCORRECT:
            return "CKR_PIN_INCORRECT";
        case CKR_PIN_LOCKED:
            return "CKR_PIN_LOCKED";
        case CKR_USER_NOT_LOGGED_IN:
            return "CKR_USER_NOT_LOGGED_IN";
        case CKR_TOKEN_NOT_PRESENT:
            return "CKR_TOKEN_NOT_PRESENT";
        case CKR_TOKEN_WRITE_PROTECTED:
            return "CKR_TOKEN_WRITE_PROTECTED";
        case CKR_MECHANISM_INVALID:
            return "CKR_MECHANISM_INVALID";
        case CKR_TEMPLATE_INCONSISTENT:
            return "CKR_TEMPLATE_INCONSISTENT";
        case CKR_ATTRIBUTE_VALUE_INVALID:
            return "CKR_ATTRIBUTE_VALUE_INVALID";
        case CKR_DEVICE_MEMORY:
            return "CKR_DEVICE_MEMORY";
        default:
            break;
    }
    char buf[32];
    std::snprintf(buf, sizeof(buf), "CKR 0x%lx", static_cast<unsigned long>(rv));
    return buf;
}

// ---------------------------------------------------------------- URIs (p11-kit)

struct UriDeleter {
    void operator()(P11KitUri* u) const { p11_kit_uri_free(u); }
};
using UriPtr = std::unique_ptr<P11KitUri, UriDeleter>;

Result<UriPtr> parse_uri(const std::string& text) {
    if (!is_pkcs11_uri(text)) return p11_error("not a pkcs11: URI");
    UriPtr u(p11_kit_uri_new());
    if (!u) return p11_error("out of memory");
    const int rc = p11_kit_uri_parse(text.c_str(), P11_KIT_URI_FOR_ANY, u.get());
    if (rc != P11_KIT_URI_OK)
        return p11_error(std::string("malformed URI '") + redact_pkcs11_uri(text) + "': " + p11_kit_uri_message(rc));
    return u;
}

std::string format_uri(P11KitUri* u) {
    char* s = nullptr;
    if (p11_kit_uri_format(u, P11_KIT_URI_FOR_ANY, &s) != P11_KIT_URI_OK || s == nullptr) return {};
    std::string out(s);
    secure_zero(s, std::strlen(s));
    std::free(s);
    return out;
}

std::string module_of(P11KitUri* u) {
    if (const char* m = p11_kit_uri_get_module_path(u); m != nullptr && *m != '\0') return m;
    if (const char* env = std::getenv("X2SEC_PKCS11_MODULE"); env != nullptr && *env != '\0') return env;
    return kDefaultModule;
}

// The PIN: pin-value, else the first line of the pin-source file, else none.
Result<SecureBytes> pin_of(P11KitUri* u) {
    if (const char* v = p11_kit_uri_get_pin_value(u); v != nullptr) return SecureBytes(as_bytes(std::string_view(v)));
    const char* src = p11_kit_uri_get_pin_source(u);
    if (src == nullptr) return SecureBytes{};
    std::string path(src);
    if (path.rfind("file:", 0) == 0) path = path.substr(5);
    auto data = read_file(path, 4096);
    if (!data) return Error(data.error()).context("PKCS#11 pin-source");
    size_t n = 0;
    while (n < data->size() && (*data)[n] != '\n' && (*data)[n] != '\r') ++n;
    SecureBytes pin(BytesView(data->data(), n));
    secure_zero(data->data(), data->size());
    return pin;
}

// ---------------------------------------------------------------- the module, called directly

struct Module {
    std::string path;
    void* handle = nullptr;
    CK_FUNCTION_LIST_PTR f = nullptr;
};

std::mutex g_mutex;  // guards g_module, g_engine and the engine's PIN
Module* g_module = nullptr;
ENGINE* g_engine = nullptr;
std::string g_engine_module;

Result<CK_FUNCTION_LIST_PTR> module_locked(const std::string& path) {
    if (g_module != nullptr) {
        if (g_module->path != path)
            return p11_error("module '" + path + "' requested, but '" + g_module->path +
                             "' is in use (one PKCS#11 module per process)");
        return g_module->f;
    }
    void* h = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (h == nullptr) return p11_error("cannot load module '" + path + "': " + dlerror());
    auto get = reinterpret_cast<CK_C_GetFunctionList>(dlsym(h, "C_GetFunctionList"));
    CK_FUNCTION_LIST_PTR f = nullptr;
    if (get == nullptr || get(&f) != CKR_OK || f == nullptr) {
        dlclose(h);
        return p11_error("module '" + path + "' has no C_GetFunctionList");
    }
    CK_C_INITIALIZE_ARGS args{};
    args.flags = CKF_OS_LOCKING_OK;
    const CK_RV rv = f->C_Initialize(&args);
    if (rv != CKR_OK && rv != CKR_CRYPTOKI_ALREADY_INITIALIZED) {
        dlclose(h);
        return p11_error("C_Initialize of '" + path + "': " + rv_text(rv));
    }
    // Kept for the life of the process (the engine shares the module's state).
    g_module = new Module{path, h, f};
    return f;
}

class Session {
public:
    Session(CK_FUNCTION_LIST_PTR f, CK_SESSION_HANDLE h) : m_f(f), m_h(h) {}
    Session(Session&& o) noexcept : m_f(o.m_f), m_h(o.m_h) { o.m_f = nullptr; }
    Session& operator=(Session&&) = delete;
    ~Session() {
        if (m_f != nullptr) m_f->C_CloseSession(m_h);
    }
    CK_FUNCTION_LIST_PTR f() const { return m_f; }
    CK_SESSION_HANDLE h() const { return m_h; }

private:
    CK_FUNCTION_LIST_PTR m_f;
    CK_SESSION_HANDLE m_h;
};

// A logged-in session on the one token the URI's token attributes match.
Result<Session> open_session(P11KitUri* u, const std::string& uri_text, bool rw) {
    CK_FUNCTION_LIST_PTR f = nullptr;
    {
        std::lock_guard lock(g_mutex);
        X2SEC_TRY(f, module_locked(module_of(u)));
    }
    CK_ULONG n = 0;
    if (CK_RV rv = f->C_GetSlotList(CK_TRUE, nullptr, &n); rv != CKR_OK)
        return p11_error("C_GetSlotList: " + rv_text(rv));
    std::vector<CK_SLOT_ID> slots(n);
    if (CK_RV rv = f->C_GetSlotList(CK_TRUE, slots.data(), &n); rv != CKR_OK)
        return p11_error("C_GetSlotList: " + rv_text(rv));
    slots.resize(n);
    std::vector<CK_SLOT_ID> match;
    for (CK_SLOT_ID s : slots) {
        CK_TOKEN_INFO ti{};
        if (f->C_GetTokenInfo(s, &ti) != CKR_OK) continue;
        if (p11_kit_uri_match_token_info(u, &ti) == 1) match.push_back(s);
    }
    const std::string where = redact_pkcs11_uri(uri_text);
    if (match.empty()) return p11_error("no token matches '" + where + "'");
    if (match.size() > 1) return p11_error(std::to_string(match.size()) + " tokens match '" + where + "'");
    CK_SESSION_HANDLE h = 0;
    CK_FLAGS flags = CKF_SERIAL_SESSION | (rw ? CKF_RW_SESSION : 0);
    if (CK_RV rv = f->C_OpenSession(match[0], flags, nullptr, nullptr, &h); rv != CKR_OK)
        return p11_error("C_OpenSession: " + rv_text(rv));
    Session s(f, h);
    X2SEC_TRY(auto pin, pin_of(u));
    if (!pin.empty()) {
        CK_RV rv = f->C_Login(h, CKU_USER, const_cast<CK_UTF8CHAR_PTR>(pin.data()), pin.size());
        if (rv != CKR_OK && rv != CKR_USER_ALREADY_LOGGED_IN)
            return p11_error("C_Login on '" + where + "': " + rv_text(rv));
    }
    return s;
}

Result<std::vector<CK_OBJECT_HANDLE>> find_objects(const Session& s, std::vector<CK_ATTRIBUTE> tmpl) {
    if (CK_RV rv = s.f()->C_FindObjectsInit(s.h(), tmpl.data(), tmpl.size()); rv != CKR_OK)
        return p11_error("C_FindObjectsInit: " + rv_text(rv));
    std::vector<CK_OBJECT_HANDLE> out;
    CK_OBJECT_HANDLE buf[16];
    CK_ULONG got = 0;
    while (s.f()->C_FindObjects(s.h(), buf, 16, &got) == CKR_OK && got > 0) out.insert(out.end(), buf, buf + got);
    s.f()->C_FindObjectsFinal(s.h());
    return out;
}

// The template the URI's object attributes (label, id) give, for objects of one class.
std::vector<CK_ATTRIBUTE> object_template(P11KitUri* u, CK_OBJECT_CLASS* cls) {
    std::vector<CK_ATTRIBUTE> t;
    t.push_back({CKA_CLASS, cls, sizeof(*cls)});
    for (CK_ATTRIBUTE_TYPE a : {CKA_LABEL, CKA_ID})
        if (CK_ATTRIBUTE_PTR p = p11_kit_uri_get_attribute(u, a); p != nullptr) t.push_back(*p);
    return t;
}

Result<Bytes> get_attribute(const Session& s, CK_OBJECT_HANDLE o, CK_ATTRIBUTE_TYPE type) {
    CK_ATTRIBUTE a{type, nullptr, 0};
    if (CK_RV rv = s.f()->C_GetAttributeValue(s.h(), o, &a, 1); rv != CKR_OK)
        return p11_error("C_GetAttributeValue: " + rv_text(rv));
    Bytes v(a.ulValueLen);
    a.pValue = v.data();
    if (CK_RV rv = s.f()->C_GetAttributeValue(s.h(), o, &a, 1); rv != CKR_OK)
        return p11_error("C_GetAttributeValue: " + rv_text(rv));
    return v;
}

// The one private key object the URI names.
Result<CK_OBJECT_HANDLE> find_private_key(const Session& s, P11KitUri* u, const std::string& uri_text) {
    CK_OBJECT_CLASS cls = CKO_PRIVATE_KEY;
    X2SEC_TRY(auto objs, find_objects(s, object_template(u, &cls)));
    const std::string where = redact_pkcs11_uri(uri_text);
    if (objs.empty()) return p11_error("no private key matches '" + where + "'");
    if (objs.size() > 1) return p11_error(std::to_string(objs.size()) + " private keys match '" + where + "'");
    return objs[0];
}

// ---------------------------------------------------------------- the libp11 engine

int uri_index() {
    static const int idx = EVP_PKEY_get_ex_new_index(
        0, nullptr, nullptr, nullptr, [](void*, void* ptr, CRYPTO_EX_DATA*, int, long, void*) {
            if (ptr != nullptr) OPENSSL_clear_free(ptr, std::strlen(static_cast<char*>(ptr)));
        });
    return idx;
}

// The engine must never prompt for a PIN on a terminal (a daemon would block): a key whose URI
// gives no PIN fails to open instead.
UI_METHOD* no_prompt() {
    static UI_METHOD* m = [] {
        UI_METHOD* u = UI_create_method("x2sec: no PIN prompt");
        if (u != nullptr) UI_method_set_reader(u, [](UI*, UI_STRING*) { return 0; });
        return u;
    }();
    return m;
}

Result<ENGINE*> engine_locked(const std::string& module) {
    if (g_engine != nullptr) {
        if (g_engine_module != module)
            return p11_error("module '" + module + "' requested, but the engine uses '" + g_engine_module +
                             "' (one PKCS#11 module per process)");
        return g_engine;
    }
    ENGINE* e = ENGINE_by_id("pkcs11");  // loads engines-3/pkcs11.so (libengine-pkcs11-openssl)
    if (e == nullptr)
        return crypto_error("PKCS#11: the OpenSSL pkcs11 engine (libengine-pkcs11-openssl) is not available");
    if (ENGINE_ctrl_cmd_string(e, "MODULE_PATH", module.c_str(), 0) != 1 || ENGINE_init(e) != 1) {
        ENGINE_free(e);
        return crypto_error("PKCS#11: initialising the pkcs11 engine with module '" + module + "'");
    }
    ENGINE_free(e);  // the functional reference from ENGINE_init keeps it for the process
    g_engine = e;
    g_engine_module = module;
    return e;
}

}  // namespace

bool is_pkcs11_uri(std::string_view ref) {
    if (ref.size() < 7) return false;
    for (size_t i = 0; i < 7; ++i)
        if (std::tolower(static_cast<unsigned char>(ref[i])) != "pkcs11:"[i]) return false;
    return true;
}

std::string redact_pkcs11_uri(std::string_view uri) {
    std::string out(uri);
    for (size_t p = out.find("pin-value="); p != std::string::npos; p = out.find("pin-value=", p + 1)) {
        size_t e = out.find_first_of("&", p);
        out.replace(p, (e == std::string::npos ? out.size() : e) - p, "pin-value=***");
    }
    return out;
}

Result<EVP_PKEY*> load_token_private_key(const std::string& uri) {
    X2SEC_TRY(auto u, parse_uri(uri));
    const std::string module = module_of(u.get());
    X2SEC_TRY(auto pin, pin_of(u.get()));
    {
        // The module is loaded and initialised here first, so the engine finds it initialised.
        std::lock_guard lock(g_mutex);
        X2SEC_TRY_STATUS(module_locked(module));
    }
    // The engine is given the URI without module and PIN (the PIN through its PIN control).
    X2SEC_TRY(auto e_uri, parse_uri(uri));
    p11_kit_uri_set_module_path(e_uri.get(), nullptr);
    p11_kit_uri_set_module_name(e_uri.get(), nullptr);
    p11_kit_uri_set_pin_value(e_uri.get(), nullptr);
    p11_kit_uri_set_pin_source(e_uri.get(), nullptr);
    CK_OBJECT_CLASS cls = CKO_PRIVATE_KEY;
    CK_ATTRIBUTE ca{CKA_CLASS, &cls, sizeof(cls)};
    p11_kit_uri_set_attribute(e_uri.get(), &ca);
    const std::string engine_uri = format_uri(e_uri.get());
    if (engine_uri.empty()) return p11_error("cannot format URI '" + redact_pkcs11_uri(uri) + "'");

    std::lock_guard lock(g_mutex);
    X2SEC_TRY(auto e, engine_locked(module));
    std::string pin_str(reinterpret_cast<const char*>(pin.data()), pin.size());
    if (!pin.empty() && ENGINE_ctrl_cmd_string(e, "PIN", pin_str.c_str(), 0) != 1) {
        secure_zero(pin_str.data(), pin_str.size());
        return crypto_error("PKCS#11: setting the PIN");
    }
    secure_zero(pin_str.data(), pin_str.size());
    EVP_PKEY* k = ENGINE_load_private_key(e, engine_uri.c_str(), no_prompt(), nullptr);
    if (k == nullptr) return crypto_error("PKCS#11: cannot open private key '" + redact_pkcs11_uri(uri) + "'");
    char* copy = OPENSSL_strdup(uri.c_str());
    if (copy == nullptr || EVP_PKEY_set_ex_data(k, uri_index(), copy) != 1) {
        OPENSSL_free(copy);
        EVP_PKEY_free(k);
        return p11_error("out of memory");
    }
    return k;
}

std::optional<std::string> token_key_uri(const EVP_PKEY* key) {
    if (key == nullptr) return std::nullopt;
    const char* s = static_cast<const char*>(EVP_PKEY_get_ex_data(key, uri_index()));
    if (s == nullptr) return std::nullopt;
    return std::string(s);
}

Result<TokenKey> generate_token_key(const std::string& uri, KeyType type) {
    X2SEC_TRY(auto u, parse_uri(uri));
    X2SEC_TRY(auto s, open_session(u.get(), uri, true));
    std::string label = "x2sec";
    if (CK_ATTRIBUTE_PTR p = p11_kit_uri_get_attribute(u.get(), CKA_LABEL); p != nullptr && p->ulValueLen > 0)
        label.assign(static_cast<const char*>(p->pValue), p->ulValueLen);
    uint8_t id[16];
    if (RAND_bytes(id, sizeof(id)) != 1) return crypto_error("PKCS#11: random key id");

    CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
    CK_MECHANISM mech{CKM_EC_KEY_PAIR_GEN, nullptr, 0};
    std::vector<CK_ATTRIBUTE> pub = {
        {CKA_TOKEN, &yes, sizeof(yes)},          {CKA_PRIVATE, &no, sizeof(no)}, {CKA_VERIFY, &yes, sizeof(yes)},
        {CKA_LABEL, label.data(), label.size()}, {CKA_ID, id, sizeof(id)},
    };
    std::vector<CK_ATTRIBUTE> priv = {
        {CKA_TOKEN, &yes, sizeof(yes)},          {CKA_PRIVATE, &yes, sizeof(yes)}, {CKA_SENSITIVE, &yes, sizeof(yes)},
        {CKA_EXTRACTABLE, &no, sizeof(no)},      {CKA_SIGN, &yes, sizeof(yes)},    {CKA_DECRYPT, &no, sizeof(no)},
        {CKA_DERIVE, &no, sizeof(no)},           {CKA_UNWRAP, &no, sizeof(no)},    {CKA_SIGN_RECOVER, &no, sizeof(no)},
        {CKA_LABEL, label.data(), label.size()}, {CKA_ID, id, sizeof(id)},
    };
    Bytes ec_params;
    CK_ULONG bits = 0;
    uint8_t exponent[] = {0x01, 0x00, 0x01};
    switch (type) {
        case KeyType::EcP256:
        case KeyType::EcP384: {
            // CKA_EC_PARAMS: the DER OID of the named curve, encoded by OpenSSL.
            const int nid = type == KeyType::EcP256 ? NID_X9_62_prime256v1 : NID_secp384r1;
            unsigned char* der = nullptr;
            const int len = i2d_ASN1_OBJECT(OBJ_nid2obj(nid), &der);
            if (len <= 0) return crypto_error("PKCS#11: encoding the curve OID");
            ec_params.assign(der, der + len);
            OPENSSL_free(der);
            pub.push_back({CKA_EC_PARAMS, ec_params.data(), ec_params.size()});
            break;
        }
        case KeyType::Rsa2048:
        case KeyType::Rsa3072:
            mech.mechanism = CKM_RSA_PKCS_KEY_PAIR_GEN;
            bits = type == KeyType::Rsa2048 ? 2048 : 3072;
            pub.push_back({CKA_MODULUS_BITS, &bits, sizeof(bits)});
            pub.push_back({CKA_PUBLIC_EXPONENT, exponent, sizeof(exponent)});
            break;
        case KeyType::Ed25519:
            return p11_error("Ed25519 keys are not generated in tokens");
    }
    CK_OBJECT_HANDLE hpub = 0, hpriv = 0;
    if (CK_RV rv =
            s.f()->C_GenerateKeyPair(s.h(), &mech, pub.data(), pub.size(), priv.data(), priv.size(), &hpub, &hpriv);
        rv != CKR_OK)
        return p11_error(std::string("C_GenerateKeyPair (") + key_type_name(type) + "): " + rv_text(rv));

    CK_ATTRIBUTE a_id{CKA_ID, id, sizeof(id)};
    CK_ATTRIBUTE a_label{CKA_LABEL, label.data(), label.size()};
    CK_OBJECT_CLASS cls = CKO_PRIVATE_KEY;
    CK_ATTRIBUTE a_cls{CKA_CLASS, &cls, sizeof(cls)};
    p11_kit_uri_set_attribute(u.get(), &a_id);
    p11_kit_uri_set_attribute(u.get(), &a_label);
    p11_kit_uri_set_attribute(u.get(), &a_cls);
    TokenKey out;
    out.uri = format_uri(u.get());
    if (out.uri.empty()) return p11_error("cannot format the new key's URI");
    X2SEC_TRY(out.key, load_token_private_key(out.uri));
    return out;
}

Status store_token_certificate(const std::string& uri, BytesView cert_der) {
    X2SEC_TRY(auto u, parse_uri(uri));
    X2SEC_TRY(auto s, open_session(u.get(), uri, true));
    X2SEC_TRY(auto key, find_private_key(s, u.get(), uri));
    X2SEC_TRY(auto id, get_attribute(s, key, CKA_ID));
    X2SEC_TRY(auto label, get_attribute(s, key, CKA_LABEL));
    const unsigned char* p = cert_der.data();
    std::unique_ptr<X509, decltype(&X509_free)> x(d2i_X509(nullptr, &p, static_cast<long>(cert_der.size())), X509_free);
    if (!x) return crypto_error("PKCS#11: the certificate to store is not DER X.509");
    unsigned char* subj = nullptr;
    const int subj_len = i2d_X509_NAME(X509_get_subject_name(x.get()), &subj);
    if (subj_len <= 0) return crypto_error("PKCS#11: encoding the certificate subject");
    Bytes subject(subj, subj + subj_len);
    OPENSSL_free(subj);

    CK_OBJECT_CLASS cls = CKO_CERTIFICATE;
    CK_CERTIFICATE_TYPE ctype = CKC_X_509;
    CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
    std::vector<CK_ATTRIBUTE> find = {{CKA_CLASS, &cls, sizeof(cls)}, {CKA_ID, id.data(), id.size()}};
    X2SEC_TRY(auto old, find_objects(s, find));
    std::vector<CK_ATTRIBUTE> t = {
        {CKA_CLASS, &cls, sizeof(cls)},
        {CKA_CERTIFICATE_TYPE, &ctype, sizeof(ctype)},
        {CKA_TOKEN, &yes, sizeof(yes)},
        {CKA_PRIVATE, &no, sizeof(no)},
        {CKA_ID, id.data(), id.size()},
        {CKA_LABEL, label.data(), label.size()},
        {CKA_SUBJECT, subject.data(), subject.size()},
        {CKA_VALUE, const_cast<uint8_t*>(cert_der.data()), cert_der.size()},
    };
    CK_OBJECT_HANDLE h = 0;
    if (CK_RV rv = s.f()->C_CreateObject(s.h(), t.data(), t.size(), &h); rv != CKR_OK)
        return p11_error("C_CreateObject (certificate): " + rv_text(rv));
    // The new certificate is in place before the old one goes.
    for (CK_OBJECT_HANDLE o : old) s.f()->C_DestroyObject(s.h(), o);
    return {};
}

Result<Bytes> load_token_certificate(const std::string& uri) {
    X2SEC_TRY(auto u, parse_uri(uri));
    X2SEC_TRY(auto s, open_session(u.get(), uri, false));
    X2SEC_TRY(auto key, find_private_key(s, u.get(), uri));
    X2SEC_TRY(auto id, get_attribute(s, key, CKA_ID));
    CK_OBJECT_CLASS cls = CKO_CERTIFICATE;
    std::vector<CK_ATTRIBUTE> find = {{CKA_CLASS, &cls, sizeof(cls)}, {CKA_ID, id.data(), id.size()}};
    X2SEC_TRY(auto objs, find_objects(s, find));
    if (objs.empty()) return p11_error("no certificate beside '" + redact_pkcs11_uri(uri) + "'");
    return get_attribute(s, objs[0], CKA_VALUE);
}

Result<TokenKeyAttributes> token_key_attributes(const std::string& uri) {
    X2SEC_TRY(auto u, parse_uri(uri));
    X2SEC_TRY(auto s, open_session(u.get(), uri, false));
    X2SEC_TRY(auto key, find_private_key(s, u.get(), uri));
    CK_BBOOL sens = CK_FALSE, extr = CK_TRUE, asens = CK_FALSE, nextr = CK_FALSE;
    CK_KEY_TYPE kt = 0;
    CK_ATTRIBUTE a[] = {
        {CKA_SENSITIVE, &sens, sizeof(sens)},
        {CKA_EXTRACTABLE, &extr, sizeof(extr)},
        {CKA_ALWAYS_SENSITIVE, &asens, sizeof(asens)},
        {CKA_NEVER_EXTRACTABLE, &nextr, sizeof(nextr)},
        {CKA_KEY_TYPE, &kt, sizeof(kt)},
    };
    if (CK_RV rv = s.f()->C_GetAttributeValue(s.h(), key, a, 5); rv != CKR_OK)
        return p11_error("C_GetAttributeValue: " + rv_text(rv));
    TokenKeyAttributes out;
    out.sensitive = sens == CK_TRUE;
    out.extractable = extr == CK_TRUE;
    out.always_sensitive = asens == CK_TRUE;
    out.never_extractable = nextr == CK_TRUE;
    CK_ATTRIBUTE v{kt == CKK_RSA ? CKA_PRIVATE_EXPONENT : CKA_VALUE, nullptr, 0};
    const CK_RV rv = s.f()->C_GetAttributeValue(s.h(), key, &v, 1);
    out.value_readable = rv == CKR_OK && v.ulValueLen != CK_UNAVAILABLE_INFORMATION;
    return out;
}

}  // namespace x2sec::crypto
