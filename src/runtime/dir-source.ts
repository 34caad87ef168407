// A plain directory as a runtime package: walked with lstat (symlinks are entries, never followed),
// emitted in bytewise path order so the same tree gives the same canonical tar on every host.
//
// The daemon reads the tree on a client's behalf with its own rights, so every directory and file is opened
// relative to its already opened parent without following symlinks (see no-follow.ts), checked to be the
// object the walk saw, and every file must be unchanged at the end of its read.
import type { BigIntStats } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { decideStrip, stripPath, type CanonicalWriter } from './canonical-writer.js';
import {
  changedError, listIn, lstatIn, openIn, readlinkIn, sameContent, type OpenedPackage, type ReadAccess,
} from './no-follow.js';
import { PackageError } from './types.js';

const READ_CHUNK = 1024 * 1024;
/** Directories held open at once while files are read (the walk holds one per level). */
const OPEN_DIRS = 16;
/** Deeper trees are refused: every level is an open descriptor during the walk. */
const MAX_DEPTH = 512;

export interface SourceContext {
  /** The package path as the client gave it: used in messages. */
  input: string;
  /** A path that reopens exactly the opened package file (archives). */
  readPath: string;
  /** The opened package (for a directory: its root, the base of every open). */
  opened: OpenedPackage;
  /** Whose right to read the package is checked, if anyone's. */
  access?: ReadAccess;
  writer: CanonicalWriter;
  strip: 'auto' | 'none';
  onProgress?: (readBytes: number, totalBytes: number) => void;
  signal: AbortSignal;
}

interface Found {
  path: string;
  stat: BigIntStats;
  type: string;
}

/** Returns the stripped top-level directory, or null. */
export async function produceFromDirectory(ctx: SourceContext): Promise<string | null> {
  const found = await walk(ctx);
  const prefix = decideStrip(found, ctx.strip);

  let total = 0;
  const firstPathOfInode = new Map<string, string>();
  const plan: { found: Found; path: string; linkTo?: string }[] = [];
  for (const f of found) {
    const path = stripPath(f.path, prefix);
    if (path === null) continue;
    let linkTo: string | undefined;
    if (f.type === 'file' && f.stat.nlink > 1n) {
      const key = `${f.stat.dev}:${f.stat.ino}`;
      const first = firstPathOfInode.get(key);
      // runtime.yml is always stored as a file: joblet and the agent read it, they do not resolve links.
      if (first !== undefined && path !== 'runtime.yml') linkTo = first;
      else if (first === undefined) firstPathOfInode.set(key, path);
    }
    if (f.type === 'file' && linkTo === undefined) total += Number(f.stat.size);
    plan.push({ found: f, path, linkTo });
  }

  const dirs = new DirHandles(ctx, found);
  try {
    let read = 0;
    ctx.onProgress?.(0, total);
    for (const { found: f, path, linkTo } of plan) {
      if (ctx.signal.aborted) throw ctx.signal.reason;
      const base = { path, mode: Number(f.stat.mode), mtime: f.stat.mtime, size: 0 };
      if (linkTo !== undefined) {
        await ctx.writer.add({ ...base, type: 'link', linkname: linkTo });
      } else if (f.type === 'file') {
        const size = Number(f.stat.size);
        const display = join(ctx.input, f.path);
        const parent = await dirs.get(parentOf(f.path));
        const file = await openIn(parent, nameOf(f.path), f.stat, display);
        const data = readFile(file, f.stat, display, ctx, (n) => {
          read += n;
          ctx.onProgress?.(read, total);
        });
        await ctx.writer.add({ ...base, type: 'file', size, data });
      } else if (f.type === 'symlink') {
        const parent = await dirs.get(parentOf(f.path));
        const display = join(ctx.input, f.path);
        let linkname: string;
        try {
          linkname = await readlinkIn(parent, nameOf(f.path));
          if (!sameContent(await lstatIn(parent, nameOf(f.path)), f.stat)) throw changedError(display);
        } catch (err) {
          if (err instanceof PackageError) throw err;
          throw changedError(display);
        }
        await ctx.writer.add({ ...base, type: 'symlink', linkname });
      } else {
        // Directories, and special files which the writer's rules refuse with the entry's name.
        await ctx.writer.add({ ...base, type: f.type });
      }
    }
    ctx.onProgress?.(total, total);
  } finally {
    await dirs.closeAll();
  }
  return prefix === '' ? null : prefix;
}

function parentOf(path: string): string {
  const slash = path.lastIndexOf('/');
  return slash < 0 ? '' : path.slice(0, slash);
}

function nameOf(path: string): string {
  return path.slice(path.lastIndexOf('/') + 1);
}

/**
 * Open directories of the tree by relative path, each reopened from its parent (never by a full path) and
 * checked against the walk; a few are kept, most recently used first, since files come in path order.
 */
class DirHandles {
  private readonly open = new Map<string, FileHandle>();
  private readonly stats = new Map<string, BigIntStats>();

  constructor(private readonly ctx: SourceContext, found: Found[]) {
    for (const f of found) if (f.type === 'directory') this.stats.set(f.path, f.stat);
  }

  async get(rel: string): Promise<FileHandle> {
    if (rel === '') return this.ctx.opened.handle;
    const cached = this.open.get(rel);
    if (cached) {
      this.open.delete(rel);
      this.open.set(rel, cached);
      return cached;
    }
    const parent = await this.get(parentOf(rel));
    const handle = await openIn(parent, nameOf(rel), this.stats.get(rel)!, join(this.ctx.input, rel));
    this.open.set(rel, handle);
    if (this.open.size > OPEN_DIRS) {
      const [oldest, h] = this.open.entries().next().value as [string, FileHandle];
      this.open.delete(oldest);
      await h.close().catch(() => {});
    }
    return handle;
  }

  async closeAll(): Promise<void> {
    for (const h of this.open.values()) await h.close().catch(() => {});
    this.open.clear();
  }
}

async function* readFile(
  file: FileHandle, walked: BigIntStats, display: string, ctx: SourceContext, onRead: (n: number) => void,
): AsyncGenerator<Buffer> {
  const size = Number(walked.size);
  let position = 0;
  try {
    while (position < size) {
      if (ctx.signal.aborted) throw ctx.signal.reason;
      const want = Math.min(READ_CHUNK, size - position);
      // A fresh buffer each time: the tar packer keeps what it is given.
      const buf = Buffer.allocUnsafe(want);
      let n: number;
      try {
        ({ bytesRead: n } = await file.read(buf, 0, want, position));
      } catch (err) {
        throw new PackageError(`could not read ${display}: ${(err as Error).message}`);
      }
      if (n === 0) throw changedError(display); // shorter than when the walk saw it
      position += n;
      onRead(n);
      yield n === want ? buf : buf.subarray(0, n);
    }
    // Size, mtime and ctime as the walk saw them: the bytes read are one version of the file.
    if (!sameContent(await file.stat({ bigint: true }), walked)) throw changedError(display);
  } finally {
    await file.close().catch(() => {});
  }
}

async function walk(ctx: SourceContext): Promise<Found[]> {
  const found: Found[] = [];
  const maxEntries = ctx.writer.limits.maxEntries;

  async function walkDir(dir: FileHandle, rel: string, depth: number): Promise<void> {
    if (ctx.signal.aborted) throw ctx.signal.reason;
    if (depth > MAX_DEPTH) throw new PackageError(`package is nested more than ${MAX_DEPTH} directories deep at ${join(ctx.input, rel)}`);
    let names: string[];
    try {
      names = await listIn(dir);
    } catch (err) {
      throw new PackageError(`could not read directory ${join(ctx.input, rel)}: ${(err as Error).message}`);
    }
    for (const name of names) {
      const path = rel === '' ? name : `${rel}/${name}`;
      let stat: BigIntStats;
      try {
        stat = await lstatIn(dir, name);
      } catch {
        throw changedError(join(ctx.input, path));
      }
      const type = typeOf(stat);
      if (type === 'file') ctx.access?.check(stat, 'read', join(ctx.input, path));
      found.push({ path, stat, type });
      if (found.length > maxEntries) {
        throw new PackageError(`package has more than ${maxEntries} entries (the limit), reached at entry ${path}`);
      }
      if (type === 'directory') {
        const child = await openIn(dir, name, stat, join(ctx.input, path));
        try {
          ctx.access?.check(stat, 'list', join(ctx.input, path));
          await walkDir(child, path, depth + 1);
        } finally {
          await child.close().catch(() => {});
        }
      }
    }
  }

  await walkDir(ctx.opened.handle, '', 0);
  // Bytewise order puts every directory before its contents.
  const keyed = found.map((f) => ({ f, key: Buffer.from(f.path) }));
  keyed.sort((a, b) => Buffer.compare(a.key, b.key));
  return keyed.map((k) => k.f);
}

function typeOf(stat: BigIntStats): string {
  if (stat.isFile()) return 'file';
  if (stat.isDirectory()) return 'directory';
  if (stat.isSymbolicLink()) return 'symlink';
  if (stat.isFIFO()) return 'fifo';
  if (stat.isCharacterDevice()) return 'character-device';
  if (stat.isBlockDevice()) return 'block-device';
  if (stat.isSocket()) return 'socket';
  return 'unknown';
}
