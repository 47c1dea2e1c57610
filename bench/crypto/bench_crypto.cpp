// x2sec::crypto wrappers beside the raw OpenSSL EVP calls they wrap, so the wrapper overhead
// is visible (Ours/... vs Raw/... pairs), followed by the crypto bound table.
//
//   build/bench/crypto/bench_crypto [--benchmark_filter=Ecdh] [--benchmark_min_time=0.2]
#include <benchmark/benchmark.h>
#include <iostream>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <vector>
#include <x2sec/bench/crypto_bound.hpp>
#include <x2sec/common/rng.hpp>
#include <x2sec/crypto/crypto.hpp>

using namespace x2sec;
using namespace x2sec::crypto;

namespace {

template <typename T>
T must(Result<T> r) {
    if (!r.ok()) {
        std::cerr << "bench_crypto: " << r.error().to_string() << "\n";
        std::abort();
    }
    return std::move(r).value();
}

// ------------------------------------------------------------------ ECDH P-256 / X25519

void Ours_DhGenerateDerive(benchmark::State& st, DhGroup g) {
    auto peer = must(DhKeyPair::generate(g));
    for (auto _ : st) {
        auto kp = must(DhKeyPair::generate(g));
        auto s = must(kp.derive(peer.public_value()));
        benchmark::DoNotOptimize(s.data());
    }
}

// What DhKeyPair does, in raw EVP: keygen, decode the peer's wire value (EC: on-curve check),
// derive.
void Raw_DhGenerateDerive(benchmark::State& st, const char* alg, const char* group) {
    EVP_PKEY* b = group ? EVP_PKEY_Q_keygen(nullptr, nullptr, alg, group) : EVP_PKEY_Q_keygen(nullptr, nullptr, alg);
    unsigned char pub[200];
    size_t pub_len = 0;
    EVP_PKEY_get_octet_string_param(b, OSSL_PKEY_PARAM_ENCODED_PUBLIC_KEY, pub, sizeof(pub), &pub_len);
    unsigned char out[64];
    for (auto _ : st) {
        EVP_PKEY* k =
            group ? EVP_PKEY_Q_keygen(nullptr, nullptr, alg, group) : EVP_PKEY_Q_keygen(nullptr, nullptr, alg);
        EVP_PKEY* peer = nullptr;
        if (group != nullptr) {
            OSSL_PARAM params[3] = {
                OSSL_PARAM_construct_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, const_cast<char*>(group), 0),
                OSSL_PARAM_construct_octet_string(OSSL_PKEY_PARAM_PUB_KEY, pub, pub_len), OSSL_PARAM_construct_end()};
            EVP_PKEY_CTX* pc = EVP_PKEY_CTX_new_from_name(nullptr, alg, nullptr);
            EVP_PKEY_fromdata_init(pc);
            EVP_PKEY_fromdata(pc, &peer, EVP_PKEY_PUBLIC_KEY, params);
            EVP_PKEY_CTX_free(pc);
        } else {
            peer = EVP_PKEY_new_raw_public_key(EVP_PKEY_get_base_id(b), nullptr, pub, pub_len);
        }
        EVP_PKEY_CTX* ctx = EVP_PKEY_CTX_new_from_pkey(nullptr, k, nullptr);
        size_t len = sizeof(out);
        EVP_PKEY_derive_init(ctx);
        EVP_PKEY_derive_set_peer_ex(ctx, peer, 0);
        if (EVP_PKEY_derive(ctx, out, &len) != 1) st.SkipWithError("derive failed");
        benchmark::DoNotOptimize(out);
        EVP_PKEY_CTX_free(ctx);
        EVP_PKEY_free(peer);
        EVP_PKEY_free(k);
    }
    EVP_PKEY_free(b);
}

BENCHMARK_CAPTURE(Ours_DhGenerateDerive, ecp256, DhGroup::Ecp256);
BENCHMARK_CAPTURE(Raw_DhGenerateDerive, ecp256, "EC", "P-256");
BENCHMARK_CAPTURE(Ours_DhGenerateDerive, x25519, DhGroup::Curve25519);
BENCHMARK_CAPTURE(Raw_DhGenerateDerive, x25519, "X25519", nullptr);
BENCHMARK_CAPTURE(Ours_DhGenerateDerive, ecp384, DhGroup::Ecp384);
BENCHMARK_CAPTURE(Raw_DhGenerateDerive, ecp384, "EC", "P-384");
BENCHMARK_CAPTURE(Ours_DhGenerateDerive, modp2048, DhGroup::Modp2048)->Unit(benchmark::kMillisecond);

// ------------------------------------------------------------------ ECDSA P-256

const std::vector<uint8_t>& auth_octets() {
    static std::vector<uint8_t> m(512, 0x42);
    return m;
}

void Ours_EcdsaSign(benchmark::State& st) {
    auto key = must(PrivateKey::generate(KeyType::EcP256));
    for (auto _ : st) benchmark::DoNotOptimize(must(key.sign(SigScheme::EcdsaSha256, auth_octets())));
}

void Raw_EcdsaSign(benchmark::State& st) {
    EVP_PKEY* key = EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256");
    unsigned char sig[128];
    for (auto _ : st) {
        EVP_MD_CTX* m = EVP_MD_CTX_new();
        size_t len = sizeof(sig);
        EVP_DigestSignInit_ex(m, nullptr, "SHA256", nullptr, nullptr, key, nullptr);
        EVP_DigestSign(m, sig, &len, auth_octets().data(), auth_octets().size());
        benchmark::DoNotOptimize(sig);
        EVP_MD_CTX_free(m);
    }
    EVP_PKEY_free(key);
}

void Ours_EcdsaVerify(benchmark::State& st) {
    auto key = must(PrivateKey::generate(KeyType::EcP256));
    auto sig = must(key.sign(SigScheme::EcdsaSha256, auth_octets()));
    for (auto _ : st) {
        auto s = verify_signature(key.public_key(), SigScheme::EcdsaSha256, auth_octets(), sig);
        if (!s.ok()) st.SkipWithError("verify failed");
    }
}

void Raw_EcdsaVerify(benchmark::State& st) {
    EVP_PKEY* key = EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256");
    unsigned char sig[128];
    size_t len = sizeof(sig);
    EVP_MD_CTX* m0 = EVP_MD_CTX_new();
    EVP_DigestSignInit_ex(m0, nullptr, "SHA256", nullptr, nullptr, key, nullptr);
    EVP_DigestSign(m0, sig, &len, auth_octets().data(), auth_octets().size());
    EVP_MD_CTX_free(m0);
    for (auto _ : st) {
        EVP_MD_CTX* m = EVP_MD_CTX_new();
        EVP_DigestVerifyInit_ex(m, nullptr, "SHA256", nullptr, nullptr, key, nullptr);
        if (EVP_DigestVerify(m, sig, len, auth_octets().data(), auth_octets().size()) != 1)
            st.SkipWithError("verify failed");
        EVP_MD_CTX_free(m);
    }
    EVP_PKEY_free(key);
}

BENCHMARK(Ours_EcdsaSign);
BENCHMARK(Raw_EcdsaSign);
BENCHMARK(Ours_EcdsaVerify);
BENCHMARK(Raw_EcdsaVerify);

// ------------------------------------------------------------------ SK payload AES-GCM

void Ours_SkGcmSeal(benchmark::State& st) {
    const size_t n = static_cast<size_t>(st.range(0));
    OsRng rng;
    auto c = must(SkCipher::create(EncrId::AesGcm16, 128, IntegId::None, SecureBytes(rng.bytes(20)), {}));
    const Bytes aad(32, 1), pt(n, 2);
    for (auto _ : st) benchmark::DoNotOptimize(must(c.seal(aad, pt, rng)));
    st.SetBytesProcessed(static_cast<int64_t>(st.iterations() * n));
}

void Raw_GcmSeal(benchmark::State& st) {
    const size_t n = static_cast<size_t>(st.range(0));
    unsigned char key[16], nonce[12], tag[16];
    RAND_bytes(key, 16);
    RAND_bytes(nonce, 12);
    std::vector<unsigned char> aad(32, 1), in(n + 1, 2), out(n + 1 + 8 + 16);
    uint64_t ctr = 0;
    for (auto _ : st) {
        // Like seal(): a fresh context per message, output buffer allocated each time.
        EVP_CIPHER_CTX* ctx = EVP_CIPHER_CTX_new();
        std::vector<unsigned char> buf(n + 1 + 8 + 16);
        ++ctr;
        for (int i = 0; i < 8; ++i) nonce[4 + i] = static_cast<unsigned char>(ctr >> (56 - 8 * i));
        int len = 0;
        EVP_EncryptInit_ex(ctx, EVP_aes_128_gcm(), nullptr, key, nonce);
        EVP_EncryptUpdate(ctx, nullptr, &len, aad.data(), static_cast<int>(aad.size()));
        EVP_EncryptUpdate(ctx, buf.data() + 8, &len, in.data(), static_cast<int>(in.size()));
        EVP_EncryptFinal_ex(ctx, buf.data() + 8 + len, &len);
        EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, 16, tag);
        benchmark::DoNotOptimize(buf.data());
        EVP_CIPHER_CTX_free(ctx);
    }
    st.SetBytesProcessed(static_cast<int64_t>(st.iterations() * n));
}

void Ours_SkCbcSeal(benchmark::State& st) {
    const size_t n = static_cast<size_t>(st.range(0));
    OsRng rng;
    auto c = must(SkCipher::create(EncrId::AesCbc, 128, IntegId::HmacSha2_256_128, SecureBytes(rng.bytes(16)),
                                   SecureBytes(rng.bytes(32))));
    const Bytes aad(32, 1), pt(n, 2);
    for (auto _ : st) benchmark::DoNotOptimize(must(c.seal(aad, pt, rng)));
    st.SetBytesProcessed(static_cast<int64_t>(st.iterations() * n));
}

BENCHMARK(Ours_SkGcmSeal)->Arg(64)->Arg(1400);
BENCHMARK(Raw_GcmSeal)->Arg(64)->Arg(1400);
BENCHMARK(Ours_SkCbcSeal)->Arg(64)->Arg(1400);

// ------------------------------------------------------------------ PRF / prf+

void Ours_PrfPlusKeymat(benchmark::State& st) {
    // IKE SA KEYMAT for AES-GCM-128 + PRF_HMAC_SHA2_256: SK_d, SK_ei/er (20 each), SK_pi/pr.
    auto prf = must(Prf::create(PrfId::HmacSha2_256));
    const Bytes skeyseed(32, 7), seed(16 + 16 + 8 + 8, 9);
    for (auto _ : st) benchmark::DoNotOptimize(must(prf.plus(skeyseed, seed, 32 + 40 + 64)));
}

void Ours_Hmac(benchmark::State& st) {
    const Bytes key(32, 7), data(64, 9);
    for (auto _ : st) benchmark::DoNotOptimize(hmac(Hash::Sha256, key, data));
}

void Raw_HmacOneShot(benchmark::State& st) {
    const std::vector<unsigned char> key(32, 7), data(64, 9);
    unsigned char out[32];
    size_t len = 0;
    for (auto _ : st) {
        EVP_Q_mac(nullptr, "HMAC", nullptr, "SHA256", nullptr, key.data(), key.size(), data.data(), data.size(), out,
                  sizeof(out), &len);
        benchmark::DoNotOptimize(out);
    }
}

BENCHMARK(Ours_PrfPlusKeymat);
BENCHMARK(Ours_Hmac);
BENCHMARK(Raw_HmacOneShot);

// ------------------------------------------------------------------ randomness, short digests

// What an IKE setup draws: SPIs, nonces, IVs, DH scalars (8-32 octets each, ~10 per setup).
void Ours_OsRngSmall(benchmark::State& st) {
    OsRng rng;
    uint8_t b[64];
    for (auto _ : st) {
        rng.fill(std::span<uint8_t>(b, static_cast<size_t>(st.range(0))));
        benchmark::DoNotOptimize(b);
    }
}

void Raw_RandBytesSmall(benchmark::State& st) {
    unsigned char b[64];
    for (auto _ : st) {
        RAND_bytes(b, static_cast<int>(st.range(0)));
        benchmark::DoNotOptimize(b);
    }
}

// NAT_DETECTION and CERTREQ hashes: SHA-1 over a few dozen octets.
void Ours_Sha1Short(benchmark::State& st) {
    const Bytes data(64, 9);
    for (auto _ : st) benchmark::DoNotOptimize(digest(Hash::Sha1, data));
}

void Raw_Sha1ShortImplicitFetch(benchmark::State& st) {
    const std::vector<unsigned char> data(64, 9);
    unsigned char out[20];
    unsigned int len = 0;
    for (auto _ : st) {
        EVP_Digest(data.data(), data.size(), out, &len, EVP_sha1(), nullptr);
        benchmark::DoNotOptimize(out);
    }
}

BENCHMARK(Ours_OsRngSmall)->Arg(8)->Arg(32);
BENCHMARK(Raw_RandBytesSmall)->Arg(8)->Arg(32);
BENCHMARK(Ours_Sha1Short);
BENCHMARK(Raw_Sha1ShortImplicitFetch);

}  // namespace

int main(int argc, char** argv) {
    benchmark::Initialize(&argc, argv);
    if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    std::cout << "\n" << x2sec::bench::measure_crypto_bound().to_text();
    return 0;
}
