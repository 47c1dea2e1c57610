#include <arpa/inet.h>
#include <unistd.h>
#include <openssl/cmp.h>
#include <openssl/asn1t.h>
#include <openssl/cmp_util.h>
#include <openssl/crmf.h>
#include <algorithm>
#include <cctype>
#include <ctime>
#include <map>
#include <mutex>
#include <x2sec/cmp/failinfo.hpp>
#include <x2sec/cmp/server.hpp>
#include <x2sec/common/log.hpp>

#include "asn1_view.hpp"
#include "cmp_util.hpp"

namespace x2sec::cmp {

using pki::X509Ptr;

const IssuanceProfile* ServerPolicy::find_profile(std::string_view name) const {
    if (name.empty()) return &default_profile;
    auto it = profiles.find(std::string(name));
    return it == profiles.end() ? nullptr : &it->second;
}

X509* ServerConfig::operator_root() const {
    for (auto it = ca_chain.rbegin(); it != ca_chain.rend(); ++it)
        if (X509_check_issued(it->get(), it->get()) == X509_V_OK) return it->get();
    return ca_cert.get();
}

Result<ServerConfig> ServerConfig::from_ca_dir(const std::string& dir,
                                               const std::vector<std::string>& vendor_root_files) {
    ServerConfig c;
    X2SEC_TRY(c.ca_cert, pki::load_cert(dir + "/ca.crt"));
    X2SEC_TRY(c.ca_key, pki::load_private_key(dir + "/ca.key"));
    X2SEC_TRY(auto chain, pki::load_certs_pem(dir + "/chain.pem"));
    for (auto& x : chain)
        if (X509_cmp(x.get(), c.ca_cert.get()) != 0) c.ca_chain.push_back(std::move(x));
    X2SEC_TRY(auto ra, pki::load_certs_pem(dir + "/ra.crt"));
    c.ra_cert = std::move(ra.front());
    for (size_t i = 1; i < ra.size(); ++i) c.ra_chain.push_back(std::move(ra[i]));
    X2SEC_TRY(c.ra_key, pki::load_private_key(dir + "/ra.key"));
    for (auto& f : vendor_root_files) {
        X2SEC_TRY(auto roots, pki::load_certs_pem(f));
        for (auto& r : roots) c.vendor_roots.push_back(std::move(r));
    }
    if (c.vendor_roots.empty()) return Error(ErrorDomain::Config, 0, "no vendor root configured");
    const std::string up = dir + "/root-update/";
    if (::access((up + "newwithnew.crt").c_str(), F_OK) == 0) {
        RootKeyUpdate u;
        X2SEC_TRY(u.new_with_new, pki::load_cert(up + "newwithnew.crt"));
        X2SEC_TRY(u.new_with_old, pki::load_cert(up + "newwithold.crt"));
        if (::access((up + "oldwithnew.crt").c_str(), F_OK) == 0) {
            X2SEC_TRY(u.old_with_new, pki::load_cert(up + "oldwithnew.crt"));
        }
        if (auto st = check_root_key_update(u); !st)
            return Error(ErrorDomain::Config, 0, up + ": " + st.error().detail());
        c.root_update = std::move(u);
    }
    return c;
}

namespace {

enum class SignerKind { None, Vendor, Operator };

bool new_transaction_body(int bt) {
    switch (bt) {
        case kIr:
        case kCr:
        case kP10cr:
        case kKur:
        case kRr:
        case kGenm:
            return true;
        default:
            return false;
    }
}

std::string lower(std::string s) {
    for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return s;
}

// TS 33.310 (SPEC.md "Hashes"): MD5 and SHA-1 shall not be used, for protection or POP.
const char* weak_digest(int sig_nid) {
    int md = NID_undef, pk = NID_undef;
    if (sig_nid == NID_undef || !OBJ_find_sigid_algs(sig_nid, &md, &pk)) return nullptr;
    switch (md) {
        case NID_md2:
            return "MD2";
        case NID_md4:
            return "MD4";
        case NID_md5:
        case NID_md5_sha1:
            return "MD5";
        case NID_sha1:
            return "SHA-1";
        default:
            return nullptr;
    }
}

struct SrvFree {
    void operator()(OSSL_CMP_SRV_CTX* s) const { OSSL_CMP_SRV_CTX_free(s); }
};
struct PkisiFree {
    void operator()(OSSL_CMP_PKISI* s) const { OSSL_CMP_PKISI_free(s); }
};

int srv_log_cb(const char*, const char*, int, OSSL_CMP_severity level, const char* msg) {
    auto lg = x2sec::log::get("cmp");
    if (level <= OSSL_CMP_LOG_ERR)
        lg->debug("openssl cmp server: {}", msg);
    else
        lg->trace("openssl cmp server: {}", msg);
    return 1;
}

}  // namespace

struct Session {
    std::mutex mu;
    OSSL_CMP_SRV_CTX* srv = nullptr;
    Server::Impl* impl = nullptr;
    X509Ptr signer;
    SignerKind kind = SignerKind::None;
    Bytes tid;
    int reject_bit = -1;
    std::string reject_text;
    int rr_reason = 0;  // CRLReason from the rr's crlEntryDetails (0: none given)
    int64_t created = 0;
    int64_t now = 0;  // the caller's time of the message being processed
    BytesView der;    // that message as it came (with its extraCerts), while it is processed
    // The policy the transaction started under (holds `profile`).
    std::shared_ptr<const ServerPolicy> policy;
    const IssuanceProfile* profile = nullptr;
    X509Ptr issued;
    std::string body;
    std::atomic<bool> waiting{false};  // held for approval: the client polls
    bool approved = false;             // the operator approved the held request
    std::string operator_rejection;    // the operator rejected it (reason)
    bool registered = false;           // present in the session map
    // A certificate issued by cb_cert_request, recorded by handle() once the answer is built
    // (with its senderNonce, for a certConf taken by another instance) in one durable write.
    std::optional<CertRecord> to_record;
    Bytes approved_request;  // the held request an approval issues (stored as the open request)
    // Set while a session is rebuilt from the store (resume_unconfirmed): cb_cert_request answers
    // the stored request with this certificate, issued and recorded before, and checks nothing.
    X509Ptr replay_cert;
    bool done = false;
    ~Session() { OSSL_CMP_SRV_CTX_free(srv); }
};

struct Server::Impl {
    ServerConfig cfg;
    Store& store;
    Counters& counters;
    pki::CertStackPtr ra_untrusted;
    std::vector<X509*> vendor_anchors, operator_anchors, operator_untrusted;
    // Trust stores built once from the configuration (which a Server never changes: a new
    // configuration is a new Server) and only read afterwards, so the worker threads share
    // them; each verification uses its own X509_STORE_CTX (pki::verify_chain).
    pki::StorePtr vendor_store, operator_store;
    std::mutex sessions_mu;
    std::map<Bytes, std::shared_ptr<Session>> sessions;
    // Certificates of extraCerts decoded once (OpenSSL 3.0 decodes each public key through its
    // provider decoders, the most expensive step of reading a message): the same vendor chain
    // comes with every request of a vendor's devices, the same device certificate with every
    // message of a transaction.  Keyed by the whole DER, so a hit is the identical certificate;
    // shared read-only (X509 is reference counted); bounded: emptied when it reaches kCertCacheMax.
    static constexpr size_t kCertCacheMax = 4096;
    std::mutex cert_cache_mu;
    std::map<Bytes, X509Ptr> cert_cache;
    // The certificate for `der` (decoded, or from the cache); nullptr when it does not decode.
    X509Ptr certificate(const Bytes& der) {
        {
            std::lock_guard lk(cert_cache_mu);
            if (auto it = cert_cache.find(der); it != cert_cache.end()) {
                counters.inc("cmp.cert_cache.hit");
                return pki::up_ref(it->second.get());
            }
        }
        const unsigned char* p = der.data();
        X509Ptr x(d2i_X509(nullptr, &p, static_cast<long>(der.size())));
        if (!x || p != der.data() + der.size()) {
            ERR_clear_error();
            return nullptr;
        }
        counters.inc("cmp.cert_cache.miss");
        std::lock_guard lk(cert_cache_mu);
        if (cert_cache.size() >= kCertCacheMax) cert_cache.clear();
        cert_cache.emplace(der, pki::up_ref(x.get()));
        return x;
    }
    std::mutex crl_mu;
    std::atomic<bool> crl_dirty{true};
    std::atomic<int64_t> last_sweep{0};
    std::shared_ptr<spdlog::logger> lg = log::get("cmp");
    // The policy new transactions start under (Server::set_policy replaces it; a transaction
    // keeps the one it started with).  cfg.policy is the one at construction.
    mutable std::mutex policy_mu;
    std::shared_ptr<const ServerPolicy> policy_now;
    std::shared_ptr<const ServerPolicy> policy() const {
        std::lock_guard lk(policy_mu);
        return policy_now;
    }

    Impl(ServerConfig c, Store& s, Counters& k)
        : cfg(std::move(c)), store(s), counters(k), policy_now(std::make_shared<const ServerPolicy>(cfg.policy)) {
        std::vector<X509*> ra;
        for (auto& x : cfg.ra_chain) ra.push_back(x.get());
        for (auto& x : cfg.ca_chain) ra.push_back(x.get());
        ra.push_back(cfg.ca_cert.get());
        ra_untrusted = pki::make_stack(ra);
        for (auto& v : cfg.vendor_roots) vendor_anchors.push_back(v.get());
        operator_anchors.push_back(cfg.operator_root());
        operator_untrusted.push_back(cfg.ca_cert.get());
        for (auto& x : cfg.ca_chain) operator_untrusted.push_back(x.get());
        vendor_store = pki::make_trust_store(vendor_anchors);
        operator_store = pki::make_trust_store(operator_anchors);
    }

    // newWithOld once `x2sec pki root-update --activate` made newWithNew the operator root, else null.
    X509* active_root_link() const {
        if (!cfg.root_update || X509_cmp(cfg.root_update->new_with_new.get(), cfg.operator_root()) != 0) return nullptr;
        return cfg.root_update->new_with_old.get();
    }
    // Issuing CA up to the operator root; after an activated root key update newWithOld comes
    // before the new root, so that an EE trusting the old root builds its chain through it
    // (OpenSSL takes the first fitting issuer among the untrusted certificates, and the
    // self-signed new root would end that EE's chain untrusted).
    std::vector<X509*> issued_chain() const {
        std::vector<X509*> v;
        if (X509_check_issued(cfg.ca_cert.get(), cfg.ca_cert.get()) != X509_V_OK || cfg.ca_chain.empty())
            v.push_back(cfg.ca_cert.get());
        X509* link = active_root_link();
        for (auto& x : cfg.ca_chain) {
            if (link && x.get() == cfg.operator_root()) v.push_back(link);
            v.push_back(x.get());
        }
        return v;
    }

    std::vector<X509*> issued_chain_with_ca() const {  // issuing CA first, then up to the root
        std::vector<X509*> v{cfg.ca_cert.get()};
        for (auto& x : cfg.ca_chain)
            if (X509_cmp(x.get(), cfg.ca_cert.get()) != 0) v.push_back(x.get());
        return v;
    }
    std::shared_ptr<Session> make_session(X509* signer, SignerKind kind, const Bytes& tid, int64_t now,
                                          std::shared_ptr<const ServerPolicy> pol);
    // A pollReq for a held request this instance has no session for (another instance took
    // the request, or this one restarted): a session rebuilt from the store, or nullptr.
    std::shared_ptr<Session> resume_pending(X509* signer, const std::vector<X509*>& untrusted, const Bytes& tid,
                                            int64_t now);
    // A certConf for a transaction this instance has no session for (another instance answered
    // its ir/cr/p10cr/kur, or this one restarted): the waiting session rebuilt from the store's
    // open request, after the checks of the original path.  s null and bit < 0: nothing open
    // (not_open when the store holds no open request for the tid).
    struct Resumed {
        std::shared_ptr<Session> s;
        int bit = -1;
        std::string text;
        const char* counter = nullptr;
        bool not_open = false;
    };
    Resumed resume_unconfirmed(const OSSL_CMP_MSG* certconf, X509* signer, const std::vector<X509*>& untrusted,
                               const Bytes& tid, int64_t now);
    // After OpenSSL answered a certificate request with s.to_record: the record, in one durable
    // write (`implicit`, or `unconfirmed` with the open request and `answer`'s senderNonce).
    Status record_answered(Session& s, bool implicit, const Bytes& answer);
    static std::string requester_of(X509* signer) {
        return pki::name_to_string(X509_get_subject_name(signer)) + " #" + pki::serial_hex(signer);
    }
    void configure_ctx(OSSL_CMP_CTX* ctx) const;
    // A protected `error` PKIMessage answering req with PKIStatus rejection and the failure bit.
    Result<Bytes> error_response(const OSSL_CMP_MSG* req, int bit, const std::string& text, const char* counter);
    void reject(Session& s, int bit, std::string text, const char* counter) {
        if (s.reject_bit >= 0) return;
        s.reject_bit = bit;
        s.reject_text = std::move(text);
        counters.inc(std::string("cmp.reject.") + counter);
        counters.inc(std::string("cmp.failinfo.") + failinfo_name(bit));
        lg->info("rejecting transaction {}: {}", to_hex(s.tid), s.reject_text);
    }
    void purge_expired(int64_t now);
    Result<Bytes> current_crl(int64_t now);
};

namespace {

OSSL_CMP_PKISI* rejection(int bit, const std::string& text) {
    return OSSL_CMP_STATUSINFO_new(OSSL_CMP_PKISTATUS_rejection, 1 << bit, text.c_str());
}

// ---------------------------------------------------------------- OSSL_CMP_SRV callbacks
OSSL_CMP_PKISI* cb_cert_request(OSSL_CMP_SRV_CTX* srv, const OSSL_CMP_MSG* req, int certReqId, const OSSL_CRMF_MSG* crm,
                                const X509_REQ* p10cr, X509** certOut, STACK_OF(X509) * *chainOut,
                                STACK_OF(X509) * *caPubs) {
    auto* s = static_cast<Session*>(OSSL_CMP_SRV_CTX_get0_custom_ctx(srv));
    auto& im = *s->impl;
    int bt = OSSL_CMP_MSG_get_bodytype(req);
    if (s->replay_cert) {
        s->issued = pki::up_ref(s->replay_cert.get());
        *certOut = pki::up_ref(s->replay_cert.get()).release();
        *chainOut = pki::make_stack(im.issued_chain()).release();
        *caPubs = pki::make_stack({im.cfg.operator_root()}).release();
        return OSSL_CMP_STATUSINFO_new(OSSL_CMP_PKISTATUS_accepted, 0, nullptr);
    }
    // certReqId belongs to a CertReqMsg (ir/cr/kur: one message, id 0, RFC 9483 4.1.1).  A p10cr
    // carries a PKCS#10 request and no certReqId at all; the value OpenSSL passes for it is the
    // one it will write into the cp (-1 since OpenSSL 3.0.8, RFC 9483 4.1.4), so it is not checked.
    (void)certReqId;
    if (s->reject_bit < 0 && crm && OSSL_CRMF_MSG_get_certReqId(crm) != 0)
        im.reject(*s, OSSL_CMP_PKIFAILUREINFO_badRequest, "only one CertReqMsg with certReqId 0 is supported",
                  "bad_request");
    if (s->reject_bit < 0 && !s->operator_rejection.empty())
        im.reject(*s, OSSL_CMP_PKIFAILUREINFO_notAuthorized, "rejected by the operator: " + s->operator_rejection,
                  "operator_rejected");
    if (s->reject_bit < 0 && (bt == kKur) != (s->kind == SignerKind::Operator))
        im.reject(*s, OSSL_CMP_PKIFAILUREINFO_notAuthorized,
                  bt == kKur ? "kur must be signed with the current operator certificate"
                             : "initial enrolment must be signed with a vendor device certificate",
                  "not_authorized");
    if (s->reject_bit >= 0) return rejection(s->reject_bit, s->reject_text);

    if (crm) {
        auto pop = detail::popo_signature_alg(crm);
        if (const char* w = pop.present ? weak_digest(pop.nid) : nullptr) {
            im.reject(*s, OSSL_CMP_PKIFAILUREINFO_badAlg,
                      "POP signature algorithm " + pop.name + " uses " + w + "; MD5 and SHA-1 are not accepted",
                      "weak_alg_pop");
            return rejection(s->reject_bit, s->reject_text);
        }
    }

    if (p10cr) {  // the PKCS#10 self-signature is the p10cr's proof of possession
        int nid = X509_REQ_get_signature_nid(p10cr);
        if (const char* w = weak_digest(nid)) {
            im.reject(*s, OSSL_CMP_PKIFAILUREINFO_badAlg,
                      std::string("PKCS#10 signature algorithm ") + OBJ_nid2sn(nid) + " uses " + w +
                          "; MD5 and SHA-1 are not accepted",
                      "weak_alg_pop");
            return rejection(s->reject_bit, s->reject_text);
        }
    }

    const X509_NAME* subject = nullptr;
    pki::PkeyPtr key;
    Bytes spki;  // the template's SubjectPublicKeyInfo, certified as it came (ir/cr/kur)
    const STACK_OF(X509_EXTENSION)* exts = nullptr;
    STACK_OF(X509_EXTENSION)* p10exts = nullptr;
    if (crm) {
        OSSL_CRMF_CERTTEMPLATE* tmpl = OSSL_CRMF_MSG_get0_tmpl(crm);
        subject = OSSL_CRMF_CERTTEMPLATE_get0_subject(tmpl);
        exts = OSSL_CRMF_CERTTEMPLATE_get0_extensions(tmpl);
        auto tk = detail::template_public_key(crm);
        key = std::move(tk.key);
        spki = std::move(tk.spki);
    } else if (p10cr) {
        subject = X509_REQ_get_subject_name(p10cr);
        key = pki::up_ref(X509_REQ_get0_pubkey(const_cast<X509_REQ*>(p10cr)));
        p10exts = X509_REQ_get_extensions(const_cast<X509_REQ*>(p10cr));
        exts = p10exts;
    }
    struct ExtFree {
        STACK_OF(X509_EXTENSION) * e;
        ~ExtFree() { sk_X509_EXTENSION_pop_free(e, X509_EXTENSION_free); }
    } ext_guard{p10exts};
    if (!key) {
        im.reject(*s, OSSL_CMP_PKIFAILUREINFO_badCertTemplate, "certTemplate has no publicKey", "bad_cert_template");
        return rejection(s->reject_bit, s->reject_text);
    }
    if (auto kv = check_key_type(*s->profile, key.get()); !kv.ok()) {
        im.reject(*s, kv.fail_bit, kv.text, kv.counter);
        return rejection(s->reject_bit, s->reject_text);
    }

    // Requested subjectAltNames by type; the profile decides which types and values are allowed.
    RequestedNames req_names;
    for (int i = 0; exts && i < sk_X509_EXTENSION_num(exts); ++i) {
        X509_EXTENSION* e = sk_X509_EXTENSION_value(exts, i);
        if (OBJ_obj2nid(X509_EXTENSION_get_object(e)) != NID_subject_alt_name) continue;
        auto* names = static_cast<GENERAL_NAMES*>(X509V3_EXT_d2i(e));
        if (!names) req_names.malformed.emplace_back("extension (does not decode)");
        for (int j = 0; names && j < sk_GENERAL_NAME_num(names); ++j) {
            GENERAL_NAME* g = sk_GENERAL_NAME_value(names, j);
            auto text = [](const ASN1_STRING* a) {
                return std::string(reinterpret_cast<const char*>(ASN1_STRING_get0_data(a)),
                                   static_cast<size_t>(ASN1_STRING_length(a)));
            };
            if (g->type == GEN_DNS) {
                std::string d = lower(text(g->d.dNSName));
                if (!pki::valid_dns_name(d))
                    req_names.malformed.push_back("dNSName '" + d + "'");
                else
                    req_names.dns.push_back(d);
            } else if (g->type == GEN_IPADD) {
                char buf[INET6_ADDRSTRLEN] = {};
                const ASN1_OCTET_STRING* a = g->d.iPAddress;
                int len = ASN1_STRING_length(a);
                int fam = len == 4 ? AF_INET : len == 16 ? AF_INET6 : 0;
                if (!fam || !inet_ntop(fam, ASN1_STRING_get0_data(a), buf, sizeof buf))
                    req_names.malformed.push_back("iPAddress of " + std::to_string(len) + " octets");
                else
                    req_names.ip.emplace_back(buf);
            } else if (g->type == GEN_URI) {
                std::string u = text(g->d.uniformResourceIdentifier);
                if (!pki::valid_uri(u))
                    req_names.malformed.emplace_back("URI (not an absolute URI of printable ASCII)");
                else
                    req_names.uri.push_back(u);
            } else {
                static const char* kNames[] = {"otherName",
                                               "rfc822Name",
                                               "dNSName",
                                               "x400Address",
                                               "directoryName",
                                               "ediPartyName",
                                               "uniformResourceIdentifier",
                                               "iPAddress",
                                               "registeredID"};
                req_names.other.emplace_back(g->type >= 0 && g->type <= 8 ? kNames[g->type] : "unknown");
            }
        }
        GENERAL_NAMES_free(names);
    }

    // Identities the requester may claim: the vendor certificate's node identity (ir), or the
    // dNSNames of the operator certificate being renewed (kur).
    std::vector<std::string> allowed;
    if (s->kind == SignerKind::Vendor) {
        allowed = pki::node_identities(s->signer.get());
    } else {
        for (auto& d : pki::san_dns(s->signer.get())) allowed.push_back(lower(d));
        const OSSL_CRMF_CERTID* old = crm ? OSSL_CRMF_MSG_get0_regCtrl_oldCertID(crm) : nullptr;
        if (old &&
            (ASN1_INTEGER_cmp(OSSL_CRMF_CERTID_get0_serialNumber(old), X509_get0_serialNumber(s->signer.get())) != 0)) {
            im.reject(*s, OSSL_CMP_PKIFAILUREINFO_badCertId,
                      "oldCertID does not name the certificate that signed the kur", "bad_cert_id");
            return rejection(s->reject_bit, s->reject_text);
        }
    }
    const auto& pol = *s->policy;
    const IssuanceProfile& prof = *s->profile;
    std::string cn_text;
    if (int idx = subject ? X509_NAME_get_index_by_NID(subject, NID_commonName, -1) : -1; idx >= 0) {
        ASN1_STRING* cn = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subject, idx));
        cn_text = std::string(reinterpret_cast<const char*>(ASN1_STRING_get0_data(cn)),
                              static_cast<size_t>(ASN1_STRING_length(cn)));
    }
    auto verdict = check_request(prof, req_names, cn_text, allowed, !pol.allow_identity_mismatch);
    if (!verdict.ok()) {
        im.reject(*s, verdict.fail_bit, verdict.text, verdict.counter);
        return rejection(s->reject_bit, s->reject_text);
    }
    std::vector<std::string>& req_dns = req_names.dns;
    if (req_dns.empty() && !prof.dns.empty()) req_dns = allowed;

    pki::NamePtr default_subject;
    if (!subject || X509_NAME_entry_count(subject) == 0) {
        if (s->kind == SignerKind::Operator) {
            subject = X509_get_subject_name(s->signer.get());
        } else {
            auto n = pki::parse_name("/CN=" + (req_dns.empty() ? std::string("node") : req_dns.front()));
            default_subject = std::move(*n);
            subject = default_subject.get();
        }
    }

    if (prof.approval == Approval::Manual && !s->approved) {
        // Held for an operator (x2sec ca approve|reject): stored with the whole request so any
        // instance can answer the polls; the client gets `waiting` and polls (RFC 9483 5.1.4).
        if (!s->waiting) {
            PendingRequest p;
            p.transaction_id = s->tid;
            p.profile = prof.name;
            p.body = s->body;
            p.subject = pki::name_to_string(subject);
            for (auto& d : req_dns) p.sans += (p.sans.empty() ? "" : ",") + d;
            for (auto& a : req_names.ip) p.sans += (p.sans.empty() ? "IP:" : ",IP:") + a;
            for (auto& u : req_names.uri) p.sans += (p.sans.empty() ? "URI:" : ",URI:") + u;
            p.requester = Server::Impl::requester_of(s->signer.get());
            // The request as it came (OpenSSL was given it without its extraCerts).
            p.request_der.assign(s->der.begin(), s->der.end());
            p.created = s->now;
            auto st = !p.request_der.empty() ? im.store.record_pending(p)
                                             : Status(Error(ErrorDomain::Cmp, 0, "no request to hold"));
            if (!st) {
                bool dup = st.error().code() == 1;
                im.reject(*s, dup ? OSSL_CMP_PKIFAILUREINFO_transactionIdInUse : OSSL_CMP_PKIFAILUREINFO_systemFailure,
                          dup ? "transactionID already used" : "store unavailable",
                          dup ? "transaction_id_in_use" : "store");
                im.lg->warn("store: {}", st.error().detail());
                return rejection(s->reject_bit, s->reject_text);
            }
            s->waiting = true;
            im.counters.inc("cmp.approval.held");
            im.lg->info("holding {} {} ({}) of {} for approval under profile {}", s->body, to_hex(s->tid), p.subject,
                        p.sans, p.requester, prof.name.empty() ? "default" : prof.name);
        }
        return OSSL_CMP_STATUSINFO_new(OSSL_CMP_PKISTATUS_waiting, 0, "held for operator approval");
    }

    pki::IssueRequest ir;
    ir.profile = pki::Profile::BaseStation;
    ir.subject = const_cast<X509_NAME*>(subject);
    ir.public_key = key.get();
    ir.public_key_spki = spki;
    ir.dns = req_dns;
    ir.ips = req_names.ip;
    ir.uris = req_names.uri;
    ir.not_before = s->now - 60;
    ir.validity_days = prof.validity_days.value_or(pol.validity_days);
    ir.crl_urls = pol.crl_urls;
    ir.ocsp_urls = pol.ocsp_urls;
    auto cert = pki::issue_certificate(ir, im.cfg.ca_cert.get(), im.cfg.ca_key.get());
    if (!cert) {
        im.reject(*s, OSSL_CMP_PKIFAILUREINFO_badCertTemplate, "cannot issue: " + cert.error().detail(),
                  "issue_failed");
        return rejection(s->reject_bit, s->reject_text);
    }

    CertRecord rec;
    rec.serial = pki::serial_bytes(X509_get0_serialNumber(cert->get()));
    rec.transaction_id = s->tid;
    rec.subject = pki::name_to_string(subject);
    for (auto& d : req_dns) rec.sans += (rec.sans.empty() ? "" : ",") + d;
    for (auto& a : req_names.ip) rec.sans += (rec.sans.empty() ? "IP:" : ",IP:") + a;
    for (auto& u : req_names.uri) rec.sans += (rec.sans.empty() ? "URI:" : ",URI:") + u;
    rec.requester = Server::Impl::requester_of(s->signer.get());
    rec.body = s->body;
    rec.not_before = pki::not_before(cert->get());
    rec.not_after = pki::not_after(cert->get());
    rec.issued_at = s->now;
    rec.der = pki::cert_der(cert->get());
    // Recorded by handle() once the answer is built: as `implicit` when OpenSSL granted
    // implicitConfirm, else `unconfirmed` with the request and the answer's senderNonce.
    s->to_record = std::move(rec);
    s->issued = pki::up_ref(cert->get());
    *certOut = cert->release();
    *chainOut = pki::make_stack(im.issued_chain()).release();
    *caPubs = pki::make_stack({im.cfg.operator_root()}).release();
    return OSSL_CMP_STATUSINFO_new(OSSL_CMP_PKISTATUS_accepted, 0, nullptr);
}

bool acceptable_revocation_reason(int r) {
    // RFC 5280 CRLReason: 0..10 without 7 (unused); removeFromCRL (8) only belongs in delta
    // CRLs and is not something a holder can ask for.
    return r >= 0 && r <= 10 && r != 7 && r != 8;
}

OSSL_CMP_PKISI* cb_rr(OSSL_CMP_SRV_CTX* srv, const OSSL_CMP_MSG*, const X509_NAME* issuer, const ASN1_INTEGER* serial) {
    auto* s = static_cast<Session*>(OSSL_CMP_SRV_CTX_get0_custom_ctx(srv));
    auto& im = *s->impl;
    if (s->reject_bit < 0 && s->kind != SignerKind::Operator)
        im.reject(*s, OSSL_CMP_PKIFAILUREINFO_notAuthorized, "rr must be signed with an operator certificate",
                  "not_authorized");
    if (s->reject_bit < 0 &&
        (!issuer || !serial || X509_NAME_cmp(issuer, X509_get_subject_name(im.cfg.ca_cert.get())) != 0))
        im.reject(*s, OSSL_CMP_PKIFAILUREINFO_badCertId, "certificate to revoke was not issued by this CA",
                  "bad_cert_id");
    if (s->reject_bit < 0 && ASN1_INTEGER_cmp(serial, X509_get0_serialNumber(s->signer.get())) != 0)
        im.reject(*s, OSSL_CMP_PKIFAILUREINFO_notAuthorized, "a node may only revoke its own certificate",
                  "not_authorized");
    if (s->reject_bit < 0 && !acceptable_revocation_reason(s->rr_reason))
        im.reject(*s, OSSL_CMP_PKIFAILUREINFO_badRequest,
                  "revocation reason " + std::to_string(s->rr_reason) + " is not accepted (CRLReason 0-6, 9 or 10)",
                  "bad_revocation_reason");
    if (s->reject_bit >= 0) return rejection(s->reject_bit, s->reject_text);
    Bytes sn = pki::serial_bytes(serial);
    auto st = im.store.revoke(sn, s->rr_reason, s->now);
    if (!st) {
        int bit = st.error().code() == 3   ? OSSL_CMP_PKIFAILUREINFO_certRevoked
                  : st.error().code() == 2 ? OSSL_CMP_PKIFAILUREINFO_badCertId
                                           : OSSL_CMP_PKIFAILUREINFO_systemFailure;
        im.reject(*s, bit, st.error().detail(), "revoke");
        return rejection(s->reject_bit, s->reject_text);
    }
    (void)im.store.record_transaction(s->tid, "rr", "revoked");
    im.crl_dirty = true;
    im.counters.inc("cmp.revoked");
    im.lg->info("revoked serial {} (reason {}) on request of its holder", to_hex(sn), s->rr_reason);
    return OSSL_CMP_STATUSINFO_new(OSSL_CMP_PKISTATUS_accepted, 0, nullptr);
}

// caCerts (RFC 9480 2.4, id-it 17): SEQUENCE SIZE (1..MAX) OF Certificate, encoded with an
// OpenSSL ASN.1 template (3.0 has no CMP type for it; the OID is unknown to 3.0's ITAV
// template, so the value is an ASN1_TYPE holding that SEQUENCE).
typedef STACK_OF(X509) X2SEC_CA_CERTS;
ASN1_ITEM_TEMPLATE(X2SEC_CA_CERTS) = ASN1_EX_TEMPLATE_TYPE(ASN1_TFLG_SEQUENCE_OF, 0, caCerts, X509)
                                         ASN1_ITEM_TEMPLATE_END(X2SEC_CA_CERTS)

                                             OSSL_CMP_ITAV
                                     * itav_ca_certs(const std::vector<X509*>& certs) {
    auto sk = pki::make_stack(certs);
    unsigned char* der = nullptr;
    int n = ASN1_item_i2d(reinterpret_cast<ASN1_VALUE*>(sk.get()), &der, ASN1_ITEM_rptr(X2SEC_CA_CERTS));
    if (n <= 0) return nullptr;
    ASN1_STRING* str = ASN1_STRING_new();
    ASN1_TYPE* val = ASN1_TYPE_new();
    ASN1_OBJECT* oid = OBJ_txt2obj(kIdItCaCerts, 1);
    bool ok = str && val && oid && ASN1_STRING_set(str, der, n);
    OPENSSL_free(der);
    if (!ok) {
        ASN1_STRING_free(str);
        ASN1_TYPE_free(val);
        ASN1_OBJECT_free(oid);
        return nullptr;
    }
    ASN1_TYPE_set(val, V_ASN1_SEQUENCE, str);
    OSSL_CMP_ITAV* itav = OSSL_CMP_ITAV_create(oid, val);
    if (!itav) {
        ASN1_TYPE_free(val);
        ASN1_OBJECT_free(oid);
    }
    return itav;
}

// The currentCRL InfoTypeAndValue.  OpenSSL's ITAV template selects infoValue's type by the
// OID (id-it-currentCRL: X509_CRL); 3.0 has no typed constructor (OSSL_CMP_ITAV_new_crls is
// 3.2+), and its infoValue is a union of pointers, so the X509_CRL goes in through
// OSSL_CMP_ITAV_create and OpenSSL encodes and frees it as a CertificateList.
OSSL_CMP_ITAV* itav_current_crl(const Bytes& der) {
    const unsigned char* p = der.data();
    X509_CRL* crl = d2i_X509_CRL(nullptr, &p, static_cast<long>(der.size()));
    if (!crl) return nullptr;
    OSSL_CMP_ITAV* itav = OSSL_CMP_ITAV_create(OBJ_nid2obj(NID_id_it_currentCRL), reinterpret_cast<ASN1_TYPE*>(crl));
    if (!itav) X509_CRL_free(crl);
    return itav;
}

// genm (RFC 9483 4.3): caCerts, rootCaCert -> rootCaKeyUpdate, certReqTemplate and
// currentCRL (RFC 4210 5.3.19.6) are answered; other infoTypes are left out of the genp
// (RFC 4210 5.3.19: the responder may omit what it does not support).
int cb_genm(OSSL_CMP_SRV_CTX* srv, const OSSL_CMP_MSG*, const STACK_OF(OSSL_CMP_ITAV) * in,
            STACK_OF(OSSL_CMP_ITAV) * *out) {
    auto* s = static_cast<Session*>(OSSL_CMP_SRV_CTX_get0_custom_ctx(srv));
    auto& im = *s->impl;
    if (s->reject_bit >= 0) return 0;
    *out = sk_OSSL_CMP_ITAV_new_null();
    if (!*out) return 0;
    auto give_up = [&]() {
        sk_OSSL_CMP_ITAV_pop_free(*out, OSSL_CMP_ITAV_free);
        *out = nullptr;
        return 0;
    };
    auto push = [&](OSSL_CMP_ITAV* itav) {
        if (itav && sk_OSSL_CMP_ITAV_push(*out, itav)) return true;
        OSSL_CMP_ITAV_free(itav);
        return false;
    };
    for (int i = 0; i < sk_OSSL_CMP_ITAV_num(in); ++i) {
        const OSSL_CMP_ITAV* req = sk_OSSL_CMP_ITAV_value(in, i);
        int nid = OBJ_obj2nid(OSSL_CMP_ITAV_get0_type(req));
        const std::string oid = itav_oid(req);
        if (oid == kIdItCaCerts) {
            // the issuing CA and its chain up to the operator root
            if (!push(itav_ca_certs(im.issued_chain_with_ca()))) return give_up();
            im.counters.inc("cmp.genm.ca_certs");
        } else if (oid == kIdItRootCaCert) {
            // RFC 9483 4.3.2: the value (optional) is the root the EE trusts now; the answer is
            // rootCaKeyUpdate with the new root and the link certificates, or without a value
            // when there is no update for that root.
            auto val = itav_value_der(req);
            pki::X509Ptr old_root;
            if (val.ok() && val->has_value()) {
                auto c = decode_certificate(**val);
                if (c.ok())
                    old_root = std::move(*c);
                else
                    val = c.error();
            }
            if (!val.ok()) {
                im.reject(*s, OSSL_CMP_PKIFAILUREINFO_badDataFormat, "genm rootCaCert: " + val.error().detail(),
                          "bad_genm_value");
                ERR_raise_data(ERR_LIB_CMP, CMP_R_ERROR_PROCESSING_MESSAGE, "rootCaCert value does not decode");
                return give_up();
            }
            const auto& up = im.cfg.root_update;
            bool applies = up && (!old_root || is_old_root_of(*up, old_root.get()));
            X2SEC_ROOTCAKEYUPDATE v{};
            if (applies) {
                v.newWithNew = up->new_with_new.get();
                v.newWithOld = up->new_with_old.get();
                v.oldWithNew = up->old_with_new.get();
            }
            ItavPtr itav =
                make_itav(kIdItRootCaKeyUpdate, ASN1_ITEM_rptr(X2SEC_ROOTCAKEYUPDATE), applies ? &v : nullptr);
            if (!push(itav.release())) return give_up();
            im.counters.inc(applies ? "cmp.genm.root_ca_key_update" : "cmp.genm.root_ca_key_update.none");
        } else if (oid == kIdItCertReqTemplate) {
            // RFC 9483 4.3.3: the request path's profile for this requester's identity; without
            // an identity there is no template (value absent).
            std::vector<std::string> ids;
            if (s->kind == SignerKind::Vendor) {
                ids = pki::node_identities(s->signer.get());
            } else {
                for (auto& d : pki::san_dns(s->signer.get())) ids.push_back(lower(d));
            }
            auto t = make_cert_req_template(*s->profile, ids);
            if (!t.ok()) im.lg->info("genm certReqTemplate: no template: {}", t.error().detail());
            ItavPtr itav =
                make_itav(kIdItCertReqTemplate, ASN1_ITEM_rptr(X2SEC_CERTREQTEMPLATE), t.ok() ? t->get() : nullptr);
            if (!push(itav.release())) return give_up();
            im.counters.inc(t.ok() ? "cmp.genm.cert_req_template" : "cmp.genm.cert_req_template.none");
        } else if (nid == NID_id_it_currentCRL) {
            auto crl = im.current_crl(s->now);
            if (!crl) {
                im.lg->warn("genm currentCRL: {}", crl.error().detail());
                ERR_raise_data(ERR_LIB_CMP, CMP_R_ERROR_PROCESSING_MESSAGE, "CRL unavailable");
                return give_up();
            }
            if (!push(itav_current_crl(*crl))) return give_up();
            im.counters.inc("cmp.genm.current_crl");
        } else {
            im.counters.inc("cmp.genm.unsupported");
            im.lg->info("genm infoType {} not served", oid);
        }
    }
    (void)im.store.record_transaction(s->tid, "genm", "answered");
    return 1;
}

void cb_error(OSSL_CMP_SRV_CTX* srv, const OSSL_CMP_MSG*, const OSSL_CMP_PKISI* si, const ASN1_INTEGER*,
              const OSSL_CMP_PKIFREETEXT*) {
    auto* s = static_cast<Session*>(OSSL_CMP_SRV_CTX_get0_custom_ctx(srv));
    char buf[OSSL_CMP_PKISI_BUFLEN];
    const char* txt = si ? OSSL_CMP_snprint_PKIStatusInfo(si, buf, sizeof buf) : nullptr;
    s->impl->lg->info("client sent error for transaction {}: {}", to_hex(s->tid), txt ? txt : "?");
    s->impl->counters.inc("cmp.rx.client_error");
    if (s->issued && s->reject_bit < 0) {
        auto closed = s->impl->store.revoke_unconfirmed(s->tid, "aborted", 5, s->now);
        if (closed.ok() && *closed) s->impl->crl_dirty = true;
        if (closed.ok() && !*closed) s->impl->counters.inc("cmp.session.closed_elsewhere");
    }
    s->done = true;
}

int cb_certconf(OSSL_CMP_SRV_CTX* srv, const OSSL_CMP_MSG*, int, const ASN1_OCTET_STRING* certHash,
                const OSSL_CMP_PKISI* si) {
    auto* s = static_cast<Session*>(OSSL_CMP_SRV_CTX_get0_custom_ctx(srv));
    auto& im = *s->impl;
    if (s->reject_bit >= 0 || !s->issued) return 0;
    // certHash: hash of the certificate with the hash of its signature algorithm.
    int md_nid = NID_undef;
    if (!X509_get_signature_info(s->issued.get(), &md_nid, nullptr, nullptr, nullptr)) md_nid = NID_sha256;
    unsigned char h[EVP_MAX_MD_SIZE];
    unsigned int hl = 0;
    const EVP_MD* md = EVP_get_digestbynid(md_nid);
    if (!md || !X509_digest(s->issued.get(), md, h, &hl) || !certHash ||
        ASN1_STRING_length(certHash) != static_cast<int>(hl) ||
        CRYPTO_memcmp(ASN1_STRING_get0_data(certHash), h, hl) != 0) {
        im.counters.inc("cmp.reject.bad_cert_hash");
        ERR_raise_data(ERR_LIB_CMP, CMP_R_CERTHASH_UNMATCHED,
                       "certHash in certConf does not match the issued certificate");
        return 0;
    }
    bool client_rejected = false;
    if (si) {
        char buf[OSSL_CMP_PKISI_BUFLEN];
        const char* txt = OSSL_CMP_snprint_PKIStatusInfo(si, buf, sizeof buf);
        client_rejected = txt && std::string_view(txt).find("rejection") != std::string_view::npos;
    }
    // Closed only from `unconfirmed`: of two instances given the certConf (a retransmission
    // through a per-request load balancer) one closes it, the other refuses.
    auto closed = client_rejected ? im.store.revoke_unconfirmed(s->tid, "rejected-by-client", 5, s->now)
                                  : im.store.close_unconfirmed(s->tid, "confirmed");
    s->done = true;
    if (!closed.ok()) {
        im.lg->warn("store: closing transaction {}: {}", to_hex(s->tid), closed.error().detail());
        im.counters.inc("cmp.certconf.store_failed");
        ERR_raise_data(ERR_LIB_CMP, CMP_R_ERROR_PROCESSING_MESSAGE, "store unavailable");
        return 0;
    }
    if (!*closed) {
        im.counters.inc("cmp.certconf.closed_elsewhere");
        im.counters.inc("cmp.session.closed_elsewhere");
        im.lg->info("certConf for transaction {}: already closed (by another instance, or it timed out)",
                    to_hex(s->tid));
        ERR_raise_data(ERR_LIB_CMP, CMP_R_ERROR_PROCESSING_MESSAGE, "transaction is no longer open");
        return 0;
    }
    if (client_rejected) {
        im.crl_dirty = true;
        im.counters.inc("cmp.certconf.rejected");
    } else {
        im.counters.inc("cmp.certconf.accepted");
    }
    return 1;
}

// pollReq for a held request: pollRep with checkAfter while it is pending; once decided, the
// stored request goes through OpenSSL's certificate request path again (cb_cert_request
// issues it, or rejects it with the operator's reason), answered as ip/cp/kup.
int cb_pollreq(OSSL_CMP_SRV_CTX* srv, const OSSL_CMP_MSG*, int, OSSL_CMP_MSG** certReq, int64_t* check_after) {
    auto* s = static_cast<Session*>(OSSL_CMP_SRV_CTX_get0_custom_ctx(srv));
    auto& im = *s->impl;
    *certReq = nullptr;
    if (!s->waiting) {
        ERR_raise_data(ERR_LIB_CMP, CMP_R_UNEXPECTED_PKIBODY, "no request of this transaction awaits approval");
        return 0;
    }
    auto p = im.store.find_pending(s->tid);
    if (!p.ok() || !p->has_value()) {
        ERR_raise_data(ERR_LIB_CMP, CMP_R_ERROR_PROCESSING_MESSAGE, "held request not found in the store");
        return 0;
    }
    const PendingRequest& pr = **p;
    if (pr.state == "pending") {
        *check_after = im.policy()->poll_interval_s;
        im.counters.inc("cmp.approval.poll_waiting");
        return 1;
    }
    const unsigned char* d = pr.request_der.data();
    OSSL_CMP_MSG* orig = d2i_OSSL_CMP_MSG(nullptr, &d, static_cast<long>(pr.request_der.size()));
    if (!orig) {
        ERR_raise_data(ERR_LIB_CMP, CMP_R_ERROR_PROCESSING_MESSAGE, "stored request does not decode");
        return 0;
    }
    if (pr.state == "approved") {
        s->approved = true;
        s->approved_request = pr.request_der;
        im.counters.inc("cmp.approval.approved");
    } else {
        s->operator_rejection = pr.reason.empty() ? std::string("no reason given") : pr.reason;
        s->waiting = false;
        im.counters.inc("cmp.approval.rejected");
    }
    *certReq = orig;
    return 1;
}

}  // namespace

std::shared_ptr<Session> Server::Impl::make_session(X509* signer, SignerKind kind, const Bytes& tid, int64_t now,
                                                    std::shared_ptr<const ServerPolicy> pol) {
    auto s = std::make_shared<Session>();
    s->policy = std::move(pol);
    s->impl = this;
    s->kind = kind;
    s->tid = tid;
    s->created = now;
    if (signer) s->signer = pki::up_ref(signer);
    s->srv = OSSL_CMP_SRV_CTX_new(nullptr, nullptr);
    OSSL_CMP_CTX* ctx = OSSL_CMP_SRV_CTX_get0_cmp_ctx(s->srv);
    configure_ctx(ctx);
    if (signer) OSSL_CMP_CTX_set1_srvCert(ctx, signer);  // the peer's certificate, pinned
    OSSL_CMP_SRV_CTX_init(s->srv, s.get(), cb_cert_request, cb_rr, cb_genm, cb_error, cb_certconf, cb_pollreq);
    OSSL_CMP_SRV_CTX_set_grant_implicit_confirm(s->srv, s->policy->grant_implicit_confirm ? 1 : 0);
    OSSL_CMP_SRV_CTX_set_send_unprotected_errors(s->srv, 0);
    OSSL_CMP_SRV_CTX_set_accept_unprotected(s->srv, 0);
    OSSL_CMP_SRV_CTX_set_accept_raverified(s->srv, 0);
    return s;
}

std::shared_ptr<Session> Server::Impl::resume_pending(X509* signer, const std::vector<X509*>& untrusted,
                                                      const Bytes& tid, int64_t now) {
    auto p = store.find_pending(tid);
    if (!p.ok() || !p->has_value()) return nullptr;
    const PendingRequest& pr = **p;
    if (pr.state == "issued" || pr.requester != requester_of(signer)) return nullptr;
    auto pol = policy();
    const IssuanceProfile* prof = pol->find_profile(pr.profile);
    if (!prof) return nullptr;
    bool op = pr.body == "kur";
    auto chain = op ? pki::verify_chain(signer, operator_store.get(), operator_untrusted, now)
                    : pki::verify_chain(signer, vendor_store.get(), untrusted, now);
    if (!chain.ok()) return nullptr;
    std::lock_guard lk(sessions_mu);
    if (auto it = sessions.find(tid); it != sessions.end()) return it->second;
    auto s = make_session(signer, op ? SignerKind::Operator : SignerKind::Vendor, tid, now, pol);
    s->profile = prof;
    s->body = pr.body;
    s->waiting = true;
    // OpenSSL's server context keeps the transaction's state (transactionID, certReqId) from
    // the certificate request it answered: replay the stored request into the fresh context
    // (cb_cert_request answers `waiting` again, nothing is recorded) and discard that answer.
    const unsigned char* d = pr.request_der.data();
    MsgPtr orig(d2i_OSSL_CMP_MSG(nullptr, &d, static_cast<long>(pr.request_der.size())));
    if (!orig) return nullptr;
    {
        std::lock_guard slk(s->mu);
        s->now = now;
        s->der = pr.request_der;
        MsgPtr ignored(OSSL_CMP_SRV_process_request(s->srv, orig.get()));
        s->der = {};
        ERR_clear_error();
        if (!ignored || s->reject_bit >= 0) return nullptr;
        // The client's pollReq answers the other instance's senderNonce, which this one never
        // saw: forget the replay's nonce (the pollReq is still authenticated by the pinned signer
        // and bound to the transactionID).
        OSSL_CMP_CTX_set1_senderNonce(OSSL_CMP_SRV_CTX_get0_cmp_ctx(s->srv), nullptr);
    }
    sessions[tid] = s;
    s->registered = true;
    counters.inc("cmp.approval.resumed");
    return s;
}

Status Server::Impl::record_answered(Session& s, bool implicit, const Bytes& answer) {
    CertRecord rec = std::move(*s.to_record);
    s.to_record.reset();
    rec.status = implicit ? "implicit" : "unconfirmed";
    if (!implicit) {
        const Bytes& req = s.approved ? s.approved_request : Bytes(s.der.begin(), s.der.end());
        rec.open_request = req;
        rec.open_nonce = detail::sender_nonce(answer);
        if (rec.open_request.empty() || rec.open_nonce.empty())
            return Error(ErrorDomain::Cmp, 0, "no request or senderNonce to keep for the certConf");
    }
    X2SEC_TRY_STATUS(store.record_issued(rec));
    counters.inc("cmp.issued");
    if (s.approved) {
        (void)store.set_pending_state(s.tid, "issued");
        (void)store.append_audit({0,
                                  s.now,
                                  "ra",
                                  "issue",
                                  to_hex(s.tid),
                                  "approved request issued as serial " + to_hex(rec.serial),
                                  {},
                                  {}});
        s.waiting = false;
    }
    const std::string& pname = s.profile ? s.profile->name : std::string();
    lg->info("issued {} serial {} to {} ({}) for {} under {}", s.body, to_hex(rec.serial), rec.subject, rec.sans,
             rec.requester, pname.empty() ? std::string("the default profile") : "profile " + pname);
    return ok_status();
}

Server::Impl::Resumed Server::Impl::resume_unconfirmed(const OSSL_CMP_MSG* certconf, X509* signer,
                                                       const std::vector<X509*>& untrusted, const Bytes& tid,
                                                       int64_t now) {
    auto fail = [](int bit, std::string text, const char* counter) {
        Resumed r;
        r.bit = bit;
        r.text = std::move(text);
        r.counter = counter;
        return r;
    };
    auto open = store.find_open_request(tid);
    if (!open.ok()) return fail(OSSL_CMP_PKIFAILUREINFO_systemUnavail, "store unavailable", "store");
    if (!open->has_value()) {
        Resumed r;
        r.not_open = true;
        return r;
    }
    auto rec = store.find_by_transaction(tid);
    if (!rec.ok()) return fail(OSSL_CMP_PKIFAILUREINFO_systemUnavail, "store unavailable", "store");
    if (!rec->has_value() || (*rec)->revoked || (*rec)->status != "unconfirmed") {
        Resumed r;
        r.not_open = true;
        return r;
    }
    const OpenRequest& o = **open;
    const CertRecord& cr = **rec;
    // The signer is pinned: the certConf must come from the certificate that signed the request.
    if (cr.requester != requester_of(signer)) return {};
    // The certConf answers our ip/cp/kup: its recipNonce is that message's senderNonce.
    const ASN1_OCTET_STRING* rn = OSSL_CMP_HDR_get0_recipNonce(OSSL_CMP_MSG_get0_header(certconf));
    if (!rn || Bytes(ASN1_STRING_get0_data(rn), ASN1_STRING_get0_data(rn) + ASN1_STRING_length(rn)) != o.nonce)
        return fail(OSSL_CMP_PKIFAILUREINFO_badRecipientNonce,
                    "recipNonce of the certConf does not answer the ip/cp/kup of transaction " + to_hex(tid),
                    "bad_recip_nonce");
    // The signer's chain, as the original request was checked (at the certConf's time): a vendor
    // root for ir/cr/p10cr (with the request's extraCerts), the operator root for kur.
    auto v = detail::view_message(o.request_der);
    if (!v.ok) return fail(OSSL_CMP_PKIFAILUREINFO_systemFailure, "stored request does not decode", "resume_failed");
    std::vector<X509Ptr> req_extra;
    std::vector<X509*> chain_untrusted(untrusted);
    for (auto& d : v.extra_certs)
        if (auto x = certificate(d)) {
            chain_untrusted.push_back(x.get());
            req_extra.push_back(std::move(x));
        }
    const bool op = cr.body == "kur";
    auto chain = op ? pki::verify_chain(signer, operator_store.get(), operator_untrusted, now)
                    : pki::verify_chain(signer, vendor_store.get(), chain_untrusted, now);
    if (!chain.ok())
        return fail(OSSL_CMP_PKIFAILUREINFO_signerNotTrusted,
                    std::string(op ? "operator" : "vendor") + " certificate not accepted: " + chain.error().detail(),
                    "signer_not_trusted");
    if (op) {
        auto srec = store.find_by_serial(pki::serial_bytes(X509_get0_serialNumber(signer)));
        if (!srec.ok()) return fail(OSSL_CMP_PKIFAILUREINFO_systemUnavail, "store unavailable", "store");
        if (srec->has_value() && (*srec)->revoked)
            return fail(OSSL_CMP_PKIFAILUREINFO_certRevoked,
                        "the signing operator certificate (serial " + pki::serial_hex(signer) + ") is revoked",
                        "signer_revoked");
    }
    auto cert = certificate(cr.der);
    const unsigned char* d = v.without_extra_certs.data();
    MsgPtr orig(d2i_OSSL_CMP_MSG(nullptr, &d, static_cast<long>(v.without_extra_certs.size())));
    if (!cert || !orig) {
        ERR_clear_error();
        return fail(OSSL_CMP_PKIFAILUREINFO_systemFailure, "stored request or certificate does not decode",
                    "resume_failed");
    }
    auto s = make_session(signer, op ? SignerKind::Operator : SignerKind::Vendor, tid, o.created, policy());
    s->profile = &s->policy->default_profile;
    s->body = cr.body;
    s->replay_cert = pki::up_ref(cert.get());
    OSSL_CMP_SRV_CTX_set_grant_implicit_confirm(s->srv, 0);
    {
        // OpenSSL's server context keeps the transaction's state (transactionID, certReqId)
        // from the request it answered: the stored request goes through it again, its
        // protection verified with the pinned signer, and is answered with the certificate
        // issued before (cb_cert_request records nothing); the answer is discarded.  Then the
        // senderNonce is the stored one, so OpenSSL checks the certConf's recipNonce too.
        std::lock_guard slk(s->mu);
        s->now = now;
        s->der = o.request_der;
        MsgPtr ignored(OSSL_CMP_SRV_process_request(s->srv, orig.get()));
        s->der = {};
        s->replay_cert.reset();
        ERR_clear_error();
        if (!ignored || OSSL_CMP_MSG_get_bodytype(ignored.get()) == kError || s->reject_bit >= 0 || !s->issued)
            return fail(OSSL_CMP_PKIFAILUREINFO_badMessageCheck,
                        "the stored request of transaction " + to_hex(tid) + " does not verify with the signer",
                        "resume_failed");
        ASN1_OCTET_STRING* n = ASN1_OCTET_STRING_new();
        bool set = n && ASN1_OCTET_STRING_set(n, o.nonce.data(), static_cast<int>(o.nonce.size())) &&
                   OSSL_CMP_CTX_set1_senderNonce(OSSL_CMP_SRV_CTX_get0_cmp_ctx(s->srv), n);
        ASN1_OCTET_STRING_free(n);
        if (!set) return fail(OSSL_CMP_PKIFAILUREINFO_systemFailure, "cannot set the senderNonce", "resume_failed");
    }
    Resumed r;
    std::lock_guard lk(sessions_mu);
    if (auto it = sessions.find(tid); it != sessions.end()) {
        if (it->second->signer && X509_cmp(signer, it->second->signer.get()) == 0) r.s = it->second;
        return r;
    }
    sessions[tid] = s;
    s->registered = true;
    counters.inc("cmp.session.resumed");
    lg->info("transaction {} resumed from the store for its certConf", to_hex(tid));
    r.s = std::move(s);
    return r;
}

void Server::Impl::configure_ctx(OSSL_CMP_CTX* ctx) const {
    OSSL_CMP_CTX_set_log_cb(ctx, srv_log_cb);
    OSSL_CMP_CTX_set1_cert(ctx, cfg.ra_cert.get());
    OSSL_CMP_CTX_set1_pkey(ctx, cfg.ra_key.get());
    OSSL_CMP_CTX_set1_untrusted(ctx, ra_untrusted.get());
    std::vector<X509*> extra_certs;
    // After `x2sec pki root-update --activate`, end entities that still trust the old root
    // validate our messages through newWithOld (RFC 4210 4.4); before the root, as in issued_chain.
    if (X509* link = active_root_link()) extra_certs.push_back(link);
    extra_certs.push_back(cfg.operator_root());
    auto extra = pki::make_stack(extra_certs);
    OSSL_CMP_CTX_set1_extraCertsOut(ctx, extra.get());
}

// OpenSSL 3.0's server answers every message-level failure with failInfo badRequest and has
// no public constructor for an `error` message.  So OpenSSL builds the whole answer (header
// with our sender, the client as recipient, its transactionID, recipNonce = its senderNonce,
// a fresh senderNonce, extraCerts): an OSSL_CMP_SRV_CTX without handlers answers any request
// with an `error`.  Its ErrorMsgContent is then replaced by one whose PKIStatusInfo comes from
// OSSL_CMP_STATUSINFO_new (encoded by OpenSSL's ASN.1 templates, asn1_view.cpp), and OpenSSL
// re-computes the protection with the RA key (OSSL_CMP_MSG_update_transactionID).
Result<Bytes> Server::Impl::error_response(const OSSL_CMP_MSG* req, int bit, const std::string& text,
                                           const char* counter) {
    counters.inc(std::string("cmp.reject.") + counter);
    counters.inc(std::string("cmp.failinfo.") + failinfo_name(bit));
    const ASN1_OCTET_STRING* rtid = OSSL_CMP_HDR_get0_transactionID(OSSL_CMP_MSG_get0_header(req));
    lg->info("rejecting message (transaction {}): {}",
             rtid ? to_hex(BytesView(ASN1_STRING_get0_data(rtid), static_cast<size_t>(ASN1_STRING_length(rtid)))) : "-",
             text);
    auto fail = [&](const char* what) -> Result<Bytes> {
        auto q = pki::ossl_errors();
        counters.inc("cmp.tx.no_response");
        return Error(ErrorDomain::Cmp, OSSL_CMP_PKIFAILUREINFO_systemFailure,
                     std::string(what) + (q.empty() ? "" : " [" + q + "]"));
    };
    std::unique_ptr<OSSL_CMP_SRV_CTX, SrvFree> srv(OSSL_CMP_SRV_CTX_new(nullptr, nullptr));
    if (!srv) return fail("cannot create an OpenSSL CMP server context");
    OSSL_CMP_CTX* ctx = OSSL_CMP_SRV_CTX_get0_cmp_ctx(srv.get());
    configure_ctx(ctx);
    // No handlers: whatever the body, OpenSSL answers with an `error`.  The request's
    // protection has already been judged by us; do not let it stop the skeleton.
    OSSL_CMP_SRV_CTX_set_accept_unprotected(srv.get(), 1);
    OSSL_CMP_SRV_CTX_set_send_unprotected_errors(srv.get(), 0);
    MsgPtr skel(OSSL_CMP_SRV_process_request(srv.get(), req));
    ERR_clear_error();
    if (!skel || OSSL_CMP_MSG_get_bodytype(skel.get()) != kError) return fail("OpenSSL built no error message");
    unsigned char* der = nullptr;
    int n = i2d_OSSL_CMP_MSG(skel.get(), &der);
    if (n <= 0) return fail("cannot encode the error message");
    Bytes skel_der(der, der + n);
    OPENSSL_free(der);
    std::unique_ptr<OSSL_CMP_PKISI, PkisiFree> si(
        OSSL_CMP_STATUSINFO_new(OSSL_CMP_PKISTATUS_rejection, 1 << bit, text.c_str()));
    if (!si) return fail("cannot build PKIStatusInfo");
    auto body = detail::replace_error_content(skel_der, si.get(), text);
    if (!body) return fail(body.error().detail().c_str());
    const unsigned char* p = body->data();
    MsgPtr msg(d2i_OSSL_CMP_MSG(nullptr, &p, static_cast<long>(body->size())));
    if (!msg) return fail("re-encoded error message does not decode");
    OSSL_CMP_CTX_set1_transactionID(ctx, OSSL_CMP_HDR_get0_transactionID(OSSL_CMP_MSG_get0_header(skel.get())));
    if (!OSSL_CMP_MSG_update_transactionID(ctx, msg.get())) return fail("cannot protect the error message");
    der = nullptr;
    n = i2d_OSSL_CMP_MSG(msg.get(), &der);
    if (n <= 0) return fail("cannot encode the error message");
    Bytes out(der, der + n);
    OPENSSL_free(der);
    ERR_clear_error();
    counters.inc("cmp.tx.error");
    return out;
}

void Server::Impl::purge_expired(int64_t now) {
    auto pol = policy();
    std::vector<std::shared_ptr<Session>> dead;
    {
        std::lock_guard lk(sessions_mu);
        for (auto it = sessions.begin(); it != sessions.end();) {
            int64_t limit = it->second->waiting ? pol->pending_timeout_s : pol->session_timeout_s;
            if (now - it->second->created > limit) {
                dead.push_back(it->second);
                it = sessions.erase(it);
            } else {
                ++it;
            }
        }
    }
    for (auto& s : dead) {
        std::lock_guard lk(s->mu);
        if (s->issued && !s->done) {
            // Revoked only while the store still says unconfirmed: another instance may have
            // taken the certConf (per-request load balancing); then the session just ends.
            auto closed = store.revoke_unconfirmed(s->tid, "unconfirmed-timeout", 5, now);
            if (!closed.ok()) {
                lg->warn("store: timing out transaction {}: {}", to_hex(s->tid), closed.error().detail());
            } else if (*closed) {
                crl_dirty = true;
                counters.inc("cmp.session.timeout");
            } else {
                counters.inc("cmp.session.closed_elsewhere");
            }
        }
    }
    // The same in the store for every instance: certificates left unconfirmed by a session that
    // no process holds any more (an instance killed between ip and certConf).  At most every
    // quarter of the session timeout (1..30 s), so it costs no write per request.
    int64_t every = std::clamp<int64_t>(pol->session_timeout_s / 4, 1, 30);
    int64_t last = last_sweep.load();
    if (now - last >= every && last_sweep.compare_exchange_strong(last, now)) {
        auto swept = store.expire_unconfirmed(now - pol->session_timeout_s, now);
        if (!swept) {
            lg->warn("store: sweeping unconfirmed certificates: {}", swept.error().detail());
        } else if (!swept->empty()) {
            crl_dirty = true;
            counters.inc("cmp.session.swept", swept->size());
            lg->info("revoked {} certificate(s) left unconfirmed for over {} s (first serial {})", swept->size(),
                     pol->session_timeout_s, to_hex(swept->front()));
        }
    }
}

Server::Server(ServerConfig cfg, Store& store) : m_impl(std::make_unique<Impl>(std::move(cfg), store, m_counters)) {}
Server::~Server() = default;
const ServerConfig& Server::config() const {
    return m_impl->cfg;
}
std::shared_ptr<const ServerPolicy> Server::policy() const {
    return m_impl->policy();
}
Status Server::set_policy(ServerPolicy p) {
    if (auto st = p.default_profile.validate(); !st) return st;
    for (auto& [name, prof] : p.profiles)
        if (auto st = prof.validate(); !st) return st;
    if (p.session_timeout_s < 1 || p.poll_interval_s < 1 || p.validity_days < 1)
        return Error(ErrorDomain::Config, 0, "session_timeout_s, poll_interval_s and validity_days must be positive");
    auto next = std::make_shared<const ServerPolicy>(std::move(p));
    std::lock_guard lk(m_impl->policy_mu);
    m_impl->policy_now = std::move(next);
    return ok_status();
}
size_t Server::open_sessions() const {
    std::lock_guard lk(m_impl->sessions_mu);
    return m_impl->sessions.size();
}

Result<Bytes> Server::handle(BytesView der, const RequestContext& rc) {
    auto& im = *m_impl;
    m_counters.inc("cmp.rx.messages");
    // The message is read once as DER (header, extraCerts as DER), and OpenSSL decodes it
    // without its extraCerts: OpenSSL 3.0 decodes each certificate's public key through its
    // provider decoders, the most expensive step of reading a message, and the certificates are
    // taken from the cache below instead (the signer is pinned; OpenSSL's own checks never need
    // the message's copies).  A message the view cannot read is decoded as it came, so that
    // OpenSSL's verdict on it stands.
    auto view = detail::view_message(der);
    MsgPtr req;
    const unsigned char* p = nullptr;
    if (view.ok) {
        const Bytes& lean = view.without_extra_certs;
        p = lean.data();
        req.reset(d2i_OSSL_CMP_MSG(nullptr, &p, static_cast<long>(lean.size())));
        if (req && p != lean.data() + lean.size()) req.reset();
        if (req) p = der.data() + der.size();
    }
    if (!req) {  // as it came: OpenSSL's verdict on it stands
        p = der.data();
        req.reset(d2i_OSSL_CMP_MSG(nullptr, &p, static_cast<long>(der.size())));
    }
    if (!req || p != der.data() + der.size()) {
        ERR_clear_error();
        m_counters.inc("cmp.rx.bad_der");
        return Error(ErrorDomain::Codec, 0,
                     req ? "trailing bytes after the PKIMessage" : "body is not a DER PKIMessage");
    }
    int bt = OSSL_CMP_MSG_get_bodytype(req.get());
    const ASN1_OCTET_STRING* tid_os = OSSL_CMP_HDR_get0_transactionID(OSSL_CMP_MSG_get0_header(req.get()));
    Bytes tid = tid_os
                    ? Bytes(ASN1_STRING_get0_data(tid_os), ASN1_STRING_get0_data(tid_os) + ASN1_STRING_length(tid_os))
                    : Bytes{};
    const int64_t now = rc.now;
    auto refuse = [&](int bit, const std::string& text, const char* counter) {
        return im.error_response(req.get(), bit, text, counter);
    };

    // Message-level checks first; a failure is answered with a protected `error` carrying
    // the PKIFailureInfo, and nothing is recorded.
    const auto& palg = view.protection;
    if (!palg.ok) return refuse(OSSL_CMP_PKIFAILUREINFO_badDataFormat, "PKIHeader does not decode", "bad_header");
    if (!palg.present)
        return refuse(OSSL_CMP_PKIFAILUREINFO_badMessageCheck,
                      "request is not protected: sign it with the vendor (ir) or operator (kur, rr) certificate",
                      "unprotected");
    if (palg.nid == NID_id_PasswordBasedMAC || palg.nid == NID_hmac || palg.nid == NID_id_DHBasedMac)
        return refuse(OSSL_CMP_PKIFAILUREINFO_wrongIntegrity,
                      "MAC-based protection (" + palg.name +
                          ") is not accepted: sign the request with the vendor or operator certificate",
                      "wrong_integrity");
    if (const char* w = weak_digest(palg.nid))
        return refuse(OSSL_CMP_PKIFAILUREINFO_badAlg,
                      "message protection " + palg.name + " uses " + w + "; MD5 and SHA-1 are not accepted",
                      "weak_alg_protection");

    // Which certificate signed the message: try the extraCerts (3GPP: the signer first)
    // with each one pinned; the one whose key verifies the protection is the signer.
    std::vector<X509Ptr> extra;
    for (auto& d : view.extra_certs) {
        auto x = im.certificate(d);
        if (!x) {
            extra.clear();  // a malformed certificate: as if the message had none
            break;
        }
        extra.push_back(std::move(x));
    }
    X509* signer = nullptr;
    {
        CtxPtr v(OSSL_CMP_CTX_new(nullptr, nullptr));
        OSSL_CMP_CTX_set_log_cb(v.get(), srv_log_cb);
        for (auto& c : extra) {
            if (X509_check_ca(c.get()) && X509_check_issued(c.get(), c.get()) == X509_V_OK) continue;
            OSSL_CMP_CTX_set1_srvCert(v.get(), c.get());
            if (OSSL_CMP_validate_msg(v.get(), req.get()) == 1) {
                signer = c.get();
                break;
            }
        }
        ERR_clear_error();
    }
    if (!signer)
        return refuse(OSSL_CMP_PKIFAILUREINFO_badMessageCheck,
                      extra.empty()
                          ? "no certificate in extraCerts: the signer certificate must be sent (TS 33.310 9.5)"
                          : "message protection does not verify with the signer certificate in extraCerts",
                      "bad_message_check");
    std::vector<X509*> untrusted;
    untrusted.reserve(extra.size());
    for (auto& c : extra) untrusted.push_back(c.get());

    std::shared_ptr<Session> s;
    auto pol = im.policy();
    const IssuanceProfile* profile = pol->find_profile(rc.profile);
    if (new_transaction_body(bt)) {
        if (!profile)
            return refuse(OSSL_CMP_PKIFAILUREINFO_badRequest,
                          "no certificate profile '" + std::string(rc.profile) + "' at this RA/CA", "unknown_profile");
        if (tid.empty())
            return refuse(OSSL_CMP_PKIFAILUREINFO_badRequest, "PKIHeader has no transactionID", "no_transaction_id");
        if (bt == kIr || bt == kKur) im.purge_expired(now);
        bool want_operator = bt == kKur || bt == kRr;
        SignerKind kind = SignerKind::None;
        auto first = want_operator ? pki::verify_chain(signer, im.operator_store.get(), im.operator_untrusted, now)
                                   : pki::verify_chain(signer, im.vendor_store.get(), untrusted, now);
        if (first.ok())
            kind = want_operator ? SignerKind::Operator : SignerKind::Vendor;
        else if (bt == kGenm && pki::verify_chain(signer, im.operator_store.get(), im.operator_untrusted, now).ok())
            kind = SignerKind::Operator;
        if (kind == SignerKind::None)
            return refuse(
                OSSL_CMP_PKIFAILUREINFO_signerNotTrusted,
                std::string(want_operator ? "operator" : "vendor") +
                    " certificate not accepted: " + first.error().detail(),
                first.error().code() == X509_V_ERR_CERT_HAS_EXPIRED ? "signer_expired" : "signer_not_trusted");
        if (kind == SignerKind::Operator) {
            // An operator certificate this CA revoked authenticates nothing (kur, rr, genm).
            auto rec = im.store.find_by_serial(pki::serial_bytes(X509_get0_serialNumber(signer)));
            if (!rec.ok()) return refuse(OSSL_CMP_PKIFAILUREINFO_systemUnavail, "store unavailable", "store");
            if (rec->has_value() && (*rec)->revoked)
                return refuse(OSSL_CMP_PKIFAILUREINFO_certRevoked,
                              "the signing operator certificate (serial " + pki::serial_hex(signer) + ") is revoked",
                              "signer_revoked");
        }
        int rr_reason = 0;
        if (bt == kRr) {
            auto rr = detail::revocation_reason(der);
            if (!rr.ok)
                return refuse(OSSL_CMP_PKIFAILUREINFO_badDataFormat, "rr body (RevReqContent) does not decode",
                              "bad_rr");
            rr_reason = rr.reason < 0 ? 0 : rr.reason;
        }
        {
            std::lock_guard lk(im.sessions_mu);
            auto in_store = im.store.transaction_exists(tid);
            if (!in_store.ok()) return refuse(OSSL_CMP_PKIFAILUREINFO_systemUnavail, "store unavailable", "store");
            if (im.sessions.count(tid) || *in_store)
                return refuse(OSSL_CMP_PKIFAILUREINFO_transactionIdInUse,
                              "transactionID " + to_hex(tid) + " is already in use", "transaction_id_in_use");
            s = im.make_session(signer, kind, tid, now, pol);
            s->rr_reason = rr_reason;
            s->profile = profile;
            im.sessions[tid] = s;
            s->registered = true;
        }
        static const char* names[] = {"ir",   "ip",     "cr",    "cp",       "p10cr",   "popdecc", "popdecr",
                                      "kur",  "kup",    "krr",   "krp",      "rr",      "rp",      "ccr",
                                      "ccp",  "ckuann", "cann",  "rann",     "crlann",  "pkiconf", "nested",
                                      "genm", "genp",   "error", "certConf", "pollReq", "pollRep"};
        s->body = (bt >= 0 && bt <= 26) ? names[bt] : "?";
    } else {
        {
            std::lock_guard lk(im.sessions_mu);
            auto it = im.sessions.find(tid);
            if (it != im.sessions.end() && it->second->signer && X509_cmp(signer, it->second->signer.get()) == 0)
                s = it->second;
        }
        if (!s && bt == kPollReq && !tid.empty()) s = im.resume_pending(signer, untrusted, tid, now);
        if (!s && bt == kCertConf && !tid.empty()) {
            auto r = im.resume_unconfirmed(req.get(), signer, untrusted, tid, now);
            if (r.bit >= 0) {
                m_counters.inc("cmp.certconf.resume_refused");
                return refuse(r.bit, r.text, r.counter);
            }
            if (r.not_open) m_counters.inc("cmp.certconf.not_open");
            s = std::move(r.s);
        }
        if (!s)
            return refuse(OSSL_CMP_PKIFAILUREINFO_badRequest, "no open transaction " + to_hex(tid) + " for this signer",
                          "no_transaction");
    }

    MsgPtr rsp;
    Bytes encoded;                        // rsp as DER, when a certificate was recorded with it
    std::optional<Result<Bytes>> failed;  // the store refused the record: this error answers
    {
        std::lock_guard lk(s->mu);
        s->now = now;
        s->der = der;
        const bool cert_request = bt == kIr || bt == kCr || bt == kP10cr || bt == kKur || bt == kPollReq;
        for (int attempt = 0;; ++attempt) {
            s->to_record.reset();
            rsp.reset(OSSL_CMP_SRV_process_request(s->srv, req.get()));
            if (!s->to_record) break;
            // A certificate was issued: recorded now that the answer (and its senderNonce) exists,
            // as `implicit` when OpenSSL granted implicitConfirm, in one durable write.
            bool answered = rsp && OSSL_CMP_MSG_get_bodytype(rsp.get()) != kError;
            if (!answered) {  // the client gets no certificate: nothing is recorded
                s->to_record.reset();
                s->issued.reset();
                break;
            }
            OSSL_CMP_CTX* ctx = OSSL_CMP_SRV_CTX_get0_cmp_ctx(s->srv);
            bool implicit = OSSL_CMP_CTX_get_option(ctx, OSSL_CMP_OPT_IMPLICIT_CONFIRM) == 1;
            unsigned char* out = nullptr;
            int n = i2d_OSSL_CMP_MSG(rsp.get(), &out);
            encoded = n > 0 ? Bytes(out, out + n) : Bytes{};
            OPENSSL_free(out);
            auto st = encoded.empty() ? Status(Error(ErrorDomain::Cmp, 0, "cannot encode the CMP response"))
                                      : im.record_answered(*s, implicit, encoded);
            if (st) {
                if (implicit) {
                    m_counters.inc("cmp.implicit_confirm");
                    s->done = true;
                }
                break;
            }
            s->to_record.reset();
            s->issued.reset();
            encoded.clear();
            // A serial already recorded (code 4: by another instance; 16 random octets, so only a
            // broken RNG repeats one) is never reused: the request is answered again, with a new
            // certificate (OpenSSL starts the transaction afresh for an ir/cr/p10cr/kur).
            if (st.error().code() == 4 && bt != kPollReq && attempt < 3) {
                m_counters.inc("cmp.store.serial_collision");
                continue;
            }
            bool dup = st.error().code() == 1;
            im.lg->warn("store: {}", st.error().detail());
            failed = im.error_response(
                req.get(), dup ? OSSL_CMP_PKIFAILUREINFO_transactionIdInUse : OSSL_CMP_PKIFAILUREINFO_systemFailure,
                dup ? "transactionID already used" : "store unavailable", dup ? "transaction_id_in_use" : "store");
            s->done = !s->waiting;
            break;
        }
        s->der = {};
        if (s->issued && !s->done && cert_request) {
            // open until its certConf
        } else if (!s->waiting) {  // a held request stays open for its polls
            s->done = true;
        }
        if (!s->issued && !s->waiting) s->done = true;
    }
    if (s->done && s->registered) {
        std::lock_guard lk(im.sessions_mu);
        auto it = im.sessions.find(tid);
        if (it != im.sessions.end() && it->second == s) im.sessions.erase(it);
    }
    ERR_clear_error();
    if (failed) return std::move(*failed);
    if (!rsp) {
        m_counters.inc("cmp.tx.no_response");
        return Error(ErrorDomain::Cmp, OSSL_CMP_PKIFAILUREINFO_systemFailure, "OpenSSL produced no CMP response");
    }
    int rbt = OSSL_CMP_MSG_get_bodytype(rsp.get());
    if (rbt == kError) m_counters.inc("cmp.tx.error");
    Bytes b = std::move(encoded);
    if (b.empty()) {
        unsigned char* out = nullptr;
        int n = i2d_OSSL_CMP_MSG(rsp.get(), &out);
        if (n <= 0)
            return Error(ErrorDomain::Cmp, OSSL_CMP_PKIFAILUREINFO_systemFailure, "cannot encode the CMP response");
        b.assign(out, out + n);
        OPENSSL_free(out);
    }
    if (rbt == kPkiConf) {
        // The pkiConf closes a transaction whose ip already carried our certificates: RFC 9483
        // 3.3 lets later messages of a transaction omit them (the client keeps the signer it
        // validated for the ip; OpenSSL's client does), and each certificate is a public-key
        // decode for the client.  The protection does not cover extraCerts.
        auto v = detail::view_message(b);
        if (v.ok) {
            m_counters.inc("cmp.tx.pkiconf_lean");
            return std::move(v.without_extra_certs);
        }
    }
    return b;
}

Status Server::revoke(BytesView serial, int reason) {
    return revoke(serial, reason, static_cast<int64_t>(std::time(nullptr)));
}

Status Server::revoke(BytesView serial, int reason, int64_t now) {
    X2SEC_TRY_STATUS(m_impl->store.revoke(serial, reason, now));
    m_impl->crl_dirty = true;
    return ok_status();
}

Result<Bytes> Server::crl_der(int64_t now) {
    return m_impl->current_crl(now);
}

// One CRL for every instance sharing the store: rebuilt (next CRL number) only when a
// revocation was recorded since, by any instance, or after an hour; so the CRL numbers an
// observer sees through a load balancer never go down.
Result<Bytes> Server::Impl::current_crl(int64_t now) {
    auto& im = *this;
    std::lock_guard lk(im.crl_mu);
    im.crl_dirty = false;
    return im.store.current_crl(now, 3600,
                                [&](int64_t number, const std::vector<pki::Revoked>& revoked) -> Result<Bytes> {
                                    X2SEC_TRY(auto crl, pki::issue_crl(im.cfg.ca_cert.get(), im.cfg.ca_key.get(),
                                                                       revoked, number, now - 60, now + 7 * 86400));
                                    return pki::crl_der(crl.get());
                                });
}

}  // namespace x2sec::cmp
