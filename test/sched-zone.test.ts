// The cross-zone rule: far peers are used only when the host's zone holds nothing of the chunk and the
// policy (which host of the zone fetches which chunk) allows it.
import test from 'ava';
import { DownloadScheduler } from '../src/agent/swarm/scheduler.js';
import type { ChunkRef } from '../src/store/types.js';
import { seeded } from './helpers/seeded.js';

const chunks: ChunkRef[] = Array.from({ length: 4 }, (_, i) => ({
  id: `sha256:${String(i).padStart(64, '0')}`, size: 1000, storedSize: 1000, codec: 'raw',
}));
const ALL = new Uint8Array([0xf0]);

test('a chunk a near peer holds is never fetched across zones, even while the near peer is busy', (t) => {
  const s = new DownloadScheduler(chunks, [false, false, false, false], {
    latencyTargetMs: 0,
    localZone: 'A', maxInFlightPerPeer: 1, random: seeded(1),
    mayUseFarPeer: (_index, _now, near) => !near,
  });
  s.setPeerHave('near', new Uint8Array([0xc0])); // chunks 0 and 1
  s.setPeerInfo('near', { zone: 'A' });
  s.setPeerHave('far', ALL);
  s.setPeerInfo('far', { zone: 'B' });
  const first = s.next(0);
  const nearGot = first.filter((a) => a.peer === 'near').map((a) => a.index);
  const farGot = first.filter((a) => a.peer === 'far').map((a) => a.index);
  t.is(nearGot.length, 1, 'the near peer is now saturated');
  t.true([0, 1].includes(nearGot[0]!));
  t.is(farGot.length, 1);
  t.true([2, 3].includes(farGot[0]!), 'far only gets a chunk no near peer holds');
  t.deepEqual(s.next(1), [], 'the other near-held chunk waits for the near peer');
});

test('the policy decides which far chunks this host fetches; the rest wait for the zone', (t) => {
  const s = new DownloadScheduler(chunks, [false, false, false, false], {
    latencyTargetMs: 0,
    localZone: 'A', maxInFlightPerPeer: 4, random: seeded(2),
    mayUseFarPeer: (index) => index % 2 === 0, // this host is designated for even chunks
  });
  s.setPeerHave('far', ALL);
  s.setPeerInfo('far', { zone: 'B' });
  const got = s.next(0).map((a) => a.index).sort();
  t.deepEqual(got, [0, 2]);
  // A zone neighbour fetched chunk 1: it now comes from the neighbour.
  s.setPeerHave('near', new Uint8Array([0x40]));
  s.setPeerInfo('near', { zone: 'A' });
  t.deepEqual(s.next(1), [{ peer: 'near', index: 1 }]);
});

test('without a local zone every holder may serve', (t) => {
  let calls = 0;
  const s = new DownloadScheduler(chunks, [false, false, false, false], {
    latencyTargetMs: 0,
    maxInFlightPerPeer: 4, random: seeded(3), mayUseFarPeer: () => { calls++; return false; },
  });
  s.setPeerHave('other', ALL);
  s.setPeerInfo('other', { zone: 'B' });
  t.is(s.next(0).length, 4);
  t.is(calls, 0);
});
