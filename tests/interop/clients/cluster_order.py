"""Clients through nginx in front of two wsrelay nodes sharing a room through Redis
(tests/interop/run, step "nginx-cluster"), on Python's `websockets`.

    cluster_order.py order NGINX_URL NODE_A NODE_B CLIENTS PER_CLIENT
    cluster_order.py failover NGINX_URL NODE_A CLIENTS

NGINX_URL is nginx (built from config/nginx-wsrelay-cluster.conf) in front of the nodes; NODE_A
and NODE_B are the nodes' own http://host:port, read for /metrics only.

order: CLIENTS wsrelay.v1 clients join /chat through nginx, one at a time; after each join the
nodes' wsrelay_connections_open says which node took it, so the spread is the nodes' own count.
Then every client sends PER_CLIENT text messages at once and reads CLIENTS × PER_CLIENT: every
client must get every message, all in one identical order, with one epoch and dense seq from
its welcome on; each node must have published (through Redis) exactly its own clients' messages.

failover: node B is gone; CLIENTS clients join through nginx anyway (nginx tries the next node),
all of them on node A, and one message reaches them all.

Prints one "PASS name: detail" or "FAIL name: detail" line per check; exits 1 when a check
failed. Every wait is bounded.
"""

import asyncio
import json
import sys
import time
import urllib.request

from websockets.asyncio.client import connect

WAIT_S = 10  # bound on every handshake, every receive and every metrics poll


def report(ok, name, detail):
    print(f"{'PASS' if ok else 'FAIL'} nginx-cluster-{name}: {detail}", flush=True)
    return ok


def metrics(node):
    """The node's unlabelled metrics as {name: value}."""
    with urllib.request.urlopen(node + "/metrics", timeout=WAIT_S) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            if "{" not in name:
                out[name] = float(value)
    return out


def open_counts(nodes):
    return [metrics(n).get("wsrelay_connections_open", 0) for n in nodes]


async def wait_counts(nodes, total):
    """The nodes' open connections once they add up to `total` (bounded)."""
    deadline = time.monotonic() + WAIT_S
    while True:
        counts = open_counts(nodes)
        if sum(counts) == total:
            return counts
        if time.monotonic() > deadline:
            raise AssertionError(f"the nodes report {counts} open connections, expected {total} in all")
        await asyncio.sleep(0.02)


def join(url):
    return connect(url + "/chat", subprotocols=["wsrelay.v1"], open_timeout=WAIT_S,
                   ping_interval=None, max_queue=None)


async def welcome(ws):
    async with asyncio.timeout(WAIT_S):
        w = json.loads(await ws.recv())
    if w.get("type") != "welcome":
        raise AssertionError(f"first frame is not a welcome: {w}")
    return w


async def read_all(ws, total, first_seq):
    """`total` messages: their data, in order; seq must follow on from `first_seq`."""
    got = []
    expect = first_seq + 1
    async with asyncio.timeout(WAIT_S * 3):
        while len(got) < total:
            m = json.loads(await ws.recv())
            if m.get("type") != "message":
                continue  # a client ignores types it does not know
            if m["seq"] != expect:
                raise AssertionError(f"seq {m['seq']} after {expect - 1}: not dense")
            expect += 1
            got.append(m["data"])
    return got


async def order(nginx, node_a, node_b, clients, per_client):
    nodes = [node_a, node_b]
    ok = True
    conns, where, welcomes = [], [], []
    try:
        before = await wait_counts(nodes, 0)
        for i in range(clients):
            ws = await join(nginx)
            conns.append(ws)
            if ws.subprotocol != "wsrelay.v1":
                raise AssertionError(f"client {i}: subprotocol {ws.subprotocol!r}, not wsrelay.v1")
            welcomes.append(await welcome(ws))
            after = await wait_counts(nodes, i + 1)
            grew = [k for k in range(2) if after[k] > before[k]]
            if len(grew) != 1:
                raise AssertionError(f"client {i}: open connections went {before} → {after}")
            where.append(grew[0])
            before = after
        on = [where.count(0), where.count(1)]
        ok &= report(min(on) > 0, "spread",
                     f"{clients} wsrelay.v1 clients joined /chat through nginx: node a has {on[0]}, "
                     f"node b {on[1]} (each node's wsrelay_connections_open after each join)")
        epochs = {w["epoch"] for w in welcomes}
        seqs = {w["seq"] for w in welcomes}
        ok &= report(len(epochs) == 1 and len(seqs) == 1, "welcome",
                     f"epochs {sorted(epochs)}, seq at the join {sorted(seqs)}: one room, one epoch "
                     "on both nodes")
        start = welcomes[0]["seq"]
        pub0 = [metrics(n).get("wsrelay_cluster_published_total", 0) for n in nodes]

        async def member(i, ws):
            for k in range(per_client):
                await ws.send(f"c{i}#{k}")
            return await read_all(ws, clients * per_client, start)

        results = await asyncio.gather(*(member(i, ws) for i, ws in enumerate(conns)),
                                       return_exceptions=True)
        failed = [(i, r) for i, r in enumerate(results) if isinstance(r, BaseException)]
        if failed:
            i, e = failed[0]
            return report(False, "order", f"{len(failed)} clients failed; client {i} (node "
                          f"{'ab'[where[i]]}): {type(e).__name__}: {e}")
        first = results[0]
        total = clients * per_client
        problems = []
        if len(set(first)) != total:
            problems.append(f"client 0 got {len(set(first))} distinct messages of {total}")
        for i in range(clients):
            mine = [int(d.split("#")[1]) for d in first if d.startswith(f"c{i}#")]
            if mine != list(range(per_client)):
                problems.append(f"client {i}'s messages arrived out of its order")
        for i, r in enumerate(results[1:], 1):
            if r != first:
                at = next(k for k in range(total) if r[k] != first[k])
                problems.append(f"client {i} (node {'ab'[where[i]]}) differs from client 0 at {at}: "
                                f"{r[at]} vs {first[at]}")
                break
        ok &= report(not problems, "order",
                     "; ".join(problems[:3]) if problems else
                     f"{clients} clients on both nodes each sent {per_client}; each received all "
                     f"{total} in one identical order, seq dense {start + 1}..{start + total}")
        pub1 = [metrics(n).get("wsrelay_cluster_published_total", 0) for n in nodes]
        sent = [per_client * c for c in on]
        published = [pub1[k] - pub0[k] for k in range(2)]
        dropped = [metrics(n).get("wsrelay_cluster_dropped_total", 0) for n in nodes]
        ok &= report(published == sent and dropped == [0, 0], "published",
                     f"wsrelay_cluster_published_total grew by {published[0]:.0f} on a, "
                     f"{published[1]:.0f} on b (their clients sent {sent[0]}, {sent[1]}); "
                     f"dropped {dropped[0]:.0f}, {dropped[1]:.0f}")
    finally:
        for ws in conns:
            await ws.close()
    return ok


async def failover(nginx, node_a, clients):
    conns = []
    try:
        for _ in range(clients):
            ws = await join(nginx)
            conns.append(ws)
            await welcome(ws)
        counts = await wait_counts([node_a], clients)
        await conns[0].send("after node b left")
        got = []
        for ws in conns:
            async with asyncio.timeout(WAIT_S):
                while True:
                    m = json.loads(await ws.recv())
                    if m.get("type") == "message":
                        got.append(m["data"])
                        break
        good = got == ["after node b left"] * clients
        return report(good, "failover",
                      f"node b stopped: {clients} clients joined through nginx anyway, node a has "
                      f"{counts[0]:.0f}; one message reached {got.count('after node b left')} of them")
    finally:
        for ws in conns:
            await ws.close()


def main(argv):
    mode = argv[0]
    try:
        if mode == "order":
            nginx, a, b, clients, per = argv[1:]
            ok = asyncio.run(order(nginx, a, b, int(clients), int(per)))
        elif mode == "failover":
            nginx, a, clients = argv[1:]
            ok = asyncio.run(failover(nginx, a, int(clients)))
        else:
            sys.exit(f"unknown mode {mode!r}")
    except Exception as e:  # one FAIL line instead of a traceback
        ok = report(False, mode, f"{type(e).__name__}: {e}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
