#include "operations.hpp"

#include <utility>

namespace x2sec::scenario {

using namespace x2sec::node;

namespace {

std::string entity(const std::string& henb) {
    return "H(e)NB " + henb;
}

PhaseRecord phase(std::string name, Carried c, double t0, Fabric& f, std::set<std::string> entities) {
    PhaseRecord p{std::move(name), true, std::move(c.detail), std::move(c.measure)};
    if (p.measure.time_ms == 0) p.measure.time_ms = f.clock_ms() - t0;
    p.measure.entities = std::move(entities);
    return p;
}

IkeEnd end_of(const policy::HenbConfig* h, const std::string& name, const std::string& identity, NodeKeys& k,
              Credential cred, const SecureBytes& psk) {
    IkeEnd e;
    e.henb = h;
    e.name = name;
    e.identity = identity;
    e.cred = cred;
    e.psk = &psk;
    if (cred == Credential::OperatorCertificate) {
        e.cert_pem = k.op_cert_pem;
        e.key_pem = k.op_key_pem;
    } else {
        e.cert_pem = k.vendor.chain_pem;
        e.key_pem = k.vendor.key_pem;
    }
    return e;
}

}  // namespace

Operations make_operations(Fabric& f) {
    Operations ops;
    ops.backhaul = [&f](const policy::HenbConfig& h) -> Result<PhaseRecord> {
        double t0 = f.clock_ms();
        X2SEC_TRY(auto c, f.backhaul(h));
        return phase("backhaul", std::move(c), t0, f, {entity(h.name), "SeGW"});
    };
    ops.enrol = [&f](const policy::HenbConfig& h) -> Result<PhaseRecord> {
        double t0 = f.clock_ms();
        X2SEC_TRY(auto e, f.enrol(h));
        NodeKeys& k = f.keys(h.name);
        k.op_key_pem = std::move(e.key_pem);
        k.op_cert_pem = std::move(e.cert_pem);
        k.op_serial_hex = std::move(e.serial_hex);
        if (e.carried.measure.round_trips == 0) e.carried.measure.round_trips = e.carried.measure.messages / 2;
        return phase("cmp-enrolment", std::move(e.carried), t0, f, {entity(h.name), "operator RA/CA (via SeGW)"});
    };
    if (f.has_kds())
        ops.fetch_key = [&f](const policy::HenbConfig& h, const policy::NeighbourConfig& n, SecureBytes& key,
                             std::string& key_id) -> Result<PhaseRecord> {
            double t0 = f.clock_ms();
            X2SEC_TRY(auto r, f.fetch_key(h, n));
            key = std::move(r.key);
            key_id = std::move(r.key_id);
            return phase("kds-fetch", std::move(r.carried), t0, f, {entity(h.name), "KDS (via SeGW)"});
        };
    ops.ike = [&f](const policy::HenbConfig& h, const policy::NeighbourConfig& nc, Credential cred,
                   const SecureBytes& psk, IkeFailure& failure) -> Result<PhaseRecord> {
        // The responder decides on its own; it must be ready for us before we start.
        Agent& peer_agent = f.agent(nc.name);
        NeighbourStatus* back = peer_agent.neighbour(h.name);
        if (!back) return Error(ErrorDomain::Ike, 0, nc.name + " has no neighbour relation with " + h.name);
        if (back->state != LinkState::Ready && back->state != LinkState::Up) peer_agent.prepare(h.name, f.now());
        if (back->state != LinkState::Ready && back->state != LinkState::Up)
            return Error(ErrorDomain::Ike, 0, nc.name + " is not ready for " + h.name + ": " + back->reason);
        double t0 = f.clock_ms();
        IkeAttempt a{end_of(&h, h.name, h.identity, f.keys(h.name), cred, psk),
                     end_of(&peer_agent.henb(), nc.name, nc.identity, f.keys(nc.name), back->credential, back->psk),
                     peer_agent, failure};
        X2SEC_TRY(auto c, f.ike(a));
        auto p = phase("ike", std::move(c), t0, f, {entity(h.name), entity(nc.name)});
        peer_agent.mark_up(h.name, back->credential, p.detail, f.now());
        return p;
    };
    return ops;
}

}  // namespace x2sec::scenario
