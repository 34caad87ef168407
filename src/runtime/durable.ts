// Power-loss safety of an install: the bytes and directory entries of a staged tree must be on disk before
// the rename publishes it, and the rename itself before the install record says it is there. Otherwise a
// power cut can leave a runtime that joblet sees and the index calls installed, with empty or missing files.
//
// syncTreeFilesystem flushes the whole filesystem holding the tree with one syncfs(2) (`sync -f` from
// coreutils; Node has no binding). Measured against fsync of every file and directory (docs/benchmarks.md):
// on a tree of thousands of small files one syncfs costs a fraction of the per-file fsyncs, because the
// journal commits once instead of once per file; on large files both are bound by the same writeback.
// It also flushes whatever else is dirty on that filesystem, which costs time, not correctness. On large
// files fsync of each file was somewhat quicker (0.22 – 0.26 s against 0.29 – 0.33 s for 256 MiB): both
// are bound by writing the bytes out, and one scheme for every tree keeps this simple.
import { execFile } from 'node:child_process';
import { access, constants, open, readdir } from 'node:fs/promises';
import { join } from 'node:path';

/** coreutils' sync, by absolute path: the daemon may run with no PATH (the release is tested so). */
const SYNC_BINARIES = ['/usr/bin/sync', '/bin/sync'];
let syncBinary: Promise<string | null> | null = null;

/**
 * Everything under `dir` is on disk when this resolves: one syncfs of its filesystem, or, on a host
 * without coreutils' sync, an fsync of every file and directory.
 */
export async function syncTreeFilesystem(dir: string): Promise<void> {
  syncBinary ??= findSyncBinary();
  const binary = await syncBinary;
  if (binary === null) return syncTreeEachFile(dir);
  await new Promise<void>((resolve, reject) => {
    execFile(binary, ['-f', dir], { timeout: 10 * 60_000, env: {} }, (err, _out, stderr) => {
      if (err) reject(new Error(`${binary} -f ${dir} failed: ${stderr.trim() || err.message}`));
      else resolve();
    });
  });
}

async function findSyncBinary(): Promise<string | null> {
  for (const file of SYNC_BINARIES) {
    if (await access(file, constants.X_OK).then(() => true, () => false)) return file;
  }
  return null;
}

/** fsync of one file or directory (of a directory: makes the names created, renamed or removed in it durable). */
export async function syncPath(dir: string): Promise<void> {
  const handle = await open(dir, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/**
 * The other scheme, kept for the measurement (scripts/bench-sync.ts): fsync of every regular file and
 * directory under `dir`, `parallel` at a time in the thread pool. Symlinks need no fsync of their own: they
 * live in their directory's blocks.
 */
export async function syncTreeEachFile(dir: string, parallel = 8): Promise<void> {
  const paths: string[] = [];
  const pending = [dir];
  while (pending.length > 0) {
    const current = pending.pop()!;
    paths.push(current);
    for (const d of await readdir(current, { withFileTypes: true })) {
      if (d.isDirectory()) pending.push(join(current, d.name));
      else if (d.isFile()) paths.push(join(current, d.name));
    }
  }
  let next = 0;
  const worker = async () => {
    while (next < paths.length) await syncPath(paths[next++]!);
  };
  await Promise.all(Array.from({ length: Math.min(parallel, paths.length) }, worker));
}
