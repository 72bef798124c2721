// OrbitDB's own identities and log entries (the npm @orbitdb/core 3.x), for selfcloud's
// byte-compatibility tests.
//
//   node orbitdb-entry.mjs make <dir>                        make an identity and an entry; print
//                                                            their blocks (hex) and hashes
//   node orbitdb-entry.mjs verify <dir> <identity hex> <entry hex>
//                                                            decode both, verify them as OrbitDB
//                                                            does; print {identity_ok, entry_ok, hash}
import './with-resolvers.mjs'
import { Identities, Entry, KeyStore } from '@orbitdb/core'
import { decodeIdentity } from '@orbitdb/core/src/identities/identity.js'

const [mode, dir, identityHex, entryHex] = process.argv.slice(2)
const keystore = await KeyStore({ path: `${dir}/keystore` })
const identities = await Identities({ keystore, path: `${dir}/identities` })

if (mode === 'make') {
  const identity = await identities.createIdentity({ id: 'userA' })
  const payload = { op: 'PUT', key: 'greeting', value: { text: 'hello from JS', n: 42 } }
  const entry = await Entry.create(identity, 'log-1', payload, null, { id: identity.publicKey, time: 7 }, ['zdpuAm3LQV4SiGK1a7d5Z2qH1jZ8x4Dd1Y4Zpw5GB5KGo4Wk1'], [])
  const { hash, bytes } = await Entry.encode(entry)
  console.log(JSON.stringify({
    identity_hex: Buffer.from(identity.bytes).toString('hex'),
    identity_hash: identity.hash,
    identity_id: identity.id,
    public_key: identity.publicKey,
    entry_hex: Buffer.from(bytes).toString('hex'),
    entry_hash: hash
  }))
} else if (mode === 'verify') {
  const identity = await decodeIdentity(Buffer.from(identityHex, 'hex'))
  const identityOk = await identities.verifyIdentity(identity)
  const entry = await Entry.decode(Buffer.from(entryHex, 'hex'))
  const entryOk = await Entry.verify(identities, entry)
  const { hash } = await Entry.encode(entry)
  console.log(JSON.stringify({ identity_ok: identityOk, entry_ok: entryOk, hash, identity_hash: identity.hash }))
} else {
  console.error('usage: node orbitdb-entry.mjs make <dir> | verify <dir> <identity hex> <entry hex>')
  process.exit(2)
}
await keystore.close()
process.exit(0)
