// The TypeScript/JavaScript SDK against a running selfcloud (started by the Rust test
// crates/selfcloud/tests/sdk_js.rs, which passes its address and a registered app in the env).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { App, SelfError } from '../index.js';
import { ALL, app, base, connect, consent, redirectUrl, rejects, signIn } from './helpers.mjs';

async function funded(session) {
  const deadline = Date.now() + 60_000;
  for (;;) {
    try {
      const info = await session.blockchain.getInfo();
      if (info.nonce >= 1) return info;
    } catch { /* the instance is still registering */ }
    assert.ok(Date.now() < deadline, 'the instance was never funded and registered');
    await new Promise((r) => setTimeout(r, 300));
  }
}

test('consent, then every area of the session', async () => {
  const alice = await app.createTestUser({ tier: 'pro' });
  const bob = await app.createTestUser({ tier: 'growth' });
  assert.equal(alice.tier, 'pro');
  assert.equal(alice.test_user_of, app.appId);

  // Consent failures never reach the token endpoint.
  const owner = await signIn(alice);
  await rejects(app.handleCallback(`${redirectUrl}?code=x&state=forged`), 'STATE_MISMATCH');
  const denied = await consent(await app.createConnectionUrl({ permissions: ['ai:chat'], redirectUrl }), owner, 'deny');
  await rejects(app.handleCallback(denied), 'access_denied');

  const { session } = await connect(alice, ALL);
  assert.ok(session.instanceUrl.endsWith(`/i/${alice.username}`));
  assert.ok(session.hasPermission('crypto:use') && !session.hasPermission('ai:collaborate'));
  const more = new URL(await session.requestPermissions(['ai:collaborate'], { redirectUrl }));
  assert.ok(more.searchParams.get('scope').split(' ').includes('ai:collaborate'));

  // storage
  await session.storage.set({ key: 'notes/a b', value: { title: 'first' } });
  await session.storage.set({ key: 'notes/2', value: 2, encrypted: true });
  assert.deepEqual(await session.storage.get('notes/a b'), { title: 'first' });
  assert.equal(await session.storage.get('missing'), null);
  const page = await session.storage.list({ prefix: 'notes/', limit: 1 });
  const rest = await session.storage.list({ prefix: 'notes/', limit: 10, cursor: page.next_cursor });
  assert.deepEqual([...page.keys, ...rest.keys], ['notes/2', 'notes/a b']);
  assert.equal(await session.storage.delete('notes/2'), true);
  assert.equal(await session.storage.delete('notes/2'), false);

  // ai: one answer, then a streamed continuation
  const answer = await session.ai.chat({ message: 'Say hello.', max_tokens: 16 });
  assert.ok(answer.message.content.length > 0);
  let streamed = '';
  let done = null;
  for await (const event of session.ai.chatStream({ message: 'Again, please.', conversation: answer.conversation, max_tokens: 16 })) {
    if (event.type === 'delta') streamed += event.delta;
    if (event.type === 'done') done = event;
  }
  assert.equal(done.message.content, streamed);
  assert.equal(done.conversation, answer.conversation);

  // files
  const added = await session.files.add('hello file', { name: 'hello.txt' });
  assert.equal(new TextDecoder().decode(await session.files.cat(added.cid)), 'hello file');
  assert.equal((await session.files.list()).length, 1);
  await session.files.remove(added.cid);
  await rejects(session.files.cat(added.cid), 'NOT_FOUND');

  // db
  const kv = await session.db.open({ name: 'settings', type: 'keyvalue' });
  await kv.put('theme', 'dark');
  assert.equal(await kv.get('theme'), 'dark');
  assert.equal((await kv.all()).length, 1);
  assert.equal(await kv.del('theme'), true);
  const log = await session.db.open({ name: 'log', type: 'events' });
  await log.add({ n: 1 });
  await log.add({ n: 2 });
  assert.deepEqual((await log.iterator({ amount: 10 })).map((e) => e.value), [{ n: 2 }, { n: 1 }]);
  const docs = await session.db.open({ name: 'people', type: 'documents' });
  await docs.putDoc({ _id: 'ada', lang: 'en' });
  assert.equal((await docs.getDoc('ada')).lang, 'en');
  assert.equal((await docs.query({ lang: 'en' })).length, 1);
  assert.equal(await docs.delDoc('ada'), true);
  assert.equal((await session.db.list()).length, 3);

  // chain, crypto and network with a second user
  const { session: bobSession, owner: bobOwner } = await connect(bob, ['chain:read', 'crypto:use']);
  await funded(session);
  const bobInfo = await funded(bobSession);
  const sent = await session.blockchain.transfer({ to: bobInfo.address, amount: '1000' });
  assert.ok(sent.hash && sent.height > 0);
  const history = await session.blockchain.getTransactions({ limit: 10 });
  assert.ok(history.transactions.some((t) => t.hash === sent.hash));
  const sealed = await session.crypto.encrypt({ data: 'for bob only', recipient: bobInfo.address });
  assert.equal(new TextDecoder().decode(await bobSession.crypto.decrypt({ ciphertext: sealed })), 'for bob only');
  await rejects(session.crypto.decrypt({ ciphertext: sealed }), 'INVALID_ARGUMENT');
  const signed = await session.crypto.sign({ data: 'terms v1' });
  assert.equal(await bobSession.crypto.verify({ data: 'terms v1', signature: signed.signature, publicKey: signed.public_key }), true);
  assert.equal(await bobSession.crypto.verify({ data: 'terms v2', signature: signed.signature, publicKey: signed.public_key }), false);
  const notified = await session.network.notify({ recipient: bobInfo.address, type: 'hello', payload: { from: 'js' } });
  assert.equal(notified.delivered, true);
  const inbox = await (await fetch(`${bobSession.instanceUrl}/v1/network/inbox`, { headers: { authorization: `Bearer ${bobOwner}` } })).json();
  assert.equal(inbox.notifications[0].type, 'hello');

  // Tokens refresh by themselves (and rotate).
  const stale = { ...session.tokens, expiresAt: 0 };
  const resumed = app.resume(stale);
  assert.deepEqual(await resumed.storage.get('notes/a b'), { title: 'first' });
  assert.notEqual(resumed.tokens.refreshToken, stale.refreshToken);
});

test('errors carry the SPEC codes', async () => {
  const user = await app.createTestUser({ tier: 'free' });
  const { session, owner } = await connect(user, ['storage:read', 'storage:write', 'ai:chat']);
  await rejects(session.files.list(), 'PERMISSION_DENIED');
  await rejects(session.storage.set({ key: '../escape', value: 1 }), 'INVALID_ARGUMENT');
  await rejects(session.ai.chat({ message: 'hi', temperature: 9 }), 'INVALID_ARGUMENT');
  await rejects(session.storage.set({ key: 'big', value: 'x'.repeat(1_100_000) }), 'PAYLOAD_TOO_LARGE');
  await rejects(app.createTestUser({ tier: 'platinum' }), 'INVALID_ARGUMENT');
  await rejects(new App({ appId: 'app_00000000000000000000', baseUrl: base, developerToken: owner }).createTestUser(), 'NOT_FOUND');
  // The free tier allows 100 requests a minute per app.
  let limited = null;
  for (let i = 0; i < 120 && !limited; i++) {
    try { await session.storage.get('k'); } catch (e) { limited = e; }
  }
  assert.ok(limited instanceof SelfError);
  assert.equal(limited.code, 'RATE_LIMITED');
  assert.ok(limited.retryAfter >= 1);
  // A revoked grant: the next call is UNAUTHENTICATED (the refresh is refused too).
  const revoke = await fetch(`${session.instanceUrl}/v1/grants/${app.appId}`, { method: 'DELETE', headers: { authorization: `Bearer ${owner}` } });
  assert.equal(revoke.status, 200);
  await rejects(app.resume({ ...session.tokens, expiresAt: Math.floor(Date.now() / 1000) + 3600 }).storage.get('k'), 'UNAUTHENTICATED');
});
