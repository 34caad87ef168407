// Fault 11, at the reader: a package whose directories are swapped for symlinks, or whose files change,
// while it is read is refused, and no byte of what the symlink points to is ever produced.
import test from 'ava';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import { chmod, mkdir, rename, symlink, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { openCanonicalTar } from '../src/runtime/canonical.js';
import { openPackage } from '../src/runtime/no-follow.js';
import { tempDir, execFileP } from './runtime-fixtures.js';

const SECRET = 'SECRET-'.repeat(100);
const PUBLIC = 'public-'.repeat(100);

/** pkg/{runtime.yml, lib/data.txt} and secret/data.txt (0600) of the same size. */
async function workspace(t: Parameters<typeof tempDir>[0]) {
  const root = await tempDir(t);
  const pkg = join(root, 'pkg');
  const secret = join(root, 'secret');
  await mkdir(join(pkg, 'lib'), { recursive: true });
  await mkdir(secret);
  await writeFile(join(pkg, 'runtime.yml'), 'name: swap\nversion: 1.0.0\n');
  await writeFile(join(pkg, 'lib', 'data.txt'), PUBLIC);
  await writeFile(join(secret, 'data.txt'), SECRET, { mode: 0o600 });
  return { root, pkg, secret };
}

/** Everything the canonical stream produced, and how `done` ended. */
async function readAll(input: string, onProgress: (read: number, total: number) => void, strip: 'auto' | 'none' = 'auto') {
  const { stream, done } = openCanonicalTar(input, { onProgress, strip });
  const chunks: Buffer[] = [];
  stream.on('data', (c: Buffer) => chunks.push(c));
  const outcome = await done.then(() => null, (err: Error) => err);
  return { bytes: Buffer.concat(chunks), error: outcome };
}

test('a directory swapped for a symlink after the walk is refused, and its target is never read', async (t) => {
  const { pkg, secret } = await workspace(t);
  let swapped = false;
  const { bytes, error } = await readAll(pkg, (read) => {
    // Called once the walk is done and before the first file is read: the attacker's moment.
    if (read === 0 && !swapped) {
      swapped = true;
      fs.renameSync(join(pkg, 'lib'), join(pkg, 'lib.orig'));
      fs.symlinkSync(secret, join(pkg, 'lib'));
    }
  });
  t.true(swapped);
  t.truthy(error);
  t.is(error!.message, `${join(pkg, 'lib')} changed while the package was being read; publish it again once it is no longer being modified`);
  t.false(bytes.includes(Buffer.from('SECRET-')), 'no byte of the symlink target was produced');
});

test('a symlink anywhere on the path to the package is refused; the resolved path is fine', async (t) => {
  const { root, pkg } = await workspace(t);
  await symlink(pkg, join(root, 'via-link'));
  await mkdir(join(root, 'real'));
  await rename(pkg, join(root, 'real', 'pkg'));
  await symlink(join(root, 'real'), join(root, 'up'));
  await t.throwsAsync(openPackage(join(root, 'via-link')), { message: `package path ${join(root, 'via-link')} is a symlink; symlinks are not followed on the way to a package (give the resolved path)` });
  await t.throwsAsync(openPackage(join(root, 'up', 'pkg')), { message: new RegExp(`package path ${join(root, 'up')} is a symlink`) });
  const { error } = await readAll(join(root, 'real', 'pkg'), () => {});
  t.is(error, null);
});

test('a file rewritten in place while it is read is refused (same size: mtime and ctime tell)', async (t) => {
  const { pkg } = await workspace(t);
  const big = join(pkg, 'lib', 'big.bin');
  await writeFile(big, Buffer.alloc(3 * 1024 * 1024, 7));
  await utimes(big, new Date('2020-01-01T00:00:00Z'), new Date('2020-01-01T00:00:00Z'));
  let touched = false;
  const { error } = await readAll(pkg, (read) => {
    // After the first 1 MiB of big.bin: overwrite a later part with other bytes of the same length.
    if (read > 0 && !touched) {
      touched = true;
      const fd = fs.openSync(big, 'r+');
      fs.writeSync(fd, Buffer.alloc(1024, 9), 0, 1024, 2 * 1024 * 1024);
      fs.closeSync(fd);
    }
  });
  t.true(touched);
  t.is(error?.message, `${big} changed while the package was being read; publish it again once it is no longer being modified`);
});

test('an archive that grows while it is read is refused', async (t) => {
  const { root, pkg } = await workspace(t);
  await writeFile(join(pkg, 'lib', 'big.bin'), Buffer.alloc(3 * 1024 * 1024, 7));
  const archive = join(root, 'pkg.tar');
  await execFileP('tar', ['cf', archive, '-C', pkg, '.']);
  let grown = false;
  const { error } = await readAll(archive, () => {
    if (!grown) {
      grown = true;
      fs.appendFileSync(archive, Buffer.alloc(10240));
    }
  }, 'none');
  t.true(grown);
  t.is(error?.message, `package ${archive} changed while the package was being read; publish it again once it is no longer being modified`);
});

test('a file swapped for a fifo after the walk is refused without blocking; a fifo at walk time is a refused entry', async (t) => {
  const { pkg } = await workspace(t);
  let swapped = false;
  const { error } = await readAll(pkg, (read) => {
    if (read === 0 && !swapped) {
      swapped = true;
      fs.rmSync(join(pkg, 'lib', 'data.txt'));
      execFileSync('mkfifo', [join(pkg, 'lib', 'data.txt')]); // an open without O_NONBLOCK would wait for a writer for ever
    }
  });
  t.true(swapped);
  t.is(error?.message, `${join(pkg, 'lib', 'data.txt')} changed while the package was being read; publish it again once it is no longer being modified`);
  await chmod(join(pkg, 'lib', 'data.txt'), 0o644);
  const second = await readAll(pkg, () => {});
  t.regex(second.error?.message ?? '', /entry lib\/data\.txt is a fifo/);
});
