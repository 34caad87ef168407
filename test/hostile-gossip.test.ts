// Announcements a fleet member would never send are rejected by the topic validator and go no further;
// what a peer can make the swarm hold or do because of gossip and anti-entropy is bounded.
import '../src/agent/polyfill.js';

import { generateKeyPairSync } from 'node:crypto';

import test from 'ava';

import { ANNOUNCE_TOPIC } from '../src/agent/swarm/swarm.js';
import { announcementValidator, parseAnnouncement, AnnouncementError, MAX_GOSSIP_BYTES, MAX_INSTALLED_IDS } from '../src/agent/swarm/announcements.js';
import { localProgress, wireProgress } from '../src/agent/swarm/fleet-state.js';
import { FleetMap } from '../src/agent/swarm/fleet-map.js';
import { BoundedSet, WorkQueue } from '../src/agent/swarm/limits.js';
import { catalogDigest } from '../src/protocol/catalog.js';
import { publicKeyOf } from '../src/store/manifest.js';
import { printable } from '../src/agent/cli/format.js';
import { cli, exists, tmpDir, waitFor } from './helpers/agent.js';
import path from 'node:path';
import { newFleetKey, startNode, tempDir } from './p2p-helpers.js';

const ID = `sha256:${'ab'.repeat(32)}`;
const trustedKey = publicKeyOf(generateKeyPairSync('ed25519').privateKey);
const otherKey = publicKeyOf(generateKeyPairSync('ed25519').privateKey);
const json = (v: unknown) => Buffer.from(JSON.stringify(v));
/** The gossipsub implementation has getMeshPeers; the service interface type does not expose it. */
const meshOf = (n: { services: { pubsub: unknown } }) =>
  (n.services.pubsub as { getMeshPeers(topic: string): string[] }).getMeshPeers(ANNOUNCE_TOPIC);

test('announcements are parsed strictly: shape, size, trust, and a host speaks only for itself', (t) => {
  const host = '12D3KooWhost';
  const ok = parseAnnouncement(json({ t: 'state', host, installed: [ID], zone: 'rack-1', arch: 'amd64' }), host, [trustedKey]);
  t.is(ok.t, 'state');
  // The largest state message a host sends (every list at its bound, the longest texts) passes, skip reasons
  // (the CI gate's "why") included; a peer's extra notes beyond the bound are dropped.
  const idN = (i: number) => `sha256:${i.toString(16).padStart(64, '0')}`;
  const many = Array.from({ length: 300 }, (_, i) => idN(i));
  const full = wireProgress(localProgress(many.map((id) => ({ id, bytesHave: 1, bytesTotal: 3 })),
    many.map((id) => [id, { error: 'e'.repeat(1000) }] as [string, { error: string }]),
    many.map((id) => [id, 'r'.repeat(1000)] as [string, string]), 'h'.repeat(64)));
  const biggest = parseAnnouncement(json({ t: 'state', host, installed: Array.from({ length: MAX_INSTALLED_IDS }, (_, i) => idN(i)), zone: null, arch: 'amd64', ...full }), host, [trustedKey]);
  t.true(biggest.t === 'state' && biggest.progress.skipReasons.size === 64 && biggest.progress.skipReasons.get(idN(0))!.length <= 300);
  const flood = json({ t: 'state', host, installed: [], zone: null, arch: 'amd64', skipped: [ID], skipReasons: many.map((id) => ({ id, text: 'x' })) });
  const parsed = parseAnnouncement(flood, host, [trustedKey]);
  t.true(parsed.t === 'state' && parsed.progress.skipReasons.size === 64);
  const bad: [unknown, RegExp][] = [
    [{ t: 'state', host: '12D3KooWother', installed: [], zone: null, arch: 'amd64' }, /signed by/],
    [{ t: 'state', host, installed: [], zone: '\u001b[31mred', arch: 'amd64' }, /invalid zone/],
    [{ t: 'state', host, installed: ['x'], zone: null, arch: 'amd64' }, /malformed/],
    [{ t: 'state', host, installed: Array(513).fill(ID), zone: null, arch: 'amd64' }, /malformed/],
    [{ t: 'published', id: ID, name: 'rt', version: '1.0.0', publisher: otherKey }, /untrusted publisher/],
    [{ t: 'published', id: ID, name: 'rt', version: '1.0.0' }, /malformed/],
    [{ t: 'removed', removal: { removal: { name: 'rt', version: null, createdAt: new Date().toISOString(), publisher: otherKey }, signature: 'AA==' } }, /not a trusted publisher/],
    [{ t: 'hello' }, /unknown kind/],
  ];
  for (const [msg, why] of bad) t.throws(() => parseAnnouncement(json(msg), host, [trustedKey]), { instanceOf: Error, message: why });
  t.throws(() => parseAnnouncement(Buffer.from('{not json'), host, [trustedKey]), { instanceOf: AnnouncementError });
  t.throws(() => parseAnnouncement(Buffer.alloc(MAX_GOSSIP_BYTES + 1, 32), host, [trustedKey]), { message: /exceeds/ });
});

test('the fleet map is bounded, expires hosts not heard from, keeps connected ones, and says what is news', (t) => {
  const map = new FleetMap(1000, 3);
  t.true(map.set('a', { installed: [ID], zone: 'z', arch: 'amd64' }, 0));
  t.false(map.set('a', { installed: [ID], zone: 'z', arch: 'amd64' }, 10), 'the same state again is no news');
  map.set('b', { installed: [], zone: '\u001b]0;evil\u0007', arch: 'amd64;rm' }, 20);
  t.is(map.get('b')!.zone, null, 'a zone that is not a label is dropped');
  t.is(map.get('b')!.arch, 'unknown');
  map.set('c', { installed: [], zone: null, arch: 'arm64' }, 30);
  map.set('d', { installed: [], zone: null, arch: 'arm64' }, 40);
  t.is(map.size, 3, 'the stalest host made room');
  t.is(map.get('a'), undefined);
  map.touch('b', 1500); // connected: alive whatever it last announced
  t.is(map.expire(1200), 2);
  t.deepEqual([...map.entries()].map(([h]) => h), ['b']);
});

test('the work queue runs a bounded number of jobs, dedupes by key, and drops beyond its backlog', async (t) => {
  const q = new WorkQueue(2, 3);
  let running = 0;
  let peak = 0;
  const release: (() => void)[] = [];
  const job = () => async () => {
    running++;
    peak = Math.max(peak, running);
    await new Promise<void>((r) => release.push(r));
    running--;
  };
  const accepted = Array.from({ length: 10 }, (_, i) => q.push(`k${i}`, job()));
  t.deepEqual(accepted, [true, true, true, true, true, false, false, false, false, false]);
  t.false(q.push('k2', job()), 'a key already queued is not queued twice');
  t.is(q.dropped, 5);
  while (release.length > 0 || q.active > 0) {
    release.shift()?.();
    await new Promise((r) => setTimeout(r, 1));
  }
  t.is(peak, 2);
  const seen = new BoundedSet<string>(2);
  ['x', 'y', 'z'].forEach((v) => seen.add(v));
  t.false(seen.has('x'));
  t.is(seen.size, 2);
});

test('the catalog digest depends on what the catalogs hold, not on their order', (t) => {
  const r = { removal: { name: 'rt', version: null, createdAt: '2026-01-01T00:00:00.000Z', publisher: trustedKey }, signature: 'c2ln' };
  const a = catalogDigest([ID, `sha256:${'cd'.repeat(32)}`], [r]);
  t.is(a, catalogDigest([`sha256:${'cd'.repeat(32)}`, ID], [r]));
  t.not(a, catalogDigest([ID], [r]));
  t.not(a, catalogDigest([ID, `sha256:${'cd'.repeat(32)}`], []));
  t.is(printable('rack\u001b[2J\u0007'), 'rack?[2J?');
});

test('a relaying agent rejects bad announcements: they never reach the peers behind it; a good one does', async (t) => {
  const dir = await tempDir(t, 'hostile-gossip');
  const fleetKey = newFleetKey();
  const evil = await startNode(t, dir, 'evil', fleetKey);
  const relay = await startNode(t, dir, 'relay', fleetKey);
  const far = await startNode(t, dir, 'far', fleetKey);
  const rejected = { count: 0 };
  relay.services.pubsub.topicValidators.set(ANNOUNCE_TOPIC, announcementValidator(() => [trustedKey], rejected));
  for (const n of [evil, relay, far]) n.services.pubsub.subscribe(ANNOUNCE_TOPIC);
  const received: string[] = [];
  far.services.pubsub.addEventListener('gossipsub:message', (e) => received.push(Buffer.from(e.detail.msg.data).toString()));
  // evil -- relay -- far: evil's messages reach far only through the relay.
  await evil.dial(relay.getMultiaddrs()[0]!);
  await far.dial(relay.getMultiaddrs()[0]!);
  await waitFor('the relay meshes with far', async () => meshOf(relay).includes(far.peerId.toString()), 60_000, 100);
  await waitFor('evil knows the relay subscribes', async () => evil.services.pubsub.getSubscribers(ANNOUNCE_TOPIC).some((p) => p.equals(relay.peerId)), 60_000, 100);

  const evilId = evil.peerId.toString();
  const bad = [
    '{"t":"state"',
    JSON.stringify({ t: 'state', host: far.peerId.toString(), installed: [], zone: null, arch: 'amd64' }),
    JSON.stringify({ t: 'state', host: evilId, installed: [], zone: '\u001b[31mred', arch: 'amd64' }),
    JSON.stringify({ t: 'published', id: ID, name: 'rt', version: '6.6.6', publisher: otherKey }),
  ];
  for (const m of bad) await evil.services.pubsub.publish(ANNOUNCE_TOPIC, Buffer.from(m));
  const good = JSON.stringify({ t: 'state', host: evilId, installed: [ID], zone: 'rack-1', arch: 'amd64' });
  await evil.services.pubsub.publish(ANNOUNCE_TOPIC, Buffer.from(good));
  await waitFor('the good announcement reaches far', async () => received.includes(good), 60_000, 100);
  t.deepEqual(received, [good], 'nothing the validator rejected was relayed');
  t.is(rejected.count, bad.length);
});

test('a zone label with terminal escapes is refused at init, naming --zone, and nothing is written', async (t) => {
  const dir = await tmpDir(t);
  const r = await cli(['init', '--dir', path.join(dir, 'etc'), '--data-dir', path.join(dir, 'data'), '--runtimes-dir', path.join(dir, 'rt'),
    '--socket', path.join(dir, 's.sock'), '--no-mdns', '--zone', 'rack\u001b]0;pwned\u0007']);
  t.is(r.code, 2);
  t.regex(r.stderr, /--zone "rack\?\]0;pwned\?" is not a zone label/);
  t.false(r.stderr.includes('\u001b'), 'the escape is not echoed to the terminal');
  t.false(await exists(path.join(dir, 'etc', 'config.yml')));
});
