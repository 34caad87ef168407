// Extraction of a (canonical) tar into an empty directory. It trusts nothing: the tar may come from a
// peer, so every safety rule is applied again, files are created with O_NOFOLLOW|O_EXCL so that no
// write can land outside destDir, and the only directories created implicitly are parents of paths
// the rules have already shown to be free of symlinks.
import { constants } from 'node:fs';
import { chmod, chown, lchown, link, lstat, lutimes, mkdir, open, symlink, unlink, utimes, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { EntryRules, hardlinkTarget, normaliseEntryPath } from './entry-rules.js';
import { readTarEntries } from './tar-reader.js';
import { PackageError, type PackageLimits } from './types.js';

export interface ExtractOptions {
  limits?: PackageLimits;
  /** Owner for everything written (lchown); default: whoever runs the agent. */
  owner?: { uid: number; gid: number };
}

const WRITE_FLAGS = constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW;
const IMPLICIT_DIR_MODE = 0o755;
const EMPTY = Buffer.alloc(0);
// Read once: files are created with their final mode, and only fixed with fchmod when the umask
// removed some of its bits (one system call less per file in the common case).
const UMASK = process.umask();
// Files whose metadata and close are still in flight: enough to keep the thread pool busy, few
// enough to stay far below any descriptor limit.
const MAX_BACKGROUND = 32;
// File data held by those background writes, so a run of small files cannot pin much memory.
const MAX_BACKGROUND_BYTES = 8 * 1024 * 1024;

interface DirAttributes {
  mode: number;
  mtime: Date | null;
}

/**
 * Extracts `tar` into `destDir`, which must exist and be empty. Rejects with a PackageError on the
 * first bad entry; whatever was written stays in destDir for the caller to discard.
 */
export async function extractTar(tar: Readable, destDir: string, opts: ExtractOptions = {}): Promise<{ entries: number; unpackedBytes: number }> {
  const rules = new EntryRules(opts.limits);
  // Directory modes and mtimes are applied at the end: creating children changes a directory's mtime,
  // and a read-only directory mode would stop its own children from being created.
  const dirs = new Map<string, DirAttributes>();
  const extractor = new Extractor(destDir, opts.owner, dirs);
  const entries = readTarEntries(tar, {
    invalid: (detail) => new PackageError(`invalid tar archive: ${detail}`),
    sourceError: (err) => new PackageError(`could not read the tar stream: ${err.message}`),
  });
  try {
    for await (const entry of entries) {
      const header = entry.header;
      const rawType = header.type as string | null;
      const type = rawType === 'contiguous-file' ? 'file' : (rawType ?? 'unknown');
      const path = normaliseEntryPath(header.name);
      if (path === '') {
        if (type !== 'directory') throw new PackageError(`entry ${header.name} names the runtime root but is not a directory`);
        await drain(entry.data);
        continue;
      }
      const linkTarget = type === 'link' ? hardlinkTarget(path, header.linkname ?? '', '') : undefined;
      const previous = rules.admit({ path, type, size: header.size ?? 0, linkTarget });
      const mode = (header.mode ?? 0o644) & 0o7777 & ~0o6000;
      const mtime = header.mtime ?? new Date(0);
      switch (type) {
        case 'directory':
          await extractor.directory(path, mode, mtime);
          break;
        case 'file':
          await extractor.file(path, mode, mtime, entry.data, header.size ?? 0, previous !== undefined);
          break;
        case 'symlink':
          if (!header.linkname) throw new PackageError(`symlink ${path} has an empty target`);
          await extractor.symlink(path, header.linkname, mtime, previous !== undefined);
          break;
        case 'link':
          await extractor.hardlink(path, linkTarget!, previous !== undefined);
          break;
      }
      if (type !== 'file') await drain(entry.data);
    }
    await extractor.finishDirectories();
  } catch (err) {
    await extractor.settle().catch(() => {});
    if (err instanceof PackageError) throw err;
    throw new PackageError(`extraction into ${destDir} failed: ${(err as Error).message}`);
  }
  return { entries: rules.entries, unpackedBytes: rules.unpackedBytes };
}

class Extractor {
  // Directories known to exist (created by us, explicitly or as parents); '' is destDir itself.
  private readonly existing = new Set<string>(['']);
  private readonly background = new Set<Promise<void>>();
  private backgroundBytes = 0;
  // The background task of each path still being written: a later entry replacing or hardlinking it waits.
  private readonly creations = new Map<string, Promise<void>>();
  private backgroundError: Error | null = null;

  constructor(
    private readonly destDir: string,
    private readonly owner: { uid: number; gid: number } | undefined,
    private readonly dirs: Map<string, DirAttributes>,
  ) {}

  private abs(path: string): string {
    return join(this.destDir, path);
  }

  async directory(path: string, mode: number, mtime: Date): Promise<void> {
    await this.ensureDir(path);
    this.dirs.set(path, { mode, mtime });
  }

  async file(path: string, mode: number, mtime: Date, data: AsyncIterable<Buffer>, size: number, replace: boolean): Promise<void> {
    await this.ensureParent(path);
    await this.replaceable(path, replace);
    const chunks = data[Symbol.asyncIterator]();
    const first = await chunks.next();
    const firstChunk = first.done ? EMPTY : first.value;
    if (firstChunk.length === size) {
      // The whole file is one chunk the tar parser already holds (no copy is made): the file can be
      // written entirely in the background while the next entries are parsed. For trees of small
      // files the round trips to the thread pool (open, write, chmod, utimes, close) dominate otherwise.
      if (!first.done && !(await chunks.next()).done) throw new PackageError(`entry ${path} has more data than its size ${size}`);
      while (this.backgroundBytes > 0 && this.backgroundBytes + size > MAX_BACKGROUND_BYTES && this.background.size > 0) {
        await Promise.race(this.background);
      }
      this.backgroundBytes += size;
      const task = this.inBackground(path, async () => {
        try {
          const handle = await open(this.abs(path), WRITE_FLAGS, mode);
          try {
            if (firstChunk.length > 0) await handle.write(firstChunk, 0, firstChunk.length, 0);
            await this.finishFile(handle, mode, mtime);
          } finally {
            await handle.close();
          }
        } finally {
          this.backgroundBytes -= size;
        }
      });
      await task;
      return;
    }

    const handle = await open(this.abs(path), WRITE_FLAGS, mode);
    try {
      let written = 0;
      for (let next = first; !next.done; next = await chunks.next()) {
        // Each write is awaited, so the tar parser is held back while the disk catches up.
        await handle.write(next.value, 0, next.value.length, written);
        written += next.value.length;
      }
      if (written !== size) throw new PackageError(`entry ${path} ended after ${written} of ${size} bytes`);
    } catch (err) {
      await handle.close();
      throw err;
    }
    // The rest works on the open descriptor, so it can overlap with the next entries too.
    await this.inBackground(path, async () => {
      try {
        await this.finishFile(handle, mode, mtime);
      } finally {
        await handle.close();
      }
    });
  }

  private async finishFile(handle: FileHandle, mode: number, mtime: Date): Promise<void> {
    if (this.owner) await handle.chown(this.owner.uid, this.owner.gid);
    // open() already applied the mode unless the umask took bits away (or chown cleared any).
    if (this.owner || (mode & UMASK) !== 0) await handle.chmod(mode);
    await handle.utimes(mtime, mtime);
  }

  async symlink(path: string, target: string, mtime: Date, replace: boolean): Promise<void> {
    await this.ensureParent(path);
    await this.replaceable(path, replace);
    await symlink(target, this.abs(path));
    if (this.owner) await lchown(this.abs(path), this.owner.uid, this.owner.gid);
    await lutimes(this.abs(path), mtime, mtime);
  }

  async hardlink(path: string, target: string, replace: boolean): Promise<void> {
    await this.ensureParent(path);
    await this.replaceable(path, replace);
    await this.creations.get(target);
    // link(2) does not follow a symlink target: a hardlink to a symlink links the symlink itself.
    await link(this.abs(target), this.abs(path));
  }

  /** Waits until a file still being created at `path` exists, and unlinks it when it is to be replaced. */
  private async replaceable(path: string, replace: boolean): Promise<void> {
    await this.creations.get(path);
    if (this.backgroundError !== null) throw this.backgroundError;
    if (replace) await unlink(this.abs(path));
  }

  /**
   * Starts `task` (which creates or finishes the file at `path`) without waiting for it, keeping at most
   * MAX_BACKGROUND in flight. Resolves once there is room for another; a failed task is rethrown here
   * or by the next call.
   */
  private async inBackground(path: string, task: () => Promise<void>): Promise<void> {
    if (this.backgroundError !== null) throw this.backgroundError;
    const running: Promise<void> = task().then(
      () => this.forget(path, running),
      (err: unknown) => {
        this.forget(path, running);
        this.backgroundError ??= err as Error;
      },
    );
    this.background.add(running);
    this.creations.set(path, running);
    if (this.background.size >= MAX_BACKGROUND) await Promise.race(this.background);
    if (this.backgroundError !== null) throw this.backgroundError;
  }

  private forget(path: string, task: Promise<void>): void {
    this.background.delete(task);
    if (this.creations.get(path) === task) this.creations.delete(path);
  }

  /** Waits for every background task; called before returning, also on failure, so no write outlives extractTar. */
  async settle(): Promise<void> {
    while (this.background.size > 0) await Promise.all(this.background);
    if (this.backgroundError !== null) throw this.backgroundError;
  }

  /** Applies directory attributes deepest first, so setting a parent's mtime is the last change to it. */
  async finishDirectories(): Promise<void> {
    await this.settle();
    const paths = [...this.dirs.keys()].sort((a, b) => depth(b) - depth(a));
    for (const path of paths) {
      const { mode, mtime } = this.dirs.get(path)!;
      const abs = this.abs(path);
      if (this.owner) await chown(abs, this.owner.uid, this.owner.gid);
      await chmod(abs, mode);
      if (mtime) await utimes(abs, mtime, mtime);
    }
  }

  private async ensureParent(path: string): Promise<void> {
    const slash = path.lastIndexOf('/');
    if (slash !== -1) await this.ensureDir(path.slice(0, slash));
  }

  private async ensureDir(path: string): Promise<void> {
    if (this.existing.has(path)) return;
    await this.ensureParent(path);
    try {
      await mkdir(this.abs(path), { mode: 0o700 });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      // Only possible when destDir was not empty: never build on something we did not create.
      if (!(await lstat(this.abs(path))).isDirectory()) throw new PackageError(`${this.abs(path)} exists and is not a directory`);
    }
    this.existing.add(path);
    // Implicit parents get a conventional mode; an explicit entry later overrides it.
    if (!this.dirs.has(path)) this.dirs.set(path, { mode: IMPLICIT_DIR_MODE, mtime: null });
  }
}

function depth(path: string): number {
  let n = 0;
  for (let i = 0; i < path.length; i++) if (path.charCodeAt(i) === 47) n++;
  return n;
}

async function drain(stream: AsyncIterable<Buffer>): Promise<void> {
  for await (const _ of stream) {
    // Bodies of entries that have none on disk.
  }
}
