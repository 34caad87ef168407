// TEST ONLY: JOBLET_AGENT_TEST_KILL_AT=<point> makes the process SIGKILL itself when it reaches that named
// point, so tests can leave on disk exactly what a kill (or a crash) at that step leaves, and check that the
// next start recovers from it. Unset in production: one string compare per call.
const KILL_AT = process.env.JOBLET_AGENT_TEST_KILL_AT;

export function killPoint(name: string): void {
  if (KILL_AT !== undefined && KILL_AT === name) process.kill(process.pid, 'SIGKILL');
}
