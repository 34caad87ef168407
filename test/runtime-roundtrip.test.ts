// Real archives made with GNU tar and Info-ZIP: canonical stream -> extractTar must give the tree that
// `tar -xf` / `unzip` give (minus setuid/setgid), and GNU tar must read the canonical stream too.
import test from 'ava';
import { mkdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { openCanonicalTar, StripGuessError } from '../src/runtime/canonical.js';
import {
  canonicalToDir,
  consumeCanonical,
  craftTar,
  execFileP,
  LONG_FILE,
  makeSampleTree,
  SAMPLE_YML,
  snapshotTree,
  tempDir,
  type TreeSnapshot,
} from './runtime-fixtures.js';

const TOP = 'sample-rt-1.2.3';

async function sampleWorkspace(t: Parameters<typeof tempDir>[0]) {
  const work = await tempDir(t);
  const parent = join(work, 'src');
  const tree = join(parent, TOP);
  await makeSampleTree(tree);
  return { work, parent, tree };
}

function assertSameTree(t: Parameters<typeof tempDir>[0], actual: TreeSnapshot, expected: TreeSnapshot) {
  t.deepEqual(Object.keys(actual.nodes), Object.keys(expected.nodes), 'same paths');
  for (const [path, node] of Object.entries(expected.nodes)) {
    t.deepEqual(actual.nodes[path], node, `same ${path}`);
  }
  t.deepEqual(actual.hardlinks, expected.hardlinks, 'same hardlink groups');
}

function assertSampleFeatures(t: Parameters<typeof tempDir>[0], snap: TreeSnapshot, opts: { hardlinks: boolean }) {
  t.is(snap.nodes['runtime.yml']?.type, 'file');
  t.is(snap.nodes['isolated/usr/bin/tool']?.mode, 0o755);
  t.is(snap.nodes['isolated/usr/bin/suid']?.mode, 0o755, 'setuid bit dropped');
  t.is(snap.nodes['isolated/usr/lib/libfoo.so']?.target, 'libfoo.so.1');
  t.is(snap.nodes['isolated/dangling']?.target, 'does/not/exist');
  t.is(snap.nodes['isolated/absolute']?.target, '/usr/bin/env');
  t.is(snap.nodes['isolated/long-target']?.target, `../${'t'.repeat(150)}`);
  t.is(snap.nodes['isolated/empty']?.type, 'dir');
  t.is(snap.nodes['isolated/ro']?.mode, 0o555);
  t.is(snap.nodes[LONG_FILE]?.type, 'file');
  t.true(LONG_FILE.length > 255);
  if (opts.hardlinks) t.deepEqual(snap.hardlinks, [['isolated/usr/bin/tool', 'isolated/usr/bin/tool-hard']]);
}

const tarForms = [
  { title: 'tar czf -C dir .', file: 'pkg.tar.gz', args: (tree: string, parent: string) => ['--sort=name', '-czf', 'OUT', '-C', tree, '.'], topdir: false, kind: 'tar.gz' },
  { title: 'tar czf of the top directory', file: 'pkg.tgz', args: (tree: string, parent: string) => ['-czf', 'OUT', '-C', parent, TOP], topdir: true, kind: 'tar.gz' },
  { title: 'tar cf -C dir .', file: 'pkg.tar', args: (tree: string, parent: string) => ['-cf', 'OUT', '-C', tree, '.'], topdir: false, kind: 'tar' },
  { title: 'tar cf of the top directory (pax format)', file: 'pkg.tar', args: (tree: string, parent: string) => ['--format=posix', '-cf', 'OUT', '-C', parent, TOP], topdir: true, kind: 'tar' },
] as const;

for (const form of tarForms) {
  test(`round trip: ${form.title}`, async (t) => {
    const { work, parent, tree } = await sampleWorkspace(t);
    const pkg = join(work, form.file);
    await execFileP('tar', form.args(tree, parent).map((a) => (a === 'OUT' ? pkg : a)));

    const reference = join(work, 'reference');
    await mkdir(reference);
    await execFileP('tar', ['-xf', pkg, '-C', reference]);
    const referenceRoot = form.topdir ? join(reference, TOP) : reference;

    const ours = join(work, 'ours');
    await mkdir(ours);
    const canonicalCopy = join(work, 'canonical.tar');
    const result = await canonicalToDir(pkg, ours, { tarCopy: canonicalCopy });
    t.is(result.info.kind, form.kind);
    t.is(result.info.stripped, form.topdir ? TOP : null);
    t.deepEqual(result.info.meta, {
      name: 'sample-rt', version: '1.2.3', language: 'python', description: 'A sample runtime', architectures: ['amd64', 'arm64'],
    });
    t.is(result.info.runtimeYml, SAMPLE_YML);
    t.is(result.extracted.entries, result.info.entries);
    t.is(result.extracted.unpackedBytes, result.info.unpackedBytes);

    const expected = await snapshotTree(referenceRoot, { mtimes: true });
    const actual = await snapshotTree(ours, { mtimes: true });
    assertSameTree(t, actual, expected);
    assertSampleFeatures(t, actual, { hardlinks: true });

    // The canonical stream is a tar GNU tar reads to the same tree.
    const byGnuTar = join(work, 'by-gnu-tar');
    await mkdir(byGnuTar);
    await execFileP('tar', ['-xf', canonicalCopy, '-C', byGnuTar]);
    assertSameTree(t, await snapshotTree(byGnuTar, { mtimes: true }), actual);
    const listing = (await execFileP('tar', ['-tvf', canonicalCopy])).stdout;
    t.notRegex(listing, /^\S+\s+(?!root\/root|0\/0)/m, 'every entry owned by 0:0');
  });
}

test('StripGuessError when the first entry is a directory but runtime.yml is at the root; strip none works', async (t) => {
  const { work, tree } = await sampleWorkspace(t);
  const pkg = join(work, 'rooted.tar.gz');
  // --sort=name puts ./isolated/ before ./runtime.yml.
  await execFileP('tar', ['--sort=name', '-czf', pkg, '-C', tree, '.']);
  const firstEntries = (await execFileP('tar', ['-tzf', pkg])).stdout.split('\n').slice(0, 2);
  t.deepEqual(firstEntries, ['./', './isolated/']);

  const err = await t.throwsAsync(consumeCanonical(pkg, { strip: 'auto' }));
  t.true(err instanceof StripGuessError);
  t.regex(err!.message, /runtime\.yml is not under isolated\//);

  const { info } = await consumeCanonical(pkg, { strip: 'none' });
  t.is(info.stripped, null);
  t.is(info.meta.name, 'sample-rt');
});

test('StripGuessError reaches both the stream and done', async (t) => {
  const { work, tree } = await sampleWorkspace(t);
  const pkg = join(work, 'rooted.tar');
  await execFileP('tar', ['--sort=name', '-cf', pkg, '-C', tree, '.']);
  const { stream, done } = openCanonicalTar(pkg, { strip: 'auto' });
  const streamError = new Promise<Error>((resolve) => stream.on('error', resolve));
  stream.resume();
  const err = await t.throwsAsync(done);
  t.true(err instanceof StripGuessError);
  t.is(await streamError, err);
});

test('round trip: zip -ry of the tree and of its top directory', async (t) => {
  const { work, parent, tree } = await sampleWorkspace(t);
  for (const form of [{ file: 'rooted.zip', cwd: tree, what: '.', top: false }, { file: 'top.zip', cwd: parent, what: TOP, top: true }]) {
    const pkg = join(work, form.file);
    await execFileP('zip', ['-qry', pkg, form.what], { cwd: form.cwd });
    const reference = join(work, `reference-${form.file}`);
    await execFileP('unzip', ['-q', pkg, '-d', reference]);
    const ours = join(work, `ours-${form.file}`);
    await mkdir(ours);
    const result = await canonicalToDir(pkg, ours);
    t.is(result.info.kind, 'zip');
    t.is(result.info.stripped, form.top ? TOP : null);
    t.is(result.info.meta.version, '1.2.3');
    const expected = await snapshotTree(form.top ? join(reference, TOP) : reference, { mtimes: true });
    const actual = await snapshotTree(ours, { mtimes: true });
    assertSameTree(t, actual, expected);
    // zip has no hardlinks: both names are plain files, as unzip makes them.
    assertSampleFeatures(t, actual, { hardlinks: false });
  }
});

test('round trip: a directory, with hardlinks kept and a deterministic stream', async (t) => {
  const { work, tree, parent } = await sampleWorkspace(t);
  const ours = join(work, 'ours');
  await mkdir(ours);
  const result = await canonicalToDir(tree, ours);
  t.is(result.info.kind, 'dir');
  t.is(result.info.stripped, null);
  const actual = await snapshotTree(ours, { mtimes: true });
  assertSameTree(t, actual, await snapshotTree(tree, { mtimes: true }));
  assertSampleFeatures(t, actual, { hardlinks: true });

  // The parent holds only the top directory: it is stripped, and the bytes are the same.
  const viaParent = await consumeCanonical(parent);
  t.is(viaParent.info.stripped, TOP);
  t.is(viaParent.sha256, result.tarSha256);
  const again = await consumeCanonical(tree);
  t.is(again.sha256, result.tarSha256, 'same tree, same canonical bytes');
});

test('zip and directory inputs are emitted in sorted order; progress reaches the total', async (t) => {
  const { work, tree } = await sampleWorkspace(t);
  const pkg = join(work, 'pkg.zip');
  await execFileP('zip', ['-qry', pkg, '.'], { cwd: tree });
  const canonical = join(work, 'canonical.tar');
  const ours = join(work, 'ours');
  await mkdir(ours);
  await canonicalToDir(pkg, ours, { tarCopy: canonical });
  const names = (await execFileP('tar', ['-tf', canonical])).stdout.trim().split('\n').map((n) => n.replace(/\/$/, ''));
  const sorted = [...names].sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)));
  t.deepEqual(names, sorted);

  const seen: Array<[number, number]> = [];
  await consumeCanonical(pkg, { onProgress: (read, total) => seen.push([read, total]) });
  const size = (await stat(pkg)).size;
  t.deepEqual(seen.at(-1), [size, size]);
  t.true(seen.every(([read, total], i) => total === size && (i === 0 || read >= seen[i - 1]![0])));

  const dirSeen: Array<[number, number]> = [];
  await consumeCanonical(tree, { onProgress: (read, total) => dirSeen.push([read, total]) });
  const [lastRead, lastTotal] = dirSeen.at(-1)!;
  t.is(lastRead, lastTotal);
  t.true(lastTotal >= 1_000_000);
});

test('a tar.gz read with progress reports the file size at the end', async (t) => {
  const { work, tree } = await sampleWorkspace(t);
  const pkg = join(work, 'pkg.tgz');
  await execFileP('tar', ['-czf', pkg, '-C', join(tree, '..'), TOP]);
  const seen: number[] = [];
  const { info } = await consumeCanonical(pkg, { onProgress: (read) => seen.push(read) });
  t.is(seen.at(-1), (await stat(pkg)).size);
  t.is(info.meta.name, 'sample-rt');
  t.is((await readFile(join(tree, 'runtime.yml'), 'utf8')), info.runtimeYml);
});

test('a tar without directory entries is stripped when its first entry lies under the top directory', async (t) => {
  const work = await tempDir(t);
  const pkg = join(work, 'nodirs.tar.gz');
  await craftTar(pkg, [
    { header: { name: 'top/runtime.yml' }, data: SAMPLE_YML },
    { header: { name: 'top/bin/tool', mode: 0o755 }, data: 'tool' },
  ], { gzip: true });
  const ours = join(work, 'ours');
  await mkdir(ours);
  const { info } = await canonicalToDir(pkg, ours);
  t.is(info.stripped, 'top');
  t.is(await readFile(join(ours, 'bin/tool'), 'utf8'), 'tool');
  t.is((await stat(join(ours, 'bin/tool'))).mode & 0o777, 0o755);
  t.is((await stat(join(ours, 'bin'))).mode & 0o777, 0o755, 'implicit directories get 0755');
});
