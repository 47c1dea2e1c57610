// `x2sec demo --keys pkcs11`: every H(e)NB gets its own SoftHSM2 token (the TrE) in the demo's
// work directory; its vendor key is generated in the token (the factory step) and so is the
// operator key at CMPv2 enrolment.  Keys never leave the tokens; the credentials carry the keys'
// pkcs11: URIs.
#include <sys/stat.h>

#include <cstdlib>
#include <x2sec/common/file.hpp>
#include <x2sec/crypto/pkcs11.hpp>
#include <x2sec/pki/pki.hpp>

#include "demo_world.hpp"

namespace x2sec::scenario::detail {

namespace {
constexpr const char* kSoftHsmModule = "/usr/lib/softhsm/libsofthsm2.so";
constexpr const char* kDemoPin = "246810";
}  // namespace

Result<DemoTokens> make_demo_tokens(const std::string& dir, const std::vector<std::string>& henbs) {
    if (::access(kSoftHsmModule, R_OK) != 0)
        return Error(ErrorDomain::Config, 0,
                     std::string("--keys pkcs11: ") + kSoftHsmModule + " missing (install softhsm2)");
    DemoTokens t;
    const std::string tokdir = dir + "/softhsm-tokens";
    ::mkdir(tokdir.c_str(), 0700);
    t.conf = dir + "/softhsm2.conf";
    t.pin_file = dir + "/token.pin";
    X2SEC_TRY_STATUS(write_file_atomic(
        t.conf, "directories.tokendir = " + tokdir + "\nobjectstore.backend = file\nlog.level = ERROR\n", 0600));
    X2SEC_TRY_STATUS(write_file_atomic(t.pin_file, std::string(kDemoPin) + "\n", 0600));
    // The module reads its configuration when it is first loaded, in this process after this.
    ::setenv("SOFTHSM2_CONF", t.conf.c_str(), 1);
    ::setenv("X2SEC_PKCS11_MODULE", kSoftHsmModule, 1);
    for (const auto& h : henbs) {
        const std::string label = "x2sec-" + h;
        const std::string cmd = "softhsm2-util --init-token --free --label '" + label + "' --pin " + kDemoPin +
                                " --so-pin " + kDemoPin + "0 >/dev/null 2>&1";
        if (std::system(cmd.c_str()) != 0)
            return Error(ErrorDomain::Config, 0, "--keys pkcs11: softhsm2-util --init-token failed for " + label);
        t.token[h] = label;
    }
    return t;
}

std::string DemoTokens::uri(const std::string& henb, const std::string& object) const {
    auto it = token.find(henb);
    if (it == token.end()) return {};
    return "pkcs11:token=" + it->second + ";object=" + object + "?pin-source=file:" + pin_file;
}

Result<LabCredential> issue_in_token(LabCa& ca, const std::string& fqdn, int64_t nb, int days,
                                     const std::string& token_uri) {
    X2SEC_TRY(auto key, pki::generate_key(pki::KeyAlg::EcP256, token_uri));
    X2SEC_TRY(auto ref, pki::private_key_pem(key.get()));  // the key's URI
    return ca.issue_for_key(fqdn, key.get(), std::move(ref), nb, days);
}

}  // namespace x2sec::scenario::detail
