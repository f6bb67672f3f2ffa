// src/demo/wsrelay.js (the browser client for wsrelay.v1) in Node, against a scripted WebSocket:
// no daemon, no browser. Each case feeds frames the way the server sends them and checks what the
// module delivers, which URL it connects to, and when.
//
//   node wsrelay.unit.mjs
//
// Prints one "PASS wsrelay-js-NAME: detail" or "FAIL wsrelay-js-NAME: detail" line per case.
import { readFileSync } from 'node:fs';

// Imported from its text, so that Node need not know that a .js file outside a "type": "module"
// package is a module.
const src = readFileSync(new URL('../../../src/demo/wsrelay.js', import.meta.url), 'utf8');
const { WsRelay, backoffDelay, PROTOCOL } = await import('data:text/javascript,' + encodeURIComponent(src));

// A WebSocket whose peer is the test: open(), text(), binary(), drop() play the server's part.
class FakeSocket {
  static all = [];
  constructor(url, protocols) {
    this.url = url;
    this.protocols = protocols;
    this.readyState = 0;
    this.protocol = '';
    this.sent = [];
    this.closedWith = null;
    FakeSocket.all.push(this);
  }
  send(d) {
    if (this.readyState !== 1) throw new Error('send while not open');
    this.sent.push(d);
  }
  close(code, reason) {
    this.closedWith = [code, reason];
    this.readyState = 2;
  }
  open(protocol = PROTOCOL) {
    this.readyState = 1;
    this.protocol = protocol;
    this.onopen?.({});
  }
  welcome(w) {
    this.text({ type: 'welcome', room: '/r', member: 'm1', recovered: false, replayed: 0, ...w });
  }
  text(obj) {
    this.onmessage?.({ data: typeof obj === 'string' ? obj : JSON.stringify(obj) });
  }
  msg(seq, data) {
    this.text({ type: 'message', seq, data });
  }
  binary(seq, bytes) {
    const buf = new ArrayBuffer(8 + bytes.length);
    new DataView(buf).setBigUint64(0, BigInt(seq));
    new Uint8Array(buf, 8).set(bytes);
    this.onmessage?.({ data: buf });
  }
  drop(code = 1006) {
    this.readyState = 3;
    this.onclose?.({ code, reason: '', wasClean: false });
  }
}

const EPOCH = '0123456789abcdef';
const tick = (ms = 0) => new Promise((r) => setTimeout(r, ms));

// A relay over FakeSocket with a tiny backoff, and the log of what it emitted.
function relay(url = 'ws://127.0.0.1:1/r', opts = {}) {
  FakeSocket.all = [];
  const r = new WsRelay(url, { WebSocket: FakeSocket, minDelay: 1, maxDelay: 4, ...opts });
  const log = { messages: [], welcomes: [], failures: [], closes: [], connecting: [], presence: [] };
  r.addEventListener('message', (e) => log.messages.push(e.detail));
  r.addEventListener('presence', (e) => log.presence.push(e.detail));
  r.addEventListener('welcome', (e) => log.welcomes.push(e.detail));
  r.addEventListener('recovery-failed', (e) => log.failures.push(e.detail));
  r.addEventListener('close', (e) => log.closes.push(e.detail));
  r.addEventListener('connecting', (e) => log.connecting.push(e.detail));
  const sock = () => FakeSocket.all[FakeSocket.all.length - 1];
  // Until the relay has opened its next socket (after the backoff).
  const nextSocket = async () => {
    const n = FakeSocket.all.length;
    for (let i = 0; i < 200 && FakeSocket.all.length === n; i++) await tick(1);
    if (FakeSocket.all.length === n) throw new Error('no reconnection');
    return sock();
  };
  return { r, log, sock, nextSocket };
}

function eq(got, want, what) {
  if (JSON.stringify(got) !== JSON.stringify(want)) {
    throw new Error(what + ': got ' + JSON.stringify(got) + ', expected ' + JSON.stringify(want));
  }
}

const seqs = (log) => log.messages.map((m) => m.seq);
const query = (s) => Object.fromEntries(new URL(s.url).searchParams);

let failed = 0;
async function check(name, body) {
  try {
    console.log('PASS wsrelay-js-' + name + ': ' + (await body()));
  } catch (e) {
    failed++;
    console.log('FAIL wsrelay-js-' + name + ': ' + e.message.split('\n')[0]);
  }
}

await check('first-connect', async () => {
  const { log, sock } = relay('ws://127.0.0.1:1/r?token=abc&last=7', { last: 50 });
  const s = sock();
  eq(s.protocols, ['wsrelay.v1'], 'protocols offered');
  eq(query(s), { token: 'abc', last: '50' }, 'query');
  eq(s.binaryType, 'arraybuffer', 'binaryType');
  await tick();
  eq(log.connecting.length, 1, 'connecting events');
  s.open();
  s.welcome({ epoch: EPOCH, seq: 12, replayed: 2 });
  s.msg(11, 'eleven');
  s.msg(12, 'twelve');
  s.msg(13, 'live');
  eq(seqs(log), [11, 12, 13], 'delivered');
  eq(log.messages[0], { seq: 11, data: 'eleven', binary: false, epoch: EPOCH }, 'first message');
  eq(log.welcomes[0].resumed, false, 'resumed');
  return 'offers wsrelay.v1, asks ?last=50 keeping the URL\'s own query, delivers replay then live';
});

await check('binary', async () => {
  const { r, log, sock } = relay();
  const s = sock();
  s.open();
  s.welcome({ epoch: EPOCH, seq: 0 });
  s.binary(1, [1, 2, 255]);
  s.text({ type: 'message', seq: 2, data: 'text' });
  s.binary(3, []);
  eq(seqs(log), [1, 2, 3], 'seqs');
  eq([...new Uint8Array(log.messages[0].data)], [1, 2, 255], 'payload');
  eq(log.messages[0].binary, true, 'binary flag');
  eq(log.messages[2].data.byteLength, 0, 'empty payload');
  if (!r.send('x') || s.sent[0] !== 'x') throw new Error('send did not reach the socket');
  return 'an 8-byte big-endian seq, then the payload as an ArrayBuffer; send() hands data over';
});

await check('ignores', async () => {
  const { log, sock } = relay();
  const s = sock();
  s.open();
  s.msg(1, 'before the welcome');
  s.welcome({ epoch: EPOCH, seq: 0 });
  s.text({ type: 'typing', member: 'm2' });
  s.text({ type: 'reset' });
  s.text({ type: 'error', message: 'x' });
  s.text('not json');
  s.text({ type: 'welcome', epoch: 'ffffffffffffffff', seq: 99 });
  s.onmessage({ data: new ArrayBuffer(5) });
  s.msg(1, 'one');
  s.msg(1, 'one again');
  s.msg(2, 'two');
  eq(seqs(log), [1, 2], 'delivered');
  eq(log.welcomes.length, 1, 'welcomes');
  eq(log.presence.length, 0, 'presence events');
  return 'unknown types, a second welcome, short binary frames, anything before the welcome and a repeated seq';
});

await check('presence', async () => {
  const { r, log, sock, nextSocket } = relay();
  let s = sock();
  s.open();
  s.text({ type: 'join', member: 'm0', user: null, seq: 0 }); // before the welcome: not ours
  eq(r.members, null, 'members before the welcome');
  s.welcome({ epoch: EPOCH, seq: 3, members: 2 });
  eq(r.members, 2, 'members from the welcome');
  s.text({ type: 'join', member: '1-7', user: null, seq: 3 });
  s.msg(4, 'hi');
  s.text({ type: 'join', member: '2-9', user: 'ada', seq: 4 });
  s.text({ type: 'leave', member: '1-7', user: null, seq: 4 });
  s.text({ type: 'members', count: 40, seq: 4 });
  s.text({ type: 'leave', member: '2-9', user: 'ada', seq: 4 });
  // Malformed ones are dropped: no member, a count that is not one.
  s.text({ type: 'join', user: 'x', seq: 4 });
  s.text({ type: 'members', count: -1, seq: 4 });
  s.text({ type: 'members', count: '3', seq: 4 });
  eq(log.presence, [
    { type: 'join', member: '1-7', user: null, count: 3, seq: 3 },
    { type: 'join', member: '2-9', user: 'ada', count: 4, seq: 4 },
    { type: 'leave', member: '1-7', user: null, count: 3, seq: 4 },
    { type: 'members', member: null, user: null, count: 40, seq: 4 },
    { type: 'leave', member: '2-9', user: 'ada', count: 39, seq: 4 },
  ], 'presence events');
  eq([r.members, r.stats.presence, seqs(log)], [39, 5, [4]], 'count, stats, messages');
  // A new connection starts from its own welcome's count; a room without presence has none.
  s.drop();
  s = await nextSocket();
  s.open();
  s.welcome({ epoch: EPOCH, seq: 4, recovered: true, members: 12 });
  eq([r.members, log.welcomes.at(-1).members], [12, 12], 'members after a resume');
  s.drop();
  s = await nextSocket();
  s.open();
  s.welcome({ epoch: EPOCH, seq: 4, recovered: true });
  s.text({ type: 'join', member: '1-8', user: null, seq: 4 });
  eq([r.members, log.presence.at(-1).count], [null, null], 'members without presence');
  r.close();
  return "the welcome's members, then join +1, leave -1, members sets it; 'presence' events with member, user, count, seq";
});

await check('resume', async () => {
  const { r, log, sock, nextSocket } = relay('ws://127.0.0.1:1/r', { last: 50 });
  let s = sock();
  s.open();
  s.welcome({ epoch: EPOCH, seq: 3, replayed: 3 });
  for (const n of [1, 2, 3, 4, 5]) s.msg(n, 'm' + n);
  s.drop();
  eq(r.state, 'closed', 'state after a drop');
  eq(log.closes.at(-1).reconnect, true, 'reconnect announced');
  s = await nextSocket();
  eq(query(s), { since: '5', epoch: EPOCH }, 'resume query');
  s.open();
  s.welcome({ epoch: EPOCH, seq: 9, recovered: true, replayed: 4 });
  // The server replays 6..9; a stray earlier one must not be delivered again.
  for (const n of [4, 5, 6, 7, 8, 9, 10]) s.msg(n, 'm' + n);
  eq(seqs(log), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 'delivered');
  eq(log.failures.length, 0, 'recovery-failed events');
  eq(log.welcomes.at(-1).resumed, true, 'resumed');
  const st = r.stats;
  eq([st.resumes, st.recovered, st.duplicates, st.gaps], [1, 1, 2, 0], 'stats');
  eq(r.position, { epoch: EPOCH, since: 10 }, 'position');
  return 'after a drop: ?since=5&epoch=…, no last; the replay continues the sequence, duplicates dropped';
});

await check('socket-closed-by-app', async () => {
  const { r, log, sock, nextSocket } = relay();
  const s = sock();
  s.open();
  s.welcome({ epoch: EPOCH, seq: 0 });
  s.msg(1, 'a');
  // What a page does to its socket (the browser fires close later): handled as a drop.
  r.socket.close();
  s.drop(1005);
  const t = await nextSocket();
  eq(query(t), { since: '1', epoch: EPOCH }, 'resume query');
  eq(log.closes.at(-1).code, 1005, 'close code');
  return 'closing the underlying socket reconnects and resumes';
});

await check('history-gone', async () => {
  const { log, sock, nextSocket } = relay();
  let s = sock();
  s.open();
  s.welcome({ epoch: EPOCH, seq: 0 });
  s.msg(1, 'a');
  s.drop();
  s = await nextSocket();
  s.open();
  s.welcome({ epoch: EPOCH, seq: 40, recovered: false, replayed: 0 });
  s.msg(41, 'live');
  eq(seqs(log), [1, 41], 'delivered');
  eq(log.failures.length, 1, 'recovery-failed events');
  const f = log.failures[0];
  eq([f.reason, f.since, f.seq, f.missed, f.epoch], ['history', 1, 40, 39, EPOCH], 'recovery-failed');
  // A saved position ahead of the room (since 50, the room at 41): recovered false, missed unknown.
  s.drop();
  s = await nextSocket();
  s.open();
  s.welcome({ epoch: EPOCH, seq: 41, recovered: false, replayed: 0 });
  s.msg(42, 'next');
  eq(seqs(log), [1, 41, 42], 'delivered');
  eq(log.failures.length, 1, 'recovery-failed events');
  const { r: r2, log: log2, sock: sock2 } = relay('ws://127.0.0.1:1/r', { epoch: EPOCH, since: 50 });
  sock2().open();
  sock2().welcome({ epoch: EPOCH, seq: 41, recovered: false });
  sock2().msg(42, 'next');
  eq([log2.failures[0].reason, log2.failures[0].missed, seqs(log2)], ['history', null, [42]], 'since ahead');
  r2.close();
  return "recovered:false in the same epoch: 'recovery-failed' (history, 39 missed), then live from 41; missed null when since was ahead";
});

await check('nothing-missed', async () => {
  const { log, sock, nextSocket } = relay();
  let s = sock();
  s.open();
  s.welcome({ epoch: EPOCH, seq: 4 });
  s.msg(5, 'a');
  s.drop();
  s = await nextSocket();
  s.open();
  s.welcome({ epoch: EPOCH, seq: 5, recovered: false, replayed: 0 });
  s.msg(6, 'b');
  eq(seqs(log), [5, 6], 'delivered');
  eq(log.failures.length, 0, 'recovery-failed events');
  return 'recovered:false with nothing sent meanwhile (seq = since) is no failure';
});

await check('new-epoch', async () => {
  const { r, log, sock, nextSocket } = relay('ws://127.0.0.1:1/r', { last: 10 });
  let s = sock();
  s.open();
  s.welcome({ epoch: EPOCH, seq: 0 });
  for (const n of [1, 2, 3]) s.msg(n, 'old' + n);
  s.drop(1001);
  s = await nextSocket();
  s.open();
  s.welcome({ epoch: 'fedcba9876543210', seq: 0, recovered: false });
  s.msg(1, 'new1');
  s.msg(2, 'new2');
  eq(seqs(log), [1, 2, 3, 1, 2], 'delivered');
  const f = log.failures[0];
  eq([f.reason, f.previousEpoch, f.epoch, f.missed], ['epoch', EPOCH, 'fedcba9876543210', null], 'recovery-failed');
  s.drop();
  s = await nextSocket();
  eq(query(s), { since: '2', epoch: 'fedcba9876543210' }, 'next resume');
  r.close();
  return "a new epoch: 'recovery-failed' (epoch), and its seq 1 is delivered although 3 was before";
});

await check('backoff', async () => {
  const draws = [0, 0.5, 0.999999];
  const caps = [0, 1, 2, 3, 4, 5, 6, 10, 60].map((a) => backoffDelay(a, 250, 10000, () => 0.999999));
  eq(caps, [249, 499, 999, 1999, 3999, 7999, 9999, 9999, 9999], 'caps');
  eq(draws.map((d) => backoffDelay(2, 250, 10000, () => d)), [0, 500, 999], 'jitter');
  // Failed attempts grow the delay; a welcome starts it over.
  const { log, sock, nextSocket } = relay('ws://127.0.0.1:1/r', { minDelay: 1, maxDelay: 1 });
  let s = sock();
  for (let i = 0; i < 3; i++) {
    await tick(); // its 'connecting' event is queued
    s.drop();
    s = await nextSocket();
  }
  await tick();
  eq(log.connecting.map((c) => c.attempt), [0, 1, 2, 3], 'attempts');
  s.open();
  s.welcome({ epoch: EPOCH, seq: 0 });
  s.drop();
  s = await nextSocket();
  await tick();
  eq(log.connecting.at(-1).attempt, 1, 'attempt after a welcome');
  return 'uniform in [0, min(10 s, 250 ms × 2^attempt)); failed attempts count up, a welcome resets';
});

await check('close', async () => {
  const { r, log, sock } = relay();
  const s = sock();
  s.open();
  s.welcome({ epoch: EPOCH, seq: 0 });
  r.close();
  eq(s.closedWith, [1000, ''], 'socket closed with');
  s.drop(1000); // the browser's close event, later: ignored
  await tick(20);
  eq(FakeSocket.all.length, 1, 'sockets opened');
  eq([r.state, log.closes.length, log.closes[0].reconnect], ['ended', 1, false], 'after close()');
  eq(r.send('x'), false, 'send after close()');
  eq(r.reconnect(), false, 'reconnect after close()');
  return 'close() ends it: one close event (reconnect false), no reconnection, send() false';
});

await check('raw-server', async () => {
  const { log, sock, nextSocket } = relay('ws://127.0.0.1:1/r', { last: 5 });
  let s = sock();
  s.open('');
  eq(s.closedWith, [undefined, undefined], 'socket closed with');
  s.text('plain');
  s.drop(1005);
  eq([log.messages.length, log.closes.length, log.closes[0].reconnect], [0, 1, true], 'events');
  s = await nextSocket();
  eq(query(s), { last: '5' }, 'reconnect query');
  return 'a server that does not answer wsrelay.v1: the socket is closed, nothing delivered, tried again later';
});

await check('saved-position', async () => {
  const { sock } = relay('ws://127.0.0.1:1/r', { last: 5, epoch: EPOCH, since: 77 });
  eq(query(sock()), { since: '77', epoch: EPOCH }, 'query');
  return 'epoch and since given to the constructor: the first connection resumes';
});

await check('reset', async () => {
  const { r, log, sock } = relay();
  const errors = [];
  r.addEventListener('error', (e) => errors.push(e.detail));
  const s = sock();
  s.open();
  s.welcome({ epoch: EPOCH, seq: 10 });
  s.msg(11, 'a');
  s.text({ type: 'reset', epoch: EPOCH, seq: 20 });
  s.msg(21, 'b');
  s.msg(20, 'old');
  const other = 'fedcba9876543210';
  s.text({ type: 'reset', epoch: other, seq: 0 });
  s.msg(1, 'c');
  s.text({ type: 'error', code: 'unavailable' });
  eq(seqs(log), [11, 21, 1], 'delivered');
  eq(log.failures.map((f) => [f.reason, f.since, f.seq, f.missed, f.previousEpoch]),
    [['reset', 11, 20, 9, EPOCH], ['reset', 21, 0, null, EPOCH]], 'recovery-failed');
  eq(r.position, { epoch: other, since: 1 }, 'position');
  eq([r.stats.resets, errors], [2, [{ code: 'unavailable' }]], 'resets and errors');
  return 'a reset fires recovery-failed (missed counted in the same epoch) and moves the position; error is passed on';
});

process.exit(failed ? 1 : 0);
