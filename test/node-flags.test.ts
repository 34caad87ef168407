// The daemon's V8 flags (src/agent/node-flags.ts) reach it through bin/joblet-agent, and a daemon started
// without them says so.
import test from 'ava';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { CLI, startAgent, tmpDir, waitFor } from './helpers/agent.js';
import { DAEMON_NODE_FLAGS } from '../src/agent/node-flags.js';

const BIN = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../bin/joblet-agent');

test('bin/joblet-agent starts the daemon with its V8 flags', async (t) => {
  const dir = await tmpDir(t);
  const agent = await startAgent(t, dir, [], { program: { file: BIN, args: [], env: process.env } });
  // The socket answers a moment before the `started` line is written.
  const started = await waitFor('the started line', async () => agent.logs().split('\n').find((l) => l.includes('started')), 30_000);
  for (const flag of DAEMON_NODE_FLAGS) t.true(started!.includes(flag), `started line: ${started}`);
  t.false(agent.logs().includes('node_flags_missing'));
  t.is(await agent.stop(), 0);
});

test('a daemon started by plain node without them warns, naming the flags', async (t) => {
  const dir = await tmpDir(t);
  const agent = await startAgent(t, dir, [], { program: { file: process.execPath, args: [CLI], env: process.env } });
  const warning = await waitFor('the warning', async () => agent.logs().split('\n').find((l) => l.includes('node_flags_missing')), 30_000);
  for (const flag of DAEMON_NODE_FLAGS) t.true(warning!.includes(flag));
  t.is(await agent.stop(), 0);
});
