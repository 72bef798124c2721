// Imports files with the JS UnixFS importer (ipfs-unixfs-importer) and prints one JSON line per
// entry: {"path", "cid", "size"}, then a summary line {"bytes", "seconds"}. Used by selfcloud's
// interop tests (CID equality) and `selfcloud bench ipfs` (the JS peer's throughput).
//
//   node unixfs-import.mjs <unixfs-v0-2015|unixfs-v1-2025> <path>...
//
// A path that is a directory is imported with its direct children (files only), as Kubo's `add -r`.
import { importer } from 'ipfs-unixfs-importer'
import { createReadStream, readdirSync, statSync } from 'node:fs'
import { basename, join } from 'node:path'

const [profile, ...paths] = process.argv.slice(2)
if (!['unixfs-v0-2015', 'unixfs-v1-2025'].includes(profile) || paths.length === 0) {
  console.error('usage: node unixfs-import.mjs <unixfs-v0-2015|unixfs-v1-2025> <path>...')
  process.exit(2)
}

// Blocks are counted, not kept: the measurement is hashing and encoding, as for the Rust side.
let blockBytes = 0
const blockstore = {
  async put (cid, block) { blockBytes += block.byteLength; return cid },
  async has () { return false }
}

function * entries () {
  for (const path of paths) {
    if (statSync(path).isDirectory()) {
      for (const name of readdirSync(path).sort()) {
        yield { path: join(basename(path), name), content: createReadStream(join(path, name), { highWaterMark: 1 << 20 }) }
      }
    } else {
      yield { path: basename(path), content: createReadStream(path, { highWaterMark: 1 << 20 }) }
    }
  }
}

let bytes = 0
for (const path of paths) {
  const st = statSync(path)
  bytes += st.isDirectory() ? readdirSync(path).reduce((n, f) => n + statSync(join(path, f)).size, 0) : st.size
}
const start = process.hrtime.bigint()
for await (const entry of importer(entries(), blockstore, { profile })) {
  console.log(JSON.stringify({ path: entry.path, cid: entry.cid.toString(), size: Number(entry.size) }))
}
const seconds = Number(process.hrtime.bigint() - start) / 1e9
console.log(JSON.stringify({ bytes, seconds, blockBytes }))
