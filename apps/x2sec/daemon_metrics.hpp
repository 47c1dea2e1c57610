// /metrics of the daemons (`ike run`, `esp`, `ca serve`, `kds serve`): the Rules that map each
// daemon's counters onto Prometheus families, the live series (SAs by state, per-Child SA
// traffic) and starting the listener from a `[metrics] listen` value.  docs/metrics.md lists
// every series.
#pragma once

#include <memory>
#include <string>
#include <vector>
#include <x2sec/common/child_sa.hpp>
#include <x2sec/common/metrics.hpp>
#include <x2sec/net/metrics_server.hpp>

namespace x2sec::ike {
struct IkeSaInfo;
}
namespace x2sec::esp {
struct ChildSaStatus;
}

namespace x2sec::app {

// Rules for every daemon's counters (IKE, runtime, ESP, CMP, KDS, CRL checks, the metrics
// listener itself); a daemon passes all of them, unmatched names get generic families.
const std::vector<metrics::Rule>& metric_rules();

// x2sec_ike_sas{state=...} and x2sec_child_sas{state=...} (every known state, 0 included).
void add_sa_gauges(metrics::Exposition& e, const std::vector<ike::IkeSaInfo>& sas);
// x2sec_child_sa_{in,out}_{bytes,packets}_total{child,spi_in,spi_out}: per installed Child SA.
void add_child_sa_traffic(metrics::Exposition& e, const std::vector<esp::ChildSaStatus>& sas);
// x2sec_build_info{daemon,version} 1 and x2sec_up 1.
void add_build_info(metrics::Exposition& e, const std::string& daemon);

// Starts /metrics on `listen` ("" = off: returns nullptr and no error).  `where` names the
// setting in errors ("ike.toml: [metrics] listen").
Result<std::unique_ptr<net::MetricsServer>> start_metrics(const std::string& listen, const std::string& where,
                                                          net::MetricsServer::Collect collect, Counters& counters);

}  // namespace x2sec::app
