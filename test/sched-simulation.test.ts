// DownloadScheduler driving whole simulated downloads: failures, lies, a corrupt peer, churn, partial holders.
import test from 'ava';

import { DownloadScheduler, encodeBitfield, type Assignment, type SchedulerOptions } from '../src/agent/swarm/scheduler.js';
import type { ChunkRef } from '../src/store/types.js';
import { seeded } from './helpers/seeded.js';


type Outcome = 'ok' | 'busy' | 'miss' | 'timeout' | 'error' | 'corrupt';

interface SimPeer {
  /** What the peer really holds. */
  holds: boolean[];
  /** Bytes per ms of its upload link. */
  rate: number;
  rttMs: number;
  /** Probability that a request is answered busy / fails with an error / times out. */
  pBusy: number;
  pError: number;
  pTimeout: number;
  /** Answer this many chunks, then send a corrupt one. */
  corruptAfter?: number;
  linkFreeAt: number;
  answered: number;
}

interface Request {
  a: Assignment;
  sentAt: number;
  doneAt: number;
  outcome: Outcome;
  /** The scheduler no longer counts this request (cancelled, or its peer was removed or banned). */
  stale: boolean;
}

const TIMEOUT_MS = 200;

/** Lets a scenario take a peer away and bring it back, as a lost and re-established connection would. */
interface Churn {
  isLive(peer: string): boolean;
  remove(peer: string): void;
  restore(peer: string): void;
}

/**
 * Runs a download to the end while checking the scheduler's promises after every step: caps, never asking a
 * peer twice for the same chunk, never asking a banned peer or a peer that does not claim the chunk, at most
 * two requests per chunk, and nothing requested that is already held.
 */
function simulate(
  t: import('ava').ExecutionContext,
  opts: {
    chunks: ChunkRef[];
    peers: Record<string, SimPeer>;
    /** What the scheduler is told each peer holds (liars claim more than they have). */
    claims: Record<string, boolean[]>;
    scheduler: Partial<SchedulerOptions>;
    seed: number;
    /** Called before each step with the current time, to add churn. */
    onTick?: (now: number, s: DownloadScheduler, churn: Churn) => void;
  },
) {
  const rnd = seeded(opts.seed);
  const n = opts.chunks.length;
  const s = new DownloadScheduler(opts.chunks, [], { ...opts.scheduler, random: seeded(opts.seed + 1) });
  const cap = { perPeer: opts.scheduler.maxInFlightPerPeer ?? 4, total: opts.scheduler.maxInFlightTotal ?? 16 };
  const live = new Set(Object.keys(opts.peers));
  const banned = new Set<string>();
  for (const [peer, sim] of Object.entries(opts.peers)) {
    s.setPeerHave(peer, encodeBitfield(opts.claims[peer]!));
    s.setPeerInfo(peer, { rttMs: sim.rttMs });
  }

  const open = new Map<string, Request>(); // key peer/index: requests the scheduler counts
  const queue: Request[] = [];
  const firstCopies = new Array<number>(n).fill(0);
  const claimed = (peer: string, index: number) => opts.claims[peer]![index] === true;
  let now = 0;
  let maxInFlight = 0;
  let endgameDuplicates = 0;
  let lateDuplicates = 0;

  const issue = () => {
    for (const a of s.next(now)) {
      const key = `${a.peer}/${a.index}`;
      if (open.has(key)) t.fail(`${key} asked twice at once`);
      if (banned.has(a.peer)) t.fail(`banned ${a.peer} was asked for ${a.index}`);
      if (!live.has(a.peer)) t.fail(`removed ${a.peer} was asked for ${a.index}`);
      if (!claimed(a.peer, a.index)) t.fail(`${a.peer} does not claim ${a.index}`);
      if (firstCopies[a.index]! > 0) t.fail(`chunk ${a.index} was requested after it arrived`);
      const sim = opts.peers[a.peer]!;
      const roll = rnd();
      let outcome: Outcome;
      let doneAt: number;
      if (!sim.holds[a.index]) {
        outcome = 'miss';
        doneAt = now + sim.rttMs;
      } else if (roll < sim.pBusy) {
        outcome = 'busy';
        doneAt = now + sim.rttMs;
      } else if (roll < sim.pBusy + sim.pError) {
        outcome = 'error';
        doneAt = now + sim.rttMs;
      } else if (roll < sim.pBusy + sim.pError + sim.pTimeout) {
        outcome = 'timeout';
        doneAt = now + TIMEOUT_MS;
      } else {
        // The peer's upload link serves one chunk at a time.
        const start = Math.max(now + sim.rttMs / 2, sim.linkFreeAt);
        sim.linkFreeAt = start + opts.chunks[a.index]!.storedSize / sim.rate;
        doneAt = sim.linkFreeAt + sim.rttMs / 2;
        sim.answered++;
        outcome = sim.corruptAfter !== undefined && sim.answered > sim.corruptAfter ? 'corrupt' : 'ok';
      }
      const request: Request = { a, sentAt: now, doneAt, outcome, stale: false };
      open.set(key, request);
      queue.push(request);
    }
    queue.sort((x, y) => x.doneAt - y.doneAt);
    const perChunk = new Map<number, number>();
    const perPeer = new Map<string, number>();
    for (const r of open.values()) {
      perChunk.set(r.a.index, (perChunk.get(r.a.index) ?? 0) + 1);
      perPeer.set(r.a.peer, (perPeer.get(r.a.peer) ?? 0) + 1);
    }
    if (open.size !== s.inFlight()) t.fail(`scheduler counts ${s.inFlight()} in flight, ${open.size} are open`);
    if (open.size > cap.total) t.fail(`${open.size} requests in flight, cap ${cap.total}`);
    for (const [peer, count] of perPeer) if (count > cap.perPeer) t.fail(`${peer} has ${count} in flight`);
    for (const [index, count] of perChunk) {
      if (count > 2) t.fail(`chunk ${index} asked of ${count} peers`);
      if (count === 2) endgameDuplicates++;
    }
    maxInFlight = Math.max(maxInFlight, open.size);
  };

  /** The scheduler dropped these requests (peer removed or banned): their answers no longer count. */
  const markStale = (peer: string) => {
    for (const [key, r] of open) {
      if (r.a.peer === peer) {
        r.stale = true;
        open.delete(key);
      }
    }
  };

  const churn: Churn = {
    isLive: (peer) => live.has(peer),
    remove: (peer) => {
      live.delete(peer);
      s.removePeer(peer);
      markStale(peer);
    },
    restore: (peer) => {
      live.add(peer);
      s.setPeerHave(peer, encodeBitfield(opts.claims[peer]!));
      s.setPeerInfo(peer, { rttMs: opts.peers[peer]!.rttMs });
    },
  };
  const tick = () => opts.onTick?.(now, s, churn);

  /** The scheduler freed these duplicates when the chunk arrived elsewhere: their answers no longer count. */
  const cancelled = (index: number, cancel: Assignment[]) => {
    for (const c of cancel) {
      const dup = open.get(`${c.peer}/${c.index}`);
      if (dup === undefined || c.index !== index) t.fail(`asked to cancel ${c.peer}/${c.index}, which is not open`);
      else {
        dup.stale = true;
        open.delete(`${c.peer}/${c.index}`);
      }
    }
  };

  let steps = 0;
  issue();
  while (!s.isDone()) {
    if (++steps > 200_000) {
      t.fail('the download did not finish');
      break;
    }
    const request = queue.shift();
    if (request === undefined) {
      // Everyone is backing off: let time pass.
      now += 50;
      tick();
      issue();
      continue;
    }
    now = Math.max(now, request.doneAt);
    tick();
    const { peer, index } = request.a;
    const key = `${peer}/${index}`;
    if (request.stale) {
      // An answer the scheduler stopped waiting for. A good chunk is still a good chunk: report it.
      if (request.outcome === 'ok') {
        if (firstCopies[index] === 0) firstCopies[index] = 1;
        else lateDuplicates++;
        cancelled(index, s.delivered(peer, index, opts.chunks[index]!.storedSize, now - request.sentAt));
      }
    } else {
      open.delete(key);
      switch (request.outcome) {
        case 'ok': {
          if (firstCopies[index]! > 0) t.fail(`chunk ${index} arrived twice on live requests`);
          firstCopies[index] = 1;
          cancelled(index, s.delivered(peer, index, opts.chunks[index]!.storedSize, now - request.sentAt));
          break;
        }
        case 'corrupt':
          banned.add(peer);
          s.ban(peer);
          markStale(peer);
          break;
        case 'busy':
          s.busy(peer, index, now);
          break;
        case 'miss':
        case 'timeout':
        case 'error':
          s.failed(peer, index, now, request.outcome);
          break;
      }
    }
    issue();
  }
  return { s, now, firstCopies, maxInFlight, endgameDuplicates, lateDuplicates, banned };
}

function randomChunks(n: number, rnd: () => number): ChunkRef[] {
  return Array.from({ length: n }, (_, i) => {
    const size = 256 * 1024 + Math.floor(rnd() * 768 * 1024);
    return { id: `sha256:${i.toString(16).padStart(64, '0')}`, size, storedSize: size, codec: 'raw' as const };
  });
}

test('500 chunks from 5 flaky peers: every chunk arrives and is counted exactly once', (t) => {
  const n = 500;
  const rnd = seeded(42);
  const chunks = randomChunks(n, rnd);
  const all = new Array<boolean>(n).fill(true);
  const some = (p: number) => Array.from({ length: n }, () => rnd() < p);
  const peer = (p: Partial<SimPeer> & { holds: boolean[]; rate: number }): SimPeer => ({
    rttMs: 5,
    pBusy: 0.05,
    pError: 0.03,
    pTimeout: 0.01,
    linkFreeAt: 0,
    answered: 0,
    ...p,
  });
  const liarHolds = some(0.5);
  const peers: Record<string, SimPeer> = {
    publisher: peer({ holds: all, rate: 20_000, rttMs: 20, pBusy: 0.2 }),
    fastPartial: peer({ holds: some(0.6), rate: 100_000, rttMs: 2 }),
    slowPartial: peer({ holds: some(0.6), rate: 5_000, rttMs: 40 }),
    liar: peer({ holds: liarHolds, rate: 50_000 }),
    corrupt: peer({ holds: all, rate: 80_000, rttMs: 1, corruptAfter: 20 }),
  };
  const claims: Record<string, boolean[]> = Object.fromEntries(Object.entries(peers).map(([id, p]) => [id, [...p.holds]]));
  // The liar claims everything; it really has half.
  claims.liar = [...all];

  let flapped = false;
  const result = simulate(t, {
    chunks,
    peers,
    claims,
    scheduler: { maxInFlightPerPeer: 4, maxInFlightTotal: 12, endgameRemaining: 8, busyBackoffMs: 100 },
    seed: 7,
    onTick: (now, s, churn) => {
      // The fast partial holder drops off for a while and comes back.
      if (!flapped && now > 500 && churn.isLive('fastPartial')) churn.remove('fastPartial');
      if (!flapped && now > 2000 && !churn.isLive('fastPartial')) {
        flapped = true;
        churn.restore('fastPartial');
      }
      // The slow partial holder keeps downloading too, and announces what it gains.
      if (now > 100 && rnd() < 0.05) {
        const gained = Math.floor(rnd() * n);
        if (!peers.slowPartial!.holds[gained]) {
          peers.slowPartial!.holds[gained] = true;
          claims.slowPartial![gained] = true;
          if (churn.isLive('slowPartial')) s.peerHas('slowPartial', gained);
        }
      }
    },
  });

  const { s, firstCopies } = result;
  t.true(s.isDone());
  t.is(s.missing(), 0);
  t.is(s.inFlight(), 0);
  t.true(flapped);
  t.true(firstCopies.every((c) => c === 1));
  const stats = s.stats();
  t.is(stats.have, n);
  t.is(stats.bytesHave, stats.bytesTotal);
  t.is(stats.bytesTotal, chunks.reduce((sum, c) => sum + c.size, 0));
  t.is(
    stats.peers.reduce((sum, p) => sum + p.delivered, 0),
    n,
    'the per-peer delivered counts add up to exactly one per chunk',
  );
  t.deepEqual([...result.banned], ['corrupt']);
  const corrupt = stats.peers.find((p) => p.peer === 'corrupt')!;
  t.true(corrupt.banned);
  t.is(corrupt.inFlight, 0);
  t.is(result.maxInFlight, 12);
  t.true(result.endgameDuplicates > 0, 'the endgame ran');
  const served = Object.fromEntries(stats.peers.map((p) => [p.peer, p.delivered]));
  t.log(`served: ${JSON.stringify(served)}; finished at ${Math.round(result.now)} ms simulated;`,
    `late duplicates ${result.lateDuplicates}`);
  t.true(served.fastPartial! > served.slowPartial!, 'the fast holder served more than the slow one');
});

test('3000 chunks from 30 peers: scheduling stays cheap', (t) => {
  const n = 3000;
  const peerCount = 30;
  const rnd = seeded(9);
  const chunks = randomChunks(n, rnd);
  const s = new DownloadScheduler(chunks, [], { random: seeded(10) });
  for (let p = 0; p < peerCount; p++) {
    const holds = Array.from({ length: n }, () => p === 0 || rnd() < 0.5);
    s.setPeerHave(`p${p}`, encodeBitfield(holds));
    s.setPeerInfo(`p${p}`, { rttMs: 1 + rnd() * 50, zone: p % 3 === 0 ? 'a' : 'b' });
  }
  // Deliver in request order, one at a time, so next() runs once per chunk: the worst case for its cost.
  const started = performance.now();
  const fifo: Assignment[] = [...s.next(0)];
  let calls = 1;
  let now = 0;
  while (fifo.length > 0) {
    const a = fifo.shift()!;
    now += 1;
    s.delivered(a.peer, a.index, chunks[a.index]!.size, 1 + (Number(a.peer.slice(1)) % 7));
    fifo.push(...s.next(now));
    calls++;
  }
  const elapsed = performance.now() - started;
  t.true(s.isDone());
  t.is(s.stats().peers.reduce((sum, p) => sum + p.delivered, 0), n);
  t.log(`${calls} next() calls in ${elapsed.toFixed(0)} ms (${((elapsed / calls) * 1000).toFixed(0)} µs each)`);
  t.true(elapsed < 10_000, `scheduling ${n} chunks took ${elapsed.toFixed(0)} ms`);
});
