// The Helia node both JS peers use: helia 5's parts (@helia/utils with bitswap from
// @helia/block-brokers) on libp2p 2 with tcp, noise, yamux and identify, plus gossipsub when asked
// (OrbitDB needs it), listening on loopback, blocks in memory (a given blockstore, or a new one).
//
// Built from parts rather than createHelia(): the full `helia` package pulls in webrtc, whose
// install script downloads a native binary.
import './with-resolvers.mjs'
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

export async function startHelia ({ pubsub = false, blockstore = new MemoryBlockstore() } = {}) {
  const services = { identify: identify() }
  if (pubsub) services.pubsub = gossipsub({ allowPublishToZeroTopicPeers: true, emitSelf: false })
  const libp2p = await createLibp2p({
    addresses: { listen: ['/ip4/127.0.0.1/tcp/0'] },
    transports: [tcp()],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
    services
  })
  const helia = new Helia({
    libp2p,
    blockstore,
    datastore: new MemoryDatastore(),
    blockBrokers: [bitswap()],
    routers: [libp2pRouting(libp2p)]
  })
  await helia.start()
  return { libp2p, helia }
}
