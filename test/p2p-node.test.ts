import '../src/agent/polyfill.js';

import { readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

import test from 'ava';

import {
  createP2PNode,
  fleetKeyFromFile,
  generateFleetKey,
  loadOrCreatePeerKey,
} from '../src/agent/swarm/p2p-node.js';
import { newFleetKey, startNode, tempDir } from './p2p-helpers.js';

test('the peer key is created with mode 0600 and gives the same PeerId across restarts', async (t) => {
  const dir = await tempDir(t, 'p2p-key');
  const keyPath = join(dir, 'nested', 'peer.key');
  const fleetKey = newFleetKey();
  const opts = { peerKeyPath: keyPath, fleetKey, listen: ['/ip4/127.0.0.1/tcp/0'], bootstrap: [], mdns: false };

  const first = await createP2PNode(opts);
  const firstId = first.peerId.toString();
  await first.stop();
  t.is((await stat(keyPath)).mode & 0o777, 0o600);
  const bytesAfterFirst = await readFile(keyPath);

  const second = await createP2PNode(opts);
  t.teardown(() => second.stop());
  t.is(second.peerId.toString(), firstId);
  t.deepEqual(await readFile(keyPath), bytesAfterFirst);
  t.is((await loadOrCreatePeerKey(keyPath)).type, 'Ed25519');
});

test('a peer key file that is not a key is refused with the path in the message', async (t) => {
  const dir = await tempDir(t, 'p2p-badkey');
  const keyPath = join(dir, 'peer.key');
  await writeFile(keyPath, 'not a key');
  const err = await t.throwsAsync(loadOrCreatePeerKey(keyPath));
  t.true(err!.message.includes(keyPath));
});

test('fleet key files: 64 hex chars are read, anything else is refused naming the file', async (t) => {
  const dir = await tempDir(t, 'p2p-fleet');
  const good = join(dir, 'fleet.key');
  const hex = generateFleetKey();
  t.regex(hex, /^[0-9a-f]{64}$/);
  await writeFile(good, `${hex}\n`);
  t.deepEqual(await fleetKeyFromFile(good), Buffer.from(hex, 'hex'));

  for (const [name, content] of [['short', 'abcd'], ['nothex', 'z'.repeat(64)], ['long', 'a'.repeat(66)]]) {
    const path = join(dir, name!);
    await writeFile(path, content!);
    const err = await t.throwsAsync(fleetKeyFromFile(path));
    t.regex(err!.message, /must hold exactly 64 hex characters/);
    t.true(err!.message.includes(path));
  }
  const missing = await t.throwsAsync(fleetKeyFromFile(join(dir, 'absent')));
  t.regex(missing!.message, /cannot read fleet key file/);
});

test('two nodes with the same fleet key connect and ping each other', async (t) => {
  const dir = await tempDir(t, 'p2p-ping');
  const fleetKey = newFleetKey();
  const a = await startNode(t, dir, 'a', fleetKey);
  const b = await startNode(t, dir, 'b', fleetKey);

  const rtt = await b.services.ping.ping(a.getMultiaddrs()[0]!);
  t.true(rtt >= 0);
  t.true(a.getConnections(b.peerId).length > 0);
  t.true(b.getConnections(a.peerId).length > 0);
});

test('a node with another fleet key cannot connect, and neither side keeps a connection', async (t) => {
  const dir = await tempDir(t, 'p2p-stranger');
  const member = await startNode(t, dir, 'member', newFleetKey());
  const stranger = await startNode(t, dir, 'stranger', newFleetKey());

  await t.throwsAsync(stranger.dial(member.getMultiaddrs()[0]!));
  // Give the listener time to notice the failed handshake before looking.
  await new Promise((resolve) => setTimeout(resolve, 300));
  t.is(stranger.getConnections().length, 0);
  t.is(member.getConnections().length, 0);
  await t.throwsAsync(stranger.services.ping.ping(member.getMultiaddrs()[0]!));
});
