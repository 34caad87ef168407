// Counters the swarm and download code bump as things happen; the HTTP endpoint turns them into
// Prometheus metrics at scrape time. Plain numbers on purpose: no metrics library below the daemon,
// and a hook in the transfer code stays one line.

/** Upper bounds (seconds) of the install-duration histogram: a small runtime on a LAN to a big one over an uplink. */
export const INSTALL_DURATION_BUCKETS = [0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800] as const;

export type InstallResult = 'installed' | 'failed';

class AgentMetrics {
  /** Bytes of verified chunks as received (stored size), by where they came from. */
  readonly downloadedBytes = { zone: 0, far: 0 };
  chunksReceived = 0;
  readonly installs: Record<InstallResult, number> = { installed: 0, failed: 0 };
  /** Installed trees found to differ from their manifests, repairs by result, chunk files dropped as corrupt. */
  driftFound = 0;
  readonly repairs = { repaired: 0, failed: 0 };
  chunksDropped = 0;
  /** Durations (seconds) observed since the exporter last took them. */
  private pendingDurations: number[] = [];
  private readonly learnedAt = new Map<string, number>();

  /** A verified chunk was stored; `sameZone` when the peer that sent it is in this agent's --zone. */
  chunkReceived(bytes: number, sameZone: boolean): void {
    this.chunksReceived++;
    this.downloadedBytes[sameZone ? 'zone' : 'far'] += bytes;
  }

  /** This process first saw a manifest it will install: the install duration runs from here. */
  manifestLearned(manifestId: string): void {
    if (!this.learnedAt.has(manifestId)) this.learnedAt.set(manifestId, Date.now());
  }

  installFinished(manifestId: string, result: InstallResult): void {
    this.installs[result]++;
    if (result !== 'installed') return; // a failure is retried; the duration keeps running until it succeeds
    const since = this.learnedAt.get(manifestId);
    this.learnedAt.delete(manifestId);
    if (since === undefined) return;
    if (this.pendingDurations.length < 10_000) this.pendingDurations.push((Date.now() - since) / 1000);
  }

  /** Disk budget (swarm/disk-budget.ts): what GC freed, downloads refused for space, transfers a full disk stopped. */
  readonly gc = { runs: 0, files: 0, bytes: 0 };
  readonly refusedForSpace: Record<string, number> = {};
  diskFullStops = 0;

  gcFreed(files: number, bytes: number): void {
    this.gc.runs++;
    this.gc.files += files;
    this.gc.bytes += bytes;
  }

  downloadRefused(kind: string): void {
    this.refusedForSpace[kind] = (this.refusedForSpace[kind] ?? 0) + 1;
  }

  /** Hand the observed durations to the exporter (each is observed once). */
  takeDurations(): number[] {
    const out = this.pendingDurations;
    this.pendingDurations = [];
    return out;
  }
}

/** One agent per process, so one set of counters. */
export const metrics = new AgentMetrics();
