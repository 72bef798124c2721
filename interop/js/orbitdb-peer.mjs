// A real OrbitDB 3.x peer (@orbitdb/core on helia 5's parts and libp2p 2 with tcp, noise, yamux,
// identify and gossipsub) for selfcloud's database benchmark and replication tests.
//
//   node orbitdb-peer.mjs bench-put <dir> <count>   put <count> keys into a keyvalue database one
//                                                   after another (as an app would), print
//                                                   {"puts", "seconds", "per_second"}
//   node orbitdb-peer.mjs peer <dir>                print {"peer_id", "addrs", "identity"}, then
//                                                   take one JSON command per stdin line and answer
//                                                   each with one JSON line (see `commands` below)
import './with-resolvers.mjs'
import { startHelia } from './helia-node.mjs'
import { createOrbitDB, IPFSAccessController, Entry } from '@orbitdb/core'
import { multiaddr } from '@multiformats/multiaddr'
import { createInterface } from 'node:readline'

async function startOrbit (dir) {
  const { libp2p, helia: ipfs } = await startHelia({ pubsub: true })
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
} else if (mode === 'peer' && args.length === 0) {
  const { libp2p, orbitdb } = await startOrbit(dir)
  let db = null
  const sleep = (ms) => new Promise(resolve => setTimeout(resolve, ms))
  const entries = async () => (await db.log.values()).map(e => ({ hash: e.hash, payload: e.payload, time: e.clock.time }))
  const commands = {
    // A database everyone may write to (so selfcloud's identity can too).
    create: async ({ name, type }) => {
      db = await orbitdb.open(name, { type, AccessController: IPFSAccessController({ write: ['*'] }) })
      return { address: db.address }
    },
    open: async ({ address }) => { db = await orbitdb.open(address); return { address: db.address } },
    dial: async ({ addr }) => { await libp2p.dial(multiaddr(addr)); return { ok: true } },
    put: async ({ key, value }) => ({ hash: await db.put(key, value) }),
    del: async ({ key }) => ({ hash: await db.del(key) }),
    add: async ({ value }) => ({ hash: await db.add(value) }),
    // Add `count` events one after another (for the replication benchmark).
    fill: async ({ count }) => {
      const started = process.hrtime.bigint()
      for (let i = 0; i < count; i++) await db.add({ n: i, text: 'an event of about the size of a small JSON record' })
      return { seconds: Number(process.hrtime.bigint() - started) / 1e9 }
    },
    putdoc: async ({ doc }) => ({ hash: await db.put(doc) }),
    get: async ({ key }) => ({ value: (await db.get(key)) ?? null }),
    // Wait until the log holds `count` entries (or `timeout` ms pass).
    wait: async ({ count, timeout = 20000 }) => {
      const deadline = Date.now() + timeout
      let n = (await db.log.values()).length
      while (n < count && Date.now() < deadline) { await sleep(50); n = (await db.log.values()).length }
      return { entries: n }
    },
    dump: async () => ({ entries: await entries(), all: await db.all() }),
    // Publish an entry selfcloud must refuse: by an identity the access controller does not list
    // (`nonwriter`), or with a payload changed after signing (`badsig`).
    forge: async ({ how }) => {
      const clock = { id: orbitdb.identity.publicKey, time: 1000 }
      const entry = await Entry.create(orbitdb.identity, db.address, { op: 'PUT', key: 'forged', value: how }, null, clock, [], [])
      if (how === 'badsig') entry.payload = { op: 'PUT', key: 'forged', value: 'changed after signing' }
      const { bytes } = await Entry.encode(entry)
      await libp2p.services.pubsub.publish(db.address, bytes)
      return { ok: true }
    }
  }
  console.log(JSON.stringify({ peer_id: libp2p.peerId.toString(), addrs: libp2p.getMultiaddrs().map(String), identity: orbitdb.identity.id }))
  for await (const line of createInterface({ input: process.stdin })) {
    if (!line.trim()) continue
    const command = JSON.parse(line)
    try {
      console.log(JSON.stringify(await commands[command.cmd](command)))
    } catch (e) {
      console.log(JSON.stringify({ error: String(e && e.stack || e) }))
    }
  }
  await orbitdb.stop()
  process.exit(0)
} else {
  console.error('usage: node orbitdb-peer.mjs bench-put <dir> <count> | peer <dir>')
  process.exit(2)
}
