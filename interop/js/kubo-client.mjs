// Drives an instance's Kubo RPC with the real `kubo-rpc-client` from npm, as an IPFS app would.
// Prints one JSON line: what add, cat, pin ls, block stat and pin rm returned.
//
//   node kubo-client.mjs <instance RPC url, e.g. http://127.0.0.1:8080/i/alice/api/v0> <owner token> <file>
import './with-resolvers.mjs'
import { create } from 'kubo-rpc-client'
import { readFileSync } from 'node:fs'
import { createHash } from 'node:crypto'

const [url, token, path] = process.argv.slice(2)
if (!url || !token || !path) {
  console.error('usage: node kubo-client.mjs <rpc url> <token> <file>')
  process.exit(2)
}

const ipfs = create({ url, headers: { authorization: `Bearer ${token}` } })
const data = readFileSync(path)

const added = await ipfs.add(data, { cidVersion: 0, rawLeaves: false })
const hash = createHash('sha256')
let catBytes = 0
for await (const chunk of ipfs.cat(added.cid)) {
  hash.update(chunk)
  catBytes += chunk.byteLength
}
const v1 = await ipfs.add('hello world', { cidVersion: 1, rawLeaves: true })
await ipfs.pin.add(v1.cid)
const pins = []
for await (const pin of ipfs.pin.ls()) {
  pins.push(pin.cid.toString())
}
const stat = await ipfs.block.stat(added.cid)
const removed = await ipfs.pin.rm(v1.cid)
let missing = null
try {
  await ipfs.block.stat('bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5a')
} catch (e) {
  missing = e.message
}
// A CAR out and back in, a raw block, and the file as a tar archive.
const carParts = []
for await (const part of ipfs.dag.export(added.cid)) carParts.push(part)
const car = Buffer.concat(carParts)
const imported = []
for await (const result of ipfs.dag.import([car])) imported.push(result.root.cid.toString())
const block = await ipfs.block.put(new TextEncoder().encode('raw block'))
const tarParts = []
for await (const part of ipfs.get(added.cid)) tarParts.push(part)
const tar = Buffer.concat(tarParts)
const tarName = tar.subarray(0, 100).toString('utf8').replace(/\0.*$/s, '')
const tarSize = parseInt(tar.subarray(124, 136).toString('utf8').replace(/\0.*$/s, '').trim(), 8)

console.log(JSON.stringify({
  cid: added.cid.toString(),
  size: added.size,
  cat_bytes: catBytes,
  cat_sha256: hash.digest('hex'),
  v1: v1.cid.toString(),
  pins,
  block_size: stat.size,
  removed: removed.toString(),
  missing_error: missing,
  car_bytes: car.length,
  imported,
  block_put: block.toString(),
  tar_name: tarName,
  tar_size: tarSize,
  tar_bytes: tar.length
}))
