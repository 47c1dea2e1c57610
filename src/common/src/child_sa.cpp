#include <arpa/inet.h>
#include <cstring>
#include <x2sec/common/child_sa.hpp>

namespace x2sec {

std::optional<IpAddress> IpAddress::parse(const std::string& text) {
    IpAddress a;
    if (::inet_pton(AF_INET, text.c_str(), a.bytes.data()) == 1) return a;
    if (::inet_pton(AF_INET6, text.c_str(), a.bytes.data()) == 1) {
        a.v6 = true;
        return a;
    }
    return std::nullopt;
}

IpAddress IpAddress::v4(uint8_t a, uint8_t b, uint8_t c, uint8_t d) {
    IpAddress ip;
    ip.bytes[0] = a;
    ip.bytes[1] = b;
    ip.bytes[2] = c;
    ip.bytes[3] = d;
    return ip;
}

std::string IpAddress::to_string() const {
    char buf[INET6_ADDRSTRLEN] = {};
    ::inet_ntop(v6 ? AF_INET6 : AF_INET, bytes.data(), buf, sizeof(buf));
    return buf;
}

TrafficSelector TrafficSelector::from_prefix(const IpAddress& addr, unsigned prefix_len, uint8_t proto,
                                             uint16_t port_lo, uint16_t port_hi) {
    TrafficSelector ts;
    ts.ip_protocol = proto;
    ts.start_port = port_lo;
    ts.end_port = port_hi;
    ts.start_addr = addr;
    ts.end_addr = addr;
    unsigned bits = static_cast<unsigned>(addr.size() * 8);
    if (prefix_len > bits) prefix_len = bits;
    for (unsigned i = prefix_len; i < bits; ++i) {
        uint8_t mask = static_cast<uint8_t>(0x80u >> (i % 8));
        ts.start_addr.bytes[i / 8] &= static_cast<uint8_t>(~mask);
        ts.end_addr.bytes[i / 8] |= mask;
    }
    return ts;
}

bool TrafficSelector::contains(const IpAddress& a, uint8_t proto, uint16_t port) const {
    if (a.v6 != start_addr.v6) return false;
    if (ip_protocol != 0 && proto != ip_protocol) return false;
    if (port < start_port || port > end_port) return false;
    return std::memcmp(a.bytes.data(), start_addr.bytes.data(), a.size()) >= 0 &&
           std::memcmp(a.bytes.data(), end_addr.bytes.data(), a.size()) <= 0;
}

std::string TrafficSelector::to_string() const {
    std::string s = start_addr.to_string();
    if (end_addr != start_addr) {
        // Print as a prefix when the range is one.
        unsigned bits = static_cast<unsigned>(start_addr.size() * 8), len = bits;
        for (unsigned p = 0; p <= bits; ++p) {
            if (from_prefix(start_addr, p).start_addr == start_addr &&
                from_prefix(start_addr, p).end_addr == end_addr) {
                len = p;
                break;
            }
        }
        if (len < bits || from_prefix(start_addr, len).end_addr == end_addr)
            s += "/" + std::to_string(len);
        else
            s += "-" + end_addr.to_string();
    } else {
        s += start_addr.v6 ? "/128" : "/32";
    }
    if (ip_protocol != 0 || start_port != 0 || end_port != 65535) {
        s += "[";
        switch (ip_protocol) {
            case 0:
                s += "any";
                break;
            case 6:
                s += "tcp";
                break;
            case 17:
                s += "udp";
                break;
            case 132:
                s += "sctp";
                break;
            case 1:
                s += "icmp";
                break;
            default:
                s += std::to_string(ip_protocol);
        }
        if (start_port != 0 || end_port != 65535) {
            s += "/" + std::to_string(start_port);
            if (end_port != start_port) s += "-" + std::to_string(end_port);
        }
        s += "]";
    }
    return s;
}

const char* to_string(EspCipher c) {
    switch (c) {
        case EspCipher::AesGcm16_128:
            return "AES_GCM_16_128";
        case EspCipher::AesGcm16_256:
            return "AES_GCM_16_256";
        case EspCipher::AesCbc128_HmacSha256_128:
            return "AES_CBC_128/HMAC_SHA2_256_128";
        case EspCipher::AesCbc256_HmacSha256_128:
            return "AES_CBC_256/HMAC_SHA2_256_128";
    }
    return "?";
}

size_t esp_encr_key_size(EspCipher c) {
    switch (c) {
        case EspCipher::AesGcm16_128:
            return 16 + 4;
        case EspCipher::AesGcm16_256:
            return 32 + 4;
        case EspCipher::AesCbc128_HmacSha256_128:
            return 16;
        case EspCipher::AesCbc256_HmacSha256_128:
            return 32;
    }
    return 0;
}

size_t esp_integ_key_size(EspCipher c) {
    switch (c) {
        case EspCipher::AesGcm16_128:
        case EspCipher::AesGcm16_256:
            return 0;
        case EspCipher::AesCbc128_HmacSha256_128:
        case EspCipher::AesCbc256_HmacSha256_128:
            return 32;
    }
    return 0;
}

const char* to_string(ChildSaExpiry e) {
    return e == ChildSaExpiry::Hard ? "hard" : "soft";
}

Status MemoryChildSaBackend::install(const ChildSaParams& params) {
    std::lock_guard lock(m_mutex);
    if (m_sas.count(params.spi_in))
        return Error(ErrorDomain::Esp, 0, "inbound SPI already installed: " + std::to_string(params.spi_in));
    m_sas.emplace(params.spi_in, params);
    ++m_installs;
    return {};
}

Status MemoryChildSaBackend::remove(uint32_t spi_in) {
    std::lock_guard lock(m_mutex);
    if (m_sas.erase(spi_in) == 0) return Error(ErrorDomain::Esp, 0, "no such inbound SPI: " + std::to_string(spi_in));
    ++m_removes;
    return {};
}

Status MemoryChildSaBackend::set_outbound(uint32_t, uint32_t new_spi_in) {
    std::lock_guard lock(m_mutex);
    if (!m_sas.count(new_spi_in))
        return Error(ErrorDomain::Esp, 0, "no such inbound SPI: " + std::to_string(new_spi_in));
    return {};
}

std::vector<uint32_t> MemoryChildSaBackend::installed_spis() const {
    std::lock_guard lock(m_mutex);
    std::vector<uint32_t> out;
    for (const auto& [spi, _] : m_sas) out.push_back(spi);
    return out;
}

std::optional<ChildSaParams> MemoryChildSaBackend::find(uint32_t spi_in) const {
    std::lock_guard lock(m_mutex);
    auto it = m_sas.find(spi_in);
    if (it == m_sas.end()) return std::nullopt;
    return it->second;
}

}  // namespace x2sec
