// examples/notes — a small third-party web app on @selfcloud/sdk. It asks the user for consent,
// keeps notes in the user's instance (storage), saves a copy as a file (IPFS) and asks the user's
// own AI about them, streamed to the page. It holds nothing of the user's itself: tokens live in
// this process's memory only, notes live in the user's instance.
//
//   SELFCLOUD_URL=http://127.0.0.1:8080 NOTES_APP_ID=… NOTES_APP_SECRET=… node server.mjs
//
// Environment: SELFCLOUD_URL (default http://127.0.0.1:8080), NOTES_LISTEN (default
// 127.0.0.1:9999), NOTES_PUBLIC_URL (default http://127.0.0.1:9999; the redirect URI registered
// for the app is this plus /callback), NOTES_APP_ID and NOTES_APP_SECRET (from POST /v1/apps).

import { createServer } from 'node:http';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { SELF, SelfError } from '@selfcloud/sdk';

export const SCOPES = ['ai:chat', 'storage:read', 'storage:write', 'files:write'];
const BODY_BYTES_MAX = 64 << 10;
const CLIENT_JS = readFileSync(new URL('./public/notes.js', import.meta.url));

/** Starts the app; resolves to the listening `http.Server`. */
export function start({ selfcloudUrl, appId, appSecret, listen, publicUrl }) {
  const app = new SELF.App({ appId, appSecret, baseUrl: selfcloudUrl });
  const redirectUrl = `${publicUrl}/callback`;
  /** This app's own sign-in: a random cookie → the user's selfcloud session. */
  const sessions = new Map();

  const server = createServer(async (req, res) => {
    const url = new URL(req.url, publicUrl);
    const sid = cookie(req, 'notes_sid');
    const session = sid ? sessions.get(sid) : undefined;
    try {
      if (req.method === 'GET' && url.pathname === '/notes.js') return send(res, 200, 'text/javascript; charset=utf-8', CLIENT_JS);
      if (req.method === 'GET' && url.pathname === '/') return send(res, 200, HTML, session ? await notesPage(session) : connectPage());
      if (req.method === 'GET' && url.pathname === '/connect') {
        return redirect(res, await app.createConnectionUrl({ permissions: SCOPES, redirectUrl }));
      }
      if (req.method === 'GET' && url.pathname === '/callback') {
        const connected = await app.handleCallback(url.href);
        const id = randomBytes(24).toString('base64url');
        sessions.set(id, connected);
        return redirect(res, '/', `notes_sid=${id}; Path=/; HttpOnly; SameSite=Lax`);
      }
      if (!session) return send(res, 401, HTML, connectPage('Connect your selfcloud first.'));
      if (req.method === 'POST' && url.pathname === '/notes') {
        const text = new URLSearchParams(await body(req)).get('text')?.trim();
        if (!text) return send(res, 400, HTML, page('Empty note', '<p>A note needs some text. <a href="/">Back</a></p>'));
        const id = `${Date.now().toString(36)}-${randomBytes(4).toString('hex')}`;
        await session.storage.set({ key: `notes/${id}`, value: { text, created: Date.now() } });
        return redirect(res, '/');
      }
      if (req.method === 'POST' && url.pathname === '/notes/delete') {
        const id = new URLSearchParams(await body(req)).get('id') || '';
        if (!/^[a-z0-9-]{1,64}$/.test(id)) return send(res, 400, HTML, page('Bad note', '<p>No such note. <a href="/">Back</a></p>'));
        await session.storage.delete(`notes/${id}`);
        return redirect(res, '/');
      }
      if (req.method === 'POST' && url.pathname === '/notes/file') {
        const notes = await readNotes(session);
        const text = notes.map((n) => `- ${n.text}`).join('\n');
        const added = await session.files.add(text, { name: 'notes.md' });
        return send(res, 200, HTML, page('Saved as a file', `<p>Your notes are in your IPFS node as <code id="cid">${esc(added.cid)}</code> (${added.size} bytes).</p><p><a href="/">Back</a></p>`));
      }
      if (req.method === 'POST' && url.pathname === '/ask') return await ask(session, await body(req), res);
      if (req.method === 'POST' && url.pathname === '/disconnect') {
        sessions.delete(sid);
        return redirect(res, '/', 'notes_sid=; Path=/; Max-Age=0');
      }
      return send(res, 404, HTML, page('Not found', '<p>No such page. <a href="/">Home</a></p>'));
    } catch (e) {
      if (e instanceof SelfError && e.code === 'UNAUTHENTICATED' && sid) {
        // The user revoked this app in their Super-App: forget the tokens, offer to reconnect.
        sessions.delete(sid);
        return send(res, 401, HTML, connectPage('Your selfcloud no longer lets this app in (access was revoked). Connect again to continue.'));
      }
      const code = e instanceof SelfError ? e.code : 'INTERNAL';
      if (!(e instanceof SelfError)) console.error(e);
      // A refusal the user or the app caused is the app's 4xx; selfcloud failing is a 502.
      const status = !(e instanceof SelfError) ? 500 : e.status === 0 ? 400 : e.status < 500 ? e.status : 502;
      return send(res, status, HTML,
        page('Something went wrong', `<p class="error" role="alert">${esc(e.message)} <code>${esc(code)}</code></p><p><a href="/">Back</a></p>`));
    }
  });
  const [host, port] = splitHostPort(listen);
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve(server));
  });
}

async function readNotes(session) {
  const { keys } = await session.storage.list({ prefix: 'notes/', limit: 100 });
  const values = await Promise.all(keys.map((k) => session.storage.get(k)));
  return keys.map((k, i) => ({ id: k.slice('notes/'.length), ...(values[i] || {}) })).filter((n) => typeof n.text === 'string');
}

/** `POST /ask`: the user's AI answers about the notes; its deltas are relayed as they come. */
async function ask(session, raw, res) {
  const question = new URLSearchParams(raw).get('question')?.trim();
  if (!question) return send(res, 400, 'text/plain; charset=utf-8', 'Ask a question.');
  const notes = await readNotes(session);
  const context = notes.length ? `The user's notes:\n${notes.map((n) => `- ${n.text}`).join('\n')}` : 'The user has no notes yet.';
  const stream = session.ai.chatStream({ message: question, context, max_tokens: 96 });
  // The first event decides the status (a refusal is still an HTTP error), then text flows.
  const first = await stream.next();
  res.writeHead(200, { 'content-type': 'text/plain; charset=utf-8', 'cache-control': 'no-store', 'x-content-type-options': 'nosniff' });
  try {
    for (let ev = first; !ev.done; ev = await stream.next()) {
      if (ev.value.type === 'delta') res.write(ev.value.delta);
    }
  } catch (e) {
    // Headers are gone already: say so in the text rather than cut it silently.
    res.write(`\n[the answer stopped: ${e.code || 'INTERNAL'}]`);
  }
  res.end();
}

function connectPage(message) {
  return page('Notes', `${message ? `<p class="error" role="alert">${esc(message)}</p>` : ''}
<p>Notes keeps your notes in <strong>your own selfcloud</strong> and lets your private AI answer questions about them.
It asks to: ${SCOPES.map((s) => `<code>${s}</code>`).join(', ')}.</p>
<p><a class="button" id="connect" href="/connect">Connect your selfcloud</a></p>`);
}

async function notesPage(session) {
  const notes = await readNotes(session);
  const items = notes.map((n) => `<li><span class="text">${esc(n.text)}</span>
<form method="post" action="/notes/delete"><input type="hidden" name="id" value="${esc(n.id)}"><button aria-label="Delete note: ${esc(n.text)}">Delete</button></form></li>`).join('');
  return page('Notes', `<p>Connected to <code>${esc(session.instanceUrl)}</code>.</p>
<form method="post" action="/notes"><label for="text">New note</label><textarea id="text" name="text" required maxlength="4000"></textarea><button>Save note</button></form>
<h2>Your notes</h2><ul id="notes">${items || '<li class="muted">No notes yet.</li>'}</ul>
<form method="post" action="/notes/file"><button>Save all notes as a file</button></form>
<h2>Ask your AI</h2>
<form id="ask" method="post" action="/ask"><label for="question">Question</label><input id="question" name="question" required maxlength="2000"><button>Ask</button></form>
<p id="answer" aria-live="polite"></p>
<form method="post" action="/disconnect"><button>Disconnect</button></form>`);
}

const HTML = 'text/html; charset=utf-8';

function page(title, body) {
  return `<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>${esc(title)}</title><style>body{font:16px/1.5 system-ui,sans-serif;max-width:38rem;margin:2rem auto;padding:0 1rem}
textarea,input{display:block;width:100%;box-sizing:border-box;font:inherit;margin:.3rem 0}li{margin:.4rem 0}li form{display:inline}
.error{color:#b3261e}.muted{color:#666}.button{display:inline-block;padding:.5rem 1rem;background:#0a6e4f;color:#fff;border-radius:.4rem;text-decoration:none}
#answer{white-space:pre-wrap;border-left:3px solid #0a6e4f;padding-left:.7rem;min-height:1.5rem}</style>
<script type="module" src="/notes.js"></script></head><body><main><h1>${esc(title)}</h1>${body}</main></body></html>`;
}

function send(res, status, type, text) {
  res.writeHead(status, {
    'content-type': type,
    'cache-control': 'no-store',
    'content-security-policy': "default-src 'none'; script-src 'self'; style-src 'unsafe-inline'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'",
  });
  res.end(text);
}

function redirect(res, location, setCookie) {
  const headers = { location, 'cache-control': 'no-store' };
  if (setCookie) headers['set-cookie'] = setCookie;
  res.writeHead(303, headers);
  res.end();
}

function cookie(req, name) {
  for (const part of (req.headers.cookie || '').split(';')) {
    const [k, v] = part.trim().split('=');
    if (k === name) return v;
  }
  return null;
}

function body(req) {
  return new Promise((resolve, reject) => {
    let size = 0;
    const chunks = [];
    req.on('data', (c) => {
      size += c.length;
      if (size > BODY_BYTES_MAX) { reject(new SelfError('PAYLOAD_TOO_LARGE', 'that is too much text', { status: 413 })); req.destroy(); return; }
      chunks.push(c);
    });
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

function esc(text) {
  return String(text).replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]);
}

function splitHostPort(listen) {
  const i = listen.lastIndexOf(':');
  return [listen.slice(0, i), Number(listen.slice(i + 1))];
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const appId = process.env.NOTES_APP_ID;
  if (!appId) {
    console.error('notes: set NOTES_APP_ID (and NOTES_APP_SECRET) to an app registered with POST /v1/apps; see README.md');
    process.exit(2);
  }
  const listen = process.env.NOTES_LISTEN || '127.0.0.1:9999';
  const publicUrl = (process.env.NOTES_PUBLIC_URL || `http://${listen}`).replace(/\/+$/, '');
  await start({ selfcloudUrl: process.env.SELFCLOUD_URL || 'http://127.0.0.1:8080', appId, appSecret: process.env.NOTES_APP_SECRET || null, listen, publicUrl });
  console.log(`notes: listening on ${publicUrl} (redirect URI ${publicUrl}/callback)`);
}
