#include <openssl/x509v3.h>
#include <x2sec/crypto/pkcs11.hpp>
#include <x2sec/config/engine_config.hpp>

#include <algorithm>
#include <map>
#include <x2sec/common/file.hpp>
#include <x2sec/common/log.hpp>
#include <x2sec/x509/ocsp.hpp>
#include <x2sec/x509/ocsp_stapler.hpp>

namespace x2sec::config {

namespace {

struct Builder {
    const FileConfig& f;
    Diagnostics d;
    std::map<std::string, std::vector<std::pair<std::string, x509::Certificate>>> anchors;  // label -> certs
    std::vector<x509::Crl> crls;
    struct Cred {
        std::shared_ptr<const crypto::Signer> key;
        std::vector<x509::Certificate> chain;
    };
    std::map<std::string, Cred> creds;
    std::map<std::string, std::shared_ptr<const x509::TrustStore>> stores;  // by joined labels
    std::shared_ptr<x509::RevocationChecker> revocation;
    std::shared_ptr<x509::OcspStapler> stapler;  // our own OCSP responses (RFC 4806), one for all peers

    // The issuer of our certificate chain[0]: the next one of the credential's chain, or an anchor.
    std::optional<x509::Certificate> issuer_of(const std::vector<x509::Certificate>& chain) const {
        if (chain.size() > 1) return chain[1];
        for (const auto& [label, certs] : anchors)
            for (const auto& [l, c] : certs)
                if (X509_check_issued(c.get(), chain[0].get()) == X509_V_OK) return c;
        return std::nullopt;
    }

    // Our certificate's OCSP response, fetched in the background from its AIA URL, for a peer
    // that may ask for it (CERTREQ encoding 14) and has no ocsp_staple_file.
    void use_stapler(const PeerEntry& p, ike::PeerConfig& pc) {
        if (pc.local_auth != ike::AuthMethod::Certificate || !pc.ocsp_staple_file.empty() || pc.cert_chain.empty())
            return;
        const auto& leaf = pc.cert_chain.front();
        if (x509::ocsp_url(leaf).empty()) return;  // nothing to fetch: no response to staple
        auto issuer = issuer_of(pc.cert_chain);
        if (!issuer) {
            log::get("config")->warn(
                "peer '{}': our certificate names an OCSP responder, but its issuer is neither in the credential's "
                "chain nor a trust anchor: no OCSP response to staple",
                p.name);
            return;
        }
        if (!stapler) {
            const RevocationSection& r = f.revocation;
            x509::OcspStaplerConfig sc;
            sc.fetch_timeout_ms = static_cast<int>(std::min<int64_t>(r.fetch_timeout_ms, 600'000));
            sc.refresh_s = std::max<int64_t>(1, r.refresh_ms / 1000);
            sc.retry_s = std::max<int64_t>(1, r.retry_ms / 1000);
            stapler = std::make_shared<x509::OcspStapler>(sc);
        }
        (void)stapler->add(leaf, *issuer);  // has an OCSP URL: cannot fail
        pc.ocsp_stapler = stapler;
    }

    void make_revocation() {
        const RevocationSection& r = f.revocation;
        if (r.mode == RevocationMode::Off) return;
        x509::RevocationConfig rc;
        for (const auto& c : f.crls) rc.crl_files.push_back(c.file);
        rc.crl_urls = r.crl_urls;
        rc.fetch_distribution_points = r.fetch;
        rc.require = r.mode == RevocationMode::Require;
        rc.policy = r.policy_soft ? x509::CrlPolicy::Soft : x509::CrlPolicy::Hard;
        rc.fetch_timeout_ms = static_cast<int>(std::min<int64_t>(r.fetch_timeout_ms, 600'000));
        rc.max_wait_ms = static_cast<int>(std::min<int64_t>(r.max_wait_ms, 600'000));
        rc.refresh_s = std::max<int64_t>(1, r.refresh_ms / 1000);
        rc.retry_s = r.retry_ms / 1000;
        rc.max_crl_size = r.max_crl_size;
        rc.cache_dir = r.cache_dir;
        rc.method = r.method == "ocsp"            ? x509::RevocationMethod::Ocsp
                    : r.method == "ocsp-then-crl" ? x509::RevocationMethod::OcspThenCrl
                                                  : x509::RevocationMethod::Crl;
        rc.ocsp_nonce = r.ocsp_nonce;
        rc.ocsp_max_age_s = r.ocsp_max_age_ms < 0 ? -1 : r.ocsp_max_age_ms / 1000;
        revocation = std::make_shared<x509::RevocationChecker>(std::move(rc));
        // The [[crl]] files were loaded (and their errors reported) by load_anchors().
        (void)revocation->start();
    }

    void load_anchors() {
        for (const auto& a : f.trust_anchors) {
            auto certs = x509::Certificate::load_pem_chain(a.file);
            if (!certs) {
                d.error(a.where,
                        "trust anchor '" + a.label + "': cannot load '" + a.file + "': " + certs.error().detail());
                continue;
            }
            if (certs->empty()) {
                d.error(a.where, "trust anchor '" + a.label + "': '" + a.file + "' holds no certificate");
                continue;
            }
            for (auto& c : *certs) anchors[a.label].push_back({a.label, c});
        }
        for (const auto& c : f.crls) {
            auto crl = x509::Crl::load(c.file);
            if (!crl)
                d.error(c.where, "cannot load CRL '" + c.file + "': " + crl.error().detail());
            else
                crls.push_back(*crl);
        }
    }

    void load_credentials() {
        for (const auto& c : f.credentials) {
            Cred cred;
            auto key = crypto::PrivateKey::load(c.key_file);
            if (!key) {
                d.error(c.where, "credential '" + c.name + "': cannot load private key '" +
                                     crypto::redact_pkcs11_uri(c.key_file) + "': " + key.error().detail());
                continue;
            }
            cred.key = std::make_shared<crypto::PrivateKey>(std::move(*key));
            bool ok = true;
            for (const auto& file : c.cert_files) {
                auto chain = x509::Certificate::load_pem_chain(file);
                if (!chain || chain->empty()) {
                    d.error(c.where,
                            "credential '" + c.name + "': cannot load certificate '" + file + "'" +
                                (chain ? std::string(": no certificate in file") : ": " + chain.error().detail()));
                    ok = false;
                    continue;
                }
                for (auto& x : *chain) cred.chain.push_back(x);
            }
            if (!ok) continue;
            if (cred.chain.empty()) {
                d.error(c.where, "credential '" + c.name + "': 'certs' is empty");
                continue;
            }
            creds[c.name] = std::move(cred);
        }
    }

    std::shared_ptr<const x509::TrustStore> store_for(const std::vector<Located<std::string>>& labels) {
        std::string k;
        for (const auto& l : labels) k += l.value + "\n";
        if (auto it = stores.find(k); it != stores.end()) return it->second;
        auto ts = std::make_shared<x509::TrustStore>();
        for (const auto& [label, certs] : anchors) {
            bool want = labels.empty();
            for (const auto& l : labels) want = want || l.value == label;
            if (!want) continue;
            for (const auto& [lab, cert] : certs) ts->add_anchor(cert, lab);
        }
        // CRLs (files, distribution points) are the revocation checker's: it reloads them.
        ts->set_revocation(revocation);
        stores[k] = ts;
        return ts;
    }

    std::optional<ike::PeerConfig> peer(const PeerEntry& p) {
        size_t errors_before = d.lines().size();
        ike::PeerConfig pc;
        pc.name = p.name;
        pc.local_addr = p.local_addr;
        pc.remote_addr = p.remote_addr;
        pc.local_port = p.local_port;
        pc.remote_port = p.remote_port;
        pc.local_natt_port = p.local_natt_port;
        pc.remote_natt_port = p.remote_natt_port;
        auto lid = ike::Identity::parse(p.local_id.value);
        if (!lid)
            d.error(p.local_id.where, "peer '" + p.name + "': local_id: " + lid.error().detail());
        else
            pc.local_id = *lid;
        if (p.remote_id) {
            auto rid = ike::Identity::parse(p.remote_id->value);
            if (!rid)
                d.error(p.remote_id->where, "peer '" + p.name + "': remote_id: " + rid.error().detail());
            else
                pc.remote_id = *rid;
        }
        pc.local_auth = p.local_auth == AuthKind::Psk ? ike::AuthMethod::Psk : ike::AuthMethod::Certificate;
        pc.remote_auth = p.remote_auth == AuthKind::Psk ? ike::AuthMethod::Psk : ike::AuthMethod::Certificate;
        if (p.psk_hex) {
            auto b = from_hex(p.psk_hex->value);
            if (!b || b->empty())
                d.error(p.psk_hex->where, "peer '" + p.name + "': 'psk' is not valid hex");
            else {
                pc.psk = SecureBytes(BytesView(*b));
                secure_zero(b->data(), b->size());
            }
        } else if (p.psk_text) {
            if (p.psk_text->value.empty()) d.error(p.psk_text->where, "peer '" + p.name + "': 'psk' is empty");
            pc.psk = SecureBytes(as_bytes(p.psk_text->value));
        } else if (p.psk_file) {
            auto b = read_file(p.psk_file->value, 4096);
            if (!b)
                d.error(p.psk_file->where, "peer '" + p.name + "': cannot read psk_file '" + p.psk_file->value +
                                               "': " + b.error().detail());
            else {
                // A trailing newline from an editor is not part of the key.
                while (!b->empty() && (b->back() == '\n' || b->back() == '\r')) b->pop_back();
                if (b->empty())
                    d.error(p.psk_file->where, "peer '" + p.name + "': psk_file '" + p.psk_file->value + "' is empty");
                pc.psk = SecureBytes(BytesView(*b));
                secure_zero(b->data(), b->size());
            }
        }
        if (!pc.psk.empty() && pc.psk.size() < 16)
            log::get("config")->warn("peer '{}': the pre-shared key has only {} octets; use at least 16 random octets",
                                     p.name, pc.psk.size());
        if (p.credential) {
            auto it = creds.find(p.credential->value);
            if (it != creds.end()) {
                pc.private_key = it->second.key;
                pc.cert_chain = it->second.chain;
                if (lid && pc.local_auth == ike::AuthMethod::Certificate) {
                    auto m = x509::match_identity(pc.cert_chain.front(), lid->type, lid->data);
                    if (!m)
                        d.error(p.local_id.where, "peer '" + p.name + "': local_id '" + p.local_id.value +
                                                      "' is not in the certificate of credential '" +
                                                      p.credential->value + "': " + m.error().detail());
                }
            }
        }
        if (p.remote_auth == AuthKind::Certificate) pc.trust = store_for(p.trust);
        pc.send_certreq = p.send_certreq;
        pc.ocsp_staple_file = p.ocsp_staple_file;
        for (const auto& rf : p.ocsp_responders) {
            auto certs = x509::Certificate::load_pem_chain(rf.value);
            if (!certs)
                d.error(rf.where, "peer '" + p.name + "': ocsp_responders: cannot load '" + rf.value +
                                      "': " + certs.error().detail());
            else if (certs->empty())
                d.error(rf.where, "peer '" + p.name + "': ocsp_responders: '" + rf.value + "' holds no certificate");
            else
                for (auto& c : *certs) pc.ocsp_responders.push_back(std::move(c));
        }
        use_stapler(p, pc);
        if (p.ocsp_stapling) {
            auto o = ike::parse_ocsp_stapling(p.ocsp_stapling->value);
            if (!o)
                d.error(p.ocsp_stapling->where, "peer '" + p.name + "': " + o.error().detail());
            else
                pc.ocsp_stapling = *o;
        }
        if (p.unique) {
            auto u = ike::parse_unique_policy(p.unique->value);
            if (!u)
                d.error(p.unique->where, "peer '" + p.name + "': " + u.error().detail());
            else
                pc.unique = *u;
        }
        for (const auto& s : p.ike_proposals) {
            auto prop = ike::parse_ike_proposal(s.value);
            if (!prop)
                d.error(s.where, "peer '" + p.name + "': " + prop.error().detail());
            else
                pc.ike_proposals.push_back(*prop);
        }
        for (const auto& c : p.children) {
            ike::ChildConfig cc;
            cc.name = c.name;
            cc.local_ts = c.local_ts;
            cc.remote_ts = c.remote_ts;
            for (const auto& s : c.esp_proposals) {
                auto prop = ike::parse_child_proposal(s.value);
                if (!prop)
                    d.error(s.where, "peer '" + p.name + "', child '" + c.name + "': " + prop.error().detail());
                else
                    cc.proposals.push_back(*prop);
            }
            cc.mode = c.mode;
            cc.lifetime = c.lifetime;
            cc.rekey_seconds = c.rekey_seconds;
            cc.replay_window = c.replay_window;
            pc.children.push_back(std::move(cc));
        }
        pc.ike_rekey_seconds = p.ike_rekey_seconds;
        pc.dpd_interval_ms = p.dpd_interval_ms;
        pc.dpd_jitter_percent = p.dpd_jitter_percent;
        pc.fragmentation = p.fragmentation;
        pc.fragment_size = p.fragment_size;
        pc.force_encap = p.force_encap;
        pc.auto_initiate = p.auto_initiate;
        if (d.lines().size() != errors_before) return std::nullopt;
        return pc;
    }
};

}  // namespace

Result<LoadedConfig> build_engine_config(const FileConfig& f) {
    Builder b{f, {}, {}, {}, {}, {}, {}, {}};
    b.load_anchors();
    if (b.d.empty()) b.make_revocation();
    b.load_credentials();
    LoadedConfig out;
    out.path = f.path;
    out.runtime = f.runtime;
    out.metrics = f.metrics;
    out.revocation = b.revocation;
    for (const auto& p : f.peers) {
        auto pc = b.peer(p);
        if (pc) out.engine.peers.push_back(std::move(*pc));
    }
    if (!b.d.empty()) return b.d.to_error();
    out.engine.retransmit.timeout_ms = f.engine.retransmit_timeout_ms;
    out.engine.retransmit.backoff = f.engine.retransmit_backoff;
    out.engine.retransmit.tries = f.engine.retransmit_tries;
    out.engine.retransmit.jitter_percent = f.engine.retransmit_jitter_percent;
    out.engine.cookie_threshold = f.engine.cookie_threshold;
    out.engine.max_half_open = f.engine.max_half_open;
    out.engine.max_half_open_per_source = f.engine.max_half_open_per_source;
    out.engine.max_message_size = f.engine.max_message_size;
    out.engine.half_open_timeout_ms = f.engine.half_open_timeout_ms;
    return out;
}

Result<LoadedConfig> load(const std::string& path) {
    auto f = parse_file(path);
    if (!f) return std::move(f).error();
    return build_engine_config(*f);
}

}  // namespace x2sec::config
