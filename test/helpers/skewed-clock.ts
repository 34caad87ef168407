// TEST ONLY preload (node --import): this process's clock runs SKEWED_CLOCK_OFFSET_MS ahead (or behind),
// as on a host whose clock is wrong. The agent itself has no clock hook.
const offset = Number(process.env.SKEWED_CLOCK_OFFSET_MS ?? 0);
const RealDate = Date;

class SkewedDate extends RealDate {
  constructor(...args: unknown[]) {
    if (args.length === 0) super(RealDate.now() + offset);
    else super(...(args as [string | number | Date]));
  }

  static override now(): number {
    return RealDate.now() + offset;
  }
}

globalThis.Date = SkewedDate as DateConstructor;
