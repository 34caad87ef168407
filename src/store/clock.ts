// A bound on how far in the future a signed statement (manifest or removal) may be dated.
//
// Newer createdAt wins: a manifest supersedes older ones of the same name@version and a removal covers
// manifests created before it. A publisher whose clock runs hours ahead would therefore sign statements
// that nothing correctly dated could supersede or remove for hours. Every host refuses them until its
// own clock catches up (anti-entropy offers them again), and says why.

/** Ahead of this host's clock by more than this, a statement is refused: ordinary NTP drift is far smaller. */
export const MAX_CLOCK_SKEW_MS = 10 * 60_000;

/**
 * Throws one sentence naming the skew when `createdAt` (an ISO 8601 time) lies more than
 * MAX_CLOCK_SKEW_MS after `now`. `what` names the statement, e.g. "manifest sha256:…".
 */
export function assertNotFromTheFuture(createdAt: string, what: string, now: number = Date.now()): void {
  const ahead = Date.parse(createdAt) - now;
  if (!(ahead > MAX_CLOCK_SKEW_MS)) return;
  throw new Error(
    `${what} is dated ${createdAt}, ${describeSpan(ahead)} ahead of this host's clock (at most ${describeSpan(MAX_CLOCK_SKEW_MS)} ` +
      `is accepted): the publisher's clock is probably wrong, or this host's is; it is refused until the clocks agree`,
  );
}

function describeSpan(ms: number): string {
  const minutes = Math.round(ms / 60_000);
  if (minutes < 120) return `${minutes} minutes`;
  const hours = Math.round(ms / 3_600_000);
  if (hours < 48) return `${hours} hours`;
  return `${Math.round(ms / 86_400_000)} days`;
}
