#include <x2sec/runtime/keylog.hpp>

#include <cstdio>
#include <filesystem>
#include <x2sec/common/file.hpp>
#include <x2sec/common/log.hpp>

namespace x2sec::runtime {

namespace {

constexpr size_t kMaxRecords = 10000;  // oldest records are dropped beyond this

std::string uat_quote(const std::string& s) {
    return "\"" + s + "\"";
}

std::string spi_hex64(uint64_t v) {
    char b[17];
    std::snprintf(b, sizeof b, "%016llx", static_cast<unsigned long long>(v));
    return b;
}

std::string spi_hex32(uint32_t v) {
    char b[11];
    std::snprintf(b, sizeof b, "0x%08x", v);
    return b;
}

std::string key_hex(const SecureBytes& k) {
    return to_hex(BytesView(k.data(), k.size()));
}

}  // namespace

// Wireshark's packet-isakmp.c UAT "ikev2_decryption_table": Initiator's SPI, Responder's SPI
// (16 hex digits each), SK_ei, SK_er, encryption algorithm, SK_ai, SK_ar, integrity algorithm.
// The SPIs and keys are UAT "hex bytes" fields, which Wireshark reads only unquoted (a quoted
// field is taken as a string: "Length of Initiator's SPI must be 8 octets"); the algorithm
// names are enumerated strings and are quoted.
std::string ikev2_uat_line(const ike::IkeSaKeys& k) {
    return spi_hex64(k.spi_i) + "," + spi_hex64(k.spi_r) + "," + key_hex(k.sk_ei) + "," + key_hex(k.sk_er) + "," +
           uat_quote(k.encr_name) + "," + key_hex(k.sk_ai) + "," + key_hex(k.sk_ar) + "," +
           uat_quote(k.integ_name.empty() ? "NONE [RFC4306]" : k.integ_name);
}

// Wireshark's packet-ipsec.c UAT "esp_sa": Protocol, Src IP, Dest IP, SPI, Encryption,
// Encryption Key, Authentication, Authentication Key.  All are string fields there (the keys
// and the SPI as "0x..." text), so all are quoted.
const char* esp_uat_encryption_name(EspCipher c) {
    switch (c) {
        case EspCipher::AesGcm16_128:
        case EspCipher::AesGcm16_256:
            return "AES-GCM with 16 octet ICV [RFC4106]";
        case EspCipher::AesCbc128_HmacSha256_128:
        case EspCipher::AesCbc256_HmacSha256_128:
            return "AES-CBC [RFC3602]";
    }
    return "NULL";
}

const char* esp_uat_authentication_name(EspCipher c) {
    switch (c) {
        case EspCipher::AesGcm16_128:
        case EspCipher::AesGcm16_256:
            return "NULL";
        case EspCipher::AesCbc128_HmacSha256_128:
        case EspCipher::AesCbc256_HmacSha256_128:
            return "HMAC-SHA-256-128 [RFC4868]";
    }
    return "NULL";
}

std::vector<std::string> esp_uat_lines(const ChildSaParams& p) {
    const char* proto = p.local_addr.v6 ? "IPv6" : "IPv4";
    auto line = [&](const IpAddress& src, const IpAddress& dst, uint32_t spi, const DirectionKeys& k) {
        bool aead = p.cipher == EspCipher::AesGcm16_128 || p.cipher == EspCipher::AesGcm16_256;
        std::string auth_key = !aead && k.integ_key.size() ? "0x" + key_hex(k.integ_key) : "";
        return uat_quote(proto) + "," + uat_quote(src.to_string()) + "," + uat_quote(dst.to_string()) + "," +
               uat_quote(spi_hex32(spi)) + "," + uat_quote(esp_uat_encryption_name(p.cipher)) + "," +
               uat_quote("0x" + key_hex(k.enc_key)) + "," + uat_quote(esp_uat_authentication_name(p.cipher)) + "," +
               uat_quote(auth_key);
    };
    return {line(p.remote_addr, p.local_addr, p.spi_in, p.keys_in),
            line(p.local_addr, p.remote_addr, p.spi_out, p.keys_out)};
}

Result<std::unique_ptr<KeyLogWriter>> KeyLogWriter::open(const std::string& dir) {
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    if (ec) return Error(ErrorDomain::Io, ec.value(), "creating key log directory " + dir + ": " + ec.message());
    std::filesystem::permissions(dir, std::filesystem::perms::owner_all, ec);
    std::fprintf(stderr,
                 "\n"
                 "************************************************************************\n"
                 "*  WARNING: --debug-keylog is on.  IKE and ESP SESSION KEYS are being   *\n"
                 "*  written to %s\n"
                 "*  Anyone who reads these files can decrypt this node's traffic.        *\n"
                 "*  Use only while debugging, never in production; delete them after.    *\n"
                 "************************************************************************\n\n",
                 dir.c_str());
    log::get("runtime")->warn("DEBUG KEY LOG ENABLED: IKE and ESP keys are written to {} (Wireshark UAT files)", dir);
    return std::unique_ptr<KeyLogWriter>(new KeyLogWriter(dir));
}

KeyLogWriter::~KeyLogWriter() {
    for (auto& l : m_ike) secure_zero(l.data(), l.size());
    for (auto& l : m_esp) secure_zero(l.data(), l.size());
}

Status KeyLogWriter::flush(const std::string& path, const std::vector<std::string>& lines) {
    std::string text = "# Written by x2sec --debug-keylog: LIVE KEYS, delete after use.\n";
    for (const auto& l : lines) text += l + "\n";
    auto st = write_file_atomic(path, text, 0600);
    secure_zero(text.data(), text.size());
    return st;
}

Status KeyLogWriter::add_ike_sa(const ike::IkeSaKeys& keys) {
    std::lock_guard lock(m_mutex);
    if (m_ike.size() >= kMaxRecords) m_ike.erase(m_ike.begin());
    m_ike.push_back(ikev2_uat_line(keys));
    log::get("runtime")->warn("debug key log: IKE SA keys {}_i {}_r written to {}", spi_hex64(keys.spi_i),
                              spi_hex64(keys.spi_r), ike_table_path());
    return flush(ike_table_path(), m_ike);
}

Status KeyLogWriter::add_child_sa(const ChildSaParams& params) {
    std::lock_guard lock(m_mutex);
    for (auto& l : esp_uat_lines(params)) {
        if (m_esp.size() >= kMaxRecords) m_esp.erase(m_esp.begin());
        m_esp.push_back(std::move(l));
    }
    log::get("runtime")->warn("debug key log: ESP SA keys {} / {} ({}) written to {}", spi_hex32(params.spi_in),
                              spi_hex32(params.spi_out), params.name, esp_table_path());
    return flush(esp_table_path(), m_esp);
}

}  // namespace x2sec::runtime
