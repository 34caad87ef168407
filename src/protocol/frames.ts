/**
 * Framing for long-lived request/response streams.
 *
 * Each frame on the wire:
 *
 *   u32 BE header length | u32 BE payload length | header (UTF-8 JSON object) | payload (raw bytes)
 *
 * Both lengths come first so the reader knows exactly how much to buffer before it parses anything, and can
 * refuse an oversized frame from its 8-byte prefix alone: a peer sending garbage gets a FrameProtocolError and
 * a reset stream, never an unbounded buffer.
 */
import type { MessageStream } from '@libp2p/interface';

export const FRAME_PREFIX_BYTES = 8;

export interface FrameLimits {
  /** Largest JSON header accepted, in bytes. */
  maxHeaderBytes: number;
  /** Largest binary payload accepted, in bytes. */
  maxPayloadBytes: number;
}

export interface Frame {
  /** Parsed JSON header; callers validate its shape (see messages.ts). */
  header: unknown;
  /** Binary payload; empty when the frame declared none. */
  payload: Buffer;
  /** performance.now() when the frame's first byte arrived, so callers can time the transfer itself. */
  firstByteAt: number;
  /** performance.now() when the frame's last byte arrived. */
  completeAt: number;
  /** Bytes the frame took on the wire (prefix, header and payload). */
  wireBytes: number;
}

/** The remote sent bytes that are not a valid frame, or a frame over the limits. */
export class FrameProtocolError extends Error {
  override name = 'FrameProtocolError';
}

/** The subset of a libp2p stream the framing needs; tests can pass any object with this shape. */
export type FrameStream = Pick<
  MessageStream,
  'send' | 'onDrain' | 'pause' | 'resume' | 'abort' | 'status' | typeof Symbol.asyncIterator
>;

/** libp2p can reject with a bare Event rather than an Error; make it something a caller can log. */
export function asError(value: unknown, context: string): Error {
  if (value instanceof Error) return value;
  const detail =
    value !== null && typeof value === 'object' && 'type' in value ? `event '${String(value.type)}'` : String(value);
  return new Error(`${context}: ${detail}`);
}

/** The 8-byte prefix plus the JSON header of one frame. */
export function encodeFrameHead(header: object, payloadLength: number): Buffer {
  const json = Buffer.from(JSON.stringify(header), 'utf8');
  const head = Buffer.allocUnsafe(FRAME_PREFIX_BYTES + json.length);
  head.writeUInt32BE(json.length, 0);
  head.writeUInt32BE(payloadLength, 4);
  json.copy(head, FRAME_PREFIX_BYTES);
  return head;
}

/**
 * Incremental frame parser: feed it byte chunks as they arrive, it returns every frame completed by them.
 * It holds at most one partial frame, whose size the limits bound.
 */
export class FrameParser {
  private prefix = Buffer.alloc(FRAME_PREFIX_BYTES);
  private prefixFilled = 0;
  private headerBuf: Buffer | undefined;
  private headerFilled = 0;
  private payloadBuf: Buffer | undefined;
  private payloadFilled = 0;
  private header: unknown;
  private firstByteAt = 0;

  constructor(private readonly limits: FrameLimits) {}

  /** True while a frame has started but not finished: the stream must not end here. */
  get midFrame(): boolean {
    return this.prefixFilled > 0;
  }

  push(bytes: Uint8Array, now: number): Frame[] {
    const frames: Frame[] = [];
    let offset = 0;
    while (offset < bytes.length) {
      if (this.prefixFilled === 0) this.firstByteAt = now;
      if (this.prefixFilled < FRAME_PREFIX_BYTES) {
        const take = Math.min(FRAME_PREFIX_BYTES - this.prefixFilled, bytes.length - offset);
        this.prefix.set(bytes.subarray(offset, offset + take), this.prefixFilled);
        this.prefixFilled += take;
        offset += take;
        if (this.prefixFilled < FRAME_PREFIX_BYTES) break;
        this.startFrame();
        continue;
      }
      if (this.headerBuf !== undefined && this.headerFilled < this.headerBuf.length) {
        const take = Math.min(this.headerBuf.length - this.headerFilled, bytes.length - offset);
        this.headerBuf.set(bytes.subarray(offset, offset + take), this.headerFilled);
        this.headerFilled += take;
        offset += take;
        if (this.headerFilled < this.headerBuf.length) break;
        this.header = parseHeader(this.headerBuf);
      } else if (this.payloadBuf !== undefined && this.payloadFilled < this.payloadBuf.length) {
        const take = Math.min(this.payloadBuf.length - this.payloadFilled, bytes.length - offset);
        this.payloadBuf.set(bytes.subarray(offset, offset + take), this.payloadFilled);
        this.payloadFilled += take;
        offset += take;
      }
      if (this.payloadBuf !== undefined && this.payloadFilled === this.payloadBuf.length) {
        frames.push({
          header: this.header,
          payload: this.payloadBuf,
          firstByteAt: this.firstByteAt,
          completeAt: now,
          wireBytes: FRAME_PREFIX_BYTES + this.headerFilled + this.payloadFilled,
        });
        this.reset();
      }
    }
    return frames;
  }

  private startFrame(): void {
    const headerLength = this.prefix.readUInt32BE(0);
    const payloadLength = this.prefix.readUInt32BE(4);
    if (headerLength === 0 || headerLength > this.limits.maxHeaderBytes) {
      throw new FrameProtocolError(
        `frame header of ${headerLength} bytes is outside the allowed 1..${this.limits.maxHeaderBytes}`,
      );
    }
    if (payloadLength > this.limits.maxPayloadBytes) {
      throw new FrameProtocolError(
        `frame payload of ${payloadLength} bytes exceeds the limit of ${this.limits.maxPayloadBytes}`,
      );
    }
    this.headerBuf = Buffer.allocUnsafe(headerLength);
    this.headerFilled = 0;
    // Allocated only now that the length passed the limit check: one copy per payload byte, no regrowing.
    this.payloadBuf = payloadLength === 0 ? Buffer.alloc(0) : Buffer.allocUnsafe(payloadLength);
    this.payloadFilled = 0;
  }

  private reset(): void {
    this.prefixFilled = 0;
    this.headerBuf = undefined;
    this.payloadBuf = undefined;
    this.header = undefined;
  }
}

function parseHeader(bytes: Buffer): unknown {
  let value: unknown;
  try {
    value = JSON.parse(bytes.toString('utf8'));
  } catch {
    throw new FrameProtocolError('frame header is not valid JSON');
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw new FrameProtocolError('frame header is not a JSON object');
  }
  return value;
}

/** Granularity of a read throttle: small enough that a cap is met closely, large enough to cost nothing. */
const THROTTLE_SLICE_BYTES = 64 * 1024;

export interface FrameReaderOptions extends FrameLimits {
  /**
   * Parsed frames (by wire bytes) held for a slow consumer before the stream is paused. While paused the
   * muxer stops granting window, so the remote stops sending after at most one window.
   */
  highWaterBytes?: number;
  /**
   * Called with the byte count of every read from the stream. When it returns a promise, reading pauses until
   * it resolves: the muxer then stops granting window and TCP backpressure slows the sender (a download cap).
   */
  throttle?: (bytes: number) => Promise<void> | null;
}

/**
 * Reads frames from a stream with read backpressure. Call `next()` (or iterate) to take frames; it resolves
 * `undefined` when the remote closes cleanly between frames and rejects when the stream fails or the remote
 * breaks the framing (in which case the stream has already been reset).
 */
export class FrameReader implements AsyncIterable<Frame> {
  private readonly parser: FrameParser;
  private readonly queue: Frame[] = [];
  private queuedBytes = 0;
  private paused = false;
  /** Why reading is paused: the consumer is behind, or a rate cap is waiting for tokens. */
  private queueFull = false;
  private rateHold = false;
  private readonly throttle: FrameReaderOptions['throttle'];
  private ended = false;
  private failure: Error | undefined;
  private wake: (() => void) | undefined;
  private readonly highWater: number;

  constructor(
    private readonly stream: FrameStream,
    options: FrameReaderOptions,
  ) {
    this.parser = new FrameParser(options);
    this.highWater = options.highWaterBytes ?? 2 * (FRAME_PREFIX_BYTES + options.maxHeaderBytes + options.maxPayloadBytes);
    this.throttle = options.throttle;
    void this.pump();
  }

  async next(): Promise<Frame | undefined> {
    for (;;) {
      const frame = this.queue.shift();
      if (frame !== undefined) {
        this.queuedBytes -= frame.wireBytes;
        if (this.queueFull && this.queuedBytes <= this.highWater / 2) { this.queueFull = false; this.applyPause(); }
        return frame;
      }
      if (this.failure !== undefined) throw this.failure;
      if (this.ended) return undefined;
      await new Promise<void>((resolve) => (this.wake = resolve));
    }
  }

  async *[Symbol.asyncIterator](): AsyncIterator<Frame> {
    for (;;) {
      const frame = await this.next();
      if (frame === undefined) return;
      yield frame;
    }
  }

  private async pump(): Promise<void> {
    try {
      for await (const chunk of this.stream) {
        const parts: Iterable<Uint8Array> = chunk instanceof Uint8Array ? [chunk] : chunk;
        for (const part of parts) {
          // With a throttle, bytes are paid for before they are parsed, in slices: a read can be as large as
          // the muxer window (MiBs), and handing it over unpaid would run ahead of the cap by that much.
          const slice = this.throttle ? THROTTLE_SLICE_BYTES : part.byteLength;
          for (let off = 0; off < part.byteLength; off += slice) {
            const piece = slice === part.byteLength ? part : part.subarray(off, off + slice);
            const wait = this.throttle?.(piece.byteLength);
            if (wait) {
              this.rateHold = true;
              this.applyPause();
              await wait;
            }
            for (const frame of this.parser.push(piece, performance.now())) {
              this.queue.push(frame);
              this.queuedBytes += frame.wireBytes;
            }
            if (!this.queueFull && this.queuedBytes > this.highWater) { this.queueFull = true; this.applyPause(); }
            this.notify();
          }
        }
        if (this.rateHold) { this.rateHold = false; this.applyPause(); }
      }
      if (this.parser.midFrame) throw new FrameProtocolError('stream ended in the middle of a frame');
      this.ended = true;
    } catch (err) {
      this.failure = asError(err, 'stream failed');
      if (err instanceof FrameProtocolError) this.stream.abort(err);
    }
    this.notify();
  }

  private applyPause(): void {
    const paused = this.queueFull || this.rateHold;
    if (paused !== this.paused) this.setPaused(paused);
  }

  private setPaused(paused: boolean): void {
    // pause()/resume() throw once the stream is closing; there is nothing left to throttle then.
    if (this.stream.status !== 'open') return;
    try {
      if (paused) this.stream.pause();
      else this.stream.resume();
      this.paused = paused;
    } catch {
      this.paused = false;
    }
  }

  private notify(): void {
    const wake = this.wake;
    this.wake = undefined;
    wake?.();
  }
}

/**
 * Writes frames one after another. Concurrent `write` calls are queued so frames never interleave, and each
 * write waits for the stream to drain, so at most one frame beyond the muxer window sits in memory.
 */
export class FrameWriter {
  private tail: Promise<void> = Promise.resolve();

  constructor(private readonly stream: FrameStream) {}

  write(header: object, payload?: Uint8Array): Promise<void> {
    const run = this.tail.then(() => this.send(header, payload));
    this.tail = run.catch(() => undefined);
    return run;
  }

  private async send(header: object, payload: Uint8Array | undefined): Promise<void> {
    const length = payload?.length ?? 0;
    // Both parts are appended synchronously, so they stay adjacent whatever the muxer does with them.
    let writable = this.stream.send(encodeFrameHead(header, length));
    if (payload !== undefined && length > 0) writable = this.stream.send(payload);
    if (!writable) {
      try {
        await this.stream.onDrain();
      } catch (err) {
        throw asError(err, 'stream closed while waiting to send');
      }
    }
  }
}
