import test from 'ava';
import { createHash, generateKeyPairSync } from 'node:crypto';
import {
  buildManifest,
  canonicalJson,
  generatePublisherKeys,
  loadPrivateKey,
  manifestId,
  parsePublicKey,
  publicKeyOf,
  signManifest,
  verifySignedManifest,
} from '../src/store/manifest.js';
import type { ChunkRef, Manifest, SignedManifest } from '../src/store/types.js';

const chunks: ChunkRef[] = [
  { id: 'sha256:' + 'a'.repeat(64), size: 1_000_000, storedSize: 400_000, codec: 'deflate' },
  { id: 'sha256:' + 'b'.repeat(64), size: 300_000, storedSize: 300_000, codec: 'raw' },
];
const tree = {
  entries: { count: 3, size: 300_000, sha256: 'c'.repeat(64), chunks: [chunks[1]!] },
  content: { size: 1_000_000, chunks: [chunks[0]!] },
};

function makeSigned(keys = generatePublisherKeys()): { sm: SignedManifest; keys: ReturnType<typeof generatePublisherKeys> } {
  const m = buildManifest(
    { name: 'openjdk-21', version: '21.0.4', language: 'java', architectures: ['amd64'] },
    tree,
    keys.publicKey,
    new Date('2025-01-02T03:04:05.000Z'),
  );
  return { sm: signManifest(m, loadPrivateKey(keys.privatePem)), keys };
}

/** A deep copy, as a manifest arrives from the wire. */
function wire<T>(value: T): T {
  return JSON.parse(JSON.stringify(value)) as T;
}

test('canonical JSON sorts keys at every depth, drops undefined and has no whitespace', (t) => {
  const a = canonicalJson({ b: 1, a: { z: [3, { y: 'x', c: null }], m: undefined }, c: 'é' });
  const b = canonicalJson({ c: 'é', a: { z: [3, { c: null, y: 'x' }] }, b: 1 });
  t.true(a.equals(b));
  t.is(a.toString(), '{"a":{"z":[3,{"c":null,"y":"x"}]},"b":1,"c":"é"}');
  t.throws(() => canonicalJson({ x: Number.NaN }), { message: /\$\.x.*not a finite number/ });
  t.throws(() => canonicalJson({ x: [1, Infinity] }), { message: /not a finite number/ });
  t.throws(() => canonicalJson({ when: new Date() }), { message: /plain objects/ });
  t.throws(() => canonicalJson([undefined]), { message: /undefined inside an array/ });
});

test('manifest ids are stable under key order and change with content', (t) => {
  const { sm } = makeSigned();
  const shuffled = { ...wire(sm.manifest), runtime: { version: '21.0.4', architectures: ['amd64'], language: 'java', name: 'openjdk-21' } } as Manifest;
  t.is(manifestId(shuffled), sm.id);
  t.is(manifestId(wire(sm.manifest)), sm.id);
  t.is(sm.id, 'sha256:' + createHash('sha256').update(canonicalJson(sm.manifest)).digest('hex'));
  t.not(manifestId({ ...sm.manifest, createdAt: '2025-01-02T03:04:06.000Z' }), sm.id);
});

test('buildManifest keeps only known runtime fields', (t) => {
  const keys = generatePublisherKeys();
  const meta = { name: 'python-3.12', version: '3.12.1', extra: 'ignored' } as unknown as Parameters<typeof buildManifest>[0];
  const m = buildManifest(meta, tree, keys.publicKey);
  t.deepEqual(Object.keys(m.runtime).sort(), ['name', 'version']);
  t.regex(m.createdAt, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
});

test('keys: generated pair round-trips through PEM and the ed25519:<hex> form', (t) => {
  const keys = generatePublisherKeys();
  t.regex(keys.publicKey, /^ed25519:[0-9a-f]{64}$/);
  const priv = loadPrivateKey(keys.privatePem);
  t.is(publicKeyOf(priv), keys.publicKey);
  t.is(publicKeyOf(parsePublicKey(keys.publicKey)), keys.publicKey);
  t.throws(() => parsePublicKey('ssh-ed25519 AAAA'), { message: /is not of the form ed25519:<64 hex digits>/ });
  t.throws(() => parsePublicKey('ed25519:abcd'), { message: /is not of the form/ });
  const rsa = generateKeyPairSync('rsa', { modulusLength: 1024 }).privateKey.export({ format: 'pem', type: 'pkcs8' }).toString();
  t.throws(() => loadPrivateKey(rsa), { message: /rsa key, but an ed25519 key is required/ });
  t.throws(() => loadPrivateKey('nonsense'), { message: /not a valid PEM private key/ });
});

test('a signed manifest verifies against a trusted key, also after a JSON round trip', (t) => {
  const { sm, keys } = makeSigned();
  t.deepEqual(verifySignedManifest(wire(sm), [keys.publicKey]), wire(sm));
  t.is(verifySignedManifest(sm, ['x', keys.publicKey.toUpperCase().replace('ED25519', 'ed25519')]).id, sm.id);
});

test('signing refuses a key that is not the manifest publisher', (t) => {
  const { sm } = makeSigned();
  const other = generatePublisherKeys();
  t.throws(() => signManifest(sm.manifest, loadPrivateKey(other.privatePem)), { message: /signing key is ed25519:/ });
});

test('a tampered manifest is refused: as a content/id mismatch, or as a bad signature if the id is recomputed', (t) => {
  const { sm, keys } = makeSigned();
  const tampered = wire(sm);
  tampered.manifest.content.chunks[0]!.id = 'sha256:' + 'd'.repeat(64);
  t.throws(() => verifySignedManifest(tampered, [keys.publicKey]), {
    message: `manifest ${sm.id} does not match its content, which hashes to ${manifestId(tampered.manifest)}`,
  });
  tampered.id = manifestId(tampered.manifest);
  t.throws(() => verifySignedManifest(tampered, [keys.publicKey]), {
    message: `manifest ${tampered.id} signature is invalid: it was not made by its publisher key ${keys.publicKey}`,
  });
});

test('a manifest signed by another key than its publisher is refused as an invalid signature', (t) => {
  const { sm, keys } = makeSigned();
  const mallory = generatePublisherKeys();
  const forged = wire(sm);
  forged.signature = signManifest({ ...sm.manifest, publisher: mallory.publicKey }, loadPrivateKey(mallory.privatePem)).signature;
  t.throws(() => verifySignedManifest(forged, [keys.publicKey, mallory.publicKey]), { message: /signature is invalid/ });
});

test('a correctly signed manifest from an untrusted publisher is refused', (t) => {
  const { sm, keys } = makeSigned();
  const other = generatePublisherKeys();
  t.throws(() => verifySignedManifest(sm, [other.publicKey]), {
    message: `manifest ${sm.id} is signed by ${keys.publicKey} which is not a trusted publisher`,
  });
  t.throws(() => verifySignedManifest(sm, []), { message: /not a trusted publisher/ });
});

test('malformed manifests are refused with a sentence naming the field', (t) => {
  const { sm, keys } = makeSigned();
  const trusted = [keys.publicKey];
  const cases: [string, (m: SignedManifest) => void, RegExp][] = [
    ['schema', (s) => ((s.manifest as { schema: number }).schema = 3), /has schema 3, but this agent understands schema 2 only: upgrade joblet-agent/],
    ['old schema', (s) => ((s.manifest as { schema: number }).schema = 1), /has schema 1 .*no longer installs: publish the package again/],
    ['name', (s) => (s.manifest.runtime.name = 'Bad_Name'), /runtime.name "Bad_Name" is not a valid runtime name/],
    ['version', (s) => (s.manifest.runtime.version = '../1'), /runtime.version "..\/1" is not a valid version/],
    ['chunk id', (s) => (s.manifest.content.chunks[0]!.id = 'sha256:xyz'), /content.chunks\[0\].id "sha256:xyz" is not of the form/],
    ['sizes', (s) => (s.manifest.content.size = 1), /content.chunks sizes add up to 1000000, but content.size is 1/],
    ['list sizes', (s) => (s.manifest.entries.size = 7), /entries.chunks sizes add up to 300000, but entries.size is 7/],
    ['list sha', (s) => (s.manifest.entries.sha256 = 'C'.repeat(64)), /entries.sha256 is not 64 lowercase hex digits/],
    ['no entries', (s) => (s.manifest.entries.count = 0), /entries.count is 0/],
    ['size type', (s) => ((s.manifest.entries.chunks[0] as unknown as { size: string }).size = '300000'), /entries.chunks\[0\].size is not a non-negative integer/],
    ['codec', (s) => ((s.manifest.content.chunks[0] as unknown as { codec: string }).codec = 'lz4'), /content.chunks\[0\].codec "lz4" is not one of raw, deflate, brotli, zstd/],
    ['stored', (s) => (s.manifest.entries.chunks[0]!.storedSize = 5), /storedSize differs from its size although its codec is raw/],
    ['extra', (s) => ((s.manifest as unknown as Record<string, unknown>).evil = 1), /has an unknown field "evil"/],
    ['missing', (s) => delete (s.manifest as unknown as Record<string, unknown>).content, /has no content field/],
    ['createdAt', (s) => (s.manifest.createdAt = 'yesterday'), /createdAt "yesterday" is not an ISO 8601 UTC time/],
    ['publisher', (s) => (s.manifest.publisher = 'rsa:1'), /publisher "rsa:1" is not of the form/],
    ['signature', (s) => (s.signature = 'AAAA'), /signature is not a base64 Ed25519 signature/],
  ];
  for (const [label, mutate, message] of cases) {
    const copy = wire(sm);
    mutate(copy);
    copy.id = label === 'signature' ? copy.id : manifestId(copy.manifest);
    const err = t.throws(() => verifySignedManifest(copy, trusted), undefined, label);
    t.regex(err?.message ?? '', message, label);
  }
  t.throws(() => verifySignedManifest('nope', trusted), { message: 'signed manifest is not an object' });
  t.throws(() => verifySignedManifest({ ...wire(sm), id: 'abc' }, trusted), { message: /signed manifest id "abc" is not of the form/ });
});
