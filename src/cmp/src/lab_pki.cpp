#include <ctime>
#include <stdexcept>
#include <x2sec/cmp/lab_pki.hpp>

namespace x2sec::cmp {
namespace {
template <typename T>
T must(Result<T> r, const char* what) {
    if (!r) throw std::runtime_error(std::string(what) + ": " + r.error().detail());
    return std::move(r).value();
}
}  // namespace

std::vector<X509*> LabCredential::chain_ptrs() const {
    std::vector<X509*> v;
    for (auto& c : chain) v.push_back(c.get());
    return v;
}

LabCa make_root_ca(const std::string& name, pki::KeyAlg alg) {
    LabCa ca;
    ca.key = must(pki::generate_key(alg), "root key");
    auto n = must(pki::parse_name("/O=" + name + "/CN=" + name + " Root CA"), "root name");
    pki::IssueRequest r;
    r.profile = pki::Profile::RootCa;
    r.subject = n.get();
    r.public_key = ca.key.get();
    r.validity_days = 3650;
    ca.cert = must(pki::issue_certificate(r, nullptr, ca.key.get()), "root cert");
    return ca;
}

LabPki make_lab_pki(pki::KeyAlg alg) {
    LabPki p;
    p.vendor_a = make_root_ca("Vendor A", alg);
    p.vendor_b = make_root_ca("Vendor B", alg);
    p.operator_root = make_root_ca("Operator", alg);
    p.operator_issuing.key = must(pki::generate_key(alg), "issuing key");
    auto in = must(pki::parse_name("/O=Operator/CN=Operator Issuing CA"), "name");
    pki::IssueRequest i;
    i.profile = pki::Profile::IntermediateCa;
    i.subject = in.get();
    i.public_key = p.operator_issuing.key.get();
    p.operator_issuing.cert =
        must(pki::issue_certificate(i, p.operator_root.cert.get(), p.operator_root.key.get()), "issuing");
    p.ra.key = must(pki::generate_key(alg), "ra key");
    auto rn = must(pki::parse_name("/O=Operator/CN=Operator CMP RA"), "name");
    pki::IssueRequest r;
    r.profile = pki::Profile::Server;
    r.subject = rn.get();
    r.public_key = p.ra.key.get();
    r.dns = {"localhost"};
    r.ips = {"127.0.0.1"};
    p.ra.cert = must(pki::issue_certificate(r, p.operator_issuing.cert.get(), p.operator_issuing.key.get()), "ra");
    p.ra.chain.push_back(pki::up_ref(p.operator_issuing.cert.get()));
    p.ra.chain.push_back(pki::up_ref(p.operator_root.cert.get()));
    return p;
}

LabCredential LabPki::device(const LabCa& vendor, const std::string& eui, const std::string& realm,
                             int64_t not_before_offset_s, int64_t lifetime_s) const {
    LabCredential d;
    d.key = must(pki::generate_key(pki::KeyAlg::EcP256), "device key");
    auto id = must(pki::make_identity(eui, realm), "identity");
    auto n = must(pki::parse_name("/O=Vendor/CN=" + id), "name");
    pki::IssueRequest r;
    r.profile = pki::Profile::Device;
    r.subject = n.get();
    r.public_key = d.key.get();
    r.dns = {id};
    int64_t now = static_cast<int64_t>(std::time(nullptr));
    r.not_before = now + not_before_offset_s;
    r.not_after = now + not_before_offset_s + lifetime_s;
    d.cert = must(pki::issue_certificate(r, vendor.cert.get(), vendor.key.get()), "device cert");
    d.chain.push_back(pki::up_ref(vendor.cert.get()));
    return d;
}

ServerConfig LabPki::server_config(bool with_vendor_b) const {
    ServerConfig c;
    c.ca_cert = pki::up_ref(operator_issuing.cert.get());
    c.ca_key = pki::up_ref(operator_issuing.key.get());
    c.ca_chain.push_back(pki::up_ref(operator_root.cert.get()));
    c.ra_cert = pki::up_ref(ra.cert.get());
    c.ra_key = pki::up_ref(ra.key.get());
    c.ra_chain.push_back(pki::up_ref(operator_issuing.cert.get()));
    c.ra_chain.push_back(pki::up_ref(operator_root.cert.get()));
    c.vendor_roots.push_back(pki::up_ref(vendor_a.cert.get()));
    if (with_vendor_b) c.vendor_roots.push_back(pki::up_ref(vendor_b.cert.get()));
    c.policy.crl_urls = {"http://127.0.0.1:8080/crl"};
    return c;
}

}  // namespace x2sec::cmp
