// Opt-in debug key export (`x2sec ike run --debug-keylog DIR`): writes Wireshark's IKEv2
// decryption table and ESP SA table (UAT files `ikev2_decryption_table` and `esp_sa`) so that
// a capture can be decrypted while chasing an interop problem.  Copy them into
// ~/.config/wireshark/ (or pass them with tshark -o uat:...).  Every record written is
// announced with a warning in the log; construction prints a loud banner on stderr.
// The files hold live keys: mode 0600, rewritten atomically on every new record.
#pragma once

#include <mutex>
#include <string>
#include <vector>
#include <x2sec/common/child_sa.hpp>
#include <x2sec/common/result.hpp>
#include <x2sec/ikev2/engine.hpp>

namespace x2sec::runtime {

// One line of each table (exposed for tests).
std::string ikev2_uat_line(const ike::IkeSaKeys& k);
// Two lines: inbound (remote -> local, spi_in) and outbound (local -> remote, spi_out).
std::vector<std::string> esp_uat_lines(const ChildSaParams& p);
const char* esp_uat_encryption_name(EspCipher c);
const char* esp_uat_authentication_name(EspCipher c);

class KeyLogWriter {
public:
    // Creates DIR (0700) if needed and prints the warning banner.
    static Result<std::unique_ptr<KeyLogWriter>> open(const std::string& dir);
    Status add_ike_sa(const ike::IkeSaKeys& keys);
    Status add_child_sa(const ChildSaParams& params);
    std::string ike_table_path() const { return m_dir + "/ikev2_decryption_table"; }
    std::string esp_table_path() const { return m_dir + "/esp_sa"; }
    ~KeyLogWriter();

private:
    explicit KeyLogWriter(std::string dir) : m_dir(std::move(dir)) {}
    Status flush(const std::string& path, const std::vector<std::string>& lines);
    std::mutex m_mutex;
    std::string m_dir;
    std::vector<std::string> m_ike, m_esp;
};

}  // namespace x2sec::runtime
