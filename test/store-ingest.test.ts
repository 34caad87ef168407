import test from 'ava';
import { execFile } from 'node:child_process';
import { createReadStream } from 'node:fs';
import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { ChunkStore } from '../src/store/chunk-store.js';
import { ingestTar } from '../src/store/ingest.js';
import { seededBytes, sha256Hex, tempDir, textBytes } from './store-helpers.js';

const run = promisify(execFile);

/** A ~30 MB tree: 40 random-content files of 100 KB - 1.4 MB plus some small text files. */
async function makeTree(root: string): Promise<void> {
  await mkdir(join(root, 'isolated', 'lib'), { recursive: true });
  await mkdir(join(root, 'isolated', 'etc'), { recursive: true });
  await writeFile(join(root, 'runtime.yml'), 'name: demo\nversion: 1.0.0\n');
  for (let i = 0; i < 40; i++) {
    const size = 100_000 + ((i * 337_511) % 1_300_000);
    await writeFile(join(root, 'isolated', 'lib', `lib${String(i).padStart(2, '0')}.so`), seededBytes(`tree-${i}`, size));
  }
  for (let i = 0; i < 20; i++) {
    await writeFile(join(root, 'isolated', 'etc', `conf${i}.txt`), textBytes(2000 + i * 100));
  }
}

/** GNU tar of a tree with fixed metadata, so that only content differences matter. */
async function tarTree(root: string, out: string): Promise<void> {
  await run('tar', ['--sort=name', '--mtime=@0', '--owner=0', '--group=0', '--numeric-owner', '-C', root, '-cf', out, '.']);
}

async function storeIn(t: Parameters<typeof tempDir>[0]): Promise<ChunkStore> {
  const store = new ChunkStore(join(await tempDir(t, 'ingest'), 'chunks'));
  await store.init();
  return store;
}

test('two tars that differ in one small file share all but a few chunks', async (t) => {
  const work = await tempDir(t, 'dedup');
  const tree = join(work, 'tree');
  await makeTree(tree);
  await tarTree(tree, join(work, 'v1.tar'));
  // v2: one small config file changes (same length, different bytes).
  const conf = join(tree, 'isolated', 'etc', 'conf7.txt');
  const text = await readFile(conf, 'latin1');
  await writeFile(conf, text.replace('line 3:', 'LINE 3:'), 'latin1');
  await tarTree(tree, join(work, 'v2.tar'));

  const store = await storeIn(t);
  const v1 = await ingestTar(createReadStream(join(work, 'v1.tar')), store);
  t.true(v1.size > 28_000_000, `v1 tar is ${v1.size} bytes`);
  t.is(v1.sha256, sha256Hex(await readFile(join(work, 'v1.tar'))));
  t.is(v1.createdIds.length, new Set(v1.chunks.map((c) => c.id)).size);

  const created: { id: string; storedSize: number }[] = [];
  const v2 = await ingestTar(createReadStream(join(work, 'v2.tar')), store, {
    onChunk: (ref, isNew) => {
      if (isNew) created.push(ref);
    },
  });
  t.not(v2.sha256, v1.sha256);
  const v1Ids = new Set(v1.chunks.map((c) => c.id));
  const onlyInV2 = v2.chunks.filter((c) => !v1Ids.has(c.id));
  t.true(onlyInV2.length >= 1 && onlyInV2.length <= 3, `${onlyInV2.length} of ${v2.chunks.length} chunks are new`);
  t.deepEqual(v2.createdIds, onlyInV2.map((c) => c.id));
  t.deepEqual(created.map((c) => c.id), v2.createdIds);
  const newBytes = onlyInV2.reduce((sum, c) => sum + c.storedSize, 0);
  t.log(`v2: ${v2.chunks.length} chunks, ${onlyInV2.length} new, ${newBytes} new stored bytes of ${v2.size}`);
  t.true(newBytes < 0.2 * v2.size, `new stored bytes ${newBytes} of ${v2.size}`);
});

test('a failing source removes the chunks the ingest created, and keeps pre-existing ones', async (t) => {
  const store = await storeIn(t);
  const shared = seededBytes('shared', 5_000_000);
  const earlier = await ingestTar([shared], store);
  async function* failing(): AsyncGenerator<Buffer> {
    yield shared;
    yield seededBytes('fresh', 9_000_000);
    throw new Error('source broke');
  }
  await t.throwsAsync(ingestTar(failing(), store), { message: 'source broke' });
  const left: string[] = [];
  for await (const id of store.list()) left.push(id);
  t.deepEqual(left.sort(), [...new Set(earlier.chunks.map((c) => c.id))].sort());
  const subdirs = await readdir(store.dir);
  for (const sub of subdirs) for (const name of await readdir(join(store.dir, sub))) t.notRegex(name, /\.tmp-/);
});
