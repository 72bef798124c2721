// A real Helia node (helia 5's parts: @helia/utils with bitswap from @helia/block-brokers, on
// libp2p 2 with tcp/noise/yamux/identify) for selfcloud's Bitswap interop tests and benchmark.
//
//   node helia-peer.mjs fetch <multiaddr> <cid>   dial the peer, cat the file over Bitswap, print
//                                                 {"bytes", "sha256", "seconds"}
//   node helia-peer.mjs serve <file> [delay-ms]   add the file (Helia's defaults: CIDv1, raw
//                                                 leaves), print {"cid", "sha256", "addrs"}, serve
//                                                 until stdin closes; with a delay, every block
//                                                 read once serving has begun waits that long (a
//                                                 slow peer, for fetches that outlast a timeout)
//
import { startHelia } from './helia-node.mjs'
import { unixfs } from '@helia/unixfs'
import { multiaddr } from '@multiformats/multiaddr'
import { CID } from 'multiformats/cid'
import { createHash } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { setTimeout as sleep } from 'node:timers/promises'
import { MemoryBlockstore } from 'blockstore-core'

const [mode, ...args] = process.argv.slice(2)
if (!((mode === 'fetch' && args.length === 2) || (mode === 'serve' && (args.length === 1 || args.length === 2)))) {
  console.error('usage: node helia-peer.mjs fetch <multiaddr> <cid> | serve <file> [delay-ms]')
  process.exit(2)
}

// Reads wait `delayMs` once `slow` is set (after the file is added, so adding stays fast).
class SlowBlockstore extends MemoryBlockstore {
  delayMs = 0
  slow = false
  async get (cid, options) {
    if (this.slow) await sleep(this.delayMs)
    return super.get(cid, options)
  }
}
const blockstore = new SlowBlockstore()
blockstore.delayMs = Number(args[1] ?? 0)
const { libp2p, helia } = await startHelia({ blockstore })
const fs = unixfs(helia)

if (mode === 'fetch') {
  const [addr, cid] = args
  await libp2p.dial(multiaddr(addr))
  const started = process.hrtime.bigint()
  const hash = createHash('sha256')
  let bytes = 0
  for await (const chunk of fs.cat(CID.parse(cid), { signal: AbortSignal.timeout(120_000) })) {
    hash.update(chunk)
    bytes += chunk.byteLength
  }
  const seconds = Number(process.hrtime.bigint() - started) / 1e9
  console.log(JSON.stringify({ bytes, sha256: hash.digest('hex'), seconds }))
  await helia.stop()
  process.exit(0)
} else {
  const data = readFileSync(args[0])
  const cid = await fs.addBytes(data)
  const sha256 = createHash('sha256').update(data).digest('hex')
  const addrs = libp2p.getMultiaddrs().map(String)
  blockstore.slow = blockstore.delayMs > 0
  console.log(JSON.stringify({ cid: cid.toString(), sha256, addrs }))
  process.stdin.resume()
  process.stdin.on('end', async () => {
    await helia.stop()
    process.exit(0)
  })
}
