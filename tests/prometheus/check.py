#!/usr/bin/env python3
"""The end-to-end half of tests/prometheus/run, against a real Prometheus that scrapes a running
relay (both on loopback, started by run):

1. the target is up;
2. a counter read through Prometheus's HTTP API moves after WebSocket traffic;
3. every metric name in the Grafana dashboard's queries and in the alerting rules is one the
   relay's live /metrics exports (`up` aside, which Prometheus makes), and every dashboard query
   runs in Prometheus and returns data;
4. Prometheus evaluated every alerting rule without an error.

Prints one `ok ...` line per check; exits 1 with `FAIL ...` on the first failure. Every wait
polls with a deadline.
"""
import argparse
import json
import re
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
WSCLIENT = HERE.parent / "systemd" / "wsclient.py"
DEADLINE = 30.0


def fail(why):
    print(f"FAIL {why}", flush=True)
    sys.exit(1)


def ok(what):
    print(f"ok   {what}", flush=True)


def get(url):
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.read().decode()


def api(prom, path, **params):
    body = json.loads(get(f"{prom}/api/v1/{path}?{urllib.parse.urlencode(params)}"))
    if body.get("status") != "success":
        fail(f"Prometheus {path} {params}: {body}")
    return body["data"]


def query(prom, expr):
    return api(prom, "query", query=expr)["result"]


def wait(what, probe):
    """Polls probe() until it returns something truthy; that value."""
    end = time.monotonic() + DEADLINE
    while time.monotonic() < end:
        v = probe()
        if v:
            return v
        time.sleep(0.2)
    fail(f"no {what} within {DEADLINE:.0f} s")


def scalar(prom, expr):
    r = query(prom, expr)
    return float(r[0]["value"][1]) if r else None


def traffic(relay, n):
    """n messages from one member of /chat (echo is on: it gets them back), and a 404."""
    script = "".join(f"send m{i}\nexpect m{i}\n" for i in range(n)) + "close\n"
    p = subprocess.run([sys.executable, str(WSCLIENT), f"ws://{relay}/chat"], input=script,
                       capture_output=True, text=True, timeout=DEADLINE)
    if p.returncode != 0:
        fail(f"WebSocket client: {p.stdout} {p.stderr}")
    p = subprocess.run([sys.executable, str(WSCLIENT), f"ws://{relay}/no-such-room"],
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=DEADLINE)
    if "refused 404" not in p.stdout:
        fail(f"expected a 404 for /no-such-room: {p.stdout}")


def exported(relay):
    text = get(f"http://{relay}/metrics")
    return {m.group(1) for m in re.finditer(r"^# TYPE (\S+) ", text, re.M)}


def names_in(expr):
    return set(re.findall(r"\b(wsrelay_[a-z0-9_]+)", expr)) | (
        {"up"} if re.search(r"\bup\b", expr) else set())


def dashboard_queries(path):
    d = json.loads(Path(path).read_text())
    exprs = [(p["title"], t["expr"]) for p in d["panels"] for t in p.get("targets", [])]
    for v in d["templating"]["list"]:
        if v["type"] == "query":
            exprs.append((f"variable ${v['name']}", v["query"]["query"]))
    return exprs


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--prometheus", required=True)
    ap.add_argument("--relay", required=True, help="host:port of the relay")
    ap.add_argument("--dashboard", required=True)
    a = ap.parse_args()
    prom = a.prometheus

    wait("up{job=\"wsrelay\"} == 1",
         lambda: scalar(prom, 'up{job="wsrelay"}') == 1.0)
    targets = api(prom, "targets")["activeTargets"]
    ok(f"target up: {[t['scrapeUrl'] + ' ' + t['health'] for t in targets]}")

    counter = 'wsrelay_messages_received_total{job="wsrelay"}'
    before = wait(f"a sample of {counter}", lambda: query(prom, counter))
    v0 = float(before[0]["value"][1])
    n = 25
    traffic(a.relay, n)
    v1 = wait(f"{counter} >= {v0 + n} in Prometheus",
              lambda: (scalar(prom, counter) or 0) >= v0 + n and scalar(prom, counter))
    ok(f"{counter} through the HTTP API: {v0:g} -> {v1:g} after {n} messages")

    def evaluated():
        rs = [r for g in api(prom, "rules")["groups"] for r in g["rules"]]
        return rs if rs and all(not r["lastEvaluation"].startswith("0001") for r in rs) else None
    # The rules as Prometheus loaded them from the shipped file: their parsed expressions.
    rs = wait("an evaluation of every rule", evaluated)
    rules = [(r["name"], r["query"]) for r in rs]

    names = exported(a.relay)
    dash = dashboard_queries(a.dashboard)
    unknown = {}
    for where, expr in dash + rules:
        for name in names_in(expr) - names - {"up"}:
            unknown.setdefault(name, []).append(where)
    if unknown:
        fail(f"names the relay does not export: {unknown}")
    ok(f"{len(dash)} dashboard queries and {len(rules)} rules use only exported names "
       f"({len(names)} families on /metrics)")

    # Grafana's variables, as Grafana would fill them in for "all relays" over a short range.
    # Every query must run and return data now that traffic has flowed.
    for title, expr in dash:
        m = re.fullmatch(r"label_values\((.*), (\w+)\)", expr)
        q = m.group(1) if m else expr
        q = q.replace("$__rate_interval", "1m").replace("$instance", ".+")
        got = wait(f"data for the panel {title!r}: {q}", lambda: query(prom, q))
        if m and not all(m.group(2) in s["metric"] for s in got):
            fail(f"{title}: no {m.group(2)} label in {got}")
    ok(f"every dashboard query returns data from Prometheus ({len(dash)} queries)")

    bad = [(r["name"], r.get("lastError")) for r in rs if r["health"] != "ok"]
    if bad:
        fail(f"rules that failed to evaluate: {bad}")
    ok(f"Prometheus evaluated all {len(rs)} alerting rules without error "
       f"({', '.join(r['name'] for r in rs)})")


main()
