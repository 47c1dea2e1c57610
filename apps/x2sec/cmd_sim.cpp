// `x2sec sim`: many H(e)NBs with mixed vendors and policies on a virtual clock (see
// src/node/include/x2sec/scenario/sim.hpp and docs/node.md).
#include <iostream>
#include <tuple>
#include <x2sec/common/log.hpp>
#include <x2sec/scenario/sim.hpp>

#include "registry.hpp"

static x2sec::app::Command reg(
    "sim", "Simulate many H(e)NBs and their neighbour relations on a virtual clock", [](CLI::App& app) {
        auto o = std::make_shared<x2sec::scenario::SimOptions>();
        auto verbose = std::make_shared<bool>(false);
        auto list = std::make_shared<bool>(false);
        auto no_certreq = std::make_shared<bool>(false);
        auto ra_down = std::make_shared<std::vector<double>>();
        auto revoke_at = std::make_shared<double>(120);
        auto duration = std::make_shared<double>(600);
        app.add_option("--seed", o->seed, "Seed: topology, policies, boot times, every choice (default 1)");
        app.add_option("--nodes", o->node_count, "Number of H(e)NBs, 2..500 (default 50)");
        app.add_option("--degree", o->degree, "Neighbour relations per node, even, 2..16 (default 4)");
        app.add_option("--vendors", o->vendors, "Number of vendors (root CAs), 1..6 (default 3)");
        // Shares (0..1, checked by run_sim): --<what>-share.
        for (auto [flag, share, help] :
             {std::tuple{"--cmp-share", &o->cmp_share, "Share of nodes supporting CMPv2 (default 0.7)"},
              std::tuple{"--ipsec-off-share", &o->ipsec_off_share, "Share of relations with IPsec off (default 0.1)"},
              std::tuple{"--psk-share", &o->psk_share, "Share of relations with psk-from-network (default 0.15)"},
              std::tuple{"--hint-share", &o->hint_share,
                         "Share of certificate relations configured with the peer's anchor (default 0.5)"}})
            app.add_option(flag, *share, help);
        app.add_flag("--no-certreq", *no_certreq, "Engines send no CERTREQ: peers are learnt from AUTH_FAILED only");
        app.add_option("--latency-ms", o->latency_ms, "One-way latency between nodes and to the SeGW (default 5)");
        app.add_option("--duration", *duration, "Virtual seconds to run (default 600)");
        app.add_option("--ra-down", *ra_down, "Fault: RA/CA down from..until virtual seconds, e.g. --ra-down 0 30")
            ->expected(2);
        app.add_option("--revoke", o->revoke, "Fault: revoke this many operator certificates (first enrolled nodes)");
        app.add_option("--revoke-at", *revoke_at, "Virtual second of the revocation (default 120)");
        app.add_option("--kds-refuse", o->kds_refuse, "Fault: PSK relations the KDS does not authorise");
        app.add_flag("--relations", *list, "List every relation with its outcome");
        app.add_flag("-v,--verbose", *verbose, "Log the agents' decisions and the engines (very long)");
        return [=]() -> int {
            using namespace x2sec;
            log::set_level(*verbose ? "info" : "error");
            o->certreq = !*no_certreq;
            o->duration_ms = Millis(*duration * 1000);
            o->revoke_at_ms = Millis(*revoke_at * 1000);
            if (ra_down->size() == 2)
                o->ra_down = std::make_pair(Millis((*ra_down)[0] * 1000), Millis((*ra_down)[1] * 1000));
            auto r = scenario::run_sim(*o);
            if (!r.ok()) {
                std::cerr << "x2sec sim: " << r.error().to_string() << "\n";
                return 1;
            }
            std::cout << scenario::render_sim_report(*r);
            if (*list) {
                std::cout << "\nrelations:\n";
                for (auto& x : r->relations) {
                    std::cout << "  " << x.a_name << " <-> " << x.b_name << "  " << x.outcome
                              << "  (settled t=" << x.settled_at / 1000.0 << " s"
                              << (x.learnt.empty() ? "" : ", CA question by " + x.learnt) << ")\n";
                    if (!x.reason.empty()) std::cout << "      " << x.reason << "\n";
                }
            }
            return r->converged ? 0 : 3;
        };
    });
