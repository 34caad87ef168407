// Nearness without labels: the implicit zone an agent infers from addresses and RTTs, and what the zone
// rule of the scheduler then does with it (a flat fleet: nothing changes; two racks: far chunks wait).
import test from 'ava';
import { addressPrefix, ownCluster, parseCluster, localZone, peerZone, RttFloor } from '../src/agent/swarm/nearness.js';
import { DownloadScheduler } from '../src/agent/swarm/scheduler.js';
import type { ChunkRef } from '../src/store/types.js';
import { seeded } from './helpers/seeded.js';

test('IPv4 addresses group by /24; loopback, unspecified, link-local and multicast say nothing', (t) => {
  t.is(addressPrefix('198.18.1.7'), '198.18.1.0/24');
  t.is(addressPrefix('10.2.3.4'), '10.2.3.0/24');
  for (const ip of ['127.0.0.1', '127.8.9.10', '0.0.0.0', '169.254.3.4', '224.0.0.251', '255.255.255.255', '300.1.1.1', 'example.org', '']) {
    t.is(addressPrefix(ip), null, ip);
  }
});

test('IPv6 addresses group by /64; ::1, ::, fe80:: and ff00:: say nothing; v4-mapped counts as v4', (t) => {
  t.is(addressPrefix('2001:db8:1:2::5'), '2001:db8:1:2::/64');
  t.is(addressPrefix('2001:DB8:1:2:aa:bb:cc:dd'), '2001:db8:1:2::/64');
  t.is(addressPrefix('::ffff:198.18.1.3'), '198.18.1.0/24');
  t.is(addressPrefix('::ffff:127.0.0.1'), null);
  for (const ip of ['::1', '::', 'fe80::1%eth0', 'ff02::fb', '1:2:3', '1::2::3', '2001:db8::g']) t.is(addressPrefix(ip), null, ip);
});

test('own cluster: from the multiaddrs the agent listens on; loopback-only gives none', (t) => {
  t.is(ownCluster(['/ip4/127.0.0.1/tcp/7946/p2p/12D3KooWx']), null);
  t.is(ownCluster([]), null);
  t.is(ownCluster(['/ip4/127.0.0.1/tcp/7946', '/ip4/198.18.1.3/tcp/7946/p2p/12D3KooWx']), 'net:198.18.1.0/24');
  t.is(ownCluster(['/ip6/2001:db8:1:2::5/tcp/7946']), 'net:2001:db8:1:2::/64');
});

test('own cluster with several interfaces: the prefix the peers connect from wins, else the lowest', (t) => {
  const mine = ['/ip4/172.17.0.1/tcp/7946', '/ip4/10.0.5.9/tcp/7946'];
  t.is(ownCluster(mine), 'net:10.0.5.0/24', 'no peers yet: a stable choice');
  t.is(ownCluster(mine, ['/ip4/172.17.0.4/tcp/5000', '/ip4/172.17.0.5/tcp/5000', '/ip4/10.0.5.2/tcp/7946']), 'net:172.17.0.0/24');
  t.is(ownCluster(mine, ['/ip4/192.0.2.1/tcp/1']), 'net:10.0.5.0/24', 'votes from other prefixes do not count');
});

test('announced clusters are accepted only in the shape agents announce them', (t) => {
  t.is(parseCluster('net:198.18.1.0/24'), 'net:198.18.1.0/24');
  t.is(parseCluster('net:2001:db8:1:2::/64'), 'net:2001:db8:1:2::/64');
  for (const v of [undefined, null, 7, {}, 'rackA', 'net:198.18.1.0/16', `net:${'1'.repeat(60)}/24`]) t.is(parseCluster(v), null);
});

test('labels are the override: a labelled host compares labels only, an unlabelled one clusters', (t) => {
  const peer = { zone: 'rackB', cluster: 'net:198.18.0.0/24' };
  t.is(localZone('rackA', 'net:198.18.0.0/24'), 'rackA');
  t.is(localZone(null, 'net:198.18.0.0/24'), 'net:198.18.0.0/24');
  t.is(localZone(null, null), null);
  t.is(peerZone('rackA', peer), 'rackB');
  t.is(peerZone(null, peer), 'net:198.18.0.0/24');
  t.is(peerZone(null, { zone: null, cluster: null }), null);
  t.is(peerZone(null, undefined), null);
});

const chunks: ChunkRef[] = Array.from({ length: 8 }, (_, i) => ({
  id: `sha256:${String(i).padStart(64, '0')}`, size: 1000, storedSize: 1000, codec: 'raw',
}));
const ALL = new Uint8Array([0xff]);
const cluster = (ip: string) => ownCluster([`/ip4/${ip}/tcp/7946`]);

/** What a host at `self` may fetch now from `peers` (ip -> holds everything), with a rule that never allows far. */
function assignable(self: string, peerIps: string[]): string[] {
  const here = cluster(self);
  const s = new DownloadScheduler(chunks, chunks.map(() => false), {
    localZone: localZone(null, here), maxInFlightPerPeer: 8, maxInFlightTotal: 64, random: seeded(4),
    mayUseFarPeer: () => false,
  });
  for (const ip of peerIps) {
    s.setPeerHave(ip, ALL);
    s.setPeerInfo(ip, { zone: peerZone(null, { zone: null, cluster: cluster(ip) }) });
  }
  return [...new Set(s.next(0).map((a) => a.peer))].sort();
}

test('a flat fleet on one /24 is one implicit zone: every peer stays usable, as without inference', (t) => {
  const peers = ['198.18.0.2', '198.18.0.3', '198.18.0.9'];
  t.deepEqual(assignable('198.18.0.1', peers), peers);
});

test('a loopback fleet infers nothing: no local zone, so the far rule is never consulted', (t) => {
  t.is(localZone(null, ownCluster(['/ip4/127.0.0.1/tcp/40001'])), null);
  let asked = 0;
  const s = new DownloadScheduler(chunks, chunks.map(() => false), {
    localZone: localZone(null, null), maxInFlightPerPeer: 8, latencyTargetMs: 0, random: seeded(5), mayUseFarPeer: () => { asked++; return false; },
  });
  s.setPeerHave('p1', ALL);
  s.setPeerInfo('p1', { zone: peerZone(null, { zone: null, cluster: null }) });
  t.is(s.next(0).length, 8);
  t.is(asked, 0);
});

test('two racks on two /24s: peers of the other rack are far, so the zone rule holds their chunks back', (t) => {
  t.deepEqual(assignable('198.18.0.1', ['198.18.0.2', '198.18.1.9', '198.18.1.10']), ['198.18.0.2']);
  t.deepEqual(assignable('198.18.0.1', ['198.18.1.9', '198.18.1.10']), [], 'only far holders: this host is not designated');
});

test('RTT floor: a same-prefix peer far slower than the rest is an outlier; a busy one is not', (t) => {
  const r = new RttFloor();
  for (const ms of [0.3, 0.4, 0.35]) { r.note('a', ms); r.note('b', ms + 0.1); r.note('c', ms); }
  for (const ms of [25, 24, 30]) r.note('wan', ms);
  for (const ms of [40, 0.5, 60]) r.note('busy', ms); // queues behind chunks, but once answered fast
  t.deepEqual([...r.outliers(['a', 'b', 'c', 'wan', 'busy'])], ['wan']);
  t.is(r.floor('busy'), 0.5);
});

test('RTT floor: small absolute gaps, too few samples or too few peers decide nothing', (t) => {
  const r = new RttFloor();
  for (let i = 0; i < 3; i++) { r.note('a', 0.1); r.note('b', 0.1); r.note('c', 0.1); r.note('d', 0.9); }
  t.is(r.outliers(['a', 'b', 'c', 'd']).size, 0, '9x slower but only 0.8 ms more: still a LAN');
  r.note('new', 50);
  t.is(r.outliers(['a', 'b', 'c', 'new']).size, 0, 'one sample is not judged');
  const few = new RttFloor();
  for (let i = 0; i < 3; i++) { few.note('a', 0.2); few.note('far', 30); }
  t.is(few.outliers(['a', 'far']).size, 0, 'two peers are not a cluster to judge by');
  r.note('x', NaN);
  r.note('x', -1);
  t.is(r.floor('x'), undefined);
});
