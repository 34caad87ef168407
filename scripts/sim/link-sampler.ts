// Samples the switch-side counters of every host port (and the uplink) while a transfer runs, so a run
// can show where the time went: how busy host 0's upload was, when each host's download started and
// stopped, and how long it took from the last byte in to the install.
import { run, sleep } from './sh.js';
import { SWITCH_NS } from './topology.js';

interface PortStats { ifname: string; stats64?: { rx: { bytes: number }; tx: { bytes: number } } }

export interface Sample {
  /** Seconds since the sampler started. */
  t: number;
  /** Per host: bytes the host has sent (its upload) and received (its download) since the start. */
  up: number[];
  down: number[];
}

async function read(hosts: number): Promise<{ up: number[]; down: number[] }> {
  const ports = JSON.parse((await run('ip', ['-n', SWITCH_NS, '-s', '-j', 'link', 'show'])).stdout) as PortStats[];
  const up = new Array<number>(hosts).fill(0);
  const down = new Array<number>(hosts).fill(0);
  for (const p of ports) {
    const m = /^h(\d+)$/.exec(p.ifname);
    if (!m || !p.stats64) continue;
    // On the switch side, what the port receives is what the host uploads, and the reverse.
    up[Number(m[1])] = p.stats64.rx.bytes;
    down[Number(m[1])] = p.stats64.tx.bytes;
  }
  return { up, down };
}

export class LinkSampler {
  readonly samples: Sample[] = [];
  private stopped = false;
  private loop: Promise<void> | null = null;

  constructor(private readonly hosts: number, private readonly everyMs = 500) {}

  async start(): Promise<void> {
    const base = await read(this.hosts);
    const t0 = Date.now();
    this.samples.push({ t: 0, up: base.up.map(() => 0), down: base.down.map(() => 0) });
    this.loop = (async () => {
      while (!this.stopped) {
        await sleep(this.everyMs);
        const now = await read(this.hosts).catch(() => null);
        if (now) {
          this.samples.push({ t: (Date.now() - t0) / 1000, up: now.up.map((b, i) => b - base.up[i]), down: now.down.map((b, i) => b - base.down[i]) });
        }
      }
    })();
  }

  async stop(): Promise<Sample[]> {
    this.stopped = true;
    await this.loop;
    return this.samples;
  }
}

export interface LinkFigures {
  /** Host 0's mean upload rate over the first S/B seconds, as a share of B. */
  publisherUploadShare: number | null;
  /** All hosts' uploads together over the whole transfer, as a share of N x B. */
  totalUploadShare: number | null;
  /** Per host: seconds when 1% and 99% of its downloaded bytes had arrived. */
  downloadStartS: number[];
  downloadEndS: number[];
  downloadedBytes: number[];
}

/** Reduce the samples to the figures that explain a run. `endS` = last install, `boundS` = S/B. */
export function linkFigures(samples: Sample[], hostMbit: number, boundS: number | null, endS: number): LinkFigures {
  const last = samples[samples.length - 1];
  const n = last.down.length;
  const rate = hostMbit * 1e6 / 8;
  const at = (t: number) => samples.reduce((best, s) => (s.t <= t ? s : best), samples[0]);
  const firstReaching = (i: number, bytes: number) => samples.find((s) => s.down[i] >= bytes)?.t ?? NaN;
  const totalUp = (s: Sample) => s.up.reduce((a, b) => a + b, 0);
  const endSample = at(endS);
  return {
    publisherUploadShare: rate && boundS ? at(boundS).up[0] / (rate * at(boundS).t || 1) : null,
    totalUploadShare: rate ? totalUp(endSample) / (rate * n * (endSample.t || 1)) : null,
    downloadStartS: last.down.map((b, i) => firstReaching(i, b * 0.01)),
    downloadEndS: last.down.map((b, i) => firstReaching(i, b * 0.99)),
    downloadedBytes: last.down,
  };
}
