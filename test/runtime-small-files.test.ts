// The tree writer hands small files to a worker thread in batches (src/runtime/small-files.ts). These check the
// bytes, modes and mtimes it leaves on disk, that a later entry replacing or hardlinking a file still waiting in
// a batch sees that file, and that a failure in the worker comes back as the errno error it was.
import test from 'ava';
import { lstat, readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { TreeWriter } from '../src/runtime/extract.js';
import { SmallFileWriter } from '../src/runtime/small-files.js';
import type { TreeEntry } from '../src/runtime/tree-entry.js';
import { tempDir } from './runtime-fixtures.js';

async function put(w: TreeWriter, e: TreeEntry, data?: Buffer): Promise<void> {
  await w.begin(e);
  if (data) {
    // In two pieces, as a file split across chunks arrives.
    const half = data.length >> 1;
    if (half > 0) await w.write(data.subarray(0, half));
    await w.write(data.subarray(half));
  }
  await w.end();
}

function fileEntry(path: string, data: Buffer, mode = 0o644, mtime = 1_600_000_000): TreeEntry {
  return { type: 'file', path, mode, mtime, size: data.length, sha256: '' };
}

test('thousands of small files land with their bytes, modes and mtimes; replacing and hardlinking a queued file work', async (t) => {
  const dest = await tempDir(t);
  const w = new TreeWriter(dest);
  const count = 3000;
  for (let i = 0; i < count; i++) {
    const data = Buffer.from(`file ${i} `.repeat(1 + (i % 50)));
    await put(w, fileEntry(`d${i % 7}/f${i}`, data, i % 3 === 0 ? 0o755 : 0o640, 1_600_000_000 + i), data);
  }
  // Both refer to files that are most likely still in the batch being filled.
  await put(w, { type: 'link', path: 'd1/hard', target: `d${(count - 1) % 7}/f${count - 1}` });
  const replacement = Buffer.from('the second version');
  await put(w, fileEntry(`d${(count - 2) % 7}/f${count - 2}`, replacement), replacement);
  await put(w, fileEntry('empty', Buffer.alloc(0)), Buffer.alloc(0));
  await w.finish();

  let files = 0;
  for (const d of await readdir(dest)) if (d.startsWith('d')) files += (await readdir(join(dest, d))).filter((n) => n.startsWith('f')).length;
  t.is(files, count);
  for (const i of [0, 1, 2, 1234, count - 3]) {
    const p = join(dest, `d${i % 7}/f${i}`);
    t.is(await readFile(p, 'utf8'), `file ${i} `.repeat(1 + (i % 50)));
    const st = await lstat(p);
    t.is(st.mode & 0o777, i % 3 === 0 ? 0o755 : 0o640, `mode of f${i}`);
    t.is(st.mtimeMs, (1_600_000_000 + i) * 1000, `mtime of f${i}`);
  }
  const last = await lstat(join(dest, `d${(count - 1) % 7}/f${count - 1}`));
  const hard = await lstat(join(dest, 'd1/hard'));
  t.is(hard.ino, last.ino, 'the hardlink shares the inode of the file it names');
  t.is(await readFile(join(dest, `d${(count - 2) % 7}/f${count - 2}`), 'utf8'), 'the second version');
  t.is((await lstat(join(dest, 'empty'))).size, 0);
});

test('a failure inside the worker is reported with its errno code and path, and later files are refused', async (t) => {
  const dest = await tempDir(t);
  const writer = new SmallFileWriter(null);
  t.teardown(() => writer.close());
  const missing = join(dest, 'no-such-dir', 'f');
  await writer.add(missing, 0o644, false, 1_600_000_000, [Buffer.from('x')], 1);
  const err = await t.throwsAsync(writer.drain());
  t.is((err as NodeJS.ErrnoException).code, 'ENOENT');
  t.is((err as NodeJS.ErrnoException).path, missing);
  await t.throwsAsync(writer.add(join(dest, 'g'), 0o644, false, 1_600_000_000, [Buffer.from('y')], 1), { message: /ENOENT/ });
  await writer.close();
  await t.throwsAsync(lstat(join(dest, 'g')), { code: 'ENOENT' }, 'nothing after the failure was written');
});

test('an existing file is never overwritten and a symlink is never followed (O_EXCL|O_NOFOLLOW in the worker)', async (t) => {
  const dest = await tempDir(t);
  const outside = await tempDir(t);
  const { symlink, writeFile } = await import('node:fs/promises');
  await writeFile(join(outside, 'victim'), 'untouched');
  await symlink(join(outside, 'victim'), join(dest, 'link'));
  const writer = new SmallFileWriter(null);
  t.teardown(() => writer.close());
  await writer.add(join(dest, 'link'), 0o644, false, 1_600_000_000, [Buffer.from('overwritten')], 11);
  const err = await t.throwsAsync(writer.drain());
  t.is((err as NodeJS.ErrnoException).code, 'EEXIST');
  t.is(await readFile(join(outside, 'victim'), 'utf8'), 'untouched');
});

test('directories go through the worker: a large file and a symlink in new directories, a read-only directory keeps its children, directory mtimes hold', async (t) => {
  const dest = await tempDir(t);
  const w = new TreeWriter(dest);
  await put(w, { type: 'directory', path: 'ro', mode: 0o555, mtime: 1_500_000_000 });
  const small = Buffer.from('inside a read-only directory');
  await put(w, fileEntry('ro/inside', small), small);
  // Larger than a small file: opened on the main thread, which must wait for its parents queued to the worker.
  const large = Buffer.alloc(3 * 1024 * 1024 + 17, 0x5a);
  await put(w, fileEntry('a/b/c/large.bin', large), large);
  await put(w, { type: 'symlink', path: 'x/y/link', mtime: 1_500_000_000, target: '../../a/b/c/large.bin' });
  await put(w, { type: 'directory', path: 'a/b', mode: 0o750, mtime: 1_400_000_000 });
  await w.finish();
  t.is((await readFile(join(dest, 'x/y/link'))).length, large.length);
  t.is(await readFile(join(dest, 'ro/inside'), 'utf8'), 'inside a read-only directory');
  const ro = await lstat(join(dest, 'ro'));
  t.is(ro.mode & 0o777, 0o555);
  t.is(ro.mtimeMs, 1_500_000_000_000, 'the mtime is set after the children were created');
  const ab = await lstat(join(dest, 'a/b'));
  t.is(ab.mode & 0o777, 0o750, 'an explicit entry after its implicit creation sets the mode');
  t.is(ab.mtimeMs, 1_400_000_000_000);
  t.is((await lstat(join(dest, 'a/b/c'))).mode & 0o777, 0o755, 'an implicit parent gets 0755');
});
