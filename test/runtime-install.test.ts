import test from 'ava';
import { chmod, lstat, mkdir, readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { openCanonicalTar } from '../src/runtime/canonical.js';
import { extractTar } from '../src/runtime/extract.js';
import { RuntimesDir, parseOwner } from '../src/runtime/install.js';
import { PackageError, type RuntimeMeta } from '../src/runtime/types.js';
import { canonicalToDir, LONG_FILE, makeSampleTree, tempDir, treeFileBytes } from './runtime-fixtures.js';

const META: RuntimeMeta = { name: 'sample-rt', version: '1.2.3' };

async function stage(dirs: RuntimesDir, content: string, meta: RuntimeMeta = META): Promise<string> {
  const staging = await dirs.createStaging();
  await writeFile(join(staging, 'runtime.yml'), `name: ${meta.name}\nversion: ${meta.version}\n`);
  await writeFile(join(staging, 'content.txt'), content);
  return staging;
}

async function workEntries(root: string, kind: 'staging' | 'trash'): Promise<string[]> {
  return readdir(join(root, '.joblet-agent', kind)).catch(() => []);
}

test('commit moves a staged tree into <root>/<name>/<version> and leaves no staging behind', async (t) => {
  const root = await tempDir(t);
  const dirs = new RuntimesDir(root);
  const staging = await dirs.createStaging();
  t.true(staging.startsWith(join(root, '.joblet-agent', 'staging')));
  t.deepEqual(await readdir(staging), [], 'empty');

  // A real extraction, as publish does it.
  const tree = join(await tempDir(t), 'tree');
  await makeSampleTree(tree);
  await canonicalToDir(tree, staging);
  const path = await dirs.commit(staging, META, {});
  t.is(path, join(root, 'sample-rt', '1.2.3'));
  t.is(path, dirs.pathFor('sample-rt', '1.2.3'));
  t.is(await readFile(join(path, 'runtime.yml'), 'utf8'), await readFile(join(tree, 'runtime.yml'), 'utf8'));
  t.deepEqual(await workEntries(root, 'staging'), []);
  t.true((await treeFileBytes(path)) > 1_000_000);
});

test('an installed version is refused without force, kept intact, and replaced with force', async (t) => {
  const root = await tempDir(t);
  const dirs = new RuntimesDir(root);
  const path = await dirs.commit(await stage(dirs, 'first'), META);

  const second = await stage(dirs, 'second');
  await t.throwsAsync(dirs.commit(second, META), { instanceOf: PackageError, message: `sample-rt@1.2.3 is already installed at ${path}` });
  t.is(await readFile(join(path, 'content.txt'), 'utf8'), 'first');
  t.deepEqual(await workEntries(root, 'staging'), [], 'the refused staging is removed');

  await dirs.commit(await stage(dirs, 'third'), META, { force: true });
  t.is(await readFile(join(path, 'content.txt'), 'utf8'), 'third');
  t.deepEqual(await workEntries(root, 'staging'), []);
  t.deepEqual(await workEntries(root, 'trash'), [], 'the old version is deleted');
});

test('a staged runtime.yml that disagrees with the metadata is refused and nothing changes', async (t) => {
  const root = await tempDir(t);
  const dirs = new RuntimesDir(root);
  const path = await dirs.commit(await stage(dirs, 'installed'), META);
  const wrong = await stage(dirs, 'other', { name: 'sample-rt', version: '9.9.9' });
  await t.throwsAsync(dirs.commit(wrong, META, { force: true }), {
    instanceOf: PackageError,
    message: 'the staged runtime.yml says sample-rt@9.9.9, but sample-rt@1.2.3 was expected',
  });
  t.is(await readFile(join(path, 'content.txt'), 'utf8'), 'installed');
  t.deepEqual(await workEntries(root, 'staging'), []);

  const missing = await dirs.createStaging();
  await t.throwsAsync(dirs.commit(missing, META, { force: true }), { instanceOf: PackageError, message: /has no runtime\.yml at its top/ });
  t.is(await readFile(join(path, 'content.txt'), 'utf8'), 'installed');
});

test('a failed extraction into staging never touches the installed version', async (t) => {
  const root = await tempDir(t);
  const dirs = new RuntimesDir(root);
  const path = await dirs.commit(await stage(dirs, 'installed'), META);
  const staging = await dirs.createStaging();
  await t.throwsAsync(canonicalToDir(join(root, 'does-not-exist.tgz'), staging), { instanceOf: PackageError });
  await dirs.discard(staging);
  t.is(await readFile(join(path, 'content.txt'), 'utf8'), 'installed');
  t.deepEqual(await workEntries(root, 'staging'), []);
});

test('discard, remove and cleanupLeftovers remove everything, also read-only directories', async (t) => {
  const root = await tempDir(t);
  const dirs = new RuntimesDir(root);
  const staging = await stage(dirs, 'x');
  await mkdir(join(staging, 'ro'));
  await writeFile(join(staging, 'ro', 'f'), 'x');
  await chmod(join(staging, 'ro'), 0o555);
  await dirs.discard(staging);
  t.deepEqual(await workEntries(root, 'staging'), []);

  await dirs.commit(await stage(dirs, 'a'), META);
  await dirs.commit(await stage(dirs, 'b', { name: 'sample-rt', version: '2.0.0' }), { name: 'sample-rt', version: '2.0.0' });
  await dirs.remove('sample-rt', '1.2.3');
  t.deepEqual(await readdir(join(root, 'sample-rt')), ['2.0.0']);
  await dirs.remove('sample-rt', '2.0.0');
  await t.throwsAsync(stat(join(root, 'sample-rt')), undefined, 'the empty name dir is removed');
  await t.throwsAsync(dirs.remove('sample-rt', '2.0.0'), { instanceOf: PackageError, message: /^sample-rt@2\.0\.0 is not installed in / });
  t.deepEqual(await workEntries(root, 'trash'), []);

  // Leftovers of a crash: a half-extracted staging tree and a half-deleted trash tree.
  await stage(dirs, 'half');
  await mkdir(join(root, '.joblet-agent', 'trash', 'x', 'tree'), { recursive: true });
  await dirs.cleanupLeftovers();
  t.deepEqual(await workEntries(root, 'staging'), []);
  t.deepEqual(await workEntries(root, 'trash'), []);
});

test('pathFor refuses unsafe names and versions; discard refuses foreign paths', async (t) => {
  const root = await tempDir(t);
  const dirs = new RuntimesDir(root);
  t.throws(() => dirs.pathFor('..', '1'), { instanceOf: PackageError, message: /^invalid runtime name "\.\."/ });
  t.throws(() => dirs.pathFor('a', '../../etc'), { instanceOf: PackageError, message: /^invalid version "\.\.\/\.\.\/etc"/ });
  await t.throwsAsync(dirs.discard(root), { message: /is not a staging directory/ });
  t.true((await stat(root)).isDirectory());
});

test('treeFileBytes (the reference for install records) counts regular file bytes once per inode', async (t) => {
  const root = await tempDir(t);
  const tree = join(root, 'tree');
  await makeSampleTree(tree);
  // runtime.yml + tool (hardlinked twice, counted once) + suid + 300000 + 700000 + small files
  const expected = [
    'runtime.yml', 'isolated/usr/bin/tool', 'isolated/usr/bin/suid', 'isolated/usr/lib/libfoo.so.1', 'isolated/usr/lib/random.bin',
    'isolated/naïve.txt', 'isolated/ro/inside', 'isolated/empty-file',
  ];
  let sum = 0;
  for (const p of expected) sum += (await stat(join(tree, p))).size;
  sum += (await stat(join(tree, LONG_FILE))).size;
  t.is(await treeFileBytes(tree), sum);
});

test('parseOwner reads numbers and names', async (t) => {
  t.deepEqual(await parseOwner('1000:1001'), { uid: 1000, gid: 1001 });
  t.deepEqual(await parseOwner('root:root'), { uid: 0, gid: 0 });
  t.deepEqual(await parseOwner('root'), { uid: 0, gid: 0 });
  t.deepEqual(await parseOwner('0:root'), { uid: 0, gid: 0 });
  await t.throwsAsync(parseOwner('no-such-user-xyz:root'), { instanceOf: PackageError, message: 'unknown user "no-such-user-xyz" in --owner: not found in /etc/passwd' });
  await t.throwsAsync(parseOwner('root:no-such-group-xyz'), { instanceOf: PackageError, message: 'unknown group "no-such-group-xyz" in --owner: not found in /etc/group' });
  await t.throwsAsync(parseOwner('a:b:c'), { instanceOf: PackageError, message: /^invalid --owner "a:b:c"/ });
});

test('extractTar applies the owner given', async (t) => {
  if (process.getuid?.() !== 0) {
    t.pass('needs root to chown');
    return;
  }
  const root = await tempDir(t);
  const tree = join(root, 'tree');
  await makeSampleTree(tree);
  const dest = join(root, 'dest');
  await mkdir(dest);
  const { stream, done } = openCanonicalTar(tree);
  await Promise.all([extractTar(stream, dest, { owner: { uid: 1234, gid: 5678 } }), done]);
  for (const p of ['runtime.yml', 'isolated', 'isolated/usr/bin/tool', 'isolated/dangling', 'isolated/ro']) {
    const info = await lstat(join(dest, p));
    t.is(info.uid, 1234, p);
    t.is(info.gid, 5678, p);
  }
});
