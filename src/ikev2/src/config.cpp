// Text forms of the engine's configuration types: proposals (strongSwan syntax), identities,
// endpoints and event names.
#include <openssl/err.h>
#include <openssl/objects.h>
#include <openssl/x509.h>

#include <algorithm>
#include <cctype>
#include <sstream>
#include <x2sec/ikev2/engine.hpp>

namespace x2sec::ike {

namespace {

Error config_error(std::string detail) {
    return Error(ErrorDomain::Config, 0, std::move(detail));
}

std::vector<std::string> split(const std::string& s, char sep) {
    std::vector<std::string> out;
    std::string cur;
    for (char c : s) {
        if (c == sep) {
            out.push_back(cur);
            cur.clear();
        } else {
            cur.push_back(c);
        }
    }
    out.push_back(cur);
    return out;
}

std::string lower(std::string s) {
    for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return s;
}

std::string trim(const std::string& s) {
    size_t b = s.find_first_not_of(" \t");
    if (b == std::string::npos) return "";
    size_t e = s.find_last_not_of(" \t");
    return s.substr(b, e - b + 1);
}

template <typename T>
void add_unique(std::vector<T>& v, T x) {
    if (std::find(v.begin(), v.end(), x) == v.end()) v.push_back(x);
}

// Encryption keywords: aes128/192/256 (CBC), aes128gcm16/aes128gcm (GCM, 16-octet ICV).
std::optional<EncrAlg> parse_encr(const std::string& t) {
    static const struct {
        const char* name;
        crypto::EncrId id;
        unsigned bits;
    } table[] = {
        {"aes128", crypto::EncrId::AesCbc, 128},        {"aes192", crypto::EncrId::AesCbc, 192},
        {"aes256", crypto::EncrId::AesCbc, 256},        {"aes", crypto::EncrId::AesCbc, 128},
        {"aes128gcm16", crypto::EncrId::AesGcm16, 128}, {"aes192gcm16", crypto::EncrId::AesGcm16, 192},
        {"aes256gcm16", crypto::EncrId::AesGcm16, 256}, {"aes128gcm", crypto::EncrId::AesGcm16, 128},
        {"aes192gcm", crypto::EncrId::AesGcm16, 192},   {"aes256gcm", crypto::EncrId::AesGcm16, 256},
    };
    for (const auto& e : table)
        if (t == e.name) return EncrAlg{e.id, e.bits};
    return std::nullopt;
}

std::optional<crypto::IntegId> parse_integ(const std::string& t) {
    if (t == "sha256" || t == "sha2_256") return crypto::IntegId::HmacSha2_256_128;
    if (t == "sha384" || t == "sha2_384") return crypto::IntegId::HmacSha2_384_192;
    if (t == "sha512" || t == "sha2_512") return crypto::IntegId::HmacSha2_512_256;
    return std::nullopt;
}

std::optional<crypto::PrfId> parse_prf(const std::string& t) {
    if (t == "prfsha256") return crypto::PrfId::HmacSha2_256;
    if (t == "prfsha384") return crypto::PrfId::HmacSha2_384;
    if (t == "prfsha512") return crypto::PrfId::HmacSha2_512;
    return std::nullopt;
}

std::optional<crypto::DhGroup> parse_dh(const std::string& t) {
    if (t == "modp2048") return crypto::DhGroup::Modp2048;
    if (t == "ecp256") return crypto::DhGroup::Ecp256;
    if (t == "ecp384") return crypto::DhGroup::Ecp384;
    if (t == "x25519" || t == "curve25519") return crypto::DhGroup::Curve25519;
    return std::nullopt;
}

std::string encr_keyword(const EncrAlg& e) {
    std::string s = "aes" + std::to_string(e.key_bits);
    if (e.id == crypto::EncrId::AesGcm16) s += "gcm16";
    return s;
}
const char* integ_keyword(crypto::IntegId i) {
    switch (i) {
        case crypto::IntegId::HmacSha2_256_128:
            return "sha256";
        case crypto::IntegId::HmacSha2_384_192:
            return "sha384";
        case crypto::IntegId::HmacSha2_512_256:
            return "sha512";
        case crypto::IntegId::None:
            return "none";
    }
    return "?";
}
const char* prf_keyword(crypto::PrfId p) {
    switch (p) {
        case crypto::PrfId::HmacSha2_256:
            return "prfsha256";
        case crypto::PrfId::HmacSha2_384:
            return "prfsha384";
        case crypto::PrfId::HmacSha2_512:
            return "prfsha512";
    }
    return "?";
}
const char* dh_keyword(crypto::DhGroup g) {
    switch (g) {
        case crypto::DhGroup::Modp2048:
            return "modp2048";
        case crypto::DhGroup::Ecp256:
            return "ecp256";
        case crypto::DhGroup::Ecp384:
            return "ecp384";
        case crypto::DhGroup::Curve25519:
            return "x25519";
    }
    return "?";
}

}  // namespace

Result<IkeProposal> parse_ike_proposal(const std::string& text) {
    IkeProposal p;
    std::string t = lower(trim(text));
    if (t.empty()) return config_error("empty IKE proposal");
    for (const auto& tok : split(t, '-')) {
        if (tok.empty()) return config_error("IKE proposal '" + text + "': empty algorithm name");
        if (auto e = parse_encr(tok))
            add_unique(p.encr, *e);
        else if (auto i = parse_integ(tok))
            add_unique(p.integ, *i);
        else if (auto f = parse_prf(tok))
            add_unique(p.prf, *f);
        else if (auto d = parse_dh(tok))
            add_unique(p.dh, *d);
        else
            return config_error("IKE proposal '" + text + "': unknown algorithm '" + tok + "'");
    }
    if (p.encr.empty()) return config_error("IKE proposal '" + text + "': no encryption algorithm");
    if (p.dh.empty()) return config_error("IKE proposal '" + text + "': no key exchange (DH) group");
    bool any_aead = false, any_plain = false;
    for (const auto& e : p.encr) (e.id == crypto::EncrId::AesGcm16 ? any_aead : any_plain) = true;
    if (any_aead && any_plain)
        return config_error("IKE proposal '" + text + "': AEAD and non-AEAD ciphers cannot share a proposal");
    if (any_aead && !p.integ.empty())
        return config_error("IKE proposal '" + text + "': AEAD cipher takes no integrity algorithm");
    if (any_plain && p.integ.empty())
        return config_error("IKE proposal '" + text + "': CBC cipher needs an integrity algorithm");
    if (p.prf.empty()) {
        // strongSwan's rule: without an explicit PRF, use the one matching each integrity
        // algorithm; an AEAD proposal gets PRF_HMAC_SHA2_256.
        for (auto i : p.integ) {
            if (i == crypto::IntegId::HmacSha2_256_128) add_unique(p.prf, crypto::PrfId::HmacSha2_256);
            if (i == crypto::IntegId::HmacSha2_384_192) add_unique(p.prf, crypto::PrfId::HmacSha2_384);
            if (i == crypto::IntegId::HmacSha2_512_256) add_unique(p.prf, crypto::PrfId::HmacSha2_512);
        }
        if (p.prf.empty()) p.prf.push_back(crypto::PrfId::HmacSha2_256);
    }
    return p;
}

std::string to_string(const IkeProposal& p) {
    std::string s;
    auto add = [&](const std::string& x) {
        if (!s.empty()) s += "-";
        s += x;
    };
    for (const auto& e : p.encr) add(encr_keyword(e));
    for (auto i : p.integ) add(integ_keyword(i));
    for (auto f : p.prf) add(prf_keyword(f));
    for (auto d : p.dh) add(dh_keyword(d));
    return s;
}

Result<ChildProposal> parse_child_proposal(const std::string& text) {
    ChildProposal p;
    std::string t = lower(trim(text));
    if (t.empty()) return config_error("empty ESP proposal");
    std::vector<EncrAlg> encr;
    std::vector<crypto::IntegId> integ;
    std::vector<bool> esn;
    for (const auto& tok : split(t, '-')) {
        if (tok.empty()) return config_error("ESP proposal '" + text + "': empty algorithm name");
        if (auto e = parse_encr(tok))
            add_unique(encr, *e);
        else if (auto i = parse_integ(tok))
            add_unique(integ, *i);
        else if (auto d = parse_dh(tok))
            add_unique(p.pfs, *d);
        else if (tok == "esn")
            add_unique(esn, true);
        else if (tok == "noesn")
            add_unique(esn, false);
        else
            return config_error("ESP proposal '" + text + "': unknown algorithm '" + tok + "'");
    }
    if (encr.empty()) return config_error("ESP proposal '" + text + "': no encryption algorithm");
    for (const auto& e : encr) {
        if (e.id == crypto::EncrId::AesGcm16) {
            if (e.key_bits == 128)
                add_unique(p.ciphers, EspCipher::AesGcm16_128);
            else if (e.key_bits == 256)
                add_unique(p.ciphers, EspCipher::AesGcm16_256);
            else
                return config_error("ESP proposal '" + text + "': " + encr_keyword(e) + " is not supported for ESP");
        } else {
            if (std::find(integ.begin(), integ.end(), crypto::IntegId::HmacSha2_256_128) == integ.end())
                return config_error("ESP proposal '" + text + "': " + encr_keyword(e) +
                                    " needs the sha256 integrity algorithm");
            if (e.key_bits == 128)
                add_unique(p.ciphers, EspCipher::AesCbc128_HmacSha256_128);
            else if (e.key_bits == 256)
                add_unique(p.ciphers, EspCipher::AesCbc256_HmacSha256_128);
            else
                return config_error("ESP proposal '" + text + "': " + encr_keyword(e) + " is not supported for ESP");
        }
    }
    for (auto i : integ)
        if (i != crypto::IntegId::HmacSha2_256_128)
            return config_error(std::string("ESP proposal '") + text + "': integrity " + integ_keyword(i) +
                                " is not supported for ESP");
    p.esn = esn.empty() ? std::vector<bool>{false} : esn;
    return p;
}

std::string to_string(const ChildProposal& p) {
    std::string s;
    auto add = [&](const std::string& x) {
        if (!s.empty()) s += "-";
        s += x;
    };
    bool cbc = false;
    for (auto c : p.ciphers) {
        switch (c) {
            case EspCipher::AesGcm16_128:
                add("aes128gcm16");
                break;
            case EspCipher::AesGcm16_256:
                add("aes256gcm16");
                break;
            case EspCipher::AesCbc128_HmacSha256_128:
                add("aes128");
                cbc = true;
                break;
            case EspCipher::AesCbc256_HmacSha256_128:
                add("aes256");
                cbc = true;
                break;
        }
    }
    if (cbc) add("sha256");
    for (auto d : p.pfs) add(dh_keyword(d));
    if (!(p.esn.size() == 1 && !p.esn[0]))
        for (bool e : p.esn) add(e ? "esn" : "noesn");
    return s;
}

// ---------------------------------------------------------------- identities

namespace {

// "C=DE, O=Vendor A, CN=node" in DER order (first RDN first, as strongSwan writes them);
// ',' inside a value is escaped as "\,".
Result<Bytes> dn_from_text(const std::string& text) {
    std::vector<std::pair<std::string, std::string>> rdns;
    std::string cur;
    std::vector<std::string> parts;
    for (size_t i = 0; i < text.size(); ++i) {
        char c = text[i];
        if (c == '\\' && i + 1 < text.size()) {
            cur.push_back(text[++i]);
        } else if (c == ',' || c == '/') {
            parts.push_back(cur);
            cur.clear();
        } else {
            cur.push_back(c);
        }
    }
    parts.push_back(cur);
    X509_NAME* name = X509_NAME_new();
    if (!name) return config_error("out of memory");
    for (const auto& part : parts) {
        std::string p = trim(part);
        if (p.empty()) continue;
        auto eq = p.find('=');
        if (eq == std::string::npos || eq == 0) {
            X509_NAME_free(name);
            return config_error("distinguished name '" + text + "': '" + p + "' is not ATTR=value");
        }
        std::string attr = trim(p.substr(0, eq)), value = trim(p.substr(eq + 1));
        if (attr == "E") attr = "emailAddress";
        if (OBJ_txt2nid(attr.c_str()) == NID_undef ||
            X509_NAME_add_entry_by_txt(name, attr.c_str(), MBSTRING_UTF8,
                                       reinterpret_cast<const unsigned char*>(value.c_str()),
                                       static_cast<int>(value.size()), -1, 0) != 1) {
            X509_NAME_free(name);
            ERR_clear_error();
            return config_error("distinguished name '" + text + "': unknown attribute '" + attr + "'");
        }
    }
    if (X509_NAME_entry_count(name) == 0) {
        X509_NAME_free(name);
        return config_error("distinguished name '" + text + "' is empty");
    }
    unsigned char* der = nullptr;
    int len = i2d_X509_NAME(name, &der);
    X509_NAME_free(name);
    if (len <= 0) return config_error("distinguished name '" + text + "' cannot be encoded");
    Bytes out(der, der + len);
    OPENSSL_free(der);
    return out;
}

std::string dn_to_text(BytesView der) {
    const unsigned char* p = der.data();
    X509_NAME* name = d2i_X509_NAME(nullptr, &p, static_cast<long>(der.size()));
    if (!name) {
        ERR_clear_error();
        return "dn:#" + to_hex(der);
    }
    std::string out;
    int n = X509_NAME_entry_count(name);
    for (int i = 0; i < n; ++i) {
        X509_NAME_ENTRY* e = X509_NAME_get_entry(name, i);
        int nid = OBJ_obj2nid(X509_NAME_ENTRY_get_object(e));
        const char* sn = nid == NID_undef ? "?" : OBJ_nid2sn(nid);
        if (nid == NID_pkcs9_emailAddress) sn = "E";
        unsigned char* utf8 = nullptr;
        int len = ASN1_STRING_to_UTF8(&utf8, X509_NAME_ENTRY_get_data(e));
        std::string value = len > 0 ? std::string(reinterpret_cast<char*>(utf8), static_cast<size_t>(len)) : "";
        OPENSSL_free(utf8);
        // Peer-supplied: controls and invalid UTF-8 escaped (printable_text doubles '\\'),
        // then the separators.
        std::string escaped;
        for (char c : printable_text(value)) {
            if (c == ',' || c == '/') escaped.push_back('\\');
            escaped.push_back(c);
        }
        if (!out.empty()) out += ", ";
        out += std::string(sn) + "=" + escaped;
    }
    X509_NAME_free(name);
    return out;
}

}  // namespace

Result<Identity> Identity::parse(const std::string& text_in) {
    std::string text = trim(text_in);
    if (text.empty()) return config_error("empty identity");
    Identity id;
    auto colon = text.find(':');
    std::string prefix = colon == std::string::npos ? "" : lower(text.substr(0, colon));
    std::string rest = colon == std::string::npos ? text : text.substr(colon + 1);
    auto parse_ip = [&](const std::string& s, bool v6) -> Result<Identity> {
        auto ip = IpAddress::parse(s);
        if (!ip || ip->v6 != v6)
            return config_error("identity '" + text + "': '" + s + "' is not an IPv" + (v6 ? "6" : "4") + " address");
        Identity r;
        r.type = v6 ? x509::IdType::Ipv6Addr : x509::IdType::Ipv4Addr;
        r.data.assign(ip->view().begin(), ip->view().end());
        return r;
    };
    if (prefix == "fqdn") {
        if (rest.empty()) return config_error("identity '" + text + "': empty FQDN");
        id.type = x509::IdType::Fqdn;
        id.data = to_bytes(rest);
        return id;
    }
    if (prefix == "ipv4") return parse_ip(rest, false);
    if (prefix == "ipv6") return parse_ip(rest, true);
    if (prefix == "email" || prefix == "rfc822") {
        if (rest.empty()) return config_error("identity '" + text + "': empty e-mail address");
        id.type = x509::IdType::Rfc822Addr;
        id.data = to_bytes(rest);
        return id;
    }
    if (prefix == "dn" || prefix == "asn1dn") {
        X2SEC_TRY(auto der, dn_from_text(rest));
        id.type = x509::IdType::DerAsn1Dn;
        id.data = std::move(der);
        return id;
    }
    if (prefix == "keyid") {
        auto b = from_hex(rest);
        if (!b || b->empty()) return config_error("identity '" + text + "': key ID must be hex");
        id.type = x509::IdType::KeyId;
        id.data = *b;
        return id;
    }
    // Automatic: an IP address, a DN (contains '='), an e-mail address ('@'), else an FQDN.
    if (auto ip = IpAddress::parse(text)) return parse_ip(text, ip->v6);
    if (text.find('=') != std::string::npos) {
        X2SEC_TRY(auto der, dn_from_text(text));
        id.type = x509::IdType::DerAsn1Dn;
        id.data = std::move(der);
        return id;
    }
    if (text.find('@') != std::string::npos && text.front() != '@') {
        id.type = x509::IdType::Rfc822Addr;
        id.data = to_bytes(text);
        return id;
    }
    id.type = x509::IdType::Fqdn;
    id.data = to_bytes(text);
    return id;
}

std::string Identity::to_string() const {
    switch (type) {
        // The data is whatever the peer sent: escaped (never raw octets in logs, events, JSON).
        case x509::IdType::Fqdn:
            return "fqdn:" + printable_text(data);
        case x509::IdType::Rfc822Addr:
            return "email:" + printable_text(data);
        case x509::IdType::Ipv4Addr:
        case x509::IdType::Ipv6Addr: {
            IpAddress ip;
            ip.v6 = type == x509::IdType::Ipv6Addr;
            if (data.size() != ip.size()) return std::string(ip.v6 ? "ipv6:#" : "ipv4:#") + to_hex(data);
            std::copy(data.begin(), data.end(), ip.bytes.begin());
            return (ip.v6 ? "ipv6:" : "ipv4:") + ip.to_string();
        }
        case x509::IdType::DerAsn1Dn:
            return "dn:" + dn_to_text(data);
        case x509::IdType::KeyId:
            return "keyid:" + to_hex(data);
    }
    return "id" + std::to_string(static_cast<int>(type)) + ":#" + to_hex(data);
}

const char* to_string(AuthMethod m) {
    switch (m) {
        case AuthMethod::Certificate:
            return "certificate";
        case AuthMethod::Psk:
            return "pre-shared key";
    }
    return "?";
}

const char* to_string(UniquePolicy u) {
    switch (u) {
        case UniquePolicy::No:
            return "no";
        case UniquePolicy::Never:
            return "never";
        case UniquePolicy::Keep:
            return "keep";
        case UniquePolicy::Replace:
            return "replace";
    }
    return "?";
}

Result<UniquePolicy> parse_unique_policy(const std::string& text) {
    for (auto u : {UniquePolicy::No, UniquePolicy::Never, UniquePolicy::Keep, UniquePolicy::Replace})
        if (text == to_string(u)) return u;
    return Error(ErrorDomain::Config, 0,
                 "unique must be \"no\", \"never\", \"keep\" or \"replace\", not \"" + text + "\"");
}

const char* to_string(Event::Kind k) {
    switch (k) {
        case Event::Kind::IkeSaUp:
            return "IKE_SA_UP";
        case Event::Kind::IkeSaDown:
            return "IKE_SA_DOWN";
        case Event::Kind::IkeSaRekeyed:
            return "IKE_SA_REKEYED";
        case Event::Kind::ChildSaUp:
            return "CHILD_SA_UP";
        case Event::Kind::ChildSaDown:
            return "CHILD_SA_DOWN";
        case Event::Kind::ChildSaRekeyed:
            return "CHILD_SA_REKEYED";
        case Event::Kind::AuthFailed:
            return "AUTH_FAILED";
        case Event::Kind::PeerNotify:
            return "PEER_NOTIFY";
        case Event::Kind::PeerDead:
            return "PEER_DEAD";
        case Event::Kind::NegotiationFailed:
            return "NEGOTIATION_FAILED";
        case Event::Kind::PeerCertReq:
            return "PEER_CERTREQ";
    }
    return "?";
}

std::string Endpoint::to_string() const {
    if (addr.v6) return "[" + addr.to_string() + "]:" + std::to_string(port);
    return addr.to_string() + ":" + std::to_string(port);
}

}  // namespace x2sec::ike
