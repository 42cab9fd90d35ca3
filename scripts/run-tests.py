#!/usr/bin/env python3
"""Run the Meson test suite of a build directory and end with the line
'N passed, N failed, N skipped' (skips are tests that exited 77)."""
import json
import os
import subprocess
import sys

build = sys.argv[1] if len(sys.argv) > 1 else "build"
extra = sys.argv[2:]
rc = subprocess.call(["meson", "test", "-C", build, "--print-errorlogs", "--num-processes", "2"]
                     + extra)
log = os.path.join(build, "meson-logs", "testlog.json")
passed = failed = skipped = 0
skips = []
try:
    with open(log) as f:
        for line in f:
            t = json.loads(line)
            r = t.get("result")
            if r in ("OK", "EXPECTEDFAIL"):
                passed += 1
            elif r == "SKIP":
                skipped += 1
                why = (t.get("stderr") or t.get("stdout") or "").strip().splitlines()
                skips.append("%s: %s" % (t["name"], why[-1] if why else "no reason given"))
            else:
                failed += 1
except FileNotFoundError:
    failed += 1
for s in skips:
    print("skipped " + s)
if rc != 0 and failed == 0:
    failed = 1  # meson itself failed (build error, timeout handling...)
print("%d passed, %d failed, %d skipped" % (passed, failed, skipped))
sys.exit(1 if failed else 0)
