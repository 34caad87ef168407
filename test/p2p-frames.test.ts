import { randomBytes } from 'node:crypto';

import test from 'ava';

import { encodeFrameHead, FrameParser, FrameProtocolError, FrameReader, FrameWriter, type FrameStream } from '../src/protocol/frames.js';
import {
  decodeHaveBits,
  encodeHaveBits,
  MessageError,
  parseChunkRequest,
  parseChunkResponse,
  parseHaveMessage,
} from '../src/protocol/messages.js';

const limits = { maxHeaderBytes: 1024, maxPayloadBytes: 1 << 20 };
const ID = `sha256:${'ab'.repeat(32)}`;

function encode(header: object, payload?: Buffer): Buffer {
  return Buffer.concat([encodeFrameHead(header, payload?.length ?? 0), payload ?? Buffer.alloc(0)]);
}

test('the parser yields the same frames whatever the byte boundaries', (t) => {
  const payload = randomBytes(5000);
  const wire = Buffer.concat([encode({ t: 'a' }), encode({ t: 'b', n: 1 }, payload), encode({ t: 'c' }, Buffer.from('x'))]);
  for (const step of [1, 3, 7, 8, 9, 100, 4096, wire.length]) {
    const parser = new FrameParser(limits);
    const frames = [];
    for (let at = 0; at < wire.length; at += step) frames.push(...parser.push(wire.subarray(at, at + step), 0));
    t.deepEqual(frames.map((f) => f.header), [{ t: 'a' }, { t: 'b', n: 1 }, { t: 'c' }], `step ${step}`);
    t.deepEqual(frames[1]!.payload, payload);
    t.is(frames[0]!.payload.length, 0);
    t.is(frames[2]!.payload.toString(), 'x');
    t.false(parser.midFrame);
  }
});

test('the parser refuses oversized lengths from the prefix alone, and non-object JSON', (t) => {
  const hugeHeader = Buffer.alloc(8);
  hugeHeader.writeUInt32BE(0xffffffff, 0);
  t.throws(() => new FrameParser(limits).push(hugeHeader, 0), { instanceOf: FrameProtocolError, message: /header of 4294967295 bytes/ });

  const hugePayload = encodeFrameHead({ t: 'x' }, (1 << 20) + 1);
  t.throws(() => new FrameParser(limits).push(hugePayload, 0), { instanceOf: FrameProtocolError, message: /payload of 1048577 bytes exceeds/ });

  const emptyHeader = Buffer.alloc(8);
  t.throws(() => new FrameParser(limits).push(emptyHeader, 0), { instanceOf: FrameProtocolError });

  const notJson = Buffer.concat([Buffer.from([0, 0, 0, 3, 0, 0, 0, 0]), Buffer.from('{{{')]);
  t.throws(() => new FrameParser(limits).push(notJson, 0), { instanceOf: FrameProtocolError, message: /not valid JSON/ });

  const array = Buffer.concat([Buffer.from([0, 0, 0, 2, 0, 0, 0, 0]), Buffer.from('[]')]);
  t.throws(() => new FrameParser(limits).push(array, 0), { instanceOf: FrameProtocolError, message: /not a JSON object/ });
});

/** An in-memory stream: what is sent is recorded, what is pushed is read. Enough to drive reader and writer. */
class MemoryStream implements FrameStream {
  status: FrameStream['status'] = 'open';
  sent: Buffer[] = [];
  pauses = 0;
  aborted: Error | undefined;
  private readonly incoming: Buffer[];
  constructor(incoming: Buffer[]) {
    this.incoming = incoming;
  }
  send(data: Uint8Array): boolean {
    this.sent.push(Buffer.from(data));
    return true;
  }
  async onDrain(): Promise<void> {}
  pause(): void {
    this.pauses++;
  }
  resume(): void {}
  abort(err: Error): void {
    this.aborted = err;
    this.status = 'aborted';
  }
  async *[Symbol.asyncIterator](): AsyncGenerator<Uint8Array> {
    for (const buf of this.incoming) {
      yield buf;
      await new Promise((resolve) => setImmediate(resolve));
    }
  }
}

test('the reader pauses the stream when a slow consumer lets frames pile up', async (t) => {
  const frames = Array.from({ length: 20 }, (_, i) => encode({ i }, Buffer.alloc(1000)));
  const stream = new MemoryStream(frames);
  const reader = new FrameReader(stream, { ...limits, highWaterBytes: 4000 });
  // Nobody reads yet: the pump must pause the stream by itself (polled, as a loaded machine is slow).
  for (let i = 0; i < 250 && stream.pauses === 0; i++) await new Promise((resolve) => setTimeout(resolve, 20));
  t.true(stream.pauses > 0);
  const got = [];
  for await (const frame of reader) got.push((frame.header as { i: number }).i);
  t.deepEqual(got, [...Array(20).keys()]);
});

test('the reader resets the stream on garbage and on a stream that ends mid-frame', async (t) => {
  const garbage = new MemoryStream([encode({ ok: 1 }), Buffer.from('GET / HTTP/1.1\r\n\r\n')]);
  const reader = new FrameReader(garbage, limits);
  t.deepEqual((await reader.next())!.header, { ok: 1 });
  await t.throwsAsync(reader.next(), { instanceOf: FrameProtocolError });
  t.true(garbage.aborted instanceof FrameProtocolError);

  const truncated = new MemoryStream([encode({ t: 'x' }, Buffer.alloc(100)).subarray(0, 50)]);
  await t.throwsAsync(new FrameReader(truncated, limits).next(), { message: /ended in the middle of a frame/ });
});

test('concurrent writes never interleave frames', async (t) => {
  const stream = new MemoryStream([]);
  const writer = new FrameWriter(stream);
  const payloads = Array.from({ length: 10 }, () => randomBytes(3000));
  await Promise.all(payloads.map((p, i) => writer.write({ i }, p)));
  const parser = new FrameParser(limits);
  const frames = parser.push(Buffer.concat(stream.sent), 0);
  t.deepEqual(frames.map((f) => f.payload), payloads);
});

test('chunk messages are validated strictly', (t) => {
  t.deepEqual(parseChunkRequest({ t: 'get', rid: 7, id: ID }), { t: 'get', rid: 7, id: ID });
  t.throws(() => parseChunkRequest({ t: 'get', rid: 7, id: 'sha256:XYZ' }), { instanceOf: MessageError, message: /field 'id'/ });
  t.throws(() => parseChunkRequest({ t: 'get', rid: -1, id: ID }), { instanceOf: MessageError, message: /field 'rid'/ });
  t.throws(() => parseChunkRequest({ t: 'get', rid: 1.5, id: ID }), { instanceOf: MessageError });
  t.deepEqual(parseChunkRequest({ t: 'get', rid: 7, id: ID, zstd: true }), { t: 'get', rid: 7, id: ID, zstd: true });
  t.throws(() => parseChunkRequest({ t: 'get', rid: 7, id: ID, zstd: 1 }), { instanceOf: MessageError, message: /field 'zstd' must be true/ });
  t.throws(() => parseChunkRequest({ t: 'get', rid: 1, id: ID, extra: true }), { instanceOf: MessageError, message: /unexpected field 'extra'/ });
  t.throws(() => parseChunkRequest({ t: 'put', rid: 1, id: ID }), { instanceOf: MessageError, message: /unknown kind "put"/ });
  t.throws(() => parseChunkRequest([]), { instanceOf: MessageError });

  const hit = { t: 'chunk', rid: 1, id: ID, codec: 'deflate', size: 10, len: 5 };
  t.deepEqual(parseChunkResponse(hit), hit);
  t.deepEqual(parseChunkResponse({ ...hit, codec: 'zstd' }), { ...hit, codec: 'zstd' });
  t.throws(() => parseChunkResponse({ ...hit, codec: 'lz4' }), { instanceOf: MessageError, message: /field 'codec' must be one of raw, deflate, brotli, zstd/ });
  t.throws(() => parseChunkResponse({ ...hit, size: 5 * 1024 * 1024 }), { instanceOf: MessageError, message: /field 'size'/ });
  t.deepEqual(parseChunkResponse({ t: 'miss', rid: 2, id: ID }), { t: 'miss', rid: 2, id: ID });
  t.deepEqual(parseChunkResponse({ t: 'busy', rid: 3 }), { t: 'busy', rid: 3 });
  t.throws(() => parseChunkResponse({ t: 'busy', rid: 3, id: ID }), { instanceOf: MessageError });
});

test('have messages round-trip their bitfield and are validated', (t) => {
  const bits = encodeHaveBits(20, [0, 7, 8, 19]);
  const msg = parseHaveMessage({ t: 'have', manifest: ID, bits });
  t.is(msg.t, 'have');
  const has = decodeHaveBits(bits);
  t.deepEqual([...Array(21).keys()].filter(has), [0, 7, 8, 19]);
  t.deepEqual(parseHaveMessage({ t: 'have1', manifest: ID, index: 3 }), { t: 'have1', manifest: ID, index: 3 });
  t.throws(() => parseHaveMessage({ t: 'have', manifest: ID, bits: 'not base64!' }), { instanceOf: MessageError, message: /field 'bits'/ });
  t.throws(() => parseHaveMessage({ t: 'have1', manifest: 'x', index: 3 }), { instanceOf: MessageError, message: /field 'manifest'/ });
  t.throws(() => parseHaveMessage({ t: 'have1', manifest: ID, index: 1 << 20 }), { instanceOf: MessageError, message: /field 'index'/ });
  t.throws(() => encodeHaveBits(4, [4]), { instanceOf: RangeError });
});
