// The demo chat page (src/demo/chat.html, GET / on the daemon) in headless Chromium, driven the
// way a person uses it, with playwright-core over the system's /usr/bin/chromium.
//
//   node chat.mjs BASE_URL SCREENSHOT.png RESTART_CMD
//
// BASE_URL is the daemon (demo_page on, rooms /chat and /rooms/*). alice joins /rooms/a through
// the form, bob through a link (?room=/rooms/a&name=bob), carol /rooms/b; they type and send.
// Checks: no request leaves the daemon's origin; alice and bob see each other's messages in the same
// order, carol sees none of them and they none of hers; untrusted text is shown as text. Then the
// screenshot is taken, and RESTART_CMD (a shell command) stops and restarts the daemon on the same
// port: the page must show the connection closed, then open again by itself, and still work.
// Prints one "PASS chat-NAME: detail" or "FAIL chat-NAME: detail" line per check.
import { execSync } from 'node:child_process';
import { chromium } from 'playwright-core';

const [base, screenshot, restartCmd] = process.argv.slice(2);
const WAIT_MS = 10000; // bound on every wait
const origin = new URL(base).origin;

const report = (ok, name, detail) => console.log((ok ? 'PASS' : 'FAIL') + ' chat-' + name + ': ' + detail);

async function check(name, body) {
  try {
    report(true, name, await body());
    return true;
  } catch (e) {
    report(false, name, e.message.split('\n')[0]);
    return false;
  }
}

const state = (page) => page.locator('#state').getAttribute('data-state');
const waitState = (page, want) =>
  page.waitForFunction((w) => document.querySelector('#state').dataset.state === w, want, { timeout: WAIT_MS });

// The messages a page shows, as "name: text", pending ones (not echoed yet) left out.
const shown = (page) =>
  page.$$eval('#messages li.msg:not(.pending)', (lis) =>
    lis.map((li) => li.querySelector('.name').textContent + ': ' + li.querySelector('.text').textContent));

async function waitShown(page, n) {
  await page.waitForFunction(
    (k) => document.querySelectorAll('#messages li.msg:not(.pending)').length >= k, n, { timeout: WAIT_MS });
  return shown(page);
}

async function say(page, text) {
  await page.fill('#text', text);
  await page.press('#text', 'Enter');
}

function same(got, want, who) {
  if (JSON.stringify(got) !== JSON.stringify(want)) {
    throw new Error(who + ' shows ' + JSON.stringify(got) + ', expected ' + JSON.stringify(want));
  }
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--disable-quic'],
  timeout: 30000,
});
let failed = false;
try {
  const ctx = await browser.newContext({ viewport: { width: 760, height: 460 }, deviceScaleFactor: 1 });
  const foreign = [];
  ctx.on('request', (r) => {
    const u = new URL(r.url());
    if (u.origin !== origin && u.protocol !== 'data:') foreign.push(r.url());
  });
  const alice = await ctx.newPage();
  const bob = await ctx.newPage();
  const carol = await ctx.newPage();
  const errors = [];
  for (const p of [alice, bob, carol]) p.on('pageerror', (e) => errors.push(e.message));

  failed ||= !(await check('join', async () => {
    await alice.goto(base + '/');
    const before = await state(alice);
    await alice.fill('#room', '/rooms/a');
    await alice.fill('#name', 'alice');
    await alice.click('#join button');
    await bob.goto(base + '/?room=' + encodeURIComponent('/rooms/a') + '&name=bob');
    await carol.goto(base + '/?room=/rooms/b&name=carol');
    for (const p of [alice, bob, carol]) await waitState(p, 'open');
    if (before !== 'idle') throw new Error('state before joining is ' + before);
    return 'alice by the form, bob and carol by link: state idle, then open in all three';
  }));

  // A conversation: each line is sent once the previous one has reached the other page, so the
  // expected order is fixed.
  const lines = [
    ['alice', 'Hi Bob! Ça va? — ünïcödé'],
    ['bob', 'Hello Alice, all good here.'],
    ['alice', 'Did you see? The relay is live on /rooms/a.'],
    ['bob', 'Yes, and we both see every message in the same order.'],
  ];
  const pages = { alice, bob };
  failed ||= !(await check('same-room', async () => {
    const want = [];
    for (const [who, text] of lines) {
      await say(pages[who], text);
      want.push(who + ': ' + text);
      same(await waitShown(who === 'alice' ? bob : alice, want.length), want, who === 'alice' ? 'bob' : 'alice');
    }
    same(await waitShown(alice, want.length), want, 'alice');
    same(await waitShown(bob, want.length), want, 'bob');
    return "alice and bob each see both names' messages, in the same order";
  }));

  failed ||= !(await check('other-room', async () => {
    await say(carol, 'Anyone in room b?');
    same(await waitShown(carol, 1), ['carol: Anyone in room b?'], 'carol');
    await alice.waitForTimeout(300); // room a's messages had their chance to leak
    same(await shown(carol), ['carol: Anyone in room b?'], 'carol');
    if ((await shown(alice)).some((m) => m.startsWith('carol'))) throw new Error("alice sees carol's message");
    return "carol (/rooms/b) sees only her own message, and alice and bob none of hers";
  }));

  await alice.screenshot({ path: screenshot });
  report(true, 'screenshot', screenshot);

  failed ||= !(await check('untrusted-text', async () => {
    const html = '<img src=x onerror="document.title=1"><b>not bold</b>';
    await say(alice, html);
    const got = await waitShown(bob, lines.length + 1);
    same(got.slice(lines.length), ['alice: ' + html], 'bob');
    const found = await bob.$$eval('#messages img, #messages b', (els) => els.length);
    if (found) throw new Error(found + ' element(s) made from a message');
    if ((await bob.title()) !== 'wsrelay chat') throw new Error('the page title changed: a handler ran');
    return 'markup in a message is shown as text: no element made, no handler run';
  }));

  failed ||= !(await check('reconnect', async () => {
    execSync(restartCmd, { stdio: 'inherit', timeout: WAIT_MS });
    // The daemon closed everyone with 1001 and came back: the page retries after 1 s by itself.
    await waitState(alice, 'open');
    const notes = await alice.$$eval('#messages li.note', (lis) => lis.map((li) => li.textContent));
    if (!notes.some((n) => n.startsWith('disconnected'))) throw new Error('no disconnect shown: ' + JSON.stringify(notes));
    await waitState(bob, 'open');
    const n = (await shown(bob)).length;
    await say(alice, 'back again');
    const got = await waitShown(bob, n + 1);
    same(got.slice(n), ['alice: back again'], 'bob');
    return "daemon restarted: '" + notes.find((x) => x.startsWith('disconnected')) + "', then open again, and messages flow";
  }));

  failed ||= !(await check('self-contained', async () => {
    if (foreign.length) throw new Error('requests outside ' + origin + ': ' + foreign.join(' '));
    if (errors.length) throw new Error('page errors: ' + errors.join('; '));
    return 'every request went to ' + origin + '; no script errors';
  }));
} finally {
  await browser.close();
}
process.exit(failed ? 1 : 0);
