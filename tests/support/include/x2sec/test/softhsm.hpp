// SoftHSM2 tokens for tests: a temporary token directory for this process (SOFTHSM2_CONF and
// X2SEC_PKCS11_MODULE are set before the module is first loaded), with one initialised token
// per label in kTokens, all with user PIN kPin.
//
//   const test::SoftHsm* hsm = test::SoftHsm::get(&why);
//   if (!hsm) GTEST_SKIP() << why;
//   auto k = crypto::generate_token_key(hsm->uri("henb1", "device"), crypto::KeyType::EcP256);
#pragma once

#include <string>

namespace x2sec::test {

class SoftHsm {
public:
    static constexpr const char* kPin = "1234";
    static constexpr const char* kModule = "/usr/lib/softhsm/libsofthsm2.so";
    // Tokens created up front (SoftHSM reads its token directory once per process).
    static constexpr const char* kTokens[] = {"henb1", "henb2", "segw", "ca", "kds", "vendor", "spare", "pin-test"};

    // The process's token directory, created on first call; nullptr (with the reason) when
    // softhsm2-util or the module is missing.
    static const SoftHsm* get(std::string* why);

    // pkcs11:token=<token>;object=<object>?pin-value=1234
    std::string uri(const std::string& token, const std::string& object) const;
    // The same with the PIN in a file (pin-source).
    std::string uri_pin_file(const std::string& token, const std::string& object) const;
    const std::string& dir() const { return m_dir; }
    const std::string& conf() const { return m_conf; }

private:
    std::string m_dir, m_conf, m_pin_file;
};

}  // namespace x2sec::test
