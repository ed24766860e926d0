#!/usr/bin/python3
"""bench/codec.py -- payload codecs side by side, without sockets (issue 18).

    /usr/bin/python3 bench/codec.py [--quick] [--out DIR]

Encode and decode times of springrun.json, springrun.serpent and lua-cjson (in one
bin/springrun process, bench/codec.lua) and of Python's json and serpent (in this
process) on three shapes: the nested table every bench client echoes (100 records,
1,100 values), a list of 10,000 integers and floats, and a map of 1,000 string keys to
short strings. Prints a markdown table per shape with ratios to lua-cjson and the issue's
codec targets, and writes DIR/codec.json and DIR/codec.md (default build/bench/codec).
bench/run.py runs the same as its "codec" part.

Figures are process CPU time per operation: the lowest of the runs (7, quick 3), each
run a batch of about 40 ms (quick 15 ms) after a full garbage collection, runs of the
codecs interleaved. The lowest is what the code costs when the shared machine leaves it
alone; the median is kept in the JSON.
"""
import argparse
import gc
import json
import os
import random
import subprocess
import sys
import tempfile
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
SR = os.path.join(ROOT, "bin", "springrun")

sys.dont_write_bytecode = True
sys.path.insert(0, BENCH)
from pyro_client import nested_table  # noqa: E402  (the same table every client sends)

MODES = {"quick": dict(reps=3, batch_ms=15), "full": dict(reps=7, batch_ms=40)}
SHAPES = [("table", "nested table (100 records, 1,100 values)"),
          ("numbers", "list of 10,000 integers and floats"),
          ("map", "map of 1,000 string keys to short strings")]
LUA_CODECS = ["springrun.json", "springrun.serpent", "lua-cjson"]
PY_CODECS = ["python json", "python serpent"]
REFERENCE = "lua-cjson"
TARGET = 1.5  # springrun encode and decode at least this many times as fast as lua-cjson


def shapes():
    rnd = random.Random(18)
    numbers = []
    for i in range(10000):
        # integers of up to 10 digits and floats of 16-17 significant digits
        numbers.append(rnd.randint(-10 ** 9, 10 ** 9) if i % 2 == 0 else rnd.uniform(-1e6, 1e6))
    return {"table": nested_table(), "numbers": numbers,
            "map": {"key%04d" % i: "value %d" % i for i in range(1000)}}


def py_codecs():
    import serpent
    return [("python json", lambda v: json.dumps(v, ensure_ascii=False), json.loads),
            ("python serpent", serpent.dumps, serpent.loads)]


def time_python(values, reps, batch_ms):
    clock = time.process_time
    jobs = []
    for shape, v in values.items():
        for name, enc, dec in py_codecs():
            text = enc(v)
            if dec(text) != v:
                raise SystemExit("codec bench: %s does not round-trip the %s shape" % (name, shape))
            for op, fn, arg in (("encode", enc, v), ("decode", dec, text)):
                t0 = clock()
                k = 0
                while clock() - t0 < batch_ms / 4000.0:
                    fn(arg)
                    k += 1
                one = (clock() - t0) / k
                jobs.append(dict(codec=name, shape=shape, op=op, fn=fn, arg=arg, bytes=len(text),
                                 calls=max(1, int(batch_ms / 1000.0 / max(one, 1e-9))), times=[]))
    for _ in range(reps):
        for j in jobs:
            gc.collect()
            fn, arg, k = j["fn"], j["arg"], j["calls"]
            t0 = clock()
            for _ in range(k):
                fn(arg)
            j["times"].append((clock() - t0) / k)
    out = []
    for j in jobs:
        t = sorted(j["times"])
        out.append(dict(codec=j["codec"], shape=j["shape"], op=j["op"], min_us=t[0] * 1e6,
                        median_us=t[(len(t) - 1) // 2] * 1e6, calls=j["calls"], bytes=j["bytes"]))
    return out


def time_lua(path, reps, batch_ms):
    if not os.access(SR, os.X_OK):
        raise SystemExit("codec bench: %s is missing: run make" % SR)
    out = subprocess.run([SR, os.path.join(BENCH, "codec.lua"), "--shapes", path,
                          "--reps", str(reps), "--batch_ms", str(batch_ms)],
                         cwd=ROOT, capture_output=True, timeout=600)
    if out.returncode != 0:
        raise SystemExit("codec bench: bench/codec.lua failed: %s" % out.stderr.decode(errors="replace"))
    return [json.loads(line) for line in out.stdout.decode().splitlines() if line.startswith("{")]


def run(quick=False):
    """Measures every codec; returns the result dict (see report)."""
    cfg = MODES["quick" if quick else "full"]
    values = shapes()
    fd, path = tempfile.mkstemp(prefix="springrun-codec-", suffix=".json")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(values, f)
        t0 = time.time()
        recs = time_lua(path, cfg["reps"], cfg["batch_ms"])
        recs += time_python(values, cfg["reps"], cfg["batch_ms"])
    finally:
        os.unlink(path)
    return {"mode": "quick" if quick else "full", "config": cfg, "records": recs,
            "seconds": round(time.time() - t0, 1)}


def lookup(res, codec, shape, op):
    for r in res["records"]:
        if (r["codec"], r["shape"], r["op"]) == (codec, shape, op):
            return r
    return None


def speedup(res, codec, shape, op):
    """How many times as fast as lua-cjson (its time / this codec's time, lowest run each)."""
    a, ref = lookup(res, codec, shape, op), lookup(res, REFERENCE, shape, op)
    if not a or not ref or not a["min_us"]:
        return None
    return ref["min_us"] / a["min_us"]


def us(v):
    return "{:,.1f}".format(v) if v < 100 else "{:,.0f}".format(v)


def report(res):
    cfg = res["config"]
    out = ["", "**Codecs, no sockets** (µs of process CPU per operation, the lowest of %d runs of "
           "~%d ms; \"× cjson\": lua-cjson's time over the codec's, above 1 is faster than "
           "lua-cjson)" % (cfg["reps"], cfg["batch_ms"])]
    for shape, title in SHAPES:
        out += ["", "*%s*" % title, "",
                "| codec | encode µs | decode µs | encode × cjson | decode × cjson | bytes |",
                "| --- | --- | --- | --- | --- | --- |"]
        for codec in LUA_CODECS + PY_CODECS:
            e, d = lookup(res, codec, shape, "encode"), lookup(res, codec, shape, "decode")
            if not e or not d:
                continue
            se, sd = speedup(res, codec, shape, "encode"), speedup(res, codec, shape, "decode")
            out.append("| %s | %s | %s | %.2f× | %.2f× | {:,} |".format(e["bytes"]) % (
                codec, us(e["min_us"]), us(d["min_us"]), se, sd))
    out += ["", "**Issue 18 codec targets** (springrun ≥ %.1f× as fast as lua-cjson)" % TARGET, "",
            "| codec | shape | encode | decode | met |", "| --- | --- | --- | --- | --- |"]
    for codec in ("springrun.json", "springrun.serpent"):
        for shape, _ in SHAPES:
            se, sd = speedup(res, codec, shape, "encode"), speedup(res, codec, shape, "decode")
            if se is None or sd is None:
                continue
            out.append("| %s | %s | %.2f× | %.2f× | %s |" % (
                codec, shape, se, sd, "yes" if se >= TARGET and sd >= TARGET else "no"))
    return "\n".join(out) + "\n"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default=os.path.join(ROOT, os.environ.get("BUILD", "build"), "bench", "codec"))
    a = ap.parse_args()
    res = run(a.quick)
    text = report(res)
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "codec.json"), "w") as f:
        json.dump(res, f, indent=1, sort_keys=True)
    with open(os.path.join(a.out, "codec.md"), "w") as f:
        f.write(text)
    sys.stdout.write(text)
    sys.stdout.write("\nraw results: %s\ntook %.0f s\n" % (os.path.join(a.out, "codec.json"), res["seconds"]))


if __name__ == "__main__":
    main()
