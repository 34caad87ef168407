// Small runtime packages for the soak, made from the seed alone: the same seed, name, version and build
// give the same bytes. Versions of one runtime share most files (as real releases do), so an upgrade moves
// only what changed (the shared files come first in the content stream, so they chunk alike); each build adds one file of its own, large enough that a transfer lasts a moment on a
// shaped link (a mid-transfer kill needs one to hit).
import crypto from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { run } from './sh.js';
import { hashTree } from './tree-hash.js';

const KiB = 1024;

/** `bytes` of a keystream: AES-128-CTR keyed by sha256(label), fast and the same everywhere. */
function seededBytes(label: string, bytes: number): Buffer {
  const key = crypto.createHash('sha256').update(label).digest();
  const cipher = crypto.createCipheriv('aes-128-ctr', key.subarray(0, 16), key.subarray(16, 32));
  return Buffer.concat([cipher.update(Buffer.alloc(bytes)), cipher.final()]);
}

export interface SoakPackage {
  name: string;
  version: string;
  revision: number;
  path: string;
  bytes: number;
  /** hashTree of the tree joblet would see (the package's top dir stripped). */
  digest: string;
}

export interface SoakPackageSizes {
  /** Bytes of each of the two files every version of a runtime shares. */
  sharedFileBytes: number;
  /** Bytes of the file each build adds. */
  buildFileBytes: number;
}

export const DEFAULT_SIZES: SoakPackageSizes = { sharedFileBytes: 1024 * KiB, buildFileBytes: 1536 * KiB };

/**
 * Write `<workDir>/<name>-<version>-b<revision>.tar.gz`: runtime.yml, two shared library files, the build's
 * own library, a script, a symlink and a text file; fixed mtimes and owners, sorted entries.
 */
export async function makeSoakPackage(workDir: string, seed: number, name: string, version: string, revision: number,
  sizes: SoakPackageSizes = DEFAULT_SIZES): Promise<SoakPackage> {
  const top = `${name}-${version}`;
  const src = path.join(workDir, 'src', `${name}-${version}-b${revision}`);
  const root = path.join(src, top);
  await fs.rm(src, { recursive: true, force: true });
  for (const d of ['isolated/usr/lib/version', 'isolated/usr/bin', 'isolated/usr/share/doc']) await fs.mkdir(path.join(root, d), { recursive: true });
  await fs.writeFile(path.join(root, 'runtime.yml'),
    `name: ${name}\nversion: "${version}"\nlanguage: none\ndescription: soak runtime, build ${revision}\n` +
    'mounts:\n  - source: isolated/usr\n    target: /usr\n    readonly: true\n');
  for (const i of [0, 1]) {
    await fs.writeFile(path.join(root, `isolated/usr/lib/libshared${i}.so`), seededBytes(`${seed}/${name}/shared${i}`, sizes.sharedFileBytes));
  }
  const own = Math.round(sizes.buildFileBytes * (0.75 + 0.5 * (seededBytes(`${seed}/${name}/${version}/${revision}/size`, 1)[0] / 255)));
  await fs.writeFile(path.join(root, `isolated/usr/lib/version/${name}-${version.replace(/\./g, '_')}.so`),
    seededBytes(`${seed}/${name}/${version}/${revision}`, own));
  await fs.writeFile(path.join(root, 'isolated/usr/bin/tool'), `#!/bin/sh\necho ${name} ${version} build ${revision}\n`);
  await fs.chmod(path.join(root, 'isolated/usr/bin/tool'), 0o755);
  await fs.symlink('tool', path.join(root, 'isolated/usr/bin/current'));
  await fs.writeFile(path.join(root, 'isolated/usr/share/doc/README'), `${name} ${version}\n`.repeat(2000));
  const pkg = path.join(workDir, `${name}-${version}-b${revision}.tar.gz`);
  await run('tar', ['--sort=name', '--mtime=@1700000000', '--owner=0', '--group=0', '--numeric-owner',
    '-czf', pkg, '-C', src, top]);
  const digest = (await hashTree(root)).digest;
  return { name, version, revision, path: pkg, bytes: (await fs.stat(pkg)).size, digest };
}
