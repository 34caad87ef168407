// The have protocol's `fetching` hints (src/protocol/have.ts): sent only to a subscriber that asked for them, so
// an agent of an older version, which would refuse the unknown message and drop the stream, never gets one.
import '../src/agent/polyfill.js';

import test from 'ava';

import { FrameReader, FrameWriter } from '../src/protocol/frames.js';
import { HAVE_PROTOCOL, serveHave, subscribeHave, type HaveProvider } from '../src/protocol/have.js';
import { encodeHaveBits } from '../src/protocol/messages.js';
import { connectedPair } from './p2p-helpers.js';

const MANIFEST = `sha256:${'ab'.repeat(32)}`;

/** A provider for one manifest of 8 chunks holding chunk 0; `stored` and `fetching` push news to every subscriber. */
function provider() {
  const onIndex = new Set<(i: number) => void>();
  const onFetching = new Set<(i: number) => void>();
  const asked: boolean[] = [];
  const fromPeers: string[] = [];
  const p: HaveProvider = {
    peerFetching: (peer, manifest, index) => fromPeers.push(`${peer} ${manifest === MANIFEST} ${index}`),
    subscribe: async (manifest, index, fetching) => {
      if (manifest !== MANIFEST) return null;
      asked.push(fetching !== undefined);
      onIndex.add(index);
      if (fetching) onFetching.add(fetching);
      return { bits: encodeHaveBits(8, [0]), unsubscribe: () => { onIndex.delete(index); if (fetching) onFetching.delete(fetching); } };
    },
  };
  return {
    p, asked, fromPeers,
    subscribers: () => onIndex.size,
    stored: (i: number) => onIndex.forEach((f) => f(i)),
    fetching: (i: number) => onFetching.forEach((f) => f(i)),
  };
}

async function until(cond: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 5000;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

test('a subscriber that asks for hints gets each fetching index after the bitfield, in order with have1', async (t) => {
  const { server, client } = await connectedPair(t, 'hints');
  const src = provider();
  await serveHave(server, src.p);
  const events: string[] = [];
  const sub = await subscribeHave(client, server.peerId, MANIFEST,
    (has, known) => events.push(`bits ${known} ${[0, 1].map((i) => has(i))}`),
    (i) => events.push(`have1 ${i}`),
    (i) => events.push(`fetching ${i}`));
  t.teardown(() => sub.close());
  await until(() => src.subscribers() === 1 && events.length === 1, 'the bitfield');
  src.fetching(3);
  src.stored(3);
  src.fetching(5);
  await until(() => events.length === 4, 'three pushes');
  t.deepEqual(src.asked, [true]);
  t.deepEqual(events, ['bits true true,false', 'fetching 3', 'have1 3', 'fetching 5']);
});

test('a subscriber that does not ask gets no hints, and an old-style sub is served as before', async (t) => {
  const { server, client } = await connectedPair(t, 'nohints');
  const src = provider();
  await serveHave(server, src.p);
  const events: string[] = [];
  const sub = await subscribeHave(client, server.peerId, MANIFEST, () => events.push('bits'), (i) => events.push(`have1 ${i}`));
  t.teardown(() => sub.close());
  await until(() => src.subscribers() === 1 && events.length === 1, 'the bitfield');
  t.deepEqual(src.asked, [false]);
  src.fetching(2);
  src.stored(4);
  await until(() => events.length === 2, 'the have1');
  t.deepEqual(events, ['bits', 'have1 4']);

  // What an agent of the previous version sends and reads: `sub` without the field, then only have/have1.
  const stream = await client.dialProtocol(server.peerId, HAVE_PROTOCOL);
  const reader = new FrameReader(stream, { maxHeaderBytes: 256 * 1024, maxPayloadBytes: 0 });
  await new FrameWriter(stream).write({ t: 'sub', manifest: MANIFEST });
  t.like((await reader.next())?.header, { t: 'have', manifest: MANIFEST });
  await until(() => src.subscribers() === 2, 'the second subscription');
  src.fetching(6);
  src.stored(7);
  t.deepEqual((await reader.next())?.header, { t: 'have1', manifest: MANIFEST, index: 7 });
  await stream.close();
});

test('a peer that sends hints nobody asked for has its have stream dropped', async (t) => {
  const { server, client } = await connectedPair(t, 'unasked');
  // A server that pushes `fetching` whatever the subscription said.
  await server.handle(HAVE_PROTOCOL, (stream) => {
    void (async () => {
      const reader = new FrameReader(stream, { maxHeaderBytes: 4096, maxPayloadBytes: 0 });
      const writer = new FrameWriter(stream);
      await reader.next();
      await writer.write({ t: 'have', manifest: MANIFEST, bits: encodeHaveBits(8, []) });
      await writer.write({ t: 'fetching', manifest: MANIFEST, index: 1 });
      await writer.write({ t: 'have1', manifest: MANIFEST, index: 2 });
    })().catch(() => {});
  });
  const seen: number[] = [];
  const sub = await subscribeHave(client, server.peerId, MANIFEST, () => {}, (i) => seen.push(i));
  await sub.ended;
  t.deepEqual(seen, [], 'nothing after the unasked hint is believed');
});

test("a downloader's own hints reach the peer it subscribed to; invalid ones and other manifests' are ignored", async (t) => {
  const { server, client } = await connectedPair(t, 'back');
  const src = provider();
  await serveHave(server, src.p);
  const sub = await subscribeHave(client, server.peerId, MANIFEST, () => {}, () => {}, () => {});
  t.teardown(() => sub.close());
  await until(() => src.subscribers() === 1, 'the subscription');
  sub.hint(4);
  // What a broken or hostile peer might send on the same stream: not believed, and the stream is kept.
  const raw = await client.dialProtocol(server.peerId, HAVE_PROTOCOL);
  const rawWriter = new FrameWriter(raw);
  await rawWriter.write({ t: 'sub', manifest: MANIFEST });
  await until(() => src.subscribers() === 2, 'the second subscription');
  await rawWriter.write({ t: 'fetching', manifest: `sha256:${'cd'.repeat(32)}`, index: 1 });
  await rawWriter.write({ t: 'fetching', manifest: MANIFEST, index: -1 });
  await rawWriter.write({ t: 'fetching', manifest: MANIFEST, index: 2, extra: true });
  await rawWriter.write({ t: 'fetching', manifest: MANIFEST, index: 6 });
  sub.hint(5);
  await until(() => src.fromPeers.length === 3, 'three hints');
  const me = client.peerId.toString();
  t.deepEqual(src.fromPeers.sort(), [`${me} true 4`, `${me} true 5`, `${me} true 6`]);
  await raw.close();
});
