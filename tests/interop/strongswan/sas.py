#!/usr/bin/env python3
"""Normalise `swanctl --list-sas` text or `x2sec ike list-sas --json` into lines
   IKE <spi_i> <spi_r> <state>
   CHILD <name> <spi_in> <spi_out> <state>
so the interop test can compare both ends.  usage: sas.py charon|x2sec < input"""
import json
import re
import sys

kind = sys.argv[1]
text = sys.stdin.read()
out = []
if kind == "x2sec":
    for sa in json.loads(text or "[]"):
        out.append(f"IKE {sa['spi_i']} {sa['spi_r']} {sa['state']}")
        for c in sa.get("children", []):
            out.append(f"CHILD {c['name']} {c['spi_in']} {c['spi_out']} {c['state']}")
else:
    child = None
    for line in text.splitlines():
        m = re.match(r"^\S+: #\d+, (\w+), IKEv2, ([0-9a-f]{16})_i\*? ([0-9a-f]{16})_r", line)
        if m:
            out.append(f"IKE {m.group(2)} {m.group(3)} {m.group(1)}")
            continue
        m = re.match(r"^  (\S+): #\d+, reqid \d+, (\w+),", line)
        if m:
            child = {"name": m.group(1), "state": m.group(2)}
            continue
        m = re.match(r"^    in  ([0-9a-f]{8})", line)
        if m and child is not None:
            child["in"] = m.group(1)
            continue
        m = re.match(r"^    out ([0-9a-f]{8})", line)
        if m and child is not None:
            child["out"] = m.group(1)
            out.append(f"CHILD {child['name']} {child['in']} {child['out']} {child['state']}")
            child = None
print("\n".join(out))
