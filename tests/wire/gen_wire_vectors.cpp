// Writes the IKE, ESP and KDS wire vectors of tests/vectors/ from the deterministic engines:
// two IKEv2 engines with fixed RNGs on a manual clock (tests/exchange/ikev2_harness.hpp) run
// every exchange in both roles (and IKE_AUTH once more in fragments); ESP packets are sealed
// with fixed keys and IVs; KDS messages are encoded from fixed fields.  Negative vectors are
// named mutations of positive ones, with the error the parser gives.  A program, not a test:
//
//   build/tests/wire/gen_wire_vectors tests/vectors
//
// then commit the .vec files; test_wire_vectors reads them back.
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
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
struct Captured {
    std::string section, role, what;
    Bytes data;
};

std::string ike_role(const wire::Header& h, bool from_a) {
    // The original initiator of the IKE SA is a; a request comes from the exchange's initiator.
    std::string sender = from_a ? "original initiator" : "original responder";
    return sender + (h.response() ? ", response" : ", request");
}

void capture(Pair& p, size_t from, const std::string& section, std::vector<Captured>& out) {
    for (size_t i = from; i < p.log.size(); ++i) {
        const auto& [from_a, d] = p.log[i];
        auto m = wire::Message::decode(d.data);
        if (!m.ok()) throw std::runtime_error("generated IKE message does not decode: " + m.error().detail());
        out.push_back({section, ike_role(m->header, from_a), "", d.data});
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
            out.push_back({"IKE_AUTH fragments", ike_role(m.header, from_a), "", d.data});
        }
    }
    return out;
}

void write_ike(const std::string& dir) {
    VecWriter w(dir + "/ike_messages.vec",
                "# IKEv2 messages (RFC 7296, RFC 7383 fragments) as the engines put them on the wire:\n"
                "# generated by tests/wire/gen_wire_vectors.cpp (fixed RNGs, manual clock; do not edit).\n"
                "# Positive records: Message decodes, its fields are as listed, and it encodes to the same\n"
                "# octets.  [Negative] records: Message fails to decode with Error (domain/notify) and an\n"
                "# error detail containing Detail.\n");
    auto msgs = run_ike();
    for (const auto& c : msgs) {
        auto m = wire::Message::decode(c.data).value();
        char spis[40];
        std::snprintf(spis, sizeof spis, "%016llx %016llx", (unsigned long long)m.header.spi_i,
                      (unsigned long long)m.header.spi_r);
        w.record(c.section, {{"Role", c.role},
                             {"Exchange", wire::to_string(m.header.exchange)},
                             {"Flags", std::string(m.header.initiator() ? "I" : "") + (m.header.response() ? "R" : "")},
                             {"MessageId", std::to_string(m.header.message_id)},
                             {"Spis", spis},
                             {"Payloads", wirevec::payload_list(m.payloads)},
                             {"Message", to_hex(c.data)}});
    }
    // Negative vectors: mutations of the first IKE_SA_INIT request and IKE_AUTH request.
    const Bytes init = msgs.at(0).data;
    Bytes auth;
    for (const auto& c : msgs)
        if (c.section == "IKE_AUTH") {
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

}  // namespace

int main(int argc, char** argv) {
    if (argc != 2) {
        std::cerr << "usage: gen_wire_vectors DIR   (DIR: tests/vectors)\n";
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
