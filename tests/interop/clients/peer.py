"""A room member on Python's `websockets` library, for tests/interop/run (step "peers").

    peer.py URL NAME COUNT TOTAL GOFILE OUTFILE

Joins URL, prints "connected", waits for GOFILE to exist (the runner creates it once every peer is
in the room), sends COUNT text messages "NAME #i …\n", and reads until TOTAL messages have arrived
(its own included: the room echoes). Every message is one line, its newline included, as websocat
sends them. PEER_PAD=N makes each message longer by N times " lorem ipsum dolor" (for a room
that compresses from 128 bytes). Prints the Sec-WebSocket-Extensions answer it got (compression
is on by default in `websockets`). Writes the messages as they are to OUTFILE, so the peers' files compare byte for byte,
and exits 0; exits 1 with a reason on stderr when a bound runs out, the connection fails, or a
message is not one line.
"""

import asyncio
import os
import sys
import time

from websockets.asyncio.client import connect

PAD = " lorem ipsum dolor" * int(os.environ.get("PEER_PAD", "0"))
WAIT_S = 20  # every wait is bounded, so a lost message fails the run instead of hanging it


async def main(url, name, count, total, go, out):
    async with connect(url, open_timeout=WAIT_S, ping_interval=None) as ws:
        ext = ws.response.headers.get("Sec-WebSocket-Extensions", "")
        print(f"connected extensions={ext}", flush=True)
        deadline = time.monotonic() + WAIT_S
        while not os.path.exists(go):
            if time.monotonic() > deadline:
                sys.exit(f"{name}: no go signal within {WAIT_S} s")
            await asyncio.sleep(0.02)
        for i in range(count):
            await ws.send(f"{name} #{i} ünïcödé ✓{PAD}\n")
        got = []
        try:
            async with asyncio.timeout(WAIT_S):
                while len(got) < total:
                    msg = await ws.recv()
                    if not isinstance(msg, str):
                        sys.exit(f"{name}: got a binary message, expected text")
                    if not msg.endswith("\n") or "\n" in msg[:-1]:
                        sys.exit(f"{name}: got {msg!r}, not one line")
                    got.append(msg)
        except TimeoutError:
            sys.exit(f"{name}: {len(got)} of {total} messages within {WAIT_S} s")
    with open(out, "w", encoding="utf-8") as f:
        f.write("".join(got))


if __name__ == "__main__":
    url, name, count, total, go, out = sys.argv[1:]
    asyncio.run(main(url, name, int(count), int(total), go, out))
