#!/usr/bin/env python3
"""The cost of TLS (issue 9): `vmig bench` of the standard 4 GiB image over
loopback TCP, 4 channels, plain and with TLS, as a throughput ratio to plain
measured in the same run, medians of --runs repetitions.

  plain   no TLS (the reference)
  x509    tls=x509, TLS 1.3 with AES-128-GCM (the default priorities), vmig's
          record layer (tls-records=vmig, the default)
  gnutls  the same with GnuTLS's record layer (tls-records=gnutls)
  psk     tls=psk, the same cipher after a pre-shared-key handshake
  aes256  tls=x509 with tls-priority forcing AES-256-GCM
  ktls    tls=x509 with tls-ktls=require: kernel TLS; reported as
          unavailable, with the reason, where this kernel or GnuTLS lacks it

The destination is prefaulted (--prefault) by default, so that the figure is
the cost of the cipher, not of the first touch of fresh memory (which a cold
destination adds to both sides alike, hiding part of it); --cold measures
with a cold destination, idling --idle seconds before every run.

Runs alternate (plain, x509, psk, ..., plain, x509, ...) so that drift of the
machine hurts every side alike. The credentials are made for the run by
scripts/tls-certs.sh in a temporary directory.

Usage: bench/run_tls.py BUILD_DIR [--runs N] [--size 4G] [--cold] [--idle S]
                        [--only plain,x509,...] [--markdown]
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))

CASES = {
    "plain": [],
    "x509": ["--tls", "x509"],
    "gnutls": ["--tls", "x509", "--tls-records", "gnutls"],
    "psk": ["--tls", "psk"],
    "aes256": ["--tls", "x509", "--tls-priority",
               "NONE:+VERS-TLS1.3:+AES-256-GCM:+AEAD:+SIGN-ALL:+GROUP-ALL:+COMP-NULL"],
    "ktls": ["--tls", "x509", "--tls-ktls", "require"],
}


def run_case(args, creds, case):
    cmd = [f"{args.build}/tools/vmig/vmig", "bench", "--size", args.size,
           "--cold" if args.cold else "--prefault", "--channels", "4", "--json", "--quiet"]
    cmd += CASES[case]
    if case != "plain":
        cmd += ["--tls-creds", creds]
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = p.stdout.strip().splitlines()
    j = json.loads(lines[-1]) if lines else {"ok": False, "error": p.stderr.strip()}
    if not j.get("ok"):
        return {"error": j.get("error") or p.stderr.strip()}
    if not j["bench"]["verified"]:
        sys.exit(f"{case}: the destination differs from the source")
    t = j["tls"]
    if case != "plain" and t["connections"] != 5:
        sys.exit(f"{case}: {t['connections']} TLS connections, expected 5")
    return {"seconds": j["seconds"], "mbps": j["mbps"], "cpu": j["bench"]["cpu_seconds"],
            "protocol": t["protocol"], "ktls": t["ktls_connections"],
            "why": t["ktls_why_not"]}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("build")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--size", default="4G")
    ap.add_argument("--cold", action="store_true")
    ap.add_argument("--idle", type=float, default=20.0)
    ap.add_argument("--only", default="plain,x509,gnutls,psk,aes256,ktls")
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args()
    cases = [c for c in args.only.split(",") if c]
    for c in cases:
        if c not in CASES:
            sys.exit(f"unknown case '{c}' (known: {', '.join(CASES)})")
    if "plain" not in cases:
        cases.insert(0, "plain")
    if not shutil.which("certtool"):
        print("SKIP: certtool is not installed (Debian: gnutls-bin)", file=sys.stderr)
        sys.exit(77)
    creds = tempfile.mkdtemp(prefix="vmig-tls-bench.")
    try:
        subprocess.run([f"{HERE}/../scripts/tls-certs.sh", creds], check=True,
                       stdout=subprocess.DEVNULL)
        rows = {c: [] for c in cases}
        unavailable = {}
        for r in range(args.runs):
            for c in cases:
                if c in unavailable:
                    continue
                if args.cold:
                    time.sleep(args.idle)
                res = run_case(args, creds, c)
                if "error" in res:
                    if c == "ktls" and "kernel TLS is off" in res["error"]:
                        unavailable[c] = res["error"]
                        print(f"ktls: unavailable here: {res['error']}", flush=True)
                        continue
                    sys.exit(f"{c}: {res['error']}")
                rows[c].append(res)
                print(f"run {r + 1} {c:7s} {res['seconds']:.3f} s {res['mbps']:.0f} MB/s "
                      f"cpu {res['cpu']:.2f} s {res.get('protocol', '')}"
                      f"{' ktls on %d' % res['ktls'] if c != 'plain' else ''}", flush=True)
    finally:
        shutil.rmtree(creds, ignore_errors=True)

    def med(c, k):
        return statistics.median(x[k] for x in rows[c])

    base = med("plain", "mbps")
    dest = "cold" if args.cold else "prefaulted"
    if args.markdown:
        print(f"\n| case | throughput | CPU (both sides) | ratio to plain | goal | |")
        print("|---|---|---|---|---|---|")
    else:
        print(f"\nmedians of {args.runs}, {args.size}, 4 channels, {dest} destination:")
    for c in cases:
        if c in unavailable:
            line = (f"| {c} | unavailable: {unavailable[c]} | | | | |" if args.markdown else
                    f"{c:7s} unavailable: {unavailable[c]}")
            print(line)
            continue
        m, cpu = med(c, "mbps"), med(c, "cpu")
        ratio = m / base
        goal = "" if c == "plain" else ">= 0.6x"
        met = "" if c == "plain" else ("met" if ratio >= 0.6 else "NOT met")
        if args.markdown:
            print(f"| {c} | {m:.0f} MB/s | {cpu:.2f} s | **{ratio:.2f}x** | {goal} | {met} |")
        else:
            print(f"{c:7s} {m:7.0f} MB/s  cpu {cpu:5.2f} s  ratio {ratio:.2f}  {met}")
    why = next((x["why"] for c in cases if c != "plain" for x in rows[c] if x["why"]), "")
    if why:
        print(f"kernel TLS not in use: {why}")


if __name__ == "__main__":
    main()
