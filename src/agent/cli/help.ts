// `joblet-agent COMMAND --help`: one screen per command, what it does and every option it takes.

const CLIENT = `  --socket PATH        the daemon's control socket (default: from --config, JOBLET_AGENT_SOCKET, or
                       /run/joblet-agent/agent.sock)
  --config FILE        read the socket path from this config file
  --json               machine-readable output (see README.md for the fields)`;

const WAIT_HELP = `  --hosts N            wait for N such hosts (default: all of them)
  --percent P          wait for P % of them
  --timeout DUR        give up after DUR, like 90s, 15m or 1h (default 10m)`;

const START_OPTIONS = `  --config FILE              config file (default /etc/joblet-agent/config.yml); flags override it
  --data-dir DIR             chunk store, index and peer key (default /var/lib/joblet-agent)
  --runtimes-dir DIR         where runtimes are installed (default /opt/joblet/runtimes)
  --socket PATH              control socket for the client commands (default /run/joblet-agent/agent.sock)
  --listen MULTIADDR         libp2p listen address, repeatable (default /ip4/0.0.0.0/tcp/7946)
  --bootstrap MULTIADDR      a fleet member to dial at start (.../p2p/PEERID), repeatable
  --fleet-key FILE           the fleet secret; without it the agent works alone
  --trust PUBKEY-or-FILE     a publisher key whose runtimes this host installs, repeatable
  --publisher-key FILE       this host's publisher private key (only publishers have one)
  --zone NAME                rack or datacenter label: a runtime crosses to a zone about once
  --no-mdns                  do not look for peers on the local network
  --owner USER:GROUP         owner of installed runtimes (default: the daemon's user)
  --max-package-bytes N      refuse runtimes that unpack to more than N bytes
  --max-upload-rate RATE     host-wide cap on what this agent serves to peers (e.g. 20MiB, per second)
  --max-download-rate RATE   host-wide cap on what this agent fetches from peers (e.g. 50MiB, per second)
  --store-max-bytes SIZE     disk budget of the store (e.g. 400MiB); GC evicts what the fleet no longer needs
  --store-high-watermark PCT GC runs when the data dir's filesystem is fuller than this (default 85%; 100 = off)
  --store-low-watermark PCT  where GC stops (default 75%)
  --http HOST:PORT|off       read-only HTTP endpoint: /metrics, /healthz, /readyz and the dashboard at /
                             (default 127.0.0.1:7947; port 0 picks a free port; off disables it)
  --log-format text|json     one line per event on stderr (default text)
  --log-level LEVEL          debug, info, warn or error (default info)
  --repair off|auto          auto: check installed runtimes every --repair-interval and repair those that
                             differ from their manifests (default off: only "verify" and "repair" do)
  --repair-interval DUR      time between those checks (default 10m)`;

export const COMMAND_HELP: Record<string, string> = {
  init: `usage: joblet-agent init [--dir DIR] [--fleet-key FILE] [--json] [start options]

Writes a new fleet key (or copies the one given with --fleet-key, to join an existing fleet), a publisher
key pair and a config.yml into DIR (default /etc/joblet-agent). Start options given here are written into
the config. Never overwrites an existing file.

options:
  --dir DIR            where to write fleet.key, publisher.key, publisher.pub and config.yml
  --fleet-key FILE     join the fleet whose secret is in FILE instead of making a new one
  --json               print the paths written and the publisher key as JSON
and every option of "joblet-agent start --help".`,

  start: `usage: joblet-agent start [options]

Runs the agent in the foreground until SIGTERM or SIGINT: it joins the fleet, installs the runtimes its
trusted publishers publish, serves chunks to its peers and answers the client commands on its socket.

options:
${START_OPTIONS}`,

  publish: `usage: joblet-agent publish PKG [--force] [--no-install] [--wait [--hosts N | --percent P] [--timeout DUR]] [options]

Ingests a runtime package (.tar.gz, .tgz, .tar, .zip or a directory holding runtime.yml), installs it
on this host, signs its manifest with this agent's publisher key and announces it to the fleet.

options:
  --force              replace an installed NAME@VERSION with different content
  --no-install         store, sign, announce and serve it, but do not install it here (a build host)
  --wait               return once the hosts that should install it (architecture counted) have it;
                       exit 1 at the timeout with one line per host that does not, and why
${WAIT_HELP}
${CLIENT}`,

  wait: `usage: joblet-agent wait NAME@VERSION [--hosts N | --percent P] [--timeout DUR] [options]

Waits, as "publish --wait" does, for an earlier publish: exit 0 once enough of the hosts that should
install NAME@VERSION announce it installed, exit 1 at the timeout with each missing host and its reason.

options:
${WAIT_HELP}
${CLIENT}`,

  info: `usage: joblet-agent info NAME[@VERSION] [options]

Shows a runtime known to this agent: its runtime.yml metadata, size, manifest id, publisher, creation
time, and which hosts of the fleet have it installed and which do not (with their reason).

options:
${CLIENT}`,

  list: `usage: joblet-agent list [options]

Lists the runtimes installed on this host: name, version, size, manifest and path.

options:
${CLIENT}`,

  status: `usage: joblet-agent status [--watch] [options]

Shows this agent: its peer id, addresses, HTTP endpoint, store, installed runtimes, peers, transfers
and the fleet's view of each runtime.

options:
  --watch              redraw every second (one JSON document per line with --json) until Ctrl-C
${CLIENT}`,

  remove: `usage: joblet-agent remove NAME[@VERSION] [options]

Uninstalls a runtime (every version without @VERSION). On a publisher the removal is signed and sent to
the fleet; elsewhere it applies to this host only, and the swarm does not bring it back.

options:
${CLIENT}`,

  verify: `usage: joblet-agent verify [options]

Re-hashes every stored chunk that a manifest references (a corrupt chunk file is deleted and fetched
again from the fleet), and checks every installed runtime against its manifest: file contents, modes,
mtimes, symlink targets, hardlinks, nothing added or missing, the runtime dir itself. Exits 1 if
anything is corrupt, missing or different.

options:
${CLIENT}`,
  repair: `usage: joblet-agent repair [NAME[@VERSION]] [options]

Checks the installed runtimes (all, every version of NAME, or NAME@VERSION) against their manifests and
restores those that differ: a fresh install from the chunks, fetched from the fleet where the store lacks
them, renamed over the damaged tree at once. Exits 1 if one could not be repaired.

options:
${CLIENT}`,
};
