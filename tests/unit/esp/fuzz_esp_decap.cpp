// Fuzz target: the ESP receive path (RFC 3948 classification, SPI lookup, replay check, ICV,
// padding, next header, inner IP and selector checks) with SAs of every transform.  The
// first input octet picks the SA/cipher; the rest is the UDP payload.  A correct build never
// crashes and never delivers a packet that was not produced by the peer.
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <cstdint>
#include <memory>
#include <x2sec/esp/memory_backend.hpp>

using namespace x2sec;
using namespace x2sec::esp;

namespace {

struct Harness {
    Counters counters;
    DataPlane dp{counters};
    MemoryEndpoint ep{dp};
    Harness() {
        EspCipher ciphers[] = {EspCipher::AesGcm16_128, EspCipher::AesGcm16_256, EspCipher::AesCbc128_HmacSha256_128,
                               EspCipher::AesCbc256_HmacSha256_128};
        for (uint32_t i = 0; i < 8; ++i) {
            ChildSaParams p;
            p.reqid = i + 1;
            p.spi_in = 0x100 + i;
            p.spi_out = 0x200 + i;
            p.cipher = ciphers[i % 4];
            p.esn = i >= 4;
            p.mode = (i % 3 == 2) ? IpsecMode::Transport : IpsecMode::Tunnel;
            p.replay_window = 64;
            p.local_addr = IpAddress::v4(192, 0, 2, 1);
            p.remote_addr = IpAddress::v4(192, 0, 2, 2);
            p.ts_local = {TrafficSelector::from_prefix(IpAddress::v4(198, 51, 100, 0), 24)};
            p.ts_remote = {TrafficSelector::from_prefix(IpAddress::v4(203, 0, 113, 0), 24)};
            size_t ek = esp_encr_key_size(p.cipher), ik = esp_integ_key_size(p.cipher);
            p.keys_in.enc_key = SecureBytes(Bytes(ek, uint8_t(i)));
            p.keys_in.integ_key = SecureBytes(Bytes(ik, uint8_t(i + 1)));
            p.keys_out = p.keys_in;
            (void)dp.install(p);
        }
    }
    // X2SEC_FUZZ_STATS=1: print the counters at exit (to see which paths a corpus reaches).
    ~Harness() {
        if (!std::getenv("X2SEC_FUZZ_STATS")) return;
        for (auto& [k, v] : counters.snapshot())
            if (v) std::fprintf(stderr, "%s=%llu\n", k.c_str(), static_cast<unsigned long long>(v));
    }
};

Harness& harness() {
    static Harness h;
    return h;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    Harness& h = harness();
    if (size == 0) return 0;
    // Route to one of the installed SPIs when the input asks for it, so deep paths are hit.
    Bytes d(data + 1, data + size);
    if ((data[0] & 0x80) && d.size() >= 4) store_be32(d.data(), 0x100 + (data[0] & 7));
    h.ep.receive(d, 0);
    return 0;
}
