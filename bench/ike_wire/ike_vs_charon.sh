#!/bin/bash
# IKEv2 setups on the wire, side by side: the same `x2sec ike load` against an x2sec responder
# (`x2sec ike run --dataplane tun`) and a strongSwan charon responder (kernel-libipsec, so both
# hold real user-space ESP SAs), each pinned to one core, in one network namespace on loopback;
# certificates (ECDSA P-256 under one CA) and PSK (one per identity), group 19, AES-GCM-128.
# The crypto bound of the responder is measured in the same run with `openssl speed` on the
# responder's core.  docs/bench-ike.md ("Side by side with charon") explains the figures.
#
#   usage: sudo bench/ike_wire/ike_vs_charon.sh [options]
#     --x2sec PATH         the x2sec binary (default build/apps/x2sec)
#     --count N            setups per run (default 2000), all held until the end of the run
#     --concurrency C      setups in flight (default 50)
#     --auth "cert psk"    which runs (default both)
#     --responders "x2sec charon"
#     --bound-seconds S    openssl speed -seconds (default 3)
#     --cores "G R"        generator core, responder core (default "0 1")
#     --timeout S          time bound of each load run (default 300)
#     --repeat N           N rounds (default 1), each measuring the bound again and then running every
#                          responder and auth; with N > 1 the medians per responder and auth follow the
#                          table (this machine's speed drifts: one round's ratio is one sample)
#     --smoke              tiny counts (CI: checks the script works, asserts nothing about speed)
#     --perf DIR           also record CPU profiles (perf record --call-graph dwarf) of the responder
#                          (DIR/<responder>-<auth>.resp.data) and the generator (.gen.data); the
#                          profiler costs CPU: figures of a --perf run are not comparable; X2SEC_PERF_FREQ sets the sampling rate (default 997 Hz)
#   exit: 0 all runs complete (every setup up), 1 a run failed, 2 bad usage, 77 cannot run here
#
# Namespace: pb-ike-<pid> (loopback only: responder 127.0.0.1:500, generator 127.0.0.2-9).
set -euo pipefail
X2SEC=build/apps/x2sec COUNT=2000 CONC=50 AUTHS="cert psk" RESPONDERS="x2sec charon" BOUND_S=3
CORES="0 1" TMO=300 SMOKE=0 PERF_DIR= REPEAT=1
while [ $# -gt 0 ]; do
  case "$1" in
    --x2sec) X2SEC=$2; shift ;;
    --count) COUNT=$2; shift ;;
    --concurrency) CONC=$2; shift ;;
    --auth) AUTHS=$2; shift ;;
    --responders) RESPONDERS=$2; shift ;;
    --bound-seconds) BOUND_S=$2; shift ;;
    --cores) CORES=$2; shift ;;
    --timeout) TMO=$2; shift ;;
    --repeat) REPEAT=$2; shift ;;
    --smoke) SMOKE=1; COUNT=6; CONC=3; BOUND_S=1; TMO=30 ;;
    --perf) PERF_DIR=$2; shift ;;
    *) echo "unknown option $1 (see the header of $0)" >&2; exit 2 ;;
  esac
  shift
done
[[ "$REPEAT" =~ ^[1-9][0-9]*$ ]] || { echo "--repeat takes a positive count, got '$REPEAT'" >&2; exit 2; }
X2SEC=$(readlink -f "$X2SEC")
. "$(dirname "$(readlink -f "$0")")/../../tests/support/charon.sh"
read -r GCORE RCORE <<<"$CORES"
NS=${X2SEC_BENCH_NS_PREFIX:-pb}-ike-$$
DIR=$(mktemp -d /tmp/pb-ike.XXXXXX)
RESP_PID=
log() { echo "[$(date +%T)] $*" >&2; }

[ "$(id -u)" = 0 ] || { echo "SKIP: needs root (network namespace)" >&2; exit 77; }
[ -x "$X2SEC" ] || { echo "x2sec binary not found: $X2SEC" >&2; exit 2; }
command -v taskset >/dev/null && command -v openssl >/dev/null || { echo "SKIP: needs taskset and openssl" >&2; exit 77; }
HAVE_CHARON=0
charon_available && HAVE_CHARON=1
[ -c /dev/net/tun ] || { echo "SKIP: needs /dev/net/tun" >&2; exit 77; }
if [ -n "$PERF_DIR" ]; then
  command -v perf >/dev/null || { echo "--perf needs perf (linux-perf)" >&2; exit 2; }
  mkdir -p "$PERF_DIR"
  PERF_DIR=$(readlink -f "$PERF_DIR")
fi
PERF_REC=(perf record -q -F "${X2SEC_PERF_FREQ:-997}" --call-graph dwarf,16384)  # X2SEC_PERF_FREQ: sampling rate
[ "$(nproc)" -gt "$RCORE" ] && [ "$(nproc)" -gt "$GCORE" ] || CORES="0 0" GCORE=0 RCORE=0

stop_resp() {  # the responder we started, by pid
  local p=$RESP_PID
  RESP_PID=
  [ -n "$p" ] || return 0
  kill -TERM "$p" 2>/dev/null || return 0
  for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$p" 2>/dev/null || true
  wait "$p" 2>/dev/null || true
}
cleanup() {
  stop_resp
  ip netns del "$NS" 2>/dev/null || true
  if [ "${KEEP_DIR:-0}" = 1 ]; then log "kept $DIR"; else rm -rf "$DIR"; fi
}
trap cleanup EXIT
trap 'exit 1' INT TERM

ip netns add "$NS"
ip -n "$NS" link set lo up
# the responder's inner address (its Child SAs' local selector): kernel-libipsec routes each policy
ip -n "$NS" addr add 10.255.255.254/32 dev lo

# ---------------------------------------------------------------- the crypto bound (responder core)
# The responder's unavoidable OpenSSL work per setup: certificates — one ECDH keygen (timed as one
# ECDSA sign: both are one fixed-base scalar multiplication), one ECDH derive, one ECDSA sign
# (its AUTH), two ECDSA verifies (the initiator's AUTH and its certificate); PSK — keygen + derive.
measure_bound() {  # sets SIGN VERIFY ECDH BOUND_CERT BOUND_PSK
  taskset -c "$RCORE" openssl speed -seconds "$BOUND_S" ecdsap256 ecdhp256 >"$DIR/speed.txt" 2>/dev/null
  SIGN=$(awk '/ecdsa \(nistp256\)/ {print $(NF-1)}' "$DIR/speed.txt" | tail -1)
  VERIFY=$(awk '/ecdsa \(nistp256\)/ {print $NF}' "$DIR/speed.txt" | tail -1)
  ECDH=$(awk '/ecdh \(nistp256\)/ {print $NF}' "$DIR/speed.txt" | tail -1)
  [ -n "$SIGN" ] && [ -n "$VERIFY" ] && [ -n "$ECDH" ] || { echo "cannot parse openssl speed:" >&2; cat "$DIR/speed.txt" >&2; exit 1; }
  BOUND_CERT=$(awk -v s="$SIGN" -v v="$VERIFY" -v d="$ECDH" 'BEGIN {printf "%.1f", 1 / (2 / s + 2 / v + 1 / d)}')
  BOUND_PSK=$(awk -v s="$SIGN" -v d="$ECDH" 'BEGIN {printf "%.1f", 1 / (1 / s + 1 / d)}')
  log "openssl speed (core $RCORE): ecdsap256 sign $SIGN/s verify $VERIFY/s, ecdhp256 $ECDH/s -> bound cert $BOUND_CERT/s, psk $BOUND_PSK/s"
}

# ---------------------------------------------------------------- helpers
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }   # utime + stime of the whole process
rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
HZ=$(getconf CLK_TCK)
GEN_PERF=  # set to a perf.data path: the generator runs under perf record
gen() {  # the load generator on its core
  local pre=()
  [ -n "$GEN_PERF" ] && pre=("${PERF_REC[@]}" -o "$GEN_PERF" --)
  timeout "$((TMO + 30))" taskset -c "$GCORE" "${pre[@]}" ip netns exec "$NS" "$X2SEC" ike load --target 127.0.0.1:500 "$@"
}
creds() {  # $1 = auth: credentials + both responder configs
  local a=$1 d=$DIR/$1
  mkdir -p "$d/charon/swanctl/x509" "$d/charon/swanctl/x509ca" "$d/charon/swanctl/private" "$d/charon/run"
  local args=(--auth "$a" --count "$COUNT" --responder-cookie-threshold 1000000)
  if [ "$a" = cert ]; then args+=(--certs "$d/certs"); else args+=(--psk-base-file "$DIR/psk-base"); fi
  gen "${args[@]}" --write-responder-config "$d/x2sec.toml" --write-charon-config "$d/charon/swanctl/swanctl.conf" >/dev/null
  # The x2sec responder: no half-open caps in the way of the measured load (charon's are raised too).
  sed -i 's/^cookie_threshold = .*/cookie_threshold = 1000000\nmax_half_open = 1000000\nmax_half_open_per_source = 1000000/' "$d/x2sec.toml"
  if [ "$a" = cert ]; then
    cp "$d/certs/ca.pem" "$d/charon/swanctl/x509ca/"
    cp "$d/certs/responder.pem" "$d/charon/swanctl/x509/"
    install -m 0600 "$d/certs/responder.key" "$d/charon/swanctl/private/"
  fi
  # charon tuned as strongSwan's documentation advises for many SAs (defaults: table size 1,
  # cookies at 30 half-open, 5 half-open per source)
  charon_write_conf "$d/charon" --swanctl-load "$CHARON_SWANCTL_PLUGINS" --log "default = ${CHARON_LOG:--1}" \
    "install_routes = no" "ikesa_table_size = 4096" "ikesa_table_segments = 16" \
    "cookie_threshold = 1000000" "block_threshold = 1000000"
}
sw() { STRONGSWAN_CONF=$1/strongswan.conf timeout 60 swanctl "${@:2}" --uri "unix://$1/run/charon.vici"; }

start_x2sec() {  # $1 = auth
  local d=$DIR/$1
  rm -f "$d/ike.sock"
  taskset -c "$RCORE" ip netns exec "$NS" "$X2SEC" ike run --config "$d/x2sec.toml" --control "$d/ike.sock" \
    --dataplane tun --tun pbx0 --shutdown-grace 0 >"$d/x2sec.out" 2>"$d/x2sec.err" </dev/null &
  RESP_PID=$!
  for _ in $(seq 100); do [ -S "$d/ike.sock" ] && break; sleep 0.05; done
  [ -S "$d/ike.sock" ] || { log "x2sec responder did not start: $(tail -3 "$d/x2sec.err")"; return 1; }
}
x2sec_count() { "$X2SEC" ike list-sas --control "$DIR/$1/ike.sock" --json 2>/dev/null |
  python3 -c 'import json,sys; s=json.load(sys.stdin); s=s.get("sas",s) if isinstance(s,dict) else s; print(sum(1 for x in s if x.get("state")=="ESTABLISHED" and len(x.get("children",[]))==1))'; }
start_charon() {  # $1 = auth
  local d=$DIR/$1/charon
  rm -f "$d/run/charon.vici" "$d/run/charon.pid"  # an earlier round's: wait for this charon's own
  STRONGSWAN_CONF=$d/strongswan.conf taskset -c "$RCORE" ip netns exec "$NS" \
    sh -c "mount --bind $d/run /run && exec /usr/lib/ipsec/charon" >"$d/charon.out" 2>&1 </dev/null &
  RESP_PID=$!
  for _ in $(seq 100); do [ -S "$d/run/charon.vici" ] && break; sleep 0.05; done
  [ -S "$d/run/charon.vici" ] || { log "charon did not start: $(tail -3 "$d/charon.out")"; return 1; }
  sw "$d" --load-all --file "$d/swanctl/swanctl.conf" >"$d/load.log" 2>&1 || { log "swanctl --load-all failed: $(tail -3 "$d/load.log")"; return 1; }
}
charon_count() { sw "$DIR/$1/charon" --stats 2>/dev/null | awk '/IKE_SAs:/ {print $2}'; }

RESULTS=$DIR/results.txt
: >"$RESULTS"
FAILED=0
run_one() {  # $1 = responder, $2 = auth
  local r=$1 a=$2 pid c0 c1 m0 m1 up load
  "start_$r" "$a" || { FAILED=1; stop_resp; return 0; }
  pid=$RESP_PID
  sleep 0.5
  c0=$(cpu_ticks "$pid"); m0=$(rss_kb "$pid")
  load=$(cut -d' ' -f1 /proc/loadavg)
  local args=(--auth "$a" --count "$COUNT" --concurrency "$CONC" --source 127.0.0.2-127.0.0.9 --ports 64
              --duration "$TMO" --json --quiet)
  if [ "$a" = cert ]; then args+=(--certs "$DIR/$a/certs"); else args+=(--psk-base-file "$DIR/psk-base"); fi
  local perf_pid=
  if [ -n "$PERF_DIR" ]; then  # the responder's profile over the load only; perf itself on the generator's core
    taskset -c "$GCORE" "${PERF_REC[@]}" -p "$pid" -o "$PERF_DIR/$r-$a.resp.data" 2>"$PERF_DIR/$r-$a.resp.err" &
    perf_pid=$!
    GEN_PERF=$PERF_DIR/$r-$a.gen.data
    sleep 1
  fi
  gen "${args[@]}" >"$DIR/$r-$a.json" 2>"$DIR/$r-$a.err" || true
  GEN_PERF=
  if [ -n "$perf_pid" ]; then kill -INT "$perf_pid" 2>/dev/null || true; wait "$perf_pid" 2>/dev/null || true; fi
  c1=$(cpu_ticks "$pid"); m1=$(rss_kb "$pid")
  load="$load-$(cut -d' ' -f1 /proc/loadavg)"
  up=$("${r}_count" "$a" || echo 0)
  stop_resp
  local bound=$BOUND_PSK
  [ "$a" = cert ] && bound=$BOUND_CERT
  python3 - "$DIR/$r-$a.json" "$r" "$a" "$c0" "$c1" "$HZ" "$m0" "$m1" "${up:-0}" "$load" "$ROUND" "$bound" \
    "$SIGN" "$VERIFY" "$ECDH" >>"$RESULTS" <<'PY' || FAILED=1
import json, sys
f, r, a, c0, c1, hz, m0, m1, up, load, rnd, bound, sign, verify, ecdh = sys.argv[1:]
try:
    j = json.load(open(f))
except Exception as e:
    print(f"{r} {a} FAILED no report ({e})"); sys.exit(1)
ok = j["succeeded"]
cpu = (int(c1) - int(c0)) / int(hz)
per = cpu / ok * 1e3 if ok else float("nan")
rss = (int(m1) - int(m0)) * 1024 / ok if ok else float("nan")
for k, v in j.get("failures", {}).items():
    print(f"  {r} {a} failed: {v['count']} {k} (e.g. {v['example']})", file=sys.stderr)
print(f'{r} {a} {j["attempted"]} {ok} {j["setups_per_s"]:.1f} {j["latency_ms"]["p50"]:.1f} '
      f'{j["latency_ms"]["p99"]:.1f} {cpu:.2f} {per:.3f} {rss:.0f} {up} {load} {j["generator_cpu_seconds"]:.2f} '
      f'{rnd} {bound} {sign} {verify} {ecdh}')
sys.exit(0 if ok == j["attempted"] and int(up) == ok else 1)
PY
  tail -1 "$RESULTS" >&2
}

head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$DIR/psk-base"
for a in $AUTHS; do creds "$a"; done
for ROUND in $(seq "$REPEAT"); do
  [ "$REPEAT" -gt 1 ] && log "round $ROUND of $REPEAT"
  measure_bound
  for a in $AUTHS; do
    for r in $RESPONDERS; do
      if [ "$r" = charon ] && [ "$HAVE_CHARON" = 0 ]; then log "charon with kernel-libipsec not installed: skipped"; continue; fi
      log "$r responder, $a, $COUNT setups, concurrency $CONC (generator core $GCORE, responder core $RCORE)"
      run_one "$r" "$a"
    done
  done
done

# ---------------------------------------------------------------- the table
python3 - "$RESULTS" "$(nproc)" <<'PY'
import statistics, sys
res, ncpu = sys.argv[1:]
rows = []
for line in open(res):
    f = line.split()
    if len(f) < 18:
        print("  " + line.strip()); continue
    v = dict(r=f[0], a=f[1], att=int(f[2]), ok=int(f[3]), rate=float(f[4]), p50=float(f[5]), p99=float(f[6]),
             cpu=float(f[7]), per=float(f[8]), rss=float(f[9]), held=int(f[10]), load=f[11], gcpu=float(f[12]),
             round=int(f[13]), bound=float(f[14]), sign=f[15], verify=f[16], ecdh=f[17])
    v["cap"] = 1e3 / v["per"] if v["per"] > 0 else 0
    v["pct"] = 100 * v["cap"] / v["bound"] if v["bound"] > 0 else 0
    rows.append(v)
rounds = sorted({v["round"] for v in rows})
print(f"\n{ncpu} CPUs; the crypto bound per responder core, from openssl speed on that core before each round: "
      "cert = keygen+derive+sign+2 verify, psk = keygen+derive")
for n in rounds:
    v = next(x for x in rows if x["round"] == n)
    print(f'round {n}: ecdsap256 sign {v["sign"]}/s verify {v["verify"]}/s, ecdhp256 {v["ecdh"]}/s')
hdr = f'{"round":>5} {"responder":<8} {"auth":<5} {"up/tried":>11} {"setups/s":>9} {"p50 ms":>8} {"p99 ms":>8} ' \
      f'{"CPU ms/setup":>12} {"1/CPU /s":>9} {"bound /s":>9} {"% bound":>8} {"RSS B/SA":>9} {"held":>6} {"load":>11}'
print(hdr)
order = lambda v: (v["a"], v["r"] != "x2sec", v["round"])
for v in sorted(rows, key=order):
    print(f'{v["round"]:>5} {v["r"]:<8} {v["a"]:<5} {str(v["ok"]) + "/" + str(v["att"]):>11} {v["rate"]:>9.1f} '
          f'{v["p50"]:>8.1f} {v["p99"]:>8.1f} {v["per"]:>12.3f} {v["cap"]:>9.0f} {v["bound"]:>9.1f} {v["pct"]:>7.1f}% '
          f'{v["rss"]:>9.0f} {v["held"]:>6} {v["load"]:>11}')
med = {}
for key in sorted({(v["r"], v["a"]) for v in rows}, key=lambda k: (k[1], k[0] != "x2sec")):
    g = [v for v in rows if (v["r"], v["a"]) == key]
    med[key] = {k: statistics.median(x[k] for x in g) for k in ("rate", "per", "pct", "rss")}
    if len(rounds) > 1:
        m = med[key]
        print(f'median of {len(g)} rounds, {key[0]} {key[1]}: {m["rate"]:.1f} setups/s, {m["per"]:.3f} ms CPU per setup, '
              f'{m["pct"]:.1f} % of the bound (rounds {min(x["pct"] for x in g):.1f}-{max(x["pct"] for x in g):.1f} %), '
              f'RSS {m["rss"]:.0f} B/SA')
for a in ("cert", "psk"):
    x, c = med.get(("x2sec", a)), med.get(("charon", a))
    if x and c and x["per"] > 0 and c["per"] > 0 and c["rate"] > 0:
        print(f'ratio x2sec/charon, {a}{" (medians)" if len(rounds) > 1 else ""}: setups/s {x["rate"] / c["rate"]:.2f}x, '
              f'responder CPU per setup {c["per"] / x["per"]:.2f}x less, '
              f'RSS per SA {x["rss"] / c["rss"] if c["rss"] else float("nan"):.2f}')
print("setups/s: generator's rate (first IKE_SA_INIT .. last Child SA up); CPU ms/setup: responder utime+stime "
      "(/proc/<pid>/stat) / setups; 1/CPU: setups/s one responder core sustains at that cost; % bound: 1/CPU "
      "over the openssl-speed bound of the same round; RSS B/SA: responder VmRSS growth / IKE SAs held; load: "
      "1-min load average at start-end of the run")
PY
exit $FAILED
