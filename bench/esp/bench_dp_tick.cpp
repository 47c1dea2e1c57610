// DataPlane::tick() with many Child SAs installed, none of them due: what the RX thread of an
// `x2sec ike run --dataplane tun` responder spends on lifetimes every tick (100 ms) besides
// the packets.  N = 1 is the reference measured in the same run: a tick whose cost does not
// depend on the SA count shows the same figure at 10,000 and 50,000.
//
//   build/bench/esp/bench_dp_tick [--benchmark_filter=NoneDue] [--benchmark_min_time=0.2]
#include <benchmark/benchmark.h>
#include <cstdlib>
#include <iostream>
#include <map>
#include <memory>
#include <x2sec/common/log.hpp>
#include <x2sec/esp/data_plane.hpp>

using namespace x2sec;
using namespace x2sec::esp;

namespace {

ChildSaParams params(uint32_t i) {
    ChildSaParams p;
    p.reqid = i + 1;
    p.spi_in = 0x10000000u + i;
    p.spi_out = 0x20000000u + i;
    p.cipher = EspCipher::AesGcm16_128;
    p.local_addr = *IpAddress::parse("192.0.2.1");
    p.remote_addr = *IpAddress::parse("192.0.2.2");
    IpAddress l = *IpAddress::parse("10.1.0.0"), r = *IpAddress::parse("10.2.0.0");
    l.bytes[2] = r.bytes[2] = uint8_t(i >> 8);
    l.bytes[3] = r.bytes[3] = uint8_t(i);
    l.bytes[1] = uint8_t(l.bytes[1] + (i >> 16));
    r.bytes[1] = uint8_t(r.bytes[1] + (i >> 16));
    p.ts_local = {TrafficSelector::from_prefix(l, 32)};
    p.ts_remote = {TrafficSelector::from_prefix(r, 32)};
    p.keys_in.enc_key = SecureBytes(Bytes(20, uint8_t(i)));
    p.keys_out.enc_key = SecureBytes(Bytes(20, uint8_t(i + 1)));
    // Every SA timed, all different, none due in the run (ticks of 100 ms: 10^10 ticks away).
    p.lifetime.soft_seconds = 1000000000u + i % 600;
    p.lifetime.hard_seconds = 2000000000u;
    p.name = "bench";
    return p;
}

struct Plane {
    Counters counters;
    DataPlane dp{counters};
    Millis now = 0;
};

// One data plane per SA count, built once (installing 50,000 SAs takes seconds) and ticked
// once so every SA's lifetime has started.
Plane& plane(size_t n) {
    static std::map<size_t, std::unique_ptr<Plane>> planes;
    auto& p = planes[n];
    if (!p) {
        p = std::make_unique<Plane>();
        for (size_t i = 0; i < n; ++i) {
            if (auto s = p->dp.install(params(uint32_t(i))); !s.ok()) {
                std::cerr << "bench_dp_tick: install: " << s.error().to_string() << "\n";
                std::abort();
            }
        }
        p->dp.tick(p->now);
    }
    return *p;
}

void BM_TickNoneDue(benchmark::State& st) {
    Plane& p = plane(size_t(st.range(0)));
    const uint64_t examined = p.dp.tick_examined();
    for (auto _ : st) {
        p.now += 100;  // 100 ms per tick, as the TUN backend does
        p.dp.tick(p.now);
    }
    st.counters["sas"] = double(p.dp.sa_count());
    st.counters["examined/tick"] =
        benchmark::Counter(double(p.dp.tick_examined() - examined), benchmark::Counter::kAvgIterations);
}

}  // namespace

BENCHMARK(BM_TickNoneDue)->Arg(1)->Arg(10000)->Arg(50000)->Unit(benchmark::kMicrosecond);

int main(int argc, char** argv) {
    log::set_level("warn");  // one "installed" line per SA otherwise
    benchmark::Initialize(&argc, argv);
    if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 2;
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    return 0;
}
