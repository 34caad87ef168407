/** The agent's version, shown by `--version` and in `status`. */
export const AGENT_VERSION = '0.1.0';
