// Extraction of a (canonical) tar into an empty directory. It trusts nothing: the tar may come from a
// peer, so every safety rule is applied again, files are created with O_NOFOLLOW|O_EXCL so that no
// write can land outside destDir, and the only directories created implicitly are parents of paths
// the rules have already shown to be free of symlinks.
import { constants } from 'node:fs';
import { chmod, lchown, lstat, link, lutimes, mkdir, open, symlink, unlink, utimes, chown } from 'node:fs/promises';
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
        await drain(entry);
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
          await extractor.file(path, mode, mtime, entry, header.size ?? 0, previous !== undefined);
          break;
        case 'symlink':
          if (!header.linkname) throw new PackageError(`symlink ${path} has an empty target`);
          await extractor.symlink(path, header.linkname, mtime, previous !== undefined);
          break;
        case 'link':
          await extractor.hardlink(path, linkTarget!, previous !== undefined);
          break;
      }
      if (type !== 'file') await drain(entry);
    }
    await extractor.finishDirectories();
  } catch (err) {
    if (err instanceof PackageError) throw err;
    throw new PackageError(`extraction into ${destDir} failed: ${(err as Error).message}`);
  }
  return { entries: rules.entries, unpackedBytes: rules.unpackedBytes };
}

class Extractor {
  // Directories known to exist (created by us, explicitly or as parents); '' is destDir itself.
  private readonly existing = new Set<string>(['']);

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
    if (replace) await unlink(this.abs(path));
    const handle = await open(this.abs(path), WRITE_FLAGS, 0o600);
    try {
      let written = 0;
      for await (const chunk of data) {
        // Each write is awaited, so the tar parser is held back while the disk catches up.
        await handle.write(chunk, 0, chunk.length, written);
        written += chunk.length;
      }
      if (written !== size) throw new PackageError(`entry ${path} ended after ${written} of ${size} bytes`);
      if (this.owner) await handle.chown(this.owner.uid, this.owner.gid);
      // After chown, which would clear setuid bits anyway; the mode never carries them.
      await handle.chmod(mode);
      await handle.utimes(mtime, mtime);
    } finally {
      await handle.close();
    }
  }

  async symlink(path: string, target: string, mtime: Date, replace: boolean): Promise<void> {
    await this.ensureParent(path);
    if (replace) await unlink(this.abs(path));
    await symlink(target, this.abs(path));
    if (this.owner) await lchown(this.abs(path), this.owner.uid, this.owner.gid);
    await lutimes(this.abs(path), mtime, mtime);
  }

  async hardlink(path: string, target: string, replace: boolean): Promise<void> {
    await this.ensureParent(path);
    if (replace) await unlink(this.abs(path));
    // link(2) does not follow a symlink target: a hardlink to a symlink links the symlink itself.
    await link(this.abs(target), this.abs(path));
  }

  /** Applies directory attributes deepest first, so setting a parent's mtime is the last change to it. */
  async finishDirectories(): Promise<void> {
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
