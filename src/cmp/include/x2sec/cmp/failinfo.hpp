// PKIFailureInfo bit names (RFC 4210 5.2.3, RFC 9480): "badPOP" for bit 9, ... for counters,
// logs and /metrics (x2sec_cmp_rejections_by_failinfo_total{failinfo="badPOP"}).
#pragma once

namespace x2sec::cmp {

// The RFC's name of PKIFailureInfo bit `bit` (0..26), "unknown" for any other value.
const char* failinfo_name(int bit);

}  // namespace x2sec::cmp
