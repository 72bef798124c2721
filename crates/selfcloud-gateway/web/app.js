// The Super-App: one ES module, no framework. Views are built with `h()` from DOM nodes and text
// nodes only (never innerHTML), so nothing a user or an app stored can become markup. It signs in
// with the gateway's HttpOnly session cookie and calls the same JSON API any client does.

const main = document.getElementById('main');
const nav = document.getElementById('nav');
const who = document.getElementById('who');
const toast = document.getElementById('toast');

/** The signed-in user's `/v1/instances/me`, or null. */
let me = null;

// ---------------------------------------------------------------------------------------------
// DOM and formatting helpers

function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else if (k in el && typeof v !== 'string') el[k] = v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  el.append(...children.flat(Infinity).filter((c) => c !== null && c !== undefined && c !== false));
  return el;
}

function say(text) {
  toast.textContent = text;
  clearTimeout(say.timer);
  say.timer = setTimeout(() => { toast.textContent = ''; }, 4000);
}

function bytes(n) {
  if (n === null || n === undefined) return '—';
  // Decimal units, as the plans are sold (10 GB).
  const units = ['B', 'kB', 'MB', 'GB', 'TB'];
  let i = 0;
  let v = Number(n);
  while (v >= 1000 && i < units.length - 1) { v /= 1000; i += 1; }
  return `${i === 0 ? v : v.toFixed(1)} ${units[i]}`;
}

/** Base units (a decimal string, 18 decimals) as SELF. */
function self(units) {
  try {
    const v = BigInt(units);
    const one = 10n ** 18n;
    const frac = (v % one).toString().padStart(18, '0').slice(0, 4).replace(/0+$/, '');
    return `${v / one}${frac ? `.${frac}` : ''} SELF`;
  } catch { return '—'; }
}

function when(ms) {
  return new Date(ms).toLocaleString();
}

// ---------------------------------------------------------------------------------------------
// The API

class ApiError extends Error {
  constructor(code, message, status) { super(message); this.code = code; this.status = status; }
}

async function errorOf(response) {
  try {
    const e = (await response.json()).error;
    return new ApiError(e.code, e.message, response.status);
  } catch {
    return new ApiError('INTERNAL', `the server answered ${response.status}`, response.status);
  }
}

async function api(method, path, { json } = {}) {
  const init = { method, headers: {}, credentials: 'same-origin' };
  if (json !== undefined) { init.headers['content-type'] = 'application/json'; init.body = JSON.stringify(json); }
  const response = await fetch(path, init);
  if (!response.ok) {
    const e = await errorOf(response);
    if (e.status === 401 && me) { me = null; showSignedOut('Your session ended; sign in again.'); }
    throw e;
  }
  return response.json();
}

/** A path on the signed-in user's instance. */
const inst = (path) => `/i/${me.username}${path}`;

function errorText(e) {
  return e instanceof ApiError ? `${e.message} (${e.code})` : String(e.message || e);
}

function alertBox() { return h('p', { class: 'error', role: 'alert' }); }

/** Runs `work` with `button` disabled and shows a failure in `box`. */
async function busy(button, box, work) {
  button.disabled = true;
  if (box) box.textContent = '';
  try { await work(); } catch (e) { if (box) box.textContent = errorText(e); else say(errorText(e)); } finally { button.disabled = false; }
}

// ---------------------------------------------------------------------------------------------
// Signed out: sign in and sign up

/** After signing in, continue where an OAuth consent flow left off (a local path only). */
function continueTo() {
  const target = new URLSearchParams(location.search).get('return_to');
  return target && target.startsWith('/') && !target.startsWith('//') && !target.includes('\\') ? target : null;
}

async function startSession(username, password) {
  await api('POST', '/v1/sessions', { json: { username, password } });
  const target = continueTo();
  if (target) { location.assign(target); return; }
  history.replaceState(null, '', '/#dashboard');
  await boot();
}

function showSignedOut(message) {
  nav.hidden = true;
  who.textContent = '';
  const signup = location.hash === '#signup';
  document.title = `${signup ? 'Create an account' : 'Sign in'} · selfcloud`;
  const box = alertBox();
  if (message) box.textContent = message;
  const username = h('input', { type: 'text', name: 'username', autocomplete: 'username', required: true, pattern: '[a-z][a-z0-9\\-]{2,31}', 'aria-describedby': 'username-help' });
  const password = h('input', { type: 'password', name: 'password', autocomplete: signup ? 'new-password' : 'current-password', required: true, minlength: signup ? 8 : null });
  const tier = h('select', { name: 'tier' }, h('option', { value: 'free' }, 'Free — 10 GB, 100 requests/min'), h('option', { value: 'growth' }, 'Growth — 50 GB, 500 requests/min'), h('option', { value: 'pro' }, 'Pro — 200 GB, 2,000 requests/min'));
  const submit = h('button', { class: 'primary', type: 'submit' }, signup ? 'Create account' : 'Sign in');
  const form = h('form', {
    onsubmit: (ev) => {
      ev.preventDefault();
      busy(submit, box, async () => {
        if (signup) {
          submit.textContent = 'Creating your instance…';
          try { await api('POST', '/v1/accounts', { json: { username: username.value, password: password.value, tier: tier.value } }); } finally { submit.textContent = 'Create account'; }
        }
        await startSession(username.value, password.value);
      });
    },
  },
  h('label', {}, 'Username', username),
  signup ? h('p', { id: 'username-help', class: 'muted' }, '3–32 characters: lowercase letters, digits and dashes, starting with a letter.') : null,
  h('label', {}, 'Password', password),
  signup ? h('label', {}, 'Plan', tier) : null,
  box, submit);
  main.replaceChildren(h('section', { class: 'narrow card' },
    h('h1', {}, signup ? 'Create your selfcloud' : 'Sign in to selfcloud'),
    h('p', { class: 'muted' }, signup ? 'You get your own private instance: an AI that keeps your words, files, a database and a chain account. Apps reach it only with your consent.' : 'Your private cloud: one instance per person, reachable only with your consent.'),
    form,
    signup ? h('p', {}, 'Already have an account? ', h('a', { href: `${location.search}#signin` }, 'Sign in'), '.')
      : h('p', {}, 'No account yet? ', h('a', { href: `${location.search}#signup` }, 'Create one'), '.')));
  username.focus();
}

// ---------------------------------------------------------------------------------------------
// Views of the signed-in user

const views = {
  dashboard: ['Dashboard', dashboard],
  chat: ['Chat', chat],
  files: ['Files', files],
  apps: ['Connected apps', connectedApps],
  log: ['Access log', accessLog],
  account: ['Account', account],
};

async function route() {
  if (!me) { showSignedOut(); return; }
  const name = location.hash.slice(1);
  const [title, render] = views[name] || views.dashboard;
  for (const a of nav.querySelectorAll('a')) {
    if (a.getAttribute('href') === `#${name}` || (!views[name] && a.getAttribute('href') === '#dashboard')) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  document.title = `${title} · selfcloud`;
  const heading = h('h1', { tabindex: '-1' }, title);
  const body = h('div', { 'aria-busy': 'true' }, h('p', { class: 'muted' }, 'Loading…'));
  main.replaceChildren(heading, body);
  try {
    body.replaceChildren(...[await render()].flat(Infinity));
  } catch (e) {
    body.replaceChildren(h('p', { class: 'error', role: 'alert' }, errorText(e)));
  }
  body.removeAttribute('aria-busy');
  if (route.moved) heading.focus();
  route.moved = true;
}

async function optional(promise) {
  try { return await promise; } catch { return null; }
}

async function dashboard() {
  me = await api('GET', '/v1/instances/me');
  const [info, chainInfo, ai] = await Promise.all([
    optional(api('GET', inst('/v1/info'))),
    optional(api('GET', inst('/v1/chain/info'))),
    optional(api('GET', inst('/v1/ai/status'))),
  ]);
  const u = me.usage || {};
  const used = Number(u.storage_bytes || 0);
  const quota = Number(u.storage_quota_bytes || 1);
  return h('div', { class: 'grid' },
    h('section', { class: 'card', 'aria-labelledby': 'd-instance' },
      h('h2', { id: 'd-instance' }, 'Instance'),
      h('p', { class: 'stat', id: 'instance-status' }, me.instance.status),
      h('p', {}, 'Plan: ', h('strong', { id: 'tier' }, me.tier)),
      h('p', { class: 'muted' }, 'Address: ', h('code', {}, me.instance.url))),
    h('section', { class: 'card', 'aria-labelledby': 'd-storage' },
      h('h2', { id: 'd-storage' }, 'Storage'),
      h('meter', { min: 0, max: quota, value: used, high: quota * 0.9, 'aria-label': 'Storage used' }),
      h('p', { id: 'storage-usage' }, `${bytes(used)} of ${bytes(quota)} used`)),
    h('section', { class: 'card', 'aria-labelledby': 'd-limits' },
      h('h2', { id: 'd-limits' }, 'Limits'),
      h('p', {}, `${u.requests_per_minute ?? '—'} requests a minute`),
      h('p', {}, `Memory: ${u.memory_limit_bytes ? bytes(u.memory_limit_bytes) : 'no limit set'}`)),
    h('section', { class: 'card', 'aria-labelledby': 'd-chain' },
      h('h2', { id: 'd-chain' }, 'SELF Chain'),
      chainInfo ? [h('p', { class: 'stat' }, self(chainInfo.balance)), h('p', {}, h('code', {}, chainInfo.address)), h('p', { class: 'muted' }, `Block height ${chainInfo.height}`)]
        : h('p', { class: 'muted' }, 'The chain is not reachable right now.')),
    h('section', { class: 'card', 'aria-labelledby': 'd-ai' },
      h('h2', { id: 'd-ai' }, 'Private AI'),
      ai ? [h('p', {}, h('strong', {}, ai.model)), h('p', { class: 'muted' }, `Context ${ai.context_length} tokens · answers up to ${ai.max_tokens} tokens`)]
        : h('p', { class: 'muted' }, 'No model is installed on this host.')),
    h('section', { class: 'card', 'aria-labelledby': 'd-net' },
      h('h2', { id: 'd-net' }, 'Network'),
      info ? h('p', {}, 'Peer ', h('code', {}, info.peer_id)) : h('p', { class: 'muted' }, '—')));
}

// Chat -----------------------------------------------------------------------------------------

/** Reads an SSE body, calling `onEvent` with each JSON payload until `[DONE]`. */
async function readEvents(response, onEvent) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = '';
  for (;;) {
    let end;
    while ((end = buffer.indexOf('\n\n')) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const data = block.split('\n').filter((l) => l.startsWith('data: ')).map((l) => l.slice(6)).join('\n');
      if (!data) continue;
      if (data === '[DONE]') return;
      onEvent(JSON.parse(data));
    }
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
  }
}

async function chat() {
  let conversation = null;
  let controller = null;
  const list = h('ol', { class: 'messages', role: 'log', 'aria-label': 'Conversation', id: 'messages' });
  const conversations = h('ul', { class: 'conversations', 'aria-label': 'Conversations' });
  const input = h('textarea', { name: 'message', required: true, maxlength: 16000, 'aria-label': 'Message' });
  const send = h('button', { class: 'primary', type: 'submit' }, 'Send');
  const stop = h('button', { type: 'button', hidden: true, onclick: () => controller?.abort() }, 'Stop');
  const box = alertBox();

  const show = (role, content) => list.append(h('li', { class: role }, content));

  async function loadConversations() {
    const r = await optional(api('GET', inst('/v1/ai/conversations')));
    conversations.replaceChildren(...(r?.conversations || []).map((c) => h('li', {},
      h('button', { type: 'button', class: 'mono', 'aria-pressed': String(c.id === conversation), onclick: () => open(c.id) }, c.id))));
  }

  async function open(id) {
    const c = await api('GET', inst(`/v1/ai/conversations/${encodeURIComponent(id)}`));
    conversation = id;
    list.replaceChildren();
    for (const m of c.messages || []) show(m.role, m.content);
    await loadConversations();
    input.focus();
  }

  async function ask(message) {
    show('user', message);
    const answer = h('li', { class: 'assistant', 'aria-busy': 'true' });
    list.append(answer);
    list.setAttribute('aria-busy', 'true');
    controller = new AbortController();
    stop.hidden = false;
    try {
      const response = await fetch(inst('/v1/ai/chat'), {
        method: 'POST', credentials: 'same-origin', signal: controller.signal,
        headers: { 'content-type': 'application/json', accept: 'text/event-stream' },
        body: JSON.stringify({ message, conversation, stream: true }),
      });
      if (!response.ok) throw await errorOf(response);
      await readEvents(response, (ev) => {
        if (ev.type === 'start') conversation = ev.conversation;
        else if (ev.type === 'delta') answer.textContent += ev.delta;
        else if (ev.type === 'error') throw new ApiError(ev.error.code, ev.error.message, 500);
      });
    } catch (e) {
      if (e.name !== 'AbortError') { box.textContent = errorText(e); if (!answer.textContent) answer.remove(); }
    } finally {
      answer.removeAttribute('aria-busy');
      list.removeAttribute('aria-busy');
      stop.hidden = true;
      controller = null;
    }
    await loadConversations();
  }

  const form = h('form', {
    onsubmit: (ev) => {
      ev.preventDefault();
      const message = input.value.trim();
      if (!message) return;
      input.value = '';
      busy(send, box, () => ask(message));
    },
  }, h('label', {}, 'Message', input), box, h('div', { class: 'row' }, send, stop));
  input.addEventListener('keydown', (ev) => { if (ev.key === 'Enter' && !ev.shiftKey) { ev.preventDefault(); form.requestSubmit(); } });

  await loadConversations();
  return h('div', { class: 'chat' },
    h('aside', {},
      h('button', { type: 'button', onclick: () => { conversation = null; list.replaceChildren(); loadConversations(); input.focus(); } }, 'New conversation'),
      h('h2', {}, 'Earlier'), conversations),
    h('section', { 'aria-label': 'Chat with your AI' },
      h('p', { class: 'muted' }, 'Your AI runs inside your instance: what you write here never leaves it.'),
      list, form));
}

// Files ----------------------------------------------------------------------------------------

/** POSTs `file` with upload progress (fetch cannot report upload progress; XMLHttpRequest can). */
function upload(file, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open('POST', inst(`/v1/files?name=${encodeURIComponent(file.name)}`));
    xhr.responseType = 'json';
    xhr.upload.onprogress = (ev) => { if (ev.lengthComputable) onProgress(ev.loaded / ev.total); };
    // Every byte is sent; the instance is still hashing and storing the last of them.
    xhr.upload.onload = () => onProgress(1, 'storing…');
    xhr.onload = () => {
      if (xhr.status === 201 || xhr.status === 200) { resolve(xhr.response); return; }
      const e = xhr.response?.error;
      reject(new ApiError(e?.code || 'INTERNAL', e?.message || `the upload failed (${xhr.status})`, xhr.status));
    };
    xhr.onerror = () => reject(new ApiError('UNAVAILABLE', 'the upload was interrupted', 0));
    xhr.send(file);
  });
}

async function files() {
  const grants = (await optional(api('GET', inst('/v1/grants'))))?.grants || [];
  let app = null;
  const table = h('tbody');
  const box = alertBox();
  const picker = h('input', { type: 'file', multiple: true, id: 'file-input', 'aria-label': 'Files to upload' });
  const uploads = h('ul', { class: 'conversations', id: 'uploads', 'aria-label': 'Uploads' });
  const start = h('button', { class: 'primary', type: 'submit' }, 'Upload');

  async function refresh() {
    const r = await api('GET', inst(`/v1/files${app ? `?app=${encodeURIComponent(app)}` : ''}`));
    const rows = r.files.map((f) => {
      const q = app ? `?app=${encodeURIComponent(app)}` : '';
      const remove = h('button', { type: 'button', class: 'danger', onclick: () => busy(remove, box, async () => { await api('DELETE', inst(`/v1/files/${f.cid}${q}`)); say(`Removed ${f.name || f.cid}`); await refresh(); }) }, 'Remove');
      const publish = h('button', { type: 'button', onclick: () => busy(publish, box, async () => { await api('POST', inst(`/v1/files/${f.cid}/publish${q}`)); publish.textContent = 'Published'; say(`${f.name || f.cid} is now served to the IPFS network`); }) }, 'Publish');
      return h('tr', {},
        h('td', {}, f.name || h('span', { class: 'muted' }, 'unnamed')),
        h('td', {}, h('code', {}, f.cid)),
        h('td', {}, bytes(f.size)),
        h('td', {}, when(f.pinned_at)),
        h('td', {}, h('div', { class: 'row' }, h('a', { href: inst(`/v1/files/${f.cid}${q}`), download: f.name || f.cid }, 'Download'), publish, remove)));
    });
    table.replaceChildren(...(rows.length ? rows : [h('tr', {}, h('td', { colspan: 5, class: 'muted' }, 'No files yet.'))]));
  }

  const form = h('form', {
    onsubmit: (ev) => {
      ev.preventDefault();
      busy(start, box, async () => {
        for (const file of [...picker.files]) {
          const bar = h('progress', { max: 100, value: 0, 'aria-label': `Uploading ${file.name}` });
          const label = h('span', {}, '0%');
          uploads.append(h('li', {}, h('span', {}, `${file.name} (${bytes(file.size)}) `), label, bar));
          const added = await upload(file, (p, what) => { bar.value = Math.round(p * 100); label.textContent = `${what || `${Math.round(p * 100)}%`} `; });
          label.textContent = 'done ';
          bar.after(h('code', {}, ` ${added.cid}`));
        }
        picker.value = '';
        app = null;
        namespace.value = '';
        await refresh();
      });
    },
  }, h('label', { for: 'file-input' }, 'Add files to your IPFS node (private until you publish them)'), picker, ' ', start, uploads);

  const namespace = h('select', { id: 'namespace', onchange: () => { app = namespace.value || null; refresh().catch((e) => { box.textContent = errorText(e); }); } },
    h('option', { value: '' }, 'My files'),
    grants.map((g) => h('option', { value: g.app_id }, `Files of ${g.name || g.app_id}`)));

  await refresh();
  return [form, box,
    h('h2', {}, 'Stored files'),
    h('label', {}, 'Show', namespace),
    h('table', {}, h('thead', {}, h('tr', {}, h('th', {}, 'Name'), h('th', {}, 'CID'), h('th', {}, 'Size'), h('th', {}, 'Added'), h('th', {}, 'Actions'))), table)];
}

// Connected apps ---------------------------------------------------------------------------------

async function connectedApps() {
  const { grants } = await api('GET', inst('/v1/grants'));
  if (!grants.length) return h('p', { class: 'muted', id: 'no-apps' }, 'No app has access to your instance.');
  const box = alertBox();
  return [box, grants.map((g) => {
    const actions = h('div', { class: 'row' });
    const card = h('section', { class: 'card', 'aria-label': g.name || g.app_id },
      h('h2', {}, g.name || g.app_id),
      h('p', { class: 'muted' }, 'App id ', h('code', {}, g.app_id), ` · allowed ${when(g.granted_at * 1000)}`),
      h('p', {}, 'It may:'),
      h('ul', {}, (g.scope_details || g.scopes.map((s) => ({ scope: s }))).map((s) => h('li', {}, s.description || s.scope, ' ', h('code', {}, s.scope)))),
      actions);
    const revoke = h('button', { type: 'button', class: 'danger', onclick: () => confirmRevoke() }, `Revoke ${g.name || g.app_id}`);
    function confirmRevoke() {
      const yes = h('button', { type: 'button', class: 'danger', onclick: () => busy(yes, box, async () => {
        await api('DELETE', inst(`/v1/grants/${encodeURIComponent(g.app_id)}`));
        say(`${g.name || g.app_id} can no longer reach your instance.`);
        card.remove();
      }) }, 'Yes, revoke access');
      const no = h('button', { type: 'button', onclick: () => { actions.replaceChildren(revoke); revoke.focus(); } }, 'Cancel');
      actions.replaceChildren(h('span', {}, `${g.name || g.app_id} will stop working at once. `), yes, no);
      yes.focus();
    }
    actions.append(revoke);
    return card;
  })];
}

// Access log -----------------------------------------------------------------------------------

async function accessLog() {
  const table = h('tbody', { id: 'audit' });
  const more = h('button', { type: 'button', hidden: true }, 'Older entries');
  // Show one caller's calls only (of the entries loaded so far).
  const caller = h('select', { id: 'audit-who', onchange: () => filter() }, h('option', { value: '' }, 'Everyone'));
  const filter = () => { for (const row of table.rows) row.hidden = Boolean(caller.value) && row.dataset.who !== caller.value; };
  const box = alertBox();
  let cursor = null;

  async function load(reset) {
    if (reset) { cursor = null; table.replaceChildren(); }
    const r = await api('GET', inst(`/v1/audit?limit=100${cursor ? `&cursor=${cursor}` : ''}`));
    for (const e of r.entries) {
      const app = e.app === 'owner' ? 'You' : (e.app_name || e.app);
      if (![...caller.options].some((o) => o.value === e.app)) caller.append(h('option', { value: e.app }, app));
      table.append(h('tr', { 'data-who': e.app },
        h('td', {}, when(e.time_ms)),
        h('td', {}, app),
        h('td', {}, h('code', {}, `${e.method} ${e.route}`)),
        h('td', {}, e.decision === 'allowed' ? 'allowed' : h('span', { class: 'denied' }, `${e.decision}${e.code ? ` · ${e.code}` : ''}`))));
    }
    cursor = r.next_cursor;
    more.hidden = !cursor;
    filter();
  }
  more.addEventListener('click', () => busy(more, box, () => load(false)));
  const refresh = h('button', { type: 'button' }, 'Refresh');
  refresh.addEventListener('click', () => busy(refresh, box, () => load(true)));
  await load(true);
  return [h('p', { class: 'muted' }, 'Every call to your instance, by you or an app, newest first. Denied calls show why.'),
    h('div', { class: 'row' }, h('label', {}, 'Who ', caller), refresh), box,
    h('table', {}, h('thead', {}, h('tr', {}, h('th', {}, 'Time'), h('th', {}, 'Who'), h('th', {}, 'Call'), h('th', {}, 'Decision'))), table), more];
}

// Account --------------------------------------------------------------------------------------

async function account() {
  const box = alertBox();
  const signOut = h('button', { type: 'button', onclick: () => busy(signOut, box, async () => {
    await api('DELETE', '/v1/sessions');
    me = null;
    history.replaceState(null, '', '/#signin');
    showSignedOut('You are signed out.');
  }) }, 'Sign out');
  const confirmName = h('input', { type: 'text', autocomplete: 'off', id: 'delete-confirm' });
  const remove = h('button', { type: 'submit', class: 'danger' }, 'Delete my account and all its data');
  const deleteForm = h('form', {
    onsubmit: (ev) => {
      ev.preventDefault();
      busy(remove, box, async () => {
        if (confirmName.value !== me.username) throw new ApiError('INVALID_ARGUMENT', 'type your username exactly to confirm', 400);
        await api('DELETE', inst('/v1/account'));
        me = null;
        history.replaceState(null, '', '/#signup');
        showSignedOut('Your account was deleted: its key is destroyed and its data is gone.');
      });
    },
  }, h('label', {}, `To delete your account, type your username (${me.username})`, confirmName), remove);
  return [
    h('section', { class: 'card' }, h('h2', {}, 'Signed in as'), h('p', { class: 'stat' }, me.username), h('p', {}, `Plan: ${me.tier}`), signOut),
    h('section', { class: 'card' }, h('h2', {}, 'Export'),
      h('p', {}, 'Everything your instance keeps for you and your apps, as one JSON document.'),
      h('a', { href: inst('/v1/export'), download: `selfcloud-${me.username}.json`, id: 'export' }, 'Download my data')),
    h('section', { class: 'card' }, h('h2', {}, 'Delete account'),
      h('p', {}, 'This stops your instance, destroys its data key and removes its data. It cannot be undone.'), deleteForm),
    box];
}

// ---------------------------------------------------------------------------------------------

async function boot() {
  try {
    me = await api('GET', '/v1/instances/me');
  } catch (e) {
    me = null;
    showSignedOut(e.status === 401 ? '' : errorText(e));
    return;
  }
  const target = continueTo();
  if (target) { location.assign(target); return; }
  nav.hidden = false;
  who.textContent = `Signed in as ${me.username}`;
  await route();
}

window.addEventListener('hashchange', () => { if (me) route(); else showSignedOut(); });
boot();
