// A libp2p node with stock libp2p-noise and js-yamux (none of the agent's changes to them), in the agent's fleet
// and with its muxer tuning (js-yamux assumes the remote's initial window equals its own setting): the baseline
// of bench-messages and the peer of the interop tests (test/p2p-helpers.ts).
import { noise } from '@chainsafe/libp2p-noise';
import { yamux } from '@chainsafe/libp2p-yamux';
import { tcp } from '@libp2p/tcp';
import { createLibp2p, type Libp2p } from 'libp2p';

import { fleetPrologue } from '../src/agent/swarm/fleet-key.js';
import { DEFAULT_MUXER_TUNING as tuning } from '../src/agent/swarm/p2p-node.js';

export function createStockLibp2pNode(fleetKey: Buffer): Promise<Libp2p> {
  return createLibp2p({
    addresses: { listen: ['/ip4/127.0.0.1/tcp/0'] },
    transports: [tcp()],
    connectionEncrypters: [noise({ prologueBytes: fleetPrologue(fleetKey) })],
    streamMuxers: [yamux({
      maxMessageSize: tuning.maxMessageSize,
      streamOptions: {
        initialStreamWindowSize: tuning.initialStreamWindowSize, maxStreamWindowSize: tuning.maxStreamWindowSize,
        maxReadBufferLength: tuning.maxStreamWindowSize + tuning.maxMessageSize,
      },
    })],
    connectionMonitor: { enabled: false },
  });
}
