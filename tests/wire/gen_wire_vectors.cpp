// Writes the IKE, ESP and KDS wire vectors of tests/vectors/ from the deterministic engines:
// two IKEv2 engines with fixed RNGs on a manual clock (tests/exchange/ikev2_harness.hpp) run
// every exchange in both roles (and IKE_AUTH once more in fragments, with ECDSA P-256 and
// RSA-3072 certificates, after a COOKIE demand and after INVALID_KE_PAYLOAD); ESP packets are sealed
// with fixed keys and IVs; KDS messages are encoded from fixed fields.  Negative vectors are
// named mutations of positive ones, with the error the parser gives.  A program, not a test:
//
//   build/tests/wire/gen_wire_vectors tests/vectors
//
// then commit the .vec files; test_wire_vectors reads them back.  `gen_wire_vectors --cmp-post`
// prints the positive POST record of the hand-written cmp_http.vec.  The certificate records
// differ from run to run (OpenSSL generates the keys and ECDSA / RSA-PSS signatures are
// randomised); every other record is the same on each run.
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <map>
#include <openssl/cmp.h>
#include <x2sec/esp/cipher.hpp>
#include <x2sec/esp/packet.hpp>
#include <x2sec/kds/protocol.hpp>

#include "../exchange/ikev2_harness.hpp"
#include "wire_vectors.hpp"

using namespace x2sec;
using namespace x2sec::test;
namespace wire = x2sec::ike::wire;

namespace {

void store_be32_in(Bytes& b, size_t off, uint32_t v) {
    b[off] = uint8_t(v >> 24);
    b[off + 1] = uint8_t(v >> 16);
    b[off + 2] = uint8_t(v >> 8);
    b[off + 3] = uint8_t(v);
}

struct VecWriter {
    std::ofstream out;
    std::string section;
    explicit VecWriter(const std::string& path, const std::string& header) : out(path) {
        if (!out) throw std::runtime_error("cannot write " + path);
        out << header;
    }
    void record(const std::string& sec, const std::vector<std::pair<std::string, std::string>>& fields) {
        if (sec != section) {
            out << "\n[" << sec << "]\n";
            section = sec;
        }
        out << "\n";
        for (const auto& [k, v] : fields) out << k << " = " << v << "\n";
    }
};

// ---------------------------------------------------------------- IKE
std::string ike_role(const wire::Header& h, bool from_a) {
    // The original initiator of the IKE SA is a; a request comes from the exchange's initiator.
    std::string sender = from_a ? "original initiator" : "original responder";
    return sender + (h.response() ? ", response" : ", request");
}

struct Captured {
    std::string section, role, what;
    Bytes data;
    std::vector<std::pair<std::string, std::string>> extra;  // fields after Payloads
};

// The KE group and notify data of an IKE_SA_INIT message (for the COOKIE and INVALID_KE_PAYLOAD
// records): "KeGroup" when it carries a KE payload, "NotifyData" of a lone notify (COOKIE,
// INVALID_KE_PAYLOAD).
void add_init_fields(Captured& c) {
    auto m = wire::Message::decode(c.data).value();
    for (const auto& pl : m.payloads)
        if (const auto* ke = pl.as<wire::KePayload>()) c.extra.emplace_back("KeGroup", std::to_string(ke->group));
    if (m.payloads.size() == 1)
        if (const auto* n = m.payloads[0].as<wire::NotifyPayload>())
            c.extra.emplace_back("NotifyData", to_hex(n->data));
}

// The decrypted inner chain of an encrypted (SK, AES-GCM-16) message, with the sender's SK_e:
// "SkKey", "Inner" (payload list) and "InnerChain" (the plaintext without padding).
void add_inner_fields(Captured& c, const std::map<std::pair<uint64_t, uint64_t>, IkeSaKeys>& keys) {
    auto m = wire::Message::decode(c.data).value();
    const auto* sk = m.payloads.empty() ? nullptr : m.payloads.back().as<wire::SkPayload>();
    auto it = keys.find({m.header.spi_i, m.header.spi_r});
    if (!sk || m.payloads.size() != 1 || it == keys.end()) throw std::runtime_error("no SK payload or keys");
    const SecureBytes& key = m.header.initiator() ? it->second.sk_ei : it->second.sk_er;
    auto cipher = crypto::SkCipher::create(crypto::EncrId::AesGcm16, static_cast<unsigned>((key.size() - 4) * 8),
                                           crypto::IntegId::None, key, SecureBytes())
                      .value();
    BytesView aad(c.data.data(), wire::kHeaderSize + wire::kGenericHeaderSize);
    Bytes pt = cipher.open(aad, sk->data).value();
    auto inner = wire::decode_chain(pt, sk->inner_next).value();
    c.extra.emplace_back("SkKey", to_hex(key.view()));
    c.extra.emplace_back("Inner", wirevec::payload_list(inner));
    c.extra.emplace_back("InnerChain", to_hex(pt));
}

// Both ends authenticate with certificates of `alg`: a's leaf under an intermediate it sends
// along, b's directly under the root; both trust the root and send CERTREQ.  Unfragmented.
void run_cert(pki::KeyAlg alg, const std::string& label, uint64_t seed, std::vector<Captured>& out) {
    TestCa root = make_root("Vendor " + label, alg);
    TestCa inter = make_intermediate(root, "Vendor " + label, alg);
    Leaf la = make_leaf(inter, "a.henb.example", 1'700'000'000, 2'000'000'000, alg);
    Leaf lb = make_leaf(root, "b.henb.example", 1'700'000'000, 2'000'000'000, alg);
    auto trust = std::make_shared<x509::TrustStore>();
    trust->add_anchor(root.certificate(), "vendor");
    auto pa = base_peer(true), pb = base_peer(false);
    use_cert(pa, la, {inter.certificate()}, trust);
    use_cert(pb, lb, {}, trust);
    pa.fragmentation = pb.fragmentation = false;
    Pair p(pa, pb, seed);
    std::map<std::pair<uint64_t, uint64_t>, IkeSaKeys> keys;
    p.a.engine->set_key_logger([&](const IkeSaKeys& k) { keys[{k.spi_i, k.spi_r}] = k; }, nullptr);
    if (!p.connect()) throw std::runtime_error("certificate " + label + ": IKE SA not established");
    for (const auto& [from_a, d] : p.log) {
        auto m = wire::Message::decode(d.data).value();
        Captured c{std::string(wire::to_string(m.header.exchange)) + " certificate " + label,
                   ike_role(m.header, from_a),
                   "",
                   d.data,
                   {}};
        if (m.header.exchange == wire::ExchangeType::IkeAuth) add_inner_fields(c, keys);
        out.push_back(std::move(c));
    }
}

// The IKE_SA_INIT messages of a connection between `ca` and `cb` (the first attempt refused
// with a lone notify, then the retry), as section `section`.
void run_init_retry(EngineConfig ca, EngineConfig cb, uint64_t seed, const std::string& section,
                    std::vector<Captured>& out) {
    Pair p(std::move(ca), std::move(cb), seed);
    if (!p.connect()) throw std::runtime_error(section + ": IKE SA not established");
    int attempt = 1;
    for (const auto& [from_a, d] : p.log) {
        auto m = wire::Message::decode(d.data).value();
        if (m.header.exchange != wire::ExchangeType::IkeSaInit) continue;
        Captured c{section, ike_role(m.header, from_a), "", d.data, {{"Attempt", std::to_string(attempt)}}};
        add_init_fields(c);
        if (m.header.response()) ++attempt;
        out.push_back(std::move(c));
    }
    if (attempt != 3) throw std::runtime_error(section + ": expected two IKE_SA_INIT exchanges");
}

void capture(Pair& p, size_t from, const std::string& section, std::vector<Captured>& out) {
    for (size_t i = from; i < p.log.size(); ++i) {
        const auto& [from_a, d] = p.log[i];
        auto m = wire::Message::decode(d.data);
        if (!m.ok()) throw std::runtime_error("generated IKE message does not decode: " + m.error().detail());
        out.push_back({section, ike_role(m->header, from_a), "", d.data, {}});
    }
}

std::vector<Captured> run_ike() {
    std::vector<Captured> out;
    {
        auto pa = base_peer(true), pb = base_peer(false);
        pa.fragmentation = pb.fragmentation = false;
        Pair p(pa, pb, 7);
        size_t mark = 0;
        if (!p.a.engine->initiate(p.a.cfg.peers[0].name, p.clock.now()).ok()) throw std::runtime_error("initiate");
        // IKE_SA_INIT, then IKE_AUTH: split the log by exchange type.
        p.pump();
        if (!p.established()) throw std::runtime_error("IKE SA not established");
        std::vector<Captured> first;
        capture(p, mark, "", first);
        for (auto& c : first) {
            auto m = wire::Message::decode(c.data).value();
            c.section = wire::to_string(m.header.exchange);
            out.push_back(c);
        }
        auto step = [&](const std::string& section, const std::function<Status(Engine&, const IkeSaInfo&)>& act,
                        bool by_a) {
            mark = p.log.size();
            Node& n = by_a ? p.a : p.b;
            auto sas = n.engine->list_sas();
            if (sas.empty()) throw std::runtime_error(section + ": no IKE SA");
            if (auto st = act(*n.engine, sas[0]); !st.ok())
                throw std::runtime_error(section + ": " + st.error().detail());
            p.pump();
            capture(p, mark, section, out);
        };
        auto child_rekey = [&](Engine& e, const IkeSaInfo& sa) {
            return e.rekey_child(sa.id, sa.children.at(0).spi_in, p.clock.now());
        };
        step("CREATE_CHILD_SA rekey Child SA", child_rekey, true);
        step("CREATE_CHILD_SA rekey Child SA", child_rekey, false);
        step(
            "CREATE_CHILD_SA rekey IKE SA",
            [&](Engine& e, const IkeSaInfo& sa) { return e.rekey_ike(sa.id, p.clock.now()); }, true);
        step(
            "INFORMATIONAL liveness check",
            [&](Engine& e, const IkeSaInfo& sa) { return e.send_dpd(sa.id, p.clock.now()); }, true);
        step(
            "INFORMATIONAL liveness check",
            [&](Engine& e, const IkeSaInfo& sa) { return e.send_dpd(sa.id, p.clock.now()); }, false);
        step(
            "INFORMATIONAL delete Child SA",
            [&](Engine& e, const IkeSaInfo& sa) {
                return e.delete_child(sa.id, sa.children.at(0).spi_in, p.clock.now());
            },
            false);
        step(
            "INFORMATIONAL delete IKE SA",
            [&](Engine& e, const IkeSaInfo& sa) { return e.delete_ike(sa.id, p.clock.now()); }, true);
    }
    {
        // IKE_AUTH in RFC 7383 fragments: a path MTU small enough to split the PSK IKE_AUTH.
        auto pa = base_peer(true), pb = base_peer(false);
        pa.fragment_size = pb.fragment_size = 160;
        Pair p(pa, pb, 9);
        if (!p.connect()) throw std::runtime_error("fragmented IKE_AUTH: IKE SA not established");
        for (const auto& [from_a, d] : p.log) {
            auto m = wire::Message::decode(d.data).value();
            if (m.header.exchange != wire::ExchangeType::IkeAuth) continue;
            out.push_back({"IKE_AUTH fragments", ike_role(m.header, from_a), "", d.data, {}});
        }
    }
    run_cert(pki::KeyAlg::EcP256, "ECDSA P-256", 11, out);
    run_cert(pki::KeyAlg::Rsa3072, "RSA-3072", 13, out);
    {
        // The responder demands a COOKIE (RFC 7296 2.6) for every IKE_SA_INIT.
        EngineConfig ca, cb;
        ca.peers = {base_peer(true)};
        cb.peers = {base_peer(false)};
        cb.cookie_threshold = 0;
        run_init_retry(std::move(ca), std::move(cb), 15, "IKE_SA_INIT COOKIE", out);
    }
    {
        // The initiator guesses ECP-256, the responder accepts ECP-384 only (RFC 7296 1.2).
        auto pa = base_peer(true), pb = base_peer(false);
        pa.ike_proposals = {proposal("aes128gcm16-prfsha256-ecp256-ecp384")};
        pb.ike_proposals = {proposal("aes128gcm16-prfsha256-ecp384")};
        EngineConfig ca, cb;
        ca.peers = {pa};
        cb.peers = {pb};
        run_init_retry(std::move(ca), std::move(cb), 17, "IKE_SA_INIT INVALID_KE_PAYLOAD", out);
    }
    return out;
}

void write_ike(const std::string& dir) {
    VecWriter w(dir + "/ike_messages.vec",
                "# IKEv2 messages (RFC 7296, RFC 7383 fragments) as the engines put them on the wire:\n"
                "# generated by tests/wire/gen_wire_vectors.cpp (fixed RNGs, manual clock; do not edit).\n"
                "# Positive records: Message decodes, its fields are as listed, and it encodes to the same\n"
                "# octets.  Optional fields: KeGroup (the KE payload's DH group), NotifyData (of a lone\n"
                "# notify: COOKIE, INVALID_KE_PAYLOAD), Attempt (1: refused, 2: the retry); for encrypted\n"
                "# certificate records SkKey (the sender's SK_e, AES-GCM-16 with salt): the SK payload\n"
                "# opens to InnerChain, which decodes to the payloads Inner and encodes to the same octets.\n"
                "# [Negative] records: Message fails to decode with Error (domain/notify) and an\n"
                "# error detail containing Detail.\n");
    auto msgs = run_ike();
    for (const auto& c : msgs) {
        auto m = wire::Message::decode(c.data).value();
        char spis[40];
        std::snprintf(spis, sizeof spis, "%016llx %016llx", (unsigned long long)m.header.spi_i,
                      (unsigned long long)m.header.spi_r);
        std::vector<std::pair<std::string, std::string>> f = {
            {"Role", c.role},
            {"Exchange", wire::to_string(m.header.exchange)},
            {"Flags", std::string(m.header.initiator() ? "I" : "") + (m.header.response() ? "R" : "")},
            {"MessageId", std::to_string(m.header.message_id)},
            {"Spis", spis},
            {"Payloads", wirevec::payload_list(m.payloads)}};
        f.insert(f.end(), c.extra.begin(), c.extra.end());
        f.emplace_back("Message", to_hex(c.data));
        w.record(c.section, f);
    }
    // Negative vectors: mutations of the first IKE_SA_INIT request and IKE_AUTH request.
    const Bytes init = msgs.at(0).data;
    Bytes auth;
    for (const auto& c : msgs)
        if (c.section == "IKE_AUTH") {  // the PSK one
            auth = c.data;
            break;
        }
    struct Mutation {
        std::string name;
        Bytes data;
    };
    std::vector<Mutation> muts;
    muts.push_back({"header cut short (20 of 28 octets)", Bytes(init.begin(), init.begin() + 20)});
    {
        Bytes b = init;
        b[17] = 0x30;  // major version 3
        muts.push_back({"major version 3", b});
    }
    {
        Bytes b = init;
        store_be32_in(b, 24, uint32_t(b.size() + 4));
        muts.push_back({"length field longer than the datagram", b});
    }
    {
        Bytes b = init;
        b.resize(b.size() - 3);
        store_be32_in(b, 24, uint32_t(b.size()));
        muts.push_back({"last payload cut short (length fields disagree)", b});
    }
    {
        Bytes b = init;
        b[16] = 200;        // first payload: an unknown type ...
        b[28 + 1] |= 0x80;  // ... marked critical
        muts.push_back({"unknown critical payload", b});
    }
    {
        Bytes b = init;
        b[28 + 2] = 0;
        b[28 + 3] = 2;  // first payload length 2 (< 4, its own generic header)
        muts.push_back({"payload length below the generic header", b});
    }
    if (!auth.empty()) {
        Bytes b = auth;
        b[16] = 1;  // SK replaced by an SA payload with the SK body
        muts.push_back({"encrypted body declared as an SA payload", b});
    }
    for (const auto& mu : muts) {
        auto r = wire::Message::decode(mu.data);
        if (r.ok()) {
            std::cerr << "gen_wire_vectors: mutation '" << mu.name << "' decodes; not written\n";
            continue;
        }
        w.record("Negative", {{"Name", mu.name},
                              {"Message", to_hex(mu.data)},
                              {"Error", wirevec::error_name(r.error())},
                              {"Detail", r.error().detail()}});
    }
}

// ---------------------------------------------------------------- ESP
Bytes pattern(size_t n, uint8_t seed) {
    Bytes b(n);
    for (size_t i = 0; i < n; ++i) b[i] = uint8_t(seed + i * 7);
    return b;
}

// An IPv4/UDP packet 203.0.113.1 -> 203.0.113.2, GTP-U port, `payload` octets.
Bytes inner_packet(size_t payload) {
    Bytes p(28 + payload);
    p[0] = 0x45;
    p[2] = uint8_t(p.size() >> 8);
    p[3] = uint8_t(p.size());
    p[8] = 64;
    p[9] = 17;
    const uint8_t src[4] = {203, 0, 113, 1}, dst[4] = {203, 0, 113, 2};
    std::memcpy(p.data() + 12, src, 4);
    std::memcpy(p.data() + 16, dst, 4);
    p[20] = 0x08;
    p[21] = 0x68;
    p[22] = 0x08;
    p[23] = 0x68;
    p[24] = uint8_t((8 + payload) >> 8);
    p[25] = uint8_t(8 + payload);
    for (size_t i = 0; i < payload; ++i) p[28 + i] = uint8_t('a' + i % 26);
    return p;
}

struct EspCase {
    EspCipher cipher;
    size_t enc_len, integ_len;
};

void write_esp(const std::string& dir) {
    VecWriter w(dir + "/esp_packets.vec",
                "# ESP packets (RFC 4303; AES-GCM RFC 4106, AES-CBC + HMAC-SHA-256-128 RFC 4868) in tunnel\n"
                "# mode: generated by tests/wire/gen_wire_vectors.cpp (fixed keys and IVs; do not edit).\n"
                "# Positive records: Packet opens with EncKey/IntegKey to NextHeader and Plaintext, and\n"
                "# sealing Plaintext with Spi, Seq, Iv gives Packet again.  [Negative] records: Packet\n"
                "# fails to open with Error (the drop reason).\n");
    const std::vector<EspCase> cases = {{EspCipher::AesGcm16_128, 20, 0},
                                        {EspCipher::AesGcm16_256, 36, 0},
                                        {EspCipher::AesCbc128_HmacSha256_128, 16, 32},
                                        {EspCipher::AesCbc256_HmacSha256_128, 32, 32}};
    Bytes first_cbc, first_gcm;
    std::vector<std::pair<EspCase, Bytes>> keep;
    for (const auto& c : cases) {
        for (size_t payload : {0u, 13u, 100u}) {
            DirectionKeys k{SecureBytes(pattern(c.enc_len, 0x11)), SecureBytes(pattern(c.integ_len, 0x53))};
            auto sc = esp::SaCipher::create(c.cipher, k, true).value();
            const uint32_t spi = 0xc0ffee01;
            const uint64_t seq = 1 + payload;
            Bytes iv = pattern(sc->iv_len(), uint8_t(0xa0 + payload));
            Bytes pt = inner_packet(payload);
            std::vector<uint8_t> buf(esp::kMaxHeadroom + pt.size() + esp::kMaxTailroom);
            std::memcpy(buf.data() + esp::kMaxHeadroom, pt.data(), pt.size());
            size_t off = esp::kMaxHeadroom;
            size_t n = esp::seal(*sc, spi, seq, false, iv.data(), 4, buf, off, pt.size());
            if (n == 0) throw std::runtime_error("ESP seal failed");
            size_t start = off - 8 - sc->iv_len();
            Bytes pkt(buf.begin() + long(start), buf.begin() + long(start + n));
            w.record(to_string(c.cipher), {{"Cipher", to_string(c.cipher)},
                                           {"EncKey", to_hex(k.enc_key.view())},
                                           {"IntegKey", to_hex(k.integ_key.view())},
                                           {"Spi", std::to_string(spi)},
                                           {"Seq", std::to_string(seq)},
                                           {"Iv", to_hex(iv)},
                                           {"NextHeader", "4"},
                                           {"Plaintext", to_hex(pt)},
                                           {"Packet", to_hex(pkt)}});
            if (payload == 13) keep.emplace_back(c, pkt);
        }
    }
    // Negative: ICV flipped, cut short, ciphertext not block aligned (CBC).
    for (const auto& [c, pkt] : keep) {
        DirectionKeys k{SecureBytes(pattern(c.enc_len, 0x11)), SecureBytes(pattern(c.integ_len, 0x53))};
        struct M {
            std::string name;
            Bytes data;
        };
        std::vector<M> ms;
        Bytes icv = pkt;
        icv.back() ^= 0x01;
        ms.push_back({"ICV altered", icv});
        Bytes body = pkt;
        body[8 + 8 + 16 + 2] ^= 0x80;
        ms.push_back({"ciphertext altered", body});
        ms.push_back({"cut to the ESP header", Bytes(pkt.begin(), pkt.begin() + 8)});
        if (c.integ_len != 0) {
            Bytes unaligned = pkt;
            unaligned.erase(unaligned.begin() + 8 + 16, unaligned.begin() + 8 + 16 + 3);
            ms.push_back({"ciphertext not block aligned", unaligned});
        }
        for (const auto& m : ms) {
            auto sc = esp::SaCipher::create(c.cipher, k, false).value();
            Bytes b = m.data;
            auto r = esp::open(*sc, false, 14, b);
            if (r.ok) {
                std::cerr << "gen_wire_vectors: ESP mutation '" << m.name << "' opens; not written\n";
                continue;
            }
            w.record("Negative", {{"Name", std::string(to_string(c.cipher)) + ": " + m.name},
                                  {"Cipher", to_string(c.cipher)},
                                  {"EncKey", to_hex(k.enc_key.view())},
                                  {"IntegKey", to_hex(k.integ_key.view())},
                                  {"Seq", "14"},
                                  {"Packet", to_hex(m.data)},
                                  {"Error", esp::to_string(r.reason)}});
        }
    }
}

// ---------------------------------------------------------------- KDS
void write_kds(const std::string& dir) {
    VecWriter w(dir + "/kds_messages.vec",
                "# KDS protocol messages (docs/kds.md): generated by tests/wire/gen_wire_vectors.cpp from\n"
                "# fixed fields (do not edit).  Positive records: Message decodes to Type with the listed\n"
                "# fields and encodes to the same octets.  [Negative] records: Message fails to decode\n"
                "# with Error (Kds/<ErrorCode>) and a detail containing Detail.\n");
    kds::KeyRequest req;
    req.request_id = 0x01020304;
    req.requester = "0023a1000001.henb.vendor-a.example";
    req.peer = "0023a2000002.henb.vendor-b.example";
    kds::KeyRequest rekey = req;
    rekey.request_id = 7;
    rekey.rekey = true;
    rekey.previous_key_id = pattern(kds::kKeyIdSize, 0x30);
    kds::KeyResponse resp;
    resp.request_id = 0x01020304;
    resp.key_id = pattern(kds::kKeyIdSize, 0x40);
    resp.key = SecureBytes(pattern(kds::kKeySize, 0x50));
    resp.lifetime_s = 86400;
    resp.generation = 3;
    resp.identity_a = req.requester;
    resp.identity_b = req.peer;
    kds::ErrorMessage err;
    err.request_id = 9;
    err.code = kds::ErrorCode::UnauthorisedPair;
    err.text = "no authorised relation between the pair";
    std::vector<std::pair<std::string, kds::Message>> msgs = {
        {"KeyRequest", req}, {"KeyRequest", rekey}, {"KeyResponse", resp}, {"Error", err}};
    Bytes first;
    for (const auto& [name, m] : msgs) {
        SecureBytes b = kds::encode(m);
        Bytes raw(b.view().begin(), b.view().end());
        if (first.empty()) first = raw;
        std::vector<std::pair<std::string, std::string>> f = {{"Type", name}};
        if (const auto* r = std::get_if<kds::KeyRequest>(&m)) {
            f.emplace_back("RequestId", std::to_string(r->request_id));
            f.emplace_back("Requester", r->requester);
            f.emplace_back("Peer", r->peer);
            f.emplace_back("Rekey", r->rekey ? "1" : "0");
        } else if (const auto* k = std::get_if<kds::KeyResponse>(&m)) {
            f.emplace_back("RequestId", std::to_string(k->request_id));
            f.emplace_back("KeyId", to_hex(k->key_id));
            f.emplace_back("Generation", std::to_string(k->generation));
            f.emplace_back("Lifetime", std::to_string(k->lifetime_s));
        } else if (const auto* e = std::get_if<kds::ErrorMessage>(&m)) {
            f.emplace_back("RequestId", std::to_string(e->request_id));
            f.emplace_back("Code", kds::to_string(e->code));
            f.emplace_back("Text", e->text);
        }
        f.emplace_back("Message", to_hex(raw));
        w.record(name, f);
    }
    struct M {
        std::string name;
        Bytes data;
    };
    std::vector<M> ms;
    ms.push_back({"cut inside the header", Bytes(first.begin(), first.begin() + 3)});
    ms.push_back({"cut inside the body", Bytes(first.begin(), first.end() - 2)});
    {
        Bytes b = first;
        b.push_back(0);
        ms.push_back({"octet after the message", b});
    }
    {
        Bytes b = first;
        b[0] ^= 0xff;
        ms.push_back({"first header octet altered", b});
    }
    {
        Bytes b = first;
        b[1] = 0x7f;
        ms.push_back({"second header octet altered", b});
    }
    for (const auto& m : ms) {
        auto r = kds::decode(m.data);
        if (r.ok()) {
            std::cerr << "gen_wire_vectors: KDS mutation '" << m.name << "' decodes; not written\n";
            continue;
        }
        w.record("Negative", {{"Name", m.name},
                              {"Message", to_hex(m.data)},
                              {"Error", wirevec::error_name(r.error())},
                              {"Detail", r.error().detail()}});
    }
}

// ---------------------------------------------------------------- CMP over HTTP
// The positive POST record of the hand-written cmp_http.vec: a genm PKIMessage made by
// OpenSSL's CMP client (MAC-protected with a reference and secret the RA does not know, so the
// RA answers with a protected error message and opens no transaction), in a whole HTTP/1.1
// request.  Printed to stdout (gen_wire_vectors --cmp-post) to be pasted into the file.
OSSL_CMP_MSG* capture_request(OSSL_CMP_CTX* ctx, const OSSL_CMP_MSG* req) {
    auto* out = static_cast<Bytes*>(OSSL_CMP_CTX_get_transfer_cb_arg(ctx));
    unsigned char* der = nullptr;
    const int n = i2d_OSSL_CMP_MSG(req, &der);
    if (n > 0) out->assign(der, der + n);
    OPENSSL_free(der);
    return nullptr;  // no transfer: the message is all we want
}

int print_cmp_post() {
    OSSL_CMP_CTX* ctx = OSSL_CMP_CTX_new(nullptr, nullptr);
    if (!ctx) return 1;
    Bytes der;
    const std::string ref = "x2sec wire vector", secret = "not a secret the RA knows";
    OSSL_CMP_CTX_set1_referenceValue(ctx, reinterpret_cast<const unsigned char*>(ref.data()), int(ref.size()));
    OSSL_CMP_CTX_set1_secretValue(ctx, reinterpret_cast<const unsigned char*>(secret.data()), int(secret.size()));
    OSSL_CMP_CTX_set_transfer_cb(ctx, capture_request);
    OSSL_CMP_CTX_set_transfer_cb_arg(ctx, &der);
    STACK_OF(OSSL_CMP_ITAV)* itavs = OSSL_CMP_exec_GENM_ses(ctx);
    sk_OSSL_CMP_ITAV_pop_free(itavs, OSSL_CMP_ITAV_free);
    OSSL_CMP_CTX_free(ctx);
    if (der.empty()) {
        std::cerr << "gen_wire_vectors: no genm request captured\n";
        return 1;
    }
    std::string body;
    for (uint8_t b : der) {
        char hex[5];
        std::snprintf(hex, sizeof hex, "\\x%02x", b);
        body += hex;
    }
    std::cout << "Name = genm PKIMessage (MAC-protected, unknown reference): answered with a CMP error message\n"
              << "Request = POST /.well-known/cmp HTTP/1.1\\r\\nHost: 127.0.0.1\\r\\nContent-Type: "
                 "application/pkixcmp\\r\\nContent-Length: "
              << der.size() << "\\r\\nConnection: close\\r\\n\\r\\n"
              << body << "\n"
              << "Status = 200\nContentType = application/pkixcmp\nRequestPkiBody = genm\nResponsePkiBody = error\n";
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc == 2 && std::string(argv[1]) == "--cmp-post") return print_cmp_post();
    if (argc != 2) {
        std::cerr << "usage: gen_wire_vectors DIR   (DIR: tests/vectors)\n"
                     "       gen_wire_vectors --cmp-post   (the positive POST record of cmp_http.vec)\n";
        return 2;
    }
    try {
        write_ike(argv[1]);
        write_esp(argv[1]);
        write_kds(argv[1]);
    } catch (const std::exception& e) {
        std::cerr << "gen_wire_vectors: " << e.what() << "\n";
        return 1;
    }
    return 0;
}
