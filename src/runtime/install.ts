// The runtimes directory joblet reads: <root>/<name>/<version>/runtime.yml. A runtime appears there
// only by rename(2) of a fully extracted and checked tree, so joblet never sees half of one.
//
// The agent's own work area is <root>/.joblet-agent/{staging,trash}/<random>/tree. It lives under
// root so renames stay on one filesystem (atomic), and it is one level deeper than joblet's resolver
// looks (<root>/<dir>/<version-dir>/runtime.yml): <root>/.joblet-agent/staging/runtime.yml never
// exists, so a half-extracted or half-deleted tree can never be mistaken for a runtime.
import { randomBytes } from 'node:crypto';
import { chmod, lstat, mkdir, readdir, readFile, rename, rm, rmdir } from 'node:fs/promises';
import { dirname, join, sep } from 'node:path';
import { assertRuntimeName, assertVersion, parseRuntimeYml } from './runtime-yml.js';
import { PackageError, type RuntimeMeta } from './types.js';

const WORK_DIR = '.joblet-agent';

export class RuntimesDir {
  readonly root: string;
  private readonly stagingRoot: string;
  private readonly trashRoot: string;

  constructor(root: string) {
    this.root = root;
    this.stagingRoot = join(root, WORK_DIR, 'staging');
    this.trashRoot = join(root, WORK_DIR, 'trash');
  }

  /** Where NAME@VERSION is (or would be) installed. Refuses names and versions that are not safe path segments. */
  pathFor(name: string, version: string): string {
    assertRuntimeName(name, 'the runtime reference');
    assertVersion(version, 'the runtime reference');
    return join(this.root, name, version);
  }

  /** A new empty directory to extract into; pass it to commit() or discard(). */
  /** Is anything at <root>/<name>/<version> (a tree, or whatever else was put there)? */
  async occupied(name: string, version: string): Promise<boolean> {
    return exists(this.pathFor(name, version));
  }

  async createStaging(): Promise<string> {
    const tree = join(await this.newWorkDir(this.stagingRoot), 'tree');
    await mkdir(tree, { mode: 0o755 });
    return tree;
  }

  /**
   * Moves a staged tree into place as meta.name/meta.version. The staged runtime.yml must say the same
   * name and version. An existing install is kept unless `force`; with `force` it is moved aside, the
   * new tree renamed in, and the old one deleted. The staging area is removed in every case.
   */
  async commit(staging: string, meta: RuntimeMeta, opts: { force?: boolean } = {}): Promise<string> {
    this.assertStaging(staging);
    try {
      const target = this.pathFor(meta.name, meta.version);
      const staged = await this.readStagedMeta(staging);
      if (staged.name !== meta.name || staged.version !== meta.version) {
        throw new PackageError(
          `the staged runtime.yml says ${staged.name}@${staged.version}, but ${meta.name}@${meta.version} was expected`,
        );
      }
      await mkdir(dirname(target), { recursive: true, mode: 0o755 });
      const installed = await exists(target);
      if (installed && !opts.force) throw new PackageError(`${meta.name}@${meta.version} is already installed at ${target}`);
      if (!installed) {
        await renameInto(staging, target, meta);
        return target;
      }
      const aside = join(await this.newWorkDir(this.trashRoot), 'tree');
      await rename(target, aside);
      try {
        await rename(staging, target);
      } catch (err) {
        // Put the old version back: a failed replace must leave what was installed.
        await rename(aside, target);
        throw err;
      } finally {
        if (await exists(target)) await removeTree(dirname(aside));
      }
      return target;
    } finally {
      await removeTree(dirname(staging));
    }
  }

  /** Throws away a staged tree (and its parent work dir). */
  async discard(staging: string): Promise<void> {
    this.assertStaging(staging);
    await removeTree(dirname(staging));
  }

  /** Uninstalls NAME@VERSION: renamed out of joblet's sight first, then deleted. */
  async remove(name: string, version: string): Promise<void> {
    const target = this.pathFor(name, version);
    if (!(await exists(target))) throw new PackageError(`${name}@${version} is not installed in ${this.root}`);
    const aside = join(await this.newWorkDir(this.trashRoot), 'tree');
    await rename(target, aside);
    await removeTree(dirname(aside));
    try {
      await rmdir(dirname(target));
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code !== 'ENOTEMPTY' && code !== 'EEXIST' && code !== 'ENOENT') throw err;
    }
  }

  /** Removes staging and trash left by a crash. Call before any install starts. */
  async cleanupLeftovers(): Promise<void> {
    await removeTree(this.stagingRoot);
    await removeTree(this.trashRoot);
  }

  /** Bytes of regular files under `path`, each inode counted once; symlinks are not followed. */
  async treeSize(path: string): Promise<number> {
    const seen = new Set<string>();
    let total = 0;
    const pending = [path];
    while (pending.length > 0) {
      const current = pending.pop()!;
      const info = await lstat(current);
      if (info.isDirectory()) {
        for (const name of await readdir(current)) pending.push(join(current, name));
      } else if (info.isFile()) {
        const key = `${info.dev}:${info.ino}`;
        if (info.nlink > 1) {
          if (seen.has(key)) continue;
          seen.add(key);
        }
        total += info.size;
      }
    }
    return total;
  }

  private async newWorkDir(parent: string): Promise<string> {
    await mkdir(parent, { recursive: true, mode: 0o700 });
    const dir = join(parent, randomBytes(8).toString('hex'));
    await mkdir(dir, { mode: 0o700 });
    return dir;
  }

  /** discard() and commit() delete recursively: only ever something createStaging() made. */
  private assertStaging(staging: string): void {
    const parent = dirname(staging);
    if (dirname(parent) !== this.stagingRoot || !staging.endsWith(`${sep}tree`)) {
      throw new Error(`${staging} is not a staging directory of ${this.root}`);
    }
  }

  private async readStagedMeta(staging: string): Promise<RuntimeMeta> {
    const file = join(staging, 'runtime.yml');
    let info;
    try {
      info = await lstat(file);
    } catch {
      throw new PackageError(`the staged tree has no runtime.yml at its top (${file})`);
    }
    if (!info.isFile()) throw new PackageError(`the staged runtime.yml is not a regular file (${file})`);
    return parseRuntimeYml(await readFile(file, 'utf8'));
  }
}

async function renameInto(staging: string, target: string, meta: RuntimeMeta): Promise<void> {
  try {
    await rename(staging, target);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    // Someone installed the same version between our check and the rename.
    if (code === 'ENOTEMPTY' || code === 'EEXIST') throw new PackageError(`${meta.name}@${meta.version} is already installed at ${target}`);
    throw err;
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    await lstat(path);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw err;
  }
}

/**
 * rm -rf that also works without root on trees holding read-only directories (runtimes keep their
 * archive modes, e.g. 0555): on EACCES it makes the directories writable and tries again.
 */
export async function removeTree(path: string): Promise<void> {
  try {
    await rm(path, { recursive: true, force: true });
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code !== 'EACCES' && code !== 'EPERM') throw err;
    await makeDirsWritable(path);
    await rm(path, { recursive: true, force: true });
  }
}

async function makeDirsWritable(path: string): Promise<void> {
  const pending = [path];
  while (pending.length > 0) {
    const dir = pending.pop()!;
    let info;
    try {
      info = await lstat(dir);
    } catch {
      continue;
    }
    if (!info.isDirectory()) continue;
    await chmod(dir, 0o700).catch(() => {});
    for (const name of await readdir(dir).catch(() => [] as string[])) pending.push(join(dir, name));
  }
}

/**
 * `--owner user:group` (or just `user`, meaning the user's primary group). Each side is a number or a
 * name looked up in /etc/passwd and /etc/group.
 */
export async function parseOwner(spec: string): Promise<{ uid: number; gid: number }> {
  const parts = spec.split(':');
  if (parts.length > 2 || parts[0] === '') {
    throw new PackageError(`invalid --owner ${JSON.stringify(spec)}: expected USER:GROUP (names or numbers)`);
  }
  const [userPart, groupPart] = parts as [string, string | undefined];
  let uid: number;
  let primaryGid: number | undefined;
  if (/^\d+$/.test(userPart)) {
    uid = Number(userPart);
  } else {
    const entry = (await readDatabase('/etc/passwd')).find((f) => f[0] === userPart);
    if (!entry) throw new PackageError(`unknown user ${JSON.stringify(userPart)} in --owner: not found in /etc/passwd`);
    uid = Number(entry[2]);
    primaryGid = Number(entry[3]);
  }
  let gid: number;
  if (groupPart === undefined || groupPart === '') {
    if (primaryGid === undefined) {
      const entry = (await readDatabase('/etc/passwd')).find((f) => Number(f[2]) === uid);
      if (!entry) throw new PackageError(`--owner ${JSON.stringify(spec)} needs a group: uid ${uid} is not in /etc/passwd`);
      primaryGid = Number(entry[3]);
    }
    gid = primaryGid;
  } else if (/^\d+$/.test(groupPart)) {
    gid = Number(groupPart);
  } else {
    const entry = (await readDatabase('/etc/group')).find((f) => f[0] === groupPart);
    if (!entry) throw new PackageError(`unknown group ${JSON.stringify(groupPart)} in --owner: not found in /etc/group`);
    gid = Number(entry[2]);
  }
  return { uid, gid };
}

async function readDatabase(file: string): Promise<string[][]> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    throw new PackageError(`could not read ${file}: ${(err as Error).message}`);
  }
  return text
    .split('\n')
    .filter((line) => line !== '' && !line.startsWith('#'))
    .map((line) => line.split(':'));
}
