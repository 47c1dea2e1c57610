# strongSwan charon with kernel-libipsec inside a network namespace, configured in its own
# directory.  Sourced by every script that runs a charon: tests/interop/strongswan/run_interop.sh,
# tests/netns/esp/charon_interop.sh, bench/esp/many_sas.sh, bench/esp/tunnel_throughput.sh and
# bench/ike_wire/ike_vs_charon.sh (each by its path relative to the script).
#
#   charon_available                       -> 0 if charon, swanctl and kernel-libipsec exist
#   charon_write_conf DIR [--load PLUGINS] [--swanctl-load PLUGINS] [--log SETTING]... [SETTING]...
#                                          -> DIR/strongswan.conf (see below)
#   charon_write_swanctl DIR NAME L R LID RID LTS RTS ESP PSK [ENCAP] [IKE_PROPOSAL]
#                                          -> DIR/swanctl/swanctl.conf (one IKEv2 PSK connection
#                                             with one tunnel-mode child of the same NAME)
#   charon_start NS DIR                    -> starts charon in NS (DIR/run bind-mounted on /run),
#                                             prints its pid, waits for the vici socket
#   charon_swanctl DIR ARGS...             -> swanctl against that charon
#   charon_load DIR                        -> swanctl --load-all
#   charon_stop DIR                        -> stops it (pid file in DIR/run)

# charon's plugins (their order is the preference where two provide the same feature: keep it
# when adding one) and the ones swanctl needs to load certificates and keys.
CHARON_PLUGINS="random nonce openssl kdf pem pkcs1 pkcs8 x509 pubkey kernel-libipsec kernel-netlink socket-default vici"
# shellcheck disable=SC2034  # used by the scripts that source this file
CHARON_SWANCTL_PLUGINS="random nonce openssl pem pkcs1 pkcs8 x509 pubkey"

charon_available() {
  [ -x /usr/lib/ipsec/charon ] && command -v swanctl >/dev/null &&
    [ -f /usr/lib/ipsec/plugins/libstrongswan-kernel-libipsec.so ]
}

# charon_write_conf DIR [OPTION]... [SETTING]...: DIR/strongswan.conf (and DIR/run, DIR/swanctl)
# for a charon on UDP 500 / 4500 that installs no virtual IPs, with its vici socket
# unix:///run/charon.vici (DIR/run/charon.vici once charon_start bind-mounted DIR/run on /run),
# its file log DIR/charon.log and nothing in syslog.
#   --load PLUGINS          charon's plugins (default $CHARON_PLUGINS)
#   --swanctl-load PLUGINS  swanctl's plugins, e.g. $CHARON_SWANCTL_PLUGINS (default: swanctl's own list)
#   --log SETTING           one setting of the file log, e.g. "default = 1", "flush_line = yes"
#   SETTING                 one more "key = value" of the charon section, e.g. "install_routes = no"
# One setting per argument: strongswan.conf wants one "key = value" per line.
charon_write_conf() {
  local d=$1 load=$CHARON_PLUGINS swanctl_load="" log=() extra=() x
  shift
  while [ $# -gt 0 ]; do
    case "$1" in
      --load) load=$2; shift ;;
      --swanctl-load) swanctl_load=$2; shift ;;
      --log) log+=("$2"); shift ;;
      *) extra+=("$1") ;;
    esac
    shift
  done
  mkdir -p "$d/run" "$d/swanctl"
  {
    echo "charon {"
    echo "  load = $load"
    echo "  port = 500"
    echo "  port_nat_t = 4500"
    echo "  install_virtual_ip = no"
    for x in "${extra[@]}"; do echo "  $x"; done
    cat <<CONF
  plugins {
    vici {
      socket = unix:///run/charon.vici
    }
  }
  filelog {
    log {
      path = $d/charon.log
CONF
    for x in "${log[@]}"; do echo "      $x"; done
    cat <<CONF
    }
  }
  syslog {
    daemon {
      default = -1
    }
  }
}
CONF
    if [ -n "$swanctl_load" ]; then printf 'swanctl {\n  load = %s\n}\n' "$swanctl_load"; fi
  } >"$d/strongswan.conf"
}

charon_write_swanctl() {
  local d=$1 name=$2 l=$3 r=$4 lid=$5 rid=$6 lts=$7 rts=$8 esp=$9 psk=${10} encap=${11:-yes}
  local ike=${12:-aes128gcm16-prfsha256-ecp256}
  mkdir -p "$d/swanctl"
  cat > "$d/swanctl/swanctl.conf" <<CONF
connections {
  $name {
    version = 2
    local_addrs = $l
    remote_addrs = $r
    encap = $encap
    proposals = $ike
    local {
      auth = psk
      id = $lid
    }
    remote {
      auth = psk
      id = $rid
    }
    children {
      $name {
        mode = tunnel
        local_ts = $lts
        remote_ts = $rts
        esp_proposals = $esp
      }
    }
  }
}
secrets {
  ike-$name {
    id-a = $lid
    id-b = $rid
    secret = $psk
  }
}
CONF
}

charon_start() {
  local ns=$1 d=$2
  STRONGSWAN_CONF=$d/strongswan.conf ip netns exec "$ns" sh -c "mount --bind $d/run /run && exec /usr/lib/ipsec/charon" \
    >"$d/charon.out" 2>&1 </dev/null &
  local pid=$!
  for _ in $(seq 100); do [ -S "$d/run/charon.vici" ] && break; sleep 0.05; done
  echo $pid
}

charon_swanctl() {
  local d=$1; shift
  STRONGSWAN_CONF=$d/strongswan.conf swanctl "$@" --uri "unix://$d/run/charon.vici"
}

charon_load() { charon_swanctl "$1" --load-all --file "$1/swanctl/swanctl.conf" >/dev/null 2>&1; }

charon_stop() {
  local d=$1 p
  [ -f "$d/run/charon.pid" ] || return 0
  p=$(cat "$d/run/charon.pid")
  kill -TERM "$p" 2>/dev/null || return 0
  for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$p" 2>/dev/null || true
}
