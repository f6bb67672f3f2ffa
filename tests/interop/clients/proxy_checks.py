"""wsrelay behind a real nginx, checked with Python's `websockets` (tests/interop/run, step "nginx").

    proxy_checks.py NGINX_URL DIRECT_URL CONTROL_URL READ_TIMEOUT_S

NGINX_URL is nginx (built from config/nginx-wsrelay.conf, proxy_read_timeout READ_TIMEOUT_S) in
front of a daemon pinging every 1 s, DIRECT_URL the same daemon without nginx. CONTROL_URL is a
second nginx, same timeout, in front of a daemon that pings only every 30 s and allows one
connection per client address. Prints one "PASS name: detail" or "FAIL name: detail" line per check.
"""

import asyncio
import sys
import time
import urllib.request

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

WAIT_S = 5  # bound on every single receive or handshake


def report(ok, name, detail):
    print(f"{'PASS' if ok else 'FAIL'} nginx-{name}: {detail}", flush=True)


async def recv_text(ws):
    async with asyncio.timeout(WAIT_S):
        return await ws.recv()


async def expect_exchange(a, b, text):
    """a sends text; b (another member) must get exactly it. Echoes to a are skipped."""
    await a.send(text)
    got = await recv_text(b)
    if got != text:
        raise AssertionError(f"sent {text!r}, the other member got {got!r}")
    await recv_text(a)  # a's own echo, so it does not stand in for the next message


def client(url, **kw):
    # ping_interval=None: the client never pings, so only wsrelay's pings can keep it alive
    return connect(url, open_timeout=WAIT_S, ping_interval=None, **kw)


async def check_handshake(nginx):
    async with client(nginx + "/chat", subprotocols=["superchat", "chat"]) as ws:
        server = ws.response.headers.get("Server", "")
        if not server.startswith("nginx"):
            raise AssertionError(f"handshake answered by {server!r}, not nginx")
        if ws.subprotocol != "superchat":
            raise AssertionError(f"offered superchat, chat; got {ws.subprotocol!r}")
    http = nginx.replace("ws://", "http://") + "/healthz"
    with urllib.request.urlopen(http, timeout=WAIT_S) as r:
        body = r.read().decode()
    if r.status != 200 or body.strip() != "ok":
        raise AssertionError(f"GET /healthz through nginx: {r.status} {body!r}")
    return "101 from nginx with Sec-WebSocket-Protocol: superchat; GET /healthz through nginx: 200 ok"


async def check_both_ways(nginx, direct):
    async with client(nginx + "/rooms/n") as via, client(direct + "/rooms/n") as dir_:
        await expect_exchange(via, dir_, "via nginx → direct ✓")
        await expect_exchange(dir_, via, "direct → via nginx ✓")
    return "a client through nginx and a direct one exchanged a message each way"


async def check_idle(nginx, direct, idle_s):
    async with client(nginx + "/rooms/idle") as via, client(direct + "/rooms/idle") as dir_:
        await asyncio.sleep(idle_s)
        await expect_exchange(dir_, via, "after the quiet spell")
        await expect_exchange(via, dir_, "still here")
    return f"quiet for {idle_s} s through nginx, then a message each way"


async def check_control(control, idle_s):
    """Without wsrelay's pings the same nginx cuts the quiet client: the timeout is real."""
    start = time.monotonic()
    async with client(control + "/rooms/idle") as ws:
        try:
            async with asyncio.timeout(idle_s):
                await ws.recv()
        except TimeoutError:
            raise AssertionError(f"still open after {idle_s} s: is proxy_read_timeout in effect?")
        except ConnectionClosed:
            pass
    return f"with pings every 30 s, nginx closed the quiet client after {time.monotonic() - start:.1f} s"


async def check_forwarded_for(control):
    """The control daemon allows one connection per client address; nginx sends X-Forwarded-For.
    Clients from 127.0.0.3 and 127.0.0.4 both get in (they would share nginx's address if the
    header were ignored); a second one from 127.0.0.3 gets HTTP 429."""
    url = control + "/rooms/xff"
    async with client(url, local_addr=("127.0.0.3", 0)), client(url, local_addr=("127.0.0.4", 0)):
        try:
            async with client(url, local_addr=("127.0.0.3", 0)):
                raise AssertionError("a second connection from 127.0.0.3 was let in")
        except InvalidStatus as e:
            status = e.response.status_code
            if status != 429:
                raise AssertionError(f"second connection from 127.0.0.3: HTTP {status}, not 429")
    return "127.0.0.3 and 127.0.0.4 counted apart through nginx; a second from 127.0.0.3 got 429"


async def run(name, coro):
    try:
        report(True, name, await coro)
    except (AssertionError, OSError, TimeoutError, ConnectionClosed, InvalidStatus) as e:
        report(False, name, f"{type(e).__name__}: {e}")


async def main(nginx, direct, control, read_timeout):
    idle_s = 2 * read_timeout
    await run("handshake", check_handshake(nginx))
    await run("both-ways", check_both_ways(nginx, direct))
    await asyncio.gather(run("idle", check_idle(nginx, direct, idle_s)), run("control", check_control(control, idle_s)))
    await run("forwarded-for", check_forwarded_for(control))


if __name__ == "__main__":
    nginx_url, direct_url, control_url, timeout_s = sys.argv[1:]
    asyncio.run(main(nginx_url, direct_url, control_url, float(timeout_s)))
