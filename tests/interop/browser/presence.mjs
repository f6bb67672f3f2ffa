// Presence in the browser: the demo chat page (src/demo/chat.html with src/demo/wsrelay.js) in
// headless Chromium, in rooms with `presence = true`, checked on what the page shows.
//
//   node presence.mjs BASE_URL JWT_SECRET SCREENSHOT.png
//
// BASE_URL is the daemon (demo_page on): /rooms/* with presence, /team/* with presence and
// auth = "jwt" (tokens signed with JWT_SECRET), /slow/* with presence_max_events_per_second = 1,
// /quiet/* without presence.
//
// Checks, in order (each "PASS presence-NAME: detail" or "FAIL presence-NAME: detail"):
//   join       alice joins /rooms/p: 1 member, herself; bob joins: his page says 2 (alice is
//              "1 more"), alice's page says 2 and lists bob by his member id, with a line
//   rejoin     alice joins again (a new connection, a new member id): bob's page says 2 and lists
//              alice's new id, with a line for her old id leaving and her new one joining
//   leave      alice closes her page: bob's page drops to 1 and no longer lists her
//   user       in a jwt room, a member is listed by its token's sub (markup in it stays text);
//              when it leaves, the other page drops to 1 and no longer lists it
//   coalesced  8 Node members join a room paced at 1 event a second at once, then leave: the page
//              gets the count instead of the dropped events, says its list may be out of date,
//              and ends at 9, then at 1
//   no-presence  in a room without presence the members bar stays hidden
//   clean      no script errors; every request went to the daemon's origin
// The screenshot (bob's page after `rejoin`) is for a person to look at.
import { createHmac } from 'node:crypto';
import { chromium } from 'playwright-core';
import WebSocket from 'ws';

const [base, secret, screenshot] = process.argv.slice(2);
const WAIT_MS = 10000; // bound on every wait
const origin = new URL(base).origin;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const report = (ok, name, detail) => console.log((ok ? 'PASS' : 'FAIL') + ' presence-' + name + ': ' + detail);
let failed = false;
async function check(name, body) {
  try {
    report(true, name, await body());
  } catch (e) {
    failed = true;
    report(false, name, e.message.split('\n')[0]);
  }
}

// An HS256 token for `sub`, valid for an hour, as the service that logs users in would mint it.
function token(sub) {
  const b64 = (s) => Buffer.from(s).toString('base64url');
  const claims = { exp: Math.floor(Date.now() / 1000) + 3600, sub };
  const signed = b64(JSON.stringify({ alg: 'HS256', typ: 'JWT' })) + '.' + b64(JSON.stringify(claims));
  return signed + '.' + createHmac('sha256', secret).update(signed).digest('base64url');
}

// What a page's members bar shows.
const bar = (page) =>
  page.evaluate(() => ({
    hidden: document.querySelector('#presence').hidden,
    count: Number(document.querySelector('#count').dataset.count),
    members: [...document.querySelectorAll('#members li')].map((li) => ({
      id: li.dataset.member, text: li.textContent, me: li.classList.contains('me'),
    })),
    others: document.querySelector('#others').textContent,
    partial: !document.querySelector('#partial').hidden,
    lines: [...document.querySelectorAll('#messages li.note.presence')].map((li) => li.textContent),
  }));

// Until `page`'s bar satisfies `ok` (which throws or returns false otherwise); the last bar seen
// is in the error.
async function until(page, who, what, ok) {
  const deadline = Date.now() + WAIT_MS;
  for (;;) {
    const b = await bar(page);
    let good = false;
    let why = '';
    try {
      good = ok(b);
    } catch (e) {
      why = ': ' + e.message;
    }
    if (good) return b;
    if (Date.now() > deadline) throw new Error(who + "'s page never showed " + what + why + '; it shows ' + JSON.stringify(b));
    await sleep(50);
  }
}

const others = (b) => b.members.filter((m) => !m.me);
const lists = (b, id) => b.members.some((m) => m.id === id);

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--disable-quic'],
  timeout: 30000,
});
try {
  const ctx = await browser.newContext({ viewport: { width: 760, height: 460 }, deviceScaleFactor: 1 });
  const errors = [];
  const foreign = [];
  ctx.on('request', (r) => {
    if (new URL(r.url()).origin !== origin) foreign.push(r.url());
  });
  // A page that joined `room` as `name` by link, once its welcome is in: [page, member id].
  const open = async (room, name) => {
    const page = await ctx.newPage();
    page.on('pageerror', (e) => errors.push(name + ': ' + e.message));
    await page.goto(base + '/?room=' + encodeURIComponent(room) + '&name=' + encodeURIComponent(name));
    await page.waitForFunction(() => document.querySelector('#state').dataset.state === 'open', null, { timeout: WAIT_MS });
    return [page, await page.evaluate(() => window.chatRelay.member)];
  };

  let alice;
  let aliceId;
  let bob;
  let bobId;
  await check('join', async () => {
    [alice, aliceId] = await open('/rooms/p', 'alice');
    await until(alice, 'alice', 'herself alone', (b) =>
      !b.hidden && b.count === 1 && b.members.length === 1 && b.members[0].me &&
      b.members[0].id === aliceId && b.members[0].text === 'you (alice)' && b.others === '');
    [bob, bobId] = await open('/rooms/p', 'bob');
    await until(bob, 'bob', '2 members: himself and 1 more', (b) =>
      b.count === 2 && b.members.length === 1 && b.members[0].me && b.others === 'and 1 more');
    const a = await until(alice, 'alice', 'bob joining (2 members)', (b) =>
      b.count === 2 && others(b).length === 1 && others(b)[0].id === bobId && others(b)[0].text === bobId &&
      b.lines.at(-1) === bobId + ' joined');
    return "alice's page: 1 member, then 2 with bob listed as " + bobId + " and '" + a.lines.at(-1) +
      "'; bob's page: 2 (himself and 1 more)";
  });

  await check('rejoin', async () => {
    const oldId = aliceId;
    await alice.click('#join button');
    await alice.waitForFunction((old) => window.chatRelay.state === 'open' && window.chatRelay.member !== old,
      oldId, { timeout: WAIT_MS });
    aliceId = await alice.evaluate(() => window.chatRelay.member);
    await until(bob, 'bob', "alice's new id joining and her old one leaving", (x) =>
      x.count === 2 && others(x).length === 1 && others(x)[0].id === aliceId && !lists(x, oldId) &&
      x.lines.includes(oldId + ' left') && x.lines.includes(aliceId + ' joined'));
    await until(alice, 'alice', '2 members: herself and 1 more', (x) =>
      x.count === 2 && x.members.length === 1 && x.members[0].id === aliceId && x.others === 'and 1 more');
    await bob.screenshot({ path: screenshot });
    return "bob's page: '" + oldId + " left', '" + aliceId + " joined', 2 members, alice listed as " + aliceId;
  });

  await check('leave', async () => {
    await alice.close();
    const b = await until(bob, 'bob', 'alice leaving (1 member)', (x) =>
      x.count === 1 && x.members.length === 1 && x.members[0].me && !lists(x, aliceId) &&
      x.lines.at(-1) === aliceId + ' left' && x.others === '');
    return "alice closed her page: bob's page says '" + b.lines.at(-1) + "' and 1 member, himself";
  });

  await check('user', async () => {
    const sub = 'erin <i>e</i>';
    const [dave] = await open('/team/a?token=' + token('dave'), 'dave');
    const [erin, erinId] = await open('/team/a?token=' + token(sub), 'erin');
    await until(dave, 'dave', 'erin joining by her sub', (x) =>
      x.count === 2 && others(x).length === 1 && others(x)[0].id === erinId && others(x)[0].text === sub &&
      x.lines.at(-1) === sub + ' joined');
    const made = await dave.$$eval('#presence i, #messages i', (els) => els.length);
    if (made) throw new Error(made + ' element(s) made from a sub');
    await erin.close();
    await until(dave, 'dave', 'erin leaving (1 member)', (x) =>
      x.count === 1 && !lists(x, erinId) && x.lines.at(-1) === sub + ' left');
    await dave.close();
    return "jwt room: dave's page lists erin by her token's sub '" + sub + "' (as text), then drops to 1 when she leaves";
  });

  await check('coalesced', async () => {
    const [page] = await open('/slow/r', 'sam');
    const url = base.replace(/^http/, 'ws') + '/slow/r';
    const crowd = await Promise.all(Array.from({ length: 8 }, () => new Promise((resolve, reject) => {
      const ws = new WebSocket(url, ['wsrelay.v1']);
      ws.once('message', () => resolve(ws)); // its welcome: it is in the count
      ws.once('error', reject);
    })));
    const full = await until(page, 'sam', 'the count of 9 and the list marked', (x) =>
      x.count === 9 && x.partial && x.lines.some((l) => l.startsWith('9 members in the room now')));
    for (const ws of crowd) ws.close();
    await until(page, 'sam', 'the count back at 1', (x) => x.count === 1);
    await page.close();
    return '8 joined at once, ' + full.lines.filter((l) => l.endsWith(' joined')).length +
      " join line(s) shown, then the count: '" + full.lines.at(-1) + "'; back to 1 when they left";
  });

  await check('no-presence', async () => {
    const [quiet] = await open('/quiet/a', 'quinn');
    const welcome = await quiet.evaluate(() => window.chatRelay.welcome);
    if ('members' in welcome) throw new Error('the welcome has members: ' + JSON.stringify(welcome));
    await sleep(200);
    const b = await bar(quiet);
    if (!b.hidden || b.lines.length) throw new Error('the page shows ' + JSON.stringify(b));
    await quiet.close();
    return 'a room without presence: no count in the welcome, the members bar hidden';
  });

  await check('clean', async () => {
    if (errors.length) throw new Error('page errors: ' + errors.join('; '));
    if (foreign.length) throw new Error('requests outside ' + origin + ': ' + foreign.join(' '));
    return 'no script errors; every request went to ' + origin;
  });
} finally {
  await browser.close();
}
process.exit(failed ? 1 : 0);
