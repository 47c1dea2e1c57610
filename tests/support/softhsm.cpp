#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <x2sec/test/softhsm.hpp>

namespace x2sec::test {

const SoftHsm* SoftHsm::get(std::string* why) {
    static std::once_flag once;
    static SoftHsm* hsm = nullptr;
    static std::string reason;
    std::call_once(once, [] {
        if (access(kModule, R_OK) != 0) {
            reason = std::string(kModule) + " missing (softhsm2 not installed)";
            return;
        }
        if (std::system("command -v softhsm2-util >/dev/null 2>&1") != 0) {
            reason = "softhsm2-util not installed";
            return;
        }
        char tmpl[] = "/tmp/x2sec-softhsm-XXXXXX";
        if (mkdtemp(tmpl) == nullptr) {
            reason = "mkdtemp failed";
            return;
        }
        auto* h = new SoftHsm;
        h->m_dir = tmpl;
        h->m_conf = h->m_dir + "/softhsm2.conf";
        h->m_pin_file = h->m_dir + "/user.pin";
        mkdir((h->m_dir + "/tokens").c_str(), 0700);
        {
            std::ofstream c(h->m_conf);
            c << "directories.tokendir = " << h->m_dir << "/tokens\nobjectstore.backend = file\nlog.level = ERROR\n";
            std::ofstream p(h->m_pin_file);
            p << kPin << "\n";
        }
        chmod(h->m_pin_file.c_str(), 0600);
        setenv("SOFTHSM2_CONF", h->m_conf.c_str(), 1);
        setenv("X2SEC_PKCS11_MODULE", kModule, 1);
        for (const char* t : kTokens) {
            const std::string cmd = std::string("softhsm2-util --init-token --free --label ") + t + " --pin " + kPin +
                                    " --so-pin 87654321 >/dev/null 2>&1";
            if (std::system(cmd.c_str()) != 0) {
                reason = "softhsm2-util --init-token failed for " + std::string(t);
                delete h;
                return;
            }
        }
        hsm = h;
        std::atexit([] {
            std::error_code ec;
            std::filesystem::remove_all(hsm->m_dir, ec);
        });
    });
    if (hsm == nullptr && why != nullptr) *why = reason;
    return hsm;
}

std::string SoftHsm::uri(const std::string& token, const std::string& object) const {
    return "pkcs11:token=" + token + ";object=" + object + "?pin-value=" + kPin;
}

std::string SoftHsm::uri_pin_file(const std::string& token, const std::string& object) const {
    return "pkcs11:token=" + token + ";object=" + object + "?pin-source=file:" + m_pin_file;
}

}  // namespace x2sec::test
