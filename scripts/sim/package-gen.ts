// A synthetic runtime package of about a requested compressed size: incompressible files (like binaries
// and already-compressed assets) plus compressible text files (like headers and scripts), in joblet's layout.
import crypto from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { run } from './sh.js';

const MiB = 1024 * 1024;
const WORDS = ('runtime joblet isolated usr lib bin share include python node java module package version ' +
  'static shared object symbol export import function return const struct define config mount target ' +
  'source environment path library archive header value offset length buffer stream chunk index').split(' ');

/** Write `bytes` of random data to `file`, one MiB at a time. */
async function writeRandom(file: string, bytes: number): Promise<void> {
  const fh = await fs.open(file, 'w');
  try {
    for (let left = bytes; left > 0; left -= MiB) await fh.write(crypto.randomBytes(Math.min(MiB, left)));
  } finally { await fh.close(); }
}

/** Write `bytes` of word salad, which gzip shrinks about 3-4x: it stands for text files in a runtime. */
async function writeText(file: string, bytes: number, seed: number): Promise<void> {
  let x = seed | 1;
  const next = () => { x ^= x << 13; x ^= x >>> 17; x ^= x << 5; return x >>> 0; };
  const fh = await fs.open(file, 'w');
  try {
    for (let left = bytes; left > 0; left -= MiB) {
      const parts: string[] = [];
      let size = 0;
      const want = Math.min(MiB, left);
      while (size < want) {
        const w = `${WORDS[next() % WORDS.length]}${next() % 7 === 0 ? '\n' : ' '}`;
        parts.push(w);
        size += w.length;
      }
      await fh.write(parts.join('').slice(0, want));
    }
  } finally { await fh.close(); }
}

export interface GeneratedPackage { path: string; bytes: number; name: string; version: string }

/**
 * Build `<workDir>/<name>-<version>.tar.gz` of about `targetBytes`: 80% of the target as random files
 * (about 4 MiB each), text files whose raw size is 60% of the target, then one random pad file if the
 * archive came out short. The tree is kept under workDir/src for reference.
 */
export async function generatePackage(workDir: string, targetBytes: number, name = 'simrt', version = '1.0.0'): Promise<GeneratedPackage> {
  const top = `${name}-${version}`;
  const root = path.join(workDir, 'src', top);
  await fs.mkdir(path.join(root, 'isolated/usr/lib'), { recursive: true });
  await fs.mkdir(path.join(root, 'isolated/usr/share/doc'), { recursive: true });
  await fs.writeFile(path.join(root, 'runtime.yml'),
    `name: ${name}\nversion: "${version}"\nlanguage: none\ndescription: synthetic runtime made by the fleet simulator\n`);
  const randomTotal = Math.floor(targetBytes * 0.8);
  const fileSize = 4 * MiB;
  for (let i = 0, left = randomTotal; left > 0; i++, left -= fileSize) {
    await writeRandom(path.join(root, `isolated/usr/lib/lib${i}.so`), Math.min(fileSize, left));
  }
  const textTotal = Math.floor(targetBytes * 0.6);
  for (let i = 0, left = textTotal; left > 0; i++, left -= MiB) {
    await writeText(path.join(root, `isolated/usr/share/doc/page${i}.txt`), Math.min(MiB, left), i + 7);
  }
  const pkg = path.join(workDir, `${top}.tar.gz`);
  const pack = () => run('tar', ['-czf', pkg, '-C', path.join(workDir, 'src'), top], { timeoutMs: 600_000 });
  await pack();
  const short = targetBytes - (await fs.stat(pkg)).size;
  if (short > 64 * 1024) {
    await writeRandom(path.join(root, 'isolated/usr/lib/pad.bin'), short);
    await pack();
  }
  return { path: pkg, bytes: (await fs.stat(pkg)).size, name, version };
}

/** Read name and version from the runtime.yml inside a .tar.gz (at its root or under one top dir). */
export async function packageIdentity(pkg: string): Promise<{ name: string; version: string }> {
  const list = (await run('tar', ['-tzf', pkg], { timeoutMs: 300_000 })).stdout.split('\n');
  const yml = list.find((e) => /^(\.\/)?([^/]+\/)?runtime\.yml$/.test(e));
  if (!yml) throw new Error(`${pkg} has no runtime.yml at its root or under a single top-level directory`);
  const text = (await run('tar', ['-xzOf', pkg, yml])).stdout;
  const name = /^name:\s*"?([^"\n]+?)"?\s*$/m.exec(text)?.[1];
  const version = /^version:\s*"?([^"\n]+?)"?\s*$/m.exec(text)?.[1];
  if (!name || !version) throw new Error(`${pkg}: runtime.yml has no name or version`);
  return { name, version };
}
