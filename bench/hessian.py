"""bench/hessian.py -- make bench's Hessian rows (issue 16): springrun against Caucho
Hessian 4.0.38 (Debian libhessian-java) on the machine's JDK, both directions, in one run.

    server side: Caucho's Java client (HessianProxyFactory, Hessian 2 calls) against
                 springrun's HessianServiceExporter vs against the Java server
                 (HessianSkeleton under com.sun.net.httpserver, TCP_NODELAY set)
    client side: springrun.hessian_proxy against the Java server vs the Java client
                 against it

Each client makes N small calls (add(i, 1)) on one kept-alive connection, then N/20
echo() calls of a list of 1,000 beans; rates are calls/s, medians over the runs (every
run against freshly started servers). The Java peers (spec/java/) are compiled with
javac into a temporary directory. Used by run.py (part "hessian"); alone:

    /usr/bin/python3 bench/hessian.py [--quick]
"""
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
SR = os.path.join(ROOT, "bin", "springrun")
JAR = "/usr/share/java/hessian.jar"
OPENS = "--add-opens=java.base/java.lang=ALL-UNNAMED"

sys.dont_write_bytecode = True
sys.path.insert(0, BENCH)
# the harness's helpers (spawn, stop, free_port, read_line, log, fmt): run.py itself when
# it is the program (one list of processes to stop), else imported
if hasattr(sys.modules["__main__"], "read_line"):
    harness = sys.modules["__main__"]
else:
    import run as harness  # noqa: E402

ROWS = [
    ("java client -> springrun exporter", "java", "sr"),
    ("java client -> java server", "java", "java"),
    ("springrun client -> java server", "sr", "java"),
    ("springrun client -> springrun exporter", "sr", "sr"),
]


def compile_java(tmp):
    classes = os.path.join(tmp, "java")
    os.makedirs(classes)
    src = os.path.join(ROOT, "spec", "java")
    files = [os.path.join(src, f) for f in sorted(os.listdir(src)) if f.endswith(".java")]
    subprocess.check_call(["javac", "-nowarn", "-cp", JAR, "-d", classes] + files)
    return classes + ":" + JAR


def start_server(kind, cp):
    port = harness.free_port()
    if kind == "java":
        # TCP_NODELAY on its sockets (what servlet containers set): without it the JDK
        # server's response body waits for the client's delayed ACK of its head (~40 ms)
        p = harness.spawn(["java", "-Dsun.net.httpserver.nodelay=true", OPENS, "-cp", cp,
                           "HessianTestServer", str(port)], role="server",
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        path = "/test"
    else:
        p = harness.spawn([SR, os.path.join(BENCH, "sr_hessian_server.lua"), "127.0.0.1", str(port)],
                          role="server", stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        path = "/lua"
    line = harness.read_line(p, 30)
    if not line or not line.startswith("listening"):
        harness.stop(p)
        raise RuntimeError("%s Hessian server did not start: %r" % (kind, line))
    return p, "http://127.0.0.1:%d%s" % (port, path)


def run_client(kind, url, cp, n):
    if kind == "java":
        argv = ["java", OPENS, "-cp", cp, "HessianLuaClient", url, "h2", "bench", str(n)]
    else:
        argv = [SR, os.path.join(BENCH, "sr_hessian_client.lua"), url, str(n)]
    out = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=600)
    if out.returncode != 0:
        return {"error": out.stderr.decode(errors="replace")[-300:]}
    rec = {}
    for line in out.stdout.decode().splitlines():
        k, _, v = line.partition(" ")
        if k in ("small", "beans"):
            rec[k] = float(v)
    return rec


def run(quick=False):
    """Runs every row; returns {"n": N, "reps": R, "rows": {name: {"small": [...], "beans": [...]}}}
    or {"error": ...} when Java or the jar is missing."""
    if not shutil.which("javac") or not os.path.exists(JAR):
        return {"error": "javac or %s missing (default-jdk-headless, libhessian-java)" % JAR}
    n = 2000 if quick else 10000
    reps = 3 if quick else 5
    tmp = tempfile.mkdtemp(prefix="springrun-bench-hessian-")
    res = {"n": n, "reps": reps, "rows": {name: {"small": [], "beans": []} for name, _, _ in ROWS}}
    try:
        cp = compile_java(tmp)
        for rep in range(reps):
            harness.log("hessian, run %d/%d" % (rep + 1, reps))
            servers = {}
            try:
                for kind in ("java", "sr"):
                    servers[kind] = start_server(kind, cp)
                for name, client, server in ROWS:
                    rec = run_client(client, servers[server][1], cp, n)
                    if "error" in rec:
                        harness.log("%s: %s" % (name, rec["error"]))
                        continue
                    for k in ("small", "beans"):
                        res["rows"][name][k].append(rec[k])
            finally:
                for p, _ in servers.values():
                    harness.stop(p)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return res


def report(res):
    if "error" in res:
        return "\n**Hessian**: skipped: %s\n" % res["error"]

    def cell(vals):
        if not vals:
            return "—"
        return "%s (%s–%s)" % (harness.fmt(statistics.median(vals)), harness.fmt(min(vals)),
                               harness.fmt(max(vals)))

    out = ["", "**Hessian 2 over HTTP, against Caucho Hessian 4.0.38** (calls/s, one kept-alive "
           "connection, medians of %d runs against fresh servers; small: %d add(i, 1) calls; "
           "1,000 beans: %d echo calls of a list of 1,000 beans)" % (res["reps"], res["n"], res["n"] // 20),
           "", "| client -> server | small calls | list of 1,000 beans |", "| --- | --- | --- |"]
    rows = res["rows"]
    for name, _, _ in ROWS:
        out.append("| %s | %s | %s |" % (name, cell(rows[name]["small"]), cell(rows[name]["beans"])))

    def ratio(a, b, k):
        va, vb = rows[a][k], rows[b][k]
        if not va or not vb:
            return "—"
        return "%.2f×" % (statistics.median(va) / statistics.median(vb))

    out.append("| springrun exporter / java server (java client) | %s | %s |" % (
        ratio(ROWS[0][0], ROWS[1][0], "small"), ratio(ROWS[0][0], ROWS[1][0], "beans")))
    out.append("| springrun client / java client (java server) | %s | %s |" % (
        ratio(ROWS[2][0], ROWS[1][0], "small"), ratio(ROWS[2][0], ROWS[1][0], "beans")))
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    try:
        r = run(quick="--quick" in sys.argv)
        sys.stdout.write(report(r))
    finally:
        for p in list(harness.PROCS):
            harness.stop(p)
