#!/usr/bin/env bash
# Runs a command (by default the README's test command) in a pristine Debian 12 (bookworm) minbase
# root, as root, so that a package present only on this machine cannot hide a missing install
# step in scripts/deps.sh.
#
#   bash scripts/fresh-root-check.sh [--keep] [--fresh] [--] [COMMAND ...]
#
#   COMMAND   run with bash -c in the copied tree (default: bash scripts/run-tests.sh)
#   --keep    leave the root in place afterwards (its path is printed)
#   --fresh   ignore the cached pristine tarball and debootstrap anew
#
# What it does, each time:
#   1. takes the Debian mirror (and the security mirror, if any) from this machine's own apt sources;
#   2. debootstraps a minbase bookworm root, or unpacks the cached tarball of one (the tarball is the
#      untouched debootstrap output, kept under X2SEC_ROOT_CACHE, default /var/cache/x2sec-fresh-root,
#      rebuilt when older than X2SEC_ROOT_MAX_AGE_DAYS, default 7): every run starts from a pristine root;
#   3. writes only what a Debian installer writes and debootstrap does not (apt sources for the same
#      mirror, /etc/hosts, resolv.conf) and a policy-rc.d that keeps package scripts from starting
#      services inside the root (the tests start their own);
#   4. clones the committed tree of this checkout (HEAD; uncommitted changes are not taken) to
#      /root/x2sec in the root;
#   5. in a private mount namespace (so nothing leaks to the host and removing the root can never
#      reach the host's /dev or /proc), bind-mounts the root on itself (a chroot whose / is not a
#      mount point makes every `ip netns add` fail), mounts proc, sysfs, /dev (TUN), /dev/pts, /dev/shm and a tmpfs
#      on /run (network namespaces, charon's pid file), then chroots and runs COMMAND as root with a
#      clean environment (CI and X2SEC_* variables passed through, and X2SEC_ALLOW_SYSTEM_INSTALL=1:
#      the package test may dpkg -i into this throwaway root);
#   6. kills anything still running inside the root and removes it.
# The mirror address is read at run time and never written into the repository.
set -euo pipefail

keep=0
fresh=0
while [ $# -gt 0 ]; do
  case "$1" in
    --keep) keep=1; shift ;;
    --fresh) fresh=1; shift ;;
    --) shift; break ;;
    -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
    -*) echo "fresh-root-check: unknown option '$1' (--keep, --fresh, --)" >&2; exit 2 ;;
    *) break ;;
  esac
done
cmd="${*:-bash scripts/run-tests.sh}"

say() { echo "fresh-root-check: $*"; }
die() { echo "fresh-root-check: $*" >&2; exit 2; }

[ "$(id -u)" -eq 0 ] || die "must run as root (debootstrap, chroot, mounts)"
repo=$(git -C "$(dirname "$0")/.." rev-parse --show-toplevel 2>/dev/null) || die "not inside a git checkout"
for tool in debootstrap unshare chroot tar git; do
  command -v "$tool" >/dev/null 2>&1 || die "'$tool' is missing on the host (apt-get install debootstrap util-linux)"
done

suite=bookworm
arch=$(dpkg --print-architecture)

# --- 1. the mirror, from this machine's apt sources (one-line and deb822 formats) -------------
# Prints "URI SUITE" for every Debian source entry of component main.
apt_entries() {
  local f
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    awk '$1 == "deb" { i = 2; if ($2 ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
                       uri = $i; s = $(i + 1); for (j = i + 2; j <= NF; j++) if ($j == "main") print uri, s }' "$f"
  done
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    awk 'function flush() { if (types ~ /(^| )deb( |$)/ && comps ~ /(^| )main( |$)/) {
                              n = split(uris, u, " "); m = split(suites, s, " ");
                              for (a = 1; a <= n; a++) for (b = 1; b <= m; b++) print u[a], s[b] }
                            types = uris = suites = comps = "" }
         /^[ \t]*$/ { flush(); next }
         /^[ \t]*#/ { next }
         { key = $1; sub(/:$/, "", key); $1 = ""; sub(/^ +/, "");
           if (key == "Types") types = $0; else if (key == "URIs") uris = $0;
           else if (key == "Suites") suites = $0; else if (key == "Components") comps = $0 }
         END { flush() }' "$f"
  done
}
entries=$(apt_entries)
mirror=$(awk -v s="$suite" '$2 == s { print $1; exit }' <<<"$entries")
security=$(awk -v s="$suite-security" '$2 == s { print $1; exit }' <<<"$entries")
[ -n "$mirror" ] || die "no '$suite main' Debian source in /etc/apt/sources.list{,.d}: cannot choose a mirror"
mirror=${mirror%/}
say "mirror from this machine's apt sources: $mirror${security:+ (security: $security)}"

# --- 2. a pristine root: cached debootstrap output, or debootstrap now ---------------------
cache=${X2SEC_ROOT_CACHE:-/var/cache/x2sec-fresh-root}
max_age=${X2SEC_ROOT_MAX_AGE_DAYS:-7}
key=$(printf '%s %s %s minbase' "$mirror" "$suite" "$arch" | sha256sum | cut -c1-16)
tarball="$cache/$suite-$arch-minbase-$key.tar"
mkdir -p "$cache"
chmod 0700 "$cache"
if [ "$fresh" -eq 1 ] || [ ! -s "$tarball" ] || [ -n "$(find "$tarball" -mtime +"$max_age" 2>/dev/null)" ]; then
  stage=$(mktemp -d /var/tmp/x2sec-debootstrap.XXXXXX)
  say "debootstrap --variant=minbase $suite (about a minute)"
  if ! debootstrap --variant=minbase --arch="$arch" "$suite" "$stage/root" "$mirror" >"$stage/debootstrap.log" 2>&1; then
    tail -n 20 "$stage/debootstrap.log" >&2
    rm -rf "$stage"
    die "debootstrap failed (log above)"
  fi
  tar -C "$stage/root" --numeric-owner -cf "$tarball.tmp.$$" .
  mv -f "$tarball.tmp.$$" "$tarball"
  rm -rf "$stage"
fi

root=$(mktemp -d /var/tmp/x2sec-root.XXXXXX)
cleanup() {
  local rc=$?
  # Anything still running inside the root (a daemon a test left behind) is ended first.
  local p left=()
  for p in /proc/[0-9]*; do
    [ "$(readlink "$p/root" 2>/dev/null)" = "$root" ] && left+=("${p#/proc/}")
  done
  if [ ${#left[@]} -gt 0 ]; then
    say "ending ${#left[@]} process(es) left running in the root: ${left[*]}"
    kill -9 "${left[@]}" 2>/dev/null || true
    sleep 1
  fi
  if [ "$keep" -eq 1 ]; then
    say "root kept at $root"
  else
    rm -rf --one-file-system "$root"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
tar -C "$root" --numeric-owner -xf "$tarball"

# --- 3. what an installed Debian system has and debootstrap leaves out ---------------------
{
  echo "deb $mirror $suite main"
  echo "deb $mirror $suite-updates main"
  [ -z "$security" ] || echo "deb ${security%/} $suite-security main"
} >"$root/etc/apt/sources.list"
cat >"$root/etc/hosts" <<EOF
127.0.0.1	localhost
127.0.1.1	x2sec-fresh-root
::1		localhost ip6-localhost ip6-loopback
EOF
echo x2sec-fresh-root >"$root/etc/hostname"
cp -L /etc/resolv.conf "$root/etc/resolv.conf" 2>/dev/null || true
printf '#!/bin/sh\n# fresh-root-check: services are not started by package scripts in this root\nexit 101\n' \
  >"$root/usr/sbin/policy-rc.d"
chmod 0755 "$root/usr/sbin/policy-rc.d"

# --- 4. the committed tree -----------------------------------------------------------------
git clone --quiet --no-hardlinks "$repo" "$root/root/x2sec"
say "tree: $(git -C "$root/root/x2sec" log -1 --format='%h %s' | cut -c1-100)"

# --- 5. run it -----------------------------------------------------------------------------
envs=(HOME=/root PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 TERM=dumb)
while IFS='=' read -r name _; do
  case "$name" in CI|X2SEC_*) envs+=("$name=${!name}") ;; esac
done < <(env)
# The root is thrown away afterwards: tests may install packages into it (the .deb test's dpkg -i).
envs+=(X2SEC_ALLOW_SYSTEM_INSTALL=1)
say "running in the pristine root: $cmd"
start=$(date +%s)
set +e
unshare --mount --propagation private -- /bin/bash -euc '
  root=$1; shift
  # The root must be a mount point of its own: `ip netns add` runs `mount --make-rslave /`, which
  # fails with EINVAL ("Invalid argument") when / is a plain directory, as in a bare chroot.
  mount --bind "$root" "$root"
  mount -t proc proc "$root/proc"
  mount -t sysfs sysfs "$root/sys"
  mount --rbind /dev "$root/dev"
  mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs "$root/run"
  mkdir -p "$root/run/lock"
  exec chroot "$root" /usr/bin/env -i "$@"
' fresh-root "$root" "${envs[@]}" /bin/bash -c "cd /root/x2sec && $cmd"
rc=$?
set -e
say "command exited $rc after $(( $(date +%s) - start )) s"
exit "$rc"
