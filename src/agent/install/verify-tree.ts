// Compare an installed runtime tree with the entry list of its manifest: every entry there with the
// right type, mode, size, contents (sha256), mtime, symlink target and hardlink sharing, nothing missing
// and nothing added.
//
// Two depths: `full` hashes every regular file (explicit `verify`, and before a repair); the cheap check
// (the periodic one of `repair: auto`) looks at sizes and mtimes, and hashes only a file whose mtime
// differs, to tell changed contents from a touch. A cheap check costs one lstat per entry, one readlink
// per symlink and one readdir per directory.
//
// Directory mtimes are not compared: adding or removing a file changes its directory's mtime, and that
// change is reported as the added or missing file itself; joblet reads none of them.
import { createHash } from 'node:crypto';
import { constants, type Stats } from 'node:fs';
import { lstat, open, readdir, readlink } from 'node:fs/promises';
import { join } from 'node:path';
import { decodeEntries } from '../../runtime/tree-entry.js';
import type { ChunkStore } from '../../store/chunk-store.js';
import type { Manifest } from '../../store/types.js';

/** What differs about one entry. */
export type Difference = 'type' | 'content' | 'mode' | 'mtime' | 'target' | 'hardlink' | 'owner';

export interface TreeCheck {
  /** The runtime dir itself is gone (or is no longer a directory). */
  deleted: boolean;
  changed: { path: string; what: Difference[] }[];
  /** Paths present that the entry list does not have (a directory counts once, not its contents). */
  added: string[];
  /** Entries absent (a missing directory counts once, not its contents). */
  missing: string[];
  /** Entries compared. */
  entries: number;
  /** Files whose contents were hashed, and their bytes. */
  hashedFiles: number;
  hashedBytes: number;
}

export function hasDrift(c: TreeCheck): boolean {
  return c.deleted || c.changed.length > 0 || c.added.length > 0 || c.missing.length > 0;
}

type Expected =
  | { kind: 'dir'; mode: number }
  | { kind: 'file'; mode: number; mtime: number; size: number; sha256: string; ino?: number }
  | { kind: 'symlink'; mtime: number; target: string; ino?: number };

/** Implicit parents of entries are created with this mode by the extractor (extract.ts). */
const IMPLICIT_DIR_MODE = 0o755;
/** lstat calls in flight: enough to hide latency, not enough to crowd the thread pool. */
const PARALLEL = 8;

/** The entry list of `m`, reassembled from verified chunks and checked against the manifest. */
export async function readEntryList(chunks: ChunkStore, m: Manifest): Promise<Buffer> {
  const parts: Buffer[] = [];
  for (const c of m.entries.chunks) parts.push(await chunks.get(c.id));
  const list = Buffer.concat(parts);
  const sha = createHash('sha256').update(list).digest('hex');
  if (list.length !== m.entries.size || sha !== m.entries.sha256) {
    throw new Error(`the entry list of ${m.runtime.name}@${m.runtime.version} reassembles to sha256 ${sha}, not the manifest's ${m.entries.sha256}`);
  }
  return list;
}

/** What the tree should hold, path by path, as the extractor leaves it (later entries replace earlier ones). */
function expectedTree(list: Buffer): Map<string, Expected> {
  const want = new Map<string, Expected>();
  const parents = (path: string) => {
    for (let i = path.indexOf('/'); i !== -1; i = path.indexOf('/', i + 1)) {
      const dir = path.slice(0, i);
      if (!want.has(dir)) want.set(dir, { kind: 'dir', mode: IMPLICIT_DIR_MODE });
    }
  };
  for (const e of decodeEntries(list)) {
    parents(e.path);
    switch (e.type) {
      case 'directory':
        want.set(e.path, { kind: 'dir', mode: e.mode & 0o7777 & ~0o6000 });
        break;
      case 'file':
        want.set(e.path, { kind: 'file', mode: e.mode & 0o7777 & ~0o6000, mtime: e.mtime, size: e.size, sha256: e.sha256 });
        break;
      case 'symlink':
        want.set(e.path, { kind: 'symlink', mtime: e.mtime, target: e.target });
        break;
      case 'link': {
        // The same object: both paths must then be one inode (checked where both are present).
        const target = want.get(e.target);
        if (target && target.kind !== 'dir') want.set(e.path, target);
        break;
      }
    }
  }
  return want;
}

export async function checkTree(
  root: string,
  list: Buffer,
  opts: { full: boolean; owner?: { uid: number; gid: number } },
): Promise<TreeCheck> {
  const out: TreeCheck = { deleted: false, changed: [], added: [], missing: [], entries: 0, hashedFiles: 0, hashedBytes: 0 };
  const rootInfo = await lstat(root).catch(() => null);
  if (!rootInfo || !rootInfo.isDirectory()) {
    out.deleted = true;
    return out;
  }
  const want = expectedTree(list);
  out.entries = want.size;
  const gone = new Set<string>(); // missing or no longer a directory: their contents are not listed again
  const dirs: string[] = [''];
  const paths = [...want.keys()].sort();
  let next = 0;
  const worker = async () => {
    while (next < paths.length) {
      const path = paths[next++]!;
      if (underAny(path, gone)) continue;
      const what = await compareEntry(join(root, path), want.get(path)!, opts, out);
      if (what === 'missing') {
        out.missing.push(path);
        gone.add(path);
      } else {
        if (what.length) out.changed.push({ path, what });
        if (what.includes('type')) gone.add(path);
        else if (want.get(path)!.kind === 'dir') dirs.push(path);
      }
    }
  };
  await Promise.all(Array.from({ length: PARALLEL }, worker));
  for (const dir of dirs) {
    const names = await readdir(join(root, dir)).catch(() => [] as string[]);
    for (const name of names) {
      const path = dir ? `${dir}/${name}` : name;
      if (!want.has(path)) out.added.push(path);
    }
  }
  // Workers finish out of order; a report is easier to read, and to compare, sorted.
  out.missing = out.missing.filter((p) => !underAny(p, gone, false)).sort();
  out.changed.sort((a, b) => (a.path < b.path ? -1 : 1));
  out.added.sort();
  return out;
}

/** Is `path` inside one of `dirs` (or equal to one, with `orSelf`)? */
function underAny(path: string, dirs: Set<string>, orSelf = false): boolean {
  if (orSelf && dirs.has(path)) return true;
  for (let i = path.lastIndexOf('/'); i !== -1; i = path.lastIndexOf('/', i - 1)) {
    if (dirs.has(path.slice(0, i))) return true;
    if (i === 0) break;
  }
  return false;
}

async function compareEntry(abs: string, want: Expected, opts: { full: boolean; owner?: { uid: number; gid: number } }, out: TreeCheck): Promise<Difference[] | 'missing'> {
  let st: Stats;
  try {
    st = await lstat(abs);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return 'missing';
    throw err;
  }
  const what: Difference[] = [];
  if (opts.owner && (st.uid !== opts.owner.uid || st.gid !== opts.owner.gid)) what.push('owner');
  if (want.kind === 'dir') {
    if (!st.isDirectory()) return ['type'];
    if ((st.mode & 0o7777) !== want.mode) what.push('mode');
    return what;
  }
  if (want.kind === 'symlink') {
    if (!st.isSymbolicLink()) return ['type'];
    if ((await readlink(abs)) !== want.target) what.push('target');
    if (Math.floor(st.mtimeMs / 1000) !== want.mtime) what.push('mtime');
    sameInode(want, st, what);
    return what;
  }
  if (!st.isFile()) return ['type'];
  if ((st.mode & 0o7777) !== want.mode) what.push('mode');
  const mtimeDiffers = Math.floor(st.mtimeMs / 1000) !== want.mtime;
  if (st.size !== want.size) what.push('content');
  else if (opts.full || mtimeDiffers) {
    out.hashedFiles++;
    out.hashedBytes += st.size;
    if ((await hashFile(abs)) !== want.sha256) what.push('content');
  }
  if (mtimeDiffers) what.push('mtime');
  sameInode(want, st, what);
  return what;
}

/** Entries that are hardlinks of each other share one Expected object: the first path seen sets the inode. */
function sameInode(want: { ino?: number }, st: Stats, what: Difference[]): void {
  if (want.ino === undefined) want.ino = st.ino;
  else if (want.ino !== st.ino) what.push('hardlink');
}

async function hashFile(abs: string): Promise<string> {
  const handle = await open(abs, constants.O_RDONLY | constants.O_NOFOLLOW);
  try {
    const hash = createHash('sha256');
    const buf = Buffer.allocUnsafe(1024 * 1024);
    for (;;) {
      const { bytesRead } = await handle.read(buf, 0, buf.length, null);
      if (bytesRead === 0) break;
      hash.update(buf.subarray(0, bytesRead));
    }
    return hash.digest('hex');
  } finally {
    await handle.close();
  }
}
