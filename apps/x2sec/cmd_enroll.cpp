// `x2sec enroll`: the H(e)NB side: obtain (ir), renew (kur) or revoke (rr) the operator
// certificate over CMPv2.  The operator credential is installed in --dir as one unit
// (versions/<v>/operator.key (0600), operator.crt (+ chain), operator-root.crt, switched with the
// `current` symlink; operator.key etc. in --dir are compatibility links): see
// cmp::install_credential.
#include <ctime>
#include <iostream>
#include <x2sec/cmp/client.hpp>
#include <x2sec/common/log.hpp>
#include <x2sec/crypto/pkcs11.hpp>

#include "registry.hpp"

using namespace x2sec;

namespace {
struct EnrollOpts {
    std::string server, vendor_key, vendor_cert, dir = ".", eui, realm, identity, subject, operator_root, tls_trust,
                                                 alg = "p256", log_level = "warn", new_key, renew_before = "20%",
                                                 key_token, tls_cert, tls_key;
    bool implicit = false, renew = false, revoke = false, if_needed = false, keep_alive = false;
    int timeout = 30;
} o;

int fail(const Error& e) {
    std::cerr << "x2sec enroll: " << e.detail() << "\n";
    return 1;
}
}  // namespace

static app::Command reg("enroll", "H(e)NB: enrol/renew/revoke the operator certificate over CMPv2", [](CLI::App& sub) {
    sub.add_option("--server", o.server, "CMP URL, e.g. http://192.0.2.10:8080/.well-known/cmp")->required();
    sub.add_option("--vendor-key", o.vendor_key, "vendor private key (ir)");
    sub.add_option("--vendor-cert", o.vendor_cert, "vendor certificate + chain (PEM, device first) (ir)");
    sub.add_option("--eui", o.eui, "EUI-48 of the node (with --realm)");
    sub.add_option("--realm", o.realm, "realm of the node identity");
    sub.add_option("--identity", o.identity, "node identity FQDN (default: from --eui/--realm or the vendor cert)");
    sub.add_option("--subject", o.subject, "requested subject (default /CN=<identity>)");
    sub.add_option("--operator-root", o.operator_root, "provisioned operator root (default: 3GPP in-band rule for ir)");
    sub.add_option("--tls-trust", o.tls_trust, "trust anchors for an https server (PEM)");
    sub.add_option("--tls-cert", o.tls_cert,
                   "TLS client certificate (+ chain, PEM) for an https server that asks for one");
    sub.add_option("--tls-key", o.tls_key, "TLS client key: a key file or a pkcs11: URI (with --tls-cert)");
    sub.add_option("--dir", o.dir, "operator credential directory")->capture_default_str();
    sub.add_option("--alg", o.alg, "new key algorithm")->capture_default_str();
    sub.add_option("--new-key", o.new_key, "use this key pair (file or pkcs11: URI) instead of generating one");
    sub.add_option("--key-token", o.key_token,
                   "generate the new key inside this PKCS#11 token (pkcs11: URI; object= is the label); with "
                   "--renew the default is the current key's token");
    sub.add_flag("--implicit-confirm", o.implicit, "request implicit confirmation");
    sub.add_flag("--renew", o.renew, "kur with the current operator credential in --dir");
    sub.add_flag("--if-needed", o.if_needed, "with --renew: only inside the renewal window (--renew-before)");
    sub.add_option("--renew-before", o.renew_before,
                   "renewal window: DAYS before expiry (30, 30d) or PERCENT of the lifetime left (20%)")
        ->capture_default_str();
    sub.add_flag("--revoke", o.revoke, "rr of the operator certificate in --dir");
    sub.add_option("--timeout", o.timeout, "seconds per message");
    sub.add_flag("--keep-alive", o.keep_alive, "HTTP: send the whole transaction on one persistent connection");
    sub.add_option("--log-level", o.log_level, "trace|debug|info|warn|error");
    return []() -> int {
        log::set_level(o.log_level);
        cmp::ClientCommon common;
        common.server_url = o.server;
        common.timeout_s = o.timeout;
        common.keep_alive = o.keep_alive;
        std::vector<pki::X509Ptr> keep;
        auto load_all = [&](const std::string& f, std::vector<X509*>& into) -> Status {
            X2SEC_TRY(auto v, pki::load_certs_pem(f));
            for (auto& x : v) {
                into.push_back(x.get());
                keep.push_back(std::move(x));
            }
            return ok_status();
        };
        if (!o.tls_trust.empty())
            if (auto st = load_all(o.tls_trust, common.tls.trust); !st) return fail(st.error());
        if (!o.operator_root.empty())
            if (auto st = load_all(o.operator_root, common.operator_roots); !st) return fail(st.error());
        pki::PkeyPtr tls_key;
        if (o.tls_cert.empty() != o.tls_key.empty()) return fail(Error("--tls-cert and --tls-key go together"));
        if (!o.tls_cert.empty()) {
            std::vector<X509*> tc;
            if (auto st = load_all(o.tls_cert, tc); !st) return fail(st.error());
            auto k = pki::load_private_key(o.tls_key);
            if (!k) return fail(k.error());
            tls_key = std::move(*k);
            common.tls.client_cert = tc.front();
            common.tls.client_chain.assign(tc.begin() + 1, tc.end());
            common.tls.client_key = tls_key.get();
        }

        if (o.renew || o.revoke) {
            // The current credential, read as one unit (through `current`, or the flat
            // legacy files of an older install).
            auto cur = cmp::load_credential(o.dir);
            if (!cur) return fail(cur.error());
            if (common.operator_roots.empty()) {
                if (!cur->root) return fail(Error("no operator root in " + o.dir + "; give --operator-root"));
                common.operator_roots.push_back(cur->root.get());
            }
            std::vector<X509*> chain;
            for (auto& c : cur->chain) chain.push_back(c.get());
            if (o.revoke) {
                cmp::RevokeRequest r;
                static_cast<cmp::ClientCommon&>(r) = common;
                r.key = cur->key.get();
                r.cert = cur->cert.get();
                r.chain = chain;
                if (auto st = cmp::Client::revoke(r); !st) return fail(st.error());
                std::cout << "revoked operator certificate serial " << pki::serial_hex(cur->cert.get()) << "\n";
                return 0;
            }
            auto window = cmp::parse_renewal_window(o.renew_before);
            if (!window) return fail(window.error());
            auto check = cmp::renewal_check(cur->cert.get(), static_cast<int64_t>(std::time(nullptr)), *window);
            if (check.expired) {
                std::cerr << "x2sec enroll: " << check.describe()
                          << ": kur cannot be authenticated with it; re-enrol with --vendor-key/--vendor-cert (ir)\n";
                return 2;
            }
            if (o.if_needed && !check.due) {
                std::cout << "operator certificate serial " << pki::serial_hex(cur->cert.get()) << ": renewal "
                          << check.describe() << "; nothing to do\n";
                return 0;
            }
            auto alg = pki::parse_key_alg(o.alg);
            if (!alg) return fail(alg.error());
            const std::string token =
                !o.key_token.empty() ? o.key_token : crypto::token_key_uri(cur->key.get()).value_or("");
            auto nk = pki::generate_key(*alg, token);
            if (!nk) return fail(nk.error());
            cmp::RenewRequest r;
            static_cast<cmp::ClientCommon&>(r) = common;
            r.current_key = cur->key.get();
            r.current_cert = cur->cert.get();
            r.current_chain = chain;
            r.new_key = nk->get();
            r.implicit_confirm = o.implicit;
            auto e = cmp::Client::renew(r);
            if (!e) return fail(e.error());
            if (!e->operator_root) e->operator_root = pki::up_ref(common.operator_roots.front());
            if (auto st = cmp::install_credential(o.dir, nk->get(), *e); !st) return fail(st.error());
            std::cout << "renewed: serial " << pki::serial_hex(cur->cert.get()) << " -> "
                      << pki::serial_hex(e->cert.get()) << " (" << check.describe() << "), installed in " << o.dir
                      << "\n";
            return 0;
        }

        if (o.vendor_key.empty() || o.vendor_cert.empty())
            return fail(Error("--vendor-key and --vendor-cert are required for an initial enrolment"));
        auto vkey = pki::load_private_key(o.vendor_key);
        if (!vkey) return fail(vkey.error());
        std::vector<X509*> vcerts;
        if (auto st = load_all(o.vendor_cert, vcerts); !st) return fail(st.error());
        std::string id = o.identity;
        if (id.empty() && !o.eui.empty()) {
            auto m = pki::make_identity(o.eui, o.realm);
            if (!m) return fail(m.error());
            id = *m;
        }
        if (id.empty()) {
            auto ids = pki::node_identities(vcerts[0]);
            if (ids.empty()) return fail(Error("no --identity given and the vendor certificate carries none"));
            id = ids.front();
        }
        auto alg = pki::parse_key_alg(o.alg);
        if (!alg) return fail(alg.error());
        auto nk = o.new_key.empty() ? pki::generate_key(*alg, o.key_token) : pki::load_private_key(o.new_key);
        if (!nk) return fail(nk.error());
        cmp::EnrollRequest r;
        static_cast<cmp::ClientCommon&>(r) = common;
        r.auth_key = vkey->get();
        r.auth_cert = vcerts[0];
        r.auth_chain.assign(vcerts.begin() + 1, vcerts.end());
        r.new_key = nk->get();
        r.subject = o.subject.empty() ? "/CN=" + id : o.subject;
        r.dns = {id};
        r.implicit_confirm = o.implicit;
        auto e = cmp::Client::enroll(r);
        if (!e) return fail(e.error());
        if (auto st = cmp::install_credential(o.dir, nk->get(), *e); !st) return fail(st.error());
        std::cout << "enrolled " << id << ": serial " << pki::serial_hex(e->cert.get()) << " issued by "
                  << pki::name_to_string(X509_get_issuer_name(e->cert.get())) << "\n  operator root "
                  << pki::name_to_string(X509_get_subject_name(e->operator_root.get()))
                  << (common.operator_roots.empty() ? " (learned in-band, 3GPP rule)" : " (provisioned)") << "\n  -> "
                  << o.dir << " (operator.key, operator.crt, operator-root.crt via " << o.dir << "/current)\n";
        return 0;
    };
});
