#include <algorithm>
#include <map>
#include <x2sec/common/codec.hpp>
#include <x2sec/kds/protocol.hpp>

namespace x2sec::kds {

const char* to_string(MsgType t) {
    switch (t) {
        case MsgType::KeyRequest:
            return "KeyRequest";
        case MsgType::KeyResponse:
            return "KeyResponse";
        case MsgType::Error:
            return "Error";
    }
    return "?";
}

const char* to_string(ErrorCode c) {
    switch (c) {
        case ErrorCode::Malformed:
            return "MALFORMED";
        case ErrorCode::UnsupportedVersion:
            return "UNSUPPORTED_VERSION";
        case ErrorCode::UnknownClient:
            return "UNKNOWN_CLIENT";
        case ErrorCode::UnauthorisedPair:
            return "UNAUTHORISED_PAIR";
        case ErrorCode::IdentityMismatch:
            return "IDENTITY_MISMATCH";
        case ErrorCode::UnknownPeer:
            return "UNKNOWN_PEER";
        case ErrorCode::Internal:
            return "INTERNAL";
        case ErrorCode::CertificateRevoked:
            return "CERTIFICATE_REVOKED";
        case ErrorCode::CertificateExpired:
            return "CERTIFICATE_EXPIRED";
        case ErrorCode::RevocationUnavailable:
            return "REVOCATION_UNAVAILABLE";
    }
    return "?";
}

bool valid_identity(std::string_view id) {
    if (id.empty() || id.size() > kMaxIdentity) return false;
    return std::all_of(id.begin(), id.end(), [](char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '-';
    });
}

namespace {

constexpr size_t kMaxErrorText = 512;

// Strict UTF-8 (RFC 3629): no overlong forms, no surrogates, nothing above U+10FFFF.  Returns
// the length of the longest valid prefix of at most `limit` octets.
size_t utf8_valid_prefix(std::string_view s, size_t limit) {
    size_t i = 0, n = std::min(s.size(), limit);
    while (i < n) {
        auto c = static_cast<unsigned char>(s[i]);
        size_t len = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xe ? 3 : (c >> 3) == 0x1e ? 4 : 0;
        if (len == 0 || i + len > n) break;
        uint32_t cp = len == 1 ? c : len == 2 ? (c & 0x1fu) : len == 3 ? (c & 0x0fu) : (c & 0x07u);
        bool ok = true;
        for (size_t k = 1; k < len && ok; ++k) {
            auto cc = static_cast<unsigned char>(s[i + k]);
            ok = (cc & 0xc0) == 0x80;
            cp = (cp << 6) | (cc & 0x3fu);
        }
        static constexpr uint32_t kMin[5] = {0, 0, 0x80, 0x800, 0x10000};
        if (!ok || cp < kMin[len] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) break;
        i += len;
    }
    return i;
}
bool valid_utf8(std::string_view s) {
    return utf8_valid_prefix(s, s.size()) == s.size();
}

void tlv(Writer& w, TlvType t, BytesView v) {
    w.u16(static_cast<uint16_t>(t));
    w.u16(static_cast<uint16_t>(v.size()));
    w.bytes(v);
}
void tlv_u32(Writer& w, TlvType t, uint32_t v) {
    uint8_t b[4] = {uint8_t(v >> 24), uint8_t(v >> 16), uint8_t(v >> 8), uint8_t(v)};
    tlv(w, t, b);
}
void tlv_u16(Writer& w, TlvType t, uint16_t v) {
    uint8_t b[2] = {uint8_t(v >> 8), uint8_t(v)};
    tlv(w, t, b);
}
void tlv_str(Writer& w, TlvType t, std::string_view s) {
    tlv(w, t, as_bytes(s));
}

Error malformed(std::string detail) {
    return Error(ErrorDomain::Kds, static_cast<int>(ErrorCode::Malformed), std::move(detail));
}

bool known_tlv(uint16_t t) {
    return t >= 1 && t <= 13;
}

struct Tlvs {
    std::map<uint16_t, BytesView> v;
    const BytesView* get(TlvType t) const {
        auto it = v.find(static_cast<uint16_t>(t));
        return it == v.end() ? nullptr : &it->second;
    }
};

Result<uint32_t> need_u32(const Tlvs& t, TlvType type, const char* name) {
    auto p = t.get(type);
    if (!p) return malformed(std::string("missing ") + name);
    if (p->size() != 4) return malformed(std::string(name) + " must be 4 octets");
    Reader r(*p);
    return r.u32();
}

Result<std::string> need_identity(const Tlvs& t, TlvType type, const char* name) {
    auto p = t.get(type);
    if (!p) return malformed(std::string("missing ") + name);
    std::string s(p->begin(), p->end());
    if (!valid_identity(s)) return malformed(std::string(name) + " is not a valid identity");
    return s;
}

Result<Bytes> need_fixed(const Tlvs& t, TlvType type, const char* name, size_t n) {
    auto p = t.get(type);
    if (!p) return malformed(std::string("missing ") + name);
    if (p->size() != n)
        return malformed(std::string(name) + " must be " + std::to_string(n) + " octets, got " +
                         std::to_string(p->size()));
    return Bytes(p->begin(), p->end());
}

}  // namespace

SecureBytes encode(const Message& m) {
    Bytes initial;
    initial.reserve(kHeaderSize + kMaxBody);  // no reallocation: no stray key copies
    Writer w(std::move(initial));
    w.u8(kVersion);
    uint8_t type = 0;
    std::visit(
        [&](const auto& msg) {
            using T = std::decay_t<decltype(msg)>;
            if constexpr (std::is_same_v<T, KeyRequest>)
                type = uint8_t(MsgType::KeyRequest);
            else if constexpr (std::is_same_v<T, KeyResponse>)
                type = uint8_t(MsgType::KeyResponse);
            else
                type = uint8_t(MsgType::Error);
        },
        m);
    w.u8(type);
    w.u16(0);
    auto len = w.reserve32();
    size_t body_start = w.size();
    std::visit(
        [&](const auto& msg) {
            using T = std::decay_t<decltype(msg)>;
            tlv_u32(w, TlvType::RequestId, msg.request_id);
            if constexpr (std::is_same_v<T, KeyRequest>) {
                tlv_str(w, TlvType::Requester, msg.requester);
                tlv_str(w, TlvType::Peer, msg.peer);
                uint8_t flags = msg.rekey ? 1 : 0;
                tlv(w, TlvType::Flags, BytesView(&flags, 1));
                if (!msg.previous_key_id.empty()) tlv(w, TlvType::PreviousKeyId, msg.previous_key_id);
            } else if constexpr (std::is_same_v<T, KeyResponse>) {
                tlv(w, TlvType::KeyId, msg.key_id);
                tlv(w, TlvType::Key, msg.key.view());
                tlv_u32(w, TlvType::Lifetime, msg.lifetime_s);
                tlv_u32(w, TlvType::Generation, msg.generation);
                tlv_str(w, TlvType::IdentityA, msg.identity_a);
                tlv_str(w, TlvType::IdentityB, msg.identity_b);
            } else {
                tlv_u16(w, TlvType::ErrorCode, static_cast<uint16_t>(msg.code));
                // At most kMaxErrorText octets of valid UTF-8 (cut at a character boundary; anything
                // from the first invalid octet on is dropped), so that every Error we send decodes.
                std::string_view text = msg.text;
                text = text.substr(0, utf8_valid_prefix(text, kMaxErrorText));
                tlv_str(w, TlvType::ErrorText, text);
            }
        },
        m);
    w.patch(len, body_start);
    Bytes out = w.take();
    SecureBytes sec(out);
    secure_zero(out.data(), out.size());
    return sec;
}

Result<size_t> frame_size(BytesView header) {
    if (header.size() < kHeaderSize) return malformed("truncated header");
    Reader r(header);
    uint8_t ver = r.u8();
    if (ver != kVersion)
        return Error(ErrorDomain::Kds, int(ErrorCode::UnsupportedVersion),
                     "unsupported KDS protocol version " + std::to_string(ver));
    r.u8();
    r.u16();
    uint32_t body = r.u32();
    if (body > kMaxBody) return malformed("body length " + std::to_string(body) + " exceeds limit");
    return kHeaderSize + body;
}

Result<Message> decode(BytesView data) {
    X2SEC_TRY(size_t total, frame_size(data));
    if (data.size() != total)
        return malformed("message length " + std::to_string(data.size()) + " does not match header (" +
                         std::to_string(total) + ")");
    Reader r(data);
    r.u8();
    uint8_t type = r.u8();
    if (r.u16() != 0) return malformed("reserved field not zero");
    r.u32();
    Tlvs tlvs;
    while (!r.empty()) {
        if (r.remaining() < 4) return malformed("truncated TLV header");
        uint16_t t = r.u16();
        uint16_t l = r.u16();
        BytesView v = r.bytes(l);
        if (!r.ok())
            return malformed("TLV " + std::to_string(t) + " length " + std::to_string(l) + " overruns message");
        uint16_t base = t & 0x7fff;
        if (!known_tlv(base)) {
            if (t & 0x8000) return malformed("unknown critical TLV " + std::to_string(base));
            continue;
        }
        if (!tlvs.v.emplace(base, v).second) return malformed("duplicate TLV " + std::to_string(base));
    }
    X2SEC_TRY(uint32_t request_id, need_u32(tlvs, TlvType::RequestId, "RequestId"));
    switch (static_cast<MsgType>(type)) {
        case MsgType::KeyRequest: {
            KeyRequest m;
            m.request_id = request_id;
            X2SEC_TRY(m.requester, need_identity(tlvs, TlvType::Requester, "Requester"));
            X2SEC_TRY(m.peer, need_identity(tlvs, TlvType::Peer, "Peer"));
            if (auto f = tlvs.get(TlvType::Flags)) {
                if (f->size() != 1) return malformed("Flags must be 1 octet");
                if ((*f)[0] & ~1u) return malformed("unknown flag bits set");
                m.rekey = ((*f)[0] & 1) != 0;
            }
            if (tlvs.get(TlvType::PreviousKeyId)) {
                X2SEC_TRY(m.previous_key_id, need_fixed(tlvs, TlvType::PreviousKeyId, "PreviousKeyId", kKeyIdSize));
            }
            return Message(std::move(m));
        }
        case MsgType::KeyResponse: {
            KeyResponse m;
            m.request_id = request_id;
            X2SEC_TRY(m.key_id, need_fixed(tlvs, TlvType::KeyId, "KeyId", kKeyIdSize));
            auto k = tlvs.get(TlvType::Key);
            if (!k) return malformed("missing Key");
            if (k->size() != kKeySize) return malformed("Key must be 32 octets");
            m.key = SecureBytes(*k);
            X2SEC_TRY(m.lifetime_s, need_u32(tlvs, TlvType::Lifetime, "Lifetime"));
            if (m.lifetime_s == 0) return malformed("Lifetime must not be zero");
            X2SEC_TRY(m.generation, need_u32(tlvs, TlvType::Generation, "Generation"));
            X2SEC_TRY(m.identity_a, need_identity(tlvs, TlvType::IdentityA, "IdentityA"));
            X2SEC_TRY(m.identity_b, need_identity(tlvs, TlvType::IdentityB, "IdentityB"));
            return Message(std::move(m));
        }
        case MsgType::Error: {
            ErrorMessage m;
            m.request_id = request_id;
            auto c = tlvs.get(TlvType::ErrorCode);
            if (!c || c->size() != 2) return malformed("missing or bad ErrorCode");
            m.code = static_cast<ErrorCode>((uint16_t((*c)[0]) << 8) | (*c)[1]);
            if (auto t = tlvs.get(TlvType::ErrorText)) {
                if (t->size() > kMaxErrorText) return malformed("ErrorText too long");
                m.text.assign(t->begin(), t->end());
                // It ends up in logs, status JSON and errors: only well-formed UTF-8 is accepted.
                if (!valid_utf8(m.text)) return malformed("ErrorText is not valid UTF-8");
            }
            return Message(std::move(m));
        }
    }
    return malformed("unknown message type " + std::to_string(type));
}

}  // namespace x2sec::kds
