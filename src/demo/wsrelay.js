/**
 * wsrelay.js: a browser client for wsrelay rooms that speaks the `wsrelay.v1` subprotocol, so that
 * a page that loses its connection gets back exactly the messages it missed, or is told plainly
 * that it cannot. One dependency-free ES module: copy it beside your page, or import it from a
 * wsrelay daemon with `demo_page` on (GET /wsrelay.js).
 *
 *   import { WsRelay } from './wsrelay.js';
 *   const room = new WsRelay('wss://relay.example/chat', { last: 50 });
 *   room.addEventListener('message', (e) => show(e.detail.seq, e.detail.data));
 *   room.addEventListener('recovery-failed', () => reloadFromYourBackend());
 *   room.addEventListener('presence', (e) => showCount(e.detail.count));  // rooms with presence
 *   room.send('hello');                 // plain text (or an ArrayBuffer / typed array / Blob)
 *   room.close();                       // for good: no reconnection after this
 *
 * What it does
 *   - Connects with `new WebSocket(url, ["wsrelay.v1"])`. The first connection asks for the room's
 *     `last` kept messages (`?last=N`; N must not exceed the room's `history_size`, or the server
 *     refuses the upgrade with 400 and the connection fails).
 *   - Remembers the room's epoch and the `seq` of the last message it delivered. When the
 *     connection closes without `close()` having been called, it reconnects after a delay drawn
 *     uniformly from [0, min(maxDelay, minDelay × 2^attempt)) (exponential backoff, full jitter;
 *     250 ms doubling to 10 s by default; the attempt count restarts at each welcome) and resumes
 *     with `?since=<seq>&epoch=<epoch>`: the server replays what was missed, then goes on live.
 *   - Delivers each message once, in the room's order: a message whose seq is not above the last
 *     delivered one is dropped as a duplicate.
 *   - When the server cannot replay everything that was missed (the room was recreated, so the
 *     epoch changed; or the missed messages are no longer kept), it says `"recovered": false` and
 *     replays nothing: this module then fires `recovery-failed`, and the app reloads its state from
 *     wherever it keeps it. Messages that follow are the live ones, still once each, in order.
 *   - In a room with `presence = true`, the welcome carries the member count (this connection
 *     included) and the server tells who joins and leaves, in the room's order with its messages.
 *     This module keeps the count up to date from them (`members`) and passes each on as a
 *     `presence` event. A member never hears of its own join, nor of members that joined before
 *     it (the count covers those). Past the room's `presence_max_events_per_second` the server
 *     drops joins and leaves and later sends the count instead (type "members"): a list of members
 *     built from join and leave events is then no longer complete, the count still is.
 *   - Frames of a type it does not know (later protocol versions add some) are ignored.
 *   - A server that does not answer with `wsrelay.v1` fails the handshake (browsers refuse an
 *     offered subprotocol left unanswered; this module closes such a socket if one opens anyway),
 *     and the attempt counts as a failed connection.
 *
 * new WsRelay(url, options)
 *   url        ws:// or wss:// (http(s):// and URLs relative to the page work too); any query it
 *              has is kept (e.g. ?token=…), except `last`, `since` and `epoch`, which this module sets.
 *   options    last      messages to replay on the first connection (default 0: none)
 *              epoch, since   resume from a position saved earlier (e.g. in sessionStorage, from
 *                        `position`), instead of starting with `last`
 *              minDelay, maxDelay   the backoff in ms (default 250 and 10000)
 *              WebSocket the WebSocket constructor to use (default: globalThis.WebSocket)
 *   The constructor opens the first connection at once; events start in a later task, so
 *   listeners added right after the constructor miss none. An invalid URL throws.
 *
 * Events (an EventTarget; each event is a CustomEvent with its payload in `event.detail`)
 *   connecting       {url, attempt, resume: {epoch, since} | null}   a connection is being opened
 *   open             {protocol}   the WebSocket opened (with wsrelay.v1); the welcome follows
 *   welcome          the server's welcome {room, epoch, seq, member, recovered, replayed} plus
 *                    `resumed` (true when this connection asked to resume). Before this connection's
 *                    first message; `replayed` replayed messages, then live ones. In a room with
 *                    presence it also has `members`, the member count (this connection included):
 *                    members seen joining on an earlier connection may have left since.
 *   recovery-failed  {reason, epoch, previousEpoch, since, seq, missed, welcome}: right after
 *                    `welcome`, when a resume could not get every missed message. reason "epoch":
 *                    the room was recreated (missed is null: unknown); reason "history": the
 *                    room no longer keeps all `missed` messages after `since` (up to `seq`;
 *                    null when `since` was ahead of the room's `seq`).
 *                    Nothing was replayed. Reload the app's state.
 *                    reason "reset", at any time: with several nodes (`[cluster]`), messages
 *                    after `since` up to `seq` were lost between the nodes and cannot be read back
 *                    (or the room restarted: `epoch` differs from `previousEpoch`, missed null);
 *                    the room goes on after `seq`. Reload the app's state.
 *   error            {code}   the server could not take a message this connection sent; code
 *                    "unavailable": the nodes' Redis is unreachable, the message was dropped.
 *   message          {seq, data, binary, epoch}   data is a string, or an ArrayBuffer when binary
 *   presence         {type, member, user, count, seq}   in a room with presence, after the welcome:
 *                    type "join" or "leave": `member` (its id in the room) came or went; `user`
 *                    is its token's `sub` in a room with `auth = "jwt"`, else null.
 *                    type "members": some joins and leaves were dropped (too many at once) and
 *                    this is the count now; `member` and `user` are null.
 *                    `count` is the member count after the event (null if the welcome had none);
 *                    `seq` the room's last message sequence number when it happened (presence
 *                    events take no number of their own and are never replayed).
 *   close            {code, reason, wasClean, reconnect, delay}   the connection closed; when
 *                    `reconnect` is true the next attempt starts in `delay` ms
 *
 * Methods and properties
 *   send(data)       sends one message on the open connection: true; false when there is none
 *                    (nothing is queued: a message sent while reconnecting is the app's to retry)
 *   close(code, reason)   closes for good (fires `close` with reconnect false, at once)
 *   reconnect()      while waiting to reconnect, try now instead of after the delay
 *   state            "connecting", "open" (welcome received), "closed" (waiting
 *                    to reconnect) or "ended" (after close())
 *   position         {epoch, since}: where a resume would start (null before the first welcome)
 *   member           this connection's member id in the room (from the welcome)
 *   members          the room's member count, this connection included: the welcome's, kept up
 *                    to date by presence events; null in a room without presence or before the
 *                    first welcome
 *   welcome          the last welcome received
 *   stats            counts: connects, welcomes, resumes, recovered, recoveryFailed, replayed,
 *                    delivered, duplicates, gaps (a seq more than one above the last delivered:
 *                    never expected from a conforming server), presence (events passed on),
 *                    resets (reset frames: several nodes lost messages they could not fill in)
 *   socket           the current WebSocket, for diagnostics; closing it yourself is handled as a
 *                    dropped connection (the module reconnects and resumes)
 */

/** The subprotocol this module speaks. */
export const PROTOCOL = 'wsrelay.v1';

/** Backoff defaults, in ms: the first retry waits up to 250 ms, later ones up to 10 s. */
export const MIN_DELAY_MS = 250;
export const MAX_DELAY_MS = 10000;

const OPEN = 1; // WebSocket.OPEN, without relying on a global

/**
 * The delay before reconnection attempt number `attempt` (0 for the first): full jitter, uniform
 * in [0, min(maxDelay, minDelay × 2^attempt)).
 */
export function backoffDelay(attempt, minDelay = MIN_DELAY_MS, maxDelay = MAX_DELAY_MS, random = Math.random) {
  const cap = Math.min(maxDelay, minDelay * 2 ** Math.min(attempt, 30));
  return Math.floor(random() * cap);
}

/** A ws:// or wss:// URL from what the caller gave, relative to the page when there is one. */
function absoluteUrl(url) {
  const base = globalThis.location ? globalThis.location.href : undefined;
  const u = new URL(String(url), base);
  if (u.protocol === 'http:') u.protocol = 'ws:';
  else if (u.protocol === 'https:') u.protocol = 'wss:';
  if (u.protocol !== 'ws:' && u.protocol !== 'wss:') throw new SyntaxError('not a WebSocket URL: ' + url);
  u.hash = '';
  return u;
}

export class WsRelay extends EventTarget {
  #url;
  #last;
  #minDelay;
  #maxDelay;
  #WebSocket;
  #ws = null;          // the current socket; events of any other are ignored
  #welcomed = false;   // the current socket's welcome has arrived
  #resumeFrom = null;  // {epoch, since} the current socket asked to resume from
  #epoch = null;       // the room's epoch, from the last welcome
  #lastSeq = 0;        // the seq of the last message delivered (or skipped past) in #epoch
  #attempt = 0;        // reconnection attempts since the last welcome
  #timer = 0;
  #state = 'connecting';
  #member = null;
  #members = null;     // the room's member count (presence), from the welcome and the events since
  #welcome = null;
  #stats = {
    connects: 0, welcomes: 0, resumes: 0, recovered: 0, recoveryFailed: 0,
    replayed: 0, delivered: 0, duplicates: 0, gaps: 0, presence: 0, resets: 0,
  };

  constructor(url, options = {}) {
    super();
    this.#url = absoluteUrl(url);
    this.#last = Math.max(0, Math.floor(Number(options.last) || 0));
    this.#minDelay = options.minDelay ?? MIN_DELAY_MS;
    this.#maxDelay = options.maxDelay ?? MAX_DELAY_MS;
    this.#WebSocket = options.WebSocket ?? globalThis.WebSocket;
    if (options.epoch != null && options.since != null) {
      this.#epoch = String(options.epoch);
      this.#lastSeq = Math.max(0, Math.floor(Number(options.since) || 0));
    }
    this.#connect(true);
  }

  get state() { return this.#state; }
  get member() { return this.#member; }
  get members() { return this.#members; }
  get welcome() { return this.#welcome; }
  get socket() { return this.#ws; }
  get stats() { return { ...this.#stats }; }
  get position() { return this.#epoch === null ? null : { epoch: this.#epoch, since: this.#lastSeq }; }

  /** Send one message (string, ArrayBuffer, typed array or Blob): true if it was handed over. */
  send(data) {
    const ws = this.#ws;
    if (!ws || ws.readyState !== OPEN) return false;
    ws.send(data);
    return true;
  }

  /** Close for good: the socket with `code` (default 1000), and no reconnection. */
  close(code = 1000, reason = '') {
    if (this.#state === 'ended') return;
    clearTimeout(this.#timer);
    const ws = this.#ws;
    this.#ws = null;
    if (ws) {
      try { ws.close(code, reason); } catch { /* an invalid code: the socket goes anyway */ try { ws.close(); } catch { /* closed */ } }
    }
    this.#state = 'ended';
    this.#emit('close', { code, reason, wasClean: true, reconnect: false, delay: null });
  }

  /** While waiting to reconnect, connect now. True if an attempt started. */
  reconnect() {
    if (this.#state !== 'closed' || this.#ws) return false;
    clearTimeout(this.#timer);
    this.#connect(false);
    return true;
  }

  // The URL of the next connection: resume when an epoch is known, else ask for `last`.
  #target() {
    const u = new URL(this.#url.href);
    for (const k of ['last', 'since', 'epoch']) u.searchParams.delete(k);
    if (this.#resumeFrom) {
      u.searchParams.set('since', String(this.#resumeFrom.since));
      u.searchParams.set('epoch', this.#resumeFrom.epoch);
    } else if (this.#last > 0) {
      u.searchParams.set('last', String(this.#last));
    }
    return u.href;
  }

  #connect(first) {
    this.#timer = 0;
    this.#welcomed = false;
    this.#resumeFrom = this.#epoch === null ? null : { epoch: this.#epoch, since: this.#lastSeq };
    const url = this.#target();
    let ws;
    try {
      ws = new this.#WebSocket(url, [PROTOCOL]);
    } catch (e) {
      if (first) throw e;
      this.#scheduleReconnect({ code: 1006, reason: String(e && e.message), wasClean: false });
      return;
    }
    ws.binaryType = 'arraybuffer';
    this.#ws = ws;
    this.#state = 'connecting';
    this.#stats.connects++;
    ws.onopen = () => {
      if (ws !== this.#ws) return;
      if (ws.protocol !== PROTOCOL) {
        // Plain frames would carry no seq to resume from: a failed attempt, like in a browser.
        ws.close();
        return;
      }
      this.#emit('open', { protocol: ws.protocol });
    };
    ws.onmessage = (ev) => {
      if (ws === this.#ws) this.#frame(ev.data);
    };
    ws.onclose = (ev) => {
      if (ws !== this.#ws) return;
      this.#ws = null;
      this.#scheduleReconnect(ev);
    };
    // Queued so that listeners added right after the constructor see it.
    const detail = { url, attempt: this.#attempt, resume: this.#resumeFrom };
    queueMicrotask(() => {
      if (ws === this.#ws) this.#emit('connecting', detail);
    });
  }

  #scheduleReconnect(ev) {
    const delay = backoffDelay(this.#attempt++, this.#minDelay, this.#maxDelay);
    this.#state = 'closed';
    this.#welcomed = false;
    this.#timer = setTimeout(() => this.#connect(false), delay);
    this.#emit('close', {
      code: ev.code, reason: ev.reason || '', wasClean: Boolean(ev.wasClean), reconnect: true, delay,
    });
  }

  #frame(data) {
    if (typeof data === 'string') {
      let m;
      try { m = JSON.parse(data); } catch { return; } // not a wsrelay.v1 frame: ignored
      if (!m || typeof m !== 'object') return;
      if (m.type === 'welcome') this.#onWelcome(m);
      else if (m.type === 'message' && typeof m.data === 'string') this.#deliver(m.seq, m.data, false);
      else if (m.type === 'join' || m.type === 'leave' || m.type === 'members') this.#presence(m);
      else if (m.type === 'reset') this.#onReset(m);
      else if (m.type === 'error' && typeof m.code === 'string') this.#emit('error', { code: m.code });
      // Any other type (later protocol versions add some) is ignored.
      return;
    }
    if (!(data instanceof ArrayBuffer) || data.byteLength < 8) return;
    const seq = new DataView(data).getBigUint64(0); // big-endian
    this.#deliver(seq > BigInt(Number.MAX_SAFE_INTEGER) ? -1 : Number(seq), data.slice(8), true);
  }

  #onWelcome(w) {
    if (this.#welcomed) return; // one welcome per connection
    if (typeof w.epoch !== 'string' || !Number.isSafeInteger(w.seq) || w.seq < 0) return;
    const replayed = Number.isSafeInteger(w.replayed) && w.replayed >= 0 ? w.replayed : 0;
    const from = this.#resumeFrom;
    let failure = null;
    if (from && w.epoch !== from.epoch) {
      failure = { reason: 'epoch', missed: null };
    } else if (from && (w.recovered !== true) && w.seq !== from.since) {
      // Same room, but what came after `since` is no longer all kept. (Nothing missed at all,
      // w.seq === since, is a success whatever the flag says.)
      // missed is unknown (null) when since was ahead of the room: a position saved elsewhere.
      failure = { reason: 'history', missed: w.seq > from.since ? w.seq - from.since : null };
    }
    if (!(from && w.epoch === from.epoch && w.recovered === true)) {
      // A fresh start in this epoch: what follows is the `replayed` messages up to w.seq, then live.
      this.#lastSeq = Math.max(0, w.seq - replayed);
    }
    this.#epoch = w.epoch;
    this.#member = typeof w.member === 'string' ? w.member : null;
    this.#members = Number.isSafeInteger(w.members) && w.members >= 0 ? w.members : null;
    this.#welcome = w;
    this.#welcomed = true;
    this.#attempt = 0;
    this.#state = 'open';
    const s = this.#stats;
    s.welcomes++;
    s.replayed += replayed;
    if (from) {
      s.resumes++;
      if (failure) s.recoveryFailed++;
      else s.recovered++;
    }
    this.#emit('welcome', { ...w, resumed: Boolean(from) });
    if (failure) {
      this.#emit('recovery-failed', {
        reason: failure.reason, epoch: w.epoch, previousEpoch: from.epoch, since: from.since,
        seq: w.seq, missed: failure.missed, welcome: w,
      });
    }
  }

  // Several nodes: messages were lost between the nodes and cannot be filled in (or the room
  // restarted with a new epoch); the room goes on after `seq` of `epoch`.
  #onReset(m) {
    if (!this.#welcomed || typeof m.epoch !== 'string' || !Number.isSafeInteger(m.seq) || m.seq < 0) return;
    const previousEpoch = this.#epoch;
    const since = this.#lastSeq;
    const missed = m.epoch === previousEpoch && m.seq > since ? m.seq - since : null;
    this.#epoch = m.epoch;
    this.#lastSeq = m.seq;
    this.#stats.resets++;
    this.#emit('recovery-failed', {
      reason: 'reset', epoch: m.epoch, previousEpoch, since, seq: m.seq, missed, welcome: this.#welcome,
    });
  }

  #deliver(seq, data, binary) {
    if (!this.#welcomed || !Number.isSafeInteger(seq) || seq < 1) return; // not a valid message
    if (seq <= this.#lastSeq) {
      this.#stats.duplicates++;
      return;
    }
    if (seq > this.#lastSeq + 1) this.#stats.gaps++;
    this.#lastSeq = seq;
    this.#stats.delivered++;
    this.#emit('message', { seq, data, binary, epoch: this.#epoch });
  }

  // A join, leave or members event: the count follows it, and the page hears of it.
  #presence(m) {
    if (!this.#welcomed) return; // the welcome comes first; anything before it is not ours
    let member = null;
    let user = null;
    if (m.type === 'members') {
      if (!Number.isSafeInteger(m.count) || m.count < 0) return;
      this.#members = m.count;
    } else {
      if (typeof m.member !== 'string') return;
      member = m.member;
      user = typeof m.user === 'string' ? m.user : null;
      if (this.#members !== null) this.#members = Math.max(0, this.#members + (m.type === 'join' ? 1 : -1));
    }
    this.#stats.presence++;
    const seq = Number.isSafeInteger(m.seq) && m.seq >= 0 ? m.seq : null;
    this.#emit('presence', { type: m.type, member, user, count: this.#members, seq });
  }

  #emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}

export default WsRelay;
