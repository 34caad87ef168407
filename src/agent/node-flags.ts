// The V8 flags the daemon runs with, wherever it is started: bin/joblet-agent, the release executable (its SEA
// config), the fleet simulator, the benchmarks and the tests. They cannot be set from inside the process:
// v8.setFlagsFromString('--single-threaded-gc') after start aborts V8 on the next GC.
//
// --single-threaded-gc: V8 otherwise marks and sweeps on four helper threads besides the main thread; on a
// fleet host they used 1.62 CPU s against the main thread's 2.26 s during a transfer, and the concurrent version
// of that work costs more CPU in all than doing it on the main thread. Fleet simulator, 16 hosts on 2 cores,
// 64 MiB: all agents' CPU 113 s -> 92.5 s. The price is longer main-thread pauses, which an agent moving bytes
// does not notice, and peak RSS +15 - 20 MB (buffers are freed a little later).
//
// --heap-growing-percent=200: after each full GC V8 sets the next limit at 3 x the live heap instead of a factor
// it picks from its GC speed, which for this small heap (~22 MB live) kept the limit so close that a new marking
// started right after every full GC: 17 - 25 of them per host during one 64 MiB transfer in the simulator
// (8 hosts), 5 - 6 with this flag (100: 12 - 16; 300: 4). 16 hosts: all agents' CPU 81 s -> 67 - 70 s. The price
// is RSS: a live heap is allowed to grow to 3 x before a full GC, and buffers wait longer for one (8 hosts: peak
// +0 to +15 MB; receiving a 25,000-file tree: ~+35 MB).
export const DAEMON_NODE_FLAGS: readonly string[] = ['--single-threaded-gc', '--heap-growing-percent=200'];

/** The daemon's flags that this process was not started with (they are reported in the `started` log line). */
export function missingDaemonFlags(execArgv: readonly string[] = process.execArgv): string[] {
  return DAEMON_NODE_FLAGS.filter((f) => !execArgv.includes(f));
}
