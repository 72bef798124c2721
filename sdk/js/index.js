// @selfcloud/sdk — apps reach a user's selfcloud instance only with the user's consent:
// App → SDK → user authorization (OAuth 2.1, PKCE S256, state) → instance API → scoped access.
// No dependencies: fetch, WebCrypto and TextEncoder, as in browsers and Node.js 20+.

const REFRESH_MARGIN_S = 30;

/** An error from selfcloud, with SPEC §4's stable `code` (`PERMISSION_DENIED`, `RATE_LIMITED`, …). */
export class SelfError extends Error {
  constructor(code, message, { status = 0, requestId = null, retryAfter = null } = {}) {
    super(message);
    this.name = 'SelfError';
    this.code = code;
    this.status = status;
    this.requestId = requestId;
    this.retryAfter = retryAfter;
  }
}

async function errorFrom(response) {
  const text = await response.text();
  let body = null;
  try { body = JSON.parse(text); } catch { /* not JSON */ }
  const retry = response.headers.get('retry-after');
  const retryAfter = retry === null ? null : Number(retry);
  if (body && typeof body.error === 'object' && body.error) {
    return new SelfError(body.error.code || 'INTERNAL', body.error.message || '', { status: response.status, requestId: body.error.request_id || null, retryAfter });
  }
  if (body && typeof body.error === 'string') {
    // OAuth endpoints answer in RFC 6749's shape.
    return new SelfError(body.error, body.error_description || body.error, { status: response.status, retryAfter });
  }
  return new SelfError(`HTTP_${response.status}`, text.slice(0, 300), { status: response.status, retryAfter });
}

function base64url(bytes) {
  let s = '';
  for (const b of bytes) s += String.fromCharCode(b);
  return btoa(s).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

function base64(bytes) {
  let s = '';
  for (const b of bytes) s += String.fromCharCode(b);
  return btoa(s);
}

function fromBase64(text) {
  const s = atob(text);
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
  return out;
}

function randomToken(n) {
  return base64url(crypto.getRandomValues(new Uint8Array(n)));
}

function toBytes(data) {
  if (typeof data === 'string') return new TextEncoder().encode(data);
  if (data instanceof Uint8Array) return data;
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  throw new SelfError('INVALID_ARGUMENT', 'data must be a string, Uint8Array or ArrayBuffer');
}

/** Path segments keep `/`; everything else that is not unreserved is escaped. `.` and `..`
 * segments are refused here: URLs resolve them (even escaped), so they would reach another route,
 * and the instance refuses such keys anyway. */
function keyPath(key) {
  const segments = String(key).split('/');
  if (segments.some((seg) => seg === '.' || seg === '..')) throw new SelfError('INVALID_ARGUMENT', 'a key must not have "." or ".." segments', { status: 400 });
  return segments.map(encodeURIComponent).join('/');
}

function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null) q.set(k, String(v));
  const s = q.toString();
  return s ? `?${s}` : '';
}

const pendingStore = new Map();

function savePending(state, value) {
  pendingStore.set(state, value);
  try { globalThis.sessionStorage?.setItem(`selfcloud:${state}`, JSON.stringify(value)); } catch { /* no storage */ }
}

function takePending(state) {
  let value = pendingStore.get(state);
  pendingStore.delete(state);
  try {
    const stored = globalThis.sessionStorage?.getItem(`selfcloud:${state}`);
    if (!value && stored) value = JSON.parse(stored);
    globalThis.sessionStorage?.removeItem(`selfcloud:${state}`);
  } catch { /* no storage */ }
  return value;
}

/** An app registered with a selfcloud gateway. */
export class App {
  constructor({ appId, appSecret = null, baseUrl, developerToken = null }) {
    if (!appId || !baseUrl) throw new SelfError('INVALID_ARGUMENT', 'appId and baseUrl are required');
    this.appId = appId;
    this.appSecret = appSecret;
    this.baseUrl = baseUrl.replace(/\/+$/, '');
    this.developerToken = developerToken;
  }

  /** The consent URL asking for `permissions`; the state and PKCE verifier are kept for `handleCallback`. */
  async createConnectionUrl({ permissions, redirectUrl }) {
    if (!Array.isArray(permissions) || permissions.length === 0) throw new SelfError('INVALID_ARGUMENT', 'permissions must be a non-empty array of scopes');
    if (!redirectUrl) throw new SelfError('INVALID_ARGUMENT', 'redirectUrl is required');
    const verifier = randomToken(32);
    const challenge = base64url(new Uint8Array(await crypto.subtle.digest('SHA-256', new TextEncoder().encode(verifier))));
    const state = randomToken(16);
    savePending(state, { verifier, redirectUrl });
    return `${this.baseUrl}/oauth/authorize${query({
      response_type: 'code', client_id: this.appId, redirect_uri: redirectUrl, scope: permissions.join(' '),
      state, code_challenge: challenge, code_challenge_method: 'S256',
    })}`;
  }

  /** Finishes a connection from the URL the browser was sent back to; resolves to a `Session`. */
  async handleCallback(url) {
    const params = new URL(url).searchParams;
    const state = params.get('state');
    const pending = state ? takePending(state) : null;
    if (!pending) throw new SelfError('STATE_MISMATCH', 'this callback does not belong to a connection this app started');
    if (params.get('error')) throw new SelfError(params.get('error'), params.get('error_description') || 'the user did not grant access');
    const code = params.get('code');
    if (!code) throw new SelfError('INVALID_ARGUMENT', 'the callback has neither a code nor an error');
    const tokens = await this._token({ grant_type: 'authorization_code', code, redirect_uri: pending.redirectUrl, code_verifier: pending.verifier });
    return new Session(this, tokens);
  }

  /** A session from tokens saved earlier (`session.tokens`). */
  resume(tokens) {
    return new Session(this, { ...tokens });
  }

  /**
   * A test user of any tier for this app (local/dev): `{username, password, tier, instance: {id, url, status}, test_user_of}`.
   * `username` picks its name (a taken one fails with ALREADY_EXISTS); by default a fresh `test-…` name.
   */
  async createTestUser({ tier = 'free', username, developerToken = this.developerToken } = {}) {
    if (!developerToken) throw new SelfError('INVALID_ARGUMENT', "createTestUser needs the developer's owner token (developerToken)");
    const response = await fetch(`${this.baseUrl}/v1/apps/${encodeURIComponent(this.appId)}/test-users`, {
      method: 'POST', headers: { authorization: `Bearer ${developerToken}`, 'content-type': 'application/json' }, body: JSON.stringify(username === undefined ? { tier } : { tier, username }),
    });
    if (!response.ok) throw await errorFrom(response);
    return response.json();
  }

  async _token(form) {
    const headers = { 'content-type': 'application/x-www-form-urlencoded' };
    const body = new URLSearchParams(form);
    if (this.appSecret) headers.authorization = `Basic ${btoa(`${this.appId}:${this.appSecret}`)}`;
    else body.set('client_id', this.appId);
    const response = await fetch(`${this.baseUrl}/oauth/token`, { method: 'POST', headers, body });
    if (!response.ok) throw await errorFrom(response);
    const t = await response.json();
    return {
      accessToken: t.access_token, refreshToken: t.refresh_token, scope: t.scope, instanceUrl: t.instance_url,
      expiresAt: Math.floor(Date.now() / 1000) + (t.expires_in || 0),
    };
  }
}

/** An app's access to one user's instance. */
export class Session {
  constructor(app, tokens) {
    this.app = app;
    this.tokens = tokens;
    this._refreshing = null;
    this.ai = new Ai(this);
    this.storage = new Storage(this);
    this.files = new Files(this);
    this.db = new Db(this);
    this.blockchain = new Blockchain(this);
    this.crypto = new Crypto(this);
    this.network = new Network(this);
  }

  get instanceUrl() { return this.tokens.instanceUrl; }

  /** Whether the user granted `scope`. */
  hasPermission(scope) { return this.tokens.scope.split(' ').includes(scope); }

  /** A consent URL asking for `more` scopes besides those granted (the user sees only the new ones). */
  requestPermissions(more, { redirectUrl }) {
    const scopes = new Set(this.tokens.scope.split(' ').filter(Boolean));
    for (const s of more) scopes.add(s);
    return this.app.createConnectionUrl({ permissions: [...scopes], redirectUrl });
  }

  /** Refreshes the tokens now (calls do this by themselves); one refresh at a time, as they rotate. */
  refresh() {
    if (!this._refreshing) {
      this._refreshing = this.app._token({ grant_type: 'refresh_token', refresh_token: this.tokens.refreshToken })
        .then((t) => { this.tokens = t; })
        .finally(() => { this._refreshing = null; });
    }
    return this._refreshing;
  }

  async _fetch(method, path, { json, body, contentType } = {}) {
    if (this.tokens.expiresAt <= Math.floor(Date.now() / 1000) + REFRESH_MARGIN_S) await this.refresh();
    for (let attempt = 0; ; attempt++) {
      const headers = { authorization: `Bearer ${this.tokens.accessToken}` };
      let payload = body;
      if (json !== undefined) { headers['content-type'] = 'application/json'; payload = JSON.stringify(json); }
      else if (contentType) headers['content-type'] = contentType;
      const response = await fetch(`${this.tokens.instanceUrl}${path}`, { method, headers, body: payload });
      if (response.ok) return response;
      if (response.status === 401 && attempt === 0) {
        // An access token that expired early: refresh once and retry; a refused refresh (revoked
        // grant) leaves this refusal as the answer.
        const error = await errorFrom(response);
        try { await this.refresh(); } catch { throw error; }
        continue;
      }
      throw await errorFrom(response);
    }
  }

  async _json(method, path, options) {
    return (await this._fetch(method, path, options)).json();
  }
}

async function orNull(promise) {
  try { return await promise; } catch (e) { if (e instanceof SelfError && e.code === 'NOT_FOUND') return null; throw e; }
}

class Ai {
  constructor(s) { this.s = s; }
  /** `{conversation, message: {role, content}, finish_reason, usage, sources}`. */
  chat({ message, context, conversation, ...options }) {
    return this.s._json('POST', '/v1/ai/chat', { json: { message, context, conversation, ...options, stream: false } });
  }
  /** An async iterator of `{type: 'start'|'delta'|'done', …}` events; leaving the loop cancels the generation. */
  async *chatStream({ message, context, conversation, ...options }) {
    const response = await this.s._fetch('POST', '/v1/ai/chat', { json: { message, context, conversation, ...options, stream: true } });
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = '';
    try {
      for (;;) {
        let end;
        while ((end = buffer.indexOf('\n\n')) >= 0) {
          const event = buffer.slice(0, end).trim();
          buffer = buffer.slice(end + 2);
          if (!event.startsWith('data: ')) continue;
          const data = event.slice(6);
          if (data === '[DONE]') return;
          const parsed = JSON.parse(data);
          if (parsed.type === 'error') throw new SelfError(parsed.error?.code || 'INTERNAL', parsed.error?.message || 'the AI failed');
          yield parsed;
        }
        const { value, done } = await reader.read();
        if (done) return;
        buffer += decoder.decode(value, { stream: true });
      }
    } finally {
      reader.cancel().catch(() => {});
    }
  }
}

class Storage {
  constructor(s) { this.s = s; }
  /** Values are always sealed at rest under the user's key; `encrypted` is accepted for compatibility. */
  async set({ key, value }) { await this.s._json('PUT', `/v1/storage/${keyPath(key)}`, { json: { value } }); }
  async get(key) { const r = await orNull(this.s._json('GET', `/v1/storage/${keyPath(key)}`)); return r === null ? null : r.value; }
  list({ prefix, limit, cursor } = {}) { return this.s._json('GET', `/v1/storage${query({ prefix, limit, cursor })}`); }
  async delete(key) { return (await orNull(this.s._json('DELETE', `/v1/storage/${keyPath(key)}`))) !== null; }
}

class Files {
  constructor(s) { this.s = s; }
  /** Adds a file (string, Uint8Array, ArrayBuffer or Blob): `{cid, size}`. */
  add(data, { name } = {}) {
    const body = (typeof Blob !== 'undefined' && data instanceof Blob) ? data : toBytes(data);
    return this.s._json('POST', `/v1/files${query({ name })}`, { body, contentType: 'application/octet-stream' });
  }
  async cat(cid) { return new Uint8Array(await (await this.s._fetch('GET', `/v1/files/${encodeURIComponent(cid)}`)).arrayBuffer()); }
  async list() { return (await this.s._json('GET', '/v1/files')).files; }
  async remove(cid) { await this.s._json('DELETE', `/v1/files/${encodeURIComponent(cid)}`); }
  publish(cid) { return this.s._json('POST', `/v1/files/${encodeURIComponent(cid)}/publish`); }
}

class Database {
  constructor(s, address, type) { this.s = s; this.address = address; this.type = type; this.cid = address.replace(/^\/orbitdb\//, ''); }
  async put(key, value) { return (await this.s._json('PUT', `/v1/db/${this.cid}/kv/${keyPath(key)}`, { json: { value } })).hash; }
  async get(key) { const r = await orNull(this.s._json('GET', `/v1/db/${this.cid}/kv/${keyPath(key)}`)); return r === null ? null : r.value; }
  async del(key) { return (await orNull(this.s._json('DELETE', `/v1/db/${this.cid}/kv/${keyPath(key)}`))) !== null; }
  async all() { return (await this.s._json('GET', `/v1/db/${this.cid}/kv`)).items; }
  async add(value) { return (await this.s._json('POST', `/v1/db/${this.cid}/events`, { json: { value } })).hash; }
  async iterator({ amount = 100, gt, gte, lt, lte } = {}) { return (await this.s._json('GET', `/v1/db/${this.cid}/events${query({ amount, gt, gte, lt, lte })}`)).items; }
  putDoc(doc) { return this.s._json('PUT', `/v1/db/${this.cid}/docs`, { json: doc }); }
  getDoc(id) { return orNull(this.s._json('GET', `/v1/db/${this.cid}/docs/${encodeURIComponent(id)}`)); }
  async delDoc(id) { return (await orNull(this.s._json('DELETE', `/v1/db/${this.cid}/docs/${encodeURIComponent(id)}`))) !== null; }
  async query(where) { return (await this.s._json('POST', `/v1/db/${this.cid}/docs/query`, { json: { where } })).items; }
}

class Db {
  constructor(s) { this.s = s; }
  async open({ name, type }) { const r = await this.s._json('POST', '/v1/db', { json: { name, type } }); return new Database(this.s, r.address, r.type); }
  async list() { return (await this.s._json('GET', '/v1/db')).databases; }
}

class Blockchain {
  constructor(s) { this.s = s; }
  getInfo() { return this.s._json('GET', '/v1/chain/info'); }
  getTransactions({ limit = 20, offset = 0 } = {}) { return this.s._json('GET', `/v1/chain/transactions${query({ limit, offset })}`); }
  /** `amount` in base units, as a decimal string; resolves once final. */
  transfer({ to, amount }) { return this.s._json('POST', '/v1/chain/transactions', { json: { to, amount: String(amount) } }); }
}

class Crypto {
  constructor(s) { this.s = s; }
  /** Seals `data` to the user at `recipient` (a `self1…` address); resolves to the ciphertext (base64). */
  async encrypt({ data, recipient }) { return (await this.s._json('POST', '/v1/crypto/encrypt', { json: { data: base64(toBytes(data)), encoding: 'base64', recipient } })).ciphertext; }
  /** Opens a sealed box addressed to this user: `Uint8Array`. */
  async decrypt({ ciphertext }) { return fromBase64((await this.s._json('POST', '/v1/crypto/decrypt', { json: { ciphertext } })).data); }
  /** `{signature, public_key, sign_prefix}`. */
  sign({ data }) { return this.s._json('POST', '/v1/crypto/sign', { json: { data: base64(toBytes(data)), encoding: 'base64' } }); }
  async verify({ data, signature, publicKey }) { return (await this.s._json('POST', '/v1/crypto/verify', { json: { data: base64(toBytes(data)), encoding: 'base64', signature, public_key: publicKey } })).valid; }
}

class Network {
  constructor(s) { this.s = s; }
  notify({ recipient, type, payload }) { return this.s._json('POST', '/v1/network/notify', { json: { recipient, type, payload } }); }
}

/** `SELF.App`, `SELF.Session`, `SELF.SelfError`. */
export const SELF = { App, Session, SelfError };
export default SELF;
