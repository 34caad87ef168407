// Does a tree on disk hold exactly what an entry list says? Used at start for what a crash may have left:
// a tree in place without an install record is adopted only when it matches in full (types, modes, sizes,
// link targets, every file's sha256, nothing extra); after an unclean stop the installed trees are checked
// cheaply (types and sizes), which is what a power cut before the data reached the disk would break.
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { lstat, readdir, readlink } from 'node:fs/promises';
import { join } from 'node:path';
import type { TreeEntry } from './tree-entry.js';

export interface TreeCheckOptions {
  /** Also hash every file and refuse entries the list does not name; else types and sizes only. */
  full: boolean;
}

/** null when `root` matches `entries`, else one sentence naming the first path that does not. */
export async function checkTree(root: string, entries: Iterable<TreeEntry>, opts: TreeCheckOptions): Promise<string | null> {
  const listed = new Set<string>();
  for (const e of entries) {
    listed.add(e.path);
    const abs = join(root, e.path);
    const info = await lstat(abs).catch(() => null);
    if (info === null) return `${e.path} is missing`;
    switch (e.type) {
      case 'directory':
        if (!info.isDirectory()) return `${e.path} is not a directory`;
        if (opts.full && (info.mode & 0o7777) !== e.mode) return `${e.path} has mode ${octal(info.mode)}, not ${octal(e.mode)}`;
        break;
      case 'file':
        if (!info.isFile()) return `${e.path} is not a regular file`;
        if (info.size !== e.size) return `${e.path} holds ${info.size} bytes, not ${e.size}`;
        if (opts.full) {
          if ((info.mode & 0o7777) !== e.mode) return `${e.path} has mode ${octal(info.mode)}, not ${octal(e.mode)}`;
          const digest = await sha256Of(abs);
          if (digest !== e.sha256) return `${e.path} hashes to ${digest}, not ${e.sha256}`;
        }
        break;
      case 'symlink':
        if (!info.isSymbolicLink()) return `${e.path} is not a symlink`;
        if (opts.full && (await readlink(abs)) !== e.target) return `${e.path} does not point to ${e.target}`;
        break;
      case 'link': {
        const first = await lstat(join(root, e.target)).catch(() => null);
        if (first === null || first.ino !== info.ino || first.dev !== info.dev) return `${e.path} is not a hard link to ${e.target}`;
        break;
      }
    }
  }
  if (opts.full) {
    const extra = await firstUnlisted(root, listed);
    if (extra !== null) return `${extra} is not in the entry list`;
  }
  return null;
}

/** A path under root that the list does not name; directories that are parents of listed paths are implied. */
async function firstUnlisted(root: string, listed: Set<string>): Promise<string | null> {
  const parents = new Set<string>();
  for (const p of listed) for (let i = p.indexOf('/'); i !== -1; i = p.indexOf('/', i + 1)) parents.add(p.slice(0, i));
  const pending = [''];
  while (pending.length > 0) {
    const rel = pending.pop()!;
    for (const d of await readdir(join(root, rel), { withFileTypes: true })) {
      const child = rel === '' ? d.name : `${rel}/${d.name}`;
      if (!listed.has(child) && !(d.isDirectory() && parents.has(child))) return child;
      if (d.isDirectory()) pending.push(child);
    }
  }
  return null;
}

async function sha256Of(file: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const piece of createReadStream(file, { highWaterMark: 1 << 20 })) hash.update(piece as Buffer);
  return hash.digest('hex');
}

function octal(mode: number): string {
  return (mode & 0o7777).toString(8).padStart(4, '0');
}
