// History and resume in the browser: the demo chat page (src/demo/chat.html with its client,
// src/demo/wsrelay.js) in headless Chromium, while a Node `ws` member of the same room keeps
// sending numbered messages, and the page's connection is dropped under it.
//
//   node resume.mjs BASE_URL RESTART_CMD
//
// BASE_URL is the daemon (demo_page on, a pattern room /rooms/* with history_size = 100, echo
// on). alice's page goes through a TCP proxy in this script, so that her connection can be cut
// at the TCP level (a reset, like a network drop) and her reconnections refused for a while; the
// publisher ("pub", speaking wsrelay.v1 itself, so its echoes give the room's order and seq) and
// bob's page connect directly. RESTART_CMD (a shell command) stops and restarts the daemon on the
// same port, which loses the history: a new epoch.
//
// Checks, in order (each "PASS resume-NAME: detail" or "FAIL resume-NAME: detail"):
//   newcomer      alice joins after 30 messages: she sees all 30 (the demo asks for the last 50)
//   live          alice's own message and 10 more from pub: every page shows what pub got
//   drop-socket   while pub sends 120 messages 8 ms apart, the page's JS closes the client's
//                 WebSocket behind its back and blocks its thread 300 ms: the client resumes,
//                 the server replays what was missed, and the page shows every message exactly
//                 once, in the room's order, with the room's seq
//   drop-network  the proxy resets alice's TCP connection and refuses reconnections for 1 s while
//                 pub sends 60 more: the same, after failed attempts
//   history-gone  alice is cut off while pub sends 150 (more than the room keeps): the page says
//                 150 messages are not shown, shows none of them, then live messages again
//   newcomer-recent  bob joins now: he sees exactly the room's last 50 messages
//   new-epoch     the daemon restarts: both pages come back, say the room was restarted, and
//                 show the new epoch's messages (seq from 1 again)
//   clean         no script errors; each page's requests stay on its own origin
import { execSync } from 'node:child_process';
import net from 'node:net';
import { chromium } from 'playwright-core';
import WebSocket from 'ws';

const [base, restartCmd] = process.argv.slice(2);
const WAIT_MS = 10000; // bound on every wait
const ROOM = '/rooms/resume';
const daemonPort = Number(new URL(base).port);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const report = (ok, name, detail) => console.log((ok ? 'PASS' : 'FAIL') + ' resume-' + name + ': ' + detail);
let failed = false;
async function check(name, body) {
  try {
    report(true, name, await body());
  } catch (e) {
    failed = true;
    report(false, name, e.message.split('\n')[0]);
  }
}

async function until(what, cond) {
  const deadline = Date.now() + WAIT_MS;
  for (;;) {
    const v = await cond();
    if (v) return v;
    if (Date.now() > deadline) throw new Error('timed out waiting for ' + what);
    await sleep(20);
  }
}

// A TCP proxy to the daemon: drop() resets every connection through it (the browser sees a lost
// connection, 1006), and while `refuse` is set new connections are reset at once.
async function tcpProxy(port) {
  const pairs = new Set();
  const p = { refuse: false, refused: 0, port: 0 };
  const server = net.createServer((c) => {
    if (p.refuse) {
      p.refused++;
      c.resetAndDestroy();
      return;
    }
    const up = net.connect(port, '127.0.0.1');
    const pair = { c, up };
    pairs.add(pair);
    const end = () => {
      pairs.delete(pair);
      c.destroy();
      up.destroy();
    };
    for (const s of [c, up]) {
      s.on('error', end);
      s.on('close', end);
    }
    c.pipe(up);
    up.pipe(c);
  });
  p.drop = () => {
    for (const { c, up } of pairs) {
      c.resetAndDestroy();
      up.destroy();
    }
    pairs.clear();
  };
  p.close = () => server.close();
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  p.port = server.address().port;
  return p;
}

// A member speaking wsrelay.v1 from Node: its log is every message of the room since it joined,
// as [seq, "name: text"] in the room's order (echo is on, so its own are there too).
async function member(url) {
  const ws = new WebSocket(url, ['wsrelay.v1']);
  const m = { ws, log: [], welcome: null };
  ws.on('message', (data, binary) => {
    if (binary) throw new Error('pub got a binary frame');
    const f = JSON.parse(data.toString());
    if (f.type === 'welcome') m.welcome = f;
    else if (f.type === 'message') {
      const c = JSON.parse(f.data);
      m.log.push([f.seq, c.name + ': ' + c.text]);
    }
  });
  await new Promise((resolve, reject) => {
    ws.once('open', resolve);
    ws.once('error', reject);
  });
  if (ws.protocol !== 'wsrelay.v1') throw new Error('pub: subprotocol ' + JSON.stringify(ws.protocol));
  await until('pub welcome', () => m.welcome);
  let last = null;
  m.say = (text) => {
    ws.send(JSON.stringify({ name: 'pub', text }));
    last = 'pub: ' + text;
  };
  // Until the room has sequenced everything pub sent (its echoes are back).
  m.settled = () => until('the echo of ' + last, () => m.log.findLastIndex(([, t]) => t === last) >= 0);
  // Until the room has sequenced a message with this "name: text".
  m.seen = (line) => until(line + ' in pub log', () => m.log.findLastIndex(([, t]) => t === line) >= 0);
  return m;
}

// What a page shows: [seq, "name: text"] per message (its own pending ones left out).
const shown = (page) =>
  page.$$eval('#messages li.msg:not(.pending)', (lis) =>
    lis.map((li) => [Number(li.dataset.seq), li.querySelector('.name').textContent + ': ' + li.querySelector('.text').textContent]));
const notes = (page) => page.$$eval('#messages li.note', (lis) => lis.map((li) => li.textContent));
const stats = (page) => page.evaluate(() => ({ ...window.chatRelay.stats, welcome: window.chatRelay.welcome, state: window.chatRelay.state }));

// The page shows exactly `want` (after waiting for its length, then a moment for anything extra).
async function showsExactly(page, want, who) {
  await page.waitForFunction((k) => document.querySelectorAll('#messages li.msg:not(.pending)').length >= k,
    want.length, { timeout: WAIT_MS }).catch(async () => {
    const got = await shown(page);
    throw new Error(who + ' shows ' + got.length + ' messages, expected ' + want.length + firstDiff(got, want));
  });
  await sleep(200);
  const got = await shown(page);
  if (JSON.stringify(got) !== JSON.stringify(want)) {
    throw new Error(who + ' shows ' + got.length + ' messages, expected ' + want.length + firstDiff(got, want));
  }
}

function firstDiff(got, want) {
  for (let i = 0; i < Math.max(got.length, want.length); i++) {
    if (JSON.stringify(got[i]) !== JSON.stringify(want[i])) {
      return '; first difference at ' + i + ': ' + JSON.stringify(got[i]) + ' vs ' + JSON.stringify(want[i]);
    }
  }
  return '';
}

const proxy = await tcpProxy(daemonPort);
const proxied = 'http://127.0.0.1:' + proxy.port;
const wsUrl = 'ws://127.0.0.1:' + daemonPort + ROOM;
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--disable-quic'],
  timeout: 30000,
});
let pub;
try {
  const ctx = await browser.newContext({ viewport: { width: 760, height: 460 } });
  const errors = [];
  const foreign = [];
  const open = async (origin, name) => {
    const page = await ctx.newPage();
    page.on('pageerror', (e) => errors.push(name + ': ' + e.message));
    page.on('request', (r) => {
      if (new URL(r.url()).origin !== origin) foreign.push(name + ': ' + r.url());
    });
    await page.goto(origin + '/?room=' + encodeURIComponent(ROOM) + '&name=' + name);
    await page.waitForFunction(() => document.querySelector('#state').dataset.state === 'open', null, { timeout: WAIT_MS });
    return page;
  };
  pub = await member(wsUrl);
  let alice;
  let sent = 0; // pub's numbered messages so far
  const send = (n) => {
    for (let i = 0; i < n; i++) pub.say('#' + ++sent);
  };

  await check('newcomer', async () => {
    send(30);
    await pub.settled();
    alice = await open(proxied, 'alice');
    await showsExactly(alice, pub.log, 'alice');
    const s = await stats(alice);
    if (s.welcome.replayed !== 30 || s.welcome.seq !== 30) throw new Error('welcome ' + JSON.stringify(s.welcome));
    return 'alice joins after 30 messages and sees #1..#30 (welcome seq 30, replayed 30)';
  });

  await check('live', async () => {
    await alice.fill('#text', 'hello from alice');
    await alice.press('#text', 'Enter');
    await pub.seen('alice: hello from alice');
    send(10);
    await pub.settled();
    await showsExactly(alice, pub.log, 'alice');
    return "alice's own message and 10 more from pub, in pub's order and seq";
  });

  // Pub sends `n` more, `gapMs` apart, calling during() after the first `at` of them.
  async function stream(n, gapMs, at, during) {
    let pending;
    for (let i = 0; i < n; i++) {
      if (i === at) pending = during();
      send(1);
      await sleep(gapMs);
    }
    await pending;
    await pub.settled();
  }

  await check('drop-socket', async () => {
    const before = await stats(alice);
    await stream(120, 8, 30, () =>
      alice.evaluate(() => {
        // Behind the client's back, as a network drop would: it did not call close() itself.
        window.chatRelay.socket.close();
        const t = performance.now();
        while (performance.now() - t < 300); // pub's messages go on meanwhile
      }));
    await showsExactly(alice, pub.log, 'alice');
    const s = await stats(alice);
    if (s.resumes !== before.resumes + 1 || s.recovered !== before.recovered + 1) {
      throw new Error('resumes ' + before.resumes + ' → ' + s.resumes + ', recovered ' + before.recovered + ' → ' + s.recovered);
    }
    if (!(s.welcome.recovered === true && s.welcome.replayed > 0)) throw new Error('resume welcome ' + JSON.stringify(s.welcome));
    if (s.gaps) throw new Error(s.gaps + ' gaps');
    return 'socket closed by page JS mid-stream: resumed (recovered, ' + s.welcome.replayed + ' replayed, ' +
      (s.duplicates - before.duplicates) + ' duplicates dropped); all ' + pub.log.length + ' messages shown once, in order';
  });

  await check('drop-network', async () => {
    const before = await stats(alice);
    const t0 = Date.now();
    proxy.refuse = true;
    proxy.drop();
    await stream(60, 10, 0, async () => {});
    await sleep(Math.max(0, 1000 - (Date.now() - t0)));
    await until('a reconnection attempt (refused)', () => proxy.refused >= 1);
    const refused = proxy.refused;
    proxy.refuse = false;
    await showsExactly(alice, pub.log, 'alice');
    const s = await stats(alice);
    if (s.resumes !== before.resumes + 1 || s.recovered !== before.recovered + 1) {
      throw new Error('resumes ' + before.resumes + ' → ' + s.resumes + ', recovered ' + before.recovered + ' → ' + s.recovered);
    }
    if (!(s.welcome.recovered === true && s.welcome.replayed >= 60)) throw new Error('resume welcome ' + JSON.stringify(s.welcome));
    return 'TCP reset, ' + refused + ' attempt(s) refused for 1 s, then resumed (' + s.welcome.replayed +
      ' replayed); all ' + pub.log.length + ' messages shown once, in order';
  });

  await check('history-gone', async () => {
    const before = await stats(alice);
    const had = pub.log.slice();
    proxy.refuse = true;
    proxy.drop();
    send(150);
    await pub.settled();
    proxy.refuse = false;
    await until('alice told', async () => (await stats(alice)).recoveryFailed > before.recoveryFailed);
    const said = (await notes(alice)).at(-1);
    if (!/150 messages .* no longer kept/.test(said)) throw new Error('the page says: ' + said);
    send(1);
    await pub.settled();
    await showsExactly(alice, [...had, pub.log.at(-1)], 'alice');
    const s = await stats(alice);
    if (s.welcome.recovered !== false || s.welcome.replayed !== 0) throw new Error('welcome ' + JSON.stringify(s.welcome));
    return "150 sent while alice was away (history_size 100): nothing replayed, the page says '" + said + "', then live again";
  });

  let bob;
  await check('newcomer-recent', async () => {
    bob = await open(base, 'bob');
    await showsExactly(bob, pub.log.slice(-50), 'bob');
    const s = await stats(bob);
    if (s.welcome.replayed !== 50) throw new Error('welcome ' + JSON.stringify(s.welcome));
    return 'bob joins after ' + pub.log.length + ' messages and sees exactly the last 50 (#' +
      pub.log.at(-50)[1].replace(/^pub: #/, '') + '..#' + sent + ')';
  });

  await check('new-epoch', async () => {
    const aliceHad = await shown(alice);
    const bobHad = await shown(bob);
    const oldEpoch = pub.welcome.epoch;
    execSync(restartCmd, { stdio: 'inherit', timeout: WAIT_MS });
    pub.ws.terminate();
    pub = await member(wsUrl);
    if (pub.welcome.epoch === oldEpoch) throw new Error('the restarted daemon kept the epoch');
    for (const [page, who] of [[alice, 'alice'], [bob, 'bob']]) {
      await until(who + ' back in the new epoch', async () => {
        const s = await stats(page);
        return s.state === 'open' && s.welcome.epoch === pub.welcome.epoch;
      });
      const said = (await notes(page)).at(-1);
      if (!said.includes('the room was restarted')) throw new Error(who + "'s page says: " + said);
    }
    pub.say('first of the new epoch');
    pub.say('second');
    await pub.settled();
    await showsExactly(alice, [...aliceHad, ...pub.log], 'alice');
    await showsExactly(bob, [...bobHad, ...pub.log], 'bob');
    return 'daemon restarted: both pages say the room was restarted and show seq ' +
      pub.log.map(([s]) => s).join(', ') + ' of the new epoch';
  });

  await check('clean', async () => {
    if (errors.length) throw new Error('page errors: ' + errors.join('; '));
    if (foreign.length) throw new Error('requests to another origin: ' + foreign.join(' '));
    return 'no script errors; every request went to its page\'s own origin';
  });
} finally {
  pub?.ws.terminate();
  proxy.close();
  await browser.close();
}
process.exit(failed ? 1 : 0);
