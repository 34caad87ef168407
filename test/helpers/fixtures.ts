// Real runtime trees and packages made with GNU tar and Info-ZIP, as an operator would make them.
import fs from 'node:fs/promises';
import path from 'node:path';
import crypto from 'node:crypto';
import { execFileP } from './agent.js';

/**
 * Deterministic pseudo-random bytes, so runs are repeatable: an AES-256-CTR keystream keyed by the seed
 * (a sha256 per 32 bytes took 12 s for 40 MiB; this takes a few ms).
 */
export function seededBytes(size: number, seed: string): Buffer {
  const cipher = crypto.createCipheriv('aes-256-ctr', crypto.createHash('sha256').update(seed).digest(), Buffer.alloc(16));
  return Buffer.concat([cipher.update(Buffer.alloc(size)), cipher.final()]);
}

export const LONG_DIR = 'isolated/usr/share/' + 'a-rather-long-directory-name-to-pass-the-ustar-limit/'.repeat(3);
export const LONG_FILE = LONG_DIR + 'and-a-long-file-name-that-makes-the-whole-path-exceed-two-hundred-and-fifty-five-characters.txt';

/**
 * A runtime tree with the shapes that matter: a long path, a symlink (relative and dangling), a
 * hardlink, an empty dir, an executable, a setuid file, and some bulk so it spans several chunks.
 */
export async function makeRuntimeTree(root: string, opts: { name?: string; version?: string; bulkBytes?: number; seed?: string } = {}): Promise<void> {
  const name = opts.name ?? 'testrt';
  const version = opts.version ?? '1.0.0';
  const seed = opts.seed ?? 'bulk';
  await fs.mkdir(path.join(root, 'isolated/usr/bin'), { recursive: true });
  await fs.mkdir(path.join(root, 'isolated/lib'), { recursive: true });
  await fs.mkdir(path.join(root, 'isolated/empty/dir'), { recursive: true });
  await fs.mkdir(path.join(root, LONG_DIR), { recursive: true });
  await fs.writeFile(path.join(root, 'runtime.yml'),
    `name: ${name}\nversion: "${version}"\nlanguage: test\ndescription: a test runtime\nmounts:\n  - source: isolated/usr/bin\n    target: /usr/bin\n`);
  await fs.writeFile(path.join(root, 'isolated/usr/bin/tool'), '#!/bin/sh\necho tool\n', { mode: 0o755 });
  await fs.writeFile(path.join(root, 'isolated/usr/bin/suid-tool'), 'pretend binary\n', { mode: 0o755 });
  await fs.chmod(path.join(root, 'isolated/usr/bin/suid-tool'), 0o4755);
  await fs.symlink('tool', path.join(root, 'isolated/usr/bin/tool-link'));
  await fs.symlink('../does/not/exist', path.join(root, 'isolated/usr/bin/dangling'));
  await fs.writeFile(path.join(root, LONG_FILE), 'long path content\n');
  const bulk = opts.bulkBytes ?? 3 * 1024 * 1024;
  await fs.writeFile(path.join(root, 'isolated/lib/libbulk.so'), seededBytes(bulk, seed), { mode: 0o644 });
  await fs.writeFile(path.join(root, 'isolated/lib/readonly.txt'), 'read only\n', { mode: 0o444 });
  await fs.link(path.join(root, 'isolated/usr/bin/tool'), path.join(root, 'isolated/usr/bin/tool-hardlink'));
}

/** `tar czf out -C parent top` : one top-level directory, as most packages are made. */
export async function tarGzWithTopDir(src: string, out: string): Promise<void> {
  await execFileP('tar', ['czf', out, '-C', path.dirname(src), path.basename(src)]);
}

/** `tar cf out -C src .` : runtime.yml at the root, entries prefixed with ./ */
export async function tarAtRoot(src: string, out: string, gzip = false): Promise<void> {
  await execFileP('tar', [gzip ? 'czf' : 'cf', out, '-C', src, '.']);
}

/** `zip -ry out top` as Info-ZIP makes it, symlinks stored as links. */
export async function zipWithTopDir(src: string, out: string): Promise<void> {
  await execFileP('zip', ['-qry', out, path.basename(src)], { cwd: path.dirname(src) });
}
