// Whose right to read a package the daemon checks before publishing it.
//
// The daemon reads the package path a client sends with the daemon's own rights (usually root). It would
// have to know the client's uid to read "as the client", but Node.js cannot ask a Unix socket for its peer's
// credentials (no SO_PEERCRED, no SCM_CREDENTIALS). What it does know is who can reach the socket: its owner
// and the members of its group (mode 0660). So it publishes only what every member of that group could read:
// each directory on the way searchable, and every directory and file of the package readable, by the
// socket's group or by all users. A package private to one user (mode 0700 home, 0600 files) is refused
// with a sentence naming the path, even when root sent it.
//
// A socket whose group is root (gid 0, the default when the daemon runs as root) is reachable by root and
// members of group root only; those are treated as root, and nothing is checked. ACLs are not evaluated.
import type { BigIntStats } from 'node:fs';
import { stat } from 'node:fs/promises';
import { PackageError } from '../../runtime/types.js';
import type { AccessNeed, ReadAccess } from '../../runtime/no-follow.js';

const BITS: Record<AccessNeed, number> = { search: 0o1, list: 0o5, read: 0o4 };
const VERB: Record<AccessNeed, string> = { search: 'searchable (x)', list: 'readable and searchable (rx)', read: 'readable (r)' };

/** The read check for a package sent over `socketPath`; undefined when only root can send (group root). */
export async function socketGroupAccess(socketPath: string): Promise<ReadAccess | undefined> {
  const gid = (await stat(socketPath)).gid;
  if (gid === 0) return undefined;
  return groupReadAccess(gid);
}

/** Everything must be readable by group `gid` (with the group bits) or by all users. */
export function groupReadAccess(gid: number): ReadAccess {
  return {
    check(st: BigIntStats, need: AccessNeed, path: string): void {
      const mode = Number(st.mode);
      const want = BITS[need];
      const byOthers = (mode & want) === want;
      const byGroup = Number(st.gid) === gid && ((mode >> 3) & want) === want;
      if (byOthers || byGroup) return;
      throw new PackageError(
        `${path} is not ${VERB[need]} by the daemon socket's group (gid ${gid}) nor by all users ` +
          `(mode ${(mode & 0o7777).toString(8).padStart(4, '0')}, owner ${st.uid}:${st.gid}): the daemon cannot learn which user sent ` +
          'the request, so it publishes only what every user of its socket could read; make it readable by that group or by all, or publish from another place',
      );
    },
  };
}
