// Keeps installed runtimes equal to their manifests: `verify` of the trees, `repair`, the periodic cheap
// check of `repair: auto`, and fetching again chunks that the store dropped because they failed verification.
//
// With `repair: auto` every `repairInterval` (default 10 min) each installed tree gets the cheap check of
// verify-tree.ts (an lstat per entry, a readdir per directory, a hash only for a file whose mtime moved);
// a tree that differs is repaired. Nothing else runs while idle: no watcher, no timer besides that one.
import type { InstallRecord, SignedManifest } from '../../store/types.js';
import { manifestChunks } from '../../store/manifest.js';
import type { InstallContext } from '../install/install-manifest.js';
import { checkInstalled, repairRuntime, type RuntimeCheck } from '../install/repair.js';
import type { Swarm } from '../swarm/swarm.js';
import { Mutex } from '../mutex.js';
import { UserError } from '../errors.js';
import { log, errorText } from '../log.js';
import { metrics } from '../metrics.js';

/** Paths per list in a log event, and in each repair kept for status. */
const LOG_PATHS = 20;
const KEEP_PATHS = 100;

function capped(paths: string[]): string[] {
  return paths.length <= LOG_PATHS ? paths : [...paths.slice(0, LOG_PATHS), `(${paths.length - LOG_PATHS} more)`];
}

export type RepairMode = 'off' | 'auto';
export const REPAIR_MODES: readonly RepairMode[] = ['off', 'auto'];

export interface KeeperOptions {
  install: InstallContext;
  /** The daemon's lock. */
  lock: <T>(fn: () => Promise<T>) => Promise<T>;
  /** The swarm, or null when the agent works alone (then missing chunks cannot be fetched). */
  swarm: () => Swarm | null;
  mode: RepairMode;
  intervalMs: number;
}

export interface RepairOutcome {
  name: string;
  version: string;
  /** repaired; clean: nothing to repair; skipped: removed or replaced meanwhile; failed: see error. */
  result: 'repaired' | 'clean' | 'skipped' | 'failed';
  /** What was found before the repair. */
  drift: Pick<RuntimeCheck, 'state' | 'changed' | 'added' | 'missing'>;
  error: string | null;
  at: string;
}

interface CheckSummary { at: string; full: boolean; ms: number; runtimes: number; drifted: number; entries: number }

export class TreeKeeper {
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;
  /** One check or repair at a time: the periodic round and the commands do not race each other. */
  private readonly serial = new Mutex();
  private lastCheck: CheckSummary | null = null;
  private readonly recent: RepairOutcome[] = [];
  private chunksDropped = 0;
  private readonly droppedPending = new Set<string>();
  private refetchTimer: NodeJS.Timeout | undefined;

  constructor(private readonly opts: KeeperOptions) {}

  start(): void {
    if (this.opts.mode === 'auto') this.schedule();
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
    clearTimeout(this.refetchTimer);
  }

  /** Resolves when no check or repair is running (the daemon waits for it before closing the store). */
  idle(): Promise<void> {
    return this.serial.run(async () => {});
  }

  private schedule(): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => void this.round(), this.opts.intervalMs);
    this.timer.unref?.();
  }

  /** One periodic round: the cheap check of every installed tree, and a repair of those that differ. */
  private async round(): Promise<void> {
    try {
      const checks = await this.serial.run(() => this.checkAll(false));
      for (const c of checks) {
        if (this.stopped) break;
        if (c.state === 'drifted' || c.state === 'deleted') await this.serial.run(() => this.repairOne(c, 'auto'));
        else if (c.state === 'unchecked' && c.sm) void this.opts.swarm()?.fetchChunks(c.sm).catch(() => {});
      }
    } catch (err) {
      log.warn('tree_check_failed', { error: errorText(err) });
    } finally {
      this.schedule();
    }
  }

  /** Every installed runtime against its manifest; `full` hashes every file. */
  async verifyAll(full = true): Promise<RuntimeCheck[]> {
    return (await this.serial.run(() => this.checkAll(full))).map(({ sm: _sm, ...c }) => c);
  }

  private async checkAll(full: boolean): Promise<(RuntimeCheck & { sm: SignedManifest | undefined })[]> {
    const started = performance.now();
    const out = [];
    for (const r of await this.opts.install.store.index.listInstalls()) {
      const c = await checkInstalled(this.opts.install, r, full);
      out.push(c);
      if (c.state === 'drifted' || c.state === 'deleted') {
        metrics.driftFound++;
        log.warn('drift_found', {
          name: c.name, version: c.version, path: c.path, state: c.state,
          changed: capped(c.changed.map((x) => `${x.path}(${x.what.join('+')})`)), added: capped(c.added), missing: capped(c.missing),
          hint: this.opts.mode === 'auto' ? 'repair: auto restores it now' : `run "joblet-agent repair ${c.name}@${c.version}" to restore it`,
        });
      } else if (c.state === 'unchecked') {
        log.warn('tree_unchecked', { name: c.name, version: c.version, error: c.error });
      }
    }
    this.lastCheck = {
      at: new Date().toISOString(), full, ms: Math.round(performance.now() - started), runtimes: out.length,
      drifted: out.filter((c) => c.state === 'drifted' || c.state === 'deleted').length, entries: out.reduce((n, c) => n + c.entries, 0),
    };
    return out;
  }

  /** `repair [NAME[@VERSION]]`: a full check of each such installed runtime, and a repair of those that differ. */
  async repair(name: string | undefined, version: string | undefined): Promise<{ outcomes: RepairOutcome[]; note: string | null }> {
    const spec = name === undefined ? '' : version === undefined ? name : `${name}@${version}`;
    const installs = (await this.opts.install.store.index.listInstalls())
      .filter((r) => name === undefined || (r.name === name && (version === undefined || r.version === version)));
    if (installs.length === 0) {
      if (name === undefined) return { outcomes: [], note: 'no runtimes are installed here: nothing to repair' };
      const known = (await this.opts.install.store.index.listManifests())
        .some((sm) => sm.manifest.runtime.name === name && (version === undefined || sm.manifest.runtime.version === version));
      if (!known) throw new UserError(`unknown runtime ${spec}: this agent knows no manifest of it (see "joblet-agent status" for the runtimes it knows)`);
      throw new UserError(`${spec} is not installed here, so there is nothing to repair (repair restores installed runtimes only)`);
    }
    const outcomes: RepairOutcome[] = [];
    for (const r of installs) {
      outcomes.push(await this.serial.run(async () => {
        const c = await checkInstalled(this.opts.install, r, true);
        if (c.state === 'ok') return this.outcome(c, 'clean', null);
        if (c.state === 'unchecked' && !c.sm) return this.outcome(c, 'failed', c.error);
        // Unchecked with a manifest: its entry list is not in the store; the repair fetches it with the rest.
        return this.repairOne(c, 'command');
      }));
    }
    return { outcomes, note: null };
  }

  private async repairOne(c: RuntimeCheck & { sm: SignedManifest | undefined }, by: 'auto' | 'command'): Promise<RepairOutcome> {
    const swarm = this.opts.swarm();
    const record: InstallRecord | undefined = await this.opts.install.store.index.getInstall(c.name, c.version);
    if (!record || record.manifestId !== c.manifestId || !c.sm) return this.outcome(c, 'skipped', null);
    const started = performance.now();
    try {
      const done = await repairRuntime({
        ctx: this.opts.install, lock: this.opts.lock, fetchChunks: swarm ? (sm) => swarm.fetchChunks(sm) : undefined,
      }, record, c.sm);
      if (!done) return this.outcome(c, 'skipped', null);
      metrics.repairs.repaired++;
      log.info('repaired', { name: c.name, version: c.version, path: done.path, by, was: c.state,
        changed: c.changed.length, added: c.added.length, missing: c.missing.length, ms: Math.round(performance.now() - started) });
      return this.outcome(c, 'repaired', null);
    } catch (err) {
      metrics.repairs.failed++;
      log.error('repair_failed', { name: c.name, version: c.version, by, error: errorText(err),
        hint: by === 'auto' ? 'retried at the next check' : 'the installed tree is left as it was' });
      return this.outcome(c, 'failed', errorText(err));
    }
  }

  private outcome(c: RuntimeCheck, result: RepairOutcome['result'], error: string | null): RepairOutcome {
    const o: RepairOutcome = {
      name: c.name, version: c.version, result, error, at: new Date().toISOString(),
      drift: { state: c.state, changed: c.changed, added: c.added, missing: c.missing },
    };
    // Kept for status: bounded, however much of a tree was damaged.
    const kept = { ...o, drift: { state: c.state, changed: c.changed.slice(0, KEEP_PATHS), added: c.added.slice(0, KEEP_PATHS), missing: c.missing.slice(0, KEEP_PATHS) } };
    if (result !== 'clean') {
      this.recent.unshift(kept);
      this.recent.length = Math.min(this.recent.length, 10);
    }
    return o;
  }

  /**
   * The store deleted a chunk file that failed verification (chunk-store.ts): fetch it again for every
   * manifest that needs it, a second later so that a burst of drops (a verify of a bad disk) is one download.
   */
  chunkDropped(id: string, error: string): void {
    this.chunksDropped++;
    metrics.chunksDropped++;
    log.warn('chunk_dropped', { chunk: id, error, hint: 'the chunk file failed verification and was deleted; it is fetched again from the fleet. Check the disk if this repeats' });
    this.droppedPending.add(id);
    if (this.refetchTimer || this.stopped) return;
    this.refetchTimer = setTimeout(() => {
      this.refetchTimer = undefined;
      void this.refetchDropped();
    }, 1000);
    this.refetchTimer.unref?.();
  }

  private async refetchDropped(): Promise<void> {
    const ids = new Set(this.droppedPending);
    this.droppedPending.clear();
    const swarm = this.opts.swarm();
    if (!swarm || this.stopped) return;
    for (const sm of await this.opts.install.store.index.listManifests().catch(() => [])) {
      if (manifestChunks(sm.manifest).some((c) => ids.has(c.id))) void swarm.fetchChunks(sm).catch(() => {});
    }
  }

  status() {
    return {
      mode: this.opts.mode,
      intervalSeconds: this.opts.mode === 'auto' ? Math.round(this.opts.intervalMs / 1000) : null,
      lastCheck: this.lastCheck,
      recent: this.recent,
      chunksDropped: this.chunksDropped,
    };
  }
}
