// `x2sec pki ...`: vendor and operator PKI tooling (see docs/pki-cmp.md).
//
// A CA directory holds: ca.key + ca.crt (the issuing CA), root.crt (the self-signed root),
// chain.pem (issuing CA up to the root, issuing CA first) and, for operators, ra.key + ra.crt
// (the CMP RA/CA protection certificate) and crl.pem; after `pki root-update`, root-update/
// (newwithnew.crt, newwithold.crt, oldwithnew.crt, root.key: the prepared root CA key update)
// and, after `pki root-update --activate`, root-old/ (the files the new root replaced).
#include <filesystem>
#include <iostream>
#include <x2sec/common/file.hpp>
#include <x2sec/pki/pki.hpp>
#include <x2sec/pki/root_update.hpp>

#include "registry.hpp"

namespace fs = std::filesystem;
using namespace x2sec;

namespace {

struct CaDir {
    pki::X509Ptr ca_cert;
    pki::PkeyPtr ca_key;
    std::vector<pki::X509Ptr> chain;  // issuing CA .. root
};

Result<CaDir> load_ca_dir(const std::string& dir) {
    CaDir d;
    X2SEC_TRY(d.ca_cert, pki::load_cert(dir + "/ca.crt"));
    X2SEC_TRY(d.ca_key, pki::load_private_key(dir + "/ca.key"));
    X2SEC_TRY(d.chain, pki::load_certs_pem(dir + "/chain.pem"));
    return d;
}

int fail(const Error& e) {
    std::cerr << "x2sec pki: " << e.detail() << "\n";
    return 1;
}

std::string g_key_token, g_root_key_token, g_alg = "p256", g_dir, g_name, g_out_key, g_out_cert, g_crl_url, g_eui,
                                           g_realm, g_subject, g_show_file;
std::vector<std::string> g_dns, g_ips, g_revoke;
int64_t g_days = 0, g_nb_unix = 0, g_na_unix = 0;
bool g_intermediate = false, g_activate = false;

int write_key_cert(const std::string& key_path, EVP_PKEY* key, const std::string& cert_path,
                   const std::vector<X509*>& certs) {
    if (key) {
        auto st = pki::save_private_key(key_path, key);
        if (!st) return fail(st.error());
    }
    auto st = pki::save_certs_pem(cert_path, certs);
    if (!st) return fail(st.error());
    return 0;
}

// `key_token` (a pkcs11: URI): the CA signing key (ca.key) is generated in that token and ca.key
// holds its URI; `root_token` the same for the root key of an intermediate set-up (root.key).
Status make_ca(const std::string& dir, const std::string& name, pki::KeyAlg alg, int64_t days, bool intermediate,
               const std::string& crl_url, const std::string& key_token, const std::string& root_token) {
    std::error_code ec;
    fs::create_directories(dir, ec);
    if (ec) return Error(ErrorDomain::Io, 0, "cannot create " + dir + ": " + ec.message());
    if (fs::exists(dir + "/ca.key"))
        return Error(ErrorDomain::Pki, 0, dir + "/ca.key exists; refusing to overwrite a CA");
    X2SEC_TRY(auto root_key, pki::generate_key(alg, intermediate ? root_token : key_token));
    X2SEC_TRY(auto root_name, pki::parse_name("/O=" + name + "/CN=" + name + " Root CA"));
    pki::IssueRequest r;
    r.profile = pki::Profile::RootCa;
    r.subject = root_name.get();
    r.public_key = root_key.get();
    r.validity_days = days;
    X2SEC_TRY(auto root, pki::issue_certificate(r, nullptr, root_key.get()));
    X2SEC_TRY_STATUS(pki::save_certs_pem(dir + "/root.crt", {root.get()}));
    if (!intermediate) {
        X2SEC_TRY_STATUS(pki::save_private_key(dir + "/ca.key", root_key.get()));
        X2SEC_TRY_STATUS(pki::save_certs_pem(dir + "/ca.crt", {root.get()}));
        X2SEC_TRY_STATUS(pki::save_certs_pem(dir + "/chain.pem", {root.get()}));
        return ok_status();
    }
    X2SEC_TRY_STATUS(pki::save_private_key(dir + "/root.key", root_key.get()));
    X2SEC_TRY(auto ica_key, pki::generate_key(alg, key_token));
    X2SEC_TRY(auto ica_name, pki::parse_name("/O=" + name + "/CN=" + name + " Issuing CA"));
    pki::IssueRequest i;
    i.profile = pki::Profile::IntermediateCa;
    i.subject = ica_name.get();
    i.public_key = ica_key.get();
    i.validity_days = days / 2 > 0 ? days / 2 : days;
    if (!crl_url.empty()) i.crl_urls = {crl_url};
    X2SEC_TRY(auto ica, pki::issue_certificate(i, root.get(), root_key.get()));
    X2SEC_TRY_STATUS(pki::save_private_key(dir + "/ca.key", ica_key.get()));
    X2SEC_TRY_STATUS(pki::save_certs_pem(dir + "/ca.crt", {ica.get()}));
    X2SEC_TRY_STATUS(pki::save_certs_pem(dir + "/chain.pem", {ica.get(), root.get()}));
    return ok_status();
}

}  // namespace

static app::Command reg("pki", "Vendor/operator PKI: CAs, device and server certificates, CRLs", [](CLI::App& sub) {
    sub.require_subcommand(1);
    auto* keygen = sub.add_subcommand("keygen", "Generate a private key (PEM, mode 0600)");
    keygen->add_option("--alg", g_alg, "p256 | p384 | rsa2048 | rsa3072")->capture_default_str();
    keygen->add_option("--out", g_out_key, "output key file")->required();
    const char* token_help =
        "generate the key inside this PKCS#11 token (pkcs11: URI, object= is the label); the key file then holds "
        "the key's URI";
    keygen->add_option("--key-token", g_key_token, token_help);

    auto* vca = sub.add_subcommand("init-vendor-ca", "Create a vendor root CA (factory PKI)");
    vca->add_option("--dir", g_dir, "CA directory")->required();
    vca->add_option("--name", g_name, "vendor name (O= and CN prefix)")->required();
    vca->add_option("--alg", g_alg, "key algorithm")->capture_default_str();
    vca->add_option("--days", g_days, "validity in days (default 7300)");
    const char* ca_token_help =
        "generate the CA signing key inside this PKCS#11 token (pkcs11: URI, object= is the label): sensitive, "
        "never extractable, sign only; ca.key then holds the key's URI";
    vca->add_option("--key-token", g_key_token, ca_token_help);

    auto* oca =
        sub.add_subcommand("init-operator-ca", "Create the operator root (+ issuing CA) and the CMP RA certificate");
    oca->add_option("--dir", g_dir, "CA directory")->required();
    oca->add_option("--name", g_name, "operator name")->required();
    oca->add_option("--alg", g_alg, "key algorithm")->capture_default_str();
    oca->add_option("--days", g_days, "root validity in days (default 7300)");
    oca->add_flag("--intermediate", g_intermediate, "issue from an intermediate CA under the root");
    oca->add_option("--crl-url", g_crl_url, "cRLDistributionPoints URL put in issued certificates");
    oca->add_option("--ra-dns", g_dns, "dNSName of the CMP RA/CA server certificate");
    oca->add_option("--key-token", g_key_token, ca_token_help);
    oca->add_option("--root-key-token", g_root_key_token,
                    "with --intermediate: generate the root key in this token too (default: root.key file, 0600)");

    auto* rup = sub.add_subcommand(
        "root-update",
        "Root CA key update (RFC 4210 4.4): a new root key, the new root and the link certificates newWithOld and "
        "oldWithNew in <ca-dir>/root-update/ (announced by `ca serve` on genm rootCaCert); --activate then makes "
        "the new root the CA's root");
    rup->add_option("--ca-dir", g_dir, "operator CA directory")->required();
    rup->add_option("--alg", g_alg, "new root key algorithm")->capture_default_str();
    rup->add_option("--days", g_days, "new root validity in days (default 7300)");
    rup->add_option("--subject", g_subject, "new root's subject (default: the old root's)");
    rup->add_option("--key-token", g_key_token,
                    "generate the new root key inside this PKCS#11 token (pkcs11: URI, object= is the label); "
                    "root-update/root.key then holds the key's URI");
    rup->add_flag("--activate", g_activate,
                  "switch the CA to the prepared new root: the issuing CA certified by it, the old files kept in "
                  "<ca-dir>/root-old/ (needs an --intermediate CA)");

    auto* dev = sub.add_subcommand("issue-device", "Issue a vendor device certificate <EUI-48>.<realm>");
    dev->add_option("--ca-dir", g_dir, "vendor CA directory")->required();
    dev->add_option("--eui", g_eui, "EUI-48 (12 hex digits, ':' allowed)")->required();
    dev->add_option("--realm", g_realm, "realm, e.g. henb.vendor-a.example")->required();
    dev->add_option("--alg", g_alg, "device key algorithm")->capture_default_str();
    dev->add_option("--days", g_days, "validity in days (default 3650)");
    dev->add_option("--out-key", g_out_key, "device key file")->required();
    dev->add_option("--key-token", g_key_token, token_help);
    dev->add_option("--not-before-unix", g_nb_unix, "explicit notBefore (unix seconds; test fixtures)");
    dev->add_option("--not-after-unix", g_na_unix, "explicit notAfter (unix seconds; test fixtures)");
    dev->add_option("--out-cert", g_out_cert, "device certificate + vendor chain (PEM)")->required();

    auto* srv = sub.add_subcommand("issue-server", "Issue a SeGW/server certificate from an operator CA");
    srv->add_option("--ca-dir", g_dir, "operator CA directory")->required();
    srv->add_option("--subject", g_subject, "subject, e.g. /O=Operator/CN=segw1")->required();
    srv->add_option("--dns", g_dns, "subjectAltName dNSName (repeatable)");
    srv->add_option("--ip", g_ips, "subjectAltName iPAddress (repeatable)");
    srv->add_option("--alg", g_alg, "key algorithm")->capture_default_str();
    srv->add_option("--days", g_days, "validity in days (default 730)");
    srv->add_option("--crl-url", g_crl_url, "cRLDistributionPoints URL");
    srv->add_option("--out-key", g_out_key, "key file")->required();
    srv->add_option("--key-token", g_key_token, token_help);
    srv->add_option("--out-cert", g_out_cert, "certificate + chain (PEM)")->required();

    auto* crl = sub.add_subcommand("crl", "Issue a CRL from a CA directory");
    crl->add_option("--ca-dir", g_dir, "CA directory")->required();
    crl->add_option("--revoke", g_revoke, "serial (hex) to list as revoked (repeatable)");
    crl->add_option("--days", g_days, "nextUpdate in days (default 7)");
    crl->add_option("--out", g_out_cert, "CRL file (PEM)")->required();

    auto* show = sub.add_subcommand("show", "Print a certificate file");
    show->add_option("file", g_show_file, "PEM file")->required();

    return [&sub, keygen, vca, oca, rup, dev, srv, crl, show]() -> int {
        auto alg = pki::parse_key_alg(g_alg);
        if (!alg) return fail(alg.error());
        if (keygen->parsed()) {
            auto k = pki::generate_key(*alg, g_key_token);
            if (!k) return fail(k.error());
            auto st = pki::save_private_key(g_out_key, k->get());
            if (!st) return fail(st.error());
            std::cout << "wrote " << pki::key_alg_name(*alg) << " key " << g_out_key
                      << (g_key_token.empty() ? " (0600)\n" : " (0600): the key's URI, the key is in the token\n");
            return 0;
        }
        if (vca->parsed() || oca->parsed()) {
            bool op = oca->parsed();
            if (!g_root_key_token.empty() && !(op && g_intermediate))
                return fail(Error("--root-key-token needs init-operator-ca --intermediate"));
            auto st = make_ca(g_dir, g_name, *alg, g_days ? g_days : 7300, op && g_intermediate, g_crl_url, g_key_token,
                              g_root_key_token);
            if (!st) return fail(st.error());
            if (op) {
                auto ca = load_ca_dir(g_dir);
                if (!ca) return fail(ca.error());
                auto ra_key = pki::generate_key(*alg);
                if (!ra_key) return fail(ra_key.error());
                auto ra_name = pki::parse_name("/O=" + g_name + "/CN=" + g_name + " CMP RA");
                if (!ra_name) return fail(ra_name.error());
                pki::IssueRequest r;
                r.profile = pki::Profile::Server;
                r.subject = ra_name->get();
                r.public_key = ra_key->get();
                r.dns = g_dns;
                r.validity_days = 730;
                if (!g_crl_url.empty()) r.crl_urls = {g_crl_url};
                auto ra = pki::issue_certificate(r, ca->ca_cert.get(), ca->ca_key.get());
                if (!ra) return fail(ra.error());
                std::vector<X509*> certs{ra->get()};
                for (auto& c : ca->chain) certs.push_back(c.get());
                if (int rc = write_key_cert(g_dir + "/ra.key", ra_key->get(), g_dir + "/ra.crt", certs)) return rc;
            }
            std::cout << "created " << (op ? "operator" : "vendor") << " CA in " << g_dir
                      << (g_key_token.empty() ? "" : " (CA key in the token; ca.key holds its URI)") << "\n";
            return 0;
        }
        if (rup->parsed()) {
            const std::string up = g_dir + "/" + pki::kRootUpdateDir;
            if (g_activate) {
                if (!g_key_token.empty() || !g_subject.empty() || g_days != 0)
                    return fail(Error("--activate takes only --ca-dir (the new root was made by `root-update`)"));
                auto st = pki::activate_root_update(g_dir);
                if (!st) return fail(st.error());
                std::cout << "activated the new root of " << up << " in " << g_dir << " (previous root, key and "
                          << "chain in " << g_dir << "/" << pki::kRootOldDir
                          << "); restart every `x2sec ca serve` of this CA\n";
                return 0;
            }
            pki::RootUpdateOptions o;
            o.alg = *alg;
            o.key_token = g_key_token;
            o.subject = g_subject;
            o.validity_days = g_days ? g_days : 7300;
            auto st = pki::create_root_update(g_dir, o);
            if (!st) return fail(st.error());
            std::cout << "prepared a root CA key update in " << up << " (" << pki::kNewWithNewFile << ", "
                      << pki::kNewWithOldFile << ", " << pki::kOldWithNewFile << ", " << pki::kNewRootKeyFile
                      << (g_key_token.empty() ? " 0600" : ": the key's URI, the key is in the token")
                      << "); `x2sec ca serve` announces it after a restart\n";
            return 0;
        }
        if (dev->parsed() || srv->parsed()) {
            auto ca = load_ca_dir(g_dir);
            if (!ca) return fail(ca.error());
            auto key = pki::generate_key(*alg, g_key_token);
            if (!key) return fail(key.error());
            pki::IssueRequest r;
            r.public_key = key->get();
            pki::NamePtr subject;
            if (dev->parsed()) {
                auto id = pki::make_identity(g_eui, g_realm);
                if (!id) return fail(id.error());
                auto org =
                    X509_NAME_get_index_by_NID(X509_get_subject_name(ca->ca_cert.get()), NID_organizationName, -1);
                std::string o = "Vendor";
                if (org >= 0) {
                    auto* s =
                        X509_NAME_ENTRY_get_data(X509_NAME_get_entry(X509_get_subject_name(ca->ca_cert.get()), org));
                    o.assign(reinterpret_cast<const char*>(ASN1_STRING_get0_data(s)),
                             static_cast<size_t>(ASN1_STRING_length(s)));
                }
                auto n = pki::parse_name("/O=" + o + "/CN=" + *id);
                if (!n) return fail(n.error());
                subject = std::move(*n);
                r.profile = pki::Profile::Device;
                r.dns = {*id};
                r.validity_days = g_days ? g_days : 3650;
                if (g_nb_unix) r.not_before = g_nb_unix;
                if (g_na_unix) r.not_after = g_na_unix;
            } else {
                auto n = pki::parse_name(g_subject);
                if (!n) return fail(n.error());
                subject = std::move(*n);
                r.profile = pki::Profile::Server;
                r.dns = g_dns;
                r.ips = g_ips;
                r.validity_days = g_days ? g_days : 730;
                if (!g_crl_url.empty()) r.crl_urls = {g_crl_url};
            }
            r.subject = subject.get();
            auto cert = pki::issue_certificate(r, ca->ca_cert.get(), ca->ca_key.get());
            if (!cert) return fail(cert.error());
            std::vector<X509*> certs{cert->get()};
            for (auto& c : ca->chain) certs.push_back(c.get());
            if (int rc = write_key_cert(g_out_key, key->get(), g_out_cert, certs)) return rc;
            std::cout << "issued " << pki::profile_name(r.profile) << " certificate serial "
                      << pki::serial_hex(cert->get()) << " for " << pki::name_to_string(subject.get()) << " -> "
                      << g_out_cert << "\n";
            return 0;
        }
        if (crl->parsed()) {
            auto ca = load_ca_dir(g_dir);
            if (!ca) return fail(ca.error());
            std::vector<pki::Revoked> rv;
            int64_t now = static_cast<int64_t>(std::time(nullptr));
            for (auto& s : g_revoke) {
                auto b = from_hex(s);
                if (!b || b->empty()) return fail(Error("serial '" + s + "' is not hex"));
                rv.push_back({*b, now, 0});
            }
            auto c =
                pki::issue_crl(ca->ca_cert.get(), ca->ca_key.get(), rv, now, now, now + (g_days ? g_days : 7) * 86400);
            if (!c) return fail(c.error());
            auto st = write_file_atomic(g_out_cert, std::string_view(pki::crl_pem(c->get())));
            if (!st) return fail(st.error());
            std::cout << "wrote CRL with " << rv.size() << " entries to " << g_out_cert << "\n";
            return 0;
        }
        if (show->parsed()) {
            auto certs = pki::load_certs_pem(g_show_file);
            if (!certs) return fail(certs.error());
            for (auto& c : *certs) std::cout << pki::describe(c.get());
            return 0;
        }
        (void)sub;
        return 2;
    };
});
