// Small bounded containers for what peers can make the swarm remember or do.

/** A set that forgets its oldest member once it holds `max`. */
export class BoundedSet<T> {
  private readonly items = new Set<T>();
  constructor(private readonly max: number) {}

  has(x: T): boolean {
    return this.items.has(x);
  }

  add(x: T): void {
    this.items.delete(x);
    this.items.add(x);
    while (this.items.size > this.max) this.items.delete(this.items.values().next().value!);
  }

  get size(): number {
    return this.items.size;
  }
}

/**
 * Runs keyed jobs with at most `concurrency` at once and at most `maxPending` waiting. A job whose key is
 * already running or waiting is not queued twice; a job beyond the queue is dropped and counted (whatever it
 * would have done, anti-entropy does later). Jobs never reject to the caller.
 */
export class WorkQueue {
  private running = 0;
  private readonly waiting: { key: string; job: () => Promise<void> }[] = [];
  private readonly keys = new Set<string>();
  dropped = 0;

  constructor(
    private readonly concurrency: number,
    private readonly maxPending: number,
    private readonly onError: (err: unknown) => void = () => {},
  ) {}

  /** False when the job was dropped (queue full) or is already queued. */
  push(key: string, job: () => Promise<void>): boolean {
    if (this.keys.has(key)) return false;
    if (this.waiting.length >= this.maxPending) {
      this.dropped++;
      return false;
    }
    this.keys.add(key);
    this.waiting.push({ key, job });
    this.pump();
    return true;
  }

  get active(): number {
    return this.running;
  }

  get pending(): number {
    return this.waiting.length;
  }

  private pump(): void {
    while (this.running < this.concurrency && this.waiting.length > 0) {
      const { key, job } = this.waiting.shift()!;
      this.running++;
      void (async () => {
        try {
          await job();
        } catch (err) {
          this.onError(err);
        } finally {
          this.running--;
          this.keys.delete(key);
          this.pump();
        }
      })();
    }
  }
}
