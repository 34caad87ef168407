import '../src/agent/polyfill.js';

import { createHash, randomBytes } from 'node:crypto';
import { Socket } from 'node:net';
import { join } from 'node:path';

import test from 'ava';
import { Uint8ArrayList } from 'uint8arraylist';

import { LengthPrefixedDecoder } from '@libp2p/utils';

import { coalesceNoiseWrites, encryptCoalesced, lengthWithoutThrowing, type MessageDecoder } from '../src/agent/swarm/noise-writes.js';
import { createP2PNode } from '../src/agent/swarm/p2p-node.js';
import { newFleetKey, stockLibp2pNode, tempDir } from './p2p-helpers.js';

/** A stand-in cipher: "ciphertext" is the plaintext with each byte + 1, then a 16-byte tag holding the message number. */
function fakeHandshake() {
  let n = 0;
  return {
    encrypt(plaintext: Uint8Array | Uint8ArrayList): Uint8ArrayList {
      const bytes = plaintext instanceof Uint8Array ? plaintext : plaintext.subarray();
      const body = Buffer.from(bytes.map((b) => (b + 1) & 0xff));
      const tag = Buffer.alloc(16, n++);
      // Two pieces, as libp2p-noise's own cipher returns for list input.
      return new Uint8ArrayList(body, tag);
    },
  };
}

test('one buffer holds every transport message of a frame, each behind its 2-byte length, split at 65519 bytes', (t) => {
  const header = randomBytes(12);
  const data = randomBytes(200_000);
  const stream = { handshake: fakeHandshake(), encrypt: () => new Uint8ArrayList() };
  const out = encryptCoalesced(stream, new Uint8ArrayList(header, data));
  t.is([...out].length, 1, 'a single buffer, so the transport writes it once');

  const plain = Buffer.concat([header, data]);
  const wire = Buffer.from(out.subarray());
  let at = 0;
  let message = 0;
  for (let i = 0; i < plain.length; i += 65519, message++) {
    const piece = plain.subarray(i, Math.min(i + 65519, plain.length));
    const len = wire.readUInt16BE(at);
    t.is(len, piece.length + 16, `message ${message}: length prefix`);
    const body = wire.subarray(at + 2, at + 2 + piece.length);
    t.true(body.every((b, k) => b === ((piece[k]! + 1) & 0xff)), `message ${message}: ciphertext`);
    t.true(wire.subarray(at + 2 + piece.length, at + 2 + len).every((b) => b === message), `message ${message}: tag`);
    at += 2 + len;
  }
  t.is(message, 4);
  t.is(at, wire.length, 'nothing after the last message');
});

test('a connection object that is not libp2p-noise\'s stream is left alone and reported', (t) => {
  t.false(coalesceNoiseWrites({}));
  t.false(coalesceNoiseWrites({ encrypt() {} }));
  const encrypt = (_chunk: Uint8Array | Uint8ArrayList): Uint8ArrayList => new Uint8ArrayList();
  const withoutDecoder = { handshake: fakeHandshake(), encrypt };
  t.false(coalesceNoiseWrites(withoutDecoder), 'no length decoder to replace');
  t.is(withoutDecoder.encrypt(Buffer.alloc(10)).byteLength, 2 + 10 + 16, 'its writes are coalesced all the same');
  const decoder = new LengthPrefixedDecoder({ lengthDecoder: () => 0, encodingLength: () => 2 }) as unknown as MessageDecoder;
  const stream = { handshake: fakeHandshake(), encrypt, decoder };
  t.true(coalesceNoiseWrites(stream));
  t.is(stream.encrypt(Buffer.alloc(10)).byteLength, 2 + 10 + 16);
  t.is(decoder.lengthDecoder(Buffer.from([1, 2])), 0x0102, 'the decoder reads Noise lengths now');
});

test('Noise messages split anywhere come out whole, one byte per read included, without the length decoder throwing', (t) => {
  // libp2p-noise's decoder settings, with this module's length function in place of its throwing one.
  const decoder = new LengthPrefixedDecoder({ maxBufferSize: 16 * 1024 * 1024, encodingLength: () => 2 });
  // Its fields are private in the typings; libp2p-noise's stream is patched the same way (noise-writes.ts).
  const inner = decoder as unknown as MessageDecoder & { buffer: Uint8ArrayList };
  const length = lengthWithoutThrowing(inner);
  let calls = 0;
  let threw = 0;
  inner.lengthDecoder = (data) => {
    calls++;
    try { return length(data); } catch (err) { threw++; throw err; }
  };
  const messages = [randomBytes(1), randomBytes(300), randomBytes(65535), randomBytes(2), randomBytes(70_000 % 65536)];
  const wire = Buffer.concat(messages.flatMap((m) => [Buffer.from([m.length >> 8, m.length & 0xff]), m]));
  for (const step of [1, 2, 3, 7, 4096, wire.length]) {
    const out: Buffer[] = [];
    for (let i = 0; i < wire.length; i += step) {
      for (const m of decoder.decode(wire.subarray(i, i + step))) out.push(Buffer.from(m.subarray()));
    }
    t.deepEqual(out.map((m) => m.toString('hex')), messages.map((m) => m.toString('hex')), `reads of ${step} bytes`);
    t.is(inner.buffer.byteLength, 0, `reads of ${step} bytes: nothing left over`);
  }
  t.true(calls > wire.length, 'the length was asked for on every one-byte read');
  t.is(threw, 0, 'and it never threw');
  t.is(length(new Uint8ArrayList(Buffer.from([0xff]), Buffer.from([0xfe]))), 0xfffe, 'a length split across two pieces');
});

test('an agent talks to a stock libp2p-noise node both ways, and sends a frame of many Noise messages in few socket writes', async (t) => {
  const dir = await tempDir(t, 'noise-writes');
  const fleetKey = newFleetKey();
  let fellBack = false;
  const ours = await createP2PNode({
    peerKeyPath: join(dir, 'ours.key'), fleetKey, listen: ['/ip4/127.0.0.1/tcp/0'], bootstrap: [], mdns: false,
    onNoiseFallback: () => { fellBack = true; },
  });
  t.teardown(() => ours.stop());
  const stock = await stockLibp2pNode(t, fleetKey);
  const stockPort = Number(stock.getMultiaddrs()[0]!.toString().split('/')[4]);

  // Count socket writes per side: the stock node's socket is the one on its listening port.
  const writes = { ours: 0, stock: 0 };
  const write = Socket.prototype.write;
  Socket.prototype.write = function (this: Socket, ...args: unknown[]) {
    if (this.localPort === stockPort) writes.stock++;
    else if (this.remotePort === stockPort) writes.ours++;
    return (write as (...a: unknown[]) => boolean).apply(this, args);
  } as typeof write;
  t.teardown(() => { Socket.prototype.write = write; });

  const SIZE = 4 * 1024 * 1024;
  const payload = randomBytes(SIZE);
  const digest = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');
  const bytes = (piece: Uint8Array | { subarray(): Uint8Array }) => (piece instanceof Uint8Array ? piece : piece.subarray());
  // The stock node reads the whole payload, then answers with it reversed and closes its side.
  await stock.handle('/test/bulk/1', async (stream) => {
    const got: Uint8Array[] = [];
    let n = 0;
    for await (const piece of stream) {
      got.push(bytes(piece));
      n += piece.byteLength;
      if (n === SIZE) {
        const back = Buffer.concat(got).reverse();
        if (!stream.send(back)) await stream.onDrain();
        await stream.close();
      }
    }
  });

  const stream = await ours.dialProtocol(stock.getMultiaddrs()[0]!, '/test/bulk/1');
  const before = { ...writes };
  if (!stream.send(payload)) await stream.onDrain();
  const answer: Uint8Array[] = [];
  for await (const piece of stream) answer.push(bytes(piece));
  const sent = { ours: writes.ours - before.ours, stock: writes.stock - before.stock };

  t.log(`socket writes for 4 MiB: ours ${sent.ours}, stock ${sent.stock}`);
  t.is(digest(Buffer.concat(answer)), digest(Buffer.from(payload).reverse()), 'the stock node read our messages, we read its');
  t.false(fellBack, 'the coalesced writes were installed');
  // 4 MiB is 65 Noise messages each way. The stock node writes every message as at least two pieces (length and
  // ciphertext); ours writes one buffer per muxer frame (frames are up to the 1 MiB+ window, plus window updates).
  t.true(sent.stock >= 2 * 64, `stock node: ${sent.stock} writes`);
  t.true(sent.ours < 40, `our node: ${sent.ours} writes`);
});
