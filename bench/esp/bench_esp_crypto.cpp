// ESP data-plane crypto throughput on one core, beside `openssl speed` measured in the same
// run.  Encapsulates and decapsulates 1400-octet IPv4 packets with DataPlane::protect and
// DataPlane::unprotect (policy lookup, sequence numbers, replay window, GCM, padding checks,
// selector checks: the whole per-packet path except the system calls), in place, no
// allocation.  Reference: `openssl speed -evp aes-128-gcm -bytes 1400` (one pass of GCM per
// 1400 octets).  Encrypt+decrypt is two GCM passes, so the fair comparison for the round trip
// is openssl/2; encap-only and decap-only are compared with openssl directly.
//
//   usage: bench_esp_crypto [seconds=3] [cipher=aes128gcm|aes256gcm|aes128-sha256]
#include <sched.h>
#include <time.h>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>
#include <x2sec/common/log.hpp>
#include <x2sec/esp/data_plane.hpp>

using namespace x2sec;
using namespace x2sec::esp;

namespace {

// `openssl speed` divides by the process's user CPU time (not wall time) unless -elapsed is
// given; measure ours by this thread's CPU time too, so that other load on the machine does
// not skew the comparison.
double cpu_seconds() {
    timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return double(ts.tv_sec) + double(ts.tv_nsec) * 1e-9;
}

ChildSaParams params(uint32_t in, uint32_t out, EspCipher c, bool mirror) {
    ChildSaParams p;
    p.reqid = 1;
    p.spi_in = in;
    p.spi_out = out;
    p.cipher = c;
    p.local_addr = IpAddress::v4(192, 0, 2, mirror ? 2 : 1);
    p.remote_addr = IpAddress::v4(192, 0, 2, mirror ? 1 : 2);
    auto n1 = TrafficSelector::from_prefix(IpAddress::v4(198, 51, 100, 0), 24);
    auto n2 = TrafficSelector::from_prefix(IpAddress::v4(203, 0, 113, 0), 24);
    p.ts_local = {mirror ? n2 : n1};
    p.ts_remote = {mirror ? n1 : n2};
    Bytes k1(esp_encr_key_size(c), 0x11), k2(esp_encr_key_size(c), 0x22), i1(esp_integ_key_size(c), 0x33),
        i2(esp_integ_key_size(c), 0x44);
    p.keys_out.enc_key = SecureBytes(mirror ? k2 : k1);
    p.keys_in.enc_key = SecureBytes(mirror ? k1 : k2);
    p.keys_out.integ_key = SecureBytes(mirror ? i2 : i1);
    p.keys_in.integ_key = SecureBytes(mirror ? i1 : i2);
    return p;
}

double openssl_speed(const char* evp, int seconds) {
    std::string cmd = std::string("openssl speed -mr -seconds ") + std::to_string(seconds) + " -bytes 1400 -evp " +
                      evp + " 2>/dev/null";
    FILE* f = ::popen(cmd.c_str(), "r");
    if (!f) return 0;
    char line[512];
    double bps = 0;
    while (std::fgets(line, sizeof(line), f)) {
        // "+F:<n>:<name>:<bytes per second>"
        if (std::strncmp(line, "+F:", 3) == 0) {
            const char* last = std::strrchr(line, ':');
            if (last) bps = std::atof(last + 1);
        }
    }
    ::pclose(f);
    return bps;
}

}  // namespace

int main(int argc, char** argv) {
    int seconds = argc > 1 ? std::atoi(argv[1]) : 3;
    std::string cname = argc > 2 ? argv[2] : "aes128gcm";
    EspCipher c = EspCipher::AesGcm16_128;
    const char* evp = "aes-128-gcm";
    if (cname == "aes256gcm") c = EspCipher::AesGcm16_256, evp = "aes-256-gcm";
    if (cname == "aes128-sha256") c = EspCipher::AesCbc128_HmacSha256_128, evp = "aes-128-cbc";
    log::set_level("warn");
    // One core: pin to the CPU we start on.
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(sched_getcpu(), &set);
    sched_setaffinity(0, sizeof(set), &set);

    Counters ca, cb;
    DataPlane a(ca), b(cb);
    if (!a.install(params(0x1001, 0x2002, c, false)).ok() || !b.install(params(0x2002, 0x1001, c, true)).ok()) {
        std::fprintf(stderr, "install failed\n");
        return 1;
    }
    const size_t kLen = 1400;
    std::vector<uint8_t> packet(kLen, 0);
    packet[0] = 0x45;
    packet[2] = kLen >> 8;
    packet[3] = kLen & 0xff;
    packet[8] = 64;
    packet[9] = 17;
    const uint8_t src[4] = {198, 51, 100, 1}, dst[4] = {203, 0, 113, 1};
    std::memcpy(&packet[12], src, 4);
    std::memcpy(&packet[16], dst, 4);
    for (size_t i = 28; i < kLen; ++i) packet[i] = uint8_t(i);
    std::vector<uint8_t> buf(kMaxHeadroom + kLen + kMaxTailroom + 64);

    double cpu_share = 1;
    auto run = [&](bool enc, bool dec, double secs) {
        uint64_t n = 0;
        double c0 = cpu_seconds();
        auto w0 = std::chrono::steady_clock::now();
        while (cpu_seconds() - c0 < secs) {
            for (int i = 0; i < 256; ++i) {
                std::memcpy(buf.data() + kMaxHeadroom, packet.data(), kLen);
                auto r = a.protect(buf, kLen, 0);
                if (!r.ok) std::abort();
                if (dec) {
                    auto u = b.unprotect(buf, r.esp_off, r.esp_len, 0);
                    if (!u.ok || u.ip_len != kLen) std::abort();
                }
            }
            n += 256;
        }
        double dt = cpu_seconds() - c0;
        double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - w0).count();
        cpu_share = dt / wall;
        (void)enc;
        return n / dt;
    };

    std::printf("x2sec ESP data plane, %s, 1400-octet IPv4 packets, one core, %d CPU-seconds per figure\n",
                to_string(c), seconds);
    double ossl = openssl_speed(evp, seconds);
    double encap = run(true, false, seconds);
    double both = run(true, true, seconds);
    double decap = 1.0 / (1.0 / both - 1.0 / encap);  // time(decap) = time(both) - time(encap)
    auto gbit = [](double pps) { return pps * 1400 * 8 / 1e9; };
    std::printf("  openssl speed -evp %s -bytes 1400:  %8.0f ops/s  %6.2f Gbit/s  (reference)\n", evp, ossl / 1400,
                ossl * 8 / 1e9);
    std::printf("  x2sec encap only:                      %8.0f pkt/s  %6.2f Gbit/s  %5.1f%% of openssl\n", encap,
                gbit(encap), 100 * encap * 1400 / ossl);
    std::printf("  x2sec decap only (derived):            %8.0f pkt/s  %6.2f Gbit/s  %5.1f%% of openssl\n", decap,
                gbit(decap), 100 * decap * 1400 / ossl);
    std::printf(
        "  x2sec encap+decap round trip:          %8.0f pkt/s  %6.2f Gbit/s  %5.1f%% of openssl/2 (goal >= 85%%)\n",
        both, gbit(both), 100 * both * 1400 / (ossl / 2));
    std::printf("  (both sides in CPU time; this thread got %.0f%% of a CPU during the last run)\n", 100 * cpu_share);
    if (c != EspCipher::AesGcm16_128 && c != EspCipher::AesGcm16_256)
        std::printf("  (CBC reference is encryption only; HMAC-SHA2-256 is extra work on our side)\n");
    return 0;
}
