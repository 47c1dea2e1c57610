#!/usr/bin/env bash
# Installs every Debian 12 package x2sec needs to build, test and benchmark (run as root).
set -euo pipefail
PACKAGES=(
  build-essential cmake ninja-build pkg-config git clang-14 libclang-rt-14-dev lld-14 clang-format-14 clang-tidy-14
  libssl-dev openssl libspdlog-dev libfmt-dev libcli11-dev
  libtomlplusplus-dev nlohmann-json3-dev libsqlite3-dev sqlite3 libpq-dev postgresql-15
  libgtest-dev libgmock-dev libbenchmark-dev
  strongswan-charon strongswan-swanctl strongswan-pki libcharon-extra-plugins
  libstrongswan-extra-plugins libstrongswan-standard-plugins iproute2 curl iputils-ping iperf3 tcpdump tshark
  netcat-openbsd procps python3 haproxy jq prometheus systemd file
  softhsm2 libengine-pkcs11-openssl libp11-kit-dev opensc
)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "x2sec: installing ${#missing[@]} packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # tshark asks whether non-root users may capture: they may not (the tests capture as root).
  echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
# strongSwan's and Prometheus's packages may start them as services; the tests run their own
# instances (prometheus: tests/ops/prometheus.sh, temp config, loopback, its own port).
for svc in strongswan-starter prometheus; do
  if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet "$svc" 2>/dev/null; then
    systemctl stop "$svc" || true
  fi
done
