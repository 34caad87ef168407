// The V8 flags the daemon runs with, wherever it is started: bin/joblet-agent, the release executable (its SEA
// config), the fleet simulator, the benchmarks and the tests. They cannot be set from inside the process:
// v8.setFlagsFromString('--single-threaded-gc') after start aborts V8 on the next GC.
//
// --single-threaded-gc: V8 otherwise marks and sweeps on four helper threads besides the main thread. The
// agent's heap is small (~20 MB) but its ArrayBuffer traffic (every chunk through Noise, yamux, the store) makes
// V8 run a full GC every few hundred ms, and the concurrent version of that work costs more CPU in all than
// doing it on the main thread. Measured in the fleet simulator (16 hosts on 2 cores, 64 MiB, same run order):
// all agents' CPU 113 s -> 92.5 s; 8 hosts: 44 - 52 s -> 36.9 s. The price is longer main-thread pauses, which
// an agent moving bytes does not notice.
//
// --heap-growing-percent=200: after each full GC V8 sets the next limit at 3 x the live heap instead of a factor
// it picks from its GC speed, which for this small heap (~22 MB live) kept the limit so close that a new marking
// started right after every full GC: 17 - 25 of them per host during one 64 MiB transfer in the simulator
// (8 hosts), 5 - 6 with this flag; all agents' CPU 42 - 52 s -> 33.6 s, peak RSS +0 to +15 MB. (100: 12 - 16
// full GCs; 300: 4, RSS +20 MB.)
export const DAEMON_NODE_FLAGS: readonly string[] = ['--single-threaded-gc', '--heap-growing-percent=200'];

/** The daemon's flags that this process was not started with (they are reported in the `started` log line). */
export function missingDaemonFlags(execArgv: readonly string[] = process.execArgv): string[] {
  return DAEMON_NODE_FLAGS.filter((f) => !execArgv.includes(f));
}
