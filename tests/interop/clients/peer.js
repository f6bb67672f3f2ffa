// A room member on Node's `ws` library, for tests/interop/run (step "peers").
//
//   node peer.js URL NAME COUNT TOTAL GOFILE OUTFILE
//
// Same contract as peer.py: join, print "connected", wait for GOFILE, send COUNT text messages
// (one line each, newline included), read until TOTAL have arrived (own echoes included), write
// them as they are to OUTFILE, exit 0; exit 1 with a reason on stderr when a bound runs out, the
// connection fails, or a message is not one line. PEER_PAD as in peer.py; permessage-deflate is
// offered (perMessageDeflate: true) and the agreed extensions printed.
'use strict';
const fs = require('fs');
const WebSocket = require('ws');

const WAIT_MS = 20000; // every wait is bounded

const [url, name, count, total, go, out] = process.argv.slice(2);
const fail = (why) => {
  console.error(name + ': ' + why);
  process.exit(1);
};

const got = [];
const pad = ' lorem ipsum dolor'.repeat(Number(process.env.PEER_PAD || 0));
const ws = new WebSocket(url, { perMessageDeflate: true });
const timer = setTimeout(() => fail(got.length + ' of ' + total + ' messages within ' + WAIT_MS + ' ms'), 2 * WAIT_MS);
ws.on('error', (e) => fail('connection failed: ' + e.message));
ws.on('close', (code) => {
  if (got.length < Number(total)) fail('closed (' + code + ') after ' + got.length + ' of ' + total + ' messages');
});
ws.on('message', (data, isBinary) => {
  if (isBinary) fail('got a binary message, expected text');
  const text = data.toString('utf8');
  if (!text.endsWith('\n') || text.slice(0, -1).includes('\n')) fail('got ' + JSON.stringify(text) + ', not one line');
  got.push(text);
  if (got.length === Number(total)) {
    fs.writeFileSync(out, got.join(''));
    clearTimeout(timer);
    ws.close(1000);
  }
});
ws.on('open', () => {
  console.log('connected extensions=' + ws.extensions);
  const deadline = Date.now() + WAIT_MS;
  const poll = setInterval(() => {
    if (fs.existsSync(go)) {
      clearInterval(poll);
      for (let i = 0; i < Number(count); i++) ws.send(name + ' #' + i + ' ünïcödé ✓' + pad + '\n');
    } else if (Date.now() > deadline) {
      fail('no go signal within ' + WAIT_MS + ' ms');
    }
  }, 20);
});
