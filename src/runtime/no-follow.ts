// Opening a package without following symlinks anywhere on the way, for a daemon that reads paths on a
// client's behalf with more rights than the client.
//
// The attack: a client swaps a directory of its package (or of the path leading to it) for a symlink to
// something only the daemon may read, between the daemon's look and its read. O_NOFOLLOW alone protects only
// the last component of a path. Node has no openat(), so every component is opened relative to the already
// opened parent through /proc/self/fd/<parent fd>/<name>: the kernel resolves the first part to exactly the
// directory we hold open (wherever it has been renamed to) and O_NOFOLLOW refuses a symlink as the name.
// Every opened directory and file is compared (device and inode) with what lstat saw, and a file whose size,
// mtime or ctime changed by the end of its read is refused: its bytes may be a mix of two versions.
import { constants, type BigIntStats } from 'node:fs';
import { lstat, open, readdir, readlink, type FileHandle } from 'node:fs/promises';
import { PackageError } from './types.js';

/** What the client must be able to do with a path: pass through a directory, list it, or read a file. */
export type AccessNeed = 'search' | 'list' | 'read';

/** A policy on whose behalf the package is read; `check` throws a PackageError naming the path. */
export interface ReadAccess {
  check(stat: BigIntStats, need: AccessNeed, path: string): void;
}

const DIR_FLAGS = constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW;
// O_NONBLOCK: a fifo swapped in after the lstat must not block the open for ever.
const FILE_FLAGS = constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK;

/** `/proc/self/fd/<fd>`: a path that names exactly the open file or directory. */
export function fdPath(handle: FileHandle): string {
  return `/proc/self/fd/${handle.fd}`;
}

/**
 * The same file system object: device and inode, and since a freed inode number is handed out again at
 * once (a file deleted and a fifo made in its place can share it), also its type and, except for
 * directories, its ctime. A directory's ctime moves whenever an entry is added or removed in it (think of
 * /tmp), and a new directory in the place of an old one cannot lead anywhere the client could not go.
 */
export function sameObject(a: BigIntStats, b: BigIntStats): boolean {
  if (a.dev !== b.dev || a.ino !== b.ino || (a.mode & 0o170000n) !== (b.mode & 0o170000n)) return false;
  return a.isDirectory() || a.ctimeNs === b.ctimeNs;
}

/** Also size and mtime (nanoseconds) unchanged; ctime (in sameObject) moves even when mtime is set back by hand. */
export function sameContent(a: BigIntStats, b: BigIntStats): boolean {
  return sameObject(a, b) && a.size === b.size && a.mtimeNs === b.mtimeNs;
}

export function changedError(path: string): PackageError {
  return new PackageError(`${path} changed while the package was being read; publish it again once it is no longer being modified`);
}

/** lstat of `name` inside the open directory `dir`. */
export async function lstatIn(dir: FileHandle, name: string): Promise<BigIntStats> {
  return lstat(`${fdPath(dir)}/${name}`, { bigint: true });
}

export async function listIn(dir: FileHandle): Promise<string[]> {
  return readdir(fdPath(dir));
}

export async function readlinkIn(dir: FileHandle, name: string): Promise<string> {
  return readlink(`${fdPath(dir)}/${name}`);
}

/**
 * Opens `name` inside `dir` without following a symlink, and checks it is the object `expected` (from an
 * earlier lstat) describes. `display` names it in messages.
 */
export async function openIn(dir: FileHandle, name: string, expected: BigIntStats, display: string): Promise<FileHandle> {
  const isDir = expected.isDirectory();
  if (!isDir && !expected.isFile()) throw new PackageError(`${display} is neither a regular file nor a directory`);
  let handle: FileHandle;
  try {
    handle = await open(`${fdPath(dir)}/${name}`, isDir ? DIR_FLAGS : FILE_FLAGS);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    // A symlink (ELOOP), or a directory swapped for something else, or gone: all are changes since the lstat.
    if (code === 'ELOOP' || code === 'ENOTDIR' || code === 'ENOENT' || code === 'ENXIO') throw changedError(display);
    throw new PackageError(`could not open ${display}: ${(err as Error).message}`);
  }
  try {
    const now = await handle.stat({ bigint: true });
    if (!sameObject(now, expected)) throw changedError(display);
    return handle;
  } catch (err) {
    await handle.close().catch(() => {});
    throw err;
  }
}

export interface OpenedPackage {
  handle: FileHandle;
  /** fstat of `handle` when it was opened. */
  stat: BigIntStats;
  /** A path that reopens exactly this file, for readers that take a path. */
  readPath: string;
  /** Throws when the (archive) file's size, mtime or ctime differ from the moment it was opened. */
  assertUnchanged(): Promise<void>;
  close(): Promise<void>;
}

/**
 * Opens the absolute path `abs` component by component from `/`, never following a symlink: a package
 * path that goes through one is refused (the client resolves its path before sending it). `access`, when
 * given, must allow passing through every directory on the way and reading (listing) the package itself.
 */
export async function openPackage(abs: string, access?: ReadAccess): Promise<OpenedPackage> {
  if (!abs.startsWith('/')) throw new PackageError(`package path ${abs} is not absolute`);
  const parts = abs.split('/').filter((p) => p !== '');
  if (parts.some((p) => p === '.' || p === '..')) throw new PackageError(`package path ${abs} contains '.' or '..' components`);
  let dir: FileHandle;
  try {
    dir = await open('/', DIR_FLAGS);
    await lstat(`${fdPath(dir)}/.`);
  } catch (err) {
    throw new PackageError(`cannot open packages safely: /proc/self/fd is not usable (${(err as Error).message})`);
  }
  let dirStat = await dir.stat({ bigint: true });
  let here = '/';
  try {
    for (let i = 0; i < parts.length; i++) {
      const name = parts[i]!;
      const next = here === '/' ? `/${name}` : `${here}/${name}`;
      access?.check(dirStat, 'search', here);
      let st: BigIntStats;
      try {
        st = await lstatIn(dir, name);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw new PackageError(`package ${abs} does not exist`);
        throw new PackageError(`could not read package ${abs}: ${(err as Error).message}`);
      }
      const last = i === parts.length - 1;
      if (st.isSymbolicLink()) {
        throw new PackageError(`package path ${next} is a symlink; symlinks are not followed on the way to a package (give the resolved path)`);
      }
      if (!last && !st.isDirectory()) throw new PackageError(`package path ${next} is not a directory`);
      if (last && !st.isDirectory() && !st.isFile()) throw new PackageError(`package ${abs} is neither a regular file nor a directory`);
      const opened = await openIn(dir, name, st, last ? `package ${abs}` : `package path ${next}`);
      await dir.close();
      dir = opened;
      dirStat = await dir.stat({ bigint: true });
      here = next;
    }
    if (parts.length === 0) throw new PackageError('package path / is the root directory');
    access?.check(dirStat, dirStat.isDirectory() ? 'list' : 'read', abs);
  } catch (err) {
    await dir.close().catch(() => {});
    throw err;
  }
  const handle = dir;
  const first = dirStat;
  return {
    handle,
    stat: first,
    readPath: fdPath(handle),
    async assertUnchanged() {
      if (!sameContent(await handle.stat({ bigint: true }), first)) throw changedError(`package ${abs}`);
    },
    close: () => handle.close().catch(() => {}),
  };
}
