// A stranger opening idle TCP connections (no handshake) must not keep fleet members from connecting.
import '../src/agent/polyfill.js';

import net from 'node:net';

import test from 'ava';

import { PENDING_HANDSHAKES_PER_ADDRESS } from '../src/agent/swarm/pending-gate.js';
import { waitFor } from './helpers/agent.js';
import { newFleetKey, startNode, tempDir } from './p2p-helpers.js';

/** An idle TCP connection from `localAddress` to host:port; resolves once connected (or refused). */
function idleConnect(host: string, port: number, localAddress: string): Promise<net.Socket> {
  return new Promise((resolve) => {
    const socket = net.connect({ host, port, localAddress });
    socket.on('error', () => undefined);
    socket.once('connect', () => resolve(socket));
    socket.once('close', () => resolve(socket));
  });
}

test('idle pre-handshake connections from one address are capped and timed out, and a fleet member still connects', async (t) => {
  const dir = await tempDir(t, 'hostile-conns');
  const fleetKey = newFleetKey();
  const agent = await startNode(t, dir, 'agent', fleetKey);
  const member = await startNode(t, dir, 'member', fleetKey);
  const addr = agent.getMultiaddrs()[0]!;
  const port = Number(addr.toString().match(/\/tcp\/(\d+)/)![1]);

  // The stranger: idle connects from 127.0.0.2, kept coming at 4/s (under libp2p's per-address rate limit of
  // 5/s), so that without a per-address share they would fill libp2p's global pending cap and keep it full.
  const sockets: net.Socket[] = [];
  let flooding = true;
  t.teardown(() => {
    flooding = false;
    sockets.forEach((s) => s.destroy());
  });
  const flood = (async () => {
    while (flooding) {
      sockets.push(await idleConnect('127.0.0.1', port, '127.0.0.2'));
      await new Promise((r) => setTimeout(r, 250));
    }
  })();
  const open = () => sockets.filter((s) => !s.destroyed && s.readyState === 'open').length;
  await waitFor('the stranger to have tried three shares', async () => sockets.length >= 3 * PENDING_HANDSHAKES_PER_ADDRESS, 60_000, 50);
  // Connections beyond the share are closed as they come (allow the close a moment to reach the stranger).
  await waitFor('connections beyond the share closed', async () => open() <= PENDING_HANDSHAKES_PER_ADDRESS, 3_000, 20);

  // A fleet member connects while the stranger keeps its share pending and keeps trying for more.
  const conn = await member.dial(addr, { signal: AbortSignal.timeout(20_000) });
  t.is(conn.remotePeer.toString(), agent.peerId.toString());
  await waitFor('the agent sees the member', async () => agent.getPeers().some((p) => p.equals(member.peerId)), 20_000, 50);
  flooding = false;
  await flood;

  // And every idle connection is closed by the agent once the handshake timeout passes.
  await waitFor('idle connections timed out', async () => open() === 0, 30_000, 100);
  t.is(open(), 0);
});
