#include <algorithm>
#include <cmath>
#include <x2sec/policy/decision.hpp>

namespace x2sec::policy {

const char* to_string(IpsecPolicy p) {
    return p == IpsecPolicy::Off ? "off" : "required";
}

const char* to_string(AuthMode m) {
    switch (m) {
        case AuthMode::Auto:
            return "auto";
        case AuthMode::Certificate:
            return "certificate";
        case AuthMode::PskFromNetwork:
            return "psk-from-network";
    }
    return "?";
}

const char* to_string(Action a) {
    switch (a) {
        case Action::Disabled:
            return "disabled";
        case Action::PlainX2:
            return "plain X2 (no IPsec)";
        case Action::IkeCurrentCert:
            return "IKEv2 with current certificates";
        case Action::EnrolThenIkeOperatorCert:
            return "CMPv2 enrolment, then IKEv2 with operator certificates";
        case Action::IkeOperatorCert:
            return "IKEv2 with operator certificates";
        case Action::KdsPskThenIke:
            return "KDS pairwise key, then IKEv2-PSK";
        case Action::Down:
            return "down";
    }
    return "?";
}

namespace {

Decision down(Decision d, std::string reason) {
    d.action = Action::Down;
    d.steps.push_back("neighbour stays DOWN: " + reason + " (no silent downgrade; retried with back-off)");
    d.down_reason = std::move(reason);
    return d;
}

Decision psk(Decision d, const LocalFacts& local, const std::string& why) {
    if (!local.kds_configured) return down(std::move(d), why + ", but no KDS is configured");
    d.action = Action::KdsPskThenIke;
    d.basis = "Solution 2 (pairwise key from the network)";
    d.steps.push_back(why + ": fetch a pairwise key from the KDS over the backhaul, then IKEv2 with PSK");
    return d;
}

}  // namespace

Decision decide(const LocalFacts& local, const PeerFacts& peer) {
    Decision d;
    if (!local.direct_interface || !peer.direct_interface) {
        d.action = Action::Disabled;
        d.basis = "configuration";
        d.steps.push_back(std::string("direct interface disabled ") +
                          (!local.direct_interface ? "on this node" : "for this neighbour") +
                          ": X2 goes via the core network, nothing to protect here");
        return d;
    }
    d.steps.emplace_back("direct interface enabled");
    if (peer.ipsec == IpsecPolicy::Off) {
        d.action = Action::PlainX2;
        d.basis = "Proposal 1 (IPsec optional)";
        d.steps.emplace_back("IPsec policy 'off': operator relies on physical security of the link");
        d.warning = "IPsec is OFF for this neighbour by operator policy: X2 runs unprotected";
        return d;
    }
    d.steps.push_back(std::string("IPsec required; authentication '") + to_string(peer.auth) + "'");
    if (peer.auth == AuthMode::PskFromNetwork) return psk(std::move(d), local, "authentication 'psk-from-network'");

    // Certificate-based (auth = certificate or auto).
    if (local.holds_operator_cert &&
        (peer.peer_holds_operator_cert || peer.peer_cert_anchor == local.operator_anchor)) {
        d.action = Action::IkeOperatorCert;
        d.basis = "Proposal 3 (operator certificates)";
        d.steps.emplace_back("both nodes hold operator certificates: IKEv2 with operator certificates");
        return d;
    }
    std::optional<bool> same_ca;
    // Whether the peer's CERTREQ names the operator root: then an operator certificate will be
    // accepted (Proposal 3); if it names neither our anchor nor the operator root, enrolling
    // would not help either.  nullopt: no CERTREQ seen.
    std::optional<bool> certreq_names_operator;
    std::string certreq_text;
    if (peer.certreq_anchors) {
        const auto& a = *peer.certreq_anchors;
        certreq_names_operator = std::find(a.begin(), a.end(), local.operator_anchor) != a.end();
        for (const auto& x : a) certreq_text += (certreq_text.empty() ? "" : ", ") + x;
        certreq_text = "[" + certreq_text + "]";
    }
    if (peer.auth_failed_untrusted_ca) {
        same_ca = false;
        d.steps.emplace_back("a previous IKE_AUTH failed with an untrusted CA: the chains do not share an anchor");
    } else if (peer.certreq_anchors) {
        const auto& a = *peer.certreq_anchors;
        bool asks_ours = std::find(a.begin(), a.end(), local.current_cert_anchor) != a.end();
        same_ca = asks_ours;
        d.steps.push_back("peer's CERTREQ " + certreq_text + " " + (asks_ours ? "includes" : "does not include") +
                          " our anchor '" + local.current_cert_anchor + "'");
    } else if (peer.peer_cert_anchor) {
        same_ca = *peer.peer_cert_anchor == local.current_cert_anchor;
        d.steps.push_back("peer's certificate chains to '" + *peer.peer_cert_anchor + "', ours to '" +
                          local.current_cert_anchor + "'");
    }
    if (!same_ca) {
        d.action = Action::IkeCurrentCert;
        d.basis = "Proposal 2 (assume same CA until the peer shows otherwise)";
        d.steps.emplace_back(
            "peer's CA not known yet: try IKEv2 with the current certificate; an untrusted-CA "
            "failure re-runs this decision");
        return d;
    }
    if (*same_ca) {
        d.action = Action::IkeCurrentCert;
        d.basis = "Proposal 2 (same CA)";
        d.steps.emplace_back("same CA: IKEv2 with the current certificates, no further mechanism needed");
        return d;
    }
    d.steps.emplace_back("different CAs: mutual authentication with the current certificates is impossible");
    if (certreq_names_operator == false) {
        // The peer does not trust the operator root either: an operator certificate (enrolled
        // or not) would be rejected too.
        std::string why = "peer's CERTREQ " + certreq_text + " names neither our anchor '" + local.current_cert_anchor +
                          "' nor the operator root '" + local.operator_anchor + "'";
        if (peer.auth == AuthMode::Auto && local.kds_configured)
            return psk(std::move(d), local, why + " and authentication is 'auto'");
        return down(std::move(d), why + ": no certificate of ours would be accepted");
    }
    if (certreq_names_operator == true)
        d.steps.push_back("peer's CERTREQ names the operator root '" + local.operator_anchor +
                          "': an operator certificate will be accepted");
    if (local.holds_operator_cert) {
        if (peer.peer_cmp_supported == false) {
            // The same answer as before our enrolment: an operator certificate of ours does not
            // give the peer a usable one.
            if (peer.auth == AuthMode::Auto && local.kds_configured)
                return psk(std::move(d), local,
                           "we hold an operator certificate but the peer cannot enrol one (no CMPv2) and "
                           "authentication is 'auto'");
            return down(std::move(d), "we hold an operator certificate but the peer cannot enrol one (no CMPv2)");
        }
        d.action = Action::IkeOperatorCert;
        d.basis = "Proposal 3 (operator certificates)";
        d.steps.emplace_back("an operator certificate is already enrolled: IKEv2 with it");
        return d;
    }
    if (local.cmp_supported && local.cmp_server_configured) {
        if (peer.peer_cmp_supported == false) {
            if (peer.auth == AuthMode::Auto && local.kds_configured)
                return psk(std::move(d), local, "peer does not support CMPv2 and authentication is 'auto'");
            return down(std::move(d),
                        "different CAs and the peer does not support CMPv2: it has no usable certificate");
        }
        d.action = Action::EnrolThenIkeOperatorCert;
        d.basis = "Proposal 3 (enrol operator certificate with CMPv2)";
        d.steps.push_back(
            std::string("this node supports CMPv2: enrol an operator certificate (TS 33.310 clause 9), "
                        "authenticated with the vendor certificate, then IKEv2 with operator certificates") +
            (certreq_names_operator == true && !peer.auth_failed_untrusted_ca
                 ? " (decided from the peer's CERTREQ, before any IKE_AUTH with the vendor certificate)"
                 : ""));
        return d;
    }
    std::string why = local.cmp_supported ? "CMPv2 supported but no CMP server configured"
                                          : "this node does not support CMPv2 (Proposal 4)";
    if (peer.auth == AuthMode::Auto && local.kds_configured)
        return psk(std::move(d), local, why + " and authentication is 'auto'");
    return down(std::move(d), "different CAs and " + why + ": no usable certificate for this neighbour");
}

Millis backoff_delay(const Backoff& b, unsigned attempt) {
    if (attempt == 0) attempt = 1;
    double v = double(b.initial_ms) * std::pow(b.factor, double(attempt - 1));
    if (v > double(b.max_ms)) return b.max_ms;
    return Millis(v);
}

}  // namespace x2sec::policy
