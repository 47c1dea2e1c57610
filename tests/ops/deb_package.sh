#!/bin/bash
# `cpack -G DEB` builds x2sec_<version>_amd64.deb: binary, systemd units, example configs,
# maintainer scripts creating the x2sec user.  Its contents are checked with dpkg-deb and
# `dpkg -x`.  With X2SEC_ALLOW_SYSTEM_INSTALL=1 (set by scripts/fresh-root-check.sh, whose root is
# thrown away: CI) it is installed with dpkg -i, the installed binary is started the way
# x2sec-ike.service's ExecStartPre/ExecStart would (as user x2sec, config in /etc/x2sec), its
# control socket and /metrics answer, and the package is purged again.
source "$(dirname "$0")/common.sh"
BUILD=${BUILD_DIR:?usage: $0 path/to/x2sec path/to/build-dir}
command -v cpack >/dev/null || { echo "SKIP: cpack not installed"; exit 77; }
VERSION=$(sed -n 's/^CMAKE_PROJECT_VERSION:STATIC=//p' "$BUILD/CMakeCache.txt")
[ -n "$VERSION" ] || VERSION=$(grep -m1 -o 'project(x2sec VERSION [0-9.]*' "$SRC/CMakeLists.txt" | awk '{print $3}')
DEB=x2sec_${VERSION}_amd64.deb
(cd "$BUILD" && cpack -G DEB -B "$D/pkg" > "$D/cpack.log" 2>&1) || { fail "cpack -G DEB failed"; finish; }
check "cpack wrote $DEB" test -f "$D/pkg/$DEB"
P=$D/pkg/$DEB
info=$(dpkg-deb -f "$P" Package Version Architecture Depends)
echo "$info"
check "control: Package x2sec" grep -qx "Package: x2sec" <<<"$info"
check "control: Version $VERSION" grep -qx "Version: $VERSION" <<<"$info"
check "control: Architecture amd64" grep -qx "Architecture: amd64" <<<"$info"
check "control: shared library dependencies (libssl3)" grep -q "libssl3" <<<"$info"
list=$(dpkg-deb -c "$P" | awk '{print $6}')
for f in ./usr/bin/x2sec ./usr/lib/systemd/system/x2sec-ike.service ./usr/lib/systemd/system/x2sec-esp.service \
         ./usr/lib/systemd/system/x2sec-ca.service ./usr/lib/systemd/system/x2sec-kds.service \
         ./etc/x2sec/ike.toml.example ./etc/x2sec/esp-ike.toml.example ./etc/x2sec/ca.toml.example \
         ./etc/x2sec/kds.toml.example ./usr/share/doc/x2sec/operations.md ./usr/share/doc/x2sec/metrics.md \
         ./usr/share/doc/x2sec/grafana-x2sec.json; do
  check "package holds $f" grep -qx "$f" <<<"$list"
done
check "nothing else from the build (no libraries, headers)" bash -c "! grep -E '\\.(a|h|hpp)\$' <<<\"\$1\"" _ "$list"
mkdir ctl && dpkg-deb -e "$P" ctl
check "postinst creates the x2sec system user" grep -q "useradd --system" ctl/postinst
check "maintainer scripts are executable" test -x ctl/postinst -a -x ctl/prerm -a -x ctl/postrm
dpkg -x "$P" x
check "extracted binary runs" bash -c "\"$D/x/usr/bin/x2sec\" version | grep -q 'x2sec'"
check "example ike config passes the parser" bash -c "\"$D/x/usr/bin/x2sec\" ike check-config --config \"$D/x/etc/x2sec/ike.toml.example\" 2>&1 | grep -q 'certs/operator-root.pem'"

if [ "${X2SEC_ALLOW_SYSTEM_INSTALL:-0}" != 1 ]; then
  echo "SKIP: dpkg -i / start / purge not run: X2SEC_ALLOW_SYSTEM_INSTALL is not 1 (only scripts/fresh-root-check.sh's throwaway root, as in CI, may install into the system); the package was built and its contents checked with dpkg -x ($FAILS failure(s))"
  [ "$FAILS" -eq 0 ] || exit 1
  exit 77
fi
if dpkg -s x2sec >/dev/null 2>&1; then fail "an x2sec package is already installed here; not touching it"; finish; fi
check "dpkg -i $DEB" dpkg -i "$P"
trap 'dpkg --purge x2sec >/dev/null 2>&1 || true; cleanup' EXIT
check "user x2sec exists" getent passwd x2sec
check "/etc/x2sec/private is 0700 x2sec" test "$(stat -c '%a %U' /etc/x2sec/private)" = "700 x2sec"
PORT=$(free_port 9); MPORT=$((PORT + 5))
cat > /etc/x2sec/ike.toml <<TOML
[runtime]
control_socket = "/run/x2sec/ike.sock"
[metrics]
listen = "127.0.0.1:$MPORT"
[[peer]]
name = "peer"
local_addr = "127.0.0.1"
remote_addr = "127.0.0.1"
local_port = $PORT
local_natt_port = $((PORT + 1))
remote_port = $((PORT + 2))
local_id = "fqdn:a.example.org"
auth = "psk"
psk = "hex:00112233445566778899aabbccddeeff"
  [[peer.child]]
  name = "x2"
  local_ts = "198.51.100.0/24"
  remote_ts = "203.0.113.0/24"
TOML
chgrp x2sec /etc/x2sec/ike.toml && chmod 0640 /etc/x2sec/ike.toml
install -d -o x2sec -g x2sec -m 0750 /run/x2sec   # RuntimeDirectory=x2sec
unit=/usr/lib/systemd/system/x2sec-ike.service
pre=$(sed -n 's/^ExecStartPre=//p' $unit)
start=$(sed -n 's/^ExecStart=//p' $unit | sed 's/ \$X2SEC_IKE_ARGS//')
check "ExecStartPre as x2sec: $pre" setpriv --reuid=x2sec --regid=x2sec --init-groups $pre
setpriv --reuid=x2sec --regid=x2sec --init-groups --no-new-privs $start > ike-installed.log 2>&1 &
PIDS+=($!)
check "installed daemon's control socket appears" wait_file /run/x2sec/ike.sock
check "x2sec ike list-sas --config /etc/x2sec/ike.toml" /usr/bin/x2sec ike list-sas --config /etc/x2sec/ike.toml
check "installed daemon serves /metrics" bash -c "curl -sf http://127.0.0.1:$MPORT/metrics | grep -q 'x2sec_build_info{daemon=\"ike\",version=\"$VERSION\"} 1'"
kill ${PIDS[-1]}; wait ${PIDS[-1]} 2>/dev/null || true
check "dpkg --purge x2sec" dpkg --purge x2sec
check "binary removed" test ! -e /usr/bin/x2sec
check "user x2sec removed" bash -c "! getent passwd x2sec"
rm -rf /run/x2sec /etc/x2sec
finish
