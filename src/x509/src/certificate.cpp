#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <x2sec/common/file.hpp>
#include <x2sec/crypto/crypto.hpp>
#include <x2sec/crypto/ossl_ptr.hpp>
#include <x2sec/x509/x509.hpp>

#include "der_parse.hpp"

namespace x2sec::x509 {

namespace {

using BioPtr = crypto::OsslPtr<BIO, BIO_free_all>;

Error pki_error(const std::string& what) {
    return Error(ErrorDomain::Pki, static_cast<int>(VerifyFailure::Other),
                 what + (ERR_peek_error() ? ": " + crypto::openssl_errors() : std::string()));
}

std::string name_to_string(const X509_NAME* n) {
    if (n == nullptr) return {};
    BioPtr bio(BIO_new(BIO_s_mem()));
    if (!bio) return {};
    X509_NAME_print_ex(bio.get(), n, 0, XN_FLAG_RFC2253 & ~ASN1_STRFLGS_ESC_MSB);
    const char* p = nullptr;
    const long len = BIO_get_mem_data(bio.get(), &p);
    return len > 0 ? std::string(p, static_cast<size_t>(len)) : std::string();
}

int64_t asn1_time_to_unix(const ASN1_TIME* t) {
    struct tm tm {};
    if (t == nullptr || ASN1_TIME_to_tm(t, &tm) != 1) return 0;
    return static_cast<int64_t>(timegm(&tm));
}

using GeneralNamesPtr = crypto::OsslPtr<GENERAL_NAMES, GENERAL_NAMES_free>;

GeneralNamesPtr sans_of(X509* x) {
    return GeneralNamesPtr(static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(x, NID_subject_alt_name, nullptr, nullptr)));
}

std::vector<std::string> san_strings(X509* x, int type) {
    std::vector<std::string> out;
    auto names = sans_of(x);
    if (!names) return out;
    for (int i = 0; i < sk_GENERAL_NAME_num(names.get()); ++i) {
        const GENERAL_NAME* gn = sk_GENERAL_NAME_value(names.get(), i);
        if (gn->type != type) continue;
        const ASN1_IA5STRING* s = type == GEN_DNS ? gn->d.dNSName : gn->d.rfc822Name;
        out.emplace_back(reinterpret_cast<const char*>(ASN1_STRING_get0_data(s)),
                         static_cast<size_t>(ASN1_STRING_length(s)));
    }
    return out;
}

}  // namespace

void Certificate::Free::operator()(X509* x) const {
    X509_free(x);
}

Certificate Certificate::adopt(X509* x) {
    Certificate c;
    c.m_x = std::shared_ptr<X509>(x, Free{});
    return c;
}

Result<Certificate> Certificate::from_der(BytesView der) {
    EVP_PKEY* key = nullptr;
    if (X509* fast = detail::parse_der_fast(der, &key)) {
        Certificate c = adopt(fast);
        if (key != nullptr) c.m_key = std::shared_ptr<EVP_PKEY>(key, EVP_PKEY_free);
        return c;
    }
    const unsigned char* p = der.data();
    X509* x = d2i_X509(nullptr, &p, static_cast<long>(der.size()));
    if (x == nullptr) return pki_error("malformed DER certificate");
    if (p != der.data() + der.size()) {
        X509_free(x);
        return Error(ErrorDomain::Pki, static_cast<int>(VerifyFailure::Other),
                     "DER certificate followed by trailing octets");
    }
    return adopt(x);
}

Result<Certificate> Certificate::from_pem(BytesView pem) {
    BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
    if (!bio) return pki_error("BIO");
    X509* x = PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr);
    if (x == nullptr) return pki_error("no PEM certificate");
    return adopt(x);
}

Result<std::vector<Certificate>> Certificate::load_pem_chain(const std::string& path) {
    auto data = read_file(path, 16 * 1024 * 1024);
    if (!data.ok()) return Error(data.error()).context("loading certificates");
    BioPtr bio(BIO_new_mem_buf(data->data(), static_cast<int>(data->size())));
    if (!bio) return pki_error("BIO");
    std::vector<Certificate> out;
    for (;;) {
        X509* x = PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr);
        if (x == nullptr) break;
        out.push_back(adopt(x));
    }
    const unsigned long e = ERR_peek_last_error();
    if (ERR_GET_LIB(e) == ERR_LIB_PEM && ERR_GET_REASON(e) == PEM_R_NO_START_LINE) ERR_clear_error();
    if (ERR_peek_error() != 0) return pki_error(path + ": malformed PEM certificate");
    if (out.empty()) {
        // A single DER certificate is accepted too.
        auto der = from_der(*data);
        if (der.ok()) {
            out.push_back(std::move(der).value());
            return out;
        }
        return Error(ErrorDomain::Pki, static_cast<int>(VerifyFailure::Other), path + ": no certificate found");
    }
    return out;
}

Status Certificate::save_pem(const std::string& path) const {
    return write_file_atomic(path, pem());
}

Bytes Certificate::der() const {
    unsigned char* der = nullptr;
    const int len = i2d_X509(m_x.get(), &der);
    if (len <= 0) return {};
    Bytes out(der, der + len);
    OPENSSL_free(der);
    return out;
}

std::string Certificate::pem() const {
    BioPtr bio(BIO_new(BIO_s_mem()));
    if (!bio || PEM_write_bio_X509(bio.get(), m_x.get()) != 1) return {};
    const char* p = nullptr;
    const long len = BIO_get_mem_data(bio.get(), &p);
    return len > 0 ? std::string(p, static_cast<size_t>(len)) : std::string();
}

Bytes Certificate::subject_der() const {
    unsigned char* der = nullptr;
    const int len = i2d_X509_NAME(X509_get_subject_name(m_x.get()), &der);
    if (len <= 0) return {};
    Bytes out(der, der + len);
    OPENSSL_free(der);
    return out;
}

std::string Certificate::subject() const {
    return name_to_string(X509_get_subject_name(m_x.get()));
}

std::string dn_to_string(BytesView name_der) {
    const unsigned char* p = name_der.data();
    X509_NAME* n = d2i_X509_NAME(nullptr, &p, static_cast<long>(name_der.size()));
    if (n == nullptr) {
        ERR_clear_error();
        return {};
    }
    std::string s = name_to_string(n);
    X509_NAME_free(n);
    return s;
}
std::string Certificate::issuer() const {
    return name_to_string(X509_get_issuer_name(m_x.get()));
}
std::vector<std::string> Certificate::san_dns() const {
    return san_strings(m_x.get(), GEN_DNS);
}
std::vector<std::string> Certificate::san_email() const {
    return san_strings(m_x.get(), GEN_EMAIL);
}

std::vector<IpAddress> Certificate::san_ip() const {
    std::vector<IpAddress> out;
    auto names = sans_of(m_x.get());
    if (!names) return out;
    for (int i = 0; i < sk_GENERAL_NAME_num(names.get()); ++i) {
        const GENERAL_NAME* gn = sk_GENERAL_NAME_value(names.get(), i);
        if (gn->type != GEN_IPADD) continue;
        const int len = ASN1_STRING_length(gn->d.iPAddress);
        const unsigned char* d = ASN1_STRING_get0_data(gn->d.iPAddress);
        if (len != 4 && len != 16) continue;
        IpAddress a;
        a.v6 = len == 16;
        std::copy(d, d + len, a.bytes.begin());
        out.push_back(a);
    }
    return out;
}

Bytes Certificate::serial() const {
    const ASN1_INTEGER* s = X509_get0_serialNumber(m_x.get());
    const unsigned char* d = ASN1_STRING_get0_data(s);
    return Bytes(d, d + ASN1_STRING_length(s));
}

std::string Certificate::serial_hex() const {
    return to_hex(serial());
}
int64_t Certificate::not_before() const {
    return asn1_time_to_unix(X509_get0_notBefore(m_x.get()));
}
int64_t Certificate::not_after() const {
    return asn1_time_to_unix(X509_get0_notAfter(m_x.get()));
}

bool Certificate::is_ca() const {
    return X509_check_ca(m_x.get()) > 0;
}

bool Certificate::self_signed() const {
    return X509_self_signed(m_x.get(), 0) == 1;
}

Bytes Certificate::spki_sha1() const {
    auto der = crypto::public_key_der(X509_get0_pubkey(m_x.get()));
    if (!der.ok()) return {};
    return crypto::digest(crypto::Hash::Sha1, *der);
}

Bytes Certificate::subject_key_id() const {
    const ASN1_OCTET_STRING* id = X509_get0_subject_key_id(m_x.get());
    if (id == nullptr) return {};
    const unsigned char* d = ASN1_STRING_get0_data(id);
    return Bytes(d, d + ASN1_STRING_length(id));
}

std::vector<std::string> Certificate::crl_distribution_points() const {
    std::vector<std::string> out;
    auto* dps =
        static_cast<CRL_DIST_POINTS*>(X509_get_ext_d2i(m_x.get(), NID_crl_distribution_points, nullptr, nullptr));
    if (dps == nullptr) return out;
    for (int i = 0; i < sk_DIST_POINT_num(dps); ++i) {
        const DIST_POINT* dp = sk_DIST_POINT_value(dps, i);
        if (dp->distpoint == nullptr || dp->distpoint->type != 0) continue;
        const GENERAL_NAMES* names = dp->distpoint->name.fullname;
        for (int j = 0; j < sk_GENERAL_NAME_num(names); ++j) {
            const GENERAL_NAME* gn = sk_GENERAL_NAME_value(names, j);
            if (gn->type != GEN_URI) continue;
            out.emplace_back(reinterpret_cast<const char*>(ASN1_STRING_get0_data(gn->d.uniformResourceIdentifier)),
                             static_cast<size_t>(ASN1_STRING_length(gn->d.uniformResourceIdentifier)));
        }
    }
    CRL_DIST_POINTS_free(dps);
    return out;
}

EVP_PKEY* Certificate::public_key() const {
    return m_key ? m_key.get() : X509_get0_pubkey(m_x.get());
}

// ---------------------------------------------------------------- Crl

Crl Crl::adopt(X509_CRL* c) {
    Crl out;
    out.m_crl = std::shared_ptr<X509_CRL>(c, crypto::OsslDeleter<X509_CRL_free>{});
    return out;
}

Result<Crl> Crl::from_der(BytesView der) {
    const unsigned char* p = der.data();
    X509_CRL* c = d2i_X509_CRL(nullptr, &p, static_cast<long>(der.size()));
    if (c == nullptr) return pki_error("malformed DER CRL");
    return adopt(c);
}

Result<Crl> Crl::from_pem(BytesView pem) {
    BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
    if (!bio) return pki_error("BIO");
    X509_CRL* c = PEM_read_bio_X509_CRL(bio.get(), nullptr, nullptr, nullptr);
    if (c == nullptr) return pki_error("no PEM CRL");
    return adopt(c);
}

Result<Crl> Crl::load(const std::string& path) {
    auto data = read_file(path, 64 * 1024 * 1024);
    if (!data.ok()) return Error(data.error()).context("loading CRL");
    static const std::string_view kPem = "-----BEGIN";
    const bool pem =
        data->size() >= kPem.size() && std::search(data->begin(), data->end(), kPem.begin(), kPem.end()) != data->end();
    auto c = pem ? from_pem(*data) : from_der(*data);
    if (!c.ok()) return Error(c.error()).context(path);
    return c;
}

std::string Crl::issuer() const {
    return name_to_string(X509_CRL_get_issuer(m_crl.get()));
}
int64_t Crl::next_update() const {
    return asn1_time_to_unix(X509_CRL_get0_nextUpdate(m_crl.get()));
}

Bytes Crl::der() const {
    unsigned char* der = nullptr;
    const int len = i2d_X509_CRL(m_crl.get(), &der);
    if (len <= 0) return {};
    Bytes out(der, der + len);
    OPENSSL_free(der);
    return out;
}

std::string Crl::pem() const {
    BioPtr bio(BIO_new(BIO_s_mem()));
    if (!bio || PEM_write_bio_X509_CRL(bio.get(), m_crl.get()) != 1) return {};
    const char* p = nullptr;
    const long len = BIO_get_mem_data(bio.get(), &p);
    return len > 0 ? std::string(p, static_cast<size_t>(len)) : std::string();
}

}  // namespace x2sec::x509
