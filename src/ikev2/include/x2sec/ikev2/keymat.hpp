// x2sec::ike keying material (RFC 7296 2.13, 2.14, 2.17, 2.18; RFC 4106 8.1 / RFC 5282 7.1
// for the AES-GCM salt) and AUTH payload computation (RFC 7296 2.15, RFC 7427).
#pragma once

#include <optional>
#include <x2sec/common/bytes.hpp>
#include <x2sec/common/child_sa.hpp>
#include <x2sec/common/result.hpp>
#include <x2sec/crypto/crypto.hpp>
#include <x2sec/ikev2/engine.hpp>

namespace x2sec::ike {

struct IkeAlgorithms {
    EncrAlg encr{crypto::EncrId::AesGcm16, 128};
    crypto::IntegId integ = crypto::IntegId::None;
    crypto::PrfId prf = crypto::PrfId::HmacSha2_256;
    crypto::DhGroup dh = crypto::DhGroup::Ecp256;
};

struct IkeKeys {
    SecureBytes sk_d, sk_ai, sk_ar, sk_ei, sk_er, sk_pi, sk_pr;
};

// SKEYSEED = prf(Ni | Nr, g^ir)
SecureBytes skeyseed(const crypto::Prf& prf, BytesView ni, BytesView nr, BytesView g_ir);
// Rekeyed IKE SA (2.18): SKEYSEED = prf(SK_d (old), g^ir (new) | Ni | Nr)
SecureBytes rekey_skeyseed(const crypto::Prf& old_prf, BytesView sk_d_old, BytesView g_ir, BytesView ni, BytesView nr);
// {SK_d | SK_ai | SK_ar | SK_ei | SK_er | SK_pi | SK_pr} = prf+(SKEYSEED, Ni | Nr | SPIi | SPIr)
Result<IkeKeys> derive_ike_keys(const IkeAlgorithms& algs, BytesView skeyseed, BytesView ni, BytesView nr,
                                uint64_t spi_i, uint64_t spi_r);

// ESP key sizes: x2sec::esp_encr_key_size / esp_integ_key_size (common/child_sa.hpp).
// KEYMAT = prf+(SK_d, [g^ir (new) |] Ni | Nr): initiator->responder keys first (encryption
// then integrity), then responder->initiator.  "initiator" is the exchange's initiator.
struct ChildKeys {
    DirectionKeys i_to_r, r_to_i;
};
Result<ChildKeys> derive_child_keys(const crypto::Prf& prf, BytesView sk_d, EspCipher cipher,
                                    std::optional<BytesView> g_ir, BytesView ni, BytesView nr);

// The octets an AUTH payload signs or MACs (2.15):
//   RealMessage | NoncePeerData | prf(SK_p, RestOfIDPayload)
// where RestOfIDPayload is the ID payload body (type, 3 reserved octets, data).
Bytes signed_octets(const crypto::Prf& prf, BytesView sk_p, BytesView real_message, BytesView peer_nonce,
                    uint8_t id_type, BytesView id_data);
// Method 2: AUTH = prf(prf(Shared Secret, "Key Pad for IKEv2"), signed octets)
SecureBytes psk_auth(const crypto::Prf& prf, BytesView psk, BytesView octets);

// RFC 7427 SIGNATURE_HASH_ALGORITHMS hash identifiers.
enum class HashId : uint16_t { Sha1 = 1, Sha256 = 2, Sha384 = 3, Sha512 = 4, Identity = 5 };

// Method 14 AUTH data: 1-octet length | AlgorithmIdentifier DER | signature.
Result<Bytes> signature_auth_data(const crypto::Signer& key, crypto::SigScheme scheme, BytesView octets);
// Parses method 14 data; returns the scheme and the signature.
struct SignatureAuth {
    crypto::SigScheme scheme;
    Bytes signature;
};
Result<SignatureAuth> parse_signature_auth(BytesView data);

}  // namespace x2sec::ike
