#include <openssl/asn1t.h>
#include <openssl/err.h>
#include <openssl/obj_mac.h>
#include <openssl/x509v3.h>
#include <algorithm>
#include <x2sec/cmp/genm.hpp>
#include <x2sec/pki/root_update.hpp>

namespace x2sec::cmp {

namespace {

Error genm_error(const std::string& what) {
    auto q = pki::ossl_errors();
    return Error(ErrorDomain::Cmp, 0, what + (q.empty() ? "" : " [" + q + "]"));
}

// OpenSSL's template decoder over the whole buffer: trailing octets are an error.
template <class T>
Result<T*> decode_all(BytesView der, const ASN1_ITEM* item, const char* what) {
    const unsigned char* p = der.data();
    auto* v = static_cast<T*>(static_cast<void*>(ASN1_item_d2i(nullptr, &p, static_cast<long>(der.size()), item)));
    if (!v) return genm_error(std::string(what) + " does not decode");
    if (p != der.data() + der.size()) {
        ASN1_item_free(static_cast<ASN1_VALUE*>(static_cast<void*>(v)), item);
        return Error(ErrorDomain::Cmp, 0, std::string(what) + ": trailing octets");
    }
    return v;
}

struct AsnFree {
    void operator()(ASN1_TYPE* t) const { ASN1_TYPE_free(t); }
    void operator()(ASN1_OBJECT* o) const { ASN1_OBJECT_free(o); }
    void operator()(X509_NAME* n) const { X509_NAME_free(n); }
    void operator()(GENERAL_NAMES* g) const { GENERAL_NAMES_free(g); }
    void operator()(X509_EXTENSIONS* e) const { sk_X509_EXTENSION_pop_free(e, X509_EXTENSION_free); }
    void operator()(OSSL_CRMF_MSG* m) const { OSSL_CRMF_MSG_free(m); }
    void operator()(X509_ALGOR* a) const { X509_ALGOR_free(a); }
    void operator()(X2SEC_ATAV* a) const { X2SEC_ATAV_free(a); }
    void operator()(ASN1_INTEGER* i) const { ASN1_INTEGER_free(i); }
};
template <class T>
using Own = std::unique_ptr<T, AsnFree>;

// One keySpec control: id-regCtrl-algId with an AlgorithmIdentifier, or id-regCtrl-rsaKeyLen
// with the modulus length.
Own<X2SEC_ATAV> key_control(pki::KeyAlg alg) {
    Own<X2SEC_ATAV> a(X2SEC_ATAV_new());
    if (!a) return nullptr;
    if (alg == pki::KeyAlg::Rsa2048 || alg == pki::KeyAlg::Rsa3072) {
        Own<ASN1_INTEGER> bits(ASN1_INTEGER_new());
        if (!bits || !ASN1_INTEGER_set(bits.get(), alg == pki::KeyAlg::Rsa2048 ? 2048 : 3072)) return nullptr;
        ASN1_OBJECT_free(a->type);
        a->type = OBJ_txt2obj(kIdRegCtrlRsaKeyLen, 1);
        if (!a->type || !ASN1_TYPE_set1(a->value, V_ASN1_INTEGER, bits.get())) return nullptr;
        return a;
    }
    Own<X509_ALGOR> ai(X509_ALGOR_new());
    if (!ai || !X509_ALGOR_set0(ai.get(), OBJ_nid2obj(NID_X9_62_id_ecPublicKey), V_ASN1_OBJECT,
                                OBJ_nid2obj(alg == pki::KeyAlg::EcP256 ? NID_X9_62_prime256v1 : NID_secp384r1)))
        return nullptr;
    ASN1_OBJECT_free(a->type);
    a->type = OBJ_txt2obj(kIdRegCtrlAlgId, 1);
    ASN1_TYPE_free(a->value);
    a->value = ASN1_TYPE_pack_sequence(ASN1_ITEM_rptr(X509_ALGOR), ai.get(), nullptr);
    if (!a->type || !a->value) return nullptr;
    return a;
}

}  // namespace

ItavPtr make_itav(const char* oid, const ASN1_ITEM* item, const void* value) {
    Own<ASN1_OBJECT> type(OBJ_txt2obj(oid, 1));
    if (!type) return nullptr;
    Own<ASN1_TYPE> val;
    if (value) {
        val.reset(ASN1_TYPE_pack_sequence(item, const_cast<void*>(value), nullptr));
        if (!val) return nullptr;
    }
    ItavPtr itav(OSSL_CMP_ITAV_create(type.get(), val.get()));
    if (!itav) return nullptr;
    (void)type.release();  // owned by the ITAV now
    (void)val.release();
    return itav;
}

std::string itav_oid(const OSSL_CMP_ITAV* itav) {
    char oid[80] = "?";
    const ASN1_OBJECT* t = itav ? OSSL_CMP_ITAV_get0_type(itav) : nullptr;
    if (t && OBJ_obj2txt(oid, sizeof oid, t, 1) <= 0) return "?";
    return oid;
}

Result<std::optional<Bytes>> itav_value_der(const OSSL_CMP_ITAV* itav) {
    ASN1_TYPE* v = OSSL_CMP_ITAV_get0_value(itav);
    if (!v) return std::optional<Bytes>{};
    if (ASN1_TYPE_get(v) != V_ASN1_SEQUENCE || !v->value.sequence)
        return Error(ErrorDomain::Cmp, 0, "infoValue of " + itav_oid(itav) + " is not a SEQUENCE");
    // ASN1_ANY keeps a constructed value as its whole DER encoding.
    const unsigned char* d = ASN1_STRING_get0_data(v->value.sequence);
    int n = ASN1_STRING_length(v->value.sequence);
    if (!d || n <= 0) return Error(ErrorDomain::Cmp, 0, "infoValue of " + itav_oid(itav) + " is empty");
    return std::optional<Bytes>(Bytes(d, d + n));
}

Result<RootCaKeyUpdatePtr> decode_root_ca_key_update(BytesView der) {
    X2SEC_TRY(auto* v,
              decode_all<X2SEC_ROOTCAKEYUPDATE>(der, ASN1_ITEM_rptr(X2SEC_ROOTCAKEYUPDATE), "RootCaKeyUpdateContent"));
    return RootCaKeyUpdatePtr(v);
}

Result<CertReqTemplatePtr> decode_cert_req_template(BytesView der) {
    X2SEC_TRY(auto* v,
              decode_all<X2SEC_CERTREQTEMPLATE>(der, ASN1_ITEM_rptr(X2SEC_CERTREQTEMPLATE), "CertReqTemplateContent"));
    return CertReqTemplatePtr(v);
}

Result<pki::X509Ptr> decode_certificate(BytesView der) {
    X2SEC_TRY(auto* v, decode_all<X509>(der, ASN1_ITEM_rptr(X509), "Certificate"));
    return pki::X509Ptr(v);
}

Status check_root_key_update(const RootKeyUpdate& u) {
    if (!u.new_with_new || !u.new_with_old)
        return Error(ErrorDomain::Config, 0, "root key update: newWithNew and newWithOld are required");
    X509* nn = u.new_with_new.get();
    EVP_PKEY* new_key = X509_get0_pubkey(nn);
    if (!new_key || X509_check_issued(nn, nn) != X509_V_OK || X509_verify(nn, new_key) != 1)
        return Error(ErrorDomain::Config, 0, "root key update: newWithNew is not a self-signed certificate");
    X509* no = u.new_with_old.get();
    if (X509_NAME_cmp(X509_get_subject_name(no), X509_get_subject_name(nn)) != 0 ||
        EVP_PKEY_eq(X509_get0_pubkey(no), new_key) != 1)
        return Error(ErrorDomain::Config, 0, "root key update: newWithOld does not carry the new root's name and key");
    if (X509_verify(no, X509_get0_pubkey(no)) == 1)
        return Error(ErrorDomain::Config, 0, "root key update: newWithOld is signed by the new key, not the old one");
    if (X509* on = u.old_with_new.get()) {
        if (X509_verify(on, new_key) != 1 || X509_NAME_cmp(X509_get_issuer_name(on), X509_get_subject_name(nn)) != 0)
            return Error(ErrorDomain::Config, 0, "root key update: oldWithNew is not signed by the new root key");
        if (X509_NAME_cmp(X509_get_subject_name(on), X509_get_issuer_name(no)) != 0)
            return Error(ErrorDomain::Config, 0,
                         "root key update: oldWithNew's subject is not the old root that signed newWithOld");
    }
    ERR_clear_error();
    return ok_status();
}

bool is_old_root_of(const RootKeyUpdate& u, X509* old_root) {
    if (!old_root || !u.new_with_old) return false;
    EVP_PKEY* k = X509_get0_pubkey(old_root);
    bool ok = k && X509_NAME_cmp(X509_get_subject_name(old_root), X509_get_issuer_name(u.new_with_old.get())) == 0 &&
              X509_verify(u.new_with_old.get(), k) == 1;
    ERR_clear_error();
    return ok;
}

Result<RootKeyUpdate> make_root_key_update(X509* old_root, EVP_PKEY* old_key, EVP_PKEY* new_key,
                                           const std::string& new_subject, int64_t not_before, int64_t validity_days) {
    // pki::make_root_update (what `x2sec pki root-update` writes) makes the three certificates.
    X2SEC_TRY(auto m, pki::make_root_update(old_root, old_key, new_key, new_subject, not_before + 60, validity_days));
    RootKeyUpdate u{std::move(m.new_with_new), std::move(m.new_with_old), std::move(m.old_with_new)};
    X2SEC_TRY_STATUS(check_root_key_update(u));
    return u;
}

Result<CertReqTemplatePtr> make_cert_req_template(const IssuanceProfile& p,
                                                  const std::vector<std::string>& identities) {
    if (identities.empty()) return Error(ErrorDomain::Cmp, 0, "the requester has no node identity");
    const std::string& id = identities.front();
    CertReqTemplatePtr t(X2SEC_CERTREQTEMPLATE_new());
    Own<OSSL_CRMF_MSG> msg(OSSL_CRMF_MSG_new());
    if (!t || !msg) return genm_error("cannot allocate the template");
    X2SEC_TRY(auto name, pki::parse_name("/CN=" + id));
    if (!OSSL_CRMF_CERTTEMPLATE_fill(OSSL_CRMF_MSG_get0_tmpl(msg.get()), nullptr, name.get(), nullptr, nullptr))
        return genm_error("cannot set the template's subject");

    Own<GENERAL_NAMES> names(GENERAL_NAMES_new());
    auto add = [&](int type, const std::string& value) -> bool {
        GENERAL_NAME* g = GENERAL_NAME_new();
        ASN1_STRING* s = type == GEN_IPADD ? ASN1_OCTET_STRING_new() : ASN1_IA5STRING_new();
        bool ok = g && s && ASN1_STRING_set(s, value.data(), static_cast<int>(value.size()));
        if (ok) GENERAL_NAME_set0_value(g, type, s);
        if (!ok || !sk_GENERAL_NAME_push(names.get(), g)) {
            if (!ok) ASN1_STRING_free(s);
            GENERAL_NAME_free(g);
            return false;
        }
        return true;
    };
    auto required = [&](const char* type) {
        return std::find(p.required.begin(), p.required.end(), type) != p.required.end();
    };
    bool ok = names != nullptr;
    if (ok && !p.dns.empty()) {
        bool fits = false;
        for (auto& pat : p.dns) fits = fits || match_dns_pattern(pat, id, id);
        ok = add(GEN_DNS, fits ? id : "");
    }
    if (ok && !p.ip.empty() && required("ip")) ok = add(GEN_IPADD, "");
    if (ok && !p.uri.empty() && required("uri")) {
        std::string u = expand_pattern(p.uri.front(), id);
        ok = add(GEN_URI, u.find('*') == std::string::npos ? u : "");
    }
    if (!ok) return genm_error("cannot build the template's subjectAltName");
    if (sk_GENERAL_NAME_num(names.get()) > 0) {
        X509_EXTENSIONS* exts = nullptr;
        if (X509V3_add1_i2d(&exts, NID_subject_alt_name, names.get(), 0, X509V3_ADD_DEFAULT) != 1)
            return genm_error("cannot encode the template's subjectAltName");
        if (!OSSL_CRMF_MSG_set0_extensions(msg.get(), exts)) {
            sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
            return genm_error("cannot set the template's extensions");
        }
    }
    OSSL_CRMF_CERTTEMPLATE_free(t->certTemplate);
    t->certTemplate = static_cast<OSSL_CRMF_CERTTEMPLATE*>(
        ASN1_item_dup(ASN1_ITEM_rptr(OSSL_CRMF_CERTTEMPLATE), OSSL_CRMF_MSG_get0_tmpl(msg.get())));
    if (!t->certTemplate) return genm_error("cannot copy the template");

    for (auto& k : p.key_types) {
        X2SEC_TRY(auto alg, pki::parse_key_alg(k));
        if (!t->keySpec && !(t->keySpec = sk_X2SEC_ATAV_new_null())) return genm_error("cannot allocate keySpec");
        auto c = key_control(alg);
        if (!c || !sk_X2SEC_ATAV_push(t->keySpec, c.get())) return genm_error("cannot build keySpec");
        (void)c.release();
    }
    return t;
}

}  // namespace x2sec::cmp

// clang-format off
// OpenSSL ASN.1 templates for the value types (genm.hpp); the CMP module of RFC 9480 uses
// EXPLICIT tags, so the tagged optional fields are ASN1_EXP_OPT.
ASN1_SEQUENCE(X2SEC_ROOTCAKEYUPDATE) = {
    ASN1_SIMPLE(X2SEC_ROOTCAKEYUPDATE, newWithNew, X509),
    ASN1_EXP_OPT(X2SEC_ROOTCAKEYUPDATE, newWithOld, X509, 0),
    ASN1_EXP_OPT(X2SEC_ROOTCAKEYUPDATE, oldWithNew, X509, 1),
} ASN1_SEQUENCE_END(X2SEC_ROOTCAKEYUPDATE)
IMPLEMENT_ASN1_FUNCTIONS(X2SEC_ROOTCAKEYUPDATE)

ASN1_SEQUENCE(X2SEC_ATAV) = {
    ASN1_SIMPLE(X2SEC_ATAV, type, ASN1_OBJECT),
    ASN1_SIMPLE(X2SEC_ATAV, value, ASN1_ANY),
} ASN1_SEQUENCE_END(X2SEC_ATAV)
IMPLEMENT_ASN1_FUNCTIONS(X2SEC_ATAV)

ASN1_SEQUENCE(X2SEC_CERTREQTEMPLATE) = {
    ASN1_SIMPLE(X2SEC_CERTREQTEMPLATE, certTemplate, OSSL_CRMF_CERTTEMPLATE),
    ASN1_SEQUENCE_OF_OPT(X2SEC_CERTREQTEMPLATE, keySpec, X2SEC_ATAV),
} ASN1_SEQUENCE_END(X2SEC_CERTREQTEMPLATE)
IMPLEMENT_ASN1_FUNCTIONS(X2SEC_CERTREQTEMPLATE)
    // clang-format on
