import test from 'ava';
import { parseSimArgs } from '../scripts/fleet-sim.js';

test('defaults: 8 hosts, 50 Mbit/s, one rack, 64 MiB generated package, baselines on', (t) => {
  const a = parseSimArgs([]);
  t.is(a.hosts, 8);
  t.is(a.hostMbit, 50);
  t.is(a.racks, 1);
  t.is(a.uplinkMbit, 50);
  t.false(a.zones);
  t.deepEqual(a.baselines, ['bittorrent', 'central', 'sequential']);
  t.is(a.generateBytes, 64 * 1024 * 1024);
  t.is(a.timeoutS, null);
});

test('two racks with zones, an uplink rate and a given package', (t) => {
  const a = parseSimArgs(['--hosts', '16', '--racks', '2', '--uplink-mbit', '25', '--zones', '--package', '/x.tar.gz', '--no-baselines', '--json', '/o.json']);
  t.is(a.racks, 2);
  t.is(a.uplinkMbit, 25);
  t.true(a.zones);
  t.is(a.packagePath, '/x.tar.gz');
  t.deepEqual(a.baselines, []);
  t.is(a.jsonPath, '/o.json');
});

test('bandwidth caps are passed to every agent', (t) => {
  t.deepEqual(parseSimArgs(['--max-upload-rate', '2MiB', '--max-download-rate', '3MB']).agentArgs,
    ['--max-upload-rate', '2MiB', '--max-download-rate', '3MB']);
  t.deepEqual(parseSimArgs([]).agentArgs, []);
  t.throws(() => parseSimArgs(['--max-upload-rate', 'quick']), { message: /--max-upload-rate must be bytes per second/ });
});

test('--baselines picks some baselines in the given order', (t) => {
  t.deepEqual(parseSimArgs(['--baselines', 'central,bittorrent']).baselines, ['central', 'bittorrent']);
  t.deepEqual(parseSimArgs(['--baselines', 'bittorrent,bittorrent']).baselines, ['bittorrent']);
  t.throws(() => parseSimArgs(['--baselines', 'central,rsync']), { message: /--baselines: unknown baseline "rsync"/ });
});

test('bad values are refused with the flag named', (t) => {
  t.throws(() => parseSimArgs(['--racks', '3']), { message: /--racks must be/ });
  t.throws(() => parseSimArgs(['--hosts', '1']), { message: /--hosts must be a number from 2 to 250/ });
  t.throws(() => parseSimArgs(['--hosts', '2.5']), { message: /--hosts must be a whole number/ });
  t.throws(() => parseSimArgs(['--mbit', 'fast']), { message: /--mbit must be a number/ });
  t.throws(() => parseSimArgs(['--frobnicate']));
});
