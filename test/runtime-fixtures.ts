// Shared helpers of the runtime-*.test.ts files: temp dirs, a sample runtime tree with every kind of
// entry, tree snapshots for comparison, crafted tars and zips, and the canonical -> extract pipeline.
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { chmod, link, lstat, mkdir, mkdtemp, readdir, readFile, readlink, rm, symlink, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough, Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { promisify } from 'node:util';
import { crc32, createGzip } from 'node:zlib';
import type { ExecutionContext } from 'ava';
import tarStream from 'tar-stream';
import { openCanonicalTar, StripGuessError, type CanonicalInfo } from '../src/runtime/canonical.js';
import { extractTar } from '../src/runtime/extract.js';
import type { PackageLimits } from '../src/runtime/types.js';

export const execFileP = promisify(execFile);

export async function tempDir(t: ExecutionContext, prefix = 'runtime-test-'): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

export const SAMPLE_YML = 'name: sample-rt\nversion: 1.2.3\nlanguage: python\ndescription: A sample runtime\nrequirements:\n  architectures: [x86_64, aarch64]\n';
const FIXED_TIME = new Date('2023-05-06T07:08:09Z');

export const LONG_DIR = ['d'.repeat(60), 'e'.repeat(60), 'f'.repeat(60)].join('/');
export const LONG_FILE = `isolated/${LONG_DIR}/${'g'.repeat(120)}.txt`;

/**
 * A runtime tree with runtime.yml and every kind of entry the canonical form has to carry: long
 * paths, relative/dangling/absolute/long symlinks, a hardlink, empty and read-only directories, an
 * executable and a setuid file.
 */
export async function makeSampleTree(root: string): Promise<void> {
  await mkdir(root, { recursive: true });
  await writeFile(join(root, 'runtime.yml'), SAMPLE_YML);
  const bin = join(root, 'isolated/usr/bin');
  const lib = join(root, 'isolated/usr/lib');
  await mkdir(bin, { recursive: true });
  await mkdir(lib, { recursive: true });
  await writeFile(join(bin, 'tool'), '#!/bin/sh\necho tool\n');
  await chmod(join(bin, 'tool'), 0o755);
  await link(join(bin, 'tool'), join(bin, 'tool-hard'));
  await writeFile(join(bin, 'suid'), 'setuid program\n');
  await chmod(join(bin, 'suid'), 0o4755);
  await writeFile(join(lib, 'libfoo.so.1'), Buffer.alloc(300_000, 7));
  await writeFile(join(lib, 'random.bin'), deterministicBytes(700_000));
  await symlink('libfoo.so.1', join(lib, 'libfoo.so'));
  await symlink('../bin', join(lib, 'bin-link'));
  await symlink('does/not/exist', join(root, 'isolated/dangling'));
  await symlink('/usr/bin/env', join(root, 'isolated/absolute'));
  await symlink(`../${'t'.repeat(150)}`, join(root, 'isolated/long-target'));
  await writeFile(join(root, 'isolated/empty-file'), '');
  await writeFile(join(root, 'isolated/naïve.txt'), 'unicode name\n');
  await mkdir(join(root, 'isolated/empty'), { mode: 0o700 });
  await chmod(join(root, 'isolated/empty'), 0o700);
  await mkdir(join(root, 'isolated/ro'));
  await writeFile(join(root, 'isolated/ro/inside'), 'in a read-only dir\n');
  await mkdir(join(root, 'isolated', LONG_DIR), { recursive: true });
  await writeFile(join(root, LONG_FILE), 'long path\n');
  await chmod(join(root, 'isolated/ro'), 0o555);
  await setTimes(root);
}

/** Fixed mtimes everywhere (children first, so a directory's time is not disturbed afterwards). */
async function setTimes(dir: string): Promise<void> {
  for (const name of await readdir(dir)) {
    const path = join(dir, name);
    const info = await lstat(path);
    if (info.isDirectory()) await setTimes(path);
    else if (!info.isSymbolicLink()) await utimes(path, FIXED_TIME, FIXED_TIME);
  }
  await utimes(dir, FIXED_TIME, FIXED_TIME);
}

export function deterministicBytes(n: number, seed = 'seed'): Buffer {
  const out = Buffer.alloc(n);
  let block = createHash('sha256').update(seed).digest();
  for (let i = 0; i < n; i += block.length) {
    block.copy(out, i);
    block = createHash('sha256').update(block).digest();
  }
  return out;
}

export interface NodeSnapshot {
  type: 'file' | 'dir' | 'symlink';
  mode: number;
  size?: number;
  sha256?: string;
  target?: string;
  mtime?: number;
}

export interface TreeSnapshot {
  nodes: Record<string, NodeSnapshot>;
  /** Sorted groups of paths sharing one inode (only groups of 2+). */
  hardlinks: string[][];
}

/** Everything below `root` (not root itself): type, mode without setuid/setgid, content, link target. */
export async function snapshotTree(root: string, opts: { mtimes?: boolean } = {}): Promise<TreeSnapshot> {
  const nodes: Record<string, NodeSnapshot> = {};
  const inodes = new Map<number, string[]>();
  const walk = async (dir: string, rel: string) => {
    for (const name of (await readdir(dir)).sort()) {
      const path = join(dir, name);
      const relPath = rel ? `${rel}/${name}` : name;
      const info = await lstat(path);
      const mode = info.mode & 0o1777;
      const mtime = opts.mtimes ? Math.floor(info.mtimeMs / 1000) : undefined;
      if (info.isDirectory()) {
        nodes[relPath] = { type: 'dir', mode, mtime };
        await walk(path, relPath);
      } else if (info.isSymbolicLink()) {
        nodes[relPath] = { type: 'symlink', mode: 0, target: await readlink(path) };
      } else {
        const content = await readFile(path);
        nodes[relPath] = { type: 'file', mode, size: info.size, sha256: createHash('sha256').update(content).digest('hex'), mtime };
        if (info.nlink > 1) inodes.set(info.ino, [...(inodes.get(info.ino) ?? []), relPath]);
      }
    }
  };
  await walk(root, '');
  const hardlinks = [...inodes.values()].filter((g) => g.length > 1).map((g) => g.sort()).sort();
  return { nodes, hardlinks };
}

export interface PipelineResult {
  info: CanonicalInfo;
  tarBytes: number;
  tarSha256: string;
  extracted: { entries: number; unpackedBytes: number };
}

/**
 * openCanonicalTar -> extractTar, the way publish does it: retried with strip 'none' on a
 * StripGuessError. Optionally also writes the canonical tar to `tarCopy`.
 */
export async function canonicalToDir(
  input: string,
  dest: string,
  opts: { limits?: PackageLimits; strip?: 'auto' | 'none'; tarCopy?: string } = {},
): Promise<PipelineResult> {
  try {
    return await canonicalOnce(input, dest, opts.strip ?? 'auto', opts);
  } catch (err) {
    if (!(err instanceof StripGuessError)) throw err;
    await rm(dest, { recursive: true, force: true });
    await mkdir(dest);
    return canonicalOnce(input, dest, 'none', opts);
  }
}

async function canonicalOnce(input: string, dest: string, strip: 'auto' | 'none', opts: { limits?: PackageLimits; tarCopy?: string }): Promise<PipelineResult> {
  const { stream, done } = openCanonicalTar(input, { limits: opts.limits, strip });
  const hash = createHash('sha256');
  let tarBytes = 0;
  const copy = opts.tarCopy ? createWriteStream(opts.tarCopy) : null;
  const tee = new PassThrough();
  stream.on('data', (chunk: Buffer) => {
    hash.update(chunk);
    tarBytes += chunk.length;
    copy?.write(chunk);
  });
  stream.pipe(tee);
  stream.on('error', (err) => tee.destroy(err));
  // Both settle before anything is decided: on a StripGuessError the caller empties `dest` and extracts again,
  // and the first extraction must have stopped writing into it by then (Promise.all would return at the first
  // rejection, while the aborted extraction was still finishing its queued files).
  const [extraction, reading] = await Promise.allSettled([extractTar(tee, dest, { limits: opts.limits }), done]);
  if (reading.status === 'rejected') throw reading.reason;
  if (extraction.status === 'rejected') throw extraction.reason;
  const [extracted, info] = [extraction.value, reading.value];
  if (copy) await new Promise<void>((resolve, reject) => copy.end((err?: Error | null) => (err ? reject(err) : resolve())));
  return { info, tarBytes, tarSha256: hash.digest('hex'), extracted };
}

/** Reads a canonical stream to its end; returns its sha256 and size, or throws the package error. */
export async function consumeCanonical(input: string, opts: Parameters<typeof openCanonicalTar>[1] = {}): Promise<{ info: CanonicalInfo; sha256: string; bytes: number }> {
  const { stream, done } = openCanonicalTar(input, opts);
  const hash = createHash('sha256');
  let bytes = 0;
  const streamEnded = (async () => {
    for await (const chunk of stream) {
      hash.update(chunk as Buffer);
      bytes += (chunk as Buffer).length;
    }
  })();
  const [info] = await Promise.all([done, streamEnded]);
  return { info, sha256: hash.digest('hex'), bytes };
}

export interface CraftEntry {
  header: Parameters<tarStream.Pack['entry']>[0];
  data?: string | Buffer;
}

/** Writes a tar (optionally gzipped) made of exactly these entries, whatever they contain. */
export async function craftTar(file: string, entries: CraftEntry[], opts: { gzip?: boolean } = {}): Promise<void> {
  const pack = tarStream.pack();
  const out = createWriteStream(file);
  const writing = opts.gzip
    ? pipeline(pack as unknown as Readable, createGzip(), out)
    : pipeline(pack as unknown as Readable, out);
  for (const e of entries) {
    await new Promise<void>((resolve, reject) => {
      const cb = (err?: Error | null) => (err ? reject(err) : resolve());
      if (e.data !== undefined) pack.entry({ mtime: FIXED_TIME, ...e.header }, e.data, cb);
      else pack.entry({ mtime: FIXED_TIME, ...e.header }, cb);
    });
  }
  pack.finalize();
  await writing;
}

export const ROOT_YML: CraftEntry = { header: { name: 'runtime.yml' }, data: SAMPLE_YML };

export interface ZipCraftEntry {
  name: string;
  data?: Buffer | string;
  /** Full unix mode including the file type bits (e.g. 0o100644, 0o120777, 0o010644 for a fifo). */
  unixMode?: number;
}

/** A minimal stored (uncompressed) zip, so tests can put anything in it, '../' names included. */
export async function craftZip(file: string, entries: ZipCraftEntry[]): Promise<void> {
  const locals: Buffer[] = [];
  const centrals: Buffer[] = [];
  let offset = 0;
  for (const e of entries) {
    const name = Buffer.from(e.name);
    const data = Buffer.from(e.data ?? '');
    const crc = crc32(data) >>> 0;
    const local = Buffer.alloc(30);
    local.writeUInt32LE(0x04034b50, 0);
    local.writeUInt16LE(20, 4);
    local.writeUInt16LE(0x800, 6); // UTF-8 names
    local.writeUInt16LE(0, 8); // stored
    local.writeUInt16LE(0, 10);
    local.writeUInt16LE(0x5621, 12); // 2023-01-01
    local.writeUInt32LE(crc, 14);
    local.writeUInt32LE(data.length, 18);
    local.writeUInt32LE(data.length, 22);
    local.writeUInt16LE(name.length, 26);
    local.writeUInt16LE(0, 28);
    const central = Buffer.alloc(46);
    central.writeUInt32LE(0x02014b50, 0);
    central.writeUInt16LE((3 << 8) | 30, 4); // made by unix
    central.writeUInt16LE(20, 6);
    central.writeUInt16LE(0x800, 8);
    central.writeUInt16LE(0, 10);
    central.writeUInt16LE(0, 12);
    central.writeUInt16LE(0x5621, 14);
    central.writeUInt32LE(crc, 16);
    central.writeUInt32LE(data.length, 20);
    central.writeUInt32LE(data.length, 24);
    central.writeUInt16LE(name.length, 28);
    central.writeUInt32LE(((e.unixMode ?? (e.name.endsWith('/') ? 0o040755 : 0o100644)) << 16) >>> 0, 38);
    central.writeUInt32LE(offset, 42);
    locals.push(local, name, data);
    centrals.push(central, name);
    offset += local.length + name.length + data.length;
  }
  const centralSize = centrals.reduce((n, b) => n + b.length, 0);
  const end = Buffer.alloc(22);
  end.writeUInt32LE(0x06054b50, 0);
  end.writeUInt16LE(entries.length, 8);
  end.writeUInt16LE(entries.length, 10);
  end.writeUInt32LE(centralSize, 12);
  end.writeUInt32LE(offset, 16);
  await writeFile(file, Buffer.concat([...locals, ...centrals, end]));
}

/** Every path below `root`, for asserting that nothing appeared outside a destination dir. */
export async function listTree(root: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (dir: string, rel: string) => {
    for (const name of (await readdir(dir)).sort()) {
      const relPath = rel ? `${rel}/${name}` : name;
      out.push(relPath);
      const info = await lstat(join(dir, name));
      if (info.isDirectory()) await walk(join(dir, name), relPath);
    }
  };
  await walk(root, '');
  return out;
}

/** Bytes of regular files under `path`, each inode counted once; symlinks are not followed (what du counts). */
export async function treeFileBytes(path: string): Promise<number> {
  const seen = new Set<string>();
  let total = 0;
  const pending = [path];
  while (pending.length > 0) {
    const current = pending.pop()!;
    const info = await lstat(current);
    if (info.isDirectory()) {
      for (const name of await readdir(current)) pending.push(join(current, name));
    } else if (info.isFile()) {
      const key = `${info.dev}:${info.ino}`;
      if (info.nlink > 1) {
        if (seen.has(key)) continue;
        seen.add(key);
      }
      total += info.size;
    }
  }
  return total;
}
