// The store's index in LevelDB (`level`): signed manifests, install records and small agent
// state, each in its own sublevel with JSON values. Chunk bytes never go in here: they are
// files (see chunk-store.ts).

import { Level } from 'level';
import type { AbstractSublevel } from 'abstract-level';
import type { InstallRecord, SignedManifest } from './types.js';

type Json = unknown;
type Sublevel = AbstractSublevel<Level<string, Json>, string | Buffer | Uint8Array, string, Json>;

export class StoreIndex {
  private constructor(
    private readonly db: Level<string, Json>,
    private readonly manifests: Sublevel,
    private readonly installs: Sublevel,
    private readonly meta: Sublevel,
  ) {}

  static async open(dir: string): Promise<StoreIndex> {
    const db = new Level<string, Json>(dir, { valueEncoding: 'json' });
    try {
      await db.open();
    } catch (err) {
      const cause = (err as { cause?: Error }).cause;
      throw new Error(`cannot open the store index at ${dir}: ${cause?.message ?? (err as Error).message}`);
    }
    const sub = (name: string): Sublevel => db.sublevel<string, Json>(name, { valueEncoding: 'json' });
    return new StoreIndex(db, sub('manifests'), sub('installs'), sub('meta'));
  }

  async close(): Promise<void> {
    await this.db.close();
  }

  // ---- manifests, keyed by id ----

  async putManifest(sm: SignedManifest): Promise<void> {
    await this.manifests.put(sm.id, sm);
  }

  async getManifest(id: string): Promise<SignedManifest | undefined> {
    return (await this.manifests.get(id)) as SignedManifest | undefined;
  }

  async listManifests(): Promise<SignedManifest[]> {
    return (await this.manifests.values().all()) as SignedManifest[];
  }

  async deleteManifest(id: string): Promise<void> {
    await this.manifests.del(id);
  }

  // ---- install records, keyed by name and version ----

  async putInstall(r: InstallRecord): Promise<void> {
    await this.installs.put(installKey(r.name, r.version), r);
  }

  async getInstall(name: string, version: string): Promise<InstallRecord | undefined> {
    return (await this.installs.get(installKey(name, version))) as InstallRecord | undefined;
  }

  /** Sorted by name, then by version with numeric parts compared as numbers (1.10 after 1.9). */
  async listInstalls(): Promise<InstallRecord[]> {
    const records = (await this.installs.values().all()) as InstallRecord[];
    return records.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : compareVersions(a.version, b.version)));
  }

  async deleteInstall(name: string, version: string): Promise<void> {
    await this.installs.del(installKey(name, version));
  }

  // ---- small agent state (peer key info, download progress, ...) ----

  async getMeta<T>(key: string): Promise<T | undefined> {
    return (await this.meta.get(key)) as T | undefined;
  }

  async putMeta(key: string, value: unknown): Promise<void> {
    if (value === undefined) throw new Error(`cannot store undefined under meta key ${key}; use deleteMeta`);
    await this.meta.put(key, value);
  }

  async deleteMeta(key: string): Promise<void> {
    await this.meta.del(key);
  }
}

// Runtime names and versions never contain NUL, so it separates them unambiguously.
function installKey(name: string, version: string): string {
  return `${name}\u0000${version}`;
}

/** Orders versions by their dot/dash separated parts, numeric parts numerically. */
export function compareVersions(a: string, b: string): number {
  const pa = a.split(/[.+-]/);
  const pb = b.split(/[.+-]/);
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    const x = pa[i];
    const y = pb[i];
    if (x === undefined) return -1;
    if (y === undefined) return 1;
    const nx = /^\d+$/.test(x) ? Number(x) : NaN;
    const ny = /^\d+$/.test(y) ? Number(y) : NaN;
    if (!Number.isNaN(nx) && !Number.isNaN(ny)) {
      if (nx !== ny) return nx - ny;
    } else if (x !== y) {
      return x < y ? -1 : 1;
    }
  }
  return a < b ? -1 : a > b ? 1 : 0;
}
