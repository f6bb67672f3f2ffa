// Bun's pub/sub WebSocket server (uWebSockets underneath), with wsrelay's semantics: the path is
// the room (a topic); every message goes to every member of the room, the sender included
// (server.publish, not ws.publish, which would skip the sender).
// Usage: bun server.js 127.0.0.1:0 [--deflate]
//   → prints "listening on 127.0.0.1:PORT" when ready.
// Compression is off unless --deflate: then permessage-deflate is offered (perMessageDeflate:
// true) and every published message is sent compressed (server.publish's third argument).
const [host, port] = (process.argv[2] ?? "127.0.0.1:0").split(":");
const deflate = process.argv.slice(3).includes("--deflate");

const server = Bun.serve({
  hostname: host,
  port: Number(port),
  fetch(req, server) {
    const topic = new URL(req.url).pathname;
    if (server.upgrade(req, { data: { topic } })) return undefined;
    return new Response("Upgrade Required", { status: 426 });
  },
  websocket: {
    perMessageDeflate: deflate,
    // The same limits as wsrelay's bench configuration.
    maxPayloadLength: 64 * 1024,
    backpressureLimit: 1024 * 1024,
    closeOnBackpressureLimit: true,
    idleTimeout: 60,
    open(ws) {
      ws.subscribe(ws.data.topic);
    },
    message(ws, message) {
      server.publish(ws.data.topic, message, deflate);
    },
  },
});

console.log(`listening on ${server.hostname}:${server.port}`);
