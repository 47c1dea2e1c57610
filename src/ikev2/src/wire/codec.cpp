// IKEv2 wire codecs: header, payload bodies, the chain walker (rule tables: rules.cpp).
#include <algorithm>
#include <cctype>
#include <x2sec/ikev2/wire.hpp>

namespace x2sec::ike::wire {

Error syntax_error(std::string detail) {
    return Error(ErrorDomain::Ike, notify::InvalidSyntax, std::move(detail));
}

Error critical_error(uint8_t payload_type, std::string detail) {
    return Error(ErrorDomain::Ike, notify::UnsupportedCriticalPayload,
                 "critical payload type " + std::to_string(payload_type) + ": " + detail);
}

std::optional<uint8_t> critical_payload_type(const Error& e) {
    if (e.domain() != ErrorDomain::Ike || e.code() != notify::UnsupportedCriticalPayload) return std::nullopt;
    const std::string key = "critical payload type ";
    auto pos = e.detail().find(key);
    if (pos == std::string::npos) return std::nullopt;
    int v = 0;
    for (size_t i = pos + key.size(); i < e.detail().size() && std::isdigit(static_cast<unsigned char>(e.detail()[i]));
         ++i)
        v = v * 10 + (e.detail()[i] - '0');
    if (v > 255) return std::nullopt;
    return static_cast<uint8_t>(v);
}

const char* to_string(ExchangeType e) {
    switch (e) {
        case ExchangeType::IkeSaInit:
            return "IKE_SA_INIT";
        case ExchangeType::IkeAuth:
            return "IKE_AUTH";
        case ExchangeType::CreateChildSa:
            return "CREATE_CHILD_SA";
        case ExchangeType::Informational:
            return "INFORMATIONAL";
    }
    return "EXCHANGE(?)";
}

const char* to_string(PayloadType p) {
    switch (p) {
        case PayloadType::None:
            return "NONE";
        case PayloadType::SA:
            return "SA";
        case PayloadType::KE:
            return "KE";
        case PayloadType::IDi:
            return "IDi";
        case PayloadType::IDr:
            return "IDr";
        case PayloadType::CERT:
            return "CERT";
        case PayloadType::CERTREQ:
            return "CERTREQ";
        case PayloadType::AUTH:
            return "AUTH";
        case PayloadType::Nonce:
            return "No";
        case PayloadType::Notify:
            return "N";
        case PayloadType::Delete:
            return "D";
        case PayloadType::VendorId:
            return "V";
        case PayloadType::TSi:
            return "TSi";
        case PayloadType::TSr:
            return "TSr";
        case PayloadType::SK:
            return "SK";
        case PayloadType::CP:
            return "CP";
        case PayloadType::EAP:
            return "EAP";
        case PayloadType::SKF:
            return "SKF";
    }
    return "?";
}

const char* notify::name(uint16_t type) {
    switch (type) {
        case UnsupportedCriticalPayload:
            return "UNSUPPORTED_CRITICAL_PAYLOAD";
        case InvalidIkeSpi:
            return "INVALID_IKE_SPI";
        case InvalidMajorVersion:
            return "INVALID_MAJOR_VERSION";
        case InvalidSyntax:
            return "INVALID_SYNTAX";
        case InvalidMessageId:
            return "INVALID_MESSAGE_ID";
        case InvalidSpi:
            return "INVALID_SPI";
        case NoProposalChosen:
            return "NO_PROPOSAL_CHOSEN";
        case InvalidKePayload:
            return "INVALID_KE_PAYLOAD";
        case AuthenticationFailed:
            return "AUTHENTICATION_FAILED";
        case SinglePairRequired:
            return "SINGLE_PAIR_REQUIRED";
        case NoAdditionalSas:
            return "NO_ADDITIONAL_SAS";
        case InternalAddressFailure:
            return "INTERNAL_ADDRESS_FAILURE";
        case FailedCpRequired:
            return "FAILED_CP_REQUIRED";
        case TsUnacceptable:
            return "TS_UNACCEPTABLE";
        case InvalidSelectors:
            return "INVALID_SELECTORS";
        case TemporaryFailure:
            return "TEMPORARY_FAILURE";
        case ChildSaNotFound:
            return "CHILD_SA_NOT_FOUND";
        case InitialContact:
            return "INITIAL_CONTACT";
        case SetWindowSize:
            return "SET_WINDOW_SIZE";
        case AdditionalTsPossible:
            return "ADDITIONAL_TS_POSSIBLE";
        case NatDetectionSourceIp:
            return "NAT_DETECTION_SOURCE_IP";
        case NatDetectionDestinationIp:
            return "NAT_DETECTION_DESTINATION_IP";
        case Cookie:
            return "COOKIE";
        case UseTransportMode:
            return "USE_TRANSPORT_MODE";
        case RekeySa:
            return "REKEY_SA";
        case EspTfcPaddingNotSupported:
            return "ESP_TFC_PADDING_NOT_SUPPORTED";
        case NonFirstFragmentsAlso:
            return "NON_FIRST_FRAGMENTS_ALSO";
        case MobikeSupported:
            return "MOBIKE_SUPPORTED";
        case Ikev2FragmentationSupported:
            return "IKEV2_FRAGMENTATION_SUPPORTED";
        case SignatureHashAlgorithms:
            return "SIGNATURE_HASH_ALGORITHMS";
    }
    return "NOTIFY(other)";
}

// ---------------------------------------------------------------- header

void Header::encode(Writer& w) const {
    w.u64(spi_i);
    w.u64(spi_r);
    w.u8(next_payload);
    w.u8(version);
    w.u8(static_cast<uint8_t>(exchange));
    w.u8(flags);
    w.u32(message_id);
    w.u32(length);
}

Result<Header> Header::decode(BytesView datagram) {
    if (datagram.size() < kHeaderSize)
        return syntax_error("message of " + std::to_string(datagram.size()) + " octets is shorter than the IKE header");
    Reader r(datagram);
    Header h;
    h.spi_i = r.u64();
    h.spi_r = r.u64();
    h.next_payload = r.u8();
    h.version = r.u8();
    h.exchange = static_cast<ExchangeType>(r.u8());
    h.flags = r.u8();
    h.message_id = r.u32();
    h.length = r.u32();
    if ((h.version >> 4) != 2)
        return Error(ErrorDomain::Ike, notify::InvalidMajorVersion,
                     "major version " + std::to_string(h.version >> 4) + " is not 2");
    if (h.length != datagram.size())
        return syntax_error("header length " + std::to_string(h.length) + " does not match datagram size " +
                            std::to_string(datagram.size()));
    return h;
}

// ---------------------------------------------------------------- SA

std::optional<uint16_t> Transform::key_length() const {
    for (const auto& a : attributes)
        if (a.type == kAttrKeyLength && a.tv) return a.value;
    return std::nullopt;
}

Transform Transform::make(TransformType t, uint16_t id, std::optional<uint16_t> key_bits) {
    Transform x;
    x.type = t;
    x.id = id;
    if (key_bits) x.attributes.push_back(Attribute{kAttrKeyLength, true, *key_bits, {}});
    return x;
}

namespace {

template <typename T>
Result<T> finish(Reader& r, T value, const char* what) {
    if (!r.ok()) return syntax_error(std::string(what) + ": " + r.failure());
    return value;
}

}  // namespace

Result<SaPayload> SaPayload::decode(Reader& r) {
    SaPayload sa;
    bool last_seen = false;
    while (!r.empty() && r.ok()) {
        if (last_seen) return syntax_error("SA: data after the last proposal");
        uint8_t last = r.u8();
        r.u8();
        uint16_t plen = r.u16();
        if (!r.ok()) break;
        if (last != 0 && last != 2) return syntax_error("SA: bad proposal substructure type " + std::to_string(last));
        if (plen < 8) return syntax_error("SA: proposal length " + std::to_string(plen) + " too short");
        Reader pr = r.sub(plen - 4u);
        if (!r.ok()) return syntax_error("SA: proposal length " + std::to_string(plen) + " exceeds payload");
        Proposal p;
        p.number = pr.u8();
        p.protocol = static_cast<ProtocolId>(pr.u8());
        uint8_t spi_size = pr.u8();
        uint8_t ntrans = pr.u8();
        p.spi = pr.copy(spi_size);
        for (unsigned i = 0; i < ntrans && pr.ok(); ++i) {
            uint8_t tlast = pr.u8();
            pr.u8();
            uint16_t tlen = pr.u16();
            if (!pr.ok()) break;
            if ((i + 1 < ntrans && tlast != 3) || (i + 1 == ntrans && tlast != 0))
                return syntax_error("SA: transform " + std::to_string(i + 1) + " of " + std::to_string(ntrans) +
                                    " has last-substructure " + std::to_string(tlast));
            if (tlen < 8) return syntax_error("SA: transform length " + std::to_string(tlen) + " too short");
            Reader tr = pr.sub(tlen - 4u);
            if (!pr.ok()) return syntax_error("SA: transform length exceeds proposal");
            Transform t;
            t.type = static_cast<TransformType>(tr.u8());
            tr.u8();
            t.id = tr.u16();
            while (!tr.empty() && tr.ok()) {
                uint16_t at = tr.u16();
                Attribute a;
                a.tv = (at & 0x8000) != 0;
                a.type = at & 0x7fff;
                if (a.tv) {
                    a.value = tr.u16();
                } else {
                    uint16_t alen = tr.u16();
                    a.data = tr.copy(alen);
                }
                t.attributes.push_back(std::move(a));
            }
            if (!tr.ok()) return syntax_error("SA: transform attributes: " + tr.failure());
            p.transforms.push_back(std::move(t));
        }
        if (!pr.ok()) return syntax_error("SA: proposal: " + pr.failure());
        if (!pr.empty())
            return syntax_error("SA: proposal has " + std::to_string(pr.remaining()) + " octets after its transforms");
        sa.proposals.push_back(std::move(p));
        last_seen = last == 0;
    }
    if (r.ok() && !last_seen) return syntax_error("SA: last proposal not marked last");
    return finish(r, std::move(sa), "SA");
}

void SaPayload::encode(Writer& w) const {
    for (size_t i = 0; i < proposals.size(); ++i) {
        const auto& p = proposals[i];
        w.u8(i + 1 == proposals.size() ? 0 : 2);
        w.u8(0);
        auto plen = w.reserve16();
        size_t pstart = plen.field - 2;
        w.u8(p.number);
        w.u8(static_cast<uint8_t>(p.protocol));
        w.u8(static_cast<uint8_t>(p.spi.size()));
        w.u8(static_cast<uint8_t>(p.transforms.size()));
        w.bytes(p.spi);
        for (size_t j = 0; j < p.transforms.size(); ++j) {
            const auto& t = p.transforms[j];
            w.u8(j + 1 == p.transforms.size() ? 0 : 3);
            w.u8(0);
            auto tlen = w.reserve16();
            size_t tstart = tlen.field - 2;
            w.u8(static_cast<uint8_t>(t.type));
            w.u8(0);
            w.u16(t.id);
            for (const auto& a : t.attributes) {
                if (a.tv) {
                    w.u16(static_cast<uint16_t>(0x8000 | a.type));
                    w.u16(a.value);
                } else {
                    w.u16(a.type & 0x7fff);
                    w.u16(static_cast<uint16_t>(a.data.size()));
                    w.bytes(a.data);
                }
            }
            w.patch(tlen, tstart);
        }
        w.patch(plen, pstart);
    }
}

Status SaPayload::validate() const {
    if (proposals.empty()) return syntax_error("SA payload without proposals");
    for (size_t i = 0; i < proposals.size(); ++i) {
        const auto& p = proposals[i];
        if (p.protocol != ProtocolId::Ike && p.protocol != ProtocolId::Esp && p.protocol != ProtocolId::Ah)
            return syntax_error("SA: proposal " + std::to_string(p.number) + " has protocol " +
                                std::to_string(static_cast<int>(p.protocol)));
        if (p.protocol == ProtocolId::Ike && !p.spi.empty() && p.spi.size() != 8)
            return syntax_error("SA: IKE proposal SPI size " + std::to_string(p.spi.size()));
        if (p.protocol != ProtocolId::Ike && p.spi.size() != 4)
            return syntax_error("SA: ESP/AH proposal SPI size " + std::to_string(p.spi.size()));
        if (p.transforms.empty())
            return syntax_error("SA: proposal " + std::to_string(p.number) + " has no transforms");
        if (i > 0 && p.number != proposals[i - 1].number && p.number != proposals[i - 1].number + 1)
            return syntax_error("SA: proposal numbers not consecutive");
    }
    return {};
}

// ---------------------------------------------------------------- simple payloads

Result<KePayload> KePayload::decode(Reader& r) {
    KePayload k;
    k.group = r.u16();
    r.u16();
    k.data = r.copy(r.remaining());
    return finish(r, std::move(k), "KE");
}
void KePayload::encode(Writer& w) const {
    w.u16(group);
    w.u16(0);
    w.bytes(data);
}
Status KePayload::validate() const {
    if (data.empty()) return syntax_error("KE payload without key exchange data");
    return {};
}

Result<IdPayload> IdPayload::decode(Reader& r) {
    IdPayload p;
    p.id_type = r.u8();
    r.skip(3);
    p.data = r.copy(r.remaining());
    return finish(r, std::move(p), "ID");
}
void IdPayload::encode(Writer& w) const {
    w.u8(id_type);
    w.zeros(3);
    w.bytes(data);
}
Status IdPayload::validate() const {
    if (data.empty()) return syntax_error("ID payload with empty identification data");
    if (id_type == 1 && data.size() != 4)
        return syntax_error("ID_IPV4_ADDR of " + std::to_string(data.size()) + " octets");
    if (id_type == 5 && data.size() != 16)
        return syntax_error("ID_IPV6_ADDR of " + std::to_string(data.size()) + " octets");
    return {};
}

Result<CertPayload> CertPayload::decode(Reader& r) {
    CertPayload p;
    p.encoding = r.u8();
    p.data = r.copy(r.remaining());
    return finish(r, std::move(p), "CERT");
}
void CertPayload::encode(Writer& w) const {
    w.u8(encoding);
    w.bytes(data);
}
Status CertPayload::validate() const {
    if (data.empty()) return syntax_error("CERT payload without data");
    return {};
}

Result<CertReqPayload> CertReqPayload::decode(Reader& r) {
    CertReqPayload p;
    p.encoding = r.u8();
    p.data = r.copy(r.remaining());
    return finish(r, std::move(p), "CERTREQ");
}
void CertReqPayload::encode(Writer& w) const {
    w.u8(encoding);
    w.bytes(data);
}
Status CertReqPayload::validate() const {
    // 4: CA SPKI hashes; 14 (OCSP Content, RFC 4806 3.1): trusted responders' key hashes, or none.
    if ((encoding == 4 || encoding == 14) && data.size() % 20 != 0)
        return syntax_error("CERTREQ (encoding " + std::to_string(encoding) + "): " + std::to_string(data.size()) +
                            " octets is not a list of SHA-1 hashes");
    return {};
}
std::vector<Bytes> CertReqPayload::hashes() const {
    std::vector<Bytes> out;
    if (encoding != 4) return out;
    for (size_t i = 0; i + 20 <= data.size(); i += 20)
        out.emplace_back(data.begin() + long(i), data.begin() + long(i) + 20);
    return out;
}

Result<AuthPayload> AuthPayload::decode(Reader& r) {
    AuthPayload p;
    p.method = r.u8();
    r.skip(3);
    p.data = r.copy(r.remaining());
    return finish(r, std::move(p), "AUTH");
}
void AuthPayload::encode(Writer& w) const {
    w.u8(method);
    w.zeros(3);
    w.bytes(data);
}
Status AuthPayload::validate() const {
    if (data.empty()) return syntax_error("AUTH payload without authentication data");
    return {};
}

Result<NoncePayload> NoncePayload::decode(Reader& r) {
    NoncePayload p;
    p.data = r.copy(r.remaining());
    return finish(r, std::move(p), "Nonce");
}
void NoncePayload::encode(Writer& w) const {
    w.bytes(data);
}
Status NoncePayload::validate() const {
    if (data.size() < 16 || data.size() > 256)
        return syntax_error("nonce of " + std::to_string(data.size()) + " octets (must be 16..256)");
    return {};
}

Result<NotifyPayload> NotifyPayload::decode(Reader& r) {
    NotifyPayload p;
    p.protocol = static_cast<ProtocolId>(r.u8());
    uint8_t spi_size = r.u8();
    p.type = r.u16();
    p.spi = r.copy(spi_size);
    p.data = r.copy(r.remaining());
    return finish(r, std::move(p), "Notify");
}
void NotifyPayload::encode(Writer& w) const {
    w.u8(static_cast<uint8_t>(protocol));
    w.u8(static_cast<uint8_t>(spi.size()));
    w.u16(type);
    w.bytes(spi);
    w.bytes(data);
}
Status NotifyPayload::validate() const {
    if (!spi.empty() && spi.size() != 4 && spi.size() != 8)
        return syntax_error("Notify " + std::string(notify::name(type)) + " with SPI size " +
                            std::to_string(spi.size()));
    if (type == notify::Cookie && (data.empty() || data.size() > 64))
        return syntax_error("COOKIE of " + std::to_string(data.size()) + " octets (must be 1..64)");
    if ((type == notify::NatDetectionSourceIp || type == notify::NatDetectionDestinationIp) && data.size() != 20)
        return syntax_error(std::string(notify::name(type)) + " of " + std::to_string(data.size()) + " octets");
    if (type == notify::InvalidKePayload && data.size() != 2)
        return syntax_error("INVALID_KE_PAYLOAD with " + std::to_string(data.size()) + " octets of data");
    if (type == notify::SignatureHashAlgorithms && data.size() % 2 != 0)
        return syntax_error("SIGNATURE_HASH_ALGORITHMS with odd length");
    if (type == notify::RekeySa && spi.size() != 4) return syntax_error("REKEY_SA without a 4-octet SPI");
    return {};
}

Result<DeletePayload> DeletePayload::decode(Reader& r) {
    DeletePayload p;
    p.protocol = static_cast<ProtocolId>(r.u8());
    p.spi_size = r.u8();
    uint16_t n = r.u16();
    if (!r.ok()) return syntax_error("Delete: " + r.failure());
    if (size_t(n) * p.spi_size != r.remaining())
        return syntax_error("Delete: " + std::to_string(n) + " SPIs of " + std::to_string(p.spi_size) +
                            " octets do not fill " + std::to_string(r.remaining()) + " octets");
    for (unsigned i = 0; i < n; ++i) p.spis.push_back(r.copy(p.spi_size));
    return finish(r, std::move(p), "Delete");
}
void DeletePayload::encode(Writer& w) const {
    w.u8(static_cast<uint8_t>(protocol));
    w.u8(spi_size);
    w.u16(static_cast<uint16_t>(spis.size()));
    for (const auto& s : spis) w.bytes(s);
}
Status DeletePayload::validate() const {
    if (protocol == ProtocolId::Ike) {
        if (spi_size != 0 || !spis.empty()) return syntax_error("Delete of the IKE SA must carry no SPIs");
    } else if (protocol == ProtocolId::Esp || protocol == ProtocolId::Ah) {
        if (spi_size != 4) return syntax_error("Delete: ESP/AH SPI size " + std::to_string(spi_size));
    } else {
        return syntax_error("Delete: protocol " + std::to_string(static_cast<int>(protocol)));
    }
    return {};
}

Result<VendorIdPayload> VendorIdPayload::decode(Reader& r) {
    VendorIdPayload p;
    p.data = r.copy(r.remaining());
    return finish(r, std::move(p), "Vendor ID");
}
void VendorIdPayload::encode(Writer& w) const {
    w.bytes(data);
}
Status VendorIdPayload::validate() const {
    return {};
}

Result<TsPayload> TsPayload::decode(Reader& r) {
    TsPayload p;
    uint8_t n = r.u8();
    r.skip(3);
    for (unsigned i = 0; i < n && r.ok(); ++i) {
        uint8_t type = r.u8();
        TrafficSelector ts;
        ts.ip_protocol = r.u8();
        uint16_t len = r.u16();
        if (!r.ok()) break;
        if (type == 7 && len == 16) {
            ts.start_port = r.u16();
            ts.end_port = r.u16();
            auto a = r.bytes(4), b = r.bytes(4);
            if (!r.ok()) break;
            std::copy(a.begin(), a.end(), ts.start_addr.bytes.begin());
            std::copy(b.begin(), b.end(), ts.end_addr.bytes.begin());
        } else if (type == 8 && len == 40) {
            ts.start_port = r.u16();
            ts.end_port = r.u16();
            auto a = r.bytes(16), b = r.bytes(16);
            if (!r.ok()) break;
            ts.start_addr.v6 = ts.end_addr.v6 = true;
            std::copy(a.begin(), a.end(), ts.start_addr.bytes.begin());
            std::copy(b.begin(), b.end(), ts.end_addr.bytes.begin());
        } else {
            return syntax_error("TS: selector type " + std::to_string(type) + " with length " + std::to_string(len));
        }
        p.selectors.push_back(ts);
    }
    if (r.ok() && !r.empty())
        return syntax_error("TS: " + std::to_string(r.remaining()) + " octets after the selectors");
    return finish(r, std::move(p), "TS");
}
void TsPayload::encode(Writer& w) const {
    w.u8(static_cast<uint8_t>(selectors.size()));
    w.zeros(3);
    for (const auto& ts : selectors) {
        w.u8(ts.start_addr.v6 ? 8 : 7);
        w.u8(ts.ip_protocol);
        w.u16(ts.start_addr.v6 ? 40 : 16);
        w.u16(ts.start_port);
        w.u16(ts.end_port);
        w.bytes(ts.start_addr.view());
        w.bytes(ts.end_addr.view());
    }
}
Status TsPayload::validate() const {
    if (selectors.empty()) return syntax_error("TS payload without selectors");
    for (const auto& ts : selectors) {
        if (ts.start_addr.v6 != ts.end_addr.v6) return syntax_error("TS: mixed address families");
        if (ts.start_port > ts.end_port && !(ts.start_port == 65535 && ts.end_port == 0))
            return syntax_error("TS: start port above end port");
    }
    return {};
}

Result<CpPayload> CpPayload::decode(Reader& r) {
    CpPayload p;
    p.cfg_type = r.u8();
    r.skip(3);
    while (r.ok() && !r.empty()) {
        Attr a;
        a.type = r.u16() & 0x7fff;
        uint16_t len = r.u16();
        a.value = r.copy(len);
        p.attributes.push_back(std::move(a));
    }
    return finish(r, std::move(p), "CP");
}
void CpPayload::encode(Writer& w) const {
    w.u8(cfg_type);
    w.zeros(3);
    for (const auto& a : attributes) {
        w.u16(a.type & 0x7fff);
        w.u16(static_cast<uint16_t>(a.value.size()));
        w.bytes(a.value);
    }
}
Status CpPayload::validate() const {
    if (cfg_type < 1 || cfg_type > 4) return syntax_error("CP: configuration type " + std::to_string(cfg_type));
    return {};
}

Result<SkPayload> SkPayload::decode(Reader& r) {
    SkPayload p;
    p.data = r.copy(r.remaining());
    return finish(r, std::move(p), "SK");
}
void SkPayload::encode(Writer& w) const {
    w.bytes(data);
}
Status SkPayload::validate() const {
    if (data.empty()) return syntax_error("empty SK payload");
    return {};
}

Result<SkfPayload> SkfPayload::decode(Reader& r) {
    SkfPayload p;
    p.number = r.u16();
    p.total = r.u16();
    p.data = r.copy(r.remaining());
    return finish(r, std::move(p), "SKF");
}
void SkfPayload::encode(Writer& w) const {
    w.u16(number);
    w.u16(total);
    w.bytes(data);
}
Status SkfPayload::validate() const {
    if (number == 0 || total == 0 || number > total)
        return syntax_error("SKF: fragment " + std::to_string(number) + " of " + std::to_string(total));
    if (data.empty()) return syntax_error("empty SKF payload");
    if (number != 1 && inner_next != 0) return syntax_error("SKF: non-first fragment with a next payload");
    return {};
}

// ---------------------------------------------------------------- chain walker

namespace {

template <typename T>
Result<PayloadBody> decode_as(Reader& r) {
    auto v = T::decode(r);
    if (!v.ok()) return std::move(v).error();
    if (!r.ok()) return syntax_error(r.failure());
    auto st = v->validate();
    if (!st.ok()) return st.error();
    return PayloadBody(std::move(v).value());
}

bool is_known(uint8_t t) {
    return (t >= 33 && t <= 47) || t == 53;
}

Result<PayloadBody> decode_body(uint8_t type, Reader& r) {
    switch (static_cast<PayloadType>(type)) {
        case PayloadType::SA:
            return decode_as<SaPayload>(r);
        case PayloadType::KE:
            return decode_as<KePayload>(r);
        case PayloadType::IDi:
        case PayloadType::IDr:
            return decode_as<IdPayload>(r);
        case PayloadType::CERT:
            return decode_as<CertPayload>(r);
        case PayloadType::CERTREQ:
            return decode_as<CertReqPayload>(r);
        case PayloadType::AUTH:
            return decode_as<AuthPayload>(r);
        case PayloadType::Nonce:
            return decode_as<NoncePayload>(r);
        case PayloadType::Notify:
            return decode_as<NotifyPayload>(r);
        case PayloadType::Delete:
            return decode_as<DeletePayload>(r);
        case PayloadType::VendorId:
            return decode_as<VendorIdPayload>(r);
        case PayloadType::TSi:
        case PayloadType::TSr:
            return decode_as<TsPayload>(r);
        case PayloadType::CP:
            return decode_as<CpPayload>(r);
        case PayloadType::SK:
            return decode_as<SkPayload>(r);
        case PayloadType::SKF:
            return decode_as<SkfPayload>(r);
        default:
            break;
    }
    UnknownPayload u;
    u.type = type;
    u.data = r.copy(r.remaining());
    return PayloadBody(std::move(u));
}

}  // namespace

Result<std::vector<Payload>> decode_chain(BytesView data, uint8_t first) {
    std::vector<Payload> out;
    Reader r(data);
    uint8_t next = first;
    size_t index = 0;
    while (next != 0) {
        if (++index > 256) return syntax_error("more than 256 payloads");
        uint8_t type = next;
        if (r.remaining() < kGenericHeaderSize)
            return syntax_error(std::string("payload ") + std::to_string(index) + " (type " + std::to_string(type) +
                                ") truncated: " + std::to_string(r.remaining()) + " octets left");
        next = r.u8();
        uint8_t flags = r.u8();
        uint16_t len = r.u16();
        bool critical = (flags & 0x80) != 0;
        if (len < kGenericHeaderSize || len - kGenericHeaderSize > r.remaining())
            return syntax_error("payload type " + std::to_string(type) + " length " + std::to_string(len) +
                                " does not fit the " + std::to_string(r.remaining() + kGenericHeaderSize) +
                                " octets left");
        Reader body = r.sub(len - kGenericHeaderSize);
        if (!is_known(type)) {
            if (critical) return critical_error(type, "not supported");
            Payload p;
            p.type = static_cast<PayloadType>(type);
            p.critical = false;
            auto rest = body.rest();
            p.body = UnknownPayload{type, Bytes(rest.begin(), rest.end())};
            out.push_back(std::move(p));
            continue;
        }
        auto decoded = decode_body(type, body);
        if (!decoded.ok()) {
            Error e = std::move(decoded).error();
            e.context(std::string(to_string(static_cast<PayloadType>(type))) + " payload");
            return e;
        }
        Payload p;
        p.type = static_cast<PayloadType>(type);
        p.critical = critical;
        p.body = std::move(decoded).value();
        if (auto* sk = p.as<SkPayload>()) {
            sk->inner_next = next;
            if (!r.empty()) return syntax_error("SK payload is not the last payload");
            out.push_back(std::move(p));
            return out;
        }
        if (auto* skf = p.as<SkfPayload>()) {
            skf->inner_next = next;
            if (skf->number != 1 && next != 0) return syntax_error("SKF: non-first fragment with a next payload");
            if (!r.empty()) return syntax_error("SKF payload is not the last payload");
            out.push_back(std::move(p));
            return out;
        }
        out.push_back(std::move(p));
    }
    if (!r.empty()) return syntax_error(std::to_string(r.remaining()) + " octets after the last payload");
    return out;
}

namespace {
uint8_t wire_type(const Payload& p) {
    if (auto* u = p.as<UnknownPayload>()) return u->type;
    return static_cast<uint8_t>(p.type);
}
}  // namespace

uint8_t encode_chain(Writer& w, const std::vector<Payload>& payloads) {
    for (size_t i = 0; i < payloads.size(); ++i) {
        const auto& p = payloads[i];
        uint8_t next = i + 1 < payloads.size() ? wire_type(payloads[i + 1]) : 0;
        if (auto* sk = p.as<SkPayload>()) next = sk->inner_next;
        if (auto* skf = p.as<SkfPayload>()) next = skf->inner_next;
        size_t start = w.size();
        w.u8(next);
        w.u8(p.critical ? 0x80 : 0);
        auto len = w.reserve16();
        std::visit(
            [&](const auto& body) {
                using T = std::decay_t<decltype(body)>;
                if constexpr (std::is_same_v<T, UnknownPayload>)
                    w.bytes(body.data);
                else
                    body.encode(w);
            },
            p.body);
        w.patch(len, start);
    }
    return payloads.empty() ? 0 : wire_type(payloads.front());
}

Result<Message> Message::decode(BytesView datagram) {
    X2SEC_TRY(auto h, Header::decode(datagram));
    Message m;
    m.header = h;
    X2SEC_TRY(m.payloads, decode_chain(datagram.subspan(kHeaderSize), h.next_payload));
    return m;
}

Bytes Message::encode() const {
    Writer w;
    Header h = header;
    h.next_payload = payloads.empty() ? 0 : wire_type(payloads.front());
    h.encode(w);
    encode_chain(w, payloads);
    w.patch_u32(24, static_cast<uint32_t>(w.size()));
    return w.take();
}

namespace {
const char* transform_type_name(TransformType t) {
    switch (t) {
        case TransformType::Encr:
            return "ENCR";
        case TransformType::Prf:
            return "PRF";
        case TransformType::Integ:
            return "INTEG";
        case TransformType::Dh:
            return "DH";
        case TransformType::Esn:
            return "ESN";
    }
    return "transform type ?";
}
Error not_chosen(std::string detail) {
    return Error(ErrorDomain::Ike, notify::NoProposalChosen, std::move(detail));
}
}  // namespace

Status check_chosen_proposal(const SaPayload& offered, const SaPayload& chosen, size_t spi_size) {
    if (chosen.proposals.size() != 1)
        return not_chosen("responder answered " + std::to_string(chosen.proposals.size()) + " proposals (must be one)");
    const Proposal& c = chosen.proposals[0];
    const Proposal* o = nullptr;
    for (const auto& p : offered.proposals)
        if (p.number == c.number) o = &p;
    if (!o) return not_chosen("responder chose proposal #" + std::to_string(c.number) + ", which we did not offer");
    if (o->protocol != c.protocol)
        return not_chosen("responder chose proposal #" + std::to_string(c.number) + " with protocol " +
                          std::to_string(static_cast<int>(c.protocol)) + ", we offered " +
                          std::to_string(static_cast<int>(o->protocol)));
    if (c.spi.size() != spi_size)
        return not_chosen("responder's proposal #" + std::to_string(c.number) + " has an SPI of " +
                          std::to_string(c.spi.size()) + " octets (must be " + std::to_string(spi_size) + ")");
    for (auto t :
         {TransformType::Encr, TransformType::Prf, TransformType::Integ, TransformType::Dh, TransformType::Esn}) {
        size_t n_offered = 0, n_chosen = 0;
        for (const auto& x : o->transforms) n_offered += x.type == t;
        for (const auto& x : c.transforms) n_chosen += x.type == t;
        if (n_offered == 0 && n_chosen != 0)
            return not_chosen(std::string("responder chose a ") + transform_type_name(t) + " transform; proposal #" +
                              std::to_string(c.number) + " offered none");
        if (n_offered != 0 && n_chosen != 1)
            return not_chosen("responder chose " + std::to_string(n_chosen) + " " + transform_type_name(t) +
                              " transforms in proposal #" + std::to_string(c.number) + " (must be exactly one)");
    }
    for (const auto& x : c.transforms) {
        if (std::find(o->transforms.begin(), o->transforms.end(), x) == o->transforms.end()) {
            auto bits = x.key_length();
            return not_chosen(std::string("responder chose ") + transform_type_name(x.type) + " transform " +
                              std::to_string(x.id) + (bits ? "/" + std::to_string(*bits) : std::string()) +
                              ", not offered in proposal #" + std::to_string(c.number));
        }
    }
    return {};
}

const Payload* find_payload(const std::vector<Payload>& payloads, PayloadType t) {
    for (const auto& p : payloads)
        if (p.type == t && !p.as<UnknownPayload>()) return &p;
    return nullptr;
}

const NotifyPayload* find_notify(const std::vector<Payload>& payloads, uint16_t type) {
    for (const auto& p : payloads)
        if (auto* n = p.as<NotifyPayload>(); n && n->type == type) return n;
    return nullptr;
}

}  // namespace x2sec::ike::wire
