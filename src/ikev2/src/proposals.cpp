// Proposal encoding and selection (RFC 7296 3.3), traffic-selector narrowing (2.9).
#include <algorithm>
#include <cstring>

#include "engine_internal.hpp"

namespace x2sec::ike {

using namespace wire;

std::string encr_name(const EncrAlg& e) {
    if (e.id == crypto::EncrId::AesGcm16) return "AES_GCM_16_" + std::to_string(e.key_bits);
    return "AES_CBC_" + std::to_string(e.key_bits);
}
const char* integ_name(crypto::IntegId i) {
    switch (i) {
        case crypto::IntegId::None:
            return "";
        case crypto::IntegId::HmacSha2_256_128:
            return "HMAC_SHA2_256_128";
        case crypto::IntegId::HmacSha2_384_192:
            return "HMAC_SHA2_384_192";
        case crypto::IntegId::HmacSha2_512_256:
            return "HMAC_SHA2_512_256";
    }
    return "?";
}
const char* prf_name(crypto::PrfId p) {
    switch (p) {
        case crypto::PrfId::HmacSha2_256:
            return "PRF_HMAC_SHA2_256";
        case crypto::PrfId::HmacSha2_384:
            return "PRF_HMAC_SHA2_384";
        case crypto::PrfId::HmacSha2_512:
            return "PRF_HMAC_SHA2_512";
    }
    return "?";
}

std::string ike_algs_name(const IkeAlgorithms& a) {
    std::string s = encr_name(a.encr);
    if (a.integ != crypto::IntegId::None) s += std::string("/") + integ_name(a.integ);
    return s + "/" + prf_name(a.prf) + "/" + crypto::dh_group_name(a.dh);
}

Proposal ike_proposal_to_wire(const IkeProposal& p, uint8_t number, BytesView spi) {
    Proposal w;
    w.number = number;
    w.protocol = ProtocolId::Ike;
    w.spi.assign(spi.begin(), spi.end());
    for (const auto& e : p.encr)
        w.transforms.push_back(
            Transform::make(TransformType::Encr, static_cast<uint16_t>(e.id), static_cast<uint16_t>(e.key_bits)));
    for (auto i : p.integ) w.transforms.push_back(Transform::make(TransformType::Integ, static_cast<uint16_t>(i)));
    for (auto f : p.prf) w.transforms.push_back(Transform::make(TransformType::Prf, static_cast<uint16_t>(f)));
    for (auto d : p.dh) w.transforms.push_back(Transform::make(TransformType::Dh, static_cast<uint16_t>(d)));
    return w;
}

namespace {

bool has(const Proposal& p, TransformType t, uint16_t id, std::optional<uint16_t> key = std::nullopt) {
    for (const auto& x : p.transforms)
        if (x.type == t && x.id == id && (!key || x.key_length() == key)) return true;
    return false;
}
bool has_type(const Proposal& p, TransformType t) {
    for (const auto& x : p.transforms)
        if (x.type == t) return true;
    return false;
}
// Only transform types and attributes we know; an unknown attribute makes a transform
// unusable (RFC 7296 3.3.6).
bool sane_transform(const Transform& t) {
    for (const auto& a : t.attributes)
        if (a.type != kAttrKeyLength) return false;
    return true;
}

}  // namespace

std::optional<IkeAlgorithms> select_ike(const std::vector<IkeProposal>& mine, const SaPayload& theirs,
                                        std::optional<uint16_t> ke_group, uint8_t* number,
                                        crypto::DhGroup* preferred_group) {
    std::optional<IkeAlgorithms> fallback;  // matched except for the KE group
    uint8_t fallback_number = 0;
    for (const auto& mp : mine) {
        for (const auto& tp : theirs.proposals) {
            if (tp.protocol != ProtocolId::Ike) continue;
            bool bad = false;
            for (const auto& t : tp.transforms) bad |= !sane_transform(t);
            IkeAlgorithms a;
            bool ok_e = false, ok_i = false, ok_p = false;
            for (const auto& e : mp.encr)
                if (has(tp, TransformType::Encr, static_cast<uint16_t>(e.id), static_cast<uint16_t>(e.key_bits))) {
                    a.encr = e;
                    ok_e = true;
                    break;
                }
            if (!ok_e || bad) continue;
            if (a.encr.id == crypto::EncrId::AesGcm16) {
                ok_i = !has_type(tp, TransformType::Integ) || has(tp, TransformType::Integ, 0);
                a.integ = crypto::IntegId::None;
            } else {
                for (auto i : mp.integ)
                    if (has(tp, TransformType::Integ, static_cast<uint16_t>(i))) {
                        a.integ = i;
                        ok_i = true;
                        break;
                    }
            }
            for (auto f : mp.prf)
                if (has(tp, TransformType::Prf, static_cast<uint16_t>(f))) {
                    a.prf = f;
                    ok_p = true;
                    break;
                }
            if (!ok_i || !ok_p) continue;
            // DH: the KE group if acceptable, else remember our preferred common group.
            std::optional<crypto::DhGroup> common;
            bool ke_ok = false;
            for (auto d : mp.dh) {
                if (!has(tp, TransformType::Dh, static_cast<uint16_t>(d))) continue;
                if (!common) common = d;
                if (ke_group && *ke_group == static_cast<uint16_t>(d)) {
                    a.dh = d;
                    ke_ok = true;
                }
            }
            if (!common) continue;
            if (ke_ok || !ke_group) {
                if (!ke_group) a.dh = *common;
                if (number) *number = tp.number;
                return a;
            }
            if (!fallback) {
                a.dh = *common;
                fallback = a;
                fallback_number = tp.number;
            }
        }
    }
    if (fallback && preferred_group) *preferred_group = fallback->dh;
    (void)fallback_number;
    return std::nullopt;
}

std::optional<IkeAlgorithms> parse_ike_choice(const SaPayload& sa, Bytes* spi) {
    if (sa.proposals.size() != 1) return std::nullopt;
    const auto& p = sa.proposals[0];
    if (p.protocol != ProtocolId::Ike) return std::nullopt;
    IkeAlgorithms a;
    int ne = 0, ni = 0, np = 0, nd = 0;
    for (const auto& t : p.transforms) {
        switch (t.type) {
            case TransformType::Encr:
                a.encr = EncrAlg{static_cast<crypto::EncrId>(t.id), t.key_length().value_or(0)};
                ++ne;
                break;
            case TransformType::Integ:
                a.integ = static_cast<crypto::IntegId>(t.id);
                ++ni;
                break;
            case TransformType::Prf:
                a.prf = static_cast<crypto::PrfId>(t.id);
                ++np;
                break;
            case TransformType::Dh:
                a.dh = static_cast<crypto::DhGroup>(t.id);
                ++nd;
                break;
            default:
                return std::nullopt;
        }
    }
    if (ne != 1 || np != 1 || nd != 1 || ni > 1) return std::nullopt;
    if (spi) *spi = p.spi;
    return a;
}

namespace {
uint16_t esp_encr_id(EspCipher c) {
    return (c == EspCipher::AesGcm16_128 || c == EspCipher::AesGcm16_256) ? 20 : 12;
}
uint16_t esp_key_bits(EspCipher c) {
    return (c == EspCipher::AesGcm16_128 || c == EspCipher::AesCbc128_HmacSha256_128) ? 128 : 256;
}
bool esp_aead(EspCipher c) {
    return esp_encr_id(c) == 20;
}
Bytes spi_bytes(uint32_t spi) {
    return Bytes{uint8_t(spi >> 24), uint8_t(spi >> 16), uint8_t(spi >> 8), uint8_t(spi)};
}
}  // namespace

std::vector<Proposal> child_proposals_to_wire(const ChildConfig& c, uint32_t spi, bool with_dh) {
    std::vector<Proposal> out;
    uint8_t num = 1;
    for (const auto& cp : c.proposals) {
        for (bool aead : {true, false}) {
            Proposal p;
            p.protocol = ProtocolId::Esp;
            p.spi = spi_bytes(spi);
            for (auto ci : cp.ciphers)
                if (esp_aead(ci) == aead)
                    p.transforms.push_back(Transform::make(TransformType::Encr, esp_encr_id(ci), esp_key_bits(ci)));
            if (p.transforms.empty()) continue;
            if (!aead) p.transforms.push_back(Transform::make(TransformType::Integ, 12));
            if (with_dh)
                for (auto d : cp.pfs)
                    p.transforms.push_back(Transform::make(TransformType::Dh, static_cast<uint16_t>(d)));
            for (bool e : cp.esn) p.transforms.push_back(Transform::make(TransformType::Esn, e ? 1 : 0));
            p.number = num++;
            out.push_back(std::move(p));
        }
    }
    return out;
}

std::optional<ChildChoice> select_child(const ChildConfig& c, const SaPayload& theirs, bool allow_dh,
                                        std::optional<uint16_t> ke_group,
                                        std::optional<crypto::DhGroup>* wanted_group) {
    for (const auto& cp : c.proposals) {
        for (const auto& tp : theirs.proposals) {
            if (tp.protocol != ProtocolId::Esp || tp.spi.size() != 4) continue;
            bool bad = false;
            for (const auto& t : tp.transforms) bad |= !sane_transform(t);
            if (bad) continue;
            ChildChoice ch;
            bool found = false;
            for (auto ci : cp.ciphers) {
                if (!has(tp, TransformType::Encr, esp_encr_id(ci), esp_key_bits(ci))) continue;
                if (esp_aead(ci)) {
                    if (has_type(tp, TransformType::Integ) && !has(tp, TransformType::Integ, 0)) continue;
                } else if (!has(tp, TransformType::Integ, 12)) {
                    continue;
                }
                ch.cipher = ci;
                found = true;
                break;
            }
            if (!found) continue;
            // ESN: absent means "no ESN".
            bool esn_found = false;
            for (bool e : cp.esn) {
                bool offered = has_type(tp, TransformType::Esn) ? has(tp, TransformType::Esn, e ? 1 : 0) : !e;
                if (offered) {
                    ch.esn = e;
                    esn_found = true;
                    break;
                }
            }
            if (!esn_found) continue;
            // PFS.
            bool peer_dh = false;
            for (const auto& t : tp.transforms) peer_dh |= t.type == TransformType::Dh && t.id != 0;
            if (!allow_dh || cp.pfs.empty()) {
                if (peer_dh && allow_dh && !has(tp, TransformType::Dh, 0)) continue;
            } else {
                std::optional<crypto::DhGroup> common;
                bool ke_ok = false;
                for (auto d : cp.pfs) {
                    if (!has(tp, TransformType::Dh, static_cast<uint16_t>(d))) continue;
                    if (!common) common = d;
                    if (ke_group && *ke_group == static_cast<uint16_t>(d)) {
                        ch.dh = d;
                        ke_ok = true;
                    }
                }
                if (!common) continue;
                if (!ke_ok) {
                    if (wanted_group && !*wanted_group) *wanted_group = *common;
                    continue;
                }
            }
            ch.number = tp.number;
            ch.peer_spi =
                (uint32_t(tp.spi[0]) << 24) | (uint32_t(tp.spi[1]) << 16) | (uint32_t(tp.spi[2]) << 8) | tp.spi[3];
            return ch;
        }
    }
    return std::nullopt;
}

Proposal child_choice_to_wire(const ChildChoice& c, uint32_t my_spi) {
    Proposal p;
    p.number = c.number;
    p.protocol = ProtocolId::Esp;
    p.spi = spi_bytes(my_spi);
    p.transforms.push_back(Transform::make(TransformType::Encr, esp_encr_id(c.cipher), esp_key_bits(c.cipher)));
    if (!esp_aead(c.cipher)) p.transforms.push_back(Transform::make(TransformType::Integ, 12));
    if (c.dh) p.transforms.push_back(Transform::make(TransformType::Dh, static_cast<uint16_t>(*c.dh)));
    p.transforms.push_back(Transform::make(TransformType::Esn, c.esn ? 1 : 0));
    return p;
}

std::optional<ChildChoice> parse_child_choice(const SaPayload& sa) {
    if (sa.proposals.size() != 1) return std::nullopt;
    const auto& p = sa.proposals[0];
    if (p.protocol != ProtocolId::Esp || p.spi.size() != 4) return std::nullopt;
    ChildChoice c;
    c.number = p.number;
    c.peer_spi = (uint32_t(p.spi[0]) << 24) | (uint32_t(p.spi[1]) << 16) | (uint32_t(p.spi[2]) << 8) | p.spi[3];
    std::optional<uint16_t> encr, bits, integ;
    for (const auto& t : p.transforms) {
        switch (t.type) {
            case TransformType::Encr:
                encr = t.id;
                bits = t.key_length();
                break;
            case TransformType::Integ:
                integ = t.id;
                break;
            case TransformType::Dh:
                if (t.id != 0) c.dh = static_cast<crypto::DhGroup>(t.id);
                break;
            case TransformType::Esn:
                c.esn = t.id == 1;
                break;
            default:
                return std::nullopt;
        }
    }
    if (!encr || !bits) return std::nullopt;
    if (*encr == 20 && (!integ || *integ == 0))
        c.cipher = *bits == 128 ? EspCipher::AesGcm16_128 : EspCipher::AesGcm16_256;
    else if (*encr == 12 && integ == 12)
        c.cipher = *bits == 128 ? EspCipher::AesCbc128_HmacSha256_128 : EspCipher::AesCbc256_HmacSha256_128;
    else
        return std::nullopt;
    if ((*bits != 128 && *bits != 256)) return std::nullopt;
    return c;
}

std::vector<TrafficSelector> narrow(const std::vector<TrafficSelector>& proposed,
                                    const std::vector<TrafficSelector>& allowed) {
    std::vector<TrafficSelector> out;
    for (const auto& p : proposed) {
        for (const auto& a : allowed) {
            if (p.start_addr.v6 != a.start_addr.v6) continue;
            if (p.ip_protocol != 0 && a.ip_protocol != 0 && p.ip_protocol != a.ip_protocol) continue;
            TrafficSelector t;
            t.ip_protocol = p.ip_protocol ? p.ip_protocol : a.ip_protocol;
            t.start_port = std::max(p.start_port, a.start_port);
            t.end_port = std::min(p.end_port, a.end_port);
            if (t.start_port > t.end_port) continue;
            size_t n = p.start_addr.size();
            t.start_addr =
                std::memcmp(p.start_addr.bytes.data(), a.start_addr.bytes.data(), n) >= 0 ? p.start_addr : a.start_addr;
            t.end_addr =
                std::memcmp(p.end_addr.bytes.data(), a.end_addr.bytes.data(), n) <= 0 ? p.end_addr : a.end_addr;
            if (std::memcmp(t.start_addr.bytes.data(), t.end_addr.bytes.data(), n) > 0) continue;
            if (std::find(out.begin(), out.end(), t) == out.end()) out.push_back(t);
        }
    }
    return out;
}

namespace {
bool opaque_ports(const TrafficSelector& t) {
    return t.start_port > t.end_port;
}  // OPAQUE: 65535..0
bool within(const TrafficSelector& g, const TrafficSelector& p) {
    if (g.start_addr.v6 != p.start_addr.v6 || g.end_addr.v6 != p.end_addr.v6) return false;
    if (p.ip_protocol != 0 && g.ip_protocol != p.ip_protocol) return false;
    if (opaque_ports(g) || opaque_ports(p)) {
        bool p_any = p.start_port == 0 && p.end_port == 65535;
        if (!(opaque_ports(g) && opaque_ports(p)) && !p_any) return false;
    } else if (g.start_port < p.start_port || g.end_port > p.end_port) {
        return false;
    }
    size_t n = g.start_addr.size();
    return std::memcmp(g.start_addr.bytes.data(), p.start_addr.bytes.data(), n) >= 0 &&
           std::memcmp(g.end_addr.bytes.data(), p.end_addr.bytes.data(), n) <= 0 &&
           std::memcmp(g.start_addr.bytes.data(), g.end_addr.bytes.data(), n) <= 0;
}
}  // namespace

bool ts_subset(const std::vector<TrafficSelector>& got, const std::vector<TrafficSelector>& proposed) {
    if (got.empty()) return false;
    for (const auto& g : got)
        if (std::none_of(proposed.begin(), proposed.end(), [&](const TrafficSelector& p) { return within(g, p); }))
            return false;
    return true;
}

std::string ts_text(const std::vector<TrafficSelector>& ts) {
    std::string out;
    for (const auto& t : ts) out += (out.empty() ? "" : ", ") + t.to_string();
    return out.empty() ? "(none)" : out;
}

bool proposals_allow(const std::vector<IkeProposal>& proposals, const IkeAlgorithms& algs) {
    for (const auto& prop : proposals) {
        bool e_ok = std::find(prop.encr.begin(), prop.encr.end(), algs.encr) != prop.encr.end();
        bool i_ok = algs.encr.id == crypto::EncrId::AesGcm16
                        ? algs.integ == crypto::IntegId::None
                        : std::find(prop.integ.begin(), prop.integ.end(), algs.integ) != prop.integ.end();
        bool p_ok = std::find(prop.prf.begin(), prop.prf.end(), algs.prf) != prop.prf.end();
        bool d_ok = std::find(prop.dh.begin(), prop.dh.end(), algs.dh) != prop.dh.end();
        if (e_ok && i_ok && p_ok && d_ok) return true;
    }
    return false;
}

}  // namespace x2sec::ike
