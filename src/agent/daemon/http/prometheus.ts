// GET /metrics: the agent's state in Prometheus text format. Gauges are read from the agent's status at
// scrape time; counters come from the plain counters in ../../metrics.ts and the swarm's own totals, so
// nothing below the daemon knows about prom-client.
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { INSTALL_DURATION_BUCKETS, metrics } from '../../metrics.js';
import type { AgentStatus } from './server.js';

export class PrometheusExporter {
  readonly registry = new Registry();
  /** The status the collectors read; taken once per scrape so that every series comes from one moment. */
  private current: AgentStatus | null = null;

  constructor(private readonly status: () => Promise<AgentStatus>) {
    const r = [this.registry];
    const self = this;
    // prom-client's process and Node.js metrics (CPU, memory, event loop lag, open fds, GC).
    collectDefaultMetrics({ register: this.registry });

    new Gauge({
      name: 'joblet_agent_info', help: 'Always 1; the labels say which agent this is.', registers: r,
      labelNames: ['version', 'peer_id', 'zone', 'arch'] as const,
      collect() {
        this.reset();
        const s = self.current;
        if (s) this.set({ version: s.version, peer_id: s.peerId, zone: s.zone ?? '', arch: s.arch }, 1);
      },
    });
    // Counters are totals kept elsewhere (../../metrics.ts, the status): every scrape sets them anew.
    const counter = (name: string, help: string, total: () => number) => new Counter({
      name, help, registers: r,
      collect() { this.reset(); this.inc(total()); },
    });
    const countersBy = (name: string, help: string, label: string, totals: () => Record<string, number>) => new Counter({
      name, help, registers: r, labelNames: [label],
      collect() {
        this.reset();
        for (const [value, n] of Object.entries(totals())) this.inc({ [label]: value }, n);
      },
    });
    countersBy('joblet_agent_downloaded_bytes_total',
      'Bytes of verified chunks received from peers, as sent (compressed); source="zone" for peers in this agent\'s --zone, "far" for the others.',
      'source', () => metrics.downloadedBytes);
    counter('joblet_agent_uploaded_bytes_total', 'Chunk bytes served to peers.', () => self.current?.swarm?.uploads.bytesServed ?? 0);
    counter('joblet_agent_chunks_received_total', 'Chunks received from peers, verified and stored.', () => metrics.chunksReceived);
    counter('joblet_agent_corrupt_chunks_total', 'Chunks received whose bytes did not match their id (each sender is avoided for a while).',
      () => self.current?.swarm?.corruptChunksReceived ?? 0);
    countersBy('joblet_agent_installs_total', 'Installs of runtimes learned from the fleet; result="installed" or "failed" (a failed install is retried).',
      'result', () => metrics.installs);
    countersBy('joblet_agent_repairs_total', 'Repairs of installed runtimes (repair command or repair: auto); result="repaired" or "failed".',
      'result', () => metrics.repairs);
    counter('joblet_agent_drift_found_total', 'Checks that found an installed tree differing from its manifest.', () => metrics.driftFound);
    counter('joblet_agent_chunks_dropped_total', 'Chunk files that failed verification here and were deleted (then fetched again).', () => metrics.chunksDropped);
    new Histogram({
      name: 'joblet_agent_install_duration_seconds', registers: r, buckets: [...INSTALL_DURATION_BUCKETS],
      help: 'Seconds from learning of a manifest to having it installed.',
      collect() { for (const d of metrics.takeDurations()) this.observe(d); },
    });
    counter('joblet_agent_gc_freed_bytes_total', 'Bytes of chunk and temp files the disk-budget GC deleted.', () => metrics.gc.bytes);
    countersBy('joblet_agent_downloads_refused_total', 'Downloads refused before they started because they did not fit; reason="budget", "watermark" or "space".',
      'reason', () => metrics.refusedForSpace);
    counter('joblet_agent_disk_full_total', 'Transfers stopped by a full disk or quota (ENOSPC, EDQUOT); each resumes when space returns.', () => metrics.diskFullStops);
    const gauge = (name: string, help: string, value: (s: AgentStatus) => number) => new Gauge({
      name, help, registers: r,
      collect() { if (self.current) this.set(value(self.current)); },
    });
    gauge('joblet_agent_transfers_active', 'Runtimes being downloaded now.', (s) => s.swarm?.transfers.length ?? 0);
    gauge('joblet_agent_peers', 'Peers connected now.', (s) => new Set(s.swarm?.peers.map((p) => p.peerId) ?? []).size);
    gauge('joblet_agent_store_bytes', 'Bytes of chunk files in the store.', (s) => s.store.bytes);
    gauge('joblet_agent_store_budget_bytes', 'The store budget (store.maxBytes); 0 when there is none.', (s) => s.store.maxBytes ?? 0);
    gauge('joblet_agent_store_usage_bytes', 'Bytes of the agent\'s own files in the data dir (chunks, temp files, index): what the budget counts.', (s) => s.store.usageBytes ?? 0);
    gauge('joblet_agent_downloads_waiting_for_space', 'Downloads refused or stopped for lack of space, waiting for it to return.', (s) => s.store.waitingForSpace.length);
    gauge('joblet_agent_runtimes_installed', 'Runtime versions installed on this host.', (s) => s.runtimes.length);
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  async scrape(): Promise<string> {
    this.current = await this.status();
    return this.registry.metrics();
  }
}
