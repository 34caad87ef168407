'use strict'
// Stands in for classic-level/binding.js inside the release's single executable (see scripts/release/bundle.ts).
// A single executable cannot load a native addon out of itself, so the release ships classic-level.node beside
// the executable. The executable's real path is used: in the .deb, /usr/bin/joblet-agent is a symlink to
// /usr/lib/joblet-agent/joblet-agent, and the addon sits in /usr/lib/joblet-agent.
const fs = require('node:fs')
const path = require('node:path')

const file = path.join(path.dirname(fs.realpathSync(process.execPath)), 'classic-level.node')
const addon = { exports: {} }
try {
  process.dlopen(addon, file)
} catch (err) {
  throw new Error(`cannot load the LevelDB addon ${file} that ships beside the joblet-agent executable ` +
    `(${err.message}); reinstall the release so that both files sit in one directory`)
}
module.exports = addon.exports
