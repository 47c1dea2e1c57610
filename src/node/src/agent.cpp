#include <algorithm>
#include <nlohmann/json.hpp>
#include <sstream>
#include <x2sec/common/log.hpp>
#include <x2sec/node/agent.hpp>

namespace x2sec::node {

Measure& Measure::operator+=(const Measure& o) {
    messages += o.messages;
    bytes += o.bytes;
    round_trips += o.round_trips;
    time_ms += o.time_ms;
    entities.insert(o.entities.begin(), o.entities.end());
    return *this;
}

const char* to_string(Credential c) {
    switch (c) {
        case Credential::None:
            return "none";
        case Credential::VendorCertificate:
            return "vendor certificate";
        case Credential::OperatorCertificate:
            return "operator certificate";
        case Credential::PairwiseKey:
            return "pairwise key (PSK)";
    }
    return "?";
}

const char* to_string(LinkState s) {
    switch (s) {
        case LinkState::Idle:
            return "IDLE";
        case LinkState::Disabled:
            return "DISABLED";
        case LinkState::PlainX2:
            return "PLAIN-X2";
        case LinkState::Ready:
            return "READY";
        case LinkState::Up:
            return "UP";
        case LinkState::Down:
            return "DOWN";
    }
    return "?";
}

Agent::Agent(policy::DeploymentConfig config, const std::string& henb, Operations ops)
    : m_config(std::move(config)), m_ops(std::move(ops)) {
    m_henb = m_config.henb(henb);
    if (!m_henb) throw std::invalid_argument("no [[henb]] named '" + henb + "'");
    for (auto& n : m_henb->neighbours) {
        NeighbourStatus s;
        s.name = n.name;
        s.identity = n.identity;
        m_neighbours.push_back(std::move(s));
    }
}

NeighbourStatus* Agent::neighbour(const std::string& name) {
    for (auto& n : m_neighbours)
        if (n.name == name) return &n;
    return nullptr;
}

const policy::NeighbourConfig& Agent::ncfg(const NeighbourStatus& n) const {
    for (auto& c : m_henb->neighbours)
        if (c.name == n.name) return c;
    throw std::logic_error("neighbour config vanished");
}

void Agent::step(NeighbourStatus& n, Millis now, std::string text) {
    log::get("node")->info("{} -> {}: {}", m_henb->name, n.name, text);
    n.steps.push_back({now, std::move(text)});
}

void Agent::fail(NeighbourStatus& n, Millis now, std::string reason) {
    n.state = LinkState::Down;
    n.reason = reason;
    n.attempts += 1;
    Millis delay = policy::backoff_delay(m_config.backoff, n.attempts);
    n.next_retry_at = now + delay;
    n.psk.clear();
    step(n, now, "DOWN: " + reason + "; retry #" + std::to_string(n.attempts) + " in " + std::to_string(delay) + " ms");
    log::get("node")->warn("{}: neighbour {} DOWN: {}", m_henb->name, n.name, reason);
}

bool Agent::ensure_backhaul(Millis now) {
    if (m_backhaul_up) return true;
    if (m_backhaul_retry_at && now < *m_backhaul_retry_at) return false;
    if (!m_config.segw) {
        // No SeGW configured: the operator network is reached directly (lab without backhaul).
        m_backhaul_up = true;
        return true;
    }
    if (!m_ops.backhaul) {
        m_backhaul_reason = "backhaul not available: no IKE implementation wired in";
    } else {
        auto r = m_ops.backhaul(*m_henb);
        if (r.ok()) {
            m_node_phases.push_back(*r);
            m_backhaul_up = true;
            m_backhaul_attempts = 0;
            m_backhaul_retry_at.reset();
            m_backhaul_reason.clear();
            log::get("node")->info("{}: backhaul to SeGW {} up", m_henb->name, m_config.segw->identity);
            return true;
        }
        m_backhaul_reason = "backhaul to SeGW failed: " + r.error().detail();
    }
    m_backhaul_attempts += 1;
    m_backhaul_retry_at = now + policy::backoff_delay(m_config.backoff, m_backhaul_attempts);
    log::get("node")->warn("{}: {}", m_henb->name, m_backhaul_reason);
    return false;
}

void Agent::prepare(Millis now) {
    for (auto& n : m_neighbours) prepare(n.name, now);
}

void Agent::prepare(const std::string& name, Millis now) {
    NeighbourStatus* np = neighbour(name);
    if (!np) return;
    NeighbourStatus& n = *np;
    if (n.state == LinkState::Up || n.state == LinkState::Ready) return;
    if (n.next_retry_at && now < *n.next_retry_at) return;
    const auto& nc = ncfg(n);
    n.steps.clear();
    n.phases.clear();
    n.next_retry_at.reset();

    policy::LocalFacts lf = policy::local_facts(m_config, *m_henb);
    lf.holds_operator_cert = m_operator_cert;
    policy::PeerFacts pf = policy::peer_facts(m_config, *m_henb, nc);
    pf.auth_failed_untrusted_ca = n.observed_untrusted_ca;
    if (n.observed_certreq) pf.certreq_anchors = n.observed_certreq;
    if (m_operator_cert && n.observed_untrusted_ca) pf.peer_holds_operator_cert = true;
    if (n.attempts > 0 && !m_redeciding) {
        step(n, now, "retry #" + std::to_string(n.attempts));
        // What the peer showed may have changed since (new trust anchors, a new certificate):
        // the retry probes again instead of repeating a decision built on old observations.
        if (n.observed_untrusted_ca || n.observed_certreq) {
            step(n, now,
                 "retry: forgetting earlier observations of the peer (" +
                     std::string(n.observed_untrusted_ca ? "untrusted-CA failure" : "") +
                     (n.observed_untrusted_ca && n.observed_certreq ? ", " : "") +
                     (n.observed_certreq ? "CERTREQ" : "") + ") and probing again");
            n.observed_untrusted_ca = false;
            n.observed_certreq.reset();
            pf = policy::peer_facts(m_config, *m_henb, nc);
        }
    }
    n.decision = policy::decide(lf, pf);
    for (auto& s : n.decision.steps) step(n, now, "decide: " + s);
    if (n.decision.warning) log::get("node")->warn("{} -> {}: WARNING: {}", m_henb->name, n.name, *n.decision.warning);

    using policy::Action;
    switch (n.decision.action) {
        case Action::Disabled:
            n.state = LinkState::Disabled;
            return;
        case Action::PlainX2:
            n.state = LinkState::PlainX2;
            n.credential = Credential::None;
            n.reason = *n.decision.warning;
            n.attempts = 0;
            return;
        case Action::Down:
            fail(n, now, n.decision.down_reason);
            return;
        case Action::IkeCurrentCert:
            n.credential = Credential::VendorCertificate;
            n.state = LinkState::Ready;
            return;
        case Action::IkeOperatorCert:
            n.credential = Credential::OperatorCertificate;
            n.state = LinkState::Ready;
            return;
        case Action::EnrolThenIkeOperatorCert: {
            if (!ensure_backhaul(now)) {
                fail(n, now, "RA/CA unreachable: " + m_backhaul_reason);
                return;
            }
            if (!m_ops.enrol) {
                fail(n, now, "CMPv2 enrolment not available in this build");
                return;
            }
            step(n, now,
                 "CMPv2: enrolling an operator certificate at " + m_config.cmp->url +
                     " (authenticated with the vendor certificate)");
            auto r = m_ops.enrol(*m_henb);
            if (!r.ok()) {
                PhaseRecord p{"cmp-enrolment", false, r.error().detail(), {}};
                n.phases.push_back(p);
                fail(n, now, "CMPv2 enrolment failed: " + r.error().detail());
                return;
            }
            n.phases.push_back(*r);
            m_operator_cert = true;
            step(n, now, "CMPv2: operator certificate enrolled (" + r->detail + ")");
            n.credential = Credential::OperatorCertificate;
            n.state = LinkState::Ready;
            return;
        }
        case Action::KdsPskThenIke: {
            if (!ensure_backhaul(now)) {
                fail(n, now, "KDS unreachable: " + m_backhaul_reason);
                return;
            }
            if (!m_ops.fetch_key) {
                fail(n, now, "KDS client not available in this build");
                return;
            }
            step(n, now,
                 "KDS: requesting the pairwise key for " + n.identity + " at " + m_config.kds->address.to_string() +
                     " (mutual TLS via the backhaul)");
            SecureBytes key;
            std::string key_id;
            auto r = m_ops.fetch_key(*m_henb, nc, key, key_id);
            if (!r.ok()) {
                n.phases.push_back(PhaseRecord{"kds-fetch", false, r.error().detail(), {}});
                fail(n, now, "KDS refused or failed: " + r.error().detail());
                return;
            }
            n.phases.push_back(*r);
            n.psk = std::move(key);
            n.psk_key_id = key_id;
            step(n, now, "KDS: got key id " + key_id + " (" + r->detail + ")");
            n.credential = Credential::PairwiseKey;
            n.state = LinkState::Ready;
            return;
        }
    }
}

LinkState Agent::connect(const std::string& name, Millis now) {
    NeighbourStatus* np = neighbour(name);
    if (!np) return LinkState::Idle;
    NeighbourStatus& n = *np;
    // Up to three attempts per call, each after the peer showed something new (an untrusted-CA
    // failure, a CERTREQ): e.g. CERTREQ without our anchor -> enrol -> operator certificate;
    // or vendor certificate rejected -> enrol -> peer rejects ours -> both on operator ones.
    for (int round = 0; round < 3 && n.state == LinkState::Ready; ++round) {
        if (!m_ops.ike) {
            fail(n, now, "IKEv2 not available in this build");
            break;
        }
        step(n, now, std::string("IKEv2: IKE_SA_INIT + IKE_AUTH with ") + to_string(n.credential));
        IkeFailure failure;
        auto r = m_ops.ike(*m_henb, ncfg(n), n.credential, n.psk, failure);
        if (r.ok()) {
            n.phases.push_back(*r);
            n.state = LinkState::Up;
            n.attempts = 0;
            n.reason.clear();
            n.tunnel_detail = r->detail;
            n.next_retry_at.reset();
            n.psk.clear();  // the IKE SA is up: the pairwise key is no longer needed here
            step(n, now, "UP: " + r->detail);
            return n.state;
        }
        n.phases.push_back(PhaseRecord{"ike", false, r.error().detail(), {}});
        bool news = false;
        if (failure.certreq_anchors && n.observed_certreq != failure.certreq_anchors) {
            n.observed_certreq = failure.certreq_anchors;
            std::string list;
            for (auto& a : *failure.certreq_anchors) list += (list.empty() ? "" : ", ") + a;
            step(n, now,
                 "peer's CERTREQ names [" + list + "]" +
                     (failure.aborted_on_certreq ? ": IKE_AUTH not sent (" + r.error().detail() + ")" : ""));
            news = true;
        }
        if (failure.untrusted_ca && !n.observed_untrusted_ca) {
            n.observed_untrusted_ca = true;
            step(n, now, "IKEv2 failed, peer's CA not trusted (" + r.error().detail() + ")");
            news = true;
        }
        if (news && round < 2) {
            step(n, now, "re-running the decision with what the peer showed");
            n.state = LinkState::Idle;
            n.next_retry_at.reset();
            auto phases = n.phases;
            auto steps = n.steps;
            m_redeciding = true;  // not a retry: the same attempt with new facts
            prepare(name, now);
            m_redeciding = false;
            n.phases.insert(n.phases.begin(), phases.begin(), phases.end());
            n.steps.insert(n.steps.begin(), steps.begin(), steps.end());
            continue;
        }
        fail(n, now, "IKEv2 failed: " + r.error().detail());
        break;
    }
    return n.state;
}

void Agent::run(Millis now) {
    for (auto& n : m_neighbours) {
        prepare(n.name, now);
        if (n.state == LinkState::Ready) connect(n.name, now);
    }
}

void Agent::observe_peer_failure(const std::string& name, bool untrusted_ca, Millis now) {
    NeighbourStatus* n = neighbour(name);
    if (!n) return;
    if (untrusted_ca && !n->observed_untrusted_ca) {
        n->observed_untrusted_ca = true;
        step(*n, now,
             "IKE_AUTH failed on an untrusted CA (the peer's chain, or ours as the peer answered): "
             "the decision will change");
    }
    if (n->state == LinkState::Ready) n->state = LinkState::Idle;
}

void Agent::observe_certreq(const std::string& name, const std::vector<std::string>& anchors, Millis now) {
    NeighbourStatus* n = neighbour(name);
    if (!n) return;
    if (n->observed_certreq == anchors) return;
    n->observed_certreq = anchors;
    std::string list;
    for (auto& a : anchors) list += (list.empty() ? "" : ", ") + a;
    step(*n, now, "peer's CERTREQ names [" + list + "]");
    if (n->state == LinkState::Ready && n->credential != Credential::PairwiseKey &&
        certreq_mismatch(n->credential, anchors))
        n->state = LinkState::Idle;
}

std::optional<std::string> Agent::certreq_mismatch(Credential c, const std::vector<std::string>& anchors) const {
    if (anchors.empty() || c == Credential::PairwiseKey || c == Credential::None) return std::nullopt;
    std::string mine =
        c == Credential::OperatorCertificate ? policy::LocalFacts{}.operator_anchor : m_henb->certificate_anchor;
    if (std::find(anchors.begin(), anchors.end(), mine) != anchors.end()) return std::nullopt;
    std::string list;
    for (auto& a : anchors) list += (list.empty() ? "" : ", ") + a;
    return "the peer's CERTREQ names [" + list + "], not '" + mine + "' that our " + to_string(c) + " chains to";
}

void Agent::reset(const std::string& name) {
    NeighbourStatus* n = neighbour(name);
    if (!n) return;
    n->state = LinkState::Idle;
    n->next_retry_at.reset();
}

void Agent::mark_up(const std::string& name, Credential c, const std::string& detail, Millis now) {
    NeighbourStatus* n = neighbour(name);
    if (!n) return;
    n->state = LinkState::Up;
    n->credential = c;
    n->tunnel_detail = detail;
    n->attempts = 0;
    n->reason.clear();
    n->next_retry_at.reset();
    n->psk.clear();
    step(*n, now, "UP (responder): " + detail);
}

std::optional<Millis> Agent::next_retry() const {
    std::optional<Millis> best = m_backhaul_up ? std::nullopt : m_backhaul_retry_at;
    for (auto& n : m_neighbours)
        if (n.state == LinkState::Down && n.next_retry_at && (!best || *n.next_retry_at < *best))
            best = n.next_retry_at;
    return best;
}

std::string Agent::status_text() const {
    std::ostringstream o;
    o << m_henb->name << " (" << m_henb->identity << ")  backhaul: "
      << (m_config.segw
              ? (m_backhaul_up ? "UP" : "DOWN" + (m_backhaul_reason.empty() ? "" : " (" + m_backhaul_reason + ")"))
              : "none configured")
      << "  operator certificate: " << (m_operator_cert ? "yes" : "no") << "\n";
    for (auto& n : m_neighbours) {
        o << "  neighbour " << n.name << " (" << n.identity << "): " << to_string(n.state);
        if (n.state != LinkState::Idle) o << " — " << policy::to_string(n.decision.action);
        o << "\n";
        if (!n.decision.basis.empty()) o << "    basis: " << n.decision.basis << "\n";
        if (n.decision.warning) o << "    WARNING: " << *n.decision.warning << "\n";
        if (n.credential != Credential::None) o << "    credential: " << to_string(n.credential) << "\n";
        if (!n.tunnel_detail.empty()) o << "    tunnel: " << n.tunnel_detail << "\n";
        if (n.state == LinkState::Down) {
            o << "    reason: " << n.reason << "\n    failed attempts: " << n.attempts;
            if (n.next_retry_at) o << ", next retry at t=" << *n.next_retry_at << " ms";
            o << "\n";
        }
        for (auto& s : n.steps) o << "    [t=" << s.at << "] " << s.text << "\n";
    }
    return o.str();
}

std::string Agent::status_json() const {
    nlohmann::json j;
    j["henb"] = m_henb->name;
    j["identity"] = m_henb->identity;
    j["backhaul"] = m_config.segw ? (m_backhaul_up ? "up" : "down") : "none";
    j["operator_certificate"] = m_operator_cert;
    for (auto& n : m_neighbours) {
        nlohmann::json jn;
        jn["name"] = n.name;
        jn["identity"] = n.identity;
        jn["state"] = to_string(n.state);
        jn["action"] = policy::to_string(n.decision.action);
        jn["basis"] = n.decision.basis;
        if (n.decision.warning) jn["warning"] = *n.decision.warning;
        jn["credential"] = to_string(n.credential);
        jn["reason"] = n.reason;
        jn["attempts"] = n.attempts;
        if (n.next_retry_at) jn["next_retry_at_ms"] = *n.next_retry_at;
        for (auto& s : n.steps) jn["steps"].push_back(s.text);
        j["neighbours"].push_back(jn);
    }
    return j.dump(2);
}

}  // namespace x2sec::node
