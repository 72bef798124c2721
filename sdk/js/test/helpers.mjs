// What both SDK test files share: the system under test (from the env that
// crates/selfcloud/tests/sdk_js.rs sets) and the user's side of consent.
import assert from 'node:assert/strict';
import { SELF, SelfError } from '../index.js';

const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set: run this through crates/selfcloud/tests/sdk_js.rs`);
  return v;
};
export const base = env('SELFCLOUD_URL');
export const redirectUrl = env('SELFCLOUD_REDIRECT');
export const app = new SELF.App({ appId: env('SELFCLOUD_APP_ID'), appSecret: env('SELFCLOUD_APP_SECRET'), baseUrl: base, developerToken: env('SELFCLOUD_DEV_TOKEN') });
export const ALL = ['ai:chat', 'storage:read', 'storage:write', 'files:read', 'files:write', 'db:read', 'db:write', 'chain:read', 'chain:transact', 'crypto:use', 'network:notify'];

export async function signIn(user) {
  const r = await fetch(`${base}/v1/sessions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ username: user.username, password: user.password }) });
  assert.equal(r.status, 200);
  return (await r.json()).token;
}

/** What the user does in the browser: open the consent page signed in, press a button. */
export async function consent(url, ownerToken, decision = 'allow') {
  const page = await fetch(url, { headers: { cookie: `selfcloud_session=${ownerToken}` }, redirect: 'manual' });
  if (page.status === 303) return page.headers.get('location');
  const html = await page.text();
  const fields = new URLSearchParams();
  for (const m of html.matchAll(/<input type="(?:hidden|text)" name="([^"]+)" value="([^"]*)"/g)) {
    fields.append(m[1], m[2].replace(/&quot;/g, '"').replace(/&#39;/g, "'").replace(/&lt;/g, '<').replace(/&gt;/g, '>').replace(/&amp;/g, '&'));
  }
  assert.ok([...fields.keys()].length > 0, `a consent form: ${html.slice(0, 200)}`);
  fields.append('decision', decision);
  const r = await fetch(`${base}/oauth/authorize`, { method: 'POST', headers: { cookie: `selfcloud_session=${ownerToken}`, 'content-type': 'application/x-www-form-urlencoded' }, body: fields, redirect: 'manual' });
  assert.equal(r.status, 303);
  return r.headers.get('location');
}

export async function connect(user, scopes) {
  const owner = await signIn(user);
  const url = await app.createConnectionUrl({ permissions: scopes, redirectUrl });
  return { session: await app.handleCallback(await consent(url, owner)), owner };
}

export async function rejects(promise, code) {
  await assert.rejects(promise, (e) => { assert.ok(e instanceof SelfError, `${e}`); assert.equal(e.code, code, e.message); return true; });
}
