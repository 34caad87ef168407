// DownloadScheduler policies one by one: rarest first, holder choice, caps, busy backoff, ban, endgame, bitfields.
// Tests of other policies pin the per-peer cap (latencyTargetMs: 0); the window has its own test.
import test from 'ava';

import { DownloadScheduler, decodeBitfield, encodeBitfield, type Assignment } from '../src/agent/swarm/scheduler.js';
import { decodeHaveBits, encodeHaveBits } from '../src/protocol/messages.js';
import type { ChunkRef } from '../src/store/types.js';
import { seeded } from './helpers/seeded.js';


function chunks(n: number, size = 1000): ChunkRef[] {
  return Array.from({ length: n }, (_, i) => ({
    id: `sha256:${i.toString(16).padStart(64, '0')}`,
    size,
    storedSize: size,
    codec: 'raw' as const,
  }));
}

/** A bitfield holding exactly the given chunk indexes. */
function holding(n: number, indexes: Iterable<number>): Uint8Array {
  const have = new Array<boolean>(n).fill(false);
  for (const i of indexes) have[i] = true;
  return encodeBitfield(have);
}

function range(from: number, to: number): number[] {
  return Array.from({ length: to - from }, (_, i) => from + i);
}

/** Requests per peer, keys sorted so comparisons do not depend on the order of assignment. */
function countByPeer(assignments: Assignment[]): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const a of [...assignments].sort((x, y) => x.peer.localeCompare(y.peer))) counts[a.peer] = (counts[a.peer] ?? 0) + 1;
  return counts;
}

test('bitfields are MSB-first and match the protocol encoding', (t) => {
  const have = [true, false, false, false, false, false, false, true, false, true];
  const bits = encodeBitfield(have);
  t.deepEqual([...bits], [0b1000_0001, 0b0100_0000]);
  t.deepEqual(decodeBitfield(bits, have.length), have);
  t.is(Buffer.from(bits).toString('base64'), encodeHaveBits(have.length, [0, 7, 9]));
  const fromWire = decodeHaveBits(encodeHaveBits(10, [0, 7, 9]));
  t.deepEqual(range(0, 10).map(fromWire), have);
  t.deepEqual(decodeBitfield(new Uint8Array([0xff]), 12), [...new Array(8).fill(true), false, false, false, false]);
});

test('rarest first: the chunks held by the fewest peers are requested first; unheld chunks are skipped', (t) => {
  const n = 21;
  const s = new DownloadScheduler(chunks(n), [], {
    latencyTargetMs: 0,
    maxInFlightPerPeer: 10,
    maxInFlightTotal: 6,
    random: seeded(1),
  });
  // Chunks 0-9 are held by 3 peers, 10-14 by 2, 15-19 by 1, and chunk 20 by nobody.
  s.setPeerHave('a', holding(n, range(0, 20)));
  s.setPeerHave('b', holding(n, range(0, 15)));
  s.setPeerHave('c', holding(n, range(0, 10)));
  const first = s.next(0);
  t.is(first.length, 6);
  t.deepEqual(
    first.slice(0, 5).map((a) => a.index).sort((x, y) => x - y),
    range(15, 20),
    'the five single-holder chunks come first',
  );
  t.true(first.slice(0, 5).every((a) => a.peer === 'a'));
  t.true(first[5]!.index >= 10 && first[5]!.index < 15, 'then a chunk held by two peers');

  // Play it to the end: chunk 20 is never requested, everything else is.
  const requested = new Set(first.map((a) => a.index));
  let now = 1;
  let batch = first;
  while (batch.length > 0 || s.inFlight() > 0) {
    for (const a of batch) s.delivered(a.peer, a.index, 1000, 1);
    batch = s.next(now++);
    for (const a of batch) requested.add(a.index);
  }
  t.false(requested.has(20));
  t.is(s.missing(), 1);
  t.false(s.isDone());
  s.peerHas('c', 20);
  const last = s.next(now);
  t.deepEqual(last, [{ peer: 'c', index: 20 }]);
  s.delivered('c', 20, 1000, 1);
  t.true(s.isDone());
});

test('equally rare chunks are picked in a random order, so hosts spread over different chunks', (t) => {
  const firstPicks = [1, 2, 3, 4].map((seed) => {
    const s = new DownloadScheduler(chunks(200), [], { latencyTargetMs: 0, maxInFlightTotal: 4, random: seeded(seed) });
    s.setPeerHave('publisher', holding(200, range(0, 200)));
    return s.next(0).map((a) => a.index);
  });
  const distinct = new Set(firstPicks.flat());
  t.true(distinct.size >= 14, `hosts chose overlapping chunks: ${JSON.stringify(firstPicks)}`);
});

test('chunks already held locally are never requested; a predicate works as localHave', (t) => {
  const n = 40;
  const s = new DownloadScheduler(chunks(n), (i) => i % 2 === 0, { latencyTargetMs: 0, maxInFlightPerPeer: 40, maxInFlightTotal: 40 });
  s.setPeerHave('a', holding(n, range(0, n)));
  t.is(s.missing(), 20);
  const batch = s.next(0);
  t.is(batch.length, 20);
  t.true(batch.every((a) => a.index % 2 === 1));
  t.like(s.stats(), { total: 40, have: 20, bytesHave: 20_000, bytesTotal: 40_000 });
  // wants(): what a `have` of chunk i could change (the download wakes only for those).
  t.false(s.wants(0));
  t.true(s.wants(1));
  s.delivered('a', 1, 1000, 5);
  t.false(s.wants(1));
  t.false(s.wants(n), 'out of range');
});

test('a peer that delivered faster gets the work', (t) => {
  const n = 50;
  const s = new DownloadScheduler(chunks(n), [], { latencyTargetMs: 0, maxInFlightPerPeer: 4, maxInFlightTotal: 2, random: seeded(2) });
  s.setPeerHave('fast', holding(n, range(0, n)));
  s.setPeerHave('slow', holding(n, range(0, n)));
  const first = s.next(0);
  t.deepEqual(Object.keys(countByPeer(first)), ['fast', 'slow'], 'untried equal peers share the first work');
  for (const a of first) s.delivered(a.peer, a.index, 1_000_000, a.peer === 'fast' ? 10 : 200);
  const second = s.next(1);
  t.deepEqual(countByPeer(second), { fast: 2 });
  const stats = s.stats().peers;
  t.is(stats.find((p) => p.peer === 'fast')!.rateBps, 100_000_000);
  t.is(stats.find((p) => p.peer === 'slow')!.rateBps, 5_000_000);
});

test('over a whole download a fast peer serves far more than a slow one', (t) => {
  const n = 300;
  const s = new DownloadScheduler(chunks(n), [], { latencyTargetMs: 0, maxInFlightPerPeer: 4, maxInFlightTotal: 4, random: seeded(3) });
  const msPerChunk: Record<string, number> = { fast: 2, slow: 20 };
  for (const peer of Object.keys(msPerChunk)) s.setPeerHave(peer, holding(n, range(0, n)));
  // Each peer serves its requests one after another, like a real upload link.
  const queue: Array<{ at: number; a: Assignment }> = [];
  const linkFreeAt: Record<string, number> = { fast: 0, slow: 0 };
  let now = 0;
  const issue = () => {
    for (const a of s.next(now)) {
      const start = Math.max(now, linkFreeAt[a.peer]!);
      linkFreeAt[a.peer] = start + msPerChunk[a.peer]!;
      queue.push({ at: linkFreeAt[a.peer]!, a });
    }
    queue.sort((x, y) => x.at - y.at);
  };
  issue();
  while (queue.length > 0) {
    const { at, a } = queue.shift()!;
    now = at;
    s.delivered(a.peer, a.index, 1000, msPerChunk[a.peer]!);
    issue();
  }
  t.true(s.isDone());
  const served = new Map(s.stats().peers.map((p) => [p.peer, p.delivered]));
  t.is(served.get('fast')! + served.get('slow')!, n);
  t.true(served.get('fast')! > 5 * served.get('slow')!, `fast ${served.get('fast')}, slow ${served.get('slow')}`);
});

test('a holder in the local zone is preferred, even over a faster one elsewhere', (t) => {
  const n = 20;
  const s = new DownloadScheduler(chunks(n), [], {
    latencyTargetMs: 0,
    maxInFlightPerPeer: 3,
    maxInFlightTotal: 5,
    localZone: 'rack-1',
    random: seeded(4),
  });
  for (const peer of ['far', 'near', 'unknown']) s.setPeerHave(peer, holding(n, range(0, n)));
  s.setPeerInfo('far', { zone: 'rack-2', rttMs: 1 });
  s.setPeerInfo('near', { zone: 'rack-1', rttMs: 30 });
  s.setPeerInfo('unknown', { rttMs: 1 });
  // 'far' has proven much faster than 'near'.
  s.peerHas('far', 0);
  s.delivered('far', 0, 1_000_000, 1);
  s.delivered('near', 1, 1_000_000, 100);
  const batch = s.next(0);
  // 'near' fills its 3 slots first; the zone-less peer ranks before the known-far one.
  t.deepEqual(countByPeer(batch), { near: 3, unknown: 2 });
  t.deepEqual(batch.slice(0, 3).map((a) => a.peer), ['near', 'near', 'near']);
});

test('lower RTT breaks ties between peers of equal rate', (t) => {
  const n = 20;
  const s = new DownloadScheduler(chunks(n), [], { latencyTargetMs: 0, maxInFlightPerPeer: 4, maxInFlightTotal: 3, random: seeded(5) });
  for (const peer of ['a', 'b', 'c']) s.setPeerHave(peer, holding(n, range(0, n)));
  s.setPeerInfo('a', { rttMs: 40 });
  s.setPeerInfo('b', { rttMs: 2 });
  s.setPeerInfo('c', { rttMs: 9 });
  t.deepEqual(countByPeer(s.next(0)), { b: 3 });

  // Once all three have delivered at the same rate, RTT still decides.
  const s2 = new DownloadScheduler(chunks(n), [], { latencyTargetMs: 0, maxInFlightPerPeer: 4, maxInFlightTotal: 3, random: seeded(5) });
  for (const [i, peer] of ['a', 'b', 'c'].entries()) {
    s2.setPeerHave(peer, holding(n, range(0, n)));
    s2.delivered(peer, i, 50_000, 5);
  }
  s2.setPeerInfo('a', { rttMs: 40 });
  s2.setPeerInfo('b', { rttMs: 9 });
  s2.setPeerInfo('c', { rttMs: 2 });
  t.deepEqual(countByPeer(s2.next(0)), { c: 3 });
});

test('equal peers share the load', (t) => {
  const n = 100;
  const s = new DownloadScheduler(chunks(n), [], { latencyTargetMs: 0, maxInFlightPerPeer: 20, maxInFlightTotal: 20, random: seeded(6) });
  for (const peer of ['a', 'b', 'c', 'd']) s.setPeerHave(peer, holding(n, range(0, n)));
  t.deepEqual(
    countByPeer(s.next(0)),
    { a: 5, b: 5, c: 5, d: 5 },
  );
});

test('per-peer and total caps hold, and a chunk is never asked of two peers outside the endgame', (t) => {
  const n = 100;
  const s = new DownloadScheduler(chunks(n), [], { latencyTargetMs: 0, maxInFlightPerPeer: 3, maxInFlightTotal: 10, random: seeded(7) });
  for (const peer of ['a', 'b', 'c', 'd', 'e', 'f']) s.setPeerHave(peer, holding(n, range(0, n)));
  const batch = s.next(0);
  t.is(batch.length, 10);
  t.is(s.inFlight(), 10);
  t.true(Object.values(countByPeer(batch)).every((c) => c <= 3));
  t.is(new Set(batch.map((a) => a.index)).size, 10);
  t.deepEqual(s.next(1), [], 'nothing more while the total cap is reached');
  s.delivered(batch[0]!.peer, batch[0]!.index, 1000, 1);
  const refill = s.next(2);
  t.is(refill.length, 1);
  t.false(batch.some((a) => a.index === refill[0]!.index));

  // A single holder never gets more than its per-peer cap, whatever the total cap.
  const single = new DownloadScheduler(chunks(n), [], { latencyTargetMs: 0, maxInFlightPerPeer: 3, maxInFlightTotal: 50 });
  single.setPeerHave('only', holding(n, range(0, n)));
  t.is(single.next(0).length, 3);
  t.deepEqual(single.next(0), []);
});

test('slow answers shrink the requests kept outstanding to that peer, down to one; quick ones grow them back', (t) => {
  const n = 200;
  const s = new DownloadScheduler(chunks(n), [], { maxInFlightPerPeer: 4, maxInFlightTotal: 50, latencyTargetMs: 1000, random: seeded(3) });
  s.setPeerHave('slow', holding(n, range(0, n)));
  s.setPeerHave('quick', holding(n, range(0, n)));
  const outstanding = new Map<string, number[]>([['slow', []], ['quick', []]]);
  let now = 0;
  const refill = () => {
    for (const a of s.next(++now)) outstanding.get(a.peer)!.push(a.index);
  };
  /** Answer the oldest `count` requests to `peer`, each `ms` after it was made, then let the scheduler refill. */
  const answer = (peer: string, ms: number, count = outstanding.get(peer)!.length) => {
    for (const index of outstanding.get(peer)!.splice(0, count)) s.delivered(peer, index, 1000, ms);
    refill();
    return outstanding.get(peer)!.length;
  };
  refill();
  t.is(outstanding.get('slow')!.length, 1, 'a peer starts at one request (slow start)');
  t.is(outstanding.get('quick')!.length, 1);
  t.is(answer('slow', 100), 2, 'a quick answer grows the window by one');
  t.is(answer('slow', 100), 4, 'two more quick answers: 2 -> 3 -> 4');
  t.is(answer('quick', 100), 2);
  t.is(answer('quick', 100), 4);
  t.is(answer('slow', 2500, 1), 3, 'one answer over the target halves the window to 2: the freed slot is not refilled');
  t.is(answer('slow', 3000, 1), 2, 'and again, to 1');
  t.is(answer('slow', 3000, 1), 1);
  t.is(answer('slow', 3000), 1, 'a peer that stays slow keeps exactly one request, so it is still used');
  t.is(s.stats().peers.find((p) => p.peer === 'slow')!.window, 1, 'stats report the window');
  t.is(answer('slow', 3000), 1);
  t.is(outstanding.get('quick')!.length, 4, 'the quick peer was never held back');
  t.is(answer('slow', 100), 2, 'an answer under half the target grows it by one');
  t.is(answer('slow', 100), 4, 'two more quick answers: 2 -> 3 -> 4');
  t.is(answer('slow', 100), 4, 'never past the per-peer cap');
  t.is(answer('slow', 700), 4, 'between half the target and the target nothing changes');
  t.is(answer('quick', 100), 4);
  // A timeout halves the window like a slow answer.
  const timedOut = outstanding.get('quick')!.shift()!;
  s.failed('quick', timedOut, ++now, 'timeout');
  t.is(s.next(now + 1000).filter((a) => a.peer === 'quick').length, 0, 'after a timeout: window 2, 3 still outstanding');

  // latencyTargetMs 0: the per-peer cap always applies in full.
  const fixed = new DownloadScheduler(chunks(n), [], { maxInFlightPerPeer: 4, maxInFlightTotal: 50, latencyTargetMs: 0 });
  fixed.setPeerHave('slow', holding(n, range(0, n)));
  for (const a of fixed.next(0)) fixed.delivered('slow', a.index, 1000, 60_000);
  t.is(fixed.next(1).length, 4);
});

test('a busy peer is not asked again until its backoff has passed', (t) => {
  const n = 10;
  const s = new DownloadScheduler(chunks(n), [], { latencyTargetMs: 0, maxInFlightPerPeer: 2, maxInFlightTotal: 10, busyBackoffMs: 500 });
  s.setPeerHave('a', holding(n, range(0, n)));
  s.setPeerHave('b', holding(n, [9]));
  const batch = s.next(0);
  t.deepEqual(countByPeer(batch), { a: 2, b: 1 });
  const fromA = batch.find((a) => a.peer === 'a')!;
  s.busy('a', fromA.index, 1000);
  t.is(s.inFlight(), 2, 'the busy request is no longer in flight');
  t.deepEqual(s.next(1000), []);
  t.deepEqual(s.next(1499), [], 'still backing off');
  const after = s.next(1500);
  t.deepEqual(countByPeer(after), { a: 1 });

  // An error backs off the same way; a miss does not, but clears the have bit.
  s.failed('a', after[0]!.index, 2000, 'error');
  t.deepEqual(s.next(2400), []);
  t.is(s.next(2500).length, 1);
  s.delivered('b', 9, 1000, 1);
  const bAgain = s.next(2500);
  t.deepEqual(bAgain, [], 'b holds nothing else');
});

test('a miss clears the have bit so the chunk goes to another holder', (t) => {
  const n = 1;
  const s = new DownloadScheduler(chunks(n), [], { latencyTargetMs: 0, random: seeded(8) });
  s.setPeerHave('liar', holding(n, [0]));
  s.setPeerHave('honest', holding(n, [0]));
  s.setPeerInfo('liar', { rttMs: 1 });
  s.setPeerInfo('honest', { rttMs: 50 });
  const first = s.next(0);
  // With one chunk missing and two holders the endgame asks both at once.
  t.deepEqual(first.map((a) => a.peer).sort(), ['honest', 'liar']);
  s.failed('liar', 0, 1, 'miss');
  t.deepEqual(s.next(1), [], 'the liar no longer counts as a holder');
  t.deepEqual(s.delivered('honest', 0, 1000, 1), []);
  t.true(s.isDone());
});

test('a banned peer gets nothing more and its chunks go to others; it stays banned after reconnecting', (t) => {
  const n = 2;
  const s = new DownloadScheduler(chunks(n), [], { latencyTargetMs: 0, maxInFlightPerPeer: 1, endgameRemaining: 0, random: seeded(9) });
  s.setPeerHave('bad', holding(n, [0, 1]));
  s.setPeerHave('good', holding(n, [0, 1]));
  s.setPeerInfo('bad', { rttMs: 1 });
  s.setPeerInfo('good', { rttMs: 50 });
  const first = s.next(0);
  t.is(first.length, 2);
  const badIndex = first.find((a) => a.peer === 'bad')!.index;
  const goodIndex = first.find((a) => a.peer === 'good')!.index;
  s.ban('bad');
  t.is(s.inFlight(), 1, "the banned peer's request was dropped at once");
  t.deepEqual(s.next(1), [], 'good is at its cap and bad is out');
  s.delivered('good', goodIndex, 1000, 1);
  t.deepEqual(s.next(2), [{ peer: 'good', index: badIndex }]);

  s.removePeer('bad');
  s.setPeerHave('bad', holding(n, [0, 1]));
  s.peerHas('bad', badIndex);
  s.failed('good', badIndex, 3, 'error');
  t.deepEqual(s.next(3), [], 'only the banned peer is free, and it gets nothing');
  t.true(s.stats().peers.find((p) => p.peer === 'bad')!.banned);
  t.is(s.next(600).length, 1);
});

test('a removed peer frees its slots and its chunks are reassigned', (t) => {
  const n = 6;
  const s = new DownloadScheduler(chunks(n), [], { latencyTargetMs: 0, maxInFlightPerPeer: 3, endgameRemaining: 0, random: seeded(10) });
  s.setPeerHave('a', holding(n, range(0, n)));
  s.setPeerHave('b', holding(n, range(0, n)));
  const first = s.next(0);
  t.is(first.length, 6);
  const fromA = first.filter((a) => a.peer === 'a').map((a) => a.index);
  s.removePeer('a');
  t.is(s.inFlight(), 3);
  t.like(s.stats().peers.find((p) => p.peer === 'a'), { connected: false, inFlight: 0 });
  for (const a of first.filter((x) => x.peer === 'b')) s.delivered('b', a.index, 1000, 1);
  const second = s.next(1);
  t.deepEqual(second.map((a) => a.index).sort(), fromA.sort());
  t.true(second.every((a) => a.peer === 'b'));
  // A late answer from the removed peer still counts once, and cancels b's request for it.
  t.deepEqual(s.delivered('a', fromA[0]!, 1000, 1), [{ peer: 'b', index: fromA[0]! }]);
  t.is(s.inFlight(), 2);
});

test('endgame: the last chunks are asked of a second holder, and delivery names the duplicate to cancel', (t) => {
  const n = 20;
  const s = new DownloadScheduler(chunks(n), [], {
    latencyTargetMs: 0,
    maxInFlightPerPeer: 8,
    maxInFlightTotal: 16,
    endgameRemaining: 4,
    random: seeded(11),
  });
  for (const peer of ['a', 'b', 'c']) s.setPeerHave(peer, holding(n, range(0, n)));
  const first = s.next(0);
  t.is(first.length, 16);
  t.is(new Set(first.map((a) => a.index)).size, 16, 'no duplicates while many chunks remain');
  const byIndex = new Map(first.map((a) => [a.index, a.peer]));
  // Deliver 12 of them: 4 pending + 4 in flight remain, 8 missing > 4, so still no endgame.
  const delivered = first.slice(0, 12);
  for (const a of delivered) t.deepEqual(s.delivered(a.peer, a.index, 1000, 1), []);
  const refill = s.next(1);
  t.is(refill.length, 4);
  t.is(new Set([...refill, ...first.slice(12)].map((a) => a.index)).size, 8);
  for (const a of refill) byIndex.set(a.index, a.peer);
  // Deliver 4 more: 4 missing, all in flight: endgame duplicates each on another holder.
  for (const a of first.slice(12)) s.delivered(a.peer, a.index, 1000, 1);
  t.is(s.missing(), 4);
  const dups = s.next(2);
  t.is(dups.length, 4);
  for (const d of dups) {
    t.true(byIndex.has(d.index));
    t.not(d.peer, byIndex.get(d.index), 'the duplicate goes to a different holder');
  }
  t.deepEqual(s.next(3), [], 'at most two requests per chunk');
  t.is(s.inFlight(), 8);

  for (const d of dups) {
    const cancel = s.delivered(d.peer, d.index, 1000, 1);
    t.deepEqual(cancel, [{ peer: byIndex.get(d.index)!, index: d.index }]);
    // The cancelled request may still arrive; it must not count twice.
    t.deepEqual(s.delivered(byIndex.get(d.index)!, d.index, 1000, 1), []);
  }
  t.true(s.isDone());
  t.is(s.inFlight(), 0);
  const served = s.stats().peers.reduce((sum, p) => sum + p.delivered, 0);
  t.is(served, n, 'each chunk counted once');
  t.like(s.stats(), { have: n, bytesHave: n * 1000, bytesTotal: n * 1000 });
});

test('no endgame while a missing chunk is still waiting for a free holder', (t) => {
  const n = 3;
  const s = new DownloadScheduler(chunks(n), [], { latencyTargetMs: 0, maxInFlightPerPeer: 1, maxInFlightTotal: 16, random: seeded(12) });
  s.setPeerHave('a', holding(n, range(0, n)));
  s.setPeerHave('b', holding(n, range(0, n)));
  const first = s.next(0);
  t.is(first.length, 2);
  t.is(new Set(first.map((a) => a.index)).size, 2, 'the third chunk waits; nobody is asked twice');
});

test('a chunk another peer is fetching ranks as one holder more, until that peer holds it or the hint expires', (t) => {
  // random () => 0 always draws the first chunk of the rarest bucket, in index order here: so without hints
  // chunk 0 goes first, and a chunk goes later only because it ranks as less rare.
  const mk = (n: number, opts: { fetchHintMs?: number } = {}) => {
    const s = new DownloadScheduler(chunks(n), [], { latencyTargetMs: 0, maxInFlightTotal: 1, random: () => 0, ...opts });
    s.setPeerHave('pub', holding(n, range(0, n)));
    return s;
  };
  const first = (s: DownloadScheduler, now: number) => s.next(now)[0]!.index;

  const live = mk(2, { fetchHintMs: 5000 });
  live.peerFetching('b', 0, 0);
  t.is(live.holders(0), 1, 'a hint is not a holder');
  t.is(first(live, 4999), 1, 'chunk 0, which b is fetching, waits while the hint lasts');
  const expired = mk(2, { fetchHintMs: 5000 });
  expired.peerFetching('b', 0, 0);
  t.is(first(expired, 5000), 0, 'an expired hint counts no more');

  // b's have1 of the chunk replaces its hint: chunk 0 then has two holders, as chunk 1 has.
  const held = mk(3);
  held.setPeerHave('c', holding(3, [1]));
  held.peerFetching('b', 0, 0);
  t.is(first(held, 1), 2, 'the chunk only the publisher holds, and nobody is fetching, goes first');
  held.delivered('pub', 2, 1000, 10);
  held.peerHas('b', 0);
  t.is(first(held, 2), 0, 'chunk 0 ranks as held twice, not three times');

  const gone = mk(2);
  gone.peerFetching('gone', 0, 0);
  gone.removePeer('gone');
  t.is(first(gone, 1), 0, "a removed peer's hints are dropped");
  const bad = mk(2);
  bad.peerFetching('bad', 0, 0);
  bad.ban('bad');
  bad.peerFetching('bad', 0, 0);
  t.is(first(bad, 1), 0, "a banned peer's hints are dropped, and no new ones are taken");
  const off = mk(2, { fetchHintMs: 0 });
  off.peerFetching('b', 0, 0);
  t.is(first(off, 1), 0, 'fetchHintMs 0 ignores hints');

  // One peer counts for at most 32 chunks at once: hints for all 64 leave chunks 32 - 63 the rarest.
  const flood = mk(64);
  for (let i = 0; i < 64; i++) flood.peerFetching('flood', i, 0);
  const picks: number[] = [];
  for (let k = 0; k < 32; k++) {
    const index = first(flood, k + 1);
    picks.push(index);
    flood.delivered('pub', index, 1000, 10);
  }
  t.true(picks.every((i) => i >= 32), `the chunks past the limit went first: ${picks.join(' ')}`);
});

test('options are validated', (t) => {
  t.throws(() => new DownloadScheduler(chunks(1), [], { maxInFlightPerPeer: 0 }), {
    message: /maxInFlightPerPeer must be an integer >= 1/,
  });
  t.throws(() => new DownloadScheduler(chunks(1), [], { busyBackoffMs: -1 }), { message: /busyBackoffMs/ });
  t.throws(() => new DownloadScheduler(chunks(1), [], { latencyTargetMs: Number.NaN }), { message: /latencyTargetMs must be a number >= 0/ });
  t.throws(() => new DownloadScheduler(chunks(1), [], { fetchHintMs: -1 }), { message: /fetchHintMs must be a number >= 0/ });
  const s = new DownloadScheduler(chunks(2), []);
  t.throws(() => s.peerHas('a', 2), { instanceOf: RangeError, message: /chunk index 2 is outside 0\.\.1/ });
});

test('the first-needed chunks (the entry list) are asked for first and alone, rarest first, one at a time from a sole holder', (t) => {
  // The publisher holds all 10 chunks, another host only chunk 7, so rarest first alone would never start with
  // chunks 0 - 5; the install needs chunks 0 - 5 first (its entry list).
  const firstPicks = new Set<number>();
  for (const seed of [1, 2, 3, 4, 5, 6, 7, 8]) {
    const s = new DownloadScheduler(chunks(10), [], { latencyTargetMs: 0, maxInFlightTotal: 8, maxInFlightPerPeer: 8, random: seeded(seed), firstNeeded: () => ({ from: 0, to: 6 }) });
    s.setPeerHave('publisher', holding(10, range(0, 10)));
    s.setPeerHave('peer', holding(10, [7]));
    const first = s.next(0);
    t.is(first.length, 1, `seed ${seed}: one chunk of the list from its sole holder, and nothing else: ${JSON.stringify(first)}`);
    t.true(first[0]!.index < 6);
    firstPicks.add(first[0]!.index);
    t.deepEqual(s.next(0), [], `seed ${seed}: nothing more while it is on its way`);
    // Two other chunks of the list reach the other host: two holders each, so they may come at once, from either.
    const spread = range(0, 6).filter((i) => i !== first[0]!.index).slice(0, 2);
    for (const i of spread) s.peerHas('peer', i);
    t.deepEqual(s.next(1).map((a) => a.index).sort(), spread, `seed ${seed}: the list's chunks with two holders`);
    for (const a of [first[0]!.index, ...spread]) s.delivered(a === first[0]!.index ? 'publisher' : 'peer', a, 1000, 1);
    const rest: number[] = [];
    for (let round = 0; round < 3 && rest.length < 3; round++) {
      const got = s.next(2 + round);
      t.is(got.length, 1, `seed ${seed}: the rest of the list one at a time (the publisher alone holds it)`);
      rest.push(got[0]!.index);
      s.delivered('publisher', got[0]!.index, 1000, 1);
    }
    t.deepEqual([first[0]!.index, ...spread, ...rest].sort(), range(0, 6), `seed ${seed}: the whole list`);
    t.deepEqual([...new Set(s.next(10).map((a) => a.index))].sort(), [6, 7, 8, 9], `seed ${seed}: the list is in: the content`);
  }
  t.true(firstPicks.size >= 3, `hosts starting together ask for different chunks of the list first: ${[...firstPicks]}`);
  // The list's only holder is busy (backing off): content from the other peer goes ahead meanwhile.
  const busy = new DownloadScheduler(chunks(10), [], { latencyTargetMs: 0, maxInFlightTotal: 4, random: seeded(1), busyBackoffMs: 500, firstNeeded: () => ({ from: 0, to: 1 }) });
  busy.setPeerHave('publisher', holding(10, [0]));
  busy.setPeerHave('peer', holding(10, range(1, 10)));
  t.deepEqual(busy.next(0).filter((a) => a.peer === 'publisher').map((a) => a.index), [0]);
  t.deepEqual(busy.next(0), [], 'nothing more while chunk 0 is on its way');
  busy.busy('publisher', 0, 0);
  const meanwhile = busy.next(1);
  t.true(meanwhile.length > 0 && meanwhile.every((a) => a.peer === 'peer' && a.index > 0), `content while the publisher backs off: ${JSON.stringify(meanwhile)}`);
  // Nothing first-needed: rarest first.
  const s = new DownloadScheduler(chunks(10), [], { latencyTargetMs: 0, maxInFlightTotal: 1, random: seeded(1), firstNeeded: () => undefined });
  s.setPeerHave('publisher', holding(10, range(0, 10)));
  s.setPeerHave('peer', holding(10, [7]));
  t.notDeepEqual(s.next(0).map((a) => a.index), [7], 'chunk 7 has two holders: not the rarest');
});
