// A scripted attacker peer for the adversarial suite: an IKEv2 initiator built directly on the
// engine's wire codec (x2sec::ike::wire) and key schedule (keymat.hpp), not a second engine.
// It runs a real IKE_SA_INIT (AES-GCM-128, PRF-HMAC-SHA256, ECP-256) over UDP, derives the
// IKE SA keys itself, and then sends whatever payload chain a test scripts, sealed with its own
// AES-GCM code so that it can also get the padding or the ICV wrong on purpose.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <optional>
#include <stdexcept>
#include <string>
#include <vector>
#include <x2sec/common/codec.hpp>
#include <x2sec/common/rng.hpp>
#include <x2sec/crypto/crypto.hpp>
#include <x2sec/ikev2/keymat.hpp>
#include <x2sec/ikev2/wire.hpp>

namespace x2sec::test {

namespace w = x2sec::ike::wire;

struct Received {
    w::Header header;
    std::vector<w::Payload> payloads;  // inner payloads (decrypted), or the outer ones if plain
    bool protected_ = false;
    const w::NotifyPayload* notify(uint16_t type) const { return w::find_notify(payloads, type); }
};

struct SealOptions {
    bool corrupt_icv = false;
    std::optional<uint8_t> pad_length;  // the Pad Length octet to send (default: correct)
    bool response = false;
};

class Attacker {
public:
    Attacker(uint16_t daemon_port, uint64_t seed) : m_rng(seed) {
        m_fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        sockaddr_in me{};
        me.sin_family = AF_INET;
        me.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        ::bind(m_fd, reinterpret_cast<sockaddr*>(&me), sizeof me);
        m_to.sin_family = AF_INET;
        m_to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        m_to.sin_port = htons(daemon_port);
    }
    ~Attacker() {
        if (m_fd >= 0) ::close(m_fd);
    }
    Attacker(const Attacker&) = delete;
    Attacker& operator=(const Attacker&) = delete;

    uint64_t spi_i() const { return m_spi_i; }
    uint64_t spi_r() const { return m_spi_r; }
    uint32_t next_mid() const { return m_mid; }
    void set_next_mid(uint32_t m) { m_mid = m; }
    const Bytes& nonce_i() const { return m_ni; }

    void send_raw(BytesView data) {
        ::sendto(m_fd, data.data(), data.size(), 0, reinterpret_cast<const sockaddr*>(&m_to), sizeof m_to);
    }
    std::optional<Bytes> recv_raw(int timeout_ms = 3000) {
        pollfd p{m_fd, POLLIN, 0};
        if (::poll(&p, 1, timeout_ms) != 1) return std::nullopt;
        Bytes b(65536);
        ssize_t n = ::recv(m_fd, b.data(), b.size(), 0);
        if (n < 0) return std::nullopt;
        b.resize(static_cast<size_t>(n));
        return b;
    }

    // IKE_SA_INIT with a real key exchange; false (and why) if the daemon did not complete it.
    bool ike_sa_init(std::string& why) {
        m_rng.fill(std::span<uint8_t>(reinterpret_cast<uint8_t*>(&m_spi_i), 8));
        m_spi_i |= 1;
        m_dh.emplace(crypto::DhKeyPair::generate(crypto::DhGroup::Ecp256, m_rng).value());
        m_ni.assign(32, 0);
        m_rng.fill(std::span<uint8_t>(m_ni.data(), m_ni.size()));
        w::Message m;
        m.header.spi_i = m_spi_i;
        m.header.exchange = w::ExchangeType::IkeSaInit;
        m.header.flags = w::kFlagInitiator;
        w::SaPayload sa;
        w::Proposal pr;
        pr.protocol = w::ProtocolId::Ike;
        pr.transforms = {w::Transform::make(w::TransformType::Encr, 20, 128),
                         w::Transform::make(w::TransformType::Prf, 5), w::Transform::make(w::TransformType::Dh, 19)};
        sa.proposals = {pr};
        m.payloads.push_back({w::PayloadType::SA, false, sa});
        m.payloads.push_back({w::PayloadType::KE, false, w::KePayload{19, m_dh->public_value()}});
        m.payloads.push_back({w::PayloadType::Nonce, false, w::NoncePayload{m_ni}});
        m_init_req = m.encode();
        send_raw(m_init_req);
        auto resp = recv_raw();
        if (!resp) return why = "no IKE_SA_INIT response", false;
        auto r = w::Message::decode(*resp);
        if (!r) return why = "IKE_SA_INIT response: " + r.error().detail(), false;
        auto* ke = w::find_payload(r->payloads, w::PayloadType::KE);
        auto* nr = w::find_payload(r->payloads, w::PayloadType::Nonce);
        if (!ke || !nr || !ke->as<w::KePayload>() || !nr->as<w::NoncePayload>())
            return why = "IKE_SA_INIT response without KE/Nonce", false;
        m_spi_r = r->header.spi_r;
        m_nr = nr->as<w::NoncePayload>()->data;
        auto g = m_dh->derive(ke->as<w::KePayload>()->data);
        if (!g) return why = "DH: " + g.error().detail(), false;
        m_prf.emplace(crypto::Prf::create(crypto::PrfId::HmacSha2_256).value());
        auto seed = ike::skeyseed(*m_prf, m_ni, m_nr, *g);
        m_keys = ike::derive_ike_keys(ike::IkeAlgorithms{}, seed, m_ni, m_nr, m_spi_i, m_spi_r).value();
        m_mid = 1;
        return true;
    }

    // IDi / AUTH (PSK) / SA / TSi / TSr of a correct IKE_AUTH request for this identity.
    w::Payload idi(uint8_t type, Bytes data) const {
        return {w::PayloadType::IDi, false, w::IdPayload{type, std::move(data)}};
    }
    w::Payload auth_for(const w::IdPayload& id, BytesView psk) const {
        auto octets = ike::signed_octets(*m_prf, m_keys.sk_pi, m_init_req, m_nr, id.id_type, id.data);
        auto mac = ike::psk_auth(*m_prf, psk, octets);
        return {w::PayloadType::AUTH, false, w::AuthPayload{2, Bytes(mac.data(), mac.data() + mac.size())}};
    }
    static w::Payload esp_sa(uint32_t spi, uint16_t encr = 20, uint16_t key_bits = 128, bool with_esn = true) {
        w::Proposal pr;
        pr.protocol = w::ProtocolId::Esp;
        pr.spi = {uint8_t(spi >> 24), uint8_t(spi >> 16), uint8_t(spi >> 8), uint8_t(spi)};
        pr.transforms = {w::Transform::make(w::TransformType::Encr, encr, key_bits)};
        if (encr == 12) pr.transforms.push_back(w::Transform::make(w::TransformType::Integ, 12));  // HMAC-SHA256-128
        if (with_esn) pr.transforms.push_back(w::Transform::make(w::TransformType::Esn, 0));
        w::SaPayload sa;
        sa.proposals = {pr};
        return {w::PayloadType::SA, false, sa};
    }
    static w::Payload ts(bool initiator, std::vector<TrafficSelector> sel) {
        return {initiator ? w::PayloadType::TSi : w::PayloadType::TSr, false, w::TsPayload{std::move(sel)}};
    }
    w::Payload nonce() {
        Bytes n(32);
        m_rng.fill(std::span<uint8_t>(n.data(), n.size()));
        return {w::PayloadType::Nonce, false, w::NoncePayload{n}};
    }
    w::Payload ke() {
        m_child_dh.emplace(crypto::DhKeyPair::generate(crypto::DhGroup::Ecp256, m_rng).value());
        return {w::PayloadType::KE, false, w::KePayload{19, m_child_dh->public_value()}};
    }
    static w::Payload notify(uint16_t type, Bytes data = {}, w::ProtocolId proto = w::ProtocolId::None,
                             Bytes spi = {}) {
        return {w::PayloadType::Notify, false, w::NotifyPayload{proto, std::move(spi), type, std::move(data)}};
    }

    // A protected message from us (the original initiator): header, SK, AES-GCM with SK_ei.
    Bytes seal(w::ExchangeType ex, uint32_t mid, const std::vector<w::Payload>& inner, const SealOptions& o = {}) {
        Writer body;
        uint8_t first = w::encode_chain(body, inner);
        return seal_raw(ex, mid, first, body.data(), o);
    }
    Bytes seal_raw(w::ExchangeType ex, uint32_t mid, uint8_t first, BytesView chain, const SealOptions& o = {}) {
        if (m_keys.sk_ei.size() != 20) throw std::runtime_error("attacker: no IKE SA keys (IKE_SA_INIT failed)");
        // Plaintext || padding || Pad Length, to a multiple of 4 octets (RFC 5282 / 7296 3.14).
        Bytes pt(chain.begin(), chain.end());
        size_t pad = (4 - (pt.size() + 1) % 4) % 4;
        pt.insert(pt.end(), pad, 0);
        pt.push_back(o.pad_length.value_or(static_cast<uint8_t>(pad)));
        const size_t sealed_len = 8 + pt.size() + 16;
        Writer w;
        w::Header h;
        h.spi_i = m_spi_i;
        h.spi_r = m_spi_r;
        h.exchange = ex;
        h.flags = static_cast<uint8_t>(w::kFlagInitiator | (o.response ? w::kFlagResponse : 0));
        h.message_id = mid;
        h.next_payload = static_cast<uint8_t>(w::PayloadType::SK);
        h.length = static_cast<uint32_t>(w::kHeaderSize + w::kGenericHeaderSize + sealed_len);
        h.encode(w);
        w.u8(first);
        w.u8(0);
        w.u16(static_cast<uint16_t>(w::kGenericHeaderSize + sealed_len));
        Bytes aad(w.data().begin(), w.data().end());
        uint8_t iv[8];
        ++m_iv;
        for (int k = 0; k < 8; ++k) iv[k] = static_cast<uint8_t>(m_iv >> (56 - 8 * k));
        uint8_t nonce[12];
        std::copy(m_keys.sk_ei.data() + 16, m_keys.sk_ei.data() + 20, nonce);
        std::copy(iv, iv + 8, nonce + 4);
        Bytes ct(pt.size()), tag(16);
        EVP_CIPHER_CTX* c = EVP_CIPHER_CTX_new();
        int len = 0;
        EVP_EncryptInit_ex(c, EVP_aes_128_gcm(), nullptr, nullptr, nullptr);
        EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_IVLEN, 12, nullptr);
        EVP_EncryptInit_ex(c, nullptr, nullptr, m_keys.sk_ei.data(), nonce);
        EVP_EncryptUpdate(c, nullptr, &len, aad.data(), static_cast<int>(aad.size()));
        EVP_EncryptUpdate(c, ct.data(), &len, pt.data(), static_cast<int>(pt.size()));
        EVP_EncryptFinal_ex(c, ct.data() + len, &len);
        EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, 16, tag.data());
        EVP_CIPHER_CTX_free(c);
        if (o.corrupt_icv) tag[15] ^= 0x01;
        w.bytes(BytesView(iv, 8));
        w.bytes(ct);
        w.bytes(tag);
        return w.take();
    }

    // Sends a request with the next Message ID (and advances it).
    Bytes request(w::ExchangeType ex, const std::vector<w::Payload>& inner, const SealOptions& o = {}) {
        Bytes m = seal(ex, m_mid++, inner, o);
        send_raw(m);
        return m;
    }

    // Receives one message from the daemon; decrypts it if protected (with SK_er).
    std::optional<Received> receive(int timeout_ms = 3000) {
        auto raw = recv_raw(timeout_ms);
        if (!raw) return std::nullopt;
        auto m = w::Message::decode(*raw);
        if (!m) return std::nullopt;
        Received r;
        r.header = m->header;
        if (m->payloads.size() == 1 && m->payloads[0].as<w::SkPayload>()) {
            auto* sk = m->payloads[0].as<w::SkPayload>();
            auto c = crypto::SkCipher::create(crypto::EncrId::AesGcm16, 128, crypto::IntegId::None, m_keys.sk_er,
                                              SecureBytes())
                         .value();
            auto pt = c.open(BytesView(raw->data(), w::kHeaderSize + w::kGenericHeaderSize), sk->data);
            if (!pt) return std::nullopt;
            auto chain = w::decode_chain(*pt, sk->inner_next);
            if (!chain) return std::nullopt;
            r.payloads = std::move(chain).value();
            r.protected_ = true;
        } else {
            r.payloads = std::move(m->payloads);
        }
        return r;
    }
    // Receives until a response with this Message ID arrives (answering nothing else).
    std::optional<Received> response_to(uint32_t mid, int timeout_ms = 3000) {
        for (int i = 0; i < 8; ++i) {
            auto r = receive(timeout_ms);
            if (!r) return std::nullopt;
            if (r->header.response() && r->header.message_id == mid) return r;
            m_unsolicited.push_back(std::move(*r));
        }
        return std::nullopt;
    }
    // Requests the daemon sent us while we waited for a response.
    std::vector<Received> m_unsolicited;

private:
    int m_fd = -1;
    sockaddr_in m_to{};
    DeterministicRng m_rng;
    uint64_t m_spi_i = 0, m_spi_r = 0;
    std::optional<crypto::DhKeyPair> m_dh, m_child_dh;
    std::optional<crypto::Prf> m_prf;
    Bytes m_ni, m_nr, m_init_req;
    ike::IkeKeys m_keys;
    uint32_t m_mid = 1;
    uint64_t m_iv = 0;
};

}  // namespace x2sec::test
