// NAT detection (RFC 7296 2.23) in IKE_SA_INIT, both roles: the natd task writes the
// NAT_DETECTION_SOURCE_IP / _DESTINATION_IP notifies (natd_payloads), checks the peer's against
// the addresses the message came over (process_natd) and, as initiator, floats to the NAT-T
// ports (float_ports) before IKE_AUTH.
#include "common.hpp"

namespace x2sec::ike {

using namespace wire;
using namespace task_util;

namespace {

Bytes natd_hash(uint64_t spi_i, uint64_t spi_r, const Endpoint& e) {
    Writer w;
    w.u64(spi_i);
    w.u64(spi_r);
    w.bytes(e.addr.view());
    w.u16(e.port);
    return crypto::digest(crypto::Hash::Sha1, w.data());
}

}  // namespace

std::vector<Payload> EngineImpl::natd_payloads(const IkeSa& sa, const Endpoint& local, const Endpoint& remote) const {
    std::vector<Payload> out;
    Bytes src = peer(sa).force_encap ? const_cast<Rng&>(m_rng).bytes(20) : natd_hash(sa.spi_i, sa.spi_r, local);
    out.push_back(notify_payload(notify::NatDetectionSourceIp, src));
    out.push_back(notify_payload(notify::NatDetectionDestinationIp, natd_hash(sa.spi_i, sa.spi_r, remote)));
    return out;
}

void EngineImpl::process_natd(IkeSa& sa, const std::vector<Payload>& pl, const Endpoint& local,
                              const Endpoint& remote) {
    bool any_src = false, src_match = false, any_dst = false, dst_match = false;
    Bytes want_src = natd_hash(sa.spi_i, sa.spi_r, remote), want_dst = natd_hash(sa.spi_i, sa.spi_r, local);
    for (const auto& p : pl) {
        auto* n = p.as<NotifyPayload>();
        if (!n) continue;
        if (n->type == notify::NatDetectionSourceIp) {
            any_src = true;
            src_match |= ct_equal(n->data, want_src);
        } else if (n->type == notify::NatDetectionDestinationIp) {
            any_dst = true;
            dst_match |= ct_equal(n->data, want_dst);
        }
    }
    if (any_src && any_dst) {
        sa.nat_remote = !src_match;
        sa.nat_local = !dst_match;
    }
    sa.encap = sa.nat_local || sa.nat_remote || peer(sa).force_encap;
    if (sa.nat_local || sa.nat_remote)
        m_log->info("IKE SA #{}: NAT detected ({}{}), UDP encapsulation", sa.id, sa.nat_local ? "local " : "",
                    sa.nat_remote ? "remote" : "");
}

void EngineImpl::float_ports(IkeSa& sa) {
    if (!sa.encap || sa.natt_port) return;
    const auto& p = peer(sa);
    sa.local.port = p.local_natt_port;
    sa.remote.port = p.remote_natt_port;
    sa.natt_port = true;
    m_log->info("IKE SA #{}: switching to NAT-T ports {} -> {}", sa.id, sa.local.to_string(), sa.remote.to_string());
}

namespace {

struct NatdTask final : Task {
    const char* name() const override { return "natd"; }
    Status build_i(EngineImpl& e, IkeSa& sa, std::vector<Payload>& out, Millis) override {
        for (auto& x : e.natd_payloads(sa, sa.local, sa.remote)) out.push_back(std::move(x));  // SPIr = 0
        return {};
    }
    Status process_i(EngineImpl& e, IkeSa& sa, const Checked& in, Millis) override {
        e.process_natd(sa, in.all(), sa.local, sa.remote);
        e.float_ports(sa);
        return {};
    }
    Status process_r(EngineImpl& e, IkeSa& sa, const Request& req, Millis) override {
        // NAT-D in the request was computed with SPIr = 0.
        uint64_t spi_r = sa.spi_r;
        sa.spi_r = 0;
        e.process_natd(sa, req.in.all(), sa.local, sa.remote);
        sa.spi_r = spi_r;
        return {};
    }
    Status build_r(EngineImpl& e, IkeSa& sa, const Request&, std::vector<Payload>& out, Millis) override {
        for (auto& x : e.natd_payloads(sa, sa.local, sa.remote)) out.push_back(std::move(x));
        return {};
    }
};

}  // namespace

std::unique_ptr<Task> make_natd_task() {
    return std::make_unique<NatdTask>();
}

}  // namespace x2sec::ike
