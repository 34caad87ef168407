// The pure parts of the CI gate: how a rollout is counted, and what a host accepts as another's notes.
import test from 'ava';
import { rolloutOf } from '../src/agent/daemon/wait.js';
import { decodeNotes, encodeNotes, MAX_NOTE_CHARS, MAX_NOTES } from '../src/protocol/host-notes.js';
import type { FleetHostView } from '../src/agent/swarm/swarm.js';
import type { SignedManifest } from '../src/store/types.js';

const ID = `sha256:${'a'.repeat(64)}`;
const sm = {
  id: ID, signature: '',
  manifest: { runtime: { name: 'rt', version: '1.0.0', architectures: ['amd64'] }, createdAt: new Date().toISOString(), publisher: 'x' },
} as unknown as SignedManifest;

function host(peerId: string, over: Partial<FleetHostView> = {}): FleetHostView {
  return { peerId, self: false, arch: 'amd64', zone: null, seenAt: Date.now(), installed: [], failed: new Map(), skipped: new Map(), ...over };
}

test('a rollout counts the hosts that should install it, and gives each other host its reason', (t) => {
  const now = Date.now();
  const hosts = [
    host('self', { self: true, installed: [ID] }),
    host('arm', { arch: 'arm64' }),
    host('build', { skipped: new Map([[ID, 'published on this host with --no-install']]) }),
    host('broken', { failed: new Map([[ID, 'no space left on device']]) }),
    host('quiet', { seenAt: now - 42_000 }),
    host('done', { installed: [ID] }),
  ];
  const all = rolloutOf(sm, hosts, {}, now);
  t.is(all.expected, 4);
  t.is(all.installed, 2);
  t.is(all.target, 4);
  t.false(all.done);
  const why = Object.fromEntries(all.hosts.map((h) => [h.peerId, h.reason]));
  t.regex(why.arm!, /^skipped by architecture: requires amd64, the host is arm64/);
  t.is(why.build, 'skipped: published on this host with --no-install');
  t.is(why.broken, 'failed: no space left on device');
  t.is(why.quiet, 'not installed yet; not seen for 42 s');
  t.is(why.done, null);
  t.true(rolloutOf(sm, hosts, { percent: 50 }, now).done);
  t.is(rolloutOf(sm, hosts, { percent: 60 }, now).target, 3);
  const five = [...hosts, host('sixth')];
  t.is(rolloutOf(sm, five, {}, now).expected, 5);
  t.is(rolloutOf(sm, five, { percent: 60 }, now).target, 3, '60 % of 5 is 3, not 4');
  t.true(rolloutOf(sm, hosts, { hosts: 2 }, now).done);
  t.false(rolloutOf(sm, hosts, { hosts: 3 }, now).done);
});

test('notes from a peer are bounded and checked; garbage is dropped', (t) => {
  const long = 'x'.repeat(10_000);
  const sent = encodeNotes(Array.from({ length: MAX_NOTES + 50 }, (_, i) => [`sha256:${i.toString(16).padStart(64, '0')}`, long] as [string, string]));
  t.is(sent.length, MAX_NOTES);
  t.true(sent.every((n) => n.text.length <= MAX_NOTE_CHARS));
  const got = decodeNotes([
    { id: ID, text: 'line one\nline\u001b[2J two\u0007' },
    { id: 'not-an-id', text: 'x' },
    { id: ID.replace('a', 'b'), text: 42 },
    null, 'string', [1, 2],
    { id: `sha256:${'c'.repeat(64)}`, text: long },
  ]);
  t.deepEqual([...got.keys()], [ID, `sha256:${'c'.repeat(64)}`]);
  t.is(got.get(ID), 'line one line [2J two', 'no escape or bell character survives');
  t.true(got.get(`sha256:${'c'.repeat(64)}`)!.length <= MAX_NOTE_CHARS);
  t.is(decodeNotes({ not: 'a list' }).size, 0);
  t.is(decodeNotes(undefined).size, 0);
});
