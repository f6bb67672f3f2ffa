#!/usr/bin/env python3
"""A scripted WebSocket client for the shell tests (tests/systemd, tests/package,
tests/prometheus): the standard library only, so it runs inside run-unit's container and on a
fresh machine alike. It opens URL, prints `open`, then runs one command per line from stdin and
prints `ok ...` after each, so a shell script can drive it as a coprocess and wait on its
answers. Any failure prints `FAIL why` and exits 1; every wait has a deadline (--timeout).

    send TEXT           send TEXT as a text message
    expect TEXT         the next message is the text TEXT
    expect-close CODE   the server closes with CODE (the client answers the close)
    close               close with 1000 and wait for the server's answer
    hold                wait for the next command or end of input (stays connected)

Pings are answered with pongs. End of input closes with 1000 unless the server closed first.
"""
import argparse
import base64
import hashlib
import os
import socket
import struct
import sys
from urllib.parse import urlsplit

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def say(line):
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def fail(why):
    say(f"FAIL {why}")
    sys.exit(1)


class Ws:
    def __init__(self, url, timeout, protocol):
        u = urlsplit(url)
        if u.scheme != "ws":
            fail(f"only ws:// URLs: {url}")
        self.sock = socket.create_connection((u.hostname, u.port or 80), timeout=timeout)
        self.buf = b""
        key = base64.b64encode(os.urandom(16))
        head = [
            f"GET {u.path or '/'}{'?' + u.query if u.query else ''} HTTP/1.1",
            f"Host: {u.netloc}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {key.decode()}",
            "Sec-WebSocket-Version: 13",
        ]
        if protocol:
            head.append(f"Sec-WebSocket-Protocol: {protocol}")
        self.sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
        while b"\r\n\r\n" not in self.buf:
            self.fill()
        response, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = response.decode("latin-1").split("\r\n")
        status = lines[0].split(" ")[1] if " " in lines[0] else "?"
        if status != "101":
            fail(f"refused {status}: {lines[0]}")
        headers = {k.strip().lower(): v.strip() for k, _, v in (l.partition(":") for l in lines[1:])}
        accept = base64.b64encode(hashlib.sha1(key + GUID).digest()).decode()
        if headers.get("sec-websocket-accept") != accept:
            fail(f"bad Sec-WebSocket-Accept {headers.get('sec-websocket-accept')!r}")
        self.closed = None

    def fill(self):
        try:
            chunk = self.sock.recv(65536)
        except socket.timeout:
            fail("timed out waiting for the server")
        except OSError as e:
            fail(f"connection lost: {e}")
        if not chunk:
            fail("connection closed without a close frame")
        self.buf += chunk

    def take(self, n):
        while len(self.buf) < n:
            self.fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def send(self, opcode, payload):
        mask = os.urandom(4)
        n = len(payload)
        if n < 126:
            head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
        elif n < 65536:
            head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
        else:
            head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(head + mask + masked)

    def next_message(self):
        """(opcode, payload) of the next data message or close frame; pings are answered."""
        message, first = b"", None
        while True:
            b0, b1 = self.take(2)
            opcode, n = b0 & 0x0F, b1 & 0x7F
            if n == 126:
                n = struct.unpack("!H", self.take(2))[0]
            elif n == 127:
                n = struct.unpack("!Q", self.take(8))[0]
            payload = self.take(n)
            if opcode == 0x9:
                self.send(0xA, payload)
            elif opcode == 0xA:
                pass
            elif opcode == 0x8:
                return opcode, payload
            else:
                first = first if opcode == 0 else opcode
                message += payload
                if b0 & 0x80:
                    return first, message

    def expect(self, text):
        opcode, payload = self.next_message()
        if opcode == 0x8:
            self.closed = close_code(payload)
            fail(f"closed {self.closed} while waiting for {text!r}")
        if opcode != 0x1 or payload.decode() != text:
            fail(f"got {payload[:200]!r} (opcode {opcode}), not {text!r}")

    def expect_close(self, code):
        opcode, payload = self.next_message()
        if opcode != 0x8:
            fail(f"got a message {payload[:200]!r} instead of close {code}")
        self.closed = close_code(payload)
        try:
            self.send(0x8, payload[:2])
        except OSError:
            pass  # a server that exits right after its close frame may be gone already
        if self.closed != code:
            fail(f"closed {self.closed}, not {code}")

    def close(self):
        self.send(0x8, struct.pack("!H", 1000))
        while True:
            opcode, payload = self.next_message()
            if opcode == 0x8:
                self.closed = close_code(payload)
                return


def close_code(payload):
    return struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("url")
    ap.add_argument("--timeout", type=float, default=10.0, help="seconds any one wait may take")
    ap.add_argument("--protocol", help="Sec-WebSocket-Protocol to offer")
    args = ap.parse_args()
    try:
        ws = Ws(args.url, args.timeout, args.protocol)
    except OSError as e:
        fail(f"cannot connect to {args.url}: {e}")
    say("open")
    for line in sys.stdin:
        cmd, _, arg = line.rstrip("\n").partition(" ")
        if cmd == "send":
            ws.send(0x1, arg.encode())
        elif cmd == "expect":
            ws.expect(arg)
        elif cmd == "expect-close":
            ws.expect_close(int(arg))
        elif cmd == "close":
            ws.close()
        elif cmd == "hold":
            pass
        else:
            fail(f"unknown command {line!r}")
        say(f"ok {line.strip()}")
        if ws.closed is not None:
            return
    if ws.closed is None:
        ws.close()


main()
