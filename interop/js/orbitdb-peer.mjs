// A real OrbitDB 3.x peer (@orbitdb/core on helia 5's parts and libp2p 2 with tcp, noise, yamux,
// identify and gossipsub) for selfcloud's database benchmark and replication tests.
//
//   node orbitdb-peer.mjs bench-put <dir> <count>   put <count> keys into a keyvalue database one
//                                                   after another (as an app would), print
//                                                   {"puts", "seconds", "per_second"}
import './with-resolvers.mjs'
import { createOrbitDB } from '@orbitdb/core'
import { Helia } from '@helia/utils'
import { bitswap } from '@helia/block-brokers'
import { libp2pRouting } from '@helia/routers'
import { createLibp2p } from 'libp2p'
import { tcp } from '@libp2p/tcp'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { identify } from '@libp2p/identify'
import { gossipsub } from '@chainsafe/libp2p-gossipsub'
import { MemoryBlockstore } from 'blockstore-core'
import { MemoryDatastore } from 'datastore-core'

async function startOrbit (dir) {
  const libp2p = await createLibp2p({
    addresses: { listen: ['/ip4/127.0.0.1/tcp/0'] },
    transports: [tcp()],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
    services: { identify: identify(), pubsub: gossipsub({ allowPublishToZeroTopicPeers: true, emitSelf: false }) }
  })
  const ipfs = new Helia({
    libp2p,
    blockstore: new MemoryBlockstore(),
    datastore: new MemoryDatastore(),
    blockBrokers: [bitswap()],
    routers: [libp2pRouting(libp2p)]
  })
  await ipfs.start()
  const orbitdb = await createOrbitDB({ ipfs, directory: dir })
  return { libp2p, ipfs, orbitdb }
}

const [mode, dir, ...args] = process.argv.slice(2)
if (mode === 'bench-put' && args.length === 1) {
  const count = Number(args[0])
  const { ipfs, orbitdb } = await startOrbit(dir)
  const db = await orbitdb.open('bench', { type: 'keyvalue' })
  const started = process.hrtime.bigint()
  for (let i = 0; i < count; i++) {
    await db.put(`key-${i}`, { n: i, text: 'a value of about the size of a small JSON record' })
  }
  const seconds = Number(process.hrtime.bigint() - started) / 1e9
  console.log(JSON.stringify({ puts: count, seconds, per_second: count / seconds }))
  await orbitdb.stop()
  await ipfs.stop()
  process.exit(0)
} else {
  console.error('usage: node orbitdb-peer.mjs bench-put <dir> <count>')
  process.exit(2)
}
