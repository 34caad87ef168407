// The runtimes directory joblet reads: <root>/<name>/<version>/runtime.yml. A runtime appears there
// only by rename(2) of a fully extracted and checked tree, so joblet never sees half of one.
//
// The agent's own work area is <root>/.joblet-agent/{staging,trash}/<random>/tree. It lives under
// root so renames stay on one filesystem (atomic), and it is one level deeper than joblet's resolver
// looks (<root>/<dir>/<version-dir>/runtime.yml): <root>/.joblet-agent/staging/runtime.yml never
// exists, so a half-extracted or half-deleted tree can never be mistaken for a runtime.
import { randomBytes } from 'node:crypto';
import { chmod, lstat, mkdir, open, readdir, readFile, rename, rm, rmdir } from 'node:fs/promises';
import { dirname, join, sep } from 'node:path';
import { assertRuntimeName, assertVersion, parseRuntimeYml } from './runtime-yml.js';
import { PackageError, type RuntimeMeta } from './types.js';
import { syncPath, syncTreeFilesystem } from './durable.js';
import { killPoint } from './kill-point.js';

const WORK_DIR = '.joblet-agent';

export class RuntimesDir {
  readonly root: string;
  private readonly stagingRoot: string;
  private readonly trashRoot: string;
  private readonly commitsRoot: string;

  constructor(root: string) {
    this.root = root;
    this.stagingRoot = join(root, WORK_DIR, 'staging');
    this.trashRoot = join(root, WORK_DIR, 'trash');
    this.commitsRoot = join(root, WORK_DIR, 'commits');
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
   *
   * Crash safety: the tree is synced to disk first (durable.ts), then moved into a commit dir beside an
   * intent file naming the target and `tag` (the caller's id of the new tree). From the moment the intent is
   * written, the new tree is either in the commit dir or in place, so recoverCommits() can always finish the
   * replace after a kill: there is never no tree, and never a mix. `onPlaced` runs (the install record) once
   * the new tree is in place and the old one gone; only then is the intent removed, so a kill before the
   * record is written is finished by recoverCommits() too.
   */
  async commit(
    staging: string,
    meta: RuntimeMeta,
    opts: { force?: boolean; tag?: string; onPlaced?: (target: string) => Promise<void>; synced?: boolean } = {},
  ): Promise<string> {
    this.assertStaging(staging);
    let work: string | null = null;
    try {
      const target = this.pathFor(meta.name, meta.version);
      const staged = await this.readStagedMeta(staging);
      if (staged.name !== meta.name || staged.version !== meta.version) {
        throw new PackageError(
          `the staged runtime.yml says ${staged.name}@${staged.version}, but ${meta.name}@${meta.version} was expected`,
        );
      }
      if (!(await exists(dirname(target)))) {
        await mkdir(dirname(target), { recursive: true, mode: 0o755 });
        await syncPath(this.root);
      }
      const installed = await exists(target);
      if (installed && !opts.force) throw new PackageError(`${meta.name}@${meta.version} is already installed at ${target}`);
      // Bytes and directory entries of the staged tree on disk before any rename can publish it (`synced`:
      // the caller did so already, outside its lock).
      if (!opts.synced) await syncTreeFilesystem(staging);
      work = await this.newWorkDir(this.commitsRoot);
      const fresh = join(work, 'new');
      const aside = join(work, 'old');
      // Kill points (tests only) are named by what the commit does: a first install or a replace.
      const kind = installed ? 'replace' : 'install';
      await rename(staging, fresh);
      killPoint(`${kind}-staged`);
      await writeIntent(work, { name: meta.name, version: meta.version, tag: opts.tag ?? null });
      killPoint(`${kind}-intent`);
      if (installed) {
        await rename(target, aside);
        killPoint('replace-aside');
      }
      try {
        await rename(fresh, target);
      } catch (err) {
        // Put the old version back: a failed replace must leave what was installed. If even that fails, the
        // commit dir (old tree, new tree, intent) stays for recoverCommits() at the next start.
        if (installed) {
          await rename(aside, target).catch((restoreErr: unknown) => {
            work = null;
            throw restoreErr;
          });
        }
        const code = (err as NodeJS.ErrnoException).code;
        // Someone installed the same version between our check and the rename.
        if (!installed && (code === 'ENOTEMPTY' || code === 'EEXIST')) {
          throw new PackageError(`${meta.name}@${meta.version} is already installed at ${target}`);
        }
        throw err;
      }
      // The rename durable before the install record can claim it.
      await syncPath(dirname(target));
      killPoint(`${kind}-renamed`);
      if (installed) {
        await removeTree(aside);
        killPoint('replace-old-removed');
      }
      await opts.onPlaced?.(target);
      killPoint(`${kind}-recorded`);
      return target;
    } finally {
      if (work !== null) await this.removeCommitDir(work);
      await removeTree(dirname(staging));
    }
  }

  /**
   * Finishes the commits a kill interrupted (see commit()), before anything else touches the runtimes dir.
   * For each, `onPlaced` is called with the tree now in place and the commit's tag, so the caller can make
   * its install record say what is there; a commit without an intent never started a rename into place and
   * is dropped. Idempotent: a kill during recovery is recovered from by the next start.
   */
  async recoverCommits(onPlaced: (r: RecoveredCommit) => Promise<void>): Promise<void> {
    let names: string[];
    try {
      names = await readdir(this.commitsRoot);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
      throw err;
    }
    for (const dirName of names) {
      const work = join(this.commitsRoot, dirName);
      const intent = await readIntent(work);
      if (intent === null) {
        await removeTree(work);
        continue;
      }
      const target = this.pathFor(intent.name, intent.version);
      const fresh = join(work, 'new');
      const aside = join(work, 'old');
      let step: RecoveredCommit['step'];
      if (await exists(fresh)) {
        // Killed before the new tree went in: whatever is in place (the old tree) goes aside, the new one in.
        step = (await exists(aside)) ? 'after-aside' : 'before-aside';
        if (await exists(target)) {
          await removeTree(aside);
          await rename(target, aside);
          killPoint('recover-aside');
        }
        await mkdir(dirname(target), { recursive: true, mode: 0o755 });
        await rename(fresh, target);
        await syncPath(dirname(target));
      } else if (await exists(target)) {
        step = (await exists(aside)) ? 'after-rename' : 'before-record';
      } else if (await exists(aside)) {
        // The new tree is gone (deleted by hand?): the old one is complete, it goes back.
        await rename(aside, target);
        await syncPath(dirname(target));
        await onPlaced({ ...intent, path: target, step: 'new-tree-vanished', tag: null });
        await removeTree(work);
        continue;
      } else {
        await removeTree(work);
        continue;
      }
      await removeTree(aside);
      await onPlaced({ ...intent, path: target, step });
      await removeTree(work);
    }
    await this.removeCommitDir(null);
  }

  /** Removes a finished commit dir, and the commits dir once empty: an idle runtimes dir looks as before. */
  private async removeCommitDir(work: string | null): Promise<void> {
    if (work !== null) await removeTree(work);
    await rmdir(this.commitsRoot).catch(() => {});
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

  /** Removes staging and trash left by a crash. Call after recoverCommits(), before any install starts. */
  async cleanupLeftovers(): Promise<void> {
    await removeTree(this.stagingRoot);
    await removeTree(this.trashRoot);
  }

  /** Every <name>/<version> directory holding a runtime.yml, whether or not the agent put it there. */
  async listTrees(): Promise<{ name: string; version: string; path: string }[]> {
    const out: { name: string; version: string; path: string }[] = [];
    for (const name of await readdir(this.root).catch(() => [] as string[])) {
      if (name === WORK_DIR || !safeSegment(() => assertRuntimeName(name, 'a directory'))) continue;
      for (const version of await readdir(join(this.root, name)).catch(() => [] as string[])) {
        if (!safeSegment(() => assertVersion(version, 'a directory'))) continue;
        const path = join(this.root, name, version);
        if (await exists(join(path, 'runtime.yml'))) out.push({ name, version, path });
      }
    }
    return out;
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

/** A commit that recoverCommits() finished: `step` says where the kill had interrupted it. */
export interface RecoveredCommit {
  name: string;
  version: string;
  tag: string | null;
  path: string;
  step: 'before-aside' | 'after-aside' | 'after-rename' | 'before-record' | 'new-tree-vanished';
}

interface Intent { name: string; version: string; tag: string | null }

/** Written whole or not at all (temp file, fsync, rename, fsync of the dir). */
async function writeIntent(work: string, intent: Intent): Promise<void> {
  const tmp = join(work, 'intent.json.tmp');
  const handle = await open(tmp, 'wx', 0o600);
  try {
    await handle.writeFile(JSON.stringify(intent));
    await handle.sync();
  } finally {
    await handle.close();
  }
  await rename(tmp, join(work, 'intent.json'));
  await syncPath(work);
}

async function readIntent(work: string): Promise<Intent | null> {
  let text: string;
  try {
    text = await readFile(join(work, 'intent.json'), 'utf8');
  } catch {
    return null;
  }
  try {
    const v = JSON.parse(text) as Intent;
    assertRuntimeName(v.name, 'the commit intent');
    assertVersion(v.version, 'the commit intent');
    return { name: v.name, version: v.version, tag: typeof v.tag === 'string' ? v.tag : null };
  } catch {
    return null;
  }
}

function safeSegment(check: () => void): boolean {
  try {
    check();
    return true;
  } catch {
    return false;
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
