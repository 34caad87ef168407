import '../src/agent/polyfill.js';

import { createHash, randomBytes } from 'node:crypto';
import { Socket } from 'node:net';
import { join } from 'node:path';

import { StreamState } from '@chainsafe/libp2p-yamux/stream';
import test from 'ava';

import { createP2PNode } from '../src/agent/swarm/p2p-node.js';
import { lazyWindowUpdates, lazyWindowUpdatesFor } from '../src/agent/swarm/yamux-window.js';
import { newFleetKey, stockLibp2pNode, tempDir } from './p2p-helpers.js';

function fakeStream(state: StreamState, capacity: number) {
  const s = { state, recvWindow: 1000, recvWindowCapacity: capacity, updates: 0, sendWindowUpdate() { s.updates++; } };
  return s;
}

test('an established stream sends its window update only once half the window is used; opening and paused streams as before', (t) => {
  const cases: [StreamState, number, number][] = [
    [StreamState.Established, 999, 0],
    [StreamState.Established, 501, 0],
    [StreamState.Established, 500, 1],
    [StreamState.Established, 0, 1],
    [StreamState.SYNSent, 900, 0],
    [StreamState.SYNSent, 100, 1],
    // SYN and ACK flags ride on these updates; a paused stream's call only restarts js-yamux's epoch.
    [StreamState.Init, 1000, 1],
    [StreamState.SYNReceived, 1000, 1],
    [StreamState.Paused, 900, 1],
  ];
  for (const [state, capacity, expected] of cases) {
    const s = fakeStream(state, capacity);
    lazyWindowUpdates(s);
    s.sendWindowUpdate();
    t.is(s.updates, expected, `${StreamState[state]} with ${capacity} of 1000 left`);
  }
  t.false(lazyWindowUpdatesFor({}, () => {}), 'not a js-yamux muxer');
});

test('a stock libp2p node streams many small frames and 8 MiB to an agent that reads with pauses; the agent answers with few window updates', async (t) => {
  const dir = await tempDir(t, 'yamux-window');
  const fleetKey = newFleetKey();
  let fellBack = false;
  const ours = await createP2PNode({
    peerKeyPath: join(dir, 'ours.key'), fleetKey, listen: ['/ip4/127.0.0.1/tcp/0'], bootstrap: [], mdns: false,
    onYamuxFallback: () => { fellBack = true; },
  });
  t.teardown(() => ours.stop());
  const stock = await stockLibp2pNode(t, fleetKey);
  const oursPort = Number(ours.getMultiaddrs()[0]!.toString().split('/')[4]);

  // Our socket is the one on our listening port: the stock node dials us.
  let oursWrites = 0;
  const write = Socket.prototype.write;
  Socket.prototype.write = function (this: Socket, ...args: unknown[]) {
    if (this.localPort === oursPort) oursWrites++;
    return (write as (...a: unknown[]) => boolean).apply(this, args);
  } as typeof write;
  t.teardown(() => { Socket.prototype.write = write; });

  const SMALL = 2000;
  const BIG = 8 * 1024 * 1024;
  const small = Array.from({ length: SMALL }, () => randomBytes(200));
  const big = randomBytes(BIG);
  const digest = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');
  const total = SMALL * 200 + BIG;
  // The reader stops at the expected length: libp2p 3 drops what a paused stream buffered if the remote closes
  // its side meanwhile (seen with stock js-yamux too), so the sender keeps its side open until then.
  const received = new Promise<Buffer>((resolve, reject) => {
    void ours.handle('/test/window/1', async (stream) => {
      try {
        const got: Buffer[] = [];
        let n = 0;
        let nextPause = 1024 * 1024;
        for await (const piece of stream) {
          got.push(Buffer.from(piece instanceof Uint8Array ? piece : piece.subarray()));
          n += piece.byteLength;
          if (n >= total) break;
          // A slow reader: every MiB it stops reading for a while, so the sender's window runs out.
          if (n >= nextPause) {
            nextPause += 1024 * 1024;
            stream.pause();
            await new Promise((r) => setTimeout(r, 30));
            stream.resume();
          }
        }
        resolve(Buffer.concat(got));
        await stream.close();
      } catch (err) {
        reject(err as Error);
      }
    });
  });

  const stream = await stock.dialProtocol(ours.getMultiaddrs()[0]!, '/test/window/1');
  const before = oursWrites;
  // Each small message in its own tick, so each is a yamux data frame of its own.
  for (const m of small) {
    if (!stream.send(m)) await stream.onDrain();
    await new Promise((r) => setImmediate(r));
  }
  if (!stream.send(big)) await stream.onDrain();
  const all = await received;
  const updates = oursWrites - before;
  await stream.close();

  t.log(`agent socket writes while receiving ${SMALL} small frames and 8 MiB: ${updates}`);
  t.is(all.length, total);
  t.is(digest(all), digest(Buffer.concat([...small, big])), 'every byte arrived, in order');
  t.false(fellBack, 'the lazy window updates were installed');
  // js-yamux's own streams answer every data frame (over 2000 here); half-window updates need about 8.4 MiB / 0.5 MiB.
  t.true(updates < 60, `${updates} writes`);
});
