// Feeds a byte string to a fresh responder engine as a sequence of datagrams:
//   [flags:1][length:2][datagram] ...   flags bit 0: arrived on the NAT-T port with the
//   non-ESP marker; bit 1: advance the clock 5 s and run timers afterwards.
// The responder is configured exactly like "b" of the exchange tests (PSK, seed 3), so a
// recorded initiator session replays deterministically (same SPIs, nonces, DH keys, keys).
#pragma once

#include <algorithm>
#include <x2sec/common/codec.hpp>
#include <x2sec/common/log.hpp>

#include "../../exchange/ikev2_harness.hpp"

namespace x2sec::test {

struct ReplayResult {
    size_t datagrams = 0;
    bool established = false;
    size_t children = 0;
};

inline ReplayResult replay_to_responder(BytesView input) {
    EngineConfig cfg;
    cfg.peers = {base_peer(false)};
    cfg.unix_time = [] { return int64_t{1'800'000'000}; };
    MemoryChildSaBackend backend;
    DeterministicRng rng(3);
    Engine e(cfg, backend, rng);
    Reader r(input);
    Millis now = 1000;
    ReplayResult res;
    while (r.remaining() >= 3) {
        uint8_t flags = r.u8();
        uint16_t len = r.u16();
        auto b = r.bytes(std::min<size_t>(len, r.remaining()));
        Datagram d;
        uint16_t port = (flags & 1) ? 4500 : 500;
        d.local = Endpoint{IpAddress::v4(192, 0, 2, 2), port};
        d.remote = Endpoint{IpAddress::v4(192, 0, 2, 1), port};
        d.non_esp_marker = flags & 1;
        d.data.assign(b.begin(), b.end());
        e.handle_datagram(d, now);
        if (flags & 2) {
            now += 5000;
            e.tick(now);
        }
        (void)e.take_outgoing();
        (void)e.take_events();
        ++res.datagrams;
    }
    auto sas = e.list_sas();
    res.established = !sas.empty() && sas[0].state == "ESTABLISHED";
    res.children = backend.installed_spis().size();
    e.tick(now + 3'600'000);
    (void)e.next_deadline();
    return res;
}

}  // namespace x2sec::test
