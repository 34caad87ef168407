// Installing from the store: a chunk that went bad on disk after it was verified is reported as that chunk
// (so the swarm can drop and re-fetch it), and nothing is installed or left staged.
import test from 'ava';
import fs from 'node:fs/promises';
import path from 'node:path';
import { generateKeyPairSync } from 'node:crypto';
import { Store } from '../src/store/store.js';
import { TreeIngest } from '../src/store/ingest.js';
import { readPackage } from '../src/runtime/canonical.js';
import { buildManifest, publicKeyOf, signManifest } from '../src/store/manifest.js';
import { CorruptChunkError } from '../src/store/types.js';
import { RuntimesDir } from '../src/runtime/install.js';
import { DEFAULT_LIMITS } from '../src/runtime/types.js';
import { installManifest } from '../src/agent/install/install-manifest.js';
import { tmpDir, execFileP, comparable, listAll } from './helpers/agent.js';
import { makeRuntimeTree } from './helpers/fixtures.js';

async function setup(t: any) {
  const dir = await tmpDir(t);
  const src = path.join(dir, 'src');
  await makeRuntimeTree(src, { name: 'fromstore', version: '1.0.0', bulkBytes: 3 * 1024 * 1024 });
  const tarFile = path.join(dir, 'pkg.tar');
  await execFileP('tar', ['cf', tarFile, '-C', src, '.']);
  const store = await Store.open(path.join(dir, 'data'));
  t.teardown(() => store.close());
  const ingest = new TreeIngest(store.chunks);
  const info = await readPackage(tarFile, ingest);
  const tree = await ingest.finish();
  const { privateKey } = generateKeyPairSync('ed25519');
  const sm = signManifest(buildManifest(info.meta, tree, publicKeyOf(privateKey)), privateKey);
  const runtimes = new RuntimesDir(path.join(dir, 'runtimes'));
  await fs.mkdir(path.join(dir, 'runtimes'));
  return { dir, src, store, sm, runtimes, ctx: { store, runtimes, limits: DEFAULT_LIMITS } };
}

test('a runtime installs from verified chunks and equals its source tree', async (t) => {
  const { src, store, sm, ctx, runtimes } = await setup(t);
  const rec = await installManifest(ctx, sm);
  t.is(rec?.path, runtimes.pathFor('fromstore', '1.0.0'));
  t.deepEqual(await comparable(rec!.path), await comparable(src));
  t.is((await store.index.getInstall('fromstore', '1.0.0'))?.manifestId, sm.id);
});

test('a chunk corrupted on disk fails the install with that chunk named, and leaves nothing', async (t) => {
  const { dir, store, sm, ctx } = await setup(t);
  const victim = sm.manifest.content.chunks[1]!;
  const file = store.chunks.pathOf(victim.id);
  const bytes = await fs.readFile(file);
  bytes[bytes.length - 10] ^= 0xff;
  await fs.writeFile(file, bytes);
  const err = await t.throwsAsync(installManifest(ctx, sm), { instanceOf: CorruptChunkError });
  t.is(err?.chunkId, victim.id);
  t.is(await store.index.getInstall('fromstore', '1.0.0'), undefined);
  t.deepEqual((await listAll(path.join(dir, 'runtimes'))).filter((p) => !/^\.joblet-agent(\/(staging|trash))?$/.test(p)), []);
});
