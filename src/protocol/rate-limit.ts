/**
 * Host-wide bandwidth caps: one token bucket for everything this agent uploads and one for everything it
 * downloads, shared by all peers and streams. A cap per request or per peer would let a host with many
 * peers exceed it, and would slow down the first spread of a runtime needlessly.
 *
 * The bucket runs a debt model: a take is granted as soon as the balance is not negative and may drive it
 * below zero; the next take waits until the debt is paid back. So a take larger than the burst (a whole
 * 4 MiB chunk) never blocks for ever, and over any long window the bytes granted stay at the rate.
 * Waiters are served in arrival order, so no peer starves another.
 *
 * A limiter without a rate grants everything at once and only measures, so `status` can show the traffic
 * of an uncapped host too.
 */

/** Seconds of traffic the recent rate is averaged over. */
const METER_WINDOW_S = 5;

export interface RateLimiterStats {
  /** The cap in bytes per second, or null when uncapped. */
  limitBytesPerSecond: number | null;
  /** Bytes that went through since the agent started. */
  bytesTotal: number;
  /** Bytes per second over the last few seconds. */
  rateBytesPerSecond: number;
  /** Takers waiting for tokens right now. */
  waiting: number;
}

interface Waiter { bytes: number; resolve: () => void }

export class RateLimiter {
  readonly limit: number | null;
  private readonly burst: number;
  private balance = 0;
  private refilledAt = performance.now();
  private readonly queue: Waiter[] = [];
  private timer: NodeJS.Timeout | null = null;
  private bytesTotal = 0;
  /** Bytes per whole second, for the last METER_WINDOW_S + 1 seconds. */
  private readonly perSecond = new Map<number, number>();

  constructor(bytesPerSecond: number | null, opts: { burstBytes?: number } = {}) {
    if (bytesPerSecond !== null && (!Number.isFinite(bytesPerSecond) || bytesPerSecond <= 0)) {
      throw new RangeError(`a rate limit must be a positive number of bytes per second, got ${bytesPerSecond}`);
    }
    this.limit = bytesPerSecond;
    // A small burst (125 ms worth): enough to ride out a late timer or a slow reader on a loaded machine,
    // too little to overshoot a window of seconds by much.
    this.burst = opts.burstBytes ?? Math.max(64 * 1024, (bytesPerSecond ?? 0) / 8);
  }

  /**
   * Account for `bytes`. Returns null when they may go now, or a promise that resolves when they may.
   * Not returning a promise on the fast path keeps an uncapped host free of per-read allocations.
   */
  take(bytes: number): Promise<void> | null {
    this.meter(bytes);
    if (this.limit === null) return null;
    this.refill();
    if (this.queue.length === 0 && this.balance >= 0) {
      this.balance -= bytes;
      return null;
    }
    return new Promise<void>((resolve) => {
      this.queue.push({ bytes, resolve });
      this.schedule();
    });
  }

  stats(): RateLimiterStats {
    const now = Math.floor(Date.now() / 1000);
    let recent = 0;
    // Whole seconds before the current one, so a second that just began does not halve the figure.
    for (let s = now - METER_WINDOW_S; s < now; s++) recent += this.perSecond.get(s) ?? 0;
    return {
      limitBytesPerSecond: this.limit,
      bytesTotal: this.bytesTotal,
      rateBytesPerSecond: Math.round(recent / METER_WINDOW_S),
      waiting: this.queue.length,
    };
  }

  /** Release every waiter (the agent is stopping: nothing should hang on a timer). */
  close(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    for (const w of this.queue.splice(0)) w.resolve();
  }

  private refill(): void {
    const now = performance.now();
    this.balance += ((now - this.refilledAt) / 1000) * this.limit!;
    // The burst bounds what an idle bucket saves up. While takers wait, what accrued belongs to them: a timer
    // that fires late on a loaded machine must not lose the tokens of the delay, or the rate falls below the cap.
    if (this.queue.length === 0) this.balance = Math.min(this.burst, this.balance);
    this.refilledAt = now;
  }

  private schedule(): void {
    if (this.timer !== null || this.queue.length === 0) return;
    const waitMs = this.balance >= 0 ? 0 : (-this.balance / this.limit!) * 1000;
    this.timer = setTimeout(() => {
      this.timer = null;
      this.refill();
      while (this.queue.length > 0 && this.balance >= 0) {
        const w = this.queue.shift()!;
        this.balance -= w.bytes;
        w.resolve();
      }
      if (this.queue.length === 0) this.balance = Math.min(this.burst, this.balance);
      this.schedule();
    }, Math.max(1, Math.ceil(waitMs)));
  }

  private meter(bytes: number): void {
    this.bytesTotal += bytes;
    const second = Math.floor(Date.now() / 1000);
    this.perSecond.set(second, (this.perSecond.get(second) ?? 0) + bytes);
    if (this.perSecond.size > METER_WINDOW_S + 2) {
      for (const s of this.perSecond.keys()) if (s < second - METER_WINDOW_S) this.perSecond.delete(s);
    }
  }
}
