#!/bin/bash
# A SeGW at scale: one x2sec responder (`x2sec ike run --dataplane tun`) in a network namespace
# on loopback, `x2sec ike load` initiators from many 127.x addresses (one address per H(e)NB in
# the power-cut run).  Certificates (ECDSA P-256), group 19, AES-GCM-128.  docs/bench-ike.md
# ("A SeGW at scale") explains the figures.
#
#   usage: sudo bench/ike_wire/segw_scale.sh MODE [options]
#     MODE hold       --count N IKE SAs (one Child SA each) set up and held: RSS per SA, then
#                     --hold S seconds with responder-initiated Child SA rekeys (--child-rekey S,
#                     the engine's 10 % jitter) and DPD (--dpd S): per-second histogram of Child
#                     SA installs (rekeys) and of the IKE requests the initiators answered
#     MODE powercut   --count N initiators start at once (concurrency = N), one source address
#                     each, against cookies (cookie_threshold 50) and the half-open caps
#                     (max_half_open, per source): time until all are up, none left half-open
#   options: --x2sec PATH --count N --auth cert|psk (default cert; psk: per-identity PSKs derived
#            from a random base, no certificates to issue or load) --certs DIR (default
#            /dev/shm/pb-scale-certs; created once, reused) --hold S --child-rekey S --dpd S --concurrency C --max-half-open N
#            --half-open-timeout S (powercut; default 30) --retransmit-jitter PCT (powercut initiators; default 20)
#            --timeout S --smoke (tiny counts, for CI; asserts nothing about speed)
#   exit: 0 every setup up and held, 1 otherwise, 2 bad usage, 77 cannot run here
set -euo pipefail
MODE=${1:-}; shift || true
case "$MODE" in hold|powercut) ;; *) echo "usage: $0 hold|powercut [options]" >&2; exit 2 ;; esac
X2SEC=build/apps/x2sec COUNT=50000 CERTS=/dev/shm/pb-scale-certs HOLD=0 CHILD_REKEY=0 DPD=0 CONC=200
MAX_HO=5000 TMO=1200 SMOKE=0 HO_TMO=30 RJIT=20 AUTH=cert
while [ $# -gt 0 ]; do
  case "$1" in
    --x2sec) X2SEC=$2; shift ;;
    --count) COUNT=$2; shift ;;
    --certs) CERTS=$2; shift ;;
    --auth) AUTH=$2; shift; case "$AUTH" in cert|psk) ;; *) echo "--auth cert|psk" >&2; exit 2 ;; esac ;;
    --hold) HOLD=$2; shift ;;
    --child-rekey) CHILD_REKEY=$2; shift ;;
    --dpd) DPD=$2; shift ;;
    --concurrency) CONC=$2; shift ;;
    --max-half-open) MAX_HO=$2; shift ;;
    --half-open-timeout) HO_TMO=$2; shift ;;
    --retransmit-jitter) RJIT=$2; shift ;;
    --timeout) TMO=$2; shift ;;
    --smoke) SMOKE=1; COUNT=20; HOLD=4; CHILD_REKEY=3; DPD=2; CONC=5; MAX_HO=8; TMO=30 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
X2SEC=$(readlink -f "$X2SEC")
NS=${X2SEC_BENCH_NS_PREFIX:-pb}-segw-$$
DIR=$(mktemp -d /tmp/pb-segw.XXXXXX)
[ "$SMOKE" = 1 ] && CERTS=$DIR/certs
RESP_PID=
log() { echo "[$(date +%T)] $*" >&2; }
[ "$(id -u)" = 0 ] || { echo "SKIP: needs root (network namespace)" >&2; exit 77; }
[ -x "$X2SEC" ] || { echo "x2sec binary not found: $X2SEC" >&2; exit 2; }
[ -c /dev/net/tun ] || { echo "SKIP: needs /dev/net/tun" >&2; exit 77; }
cleanup() {
  if [ -n "$RESP_PID" ]; then
    kill -TERM "$RESP_PID" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$RESP_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$RESP_PID" 2>/dev/null || true
    wait "$RESP_PID" 2>/dev/null || true
  fi
  [ -n "${SAMPLER:-}" ] && kill "$SAMPLER" 2>/dev/null || true
  ip netns del "$NS" 2>/dev/null || true
  if [ "${KEEP_DIR:-0}" = 1 ]; then log "kept $DIR"; else rm -rf "$DIR"; fi
}
trap cleanup EXIT
trap 'exit 1' INT TERM
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

ip netns add "$NS"
ip -n "$NS" link set lo up
ip -n "$NS" addr add 10.255.255.254/32 dev lo

# Source addresses: hold spreads over 250 addresses (x --ports), powercut gives each initiator
# its own address (127.1.0.1 ...), as N H(e)NBs behind N different addresses.
if [ "$MODE" = powercut ]; then
  last=$((COUNT - 1))
  SRC="127.1.0.1-127.$((1 + (last + 1) / 65536)).$(((last + 1) / 256 % 256)).$(((last + 1) % 256))"
  PORTS=1
  CONC=$COUNT
else
  SRC=127.2.0.1-127.2.0.250
  PORTS=$(( (COUNT + 249) / 250 )); [ "$PORTS" -gt 64 ] && PORTS=64   # <= 16000 sockets
fi
if [ "$AUTH" = psk ]; then
  head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$DIR/psk-base"
  CRED=(--auth psk --psk-base-file "$DIR/psk-base")
else
  CRED=(--auth cert --certs "$CERTS")
fi
gen() { timeout "$((TMO + 900))" ip netns exec "$NS" "$X2SEC" ike load --target 127.0.0.1:500 "${CRED[@]}" "$@"; }

if [ "$AUTH" = psk ]; then log "PSKs for $COUNT initiators"; else log "credentials for $COUNT initiators in $CERTS (issued once, reused)"; fi
gen --count "$COUNT" --write-responder-config "$DIR/responder.toml" >/dev/null
T=$DIR/responder.toml
if [ "$MODE" = powercut ]; then
  sed -i "s/^cookie_threshold = .*/cookie_threshold = 50\nmax_half_open = $MAX_HO\nmax_half_open_per_source = 64\nhalf_open_timeout = \"${HO_TMO}s\"/" "$T"
else
  sed -i "s/^cookie_threshold = .*/cookie_threshold = 1000000\nmax_half_open = 1000000\nmax_half_open_per_source = 1000000/" "$T"
  [ "$DPD" != 0 ] && sed -i "s/^dpd_interval = .*/dpd_interval = \"${DPD}s\"/" "$T"
  [ "$CHILD_REKEY" != 0 ] && sed -i "s/^  rekey = .*/  rekey = \"${CHILD_REKEY}s\"/" "$T"
fi

rm -f "$DIR/ike.sock"
ip netns exec "$NS" "$X2SEC" ike run --config "$T" --control "$DIR/ike.sock" --dataplane tun --tun pbs0 \
  --shutdown-grace 0 >"$DIR/resp.out" 2>"$DIR/resp.err" </dev/null &
RESP_PID=$!
# (with --auth psk the config holds one [[peer]] per initiator: 50,000 take a while to load)
T_START=$(date +%s)
for _ in $(seq 12000); do [ -S "$DIR/ike.sock" ] && break; kill -0 "$RESP_PID" 2>/dev/null || break; sleep 0.05; done
log "responder up after $(($(date +%s) - T_START)) s"
[ -S "$DIR/ike.sock" ] || { log "responder did not start: $(tail -3 "$DIR/resp.err")"; exit 1; }
sleep 0.5
rss() { awk '/^VmRSS:/ {print $2}' "/proc/$RESP_PID/status"; }
ctr() { "$X2SEC" ike counters --control "$DIR/ike.sock" 2>/dev/null; }
M0=$(rss)
cpu() { awk '{print $14 + $15}' "/proc/$RESP_PID/stat"; }   # utime + stime, clock ticks
C0=$(cpu)
L0=$(cut -d' ' -f1-3 /proc/loadavg)
args=(--count "$COUNT" --concurrency "$CONC" --source "$SRC" --ports "$PORTS" --duration "$TMO" --json --quiet)
[ "$MODE" = powercut ] && args+=(--retransmit-tries 10 --retransmit-timeout 1000 --retransmit-jitter "$RJIT")
# Per-second counters of the responder while the load runs (and while it is held).
( while :; do echo "$(date +%s.%N) $(ctr | tr -d ' \n')"; sleep 1; done ) >"$DIR/samples.txt" 2>/dev/null &
SAMPLER=$!
# hold: the generator keeps its SAs --hold seconds after the last setup (`ike load --hold`),
# answering the responder's DPD and Child SA rekeys.
if [ "$MODE" = hold ] && [ "$HOLD" != 0 ]; then args+=(--hold "$HOLD"); fi
gen "${args[@]}" >"$DIR/load.json" 2>"$DIR/load.err" || true
kill "$SAMPLER" 2>/dev/null || true; wait "$SAMPLER" 2>/dev/null || true; SAMPLER=
M1=$(rss)
C1=$(cpu)
L1=$(cut -d' ' -f1-3 /proc/loadavg)
"$X2SEC" ike list-sas --control "$DIR/ike.sock" --json >"$DIR/sas.json" 2>"$DIR/sas.err" || echo '[]' >"$DIR/sas.json"
# UDP drops in the namespace (the responder's socket overflowing: RcvbufErrors).
ip netns exec "$NS" awk '/^Udp:/ {if (!h) {split($0, k); h = 1} else for (i = 2; i <= NF; i++) printf "%s %s ", k[i], $i} END {print ""}' /proc/net/snmp >"$DIR/udp.txt" || true
cp "$DIR/resp.err" "$DIR/resp.err.keep" 2>/dev/null || true
python3 - "$MODE" "$DIR" "$M0" "$M1" "$COUNT" "$L0" "$L1" "$HOLD" "$((C1 - C0))" "$(getconf CLK_TCK)" <<'PY'
import json, sys, collections
mode, d, m0, m1, count, l0, l1, hold, ticks, hz = sys.argv[1:]
count = int(count)
try:
    j = json.load(open(f"{d}/load.json"))
except Exception as e:
    print(f"no report from the generator: {e}"); print(open(f"{d}/load.err").read()[-2000:]); sys.exit(1)
sas = json.load(open(f"{d}/sas.json"))
est = sum(1 for s in sas if s.get("state") == "ESTABLISHED" and len(s.get("children", [])) >= 1)
other = collections.Counter(s.get("state") for s in sas if s.get("state") != "ESTABLISHED")
try:
    sas_err = open(f"{d}/sas.err").read().strip()
except Exception:
    sas_err = ""
ok = j["succeeded"]
print(f"mode {mode}: {ok}/{j['attempted']} up, {j['failed']} failed, {j['unfinished']} unfinished; "
      f"{j['setups_per_s']:.1f} setups/s over {j['seconds']:.2f} s (wall {j['wall_seconds']:.2f} s)")
print(f"latency p50 {j['latency_ms']['p50']:.0f} ms, p90 {j['latency_ms']['p90']:.0f}, p99 {j['latency_ms']['p99']:.0f}, "
      f"max {j['latency_ms']['max']:.0f} ms")
for k, v in j.get("failures", {}).items():
    print(f"  failed: {v['count']} {k} (e.g. {v['example']})")
print(f"responder holds {est} ESTABLISHED IKE SAs with a Child SA; other states: {dict(other) or 'none'}")
if not sas and sas_err:
    print(f"  (list-sas failed: {sas_err[-300:]}; see the counters below)")
print(f"responder RSS {int(m0) / 1024:.1f} -> {int(m1) / 1024:.1f} MiB: {(int(m1) - int(m0)) * 1024 / max(est, 1):.0f} B per IKE SA held")
cpu_s = int(ticks) / int(hz)
print(f"responder CPU {cpu_s:.1f} s over the run ({cpu_s * 1e6 / max(ok, 1):.0f} us per setup, hold and DPD included)")
print(f"load average {l0} -> {l1}")
try:
    print("UDP in the namespace: " + open(f"{d}/udp.txt").read().strip())
except Exception:
    pass
# Counters over time: setups (esp.sa.installed) and, after the setups, rekeys per second.
rows = []
for line in open(f"{d}/samples.txt"):
    t, _, js = line.partition(" ")
    try:
        rows.append((float(t), json.loads(js)))
    except Exception:
        pass
keys = ["esp.sa.installed", "ike.tx.cookie", "ike.rx.dropped.half_open_cap", "ike.rx.dropped.half_open_cap_per_source",
        "ike.half_open_expired", "ike.half_open_extended", "ike.rx.invalid_ike_spi", "ike.tx.retransmit", "ike.rx.retransmit",
        "runtime.rx.ike", "runtime.rx.init_shed", "runtime.rx.init_stale", "runtime.rx.known_shed", "runtime.rx.queue_peak",
        "runtime.rx.recvmmsg", "runtime.rx.batch_full"]
if rows:
    last = rows[-1][1]
    print("responder counters at the end: " + ", ".join(f"{k} {last.get(k, 0)}" for k in keys))
    inst = [r[1].get("esp.sa.installed", 0) for r in rows]
    per_s = [b - a for a, b in zip(inst, inst[1:])]
    setups_done = next((i for i, v in enumerate(inst) if v >= ok), None)
    if mode == "hold" and int(hold) > 0 and setups_done is not None:
        rk = [v - ok if False else v for v in per_s[setups_done:]]
        hist = collections.Counter(rk)
        print(f"Child SA installs per second after all {ok} setups (= responder-initiated rekeys), "
              f"{len(rk)} s: max {max(rk) if rk else 0}/s, mean {sum(rk) / max(len(rk), 1):.1f}/s")
        print("  per-second series: " + " ".join(str(v) for v in rk))
    print("Child SA installs per second during the run: " + " ".join(str(v) for v in per_s))
    # Without a list-sas answer (10,000 SAs: see docs/bench-ike.md), the counters tell whether
    # every SA is up and none was lost or left half open: setups, downs, half-open expiries.
    if not sas and sas_err and mode == "powercut":
        up, down = last.get("ike.event.IKE_SA_UP", 0), last.get("ike.event.IKE_SA_DOWN", 0)
        expired = last.get("ike.half_open_expired", 0)
        print(f"from the counters: {up} IKE SAs up, {down} down, {expired} half-open expired, "
              f"{last.get('esp.sa.installed', 0)} Child SAs installed")
        if up == count and down == 0 and expired == 0:
            est = count
sys.exit(0 if ok == count and est == count and not other else 1)
PY
