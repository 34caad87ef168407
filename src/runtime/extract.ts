// Extraction of a tree (TreeWriter: entries from the entry list and content stream, or from a canonical
// tar via extractTar) into an empty directory. It trusts nothing: the tar may come from a
// peer, so every safety rule is applied again, files are created with O_NOFOLLOW|O_EXCL so that no
// write can land outside destDir, and the only directories created implicitly are parents of paths
// the rules have already shown to be free of symlinks.
import { constants } from 'node:fs';
import { open, unlink, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { EntryRules, hardlinkTarget, normaliseEntryPath } from './entry-rules.js';
import { readTarEntries } from './tar-reader.js';
import type { TreeEntry, TreeSink } from './tree-entry.js';
import { SMALL_FILE_MAX, SmallFileWriter } from './small-files.js';
import { PackageError, type PackageLimits } from './types.js';

export interface ExtractOptions {
  limits?: PackageLimits;
  /** Owner for everything written (lchown); default: whoever runs the agent. */
  owner?: { uid: number; gid: number };
}

const WRITE_FLAGS = constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW;
// For a file this extraction created itself (placeFile): never O_CREAT, never through a symlink. Read and
// write: its pieces are written through the handle, then it is read back through it to be hashed.
const REOPEN_FLAGS = constants.O_RDWR | constants.O_NOFOLLOW;
// Mode of a placed file until its last byte is in: writable by the agent whatever its final mode.
const PLACED_MODE = 0o600;
const IMPLICIT_DIR_MODE = 0o755;
// Read once: files are created with their final mode, and only fixed with fchmod when the umask
// removed some of its bits (one system call less per file in the common case).
const UMASK = process.umask();
// Large files whose metadata and close are still in flight: enough to keep the thread pool busy, few
// enough to stay far below any descriptor limit.
const MAX_BACKGROUND = 32;
// A large file's writes in flight, in bytes of its pieces (which stay in memory until written). Awaiting each
// write held the producer (parsing, hashing, chunking at publish) for a thread-pool round trip per piece, which
// on a busy host waits behind the compression jobs.
const MAX_FILE_WRITE_BYTES = 4 * 1024 * 1024;

/** The mode an entry is installed with: its permission bits without setuid and setgid. */
export function installedMode(mode: number): number {
  return mode & 0o7777 & ~0o6000;
}

export interface DirAttributes {
  mode: number;
  mtime: Date | null;
}

/**
 * Writes a tree, entry by entry, into `destDir`, which must exist and be empty. It applies every safety
 * rule again (the entries may come from a peer). A rejected call leaves whatever was written in destDir
 * for the caller to discard; call `abort()` then, so no background write outlives it.
 */
export class TreeWriter implements TreeSink {
  private readonly rules: EntryRules;
  // Directory modes and mtimes are applied at the end: creating children changes a directory's mtime,
  // and a read-only directory mode would stop its own children from being created.
  private readonly dirs = new Map<string, DirAttributes>();
  private readonly extractor: Extractor;
  private file: OpenFile | null = null;

  constructor(private readonly destDir: string, opts: ExtractOptions = {}) {
    this.rules = new EntryRules(opts.limits);
    this.extractor = new Extractor(destDir, opts.owner, this.dirs);
  }

  get entries(): number {
    return this.rules.entries;
  }

  get unpackedBytes(): number {
    return this.rules.unpackedBytes;
  }

  async begin(e: TreeEntry): Promise<void> {
    const previous = this.rules.admit({
      path: e.path, type: e.type, size: e.type === 'file' ? e.size : 0, linkTarget: e.type === 'link' ? e.target : undefined,
    });
    const replace = previous !== undefined;
    const mode = 'mode' in e ? installedMode(e.mode) : 0;
    switch (e.type) {
      case 'directory':
        await this.extractor.directory(e.path, mode, new Date(e.mtime * 1000));
        return;
      case 'symlink':
        if (!e.target) throw new PackageError(`symlink ${e.path} has an empty target`);
        await this.extractor.symlink(e.path, e.target, new Date(e.mtime * 1000), replace);
        return;
      case 'link':
        await this.extractor.hardlink(e.path, e.target, replace);
        return;
      case 'file':
        this.file = await this.extractor.openFile(e.path, mode, new Date(e.mtime * 1000), e.size, replace);
    }
  }

  async write(piece: Buffer): Promise<void> {
    if (this.file === null) throw new PackageError('file data arrived outside a file entry');
    await this.file.write(piece);
  }

  async end(): Promise<void> {
    const file = this.file;
    this.file = null;
    if (file !== null) await file.end();
  }

  /** Applies directory attributes once every file is written. */
  async finish(): Promise<{ entries: number; unpackedBytes: number }> {
    try {
      await this.extractor.finishDirectories();
    } finally {
      await this.extractor.close();
    }
    return { entries: this.rules.entries, unpackedBytes: this.rules.unpackedBytes };
  }

  async abort(): Promise<void> {
    await this.file?.close().catch(() => {});
    this.file = null;
    await this.extractor.settle().catch(() => {});
    await this.extractor.close();
  }

  /** The error to report for a failure inside the writer: PackageErrors as they are, the rest with the place. */
  wrap(err: unknown): Error {
    if (err instanceof PackageError) return err;
    return new PackageError(`extraction into ${this.destDir} failed: ${(err as Error).message}`);
  }
}

/**
 * Extracts `tar` into `destDir`, which must exist and be empty. Rejects with a PackageError on the
 * first bad entry; whatever was written stays in destDir for the caller to discard.
 */
export async function extractTar(tar: Readable, destDir: string, opts: ExtractOptions = {}): Promise<{ entries: number; unpackedBytes: number }> {
  const writer = new TreeWriter(destDir, opts);
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
      const mode = (header.mode ?? 0o644) & 0o7777 & ~0o6000;
      const mtime = Math.max(0, Math.floor((header.mtime ?? new Date(0)).getTime() / 1000));
      let tree: TreeEntry;
      if (type === 'directory') tree = { type, path, mode, mtime };
      else if (type === 'file') tree = { type, path, mode, mtime, size: header.size ?? 0, sha256: '' };
      else if (type === 'symlink') tree = { type, path, mtime, target: header.linkname ?? '' };
      else if (type === 'link') tree = { type, path, target: hardlinkTarget(path, header.linkname ?? '', '') };
      else {
        // Refused by the rules with the sentence that names the kind.
        new EntryRules(opts.limits).admit({ path, type, size: 0 });
        throw new PackageError(`entry ${path} has the unsupported type ${type}`);
      }
      await writer.begin(tree);
      if (type === 'file') for await (const piece of entry.data) await writer.write(piece);
      else await drain(entry.data);
      await writer.end();
    }
    return await writer.finish();
  } catch (err) {
    await writer.abort();
    throw writer.wrap(err);
  }
}

/** A regular file being written: small ones are gathered and written in the background in one go. */
interface OpenFile {
  write(piece: Buffer): Promise<void>;
  end(): Promise<void>;
  close(): Promise<void>;
}

/**
 * The file-system half of an extraction: directories, files, links, with the background work that overlaps them.
 * The callers (TreeWriter in entry order, AnyOrderTreeWriter in the order content arrives) apply the safety
 * rules first.
 */
export class Extractor {
  // Directories known to exist (created by us, explicitly or as parents); '' is destDir itself.
  private readonly existing = new Set<string>(['']);
  private readonly background = new Set<Promise<void>>();
  // The background task of each large file still being finished: a later entry replacing or hardlinking it waits.
  private readonly creations = new Map<string, Promise<void>>();
  private backgroundError: Error | null = null;
  private readonly small: SmallFileWriter;

  constructor(
    private readonly destDir: string,
    private readonly owner: { uid: number; gid: number } | undefined,
    private readonly dirs: Map<string, DirAttributes>,
  ) {
    this.small = new SmallFileWriter(owner ?? null);
  }

  private abs(path: string): string {
    return join(this.destDir, path);
  }

  async directory(path: string, mode: number, mtime: Date): Promise<void> {
    await this.ensureDir(path);
    this.dirs.set(path, { mode, mtime });
  }

  /**
   * A file of `size` bytes at `path`. Files up to SMALL_FILE_MAX are gathered in memory and handed to the
   * small-file worker, which creates them in batches while the next entries are parsed: for trees of small
   * files, the round trips to the thread pool (open, write, utimes, close) dominate otherwise. Larger files
   * are written as they come, with up to MAX_FILE_WRITE_BYTES in flight, so the producer is held back only while
   * the disk catches up. A piece must stay unchanged until `end` (or `close`) resolves.
   */
  async openFile(path: string, mode: number, mtime: Date, size: number, replace: boolean): Promise<OpenFile> {
    await this.ensureParent(path);
    await this.replaceable(path, replace);
    if (size <= SMALL_FILE_MAX) {
      const pieces: Buffer[] = [];
      let got = 0;
      return {
        write: async (piece) => {
          got += piece.length;
          if (got > size) throw new PackageError(`entry ${path} has more data than its size ${size}`);
          pieces.push(piece);
        },
        end: async () => {
          if (got !== size) throw new PackageError(`entry ${path} ended after ${got} of ${size} bytes`);
          await this.writeSmallFile(path, mode, mtime, pieces, size);
        },
        close: async () => {},
      };
    }
    await this.parentReady(path);
    const handle = await open(this.abs(path), WRITE_FLAGS, mode);
    let written = 0;
    let closed = false;
    const writes = new Set<Promise<void>>();
    let writingBytes = 0;
    let failure: unknown = null;
    return {
      write: async (piece) => {
        if (written + piece.length > size) throw new PackageError(`entry ${path} has more data than its size ${size}`);
        const at = written;
        written += piece.length;
        const done: Promise<void> = writeAt(handle, piece, at, path).then(
          () => {},
          (err: unknown) => {
            failure ??= err;
          },
        ).then(() => {
          writes.delete(done);
          writingBytes -= piece.length;
        });
        writes.add(done);
        writingBytes += piece.length;
        while (writingBytes > MAX_FILE_WRITE_BYTES) await Promise.race(writes);
        if (failure !== null) throw failure;
      },
      end: async () => {
        try {
          if (written !== size) throw new PackageError(`entry ${path} ended after ${written} of ${size} bytes`);
          await Promise.all(writes);
          if (failure !== null) throw failure;
        } catch (err) {
          // The caller forgets this file now: its descriptor is closed here.
          await Promise.all(writes);
          closed = true;
          await handle.close().catch(() => {});
          throw err;
        }
        closed = true;
        // The rest works on the open descriptor, so it can overlap with the next entries too.
        await this.inBackground(path, async () => {
          try {
            await this.finishFile(handle, mode, mtime);
          } finally {
            await handle.close();
          }
        });
      },
      close: async () => {
        // No write may outlive the descriptor it goes through.
        await Promise.all(writes);
        if (!closed) await handle.close();
        closed = true;
      },
    };
  }

  /**
   * Creates the file at `path` empty, writable (PLACED_MODE), for its bytes to be written at their offsets in
   * any order (through openPlaced), then finished with finishPlaced.
   */
  async placeFile(path: string): Promise<void> {
    await this.ensureParent(path);
    await this.small.add(this.abs(path), PLACED_MODE, true, 0, [], 0);
  }

  /** A read-write handle on a file created by placeFile, once it exists; the caller closes it or hands it to finishPlaced. */
  async openPlaced(path: string): Promise<FileHandle> {
    await this.small.created(this.abs(path));
    return open(this.abs(path), REOPEN_FLAGS);
  }

  /**
   * In the background: `check` reads the complete placed file through `handle` (to verify it), then the file
   * gets its owner, final mode and mtime, and the handle is closed. Resolves once there is room for more
   * background work.
   */
  async finishPlaced(path: string, opened: Promise<FileHandle>, mode: number, mtime: Date, check: (handle: FileHandle) => Promise<void>): Promise<void> {
    await this.inBackground(path, async () => {
      const handle = await opened;
      try {
        await check(handle);
        if (this.owner) await handle.chown(this.owner.uid, this.owner.gid);
        await handle.chmod(mode);
        await handle.utimes(mtime, mtime);
      } finally {
        await handle.close();
      }
    });
  }

  private async writeSmallFile(path: string, mode: number, mtime: Date, pieces: Buffer[], size: number): Promise<void> {
    // open() applies the mode unless the umask takes bits away; a chown would clear set-id bits (none are kept).
    const fixMode = this.owner !== undefined || (mode & UMASK) !== 0;
    await this.small.add(this.abs(path), mode, fixMode, mtime.getTime() / 1000, pieces, size);
  }

  private async finishFile(handle: FileHandle, mode: number, mtime: Date): Promise<void> {
    if (this.owner) await handle.chown(this.owner.uid, this.owner.gid);
    // open() already applied the mode unless the umask took bits away (or chown cleared any).
    if (this.owner || (mode & UMASK) !== 0) await handle.chmod(mode);
    await handle.utimes(mtime, mtime);
  }

  /** Symlinks and hardlinks are made by the small-file worker too: one round trip per batch, not three per link. */
  async symlink(path: string, target: string, mtime: Date, replace: boolean): Promise<void> {
    await this.ensureParent(path);
    await this.replaceable(path, replace);
    await this.small.symlink(this.abs(path), target, mtime.getTime() / 1000);
  }

  async hardlink(path: string, target: string, replace: boolean): Promise<void> {
    await this.ensureParent(path);
    await this.replaceable(path, replace);
    // A target made by the worker is made before this link (its queue is in order); one made here, a large file,
    // exists since its open, but its background finish is waited for as before.
    await this.creations.get(target);
    await this.small.link(this.abs(path), this.abs(target));
  }

  /** Waits until a file still being created at `path` exists, and unlinks it when it is to be replaced. */
  private async replaceable(path: string, replace: boolean): Promise<void> {
    await this.created(path);
    if (this.backgroundError !== null) throw this.backgroundError;
    if (!replace) return;
    // A hardlink to this path may still wait in the worker's queue: it must be made before the unlink. Replacing
    // an entry is rare, so waiting for the whole queue costs nothing in the common case.
    await this.small.drain();
    await unlink(this.abs(path));
  }

  /** Waits until a file still being created at `path` (by either writer) exists. */
  private async created(path: string): Promise<void> {
    await this.creations.get(path);
    await this.small.created(this.abs(path));
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
    try {
      await this.small.drain();
    } finally {
      while (this.background.size > 0) await Promise.all(this.background);
    }
    if (this.backgroundError !== null) throw this.backgroundError;
  }

  /** Stops the small-file worker once what it holds is written; after settle(), or to abort. */
  async close(): Promise<void> {
    await this.small.close();
  }

  /** Applies directory attributes deepest first, so setting a parent's mtime is the last change to it. */
  async finishDirectories(): Promise<void> {
    await this.settle();
    const paths = [...this.dirs.keys()].sort((a, b) => depth(b) - depth(a));
    for (const path of paths) {
      const { mode, mtime } = this.dirs.get(path)!;
      await this.small.setDirectoryAttributes(this.abs(path), mode, mtime ? mtime.getTime() / 1000 : -1);
    }
    await this.small.drain();
  }

  private async ensureParent(path: string): Promise<void> {
    const slash = path.lastIndexOf('/');
    if (slash !== -1) await this.ensureDir(path.slice(0, slash));
  }

  /**
   * Queues the directory (and its missing parents) to the small-file worker, which creates it before anything
   * queued later. Work done here on the main thread (a large file) waits for it with parentReady().
   */
  private async ensureDir(path: string): Promise<void> {
    if (this.existing.has(path)) return;
    await this.ensureParent(path);
    await this.small.mkdir(this.abs(path));
    this.existing.add(path);
    // Implicit parents get a conventional mode; an explicit entry later overrides it.
    if (!this.dirs.has(path)) this.dirs.set(path, { mode: IMPLICIT_DIR_MODE, mtime: null });
  }

  /** Resolves once the parent directory of `path` exists on disk. */
  private async parentReady(path: string): Promise<void> {
    const slash = path.lastIndexOf('/');
    if (slash !== -1) await this.small.created(this.abs(path.slice(0, slash)));
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

/** Writes all of `piece` at `position` of `path`: a short write (the kernel may return one) goes on from where it stopped. */
async function writeAt(handle: FileHandle, piece: Buffer, position: number, path: string): Promise<void> {
  let done = 0;
  while (done < piece.length) {
    const { bytesWritten } = await handle.write(piece, done, piece.length - done, position + done);
    if (bytesWritten === 0) throw new Error(`writing ${path} made no progress at byte ${position + done}`);
    done += bytesWritten;
  }
}
