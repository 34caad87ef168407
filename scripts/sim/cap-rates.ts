// How closely each host kept to a bandwidth cap, from the link sampler's byte counters (link bytes: chunk
// payloads plus Noise, yamux and TCP/IP overhead, so a host exactly at its cap reads a few % above it).
import type { Sample } from './link-sampler.js';

export interface CapRate {
  host: number;
  /**
   * Mean rate from the first to the last sample interval in which the host moved more than 5 % of the cap
   * (its own transfer, idle head and tail left out), in bytes/s.
   */
  meanActiveBps: number;
  /** The highest rate over any window of `windowS` seconds, in bytes/s. */
  maxWindowBps: number;
}

export function capRates(samples: Sample[], direction: 'up' | 'down', capBps: number, windowS = 5): CapRate[] {
  if (samples.length < 2) return [];
  const hosts = samples[0]![direction].length;
  const out: CapRate[] = [];
  for (let h = 0; h < hosts; h++) {
    let first = -1;
    let last = -1;
    let maxWindow = 0;
    let j = 0;
    for (let i = 1; i < samples.length; i++) {
      const dt = samples[i]!.t - samples[i - 1]!.t;
      const bytes = samples[i]![direction][h]! - samples[i - 1]![direction][h]!;
      if (dt > 0 && bytes / dt > 0.05 * capBps) {
        if (first < 0) first = i - 1;
        last = i;
      }
      // j: the latest sample at least windowS before sample i.
      while (j + 1 < i && samples[i]!.t - samples[j + 1]!.t >= windowS) j++;
      const span = samples[i]!.t - samples[j]!.t;
      if (span >= windowS) maxWindow = Math.max(maxWindow, (samples[i]![direction][h]! - samples[j]![direction][h]!) / span);
    }
    const mean = first < 0 ? 0
      : (samples[last]![direction][h]! - samples[first]![direction][h]!) / (samples[last]!.t - samples[first]!.t);
    out.push({ host: h, meanActiveBps: mean, maxWindowBps: maxWindow });
  }
  return out;
}
