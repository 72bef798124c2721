// The codes a healthy, well-provisioned system seldom gives, met on a system set up to give them
// (crates/selfcloud/tests/sdk_js.rs starts it): no chain (UNAVAILABLE), a growth tier of 300 kB
// (QUOTA_EXCEEDED), and, as root, a data directory on a small tmpfs that fills up (INTERNAL).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { app, connect, rejects } from './helpers.mjs';

const smallDisk = process.env.SELFCLOUD_SMALL_DISK ?? '';

/** `len` bytes no two 256 KiB chunks of which are alike (the importer stores equal chunks once). */
function incompressible(len, seed) {
  const out = new Uint8Array(len);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < len; i++) {
    x ^= x << 13; x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5; x >>>= 0;
    out[i] = x & 0xff;
  }
  return out;
}

test('the rarer SPEC codes come back through the SDK', async (t) => {
  // ALREADY_EXISTS: a test user's name, once taken, is refused.
  const carol = await app.createTestUser({ tier: 'growth', username: 'carol-js' });
  assert.equal(carol.username, 'carol-js');
  assert.equal(carol.tier, 'growth');
  await rejects(app.createTestUser({ username: 'carol-js' }), 'ALREADY_EXISTS');
  await rejects(app.createTestUser({ username: 'Not A Name' }), 'INVALID_ARGUMENT');

  const { session } = await connect(carol, ['storage:read', 'storage:write', 'chain:read', 'files:read', 'files:write']);
  // QUOTA_EXCEEDED: the second 200 kB value does not fit the 300 kB tier; the first stays.
  const big = 'q'.repeat(200_000);
  await session.storage.set({ key: 'first', value: big });
  await rejects(session.storage.set({ key: 'second', value: big }), 'QUOTA_EXCEEDED');
  assert.equal(await session.storage.get('first'), big);
  assert.equal(await session.storage.get('second'), null);

  // UNAVAILABLE: this system runs no chain.
  await rejects(session.blockchain.getInfo(), 'UNAVAILABLE');

  // INTERNAL: the host's disk is full; the answer names no internals, and what was stored stays.
  if (!smallDisk) {
    t.skip('INTERNAL on a full disk needs root to mount a small tmpfs (SELFCLOUD_SMALL_DISK unset)');
    return;
  }
  const dave = await app.createTestUser({ tier: 'free' });
  const { session: daves } = await connect(dave, ['storage:read', 'storage:write', 'files:write']);
  await daves.storage.set({ key: 'kept', value: 'written before the disk filled' });
  const bytes = Number(smallDisk);
  let failure = null;
  try {
    await daves.files.add(incompressible(bytes + (bytes >> 1), 7));
  } catch (e) {
    failure = e;
  }
  assert.ok(failure, 'an upload larger than the disk fails');
  assert.equal(failure.code, 'INTERNAL', failure.message);
  assert.equal(failure.status, 500);
  assert.ok(!/space|os error|errno|\/tmp|redb|ENOSPC/i.test(failure.message), `no internals in: ${failure.message}`);
  assert.ok(failure.requestId, 'a request id to quote to the operator');
  assert.equal(await daves.storage.get('kept'), 'written before the disk filled');
});
