// A large file's writes are pipelined (src/runtime/extract.ts): a write that fails is still reported, by a later
// write or by the file's end, and no descriptor outlives the extraction.
import test from 'ava';
import { execFileP, tmpDir } from './helpers/agent.js';
import fs from 'node:fs/promises';
import path from 'node:path';
import { TreeWriter } from '../src/runtime/extract.js';

/** This process's descriptors open on `file`: the count of all of them would race with the other test here. */
async function openOn(file: string): Promise<number> {
  let n = 0;
  for (const fd of await fs.readdir('/proc/self/fd')) if ((await fs.readlink(`/proc/self/fd/${fd}`).catch(() => '')) === file) n++;
  return n;
}

test('a large file that does not fit fails its extraction with ENOSPC, and its descriptor is closed', async (t) => {
  if (process.getuid?.() !== 0) {
    t.pass('needs root to mount a small tmpfs');
    return;
  }
  const dir = await tmpDir(t);
  const dest = path.join(dir, 'dest');
  await fs.mkdir(dest);
  await execFileP('mount', ['-t', 'tmpfs', '-o', 'size=4m,mode=0755', 'tmpfs', dest]);
  // Runs before tmpDir's removal (teardowns run last first), also when the test fails.
  t.teardown(() => execFileP('umount', [dest]).catch(() => execFileP('umount', ['-l', dest])).then(() => {}, () => {}));

  const writer = new TreeWriter(dest);
  const size = 16 * 1024 * 1024;
  await writer.begin({ type: 'file', path: 'big.bin', mode: 0o644, mtime: 1_600_000_000, size, sha256: '0'.repeat(64) });
  const piece = Buffer.alloc(256 * 1024, 7);
  const err = await (async () => {
    for (let at = 0; at < size; at += piece.length) await writer.write(piece);
    await writer.end();
  })().then(() => null, (e: unknown) => e as NodeJS.ErrnoException);
  t.truthy(err, 'a file four times the filesystem was written without an error');
  t.is(err!.code, 'ENOSPC', String(err));
  await writer.abort();
  t.is(await openOn(path.join(dest, 'big.bin')), 0, 'no descriptor left open');
});

test('a large file is written whole with its writes in flight, and each piece lands at its offset', async (t) => {
  const dest = await tmpDir(t);
  const writer = new TreeWriter(dest);
  const pieces = Array.from({ length: 40 }, (_, i) => Buffer.alloc(200_000 + i, i));
  const size = pieces.reduce((a, p) => a + p.length, 0);
  await writer.begin({ type: 'file', path: 'big.bin', mode: 0o640, mtime: 1_600_000_000, size, sha256: '0'.repeat(64) });
  for (const p of pieces) await writer.write(p);
  await writer.end();
  await writer.finish();
  t.true((await fs.readFile(path.join(dest, 'big.bin'))).equals(Buffer.concat(pieces)));
  const st = await fs.stat(path.join(dest, 'big.bin'));
  t.is(st.mode & 0o777, 0o640);
  t.is(Math.floor(st.mtimeMs / 1000), 1_600_000_000);
});
