#!/usr/bin/python3
"""bench/callgrind.py -- instructions per call of a springrun server, by thread and library.

    /usr/bin/python3 bench/callgrind.py [--calls 5000] [--scenario seq|table|echo|connect]
        [--size BYTES] [--side server|client]

Runs bin/springrun bench/sr_server.lua (--side server, the default) or the client,
bin/springrun bench/sr_client.lua (--side client), under valgrind --tool=callgrind (one
output per thread) twice: once for 1 call, once for 1 + CALLS calls of the scenario
(echo: of a string of --size bytes, 1 MB for the bench's "echo 1MB" row); the difference
divided by CALLS is what one call costs, start-up excluded. Instruction
counts are deterministic (unlike time on a shared VM) but say nothing about waiting,
wake-ups or cache misses: read them next to bench/profile.py. Stops what it starts by pid.
"""
import argparse
import collections
import glob
import os
import re
import subprocess
import sys
import tempfile

sys.dont_write_bytecode = True  # no bench/__pycache__ in the checkout
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run  # noqa: E402

# "Ir (share)  file:function [object]"; code inlined from a header (the SSE2
# intrinsics of json.c) comes without the [object]
LINE = re.compile(r"\s*([\d,]+) \(\s*[\d.]+%\)\s+(.*?)(?:\[(.*)\])?\s*$")


def category(fn, dso):
    if dso is None:
        return "inlined (%s) into %s" % (fn.split(":")[0].split("/")[-1], fn.split(":")[-1].strip())
    base = os.path.basename(dso)
    if "libc" in base and any(k in fn for k in ("malloc", "free", "realloc", "calloc", "_int_",
                                                   "unlink_chunk", "consolidate", "tcache")):
        return "malloc/free"
    if "core.so" in base:
        src = fn.split(":")[0].split("/")[-1]
        return "springrun core.so: " + src
    if "liblua" in base:
        return "Lua VM (liblua5.4)"
    if "libuv" in base:
        return "libuv"
    return base


def measure(calls, scenario, size, side, tmp, tag):
    out = os.path.join(tmp, tag + ".%p")
    tool = ["valgrind", "--tool=callgrind", "--separate-threads=yes", "--callgrind-out-file=" + out]
    srv = run.spawn((tool if side == "server" else []) + [run.SR, os.path.join(run.BENCH, "sr_server.lua"), "0"],
                    role="tool", stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
                    cwd=run.ROOT)
    try:
        line = run.read_line(srv, 120)
        if not line or not line.startswith("PORT "):
            raise SystemExit("server under valgrind did not start")
        uri = "PYRO:bench@127.0.0.1:%s" % line.split()[1]
        argv = (tool if side == "client" else []) + [
            run.SR, os.path.join(run.BENCH, "sr_client.lua"), "--uri", uri, "--scenario", scenario,
            "--n", str(calls), "--warm", "1", "--size", str(size)]
        res = run.run_client(argv, timeout=1800)
        if "error" in res:
            raise SystemExit("client failed: %s" % res["error"])
    finally:
        run.stop(srv)  # SIGTERM: callgrind writes its files at exit
    per_thread = {}
    for f in sorted(glob.glob(os.path.join(tmp, tag + ".*-*"))):
        text = subprocess.check_output(["callgrind_annotate", "--inclusive=no", "--auto=no", "--threshold=100", f],
                                       stderr=subprocess.DEVNULL).decode(errors="replace")
        c = collections.Counter()
        table = False  # the per-function table only (not the annotated source after it)
        for ln in text.splitlines():
            if ln.rstrip().endswith("file:function"):
                table = True
                continue
            if table and ln.startswith("-- "):
                break
            m = LINE.match(ln) if table else None
            if m:
                c[category(m.group(2).strip(), m.group(3))] += int(m.group(1).replace(",", ""))
        per_thread[f.rsplit("-", 1)[1]] = c
    return per_thread


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=5000)
    ap.add_argument("--scenario", default="seq", choices=["seq", "table", "echo", "connect"])
    ap.add_argument("--size", type=int, default=1048576, help="echo: the string's size in bytes")
    ap.add_argument("--side", default="server", choices=["server", "client"])
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="springrun-callgrind-")
    base = measure(1, a.scenario, a.size, a.side, tmp, "base")
    full = measure(1 + a.calls, a.scenario, a.size, a.side, tmp, "full")
    names = {"01": "Lua thread", "02": "daemon thread"} if a.side == "server" else {"01": "client"}
    what = a.scenario + (" of %d bytes" % a.size if a.scenario == "echo" else "")
    print("### Instructions per call (callgrind, %s, scenario %s, %d calls)" % (a.side, what, a.calls))
    print("")
    print("| thread | where | instructions per call | share |")
    print("| --- | --- | --- | --- |")
    for th in sorted(full):
        b = base.get(th, collections.Counter())
        diff = {k: (full[th][k] - b.get(k, 0)) / a.calls for k in set(full[th]) | set(b)}
        total = sum(diff.values())
        who = names.get(th, "thread " + th)
        for k, v in sorted(diff.items(), key=lambda kv: -kv[1]):
            if total > 0 and v / total >= 0.01:
                print("| %s | %s | {:,.0f} | %.0f%% |".format(v) % (who, k, 100 * v / total))
        print("| %s | **total** | {:,.0f} | |".format(total) % who)


if __name__ == "__main__":
    try:
        main()
    finally:
        for p in list(run.PROCS):
            run.stop(p)
