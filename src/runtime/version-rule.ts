// The one rule for a runtime version, shared by runtime.yml parsing (publish), install references and
// manifest verification (every host), so that a version one side accepts is never refused by the other.
//
// A version becomes a directory name (<runtimes>/<name>/<version>) and the second half of joblet's
// `name@version` reference, so it is kept to a plain ASCII path segment. `latest` is refused: joblet reads
// `name@latest` as "the highest MAJOR.MINOR.PATCH", so a runtime literally versioned `latest` could never be
// addressed.

const MAX_VERSION_LENGTH = 128;
// C0 and C1 control characters: named separately so the message says what is wrong.
const CONTROL_CHARS = /[\u0000-\u001f\u007f-\u009f]/;
const ALLOWED = /^[A-Za-z0-9._+-]+$/;
/** What joblet's resolver parses when it picks `latest`: three dot-separated numbers. */
const JOBLET_SEMVER = /^\d+\.\d+\.\d+$/;

/** Why `version` is not an acceptable runtime version, or null when it is. */
export function versionProblem(version: string): string | null {
  if (version.length === 0) return 'must not be empty';
  if (version.length > MAX_VERSION_LENGTH) return `must be at most ${MAX_VERSION_LENGTH} characters`;
  if (version.includes('\0')) return 'must not contain a NUL character';
  if (version.includes('/') || version.includes('\\')) return "must not contain '/' or '\\'";
  if (version === '.' || version === '..') return "must not be '.' or '..'";
  if (version.startsWith('-')) return "must not start with '-'";
  if (CONTROL_CHARS.test(version)) return 'must contain only printable characters';
  if (!ALLOWED.test(version)) return "must contain only ASCII letters, digits and '.', '_', '+', '-'";
  if (version.startsWith('.') || version.startsWith('+')) return "must not start with '.' or '+'";
  if (version === 'latest') return "must not be 'latest', which joblet reads as the highest MAJOR.MINOR.PATCH version, so it could never be addressed";
  return null;
}

/** True when joblet's resolver can rank the version (MAJOR.MINOR.PATCH) when asked for `name@latest`. */
export function isJobletSemver(version: string): boolean {
  return JOBLET_SEMVER.test(version);
}
