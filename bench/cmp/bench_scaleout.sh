#!/bin/bash
# Enrolments/s (ir + certConf, P-256) through HAProxy (round-robin; LB=http, the default:
# request by request, a certConf resumed on the other instance; LB=tcp: per connection) with 1 and with 2
# `x2sec ca serve` instances on one PostgreSQL 15, NCLI concurrent openssl cmp / x2sec enroll
# client processes (BENCH_PER enrolments each).  Not a test: prints the figures.
#   usage: bench/cmp/bench_scaleout.sh build/apps/x2sec      env: NCLI=8 BENCH_PER=6 LB=http|tcp
exec bash "$(dirname "$0")/../../tests/interop/scaleout/two_instances_pg_haproxy.sh" "${1:?path to x2sec}" bench
