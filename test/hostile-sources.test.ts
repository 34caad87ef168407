// Sources that cost nothing to misbehave would be asked again and again: a mute one and one that lies in `have`.
import test from 'ava';

import { DownloadScheduler, encodeBitfield } from '../src/agent/swarm/scheduler.js';
import type { ChunkRef } from '../src/store/types.js';
import { seeded } from './helpers/seeded.js';

function chunks(n: number): ChunkRef[] {
  return Array.from({ length: n }, (_, i) => ({ id: `sha256:${i.toString(16).padStart(64, '0')}`, size: 1000, storedSize: 1000, codec: 'raw' as const }));
}

function all(n: number): Uint8Array {
  return encodeBitfield(new Array<boolean>(n).fill(true));
}

/** Two holders of everything; `bad` looks nearer (lower RTT), so it is asked first. One request at a time. */
function twoSources() {
  const n = 10;
  const s = new DownloadScheduler(chunks(n), [], { maxInFlightPerPeer: 1, maxInFlightTotal: 1, busyBackoffMs: 500, endgameRemaining: 0, random: seeded(3) });
  s.setPeerHave('bad', all(n));
  s.setPeerHave('good', all(n));
  s.setPeerInfo('bad', { rttMs: 1 });
  s.setPeerInfo('good', { rttMs: 40 });
  return s;
}

test('a source that never answers is demoted: after a timeout the other holder gets the next requests', (t) => {
  const s = twoSources();
  const [first] = s.next(0);
  t.is(first!.peer, 'bad', 'the nearer source is tried first');
  s.failed('bad', first!.index, 30_000, 'timeout');
  // Long after its backoff, the mute source still ranks below the one that has not failed.
  const peers: string[] = [];
  for (let now = 40_000; peers.length < 5; now += 1000) {
    const [a] = s.next(now);
    peers.push(a!.peer);
    s.delivered(a!.peer, a!.index, 1000, 10);
  }
  t.deepEqual(peers, ['good', 'good', 'good', 'good', 'good']);
  t.is(s.stats().peers.find((p) => p.peer === 'bad')!.rateBps, 0);
});

test('a source that claims a chunk in have and answers miss backs off and is demoted', (t) => {
  const s = twoSources();
  const [first] = s.next(0);
  t.is(first!.peer, 'bad');
  s.failed('bad', first!.index, 10, 'miss');
  const [next] = s.next(20);
  t.is(next!.peer, 'good', 'not asked again at once');
  s.delivered('good', next!.index, 1000, 10);
  // After the backoff it is still ranked below the source that delivered.
  const [later] = s.next(5000);
  t.is(later!.peer, 'good');
  t.is(s.stats().peers.find((p) => p.peer === 'bad')!.rateBps, 0);
});

test('a demoted source recovers when it delivers', (t) => {
  const s = twoSources();
  const [first] = s.next(0);
  s.failed('bad', first!.index, 10, 'timeout');
  s.delivered('bad', 3, 1000, 1); // an answer to an older request arrives after all
  t.true(s.stats().peers.find((p) => p.peer === 'bad')!.rateBps! > 0);
});
