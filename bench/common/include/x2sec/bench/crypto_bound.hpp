// The crypto bound: what OpenSSL alone can do on this machine, measured in the same process as
// the benchmark that prints it, so a figure such as "IKE setups/s" or "ESP Gbit/s" is read as a
// fraction of the cryptography it cannot avoid.  Everything here calls OpenSSL's EVP API
// directly (no x2sec wrappers), single-threaded, per CPU-second of the measuring thread.
//
//   auto bound = x2sec::bench::measure_crypto_bound();
//   std::cout << bound.to_text();
//   std::cout << x2sec::bench::versus("IKE_SA+Child SA setups/s", ours, bound.ike_responder_bound());
#pragma once

#include <ctime>
#include <cstddef>
#include <cstdint>
#include <string>

namespace x2sec::bench {

struct BoundOptions {
    double seconds_per_item = 0.3;  // minimum measuring time per primitive
    size_t packet_size = 1400;      // plaintext octets per AES-GCM operation
};

struct CryptoBound {
    size_t packet_size = 0;
    double ecdh_p256_keygen_per_s = 0;   // EVP_PKEY_generate from a cached P-256 parameters key
    double ecdh_p256_derive_per_s = 0;   // import the peer's point (on-curve check) + EVP_PKEY_derive, P-256
    double ecdsa_p256_sign_per_s = 0;    // EVP_DigestSign SHA-256, P-256
    double ecdsa_p256_verify_per_s = 0;  // EVP_DigestVerify SHA-256, P-256
    double x25519_keygen_per_s = 0;
    double x25519_derive_per_s = 0;
    double aes128_gcm_bytes_per_s = 0;  // seal of packet_size octets, new IV each time
    double aes128_gcm_packets_per_s = 0;

    // What a responder must compute per IKE_SA + first Child SA with ECDSA P-256 certificates
    // and group 19: one ECDH keygen, one derive, one AUTH signature, and `verifies` signature
    // checks (the peer's AUTH plus its certificate chain; 2 for leaf-under-root).  Returns the
    // setups/s a single core could reach if nothing else cost anything.
    double ike_responder_bound(unsigned verifies = 2) const;
    // Multi-line human-readable table.
    std::string to_text() const;
};

CryptoBound measure_crypto_bound(const BoundOptions& opts = {});

// AES-GCM seal throughput (bytes/s) for one packet size and key length, raw EVP.
double measure_aes_gcm_bytes_per_s(size_t packet_size, unsigned key_bits, double seconds);

// "name: <ours> (<pct>% of bound <bound>)" — one line, for printing figures side by side.
std::string versus(const std::string& name, double ours, double bound);

// CPU time consumed by the calling thread, in seconds (CLOCK_THREAD_CPUTIME_ID).  The bound
// is measured in thread CPU time so that it does not depend on how busy the machine is; a
// benchmark comparing itself with the bound should count its own CPU time the same way
// (e.g. the responder thread's CPU seconds per established IKE SA).
inline double thread_cpu_seconds() {
    timespec ts{};
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

// Runs fn repeatedly (doubling batches) for at least `seconds` of this thread's CPU time and
// returns calls per CPU-second.
template <typename Fn>
double ops_per_second(Fn&& fn, double seconds) {
    uint64_t n = 0;
    uint64_t batch = 1;
    const double start = thread_cpu_seconds();
    double elapsed = 0;
    for (;;) {
        for (uint64_t i = 0; i < batch; ++i) fn();
        n += batch;
        elapsed = thread_cpu_seconds() - start;
        if (elapsed >= seconds) break;
        if (batch < (uint64_t{1} << 20)) batch *= 2;
    }
    return static_cast<double>(n) / elapsed;
}

}  // namespace x2sec::bench
