// One version rule for runtime.yml and manifests, and the clock-skew bound on manifests and removals.
import test from 'ava';
import { parseRuntimeYml } from '../src/runtime/runtime-yml.js';
import { isJobletSemver, versionProblem } from '../src/runtime/version-rule.js';
import { MAX_CLOCK_SKEW_MS } from '../src/store/clock.js';
import { buildManifest, generatePublisherKeys, loadPrivateKey, signManifest, verifySignedManifest } from '../src/store/manifest.js';
import { signRemoval, verifyRemoval } from '../src/protocol/removal.js';
import type { ChunkRef } from '../src/store/types.js';

const keys = generatePublisherKeys();
const priv = loadPrivateKey(keys.privatePem);

/** A signed manifest of name@version created at `createdAt`, as a publisher would send it, after a JSON round trip. */
function signedManifest(version: string, createdAt: Date): unknown {
  const chunks: ChunkRef[] = [{ id: 'sha256:' + 'a'.repeat(64), size: 1000, storedSize: 1000, codec: 'raw' }];
  const m = buildManifest({ name: 'rt', version }, { entries: { count: 1, size: 1000, sha256: 'c'.repeat(64), chunks }, content: { size: 0, chunks: [] } }, keys.publicKey, createdAt);
  return JSON.parse(JSON.stringify(signManifest(m, priv)));
}

const VERSIONS = [
  '1.0.0', '21.0.4', '1.10', '2', '1.0.0-rc.1+build.5', 'v1.2.3', '1_0', 'A.b',
  'latest', '1.0 beta', '.hidden', '+1', '-1', '..', '.', '', 'a/b', 'a\\b', '1\t2', 'é1', '9'.repeat(128), '9'.repeat(129),
];

test('runtime.yml parsing and manifest verification accept exactly the same versions', (t) => {
  for (const version of VERSIONS) {
    let ymlOk = true;
    try {
      parseRuntimeYml(`name: rt\nversion: ${JSON.stringify(version)}\n`);
    } catch {
      ymlOk = false;
    }
    let manifestOk = true;
    try {
      verifySignedManifest(signedManifest(version, new Date()), [keys.publicKey]);
    } catch {
      manifestOk = false;
    }
    t.is(ymlOk, manifestOk, `version ${JSON.stringify(version)}: runtime.yml ${ymlOk ? 'accepts' : 'refuses'} it, the manifest check ${manifestOk ? 'accepts' : 'refuses'} it`);
    t.is(ymlOk, versionProblem(version) === null, JSON.stringify(version));
  }
  // The cases the two rules used to disagree on, and the one joblet could never address.
  for (const bad of ['1.0 beta', '.hidden', 'é1', 'latest']) t.not(versionProblem(bad), null, bad);
  t.throws(() => parseRuntimeYml('name: rt\nversion: latest\n'), { message: /invalid version "latest" in runtime\.yml: must not be 'latest'/ });
  t.throws(() => verifySignedManifest(signedManifest('latest', new Date()), [keys.publicKey]), { message: /runtime\.version "latest" is not a valid version/ });
});

test('joblet ranks only MAJOR.MINOR.PATCH versions', (t) => {
  for (const v of ['1.0.0', '21.0.4', '10.15.3']) t.true(isJobletSemver(v), v);
  for (const v of ['1.0', '2', 'v1.0.0', '1.0.0-beta', '1.0.0.0', '1..0']) t.false(isJobletSemver(v), v);
});

test('a manifest dated further ahead than the skew bound is refused with a message naming the skew', (t) => {
  const now = Date.now();
  const ahead = verifySignedManifest(signedManifest('1.0.0', new Date(now + MAX_CLOCK_SKEW_MS - 60_000)), [keys.publicKey]);
  t.is((ahead as { manifest: { runtime: { version: string } } }).manifest.runtime.version, '1.0.0', 'a few minutes ahead is ordinary drift');
  t.truthy(verifySignedManifest(signedManifest('1.0.0', new Date(now - 365 * 86_400_000)), [keys.publicKey]), 'the past is fine');
  const err = t.throws(() => verifySignedManifest(signedManifest('1.0.0', new Date(now + 2 * 3_600_000)), [keys.publicKey]));
  t.regex(err!.message, /^manifest sha256:[0-9a-f]{64} \(rt@1\.0\.0\) is dated \S+Z, 2 hours ahead of this host's clock \(at most 10 minutes is accepted\)/);
});

test('a removal dated further ahead than the skew bound is refused with a message naming the skew', (t) => {
  const now = Date.now();
  const ok = JSON.parse(JSON.stringify(signRemoval('rt', '1.0.0', priv, new Date(now + 5 * 60_000))));
  t.is(verifyRemoval(ok, [keys.publicKey]).removal.name, 'rt');
  const future = JSON.parse(JSON.stringify(signRemoval('rt', null, priv, new Date(now + 3 * 86_400_000))));
  t.throws(() => verifyRemoval(future, [keys.publicKey]), {
    message: /^removal of rt is dated \S+Z, 3 days ahead of this host's clock \(at most 10 minutes is accepted\)/,
  });
});
