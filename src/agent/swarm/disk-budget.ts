// The disk budget: how much the store may take, as bytes (store.maxBytes) and as a share of the filesystem
// holding the data dir (the high and low watermarks), counted on the agent's own files only. Three jobs:
//
//  - admit(): before a download starts, check that it fits, after what GC can free (src/store/gc.ts). A
//    download that does not fit is refused with one sentence and waits; it is not retried in a loop.
//  - tidy(): after an install or a publish, GC when the budget or the high watermark is crossed (and always
//    remove garbage: the chunks a replaced version left behind).
//  - waiting: downloads refused, or stopped by a full disk, are retried when space returns. While (and only
//    while) one waits, a statfs every SPACE_CHECK_MS tells whether it can go on; an idle agent never polls.
import { stat, statfs } from 'node:fs/promises';
import type { StoreBudget } from '../config.js';
import { formatBinary } from '../units.js';
import { log, errorText } from '../log.js';
import { metrics } from '../metrics.js';
import { CHUNK_HEADER_BYTES } from '../../store/chunk-store.js';
import { evict, ownUsage, type EvictionResult } from '../../store/gc.js';
import { manifestBytes, manifestChunks } from '../../store/manifest.js';
import type { Store } from '../../store/store.js';
import type { ChunkRef, SignedManifest } from '../../store/types.js';

const SPACE_CHECK_MS = 5_000;

export type RefusalKind = 'budget' | 'watermark' | 'space' | 'disk-full';

/** When a waiting download is worth trying again. */
type RetryWhen =
  /** The store shrank (a removal, a GC that freed something) or the agent restarted with a larger budget. */
  | { storeShrinks: true }
  /** The filesystem holding `path` has at least this many bytes available. */
  | { path: string; availAtLeast: number };

export type Admission = { ok: true } | { ok: false; kind: RefusalKind; sentence: string; retryWhen: RetryWhen };

export interface AdmitContext {
  /** Manifests whose chunks GC must keep: installed here, in transfer, waiting to resume. */
  protect: Set<string>;
  /** Bytes other downloads in progress are still to write. */
  reservedBytes: number;
  /** The installed manifest this one replaces (same name@version, older): its unshared chunks go when this lands. */
  replaces: SignedManifest | null;
}

interface Waiting {
  manifestId: string;
  name: string;
  version: string;
  kind: RefusalKind;
  reason: string;
  since: number;
  retryWhen: RetryWhen;
  /** The store generation when it began to wait. */
  generation: number;
  retry: () => void;
}

interface FsView { path: string; totalBytes: number; usedBytes: number; availBytes: number; usedPercent: number }

export class DiskBudget {
  private readonly waiting = new Map<string, Waiting>();
  private timer: NodeJS.Timeout | null = null;
  /** Bumped whenever the store shrinks: a download refused by the budget is worth another look. */
  private generation = 0;
  private lastUsage: number | null = null;
  private lastRun: { at: string; reason: string; files: number; bytes: number; manifests: string[] } | null = null;
  private readonly totals = { runs: 0, files: 0, bytes: 0, manifests: 0 };
  /** Told which manifests GC dropped from the index (the swarm's catalog must stop listing them). */
  onEvicted: ((ids: string[]) => void) | null = null;

  constructor(
    private readonly store: Store,
    private readonly runtimesDir: string,
    readonly budget: StoreBudget,
    private readonly lock: <T>(fn: () => Promise<T>) => Promise<T>,
  ) {}

  /** Does `sm`, missing `missing`, fit in the budget and on the disks (after GC)? */
  async admit(sm: SignedManifest, missing: ChunkRef[], ctx: AdmitContext): Promise<Admission> {
    const label = `${sm.manifest.runtime.name}@${sm.manifest.runtime.version}`;
    const unique = new Map(missing.map((c) => [c.id, c]));
    const storeNeed = [...unique.values()].reduce((n, c) => n + c.storedSize + CHUNK_HEADER_BYTES, 0);
    const treeNeed = manifestBytes(sm.manifest);
    const credit = ctx.replaces ? await this.freedByReplacing(ctx.replaces, sm) : 0;

    // The budget and the high watermark, both on the agent's own bytes: the watermarks are shares of the
    // filesystem holding the data dir, so other programs' files there never make the agent evict or refuse.
    let fs = await this.fsView(this.store.chunks.dir);
    const fsSize = fs.usedBytes + fs.availBytes;
    const max = this.budget.maxBytes ?? Infinity;
    const high = this.budget.highWatermark;
    const highBytes = high < 100 ? fsSize * (high / 100) : Infinity;
    const lowBytes = high < 100 ? fsSize * (this.budget.lowWatermark / 100) : Infinity;
    const adds = ctx.reservedBytes + storeNeed - credit;
    // Neither a budget nor a watermark: nothing to count (the scan stats every chunk file).
    let usage = max === Infinity && highBytes === Infinity ? 0 : await this.usage();
    if (usage + adds > Math.min(max, highBytes)) {
      // Past the high watermark GC goes down to the low one, so that it does not run again at the next download.
      const target = Math.min(max, usage + adds > highBytes ? lowBytes : Infinity) - adds;
      usage = (await this.collect(ctx.protect, target, `${usage + adds > max ? 'budget' : 'high watermark'}, for ${label}`)).after.bytes;
    }
    if (usage + adds > max) {
      return {
        ok: false, kind: 'budget', retryWhen: { storeShrinks: true },
        sentence: `${label} needs ${formatBinary(storeNeed)} more in the store, but the store budget is ${formatBinary(max)} ` +
          `(store.maxBytes or --store-max-bytes) and ${formatBinary(usage + ctx.reservedBytes)} of it stay in use after GC ` +
          `(runtimes installed here, transfers in progress, runtimes kept for the fleet); it is retried when the store shrinks or the budget is raised`,
      };
    }
    if (usage + adds > highBytes) {
      const pct = Math.round((100 * (usage + adds)) / fsSize);
      return {
        ok: false, kind: 'watermark', retryWhen: { storeShrinks: true },
        sentence: `${label} would bring the store to ${formatBinary(usage + adds)}, ${pct} % of the filesystem holding ${this.store.dataDir}, ` +
          `over its high watermark of ${high} % (store.highWatermark) even after GC; it is retried when the store shrinks or the watermark is raised`,
      };
    }

    // Real space: the store's filesystem (with the tree, when the runtimes dir shares it), then the runtimes dir's.
    const sameFs = await this.sameFilesystem();
    const fsNeed = storeNeed + ctx.reservedBytes + (sameFs ? treeNeed : 0);
    if (fsNeed > fs.availBytes) {
      await this.collect(ctx.protect, Infinity, `disk space, for ${label}`);
      fs = await this.fsView(this.store.chunks.dir);
    }
    if (fsNeed > fs.availBytes) {
      return {
        ok: false, kind: 'space', retryWhen: { path: this.store.chunks.dir, availAtLeast: fsNeed },
        sentence: `${label} needs ${formatBinary(fsNeed)} on the filesystem holding ${this.store.dataDir}, which has ${formatBinary(fs.availBytes)} free; it is retried when space frees up`,
      };
    }
    if (!sameFs) {
      const rt = await this.fsView(this.runtimesDir);
      if (treeNeed > rt.availBytes) {
        return {
          ok: false, kind: 'space', retryWhen: { path: this.runtimesDir, availAtLeast: treeNeed },
          sentence: `${label} needs ${formatBinary(treeNeed)} for its tree in ${this.runtimesDir}, which has ${formatBinary(rt.availBytes)} free; it is retried when space frees up`,
        };
      }
    }
    return { ok: true };
  }

  /**
   * After an install or a publish: always drop garbage (a replaced version's chunks), and evict superseded
   * manifests when the budget or the high watermark is crossed, down to the budget and the low watermark.
   */
  async tidy(protect: Set<string>, reason: string): Promise<EvictionResult | null> {
    try {
      let target = this.budget.maxBytes ?? Infinity;
      if (this.budget.highWatermark < 100) {
        const fs = await this.fsView(this.store.chunks.dir);
        const fsSize = fs.usedBytes + fs.availBytes;
        if ((await this.usage()) > fsSize * (this.budget.highWatermark / 100)) target = Math.min(target, fsSize * (this.budget.lowWatermark / 100));
      }
      return await this.collect(protect, target, reason);
    } catch (err) {
      log.warn('gc_failed', { error: errorText(err) });
      return null;
    }
  }

  /** Runs GC under the daemon's lock; logs and counts what it freed. */
  async collect(protect: Set<string>, targetBytes: number, reason: string): Promise<EvictionResult> {
    const result = await this.lock(() => evict(this.store, { protect, targetBytes: Math.max(0, targetBytes) }));
    this.lastUsage = result.after.bytes;
    if (result.manifests.length > 0) this.onEvicted?.(result.manifests.map((m) => m.id));
    this.freed(result.files, result.bytes, reason, result.manifests.map((m) => `${m.name}@${m.version} (${m.id})`),
      { usageBefore: result.before.bytes, usageAfter: result.after.bytes });
    return result;
  }

  /**
   * The store shrank: by collect(), or by a GC run elsewhere (a removal, superseded manifests dropped). Counted
   * here whichever ran it, so that status and the metrics show every GC; waiting downloads get another look.
   */
  freed(files: number, bytes: number, reason: string, manifests: string[] = [], usage?: { usageBefore: number; usageAfter: number }): void {
    if (files === 0 && manifests.length === 0) return;
    if (!usage) this.lastUsage = null;
    this.generation++;
    this.totals.runs++;
    this.totals.files += files;
    this.totals.bytes += bytes;
    this.totals.manifests += manifests.length;
    metrics.gcFreed(files, bytes);
    this.lastRun = { at: new Date().toISOString(), reason, files, bytes, manifests };
    log.info('gc', { reason, files, bytes, evictedManifests: manifests, ...usage, budget: this.budget.maxBytes });
  }

  // ---- downloads waiting for space ---------------------------------------------------------------------

  isWaiting(manifestId: string): boolean {
    return this.waiting.has(manifestId);
  }

  waitingFor(manifestId: string): { kind: RefusalKind; reason: string; since: string } | null {
    const w = this.waiting.get(manifestId);
    return w ? { kind: w.kind, reason: w.reason, since: new Date(w.since).toISOString() } : null;
  }

  waitingIds(): string[] {
    return [...this.waiting.keys()];
  }

  /** `sm` cannot go on for lack of space: `retry` is called once it can (see RetryWhen). */
  wait(sm: SignedManifest, kind: RefusalKind, reason: string, retryWhen: RetryWhen, retry: () => void): void {
    this.waiting.set(sm.id, {
      manifestId: sm.id, name: sm.manifest.runtime.name, version: sm.manifest.runtime.version, kind, reason,
      since: Date.now(), retryWhen, generation: this.generation, retry,
    });
    if (!this.timer) {
      this.timer = setInterval(() => void this.checkWaiting(), SPACE_CHECK_MS);
      this.timer.unref?.();
    }
  }

  /** Forget a waiting download (removed, superseded). */
  forget(manifestId: string): void {
    this.waiting.delete(manifestId);
    this.stopTimerIfIdle();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    this.waiting.clear();
  }

  private async checkWaiting(): Promise<void> {
    for (const w of [...this.waiting.values()]) {
      let ready: boolean;
      if ('storeShrinks' in w.retryWhen) {
        ready = this.generation !== w.generation;
      } else {
        const avail = await this.fsView(w.retryWhen.path).then((f) => f.availBytes, () => 0);
        ready = avail >= w.retryWhen.availAtLeast || this.generation !== w.generation;
      }
      if (!ready || this.waiting.get(w.manifestId) !== w) continue;
      this.waiting.delete(w.manifestId);
      log.info('space_returned', { name: w.name, version: w.version, manifestId: w.manifestId, waitedS: Math.round((Date.now() - w.since) / 1000) });
      w.retry();
    }
    this.stopTimerIfIdle();
  }

  private stopTimerIfIdle(): void {
    if (this.waiting.size === 0 && this.timer) {
      clearInterval(this.timer);
      this.timer = null;
    }
  }

  // ---- measuring ------------------------------------------------------------------------------------------

  /** The agent's own bytes in the data dir, measured now. */
  async usage(): Promise<number> {
    this.lastUsage = (await ownUsage(this.store)).bytes;
    return this.lastUsage;
  }

  /** Bytes of `old`'s chunks that nothing else in the index, nor `next`, references: freed once `next` replaces it. */
  private async freedByReplacing(old: SignedManifest, next: SignedManifest): Promise<number> {
    const others = new Set<string>(manifestChunks(next.manifest).map((c) => c.id));
    for (const sm of await this.store.index.listManifests()) {
      if (sm.id !== old.id) for (const c of manifestChunks(sm.manifest)) others.add(c.id);
    }
    let bytes = 0;
    const seen = new Set<string>();
    for (const c of manifestChunks(old.manifest)) {
      if (others.has(c.id) || seen.has(c.id)) continue;
      seen.add(c.id);
      if (await this.store.chunks.has(c.id)) bytes += c.storedSize + CHUNK_HEADER_BYTES;
    }
    return bytes;
  }

  private async sameFilesystem(): Promise<boolean> {
    try {
      return (await stat(this.store.chunks.dir)).dev === (await stat(this.runtimesDir)).dev;
    } catch {
      return true; // the cautious answer: count the tree against the store's filesystem too
    }
  }

  private async fsView(path: string): Promise<FsView> {
    const s = await statfs(path);
    const usedBytes = (s.blocks - s.bfree) * s.bsize;
    const availBytes = s.bavail * s.bsize;
    // As df counts it: blocks reserved for root are neither used nor available.
    const usedPercent = usedBytes + availBytes > 0 ? (100 * usedBytes) / (usedBytes + availBytes) : 0;
    return { path, totalBytes: s.blocks * s.bsize, usedBytes, availBytes, usedPercent };
  }

  /** For `status`: usage, budget, watermarks, the filesystem, what GC freed, what waits for space. */
  async status() {
    const fs = await this.fsView(this.store.chunks.dir).catch(() => null);
    // One scan for both the budget's count and the chunk count of `status` (a scan stats every chunk file).
    const usage = await ownUsage(this.store);
    this.lastUsage = usage.bytes;
    const usageBytes = usage.bytes;
    return {
      chunks: usage.chunks,
      bytes: usage.chunkBytes,
      usageBytes,
      maxBytes: this.budget.maxBytes,
      highWatermarkPercent: this.budget.highWatermark,
      lowWatermarkPercent: this.budget.lowWatermark,
      filesystem: fs && { path: this.store.dataDir, totalBytes: fs.totalBytes, usedBytes: fs.usedBytes, availableBytes: fs.availBytes,
        usedPercent: Math.round(fs.usedPercent * 10) / 10,
        storePercent: usageBytes === null ? null : Math.round((1000 * usageBytes) / Math.max(1, fs.usedBytes + fs.availBytes)) / 10 },
      gc: { runs: this.totals.runs, files: this.totals.files, freedBytes: this.totals.bytes, evictedManifests: this.totals.manifests, lastRun: this.lastRun },
      waitingForSpace: [...this.waiting.values()].map((w) => ({
        manifestId: w.manifestId, name: w.name, version: w.version, kind: w.kind, reason: w.reason, since: new Date(w.since).toISOString(),
      })),
    };
  }
}
