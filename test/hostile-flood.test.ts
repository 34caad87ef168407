// A fleet member that floods an agent with `published` announcements of manifests it never delivers (with the
// trusted publisher key in them: a public key is no secret) makes the agent fetch only a couple of them.
import '../src/agent/polyfill.js';

import path from 'node:path';
import fs from 'node:fs/promises';
import { randomBytes } from 'node:crypto';

import test from 'ava';
import { multiaddr } from '@multiformats/multiaddr';

import { ANNOUNCE_TOPIC } from '../src/agent/swarm/swarm.js';
import { fleetKeyFromFile } from '../src/agent/swarm/p2p-node.js';
import { CATALOG_PROTOCOL } from '../src/protocol/catalog.js';
import { FrameReader } from '../src/protocol/frames.js';
import { startEvilPeer } from './helpers/evil.js';
import { startFleet, tmpDir, waitFor } from './helpers/agent.js';

test('a flood of announced but undeliverable manifests: at most two manifest fetches at once, a bounded number in all, and the agent keeps answering', async (t) => {
  const root = await tmpDir(t);
  const [agent] = await startFleet(t, root, 1);
  const status = await agent.json(['status']);
  const fleetKey = await fleetKeyFromFile(path.join(agent.dir, 'etc', 'fleet.key'));
  const publisher = (await fs.readFile(path.join(agent.dir, 'etc', 'publisher.pub'), 'utf8')).trim();
  const evil = await startEvilPeer(root, fleetKey);
  t.teardown(() => evil.stop());

  // The evil peer's catalog: counts manifest requests and never answers them (each one stalls until the
  // agent's own RPC timeout); other catalog requests are reset.
  let active = 0;
  let peak = 0;
  let total = 0;
  await evil.node.handle(CATALOG_PROTOCOL, (stream) => {
    void (async () => {
      const request = await new FrameReader(stream, { maxHeaderBytes: 4096, maxPayloadBytes: 0 }).next().catch(() => undefined);
      if ((request?.header as { t?: string } | undefined)?.t !== 'get') {
        stream.abort(new Error('this peer answers nothing but manifest requests, and those never'));
        return;
      }
      total++;
      active++;
      peak = Math.max(peak, active);
      stream.addEventListener('close', () => active--, { once: true });
    })();
  }, { maxInboundStreams: 1024 });
  evil.node.services.pubsub.subscribe(ANNOUNCE_TOPIC);
  await evil.node.dial(multiaddr(status.addresses[0]));
  await waitFor('the agent subscribed', async () => evil.node.services.pubsub.getSubscribers(ANNOUNCE_TOPIC).length > 0, 60_000, 100);

  const FLOOD = 400;
  for (let i = 0; i < FLOOD; i++) {
    const id = `sha256:${randomBytes(32).toString('hex')}`;
    await evil.node.services.pubsub.publish(ANNOUNCE_TOPIC, Buffer.from(JSON.stringify({ t: 'published', id, name: 'flood', version: `1.0.${i}`, publisher })));
  }
  // Everything was delivered and queued or dropped: the agent counts what it dropped.
  const s = await waitFor('the agent to drop the excess', async () => {
    const st = await agent.json(['status']);
    return st.swarm.gossip.dropped >= FLOOD / 2 ? st : null;
  }, 120_000, 500);
  t.true(total >= 1, 'the agent did try to fetch announced manifests');
  t.true(peak <= 2, `manifest fetches at once: ${peak}`);
  // One peer gets two fetches queued or running at a time; what it announces meanwhile is dropped.
  t.true(total <= 8, `manifest fetches in all: ${total}`);
  t.true(s.swarm.gossip.dropped >= FLOOD / 2, `dropped ${s.swarm.gossip.dropped}`);
  t.deepEqual(await agent.json(['list']), []);
});
