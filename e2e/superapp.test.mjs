// SPEC §7 walked through the user interfaces in a real Chromium: the Super-App served by the
// gateway, and examples/notes (a third-party app on @selfcloud/sdk) asking for consent.
//
// Needs a running selfcloud at SELFCLOUD_URL (the Rust test `browser` starts one and runs this);
// screenshots go to SELFCLOUD_ARTIFACTS (default ../target/e2e-artifacts).
//
// The notes app is served at http://localhost:PORT while the gateway is at 127.0.0.1: cookies are
// scoped by host name, not port, so on one host name every app would receive the Super-App's
// session cookie (examples/notes/README.md says more).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';
import { start as startNotes } from '../examples/notes/server.mjs';

const BASE = (process.env.SELFCLOUD_URL || 'http://127.0.0.1:8080').replace(/\/+$/, '');
const ARTIFACTS = process.env.SELFCLOUD_ARTIFACTS || path.join(import.meta.dirname, '../target/e2e-artifacts');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'];
const STEP_MS = 60_000;

const suffix = Date.now().toString(36).slice(-5);
const ALICE = { username: `alice-${suffix}`, password: 'correct horse battery staple' };

async function json(method, url, { body, token } = {}) {
  const headers = { 'content-type': 'application/json' };
  if (token) headers.authorization = `Bearer ${token}`;
  const response = await fetch(url, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await response.text();
  assert.ok(response.ok, `${method} ${url} → ${response.status} ${text}`);
  return JSON.parse(text);
}

/** Every visible control has an accessible name, and the page has exactly one top heading. */
async function assertAccessible(page, where) {
  const unnamed = await page.locator('input:not([type=hidden]), select, textarea, button, a[href]').evaluateAll((els) => els
    .filter((el) => el.getClientRects().length > 0)
    .filter((el) => !((el.getAttribute('aria-label') || '').trim() || [...(el.labels || [])].some((l) => l.textContent.trim()) || el.textContent.trim()))
    .map((el) => el.outerHTML.slice(0, 160)));
  assert.deepEqual(unnamed, [], `every control of "${where}" has an accessible name`);
  assert.equal(await page.locator('h1').count(), 1, `"${where}" has one top heading`);
}

function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => { const { port } = s.address(); s.close(() => resolve(port)); });
  });
}

test('the newcomer\'s path through the Super-App and examples/notes', { timeout: 15 * 60_000 }, async (t) => {
  mkdirSync(ARTIFACTS, { recursive: true });

  // A developer registers the notes app (SPEC §7 step 3) through the control API.
  const dev = { username: `dev-${suffix}`, password: 'developer password 1' };
  await json('POST', `${BASE}/v1/accounts`, { body: dev });
  const { token: devToken } = await json('POST', `${BASE}/v1/sessions`, { body: dev });
  const port = await freePort();
  const notesUrl = `http://localhost:${port}`;
  const registered = await json('POST', `${BASE}/v1/apps`, { token: devToken, body: { name: 'notes', redirect_uris: [`${notesUrl}/callback`] } });
  const notes = await startNotes({ selfcloudUrl: BASE, appId: registered.app_id, appSecret: registered.app_secret, listen: `127.0.0.1:${port}`, publicUrl: notesUrl });
  t.after(() => notes.close());

  const userDataDir = mkdtempSync(path.join(tmpdir(), 'selfcloud-chromium-'));
  const context = await chromium.launchPersistentContext(userDataDir, { executablePath: CHROMIUM, headless: true, args: FLAGS, acceptDownloads: true, viewport: { width: 1200, height: 900 } });
  t.after(async () => { await context.close(); rmSync(userDataDir, { recursive: true, force: true }); });
  context.setDefaultTimeout(STEP_MS);
  const page = context.pages()[0] || await context.newPage();
  const problems = [];
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  let shot = 0;
  const screenshot = (name) => page.screenshot({ path: path.join(ARTIFACTS, `${String(++shot).padStart(2, '0')}-${name}.png`), fullPage: true });
  /** A screenshot of a page the user sees, which must also pass the accessibility checks. */
  const snapshot = async (name) => { await screenshot(name); await assertAccessible(page, name); };
  // Steps build on each other: after a failure the rest are skipped, not failed again.
  let failed = null;
  const step = (name, fn) => t.test(name, { skip: failed ? `an earlier step failed: ${failed}` : false }, async () => {
    try { await fn(); } catch (e) {
      failed = name;
      await screenshot(`FAILED-${name.replace(/[^a-z0-9]+/gi, '-')}`).catch(() => {});
      throw e;
    }
  });
  const superApp = async (section) => {
    await page.goto(`${BASE}/#${section}`);
    await page.locator('main [aria-busy]').first().waitFor({ state: 'detached' }).catch(() => {});
  };

  await step('sign up in the Super-App', async () => {
    await page.goto(`${BASE}/`);
    await page.getByRole('link', { name: 'Create one' }).waitFor();
    // What the first visit costs (figures, not a pass/fail bound).
    const load = await page.evaluate(() => {
      const nav = performance.getEntriesByType('navigation')[0];
      const all = [nav, ...performance.getEntriesByType('resource')];
      return { requests: all.length, bytes: all.reduce((n, e) => n + (e.decodedBodySize || 0), 0), domContentLoadedMs: Math.round(nav.domContentLoadedEventEnd) };
    });
    console.log(`Super-App first load: ${load.requests} requests, ${(load.bytes / 1024).toFixed(1)} KiB, DOMContentLoaded at ${load.domContentLoadedMs} ms`);
    await snapshot('sign-in');
    await page.getByRole('link', { name: 'Create one' }).click();
    await page.getByLabel('Username').fill(ALICE.username);
    await page.getByLabel('Password').fill(ALICE.password);
    await page.getByLabel('Plan').selectOption('growth');
    await page.getByRole('button', { name: 'Create account' }).click();
    await page.getByRole('heading', { name: 'Dashboard' }).waitFor();
    await assert.doesNotReject(page.locator('#tier', { hasText: 'growth' }).waitFor());
    assert.equal(await page.locator('#instance-status').innerText(), 'running');
    assert.match(await page.locator('#storage-usage').innerText(), /of 50\.0 GB used/);
    await snapshot('dashboard');
  });

  await step('consent for examples/notes, then the app uses storage, files and AI', async () => {
    await page.goto(notesUrl);
    await page.getByRole('link', { name: 'Connect your selfcloud' }).click();
    await page.waitForURL(`${BASE}/oauth/authorize?**`);
    const scopes = await page.locator('#scopes').innerText();
    for (const s of ['ai:chat', 'storage:read', 'storage:write', 'files:write']) assert.ok(scopes.includes(s), `the consent screen lists ${s}: ${scopes}`);
    await snapshot('consent');
    await page.getByRole('button', { name: 'Allow' }).click();
    await page.waitForURL(`${notesUrl}/`);
    await page.getByLabel('New note').fill('Buy oat milk and coffee beans');
    await page.getByRole('button', { name: 'Save note' }).click();
    await page.locator('#notes', { hasText: 'Buy oat milk and coffee beans' }).waitFor();
    await page.getByRole('button', { name: 'Save all notes as a file' }).click();
    // Kubo's default CID for an added file: CIDv0.
    assert.match(await page.locator('#cid').innerText(), /^Qm[1-9A-HJ-NP-Za-km-z]{44}$/);
    await page.goto(notesUrl);
    await page.getByLabel('Question').fill('What should I buy?');
    await page.getByRole('button', { name: 'Ask' }).click();
    await page.locator('#answer:not([aria-busy])').filter({ hasText: /\S/ }).waitFor();
    await snapshot('notes-app');
  });

  await step('streamed chat with her own AI', async () => {
    await superApp('chat');
    // Record every length the answer had while it was being written: a streamed answer is
    // visible in several stages before it is complete.
    await page.evaluate(() => {
      window.seenLengths = new Set();
      new MutationObserver(() => {
        const answer = document.querySelector('.messages .assistant[aria-busy]');
        if (answer && answer.textContent.length) window.seenLengths.add(answer.textContent.length);
      }).observe(document.getElementById('messages'), { subtree: true, childList: true, characterData: true });
    });
    await page.getByLabel('Message').fill('Count from one to ten in words.');
    await page.getByRole('button', { name: 'Send' }).click();
    await page.locator('.messages .assistant').first().waitFor();
    await page.locator('.messages .assistant:not([aria-busy])').filter({ hasText: /\S/ }).waitFor();
    const stages = await page.evaluate(() => window.seenLengths.size);
    assert.ok(stages >= 2, `the answer appeared in ${stages} stage(s), not streamed`);
    await page.locator('.conversations button').first().waitFor();
    await snapshot('chat');
  });

  await step('files uploaded with progress, listed and downloaded', async () => {
    await superApp('files');
    const big = Buffer.alloc(3 << 20, 7);
    await page.setInputFiles('#file-input', [
      { name: 'hello.txt', mimeType: 'text/plain', buffer: Buffer.from('hello from the browser\n') },
      { name: 'big.bin', mimeType: 'application/octet-stream', buffer: big },
    ]);
    await page.getByRole('button', { name: 'Upload', exact: true }).click();
    await page.locator('#uploads li', { hasText: 'big.bin' }).filter({ hasText: 'done' }).waitFor();
    assert.deepEqual(await page.locator('#uploads progress').evaluateAll((bars) => bars.map((b) => b.value)), [100, 100]);
    const row = page.locator('tbody tr', { hasText: 'hello.txt' });
    await row.waitFor();
    await page.locator('tbody tr', { hasText: 'big.bin' }).waitFor();
    await snapshot('files');
    const [download] = await Promise.all([page.waitForEvent('download'), row.getByRole('link', { name: 'Download' }).click()]);
    assert.equal(readFileSync(await download.path(), 'utf8'), 'hello from the browser\n');
    await row.getByRole('button', { name: 'Publish' }).click();
    await row.getByRole('button', { name: 'Published' }).waitFor();
  });

  await step('revoke notes in Connected apps; the app is refused at once', async () => {
    await superApp('apps');
    const card = page.getByRole('region', { name: 'notes' });
    const text = await card.innerText();
    for (const s of ['ai:chat', 'storage:read', 'storage:write', 'files:write']) assert.ok(text.includes(s), `the grant shows ${s}`);
    await snapshot('connected-apps');
    await card.getByRole('button', { name: 'Revoke notes' }).click();
    await card.getByRole('button', { name: 'Yes, revoke access' }).click();
    await card.waitFor({ state: 'detached' });
    await page.goto(notesUrl);
    await page.getByText('access was revoked').waitFor();
    await snapshot('notes-after-revoke');
    // Connecting again shows the consent screen; denying sends the user back with an error.
    await page.getByRole('link', { name: 'Connect your selfcloud' }).click();
    await page.getByRole('button', { name: 'Deny' }).click();
    await page.waitForURL(`${notesUrl}/callback?**`);
    await page.getByText('access_denied').waitFor();
  });

  await step('the access log shows the app\'s calls and the refusal', async () => {
    await superApp('log');
    const log = page.locator('#audit');
    await log.locator('tr').first().waitFor();
    const text = await log.innerText();
    for (const call of ['PUT /v1/storage/notes/', 'GET /v1/storage', 'POST /v1/files', 'POST /v1/ai/chat', 'DELETE /v1/grants/']) {
      assert.ok(text.includes(call), `the access log shows ${call}`);
    }
    assert.ok(/notes\s+GET \/v1\/storage\S*\s+denied · UNAUTHENTICATED/.test(text), `the call after revocation is logged as refused:\n${text}`);
    await snapshot('access-log');
    // Only the app's calls, when asked for.
    await page.getByLabel('Who').selectOption({ label: 'notes' });
    const shown = await log.locator('tr:visible td:nth-child(2)').allInnerTexts();
    assert.ok(shown.length > 5 && shown.every((who) => who === 'notes'), `only notes' calls are shown: ${shown}`);
  });

  await step('export, sign out, sign in, delete the account', async () => {
    await superApp('account');
    const [download] = await Promise.all([page.waitForEvent('download'), page.getByRole('link', { name: 'Download my data' }).click()]);
    const exported = JSON.parse(readFileSync(await download.path(), 'utf8'));
    assert.equal(exported.username, ALICE.username);
    assert.ok(JSON.stringify(exported.storage).includes('Buy oat milk and coffee beans'), 'the export holds the note the app stored');
    await page.getByRole('button', { name: 'Sign out' }).click();
    await page.getByRole('heading', { name: 'Sign in to selfcloud' }).waitFor();
    await page.getByLabel('Username').fill(ALICE.username);
    await page.getByLabel('Password').fill(ALICE.password);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByRole('heading', { name: 'Dashboard' }).waitFor();
    await superApp('account');
    await page.getByLabel(/To delete your account/).fill(ALICE.username);
    await page.getByRole('button', { name: 'Delete my account and all its data' }).click();
    await page.getByText('Your account was deleted').waitFor();
    await snapshot('deleted');
    const again = await fetch(`${BASE}/v1/sessions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(ALICE) });
    assert.equal(again.status, 401, 'the deleted account can no longer sign in');
  });

  assert.deepEqual(problems, [], 'no script errors on any page');
});
