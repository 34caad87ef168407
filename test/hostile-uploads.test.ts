// A fleet member that asks for chunks and never reads the answers must not starve everyone else of uploads.
import '../src/agent/polyfill.js';

import { randomBytes } from 'node:crypto';
import { join } from 'node:path';

import test from 'ava';

import { ChunkClient, registerChunkServer } from '../src/protocol/chunk-exchange.js';
import { ChunkStore } from '../src/store/chunk-store.js';
import { startEvilPeer } from './helpers/evil.js';
import { waitFor } from './helpers/agent.js';
import { newFleetKey, startNode, tempDir } from './p2p-helpers.js';

const MiB = 1024 * 1024;

test('a peer that requests chunks and never reads holds only its own share, is dropped at the deadline, and an honest peer is served meanwhile', async (t) => {
  const dir = await tempDir(t, 'hostile-uploads');
  const fleetKey = newFleetKey();
  const server = await startNode(t, dir, 'server', fleetKey);
  const honest = await startNode(t, dir, 'honest', fleetKey);
  const store = new ChunkStore(join(dir, 'chunks'));
  await store.init();
  // Incompressible 4 MiB chunks: far more than one muxer window, so an unread answer really blocks.
  const ids: string[] = [];
  for (let i = 0; i < 10; i++) ids.push((await store.put(randomBytes(4 * MiB))).ref.id);
  const cs = await registerChunkServer(server, store, { maxConcurrentUploads: 8, maxUploadsPerPeer: 4, uploadDeadlineMs: 3000 });
  t.teardown(() => cs.close());

  const evil = await startEvilPeer(dir, fleetKey, server.getMultiaddrs()[0]);
  t.teardown(() => evil.stop());
  // Every slot the server has and more: 8 requests on each of two streams.
  const streams = await evil.requestAndNeverRead(server.peerId, ids.slice(0, 8), 2);
  const evilId = evil.node.peerId.toString();
  await waitFor('the hoarder holds its uploads', async () => cs.stats().activeUploads >= 4, 30_000, 20);
  t.is(cs.stats().activeUploads, 4, 'the hoarder holds its own share and no more');
  t.true((cs.stats().perPeer.get(evilId)?.busy ?? 0) >= 1, 'its requests beyond the share were answered busy');

  // While the hoarder holds its share, an honest peer still gets every chunk it asks for, with no busy answer.
  await honest.dial(server.getMultiaddrs()[0]!);
  const client = new ChunkClient(honest, server.peerId, { maxInFlight: 4 });
  t.teardown(() => client.close());
  const got = await Promise.all(ids.slice(2, 6).map((id) => client.fetch(id)));
  t.deepEqual(got.map((c) => c.size), [4 * MiB, 4 * MiB, 4 * MiB, 4 * MiB]);
  t.is(client.stats().busy, 0);

  // The hoarder misses the deadline: its streams are reset, the drop is counted, its slots come back.
  // (Its second stream only ever got small `busy` answers, which left: that stream is harmless and stays.)
  await waitFor('the hoarder is dropped', async () => cs.stats().slowReaderDrops >= 1 && cs.stats().activeUploads === 0, 30_000, 50);
  t.is(cs.stats().perPeer.get(evilId)?.dropped, 1);
  t.is(cs.stats().perPeer.get(evilId)?.chunks, 0);
  await waitFor('the hoarder sees its stream reset', async () => streams[0]!.status !== 'open', 10_000, 50);
  // And the honest peer keeps being served on its long-lived stream.
  t.is((await client.fetch(ids[9]!)).size, 4 * MiB);
});
