// Shared by the wire-vector generator (gen_wire_vectors) and the one driver that reads the
// vectors back (test_wire_vectors): names of the fields that are checked besides the bytes.
#pragma once

#include <iterator>
#include <string>
#include <vector>
#include <x2sec/ikev2/wire.hpp>

namespace x2sec::test::wirevec {

// "SA KE No N(NAT_DETECTION_SOURCE_IP) ..." — the outer payload chain of an IKE message.
inline std::string payload_list(const std::vector<ike::wire::Payload>& payloads) {
    std::string out;
    for (const auto& p : payloads) {
        if (!out.empty()) out += ' ';
        out += ike::wire::to_string(p.type);
        if (const auto* n = p.as<ike::wire::NotifyPayload>())
            out += std::string("(") + ike::wire::notify::name(n->type) + ")";
        if (const auto* f = p.as<ike::wire::SkfPayload>())
            out += "(" + std::to_string(f->number) + "/" + std::to_string(f->total) + ")";
    }
    return out;
}

// "Ike/INVALID_SYNTAX", "Kds/3": the error a negative vector names.
inline std::string error_name(const Error& e) {
    static const char* const kDomains[] = {"Generic", "Codec", "Crypto", "Ike",    "Esp",
                                           "Pki",     "Cmp",   "Kds",    "Config", "Io"};
    std::string d = size_t(e.domain()) < std::size(kDomains) ? kDomains[size_t(e.domain())] : "?";
    if (e.domain() == ErrorDomain::Ike) return d + "/" + ike::wire::notify::name(uint16_t(e.code()));
    return d + "/" + std::to_string(e.code());
}

}  // namespace x2sec::test::wirevec
