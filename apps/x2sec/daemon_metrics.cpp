#include "daemon_metrics.hpp"

#include <fmt/format.h>

#include <map>
#include <x2sec/esp/data_plane.hpp>
#include <x2sec/ikev2/engine.hpp>

#ifndef X2SEC_VERSION
#define X2SEC_VERSION "unknown"
#endif

namespace x2sec::app {

using metrics::Rule;

const std::vector<Rule>& metric_rules() {
    static const std::vector<Rule> rules{
        // IKE engine
        {"ike.event.", "x2sec_ike_events_total", "kind",
         "IKE engine events by kind: IKE_SA_UP (setups), IKE_SA_REKEYED and CHILD_SA_REKEYED "
         "(rekeys), "
         "AUTH_FAILED, NEGOTIATION_FAILED, PEER_NOTIFY and PEER_DEAD (failures), ..."},
        {"ike.setup_seconds", "x2sec_ike_setup_seconds", "",
         "Time from an IKE SA's first message to IKE_SA_UP (IKE_SA_INIT + IKE_AUTH), seconds"},
        {"ike.auth.", "x2sec_ike_auth_total", "outcome",
         "IKE_AUTH outcomes other than success, by reason (failed, proposal_mismatch, "
         "no_peer_config, ...)"},
        {"ike.rx.", "x2sec_ike_rx_total", "kind",
         "Received IKE messages by what happened to them (invalid_syntax.*, no_proposal_chosen, "
         "bad_cookie, ...)"},
        {"ike.tx.", "x2sec_ike_tx_total", "kind", "Sent IKE messages by kind (retransmit, cookie, fragments, ...)"},
        {"ike.child.", "x2sec_ike_child_sa_events_total", "kind", "Child SA lifetime events seen by the IKE engine"},
        // IKE runtime (sockets, control socket)
        {"runtime.rx.", "x2sec_ike_runtime_rx_total", "kind",
         "Datagrams received by the IKE daemon's sockets, by kind"},
        {"runtime.tx.", "x2sec_ike_runtime_tx_total", "kind", "Datagrams sent (or not) by the IKE daemon, by kind"},
        {"runtime.control.", "x2sec_ike_control_errors_total", "kind", "Control socket requests refused, by reason"},
        // ESP data plane
        {"esp.drop.", "x2sec_esp_drops_total", "reason", "ESP packets dropped, by reason"},
        {"esp.rx.packets", "x2sec_esp_rx_packets_total", "", "ESP packets received and decrypted"},
        {"esp.rx.bytes", "x2sec_esp_rx_bytes_total", "", "Inner octets delivered from received ESP packets"},
        {"esp.tx.packets", "x2sec_esp_tx_packets_total", "", "ESP packets encrypted and sent"},
        {"esp.tx.bytes", "x2sec_esp_tx_bytes_total", "", "Inner octets sent in ESP packets"},
        {"esp.sa.", "x2sec_esp_sa_events_total", "event", "ESP SA events (installed, removed, soft_expired, ...)"},
        {"esp.rx.", "x2sec_esp_rx_total", "kind", "Other receive-side events of the ESP data plane"},
        {"esp.tx.", "x2sec_esp_tx_total", "kind", "Other send-side events of the ESP data plane"},
        // RA/CA
        {"cmp.issued", "x2sec_cmp_certificates_issued_total", "",
         "Certificates issued (ir, cr, p10cr, kur enrolments)"},
        {"cmp.revoked", "x2sec_cmp_certificates_revoked_total", "", "Certificates revoked (rr)"},
        {"cmp.failinfo.", "x2sec_cmp_rejections_by_failinfo_total", "failinfo",
         "CMP requests rejected, by the PKIFailureInfo bit sent (RFC 4210 names)"},
        {"cmp.reject.", "x2sec_cmp_rejections_total", "reason", "CMP requests rejected, by x2sec's reason"},
        {"cmp.certconf.", "x2sec_cmp_certconf_total", "outcome",
         "certConf messages: accepted, rejected, not_open (no open transaction anywhere), closed_elsewhere, ..."},
        {"cmp.session.", "x2sec_cmp_sessions_total", "event",
         "Transactions waiting for certConf: resumed (from the store, on another instance than the ip's), "
         "closed_elsewhere, timeout, swept"},
        {"cmp.rx.messages", "x2sec_cmp_messages_total", "", "CMP messages received"},
        {"cmp.request_seconds", "x2sec_cmp_request_seconds", "", "Time to handle one CMP request, seconds"},
        {"cmp.rx.", "x2sec_cmp_rx_total", "kind", "CMP messages refused before handling, by reason"},
        {"cmp.tx.", "x2sec_cmp_tx_total", "kind", "CMP answers that are errors or missing, by kind"},
        {"http.rx.requests", "x2sec_cmp_http_requests_total", "", "HTTP requests to the RA/CA"},
        {"http.ok.", "x2sec_cmp_http_ok_total", "what", "HTTP requests answered 200, by what was served"},
        {"http.reject.", "x2sec_cmp_http_rejected_total", "reason", "HTTP requests refused (4xx), by reason"},
        {"cmp.http.", "x2sec_cmp_connections_total", "kind", "RA/CA connections refused by the server's limits"},
        // KDS
        {"kds.key.delivered", "x2sec_kds_key_deliveries_total", "", "Pairwise keys delivered to H(e)NBs"},
        {"kds.key.", "x2sec_kds_key_events_total", "event", "KDS key events (generated, rekeyed, expired, ...)"},
        {"kds.refused.", "x2sec_kds_refused_total", "reason", "Key requests refused, by reason"},
        {"kds.auth.rejected.", "x2sec_kds_auth_rejected_total", "reason", "KDS clients rejected at authentication"},
        {"kds.request_seconds", "x2sec_kds_request_seconds", "", "Time to handle one KDS request, seconds"},
        {"kds.conn.", "x2sec_kds_connections_total", "kind", "KDS connections refused by the server's limits"},
        // Revocation checks (ike run, kds serve)
        {"x509.crl.", "x2sec_crl_checks_total", "result", "Certificate revocation (CRL) checks and fetches, by result"},
        {"x509.ocsp.", "x2sec_ocsp_checks_total", "result",
         "OCSP look-ups at the AIA responder and fetches of our own response to staple, by result"},
        {"ike.ocsp.", "x2sec_ike_ocsp_staple_total", "kind",
         "OCSP responses in IKE_AUTH (RFC 4806): stapled by us and received from the peer, by outcome"},
        // The metrics listener
        {"metrics.http.scrapes", "x2sec_metrics_scrapes_total", "", "Scrapes of /metrics answered"},
        {"metrics.http.", "x2sec_metrics_http_refused_total", "reason", "Requests to the metrics listener refused"},
    };
    return rules;
}

void add_sa_gauges(metrics::Exposition& e, const std::vector<ike::IkeSaInfo>& sas) {
    std::map<std::string, int> ike{{"CONNECTING", 0}, {"ESTABLISHED", 0}, {"REKEYING", 0}, {"DELETING", 0}};
    std::map<std::string, int> child{{"INSTALLED", 0}, {"REKEYING", 0}, {"DELETING", 0}};
    for (const auto& s : sas) {
        ++ike[s.state];
        for (const auto& c : s.children) ++child[c.state];
    }
    for (const auto& [state, n] : ike)
        e.add("x2sec_ike_sas", metrics::Type::Gauge, "IKE SAs by state", {{"state", state}}, n);
    for (const auto& [state, n] : child)
        e.add("x2sec_child_sas", metrics::Type::Gauge, "Child SAs by state", {{"state", state}}, n);
    for (const auto& s : sas) {
        metrics::Labels l{{"peer", s.peer}, {"ike_sa", std::to_string(s.id)}, {"state", s.state}};
        e.add("x2sec_ike_sa_info", metrics::Type::Gauge, "One series per IKE SA (value 1), with its peer and state", l,
              1);
    }
}

void add_child_sa_traffic(metrics::Exposition& e, const std::vector<esp::ChildSaStatus>& sas) {
    for (const auto& c : sas) {
        metrics::Labels l{{"child", c.name},
                          {"spi_in", fmt::format("{:08x}", c.spi_in)},
                          {"spi_out", fmt::format("{:08x}", c.spi_out)}};
        e.add("x2sec_child_sa_in_bytes_total", metrics::Type::Counter, "Inner octets received on this Child SA", l,
              double(c.in_bytes));
        e.add("x2sec_child_sa_in_packets_total", metrics::Type::Counter, "Packets received on this Child SA", l,
              double(c.in_packets));
        e.add("x2sec_child_sa_out_bytes_total", metrics::Type::Counter, "Inner octets sent on this Child SA", l,
              double(c.out_bytes));
        e.add("x2sec_child_sa_out_packets_total", metrics::Type::Counter, "Packets sent on this Child SA", l,
              double(c.out_packets));
    }
}

void add_build_info(metrics::Exposition& e, const std::string& daemon) {
    e.add("x2sec_build_info", metrics::Type::Gauge, "x2sec version and the daemon serving these metrics",
          {{"daemon", daemon}, {"version", X2SEC_VERSION}}, 1);
}

Result<std::unique_ptr<net::MetricsServer>> start_metrics(const std::string& listen, const std::string& where,
                                                          net::MetricsServer::Collect collect, Counters& counters) {
    if (listen.empty()) return std::unique_ptr<net::MetricsServer>();
    auto l = net::parse_metrics_listen(listen);
    if (!l) return Error(ErrorDomain::Config, 0, where + ": " + l.error().detail());
    auto s = std::make_unique<net::MetricsServer>(*l, std::move(collect), counters);
    X2SEC_TRY_STATUS(s->start());
    return s;
}

}  // namespace x2sec::app
