// Node's `ws` as a room broadcaster with wsrelay's semantics: the path is the room; every
// message goes to every member of the room, the sender included. Compression off. Node is one
// event loop, so this peer uses one core whatever the machine has.
// Usage: node server.js 127.0.0.1:0   → prints "listening on 127.0.0.1:PORT" when ready.
"use strict";
const { WebSocketServer, WebSocket } = require("ws");

const [host, port] = (process.argv[2] ?? "127.0.0.1:0").split(":");
const rooms = new Map();

const wss = new WebSocketServer({
  host,
  port: Number(port),
  perMessageDeflate: false,
  maxPayload: 64 * 1024,
  clientTracking: false,
});

wss.on("connection", (ws, req) => {
  const path = req.url.split("?")[0];
  let room = rooms.get(path);
  if (!room) {
    room = new Set();
    rooms.set(path, room);
  }
  room.add(ws);
  ws.on("message", (data, isBinary) => {
    for (const member of room) {
      if (member.readyState === WebSocket.OPEN) member.send(data, { binary: isBinary });
    }
  });
  ws.on("close", () => {
    room.delete(ws);
    if (room.size === 0 && rooms.get(path) === room) rooms.delete(path);
  });
});

wss.on("listening", () => {
  console.log(`listening on ${host}:${wss.address().port}`);
});
