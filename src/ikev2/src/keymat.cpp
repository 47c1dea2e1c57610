#include <x2sec/ikev2/keymat.hpp>
#include <x2sec/ikev2/wire.hpp>

namespace x2sec::ike {

SecureBytes skeyseed(const crypto::Prf& prf, BytesView ni, BytesView nr, BytesView g_ir) {
    Bytes key = concat({ni, nr});
    SecureBytes out = prf.compute(key, g_ir);
    secure_zero(key.data(), key.size());
    return out;
}

SecureBytes rekey_skeyseed(const crypto::Prf& old_prf, BytesView sk_d_old, BytesView g_ir, BytesView ni, BytesView nr) {
    SecureBytes data(g_ir);
    data.append(ni);
    data.append(nr);
    return old_prf.compute(sk_d_old, data);
}

Result<IkeKeys> derive_ike_keys(const IkeAlgorithms& algs, BytesView seed, BytesView ni, BytesView nr, uint64_t spi_i,
                                uint64_t spi_r) {
    X2SEC_TRY(auto prf, crypto::Prf::create(algs.prf));
    Writer s;
    s.bytes(ni);
    s.bytes(nr);
    s.u64(spi_i);
    s.u64(spi_r);
    size_t prf_len = prf.size();
    size_t enc_len = crypto::encr_keymat_size(algs.encr.id, algs.encr.key_bits);
    size_t integ_len = algs.integ == crypto::IntegId::None ? 0 : crypto::integ_key_size(algs.integ);
    size_t total = 3 * prf_len + 2 * enc_len + 2 * integ_len;
    X2SEC_TRY(auto km, prf.plus(seed, s.data(), total));
    IkeKeys k;
    size_t off = 0;
    auto take = [&](size_t n) {
        SecureBytes b = km.slice(off, n);
        off += n;
        return b;
    };
    k.sk_d = take(prf_len);
    k.sk_ai = take(integ_len);
    k.sk_ar = take(integ_len);
    k.sk_ei = take(enc_len);
    k.sk_er = take(enc_len);
    k.sk_pi = take(prf_len);
    k.sk_pr = take(prf_len);
    return k;
}

Result<ChildKeys> derive_child_keys(const crypto::Prf& prf, BytesView sk_d, EspCipher cipher,
                                    std::optional<BytesView> g_ir, BytesView ni, BytesView nr) {
    SecureBytes seed;
    if (g_ir) seed.append(*g_ir);
    seed.append(ni);
    seed.append(nr);
    size_t e = esp_encr_key_size(cipher), a = esp_integ_key_size(cipher);
    X2SEC_TRY(auto km, prf.plus(sk_d, seed, 2 * (e + a)));
    ChildKeys k;
    k.i_to_r.enc_key = km.slice(0, e);
    k.i_to_r.integ_key = km.slice(e, a);
    k.r_to_i.enc_key = km.slice(e + a, e);
    k.r_to_i.integ_key = km.slice(2 * e + a, a);
    return k;
}

Bytes signed_octets(const crypto::Prf& prf, BytesView sk_p, BytesView real_message, BytesView peer_nonce,
                    uint8_t id_type, BytesView id_data) {
    Writer id;
    id.u8(id_type);
    id.zeros(3);
    id.bytes(id_data);
    SecureBytes maced = prf.compute(sk_p, id.data());
    return concat({real_message, peer_nonce, maced.view()});
}

SecureBytes psk_auth(const crypto::Prf& prf, BytesView psk, BytesView octets) {
    static const char pad[] = "Key Pad for IKEv2";
    SecureBytes inner = prf.compute(psk, as_bytes(std::string_view(pad, sizeof(pad) - 1)));
    return prf.compute(inner, octets);
}

Result<Bytes> signature_auth_data(const crypto::Signer& key, crypto::SigScheme scheme, BytesView octets) {
    X2SEC_TRY(auto alg, crypto::algorithm_identifier_der(scheme));
    if (alg.size() > 255) return Error(ErrorDomain::Ike, 0, "AlgorithmIdentifier longer than 255 octets");
    X2SEC_TRY(auto sig, key.sign(scheme, octets));
    Bytes out;
    out.push_back(static_cast<uint8_t>(alg.size()));
    out.insert(out.end(), alg.begin(), alg.end());
    out.insert(out.end(), sig.begin(), sig.end());
    return out;
}

Result<SignatureAuth> parse_signature_auth(BytesView data) {
    if (data.empty() || size_t(data[0]) + 1 > data.size())
        return wire::syntax_error("AUTH method 14: AlgorithmIdentifier length exceeds the payload");
    BytesView alg = data.subspan(1, data[0]);
    X2SEC_TRY(auto scheme, crypto::sig_scheme_from_algorithm_identifier(alg));
    SignatureAuth s;
    s.scheme = scheme;
    auto sig = data.subspan(1 + data[0]);
    s.signature.assign(sig.begin(), sig.end());
    if (s.signature.empty()) return wire::syntax_error("AUTH method 14: empty signature");
    return s;
}

}  // namespace x2sec::ike
