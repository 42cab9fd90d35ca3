#!/usr/bin/env python3
"""The foundation benchmarks (issue 2), each as a ratio to a reference
measured in the same run, medians of --runs repetitions.

  cold      vmig bench --cold     vs  bench_plain (cold):   time ratio, CPU seconds,
            and the first-touch floor (bench_fault): CPU that populating the same
            number of fresh pages costs by itself, in the same run
  prefault  vmig bench --prefault vs  bench_plain --prefault: time ratio, seconds
  zero      bench_zero: vmig_is_zero vs ISA-L isal_zero_detect and one-core read bandwidth

Runs of the two sides alternate (plain, vmig, plain, vmig...) so that drift
of the machine hurts both alike. Before every cold run the machine idles
--idle seconds: freed memory goes back to the host, and a run that follows
another too soon finds memory that is still backed and looks faster.

Usage: bench/run_foundation.py BUILD_DIR [--runs N] [--size 4G] [--idle S]
                               [--only cold,prefault,zero] [--markdown]
"""
import argparse
import json
import statistics
import subprocess
import sys
import time


def run_json(cmd):
    out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def vmig_run(build, size, mode):
    j = run_json([f"{build}/tools/vmig/vmig", "bench", "--size", size, f"--{mode}",
                  "--channels", "4", "--json", "--quiet"])
    b = j["bench"]
    if not (j["ok"] and b["verified"]):
        sys.exit(f"vmig bench failed: {j.get('error')}")
    return {"seconds": j["seconds"], "cpu": b["cpu_seconds"], "cpu_send": b["sender_cpu_seconds"],
            "cpu_recv": b["receiver_cpu_seconds"]}


def plain_run(build, size, mode):
    cmd = [f"{build}/bench/bench_plain", "--size", size, "--json"]
    if mode == "prefault":
        cmd.append("--prefault")
    j = run_json(cmd)
    if not j["verified"]:
        sys.exit("bench_plain: the destination differs from the source")
    return {"seconds": j["seconds"], "cpu": j["cpu_send"] + j["cpu_recv"],
            "cpu_send": j["cpu_send"], "cpu_recv": j["cpu_recv"]}


def floor_run(build, size, mode):
    """The first-touch floor of a cold run: CPU to populate as many fresh
    /dev/shm pages as the mix has non-zero ones (half the image), with two
    threads, and nothing else. Every cold receiver pays at least this."""
    mib = int(parse_size(size) >> 20)
    out = subprocess.run([f"{build}/bench/bench_fault", "--size", str(mib), "--sleep", "0",
                          "--case", "shm-populate-2"], check=True, stdout=subprocess.PIPE,
                         text=True).stdout
    line = out.strip().splitlines()[-1].split()
    wall = float(line[line.index("wall") - 2])
    cpu = float(line[line.index("CPU") - 2])
    return {"seconds": wall, "cpu": cpu, "cpu_send": 0.0, "cpu_recv": cpu}


def parse_size(text):
    units = {"K": 10, "M": 20, "G": 30, "T": 40}
    if text[-1].upper() in units:
        return int(text[:-1]) << units[text[-1].upper()]
    return int(text)


def med(rows, key):
    return statistics.median(r[key] for r in rows)


def pair(args, mode):
    plain, vm, floor = [], [], []
    sides = [("plain", plain_run, plain), ("vmig", vmig_run, vm)]
    if mode == "cold":
        sides.append(("floor", floor_run, floor))
    for i in range(args.runs):
        for name, fn, acc in sides:
            if mode == "cold" and args.idle > 0:
                time.sleep(args.idle)
            r = fn(args.build, args.size, mode)
            acc.append(r)
            print(f"  {mode:8} run {i + 1}/{args.runs} {name:5} {r['seconds']:7.3f} s  "
                  f"cpu {r['cpu']:6.3f} s (send {r['cpu_send']:.3f}, recv {r['cpu_recv']:.3f})",
                  file=sys.stderr, flush=True)
    return {
        "floor_cpu": med(floor, "cpu") if floor else None,
        "plain_seconds": med(plain, "seconds"), "vmig_seconds": med(vm, "seconds"),
        "plain_cpu": med(plain, "cpu"), "vmig_cpu": med(vm, "cpu"),
        "vmig_cpu_send": med(vm, "cpu_send"), "vmig_cpu_recv": med(vm, "cpu_recv"),
        "ratio": med(vm, "seconds") / med(plain, "seconds"),
        "vmig_all": [r["seconds"] for r in vm], "plain_all": [r["seconds"] for r in plain],
    }


def zero(args):
    out = subprocess.run([f"{args.build}/bench/bench_zero", "--reps", str(args.runs), "--size",
                          "2048"], check=True, stdout=subprocess.PIPE, text=True).stdout
    rows, section = {}, None
    for line in out.splitlines():
        if line and not line.startswith(" "):
            section = line.split()[0]
        parts = line.split()
        if section and len(parts) >= 2 and parts[0] in ("vmig_is_zero", "isal", "stream"):
            rows[(section, parts[0])] = float(parts[1])
    print(out, file=sys.stderr)
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("build")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--size", default="4G")
    ap.add_argument("--idle", type=float, default=20.0)
    ap.add_argument("--only", default="cold,prefault,zero")
    args = ap.parse_args()
    only = args.only.split(",")
    res = {}
    if "cold" in only:
        res["cold"] = pair(args, "cold")
    if "prefault" in only:
        res["prefault"] = pair(args, "prefault")
    if "zero" in only:
        res["zero"] = zero(args)

    print(f"\n## foundation benchmarks: {args.size} image, standard mix, loopback TCP, "
          f"4 channels, median of {args.runs}\n")
    print("| figure | vmig | reference (same run) | ratio | target |")
    print("|---|---|---|---|---|")
    for mode in ("cold", "prefault"):
        if mode in res:
            r = res[mode]
            print(f"| {mode}: time | {r['vmig_seconds']:.3f} s | plain pair {r['plain_seconds']:.3f} s"
                  f" | {r['ratio']:.2f}x | {'<= 0.8x' if mode == 'cold' else '<= 0.75 s'} |")
            print(f"| {mode}: CPU (send + recv) | {r['vmig_cpu']:.3f} s ({r['vmig_cpu_send']:.3f}"
                  f" + {r['vmig_cpu_recv']:.3f}) | plain pair {r['plain_cpu']:.3f} s | "
                  f"{r['vmig_cpu'] / r['plain_cpu']:.2f}x | {'<= 2.5 s' if mode == 'cold' else '-'} |")
    if "cold" in res and res["cold"]["floor_cpu"] is not None:
        f = res["cold"]["floor_cpu"]
        print(f"| cold: first-touch floor (CPU to populate the same number of fresh /dev/shm "
              f"pages, 2 threads, nothing else) | - | {f:.3f} s | vmig is {res['cold']['vmig_cpu'] - f:.3f} s "
              f"above it, plain {res['cold']['plain_cpu'] - f:.3f} s | - |")
    if "zero" in res:
        z = res["zero"]
        v, i, s = (z.get(("zero", k)) for k in ("vmig_is_zero", "isal", "stream"))
        if v:
            print(f"| zero pages, one core, 2 GiB buffer | {v:.2f} GB/s | isal {i or 0:.2f} GB/s, "
                  f"read ceiling {s or 0:.2f} GB/s | {v / i if i else 0:.2f}x isal | >= 15 GB/s |")
    print("\nraw seconds: " + json.dumps({m: {"vmig": res[m]["vmig_all"], "plain": res[m]["plain_all"]}
                                         for m in ("cold", "prefault") if m in res}))


if __name__ == "__main__":
    main()
