#!/bin/bash
# Legitimate IKE setups while spoofed IKE_SA_INITs flood the responder.  Two namespaces joined
# by a veth: pb-fr-<pid> holds the x2sec responder (192.0.2.1, cookies above 50 half-open SAs,
# the default half-open caps), pb-fg-<pid> the legitimate `x2sec ike load` initiators
# (192.0.2.10-41) and bench/ike_wire/ike_flood.py, which sends IKE_SA_INITs from spoofed
# addresses of 198.51.100.0/24 and 203.0.113.0/24 (the responder's answers to them are routed
# back into pb-fg and dropped there, as they would be lost on the Internet).  First the
# legitimate load alone, then the same load under the flood (fresh responder each time).
# docs/bench-ike.md ("Flood") explains the figures.
#
#   usage: sudo bench/ike_wire/segw_flood.sh [--x2sec PATH] [--count N] [--concurrency C]
#          [--flood-rate R (0 = as fast as the sender goes)] [--seconds S] [--smoke]
#   exit: 0 every legitimate setup up in both phases, 1 otherwise, 2 usage, 77 cannot run here
set -euo pipefail
X2SEC=build/apps/x2sec COUNT=1000 CONC=20 FRATE=0 SECS=60 SMOKE=0
while [ $# -gt 0 ]; do
  case "$1" in
    --x2sec) X2SEC=$2; shift ;;
    --count) COUNT=$2; shift ;;
    --concurrency) CONC=$2; shift ;;
    --flood-rate) FRATE=$2; shift ;;
    --seconds) SECS=$2; shift ;;
    --smoke) SMOKE=1; COUNT=10; CONC=3; FRATE=2000; SECS=3 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
X2SEC=$(readlink -f "$X2SEC")
HERE=$(cd "$(dirname "$0")" && pwd)
NR=${X2SEC_BENCH_NS_PREFIX:-pb}-fr-$$ NG=${X2SEC_BENCH_NS_PREFIX:-pb}-fg-$$
DIR=$(mktemp -d /tmp/pb-flood.XXXXXX)
RESP_PID= FLOOD_PID=
log() { echo "[$(date +%T)] $*" >&2; }
[ "$(id -u)" = 0 ] || { echo "SKIP: needs root (network namespaces)" >&2; exit 77; }
[ -x "$X2SEC" ] || { echo "x2sec binary not found: $X2SEC" >&2; exit 2; }
command -v python3 >/dev/null || { echo "SKIP: needs python3" >&2; exit 77; }
stop() {  # a process we started, by pid
  local p=$1
  [ -n "$p" ] || return 0
  kill -TERM "$p" 2>/dev/null || return 0
  for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$p" 2>/dev/null || true
  wait "$p" 2>/dev/null || true
}
cleanup() {
  stop "$FLOOD_PID"; stop "$RESP_PID"
  ip netns del "$NR" 2>/dev/null || true
  ip netns del "$NG" 2>/dev/null || true
  if [ "${KEEP_DIR:-0}" = 1 ]; then log "kept $DIR"; else rm -rf "$DIR"; fi
}
trap cleanup EXIT
trap 'exit 1' INT TERM

ip netns add "$NR"; ip netns add "$NG"
ip link add pbfr0 netns "$NR" type veth peer name pbfg0 netns "$NG"
ip -n "$NR" addr add 192.0.2.1/24 dev pbfr0
ip -n "$NR" addr add 10.255.255.254/32 dev lo
for i in $(seq 2 41); do echo "addr add 192.0.2.$i/24 dev pbfg0"; done | ip -n "$NG" -batch -
for n in "$NR pbfr0" "$NG pbfg0"; do set -- $n; ip -n "$1" link set lo up; ip -n "$1" link set "$2" up; done
ip -n "$NR" route add 198.51.100.0/24 via 192.0.2.2
ip -n "$NR" route add 203.0.113.0/24 via 192.0.2.2
ip netns exec "$NR" sysctl -qw net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.pbfr0.rp_filter=0
ip netns exec "$NG" ping -c1 -W2 192.0.2.1 >/dev/null

gen() { timeout "$((SECS + 120))" ip netns exec "$NG" "$X2SEC" ike load --target 192.0.2.1:500 --auth cert --certs "$DIR/certs" "$@"; }
gen --count "$COUNT" --write-responder-config "$DIR/responder.toml" >/dev/null

start_resp() {
  rm -f "$DIR/ike.sock"
  ip netns exec "$NR" "$X2SEC" ike run --config "$DIR/responder.toml" --control "$DIR/ike.sock" \
    --dataplane tun --tun pbfr1 --shutdown-grace 0 >"$DIR/resp.out" 2>"$DIR/resp.err" </dev/null &
  RESP_PID=$!
  for _ in $(seq 200); do [ -S "$DIR/ike.sock" ] && break; sleep 0.05; done
  [ -S "$DIR/ike.sock" ] || { log "responder did not start: $(tail -3 "$DIR/resp.err")"; exit 1; }
}
cpu() { awk '{print $14 + $15}' "/proc/$RESP_PID/stat"; }
FAILED=0
phase() {  # $1 = name, $2 = flood (0/1)
  start_resp
  local c0 c1 l0 l1
  c0=$(cpu); l0=$(cut -d' ' -f1 /proc/loadavg)
  if [ "$2" = 1 ]; then
    ip netns exec "$NG" python3 "$HERE/ike_flood.py" 192.0.2.1 500 "$SECS" "$FRATE" 198.51.100.0/24 203.0.113.0/24 \
      >"$DIR/flooder.json" 2>"$DIR/flooder.err" &
    FLOOD_PID=$!
    sleep 1
  fi
  gen --count "$COUNT" --concurrency "$CONC" --source 192.0.2.10-192.0.2.41 --ports 8 --duration "$SECS" \
    --retransmit-tries 5 --json --quiet >"$DIR/$1.json" 2>"$DIR/$1.err" || true
  local flood='{}'
  if [ "$2" = 1 ]; then
    wait "$FLOOD_PID" 2>/dev/null || true; FLOOD_PID=
    flood=$(cat "$DIR/flooder.json" 2>/dev/null || echo '{}')
  fi
  c1=$(cpu); l1=$(cut -d' ' -f1 /proc/loadavg)
  "$X2SEC" ike counters --control "$DIR/ike.sock" >"$DIR/$1.counters" 2>/dev/null || echo '{}' >"$DIR/$1.counters"
  stop "$RESP_PID"; RESP_PID=
  python3 - "$1" "$DIR/$1.json" "$DIR/$1.counters" "$flood" "$c0" "$c1" "$(getconf CLK_TCK)" "$l0-$l1" "$COUNT" <<'PY' || FAILED=1
import json, sys
name, rep, ctr, flood, c0, c1, hz, load, count = sys.argv[1:]
j = json.load(open(rep)); c = json.load(open(ctr)); f = json.loads(flood)
cpu = (int(c1) - int(c0)) / int(hz)
line = (f"{name:<12} legit {j['succeeded']}/{j['attempted']} up, {j['setups_per_s']:.1f} setups/s, p50 "
        f"{j['latency_ms']['p50']:.0f} ms, p99 {j['latency_ms']['p99']:.0f} ms; responder CPU {cpu:.2f} s; "
        f"cookies sent {c.get('ike.tx.cookie', 0)}, half-open cap drops {c.get('ike.rx.dropped.half_open_cap', 0)}"
        f"/{c.get('ike.rx.dropped.half_open_cap_per_source', 0)} per source, half-open expired "
        f"{c.get('ike.half_open_expired', 0)}; rx init_shed {c.get('runtime.rx.init_shed', 0)}, init_stale "
        f"{c.get('runtime.rx.init_stale', 0)}, cookie_init {c.get('runtime.rx.cookie_init', 0)}, cookie_bad "
        f"{c.get('runtime.rx.cookie_bad', 0)}, cookie_shed/stale {c.get('runtime.rx.cookie_shed', 0)}/"
        f"{c.get('runtime.rx.cookie_stale', 0)}; load {load}")
if f:
    line += f"; flood {f.get('sent', 0)} spoofed IKE_SA_INIT in {f.get('seconds', 0)} s = {f.get('pps', 0):.0f}/s"
print(line)
for k, v in j.get("failures", {}).items():
    print(f"  failed: {v['count']} {k} (e.g. {v['example']})")
sys.exit(0 if j["succeeded"] == int(count) else 1)
PY
}
log "legitimate load alone: $COUNT setups, concurrency $CONC"
phase baseline 0
log "the same under a spoofed IKE_SA_INIT flood (rate ${FRATE:-max}, 0 = max)"
phase flood 1
exit $FAILED
