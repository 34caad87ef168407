// The streaming install writes each content chunk into its files as it arrives, in whatever order: the tree it
// leaves must be the package's, to the mtime, mode, symlink and hardlink, for any delivery order; a list whose
// later entries replace earlier ones still installs (in order); a reassembly that does not match the per-file
// digests fails and leaves nothing.
import test, { type ExecutionContext } from 'ava';
import crypto from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { installManifest } from '../src/agent/install/install-manifest.js';
import { LiveChunkSource } from '../src/agent/install/chunk-source.js';
import { AnyOrderTreeWriter, planAnyOrder } from '../src/runtime/extract-any-order.js';
import type { TreeEntry } from '../src/runtime/tree-entry.js';
import { manifestChunks, signManifest } from '../src/store/manifest.js';
import type { ChunkRef, SignedManifest } from '../src/store/types.js';
import { execFileP, listAll, tmpDir, waitFor } from './helpers/agent.js';
import { seededBytes } from './helpers/fixtures.js';
import { deliver, leftovers, privateKey, publisherAndReceiver } from './helpers/streaming.js';

const T0 = 1_600_000_000;

/**
 * A tree with every shape the any-order writer sorts: hundreds of small files (many cut by chunk boundaries), a
 * read-only file spanning several chunks and hardlinked, a file just over the small-file limit, an empty file,
 * a symlink, a read-only directory with a file in it; every mtime distinct.
 */
async function makeTree(root: string): Promise<void> {
  await fs.mkdir(path.join(root, 'lib/s'), { recursive: true });
  await fs.mkdir(path.join(root, 'bin'));
  await fs.mkdir(path.join(root, 'ro'));
  await fs.writeFile(path.join(root, 'runtime.yml'), 'name: anyorder\nversion: 1.0.0\n');
  for (let i = 0; i < 400; i++) {
    const f = path.join(root, 'lib/s', `f${String(i).padStart(3, '0')}.txt`);
    await fs.writeFile(f, seededBytes(3000 + ((i * 7919) % 37000), `s${i}`), { mode: [0o644, 0o755, 0o600][i % 3] });
    await fs.utimes(f, T0 + i, T0 + i);
  }
  const big = path.join(root, 'lib/big.bin');
  await fs.writeFile(big, seededBytes(6 * 1024 * 1024 + 12345, 'big'));
  await fs.chmod(big, 0o444);
  await fs.utimes(big, T0 - 10, T0 - 10);
  await fs.link(big, path.join(root, 'lib/big-link'));
  const mid = path.join(root, 'lib/mid.bin');
  await fs.writeFile(mid, seededBytes(1024 * 1024 + 1, 'mid'), { mode: 0o640 });
  await fs.utimes(mid, T0 - 20, T0 - 20);
  await fs.writeFile(path.join(root, 'empty.txt'), '');
  await fs.utimes(path.join(root, 'empty.txt'), T0 - 30, T0 - 30);
  await fs.symlink('../lib/mid.bin', path.join(root, 'bin/mid'));
  await fs.lutimes(path.join(root, 'bin/mid'), T0 - 40, T0 - 40);
  await fs.writeFile(path.join(root, 'ro/inside.txt'), 'inside a read-only directory\n');
  await fs.chmod(path.join(root, 'ro'), 0o555);
  for (const [d, s] of [['ro', 50], ['bin', 60], ['lib/s', 70], ['lib', 80]] as const) await fs.utimes(path.join(root, d), T0 - s, T0 - s);
}

/** Everything an install must reproduce: kind, mode, mtime (s), bytes or target; hardlinks as shared inodes. */
async function picture(root: string): Promise<{ entries: Record<string, string>; links: string[][] }> {
  const entries: Record<string, string> = {};
  const inodes = new Map<number, string[]>();
  for (const rel of await listAll(root)) {
    const abs = path.join(root, rel);
    const st = await fs.lstat(abs);
    const mtime = Math.floor(st.mtimeMs / 1000);
    if (st.isSymbolicLink()) entries[rel] = `symlink ${await fs.readlink(abs)} ${mtime}`;
    else if (st.isDirectory()) entries[rel] = `dir ${(st.mode & 0o7777).toString(8)} ${mtime}`;
    else {
      const sha = crypto.createHash('sha256').update(await fs.readFile(abs)).digest('hex');
      entries[rel] = `file ${(st.mode & 0o7777).toString(8)} ${mtime} ${st.size} ${sha}`;
      if (st.nlink > 1) inodes.set(st.ino, [...(inodes.get(st.ino) ?? []), rel]);
    }
  }
  return { entries, links: [...inodes.values()].map((l) => l.sort()) };
}

/** A repeatable shuffle (mulberry32). */
function shuffled<T>(items: T[], seed: number): T[] {
  let s = seed >>> 0;
  const random = () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let x = Math.imul(s ^ (s >>> 15), 1 | s);
    x ^= x + Math.imul(x ^ (x >>> 7), 61 | x);
    return ((x ^ (x >>> 14)) >>> 0) / 2 ** 32;
  };
  const out = [...items];
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [out[i], out[j]] = [out[j]!, out[i]!];
  }
  return out;
}

async function setup(t: ExecutionContext, make: (src: string, pkg: string) => Promise<void>) {
  const dir = await tmpDir(t);
  const src = path.join(dir, 'src');
  const pkg = path.join(dir, 'pkg.tar');
  await make(src, pkg);
  return { dir, src, ...(await publisherAndReceiver(t, dir, pkg)) };
}

for (const [name, order] of [
  ['reversed', (refs: ChunkRef[]) => [...refs].reverse()],
  ['shuffled', (refs: ChunkRef[]) => shuffled(refs, 7)],
  ['shuffled differently', (refs: ChunkRef[]) => shuffled(refs, 12345)],
] as const) {
  test(`chunks delivered ${name} install the package's tree, to the mtime, mode and hardlink`, async (t) => {
    const { dir, src, pubStore, store, sm, ctx } = await setup(t, async (s, pkg) => {
      await makeTree(s);
      await execFileP('tar', ['cf', pkg, '--sort=name', '-C', s, '.']);
    });
    const refs = manifestChunks(sm.manifest);
    t.true(sm.manifest.content.chunks.length >= 8, `${sm.manifest.content.chunks.length} content chunks`);
    const feed = new LiveChunkSource(store.chunks, refs, () => false);
    const installing = installManifest(ctx, sm, { source: feed });
    for (const ref of order(refs)) await deliver(pubStore, store, feed, ref.id);
    const rec = await installing;
    t.truthy(rec);
    t.deepEqual(await picture(rec!.path), await picture(src));
    t.deepEqual((await picture(rec!.path)).links, [['lib/big-link', 'lib/big.bin']]);
    t.is(feed.readBack, 0, 'every arrival was written from memory');
    t.deepEqual((await leftovers(path.join(dir, 'runtimes'))).filter((p) => !p.startsWith('anyorder')), []);
  });
}

test('every chunk but the first content chunk is written before that one arrives', async (t) => {
  const { src, pubStore, store, sm, ctx } = await setup(t, async (s, pkg) => {
    await makeTree(s);
    await execFileP('tar', ['cf', pkg, '--sort=name', '-C', s, '.']);
  });
  const refs = manifestChunks(sm.manifest);
  const firstContent = refs[sm.manifest.entries.chunks.length]!;
  const feed = new LiveChunkSource(store.chunks, refs, () => false);
  const installing = installManifest(ctx, sm, { source: feed });
  for (const ref of refs) if (ref !== firstContent) await deliver(pubStore, store, feed, ref.id);
  // An install in content order could take nothing past the entry list here.
  await waitFor('the install to take every delivered chunk', async () => feed.delivered === refs.length - 1, 20_000, 20);
  t.is(feed.delivered, refs.length - 1);
  await deliver(pubStore, store, feed, firstContent.id);
  const rec = await installing;
  t.deepEqual(await picture(rec!.path), await picture(src));
});

test('a package whose later entry replaces an earlier file installs the later one, from chunks in any order', async (t) => {
  const { src, pubStore, store, sm, ctx } = await setup(t, async (s, pkg) => {
    await makeTree(s);
    const dup = path.join(s, 'lib/s/f010.txt');
    await execFileP('tar', ['cf', pkg, '--sort=name', '-C', s, '.']);
    // The same path again at the end of the archive, with other bytes: tar's rule is that the last one wins.
    await fs.writeFile(dup, seededBytes(5000, 'second version'));
    await fs.utimes(dup, T0 + 9999, T0 + 9999);
    await execFileP('tar', ['rf', pkg, '-C', s, './lib/s/f010.txt']);
  });
  t.is(sm.manifest.entries.count, (await listAll(src)).length + 1, 'the list holds the file twice');
  const refs = manifestChunks(sm.manifest);
  const feed = new LiveChunkSource(store.chunks, refs, () => false);
  const installing = installManifest(ctx, sm, { source: feed });
  for (const ref of shuffled(refs, 99)) await deliver(pubStore, store, feed, ref.id);
  const rec = await installing;
  t.deepEqual(await picture(rec!.path), await picture(src));
});

for (const [where, pick] of [
  // The first content chunks lie inside lib/big.bin: delivered in reverse, its pieces come out of its order and
  // the digest is taken by reading the file back.
  ['inside a file that spans chunks', (_n: number) => [1, 2]],
  ['among whole small files', (n: number) => [n - 2, n - 1]],
] as const) {
  test(`chunks that reassemble to files other than the entry list says (${where}) fail the install and leave nothing`, async (t) => {
    const { dir, pubStore, store, sm, ctx } = await setup(t, async (s, pkg) => {
      await makeTree(s);
      await execFileP('tar', ['cf', pkg, '--sort=name', '-C', s, '.']);
    });
    // Every chunk valid on its own, two of them swapped in a re-signed manifest: only the per-file digests see it.
    const m = structuredClone(sm.manifest);
    const c = m.content.chunks;
    const [a, b] = pick(c.length);
    t.not(c[a]!.size, c[b]!.size);
    [c[a], c[b]] = [c[b]!, c[a]!];
    const bad: SignedManifest = signManifest(m, privateKey);
    const refs = manifestChunks(m);
    const feed = new LiveChunkSource(store.chunks, refs, () => false);
    const installing = installManifest(ctx, bad, { source: feed });
    installing.catch(() => {});
    for (const ref of [...refs].reverse()) await deliver(pubStore, store, feed, ref.id);
    await t.throwsAsync(installing, { message: /hashes to [0-9a-f]{64}, not the [0-9a-f]{64} of its entry list/ });
    t.deepEqual(await leftovers(path.join(dir, 'runtimes')), []);
  });
}

test('spanning files beyond the open-handle cap are closed between their pieces and opened again', async (t) => {
  const dir = await tmpDir(t);
  // 12 files of 3,000 bytes in chunks of 1,000: every file spans 3 or 4 chunks; at most 2 files open at once.
  const files = Array.from({ length: 12 }, (_, i) => seededBytes(3000, `span${i}`));
  const content = Buffer.concat(files);
  const entries: TreeEntry[] = [{ type: 'directory', path: 'd', mode: 0o755, mtime: T0 }];
  files.forEach((bytes, i) => entries.push({
    type: 'file', path: `d/f${i}`, mode: 0o444, mtime: T0 + i, size: bytes.length,
    sha256: crypto.createHash('sha256').update(bytes).digest('hex'),
  }));
  // Cut 500 bytes off the first chunk so the files do not start on chunk boundaries.
  const sizes = [500, ...Array.from({ length: 35 }, () => 1000), 500];
  t.is(sizes.reduce((a, b) => a + b), content.length);
  const plan = planAnyOrder(entries, sizes, { label: 'span', count: entries.length, contentSize: content.length });
  t.truthy(plan);
  t.true(plan!.files.every((f) => !f.whole));
  const writer = new AnyOrderTreeWriter(dir, plan!, sizes, 'span', { maxOpen: 2 });
  await writer.prepare();
  const starts = sizes.map((_, i) => sizes.slice(0, i).reduce((a, b) => a + b, 0));
  for (const i of shuffled(sizes.map((_, k) => k), 3)) await writer.place(i, content.subarray(starts[i]!, starts[i]! + sizes[i]!));
  await writer.finish();
  for (const [i, bytes] of files.entries()) {
    const f = path.join(dir, `d/f${i}`);
    t.deepEqual(await fs.readFile(f), bytes);
    const st = await fs.stat(f);
    t.is(st.mode & 0o7777, 0o444);
    t.is(Math.floor(st.mtimeMs / 1000), T0 + i);
  }
});

test('a chunk is handed back only once every write from it is done: bytes overwritten then change nothing', async (t) => {
  const dir = await tmpDir(t);
  // Small whole files and files spanning chunks, so both kinds of write take bytes from each chunk.
  const files = Array.from({ length: 40 }, (_, i) => seededBytes(i % 2 === 0 ? 700 : 2600, `done${i}`));
  const content = Buffer.concat(files);
  const entries: TreeEntry[] = [{ type: 'directory', path: 'd', mode: 0o755, mtime: T0 }];
  files.forEach((bytes, i) => entries.push({
    type: 'file', path: `d/f${i}`, mode: 0o644, mtime: T0 + i, size: bytes.length,
    sha256: crypto.createHash('sha256').update(bytes).digest('hex'),
  }));
  const sizes: number[] = [];
  for (let left = content.length; left > 0; left -= 1500) sizes.push(Math.min(1500, left));
  const plan = planAnyOrder(entries, sizes, { label: 'done', count: entries.length, contentSize: content.length });
  t.true(plan!.files.some((f) => f.whole) && plan!.files.some((f) => !f.whole));
  const writer = new AnyOrderTreeWriter(dir, plan!, sizes, 'done');
  await writer.prepare();
  const starts = sizes.map((_, i) => sizes.slice(0, i).reduce((a, b) => a + b, 0));
  let handedBack = 0;
  for (const i of shuffled(sizes.map((_, k) => k), 11)) {
    // A copy per chunk, zeroed when handed back, as a freed buffer would read: a write still to come would write zeros.
    const raw = Buffer.from(content.subarray(starts[i]!, starts[i]! + sizes[i]!));
    await writer.place(i, raw, () => {
      handedBack++;
      raw.fill(0);
    });
  }
  await writer.finish();
  t.is(handedBack, sizes.length);
  for (const [i, bytes] of files.entries()) t.deepEqual(await fs.readFile(path.join(dir, `d/f${i}`)), bytes, `d/f${i}`);
});

test('decoded chunks are freed once written, where this Node can free them, and the tree is still exact', async (t) => {
  const { src, pubStore, store, sm, ctx } = await setup(t, async (s, pkg) => {
    // Text compresses, so chunks are stored compressed and each arrival is decoded into a buffer of its own.
    await fs.mkdir(path.join(s, 'share'), { recursive: true });
    await fs.writeFile(path.join(s, 'runtime.yml'), 'name: freed\nversion: 1.0.0\n');
    for (let i = 0; i < 300; i++) {
      const text = `${seededBytes(16, `w${i}`).toString('hex')} a line of a text file in a runtime\n`.repeat(20 + ((i * 37) % 500));
      await fs.writeFile(path.join(s, 'share', `t${i}.txt`), text);
    }
    await fs.writeFile(path.join(s, 'share', 'big.txt'), 'one large text file spanning chunks\n'.repeat(200_000));
    await execFileP('tar', ['cf', pkg, '--sort=name', '-C', s, '.']);
  });
  const refs = manifestChunks(sm.manifest);
  const feed = new LiveChunkSource(store.chunks, refs, () => false);
  const installing = installManifest(ctx, sm, { source: feed });
  const handed: Buffer[] = [];
  for (const ref of shuffled(refs, 21)) {
    const { raw, own } = await deliver(pubStore, store, feed, ref.id);
    if (own) handed.push(raw);
  }
  const rec = await installing;
  t.deepEqual(await picture(rec!.path), await picture(src));
  t.is(handed.length, refs.length, 'every chunk was stored compressed and decoded on arrival');
  t.true(sm.manifest.content.chunks.length >= 4, `${sm.manifest.content.chunks.length} content chunks`);
  // The entry list's chunks are kept (the install joins them); every content chunk's memory is given back.
  const freed = handed.filter((b) => b.length === 0).length;
  if (typeof (ArrayBuffer.prototype as { transfer?: unknown }).transfer === 'function') t.is(freed, sm.manifest.content.chunks.length);
  else t.is(freed, 0, 'this Node cannot free a buffer early');
});

test('the owner given applies to every entry of an install from chunks in any order', async (t) => {
  if (process.getuid?.() !== 0) {
    t.pass('needs root to chown');
    return;
  }
  const { pubStore, store, sm, ctx } = await setup(t, async (s, pkg) => {
    await makeTree(s);
    await execFileP('tar', ['cf', pkg, '--sort=name', '-C', s, '.']);
  });
  const refs = manifestChunks(sm.manifest);
  const feed = new LiveChunkSource(store.chunks, refs, () => false);
  const installing = installManifest({ ...ctx, owner: { uid: 1234, gid: 5678 } }, sm, { source: feed });
  for (const ref of shuffled(refs, 5)) await deliver(pubStore, store, feed, ref.id);
  const rec = await installing;
  const paths = await listAll(rec!.path);
  t.true(paths.length > 400);
  for (const p of paths) {
    const st = await fs.lstat(path.join(rec!.path, p));
    if (st.uid !== 1234 || st.gid !== 5678) t.fail(`${p} is owned by ${st.uid}:${st.gid}`);
  }
  t.is((await fs.stat(path.join(rec!.path, 'lib/big.bin'))).mode & 0o7777, 0o444, 'chown did not leave the placed file writable');
});
