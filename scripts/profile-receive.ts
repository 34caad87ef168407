/**
 * Profile the receive side: agent A publishes a package, agent B (and with --peers 2 or 3, C and D) receive it on
 * 127.0.0.1. B runs under `node --cpu-prof`, so its main-thread profile lands in --prof-dir for
 * chrome://inspect or `speedscope`. Prints each receiver's CPU seconds (all threads, from /proc) and the
 * `tar -xzf` CPU of the same file, measured in the same run.
 *
 *   node dist/scripts/profile-receive.js PACKAGE.tar.gz [--peers 1..3] [--prof-dir DIR]
 *        [--perf [--perf-malloc] | --strace] [--node-args="--trace-gc ..."] [--memory]
 *
 * --perf records B with `perf record -g` instead (the thread pool and the kernel too); --node-args runs every
 * receiver with those node flags and no profile (--trace-gc: B's GC counts, reasons and pauses are printed).
 * --memory samples B's process.memoryUsage() (through `status`) every 100 ms and prints the peak of each part,
 * so a peak RSS can be split into V8 heap, ArrayBuffers and the rest. Each `status` call costs B a scan of its
 * store, so leave --memory off when B's CPU is the figure wanted.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs/promises';
import path from 'node:path';
import { parseArgs } from 'node:util';

import { Agent, agentCli, cpuSeconds, ioBytes, minorFaults, peakRssBytes, runBench, sampleMemory, threadCpu, timeShell, waitFor } from './bench-util.js';

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    peers: { type: 'string', default: '1' }, 'prof-dir': { type: 'string', default: 'receive-profile' },
    // Record B with `perf record -g` over the transfer instead of --cpu-prof: it sees the thread pool and the kernel.
    perf: { type: 'boolean', default: false },
    // With --perf: record a uprobe on libc's malloc (set up first with
    // `perf probe -x /lib/x86_64-linux-gnu/libc.so.6 -a 'malloc size=%di:u64'`) for sizes of at least 64 KiB,
    // to see which code allocates the big buffers that drive V8's external-memory GCs.
    'perf-malloc': { type: 'boolean', default: false },
    // Attach `strace -c -f` to B over the transfer instead: its syscalls counted and timed, all threads. strace
    // slows every call, so read the counts, not the times.
    strace: { type: 'boolean', default: false },
    // Extra node flags for every receiver (e.g. --max-semi-space-size=16), to compare V8 settings; no profile
    // then (`--node-args=` for none at all).
    'node-args': { type: 'string' },
    memory: { type: 'boolean', default: false },
  },
});
const pkg = positionals[0];
if (!pkg) {
  console.error('usage: profile-receive PACKAGE.tar.gz [--peers 1..3] [--prof-dir DIR]');
  process.exit(2);
}
const peers = Number(values.peers);
if (![1, 2, 3].includes(peers)) {
  console.error('--peers must be 1, 2 or 3');
  process.exit(2);
}
const profDir = path.resolve(values['prof-dir']!);

runBench('profile-receive', async (cleanup) => {
  const extractDir = await cleanup.tempDir('joblet-profile-tar-');
  const tar = await timeShell('tar -xzf "$1" -C "$2"', [pkg, extractDir]);
  console.log(`tar -xzf: wall ${tar.seconds.toFixed(2)} s, cpu ${tar.cpuSeconds.toFixed(2)} s`);
  // tar's tree goes before the agents write theirs: on this VM, filesystem pages the guest has not used before
  // cost far more to write than reused ones (time-publish.ts), and tar had the emptier filesystem.
  await fs.rm(extractDir, { recursive: true, force: true });

  const a = await Agent.create(cleanup, 'a');
  await fs.mkdir(profDir, { recursive: true });
  const extra = values['node-args']?.split(' ').filter(Boolean);
  const b = await Agent.create(cleanup, 'b', {
    joinFleetOf: a, nodeArgs: extra ?? (values.strace ? [] : values.perf ? ['--perf-basic-prof'] : ['--cpu-prof', `--cpu-prof-dir=${profDir}`]),
  });
  const receivers = [b];
  for (const name of ['c', 'd'].slice(0, peers - 1)) receivers.push(await Agent.create(cleanup, name, { joinFleetOf: a, nodeArgs: extra ?? [] }));
  await new Promise((r) => setTimeout(r, 2000));

  const cpu0 = await Promise.all(receivers.map((x) => cpuSeconds(x.pid)));
  const faults0 = await Promise.all(receivers.map((x) => minorFaults(x.pid)));
  const io0 = await Promise.all(receivers.map((x) => ioBytes(x.pid)));
  const perf = values.perf
    ? spawn('perf', ['record', ...(values['perf-malloc'] ? ['-e', 'probe_libc:malloc', '--filter', 'size >= 65536'] : ['-F', '499']),
      '-g', '-p', String(b.pid), '-o', path.join(profDir, 'perf.data')], { stdio: 'ignore' })
    : null;
  if (perf) cleanup.process(perf);
  const strace = values.strace ? spawn('strace', ['-c', '-f', '-o', path.join(profDir, 'strace.txt'), '-p', String(b.pid)], { stdio: 'ignore' }) : null;
  if (strace) {
    cleanup.process(strace);
    await new Promise((r) => setTimeout(r, 500));
  }
  const memory = values.memory ? sampleMemory(b) : null;
  const t0 = performance.now();
  await agentCli(['publish', pkg, '--socket', a.socket, '--json']);
  const tPublished = performance.now();
  await waitFor('every receiver installs', async () => {
    const lists = await Promise.all(receivers.map((x) => x.list()));
    return lists.every((l) => l.length > 0) || undefined;
  }, 10 * 60_000, 100);
  const wall = (performance.now() - tPublished) / 1000;
  console.log(`all ${receivers.length} receivers installed ${wall.toFixed(2)} s after publish returned = ${(wall / tar.seconds).toFixed(2)} x tar -xzf wall`);
  if (perf) {
    perf.kill('SIGINT');
    await new Promise((r) => perf.once('exit', r));
  }
  if (strace) {
    strace.kill('SIGINT');
    await new Promise((r) => strace.once('exit', r));
    console.log(`b's syscalls: ${path.join(profDir, 'strace.txt')}`);
  }
  for (const [i, x] of receivers.entries()) {
    const cpu = (await cpuSeconds(x.pid)) - cpu0[i]!;
    console.log(`${x.name}: publish took ${((tPublished - t0) / 1000).toFixed(2)} s; ` +
      `cpu ${cpu.toFixed(2)} s = ${(cpu / tar.cpuSeconds).toFixed(2)}x tar -xzf; peak RSS ${((await peakRssBytes(x.pid)) / 1e6).toFixed(0)} MB; ` +
      `${(((await minorFaults(x.pid)) - faults0[i]!) / 1000).toFixed(1)} k minor faults; ` +
      `${await ioBytes(x.pid).then((io) => `${((io.written - io0[i]!.written) / 1e6).toFixed(0)} MB written, ${((io.read - io0[i]!.read) / 1e6).toFixed(0)} MB read`)} (sockets included)`);
  }
  if (memory) console.log(`b's memory peaks (MB, each part's own peak): ${await memory.stop()}`);
  console.log(`b's threads (cpu s over its life): ${(await threadCpu(b.pid)).map(([n, c]) => `${n} ${c.toFixed(2)}`).join(', ')}`);
  await b.stop();
  if (extra?.includes('--trace-gc')) {
    const gcLog = await fs.readFile(b.logFile, 'utf8');
    const count = (re: RegExp) => gcLog.split('\n').filter((l) => re.test(l)).length;
    console.log(`b's GCs: ${count(/Scavenge/)} scavenges, ${count(/Mark-Compact|Mark-sweep/)} mark-compacts`);
    const reasons = new Map<string, number>();
    for (const l of gcLog.split('\n').filter((x) => /Mark-Compact|Mark-sweep/.test(x))) {
      const r = (/current mu = [\d.]+\) (.*)$/.exec(l)?.[1] ?? l.slice(-60)).trim();
      reasons.set(r, (reasons.get(r) ?? 0) + 1);
    }
    for (const [r, n] of reasons) console.log(`  ${n} x ${r}`);
    // "... MB, 12.3 / 0.0 ms ..." : the main-thread pause of each GC.
    const pause = (re: RegExp) => gcLog.split('\n').filter((l) => re.test(l))
      .reduce((sum, l) => sum + Number(/MB, ([\d.]+) \/ [\d.]+ ms/.exec(l)?.[1] ?? 0), 0);
    console.log(`  main-thread pauses: scavenges ${pause(/Scavenge/).toFixed(0)} ms, mark-compacts ${pause(/Mark-Compact|Mark-sweep/).toFixed(0)} ms`);
  } else if (!extra) {
    console.log(`B's profile: ${profDir}`);
  }
});
