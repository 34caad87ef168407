// A plain directory as a runtime package: walked with lstat (symlinks are entries, never followed),
// emitted in bytewise path order so the same tree gives the same canonical tar on every host.
import { constants, createReadStream, type Stats } from 'node:fs';
import { lstat, readdir, readlink } from 'node:fs/promises';
import { join } from 'node:path';
import { decideStrip, stripPath, type CanonicalWriter } from './canonical-writer.js';
import { PackageError } from './types.js';

const READ_CHUNK = 1024 * 1024;

export interface SourceContext {
  input: string;
  writer: CanonicalWriter;
  strip: 'auto' | 'none';
  onProgress?: (readBytes: number, totalBytes: number) => void;
  signal: AbortSignal;
}

interface Found {
  path: string;
  stat: Stats;
  type: string;
}

/** Returns the stripped top-level directory, or null. */
export async function produceFromDirectory(ctx: SourceContext): Promise<string | null> {
  const found = await walk(ctx.input, ctx.writer.limits.maxEntries, ctx.signal);
  const prefix = decideStrip(found, ctx.strip);

  let total = 0;
  const firstPathOfInode = new Map<string, string>();
  const plan: { found: Found; path: string; linkTo?: string }[] = [];
  for (const f of found) {
    const path = stripPath(f.path, prefix);
    if (path === null) continue;
    let linkTo: string | undefined;
    if (f.type === 'file' && f.stat.nlink > 1) {
      const key = `${f.stat.dev}:${f.stat.ino}`;
      const first = firstPathOfInode.get(key);
      // runtime.yml is always stored as a file: joblet and the agent read it, they do not resolve links.
      if (first !== undefined && path !== 'runtime.yml') linkTo = first;
      else if (first === undefined) firstPathOfInode.set(key, path);
    }
    if (f.type === 'file' && linkTo === undefined) total += f.stat.size;
    plan.push({ found: f, path, linkTo });
  }

  let read = 0;
  ctx.onProgress?.(0, total);
  for (const { found: f, path, linkTo } of plan) {
    if (ctx.signal.aborted) throw ctx.signal.reason;
    const abs = join(ctx.input, f.path);
    const base = { path, mode: f.stat.mode, mtime: f.stat.mtime, size: 0 };
    if (linkTo !== undefined) {
      await ctx.writer.add({ ...base, type: 'link', linkname: linkTo });
    } else if (f.type === 'file') {
      const size = f.stat.size;
      const data: AsyncIterable<Buffer> = size === 0 ? emptyData() : readFile(abs, size, ctx, (n) => {
        read += n;
        ctx.onProgress?.(read, total);
      });
      await ctx.writer.add({ ...base, type: 'file', size, data });
    } else if (f.type === 'symlink') {
      await ctx.writer.add({ ...base, type: 'symlink', linkname: await readlink(abs) });
    } else {
      // Directories, and special files which the writer's rules refuse with the entry's name.
      await ctx.writer.add({ ...base, type: f.type });
    }
  }
  ctx.onProgress?.(total, total);
  return prefix === '' ? null : prefix;
}

async function* emptyData(): AsyncGenerator<Buffer> {}

async function* readFile(abs: string, size: number, ctx: SourceContext, onRead: (n: number) => void): AsyncGenerator<Buffer> {
  // O_NOFOLLOW: a file swapped for a symlink between the walk and the read must not be followed.
  const stream = createReadStream(abs, {
    flags: (constants.O_RDONLY | constants.O_NOFOLLOW) as unknown as string,
    highWaterMark: READ_CHUNK,
    end: size - 1,
    signal: ctx.signal,
  });
  try {
    for await (const chunk of stream) {
      onRead((chunk as Buffer).length);
      yield chunk as Buffer;
    }
  } catch (err) {
    if (ctx.signal.aborted) throw ctx.signal.reason;
    throw new PackageError(`could not read ${abs}: ${(err as Error).message}`);
  } finally {
    stream.destroy();
  }
}

async function walk(root: string, maxEntries: number, signal: AbortSignal): Promise<Found[]> {
  const found: Found[] = [];
  const pending = [''];
  while (pending.length > 0) {
    if (signal.aborted) throw signal.reason;
    const dir = pending.pop()!;
    let names: string[];
    try {
      names = await readdir(join(root, dir));
    } catch (err) {
      throw new PackageError(`could not read directory ${join(root, dir)}: ${(err as Error).message}`);
    }
    for (const name of names) {
      const path = dir === '' ? name : `${dir}/${name}`;
      const stat = await lstat(join(root, path));
      found.push({ path, stat, type: typeOf(stat) });
      if (found.length > maxEntries) {
        throw new PackageError(`package has more than ${maxEntries} entries (the limit), reached at entry ${path}`);
      }
      if (stat.isDirectory()) pending.push(path);
    }
  }
  // Bytewise order puts every directory before its contents.
  const keyed = found.map((f) => ({ f, key: Buffer.from(f.path) }));
  keyed.sort((a, b) => Buffer.compare(a.key, b.key));
  return keyed.map((k) => k.f);
}

function typeOf(stat: Stats): string {
  if (stat.isFile()) return 'file';
  if (stat.isDirectory()) return 'directory';
  if (stat.isSymbolicLink()) return 'symlink';
  if (stat.isFIFO()) return 'fifo';
  if (stat.isCharacterDevice()) return 'character-device';
  if (stat.isBlockDevice()) return 'block-device';
  if (stat.isSocket()) return 'socket';
  return 'unknown';
}
