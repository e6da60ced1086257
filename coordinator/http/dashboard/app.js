// The dashboard: polls /api/status every second and renders it; streams the chat from
// /v1/chat/completions. No framework: the page is small, and must work on a LAN with no internet.
const KEY_STORE = 'hearth.apiKey';
const POLL_MS = 1000;

const $ = (id) => document.getElementById(id);

/** An element with attributes and children (strings become text nodes, so nothing is parsed as HTML). */
function h(tag, attrs = {}, ...children) {
  const el = tag.startsWith('svg:') ? document.createElementNS('http://www.w3.org/2000/svg', tag.slice(4)) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) if (v !== null && v !== undefined && v !== false) el.setAttribute(k, String(v));
  for (const c of children.flat()) if (c !== null && c !== undefined && c !== false) el.append(c);
  return el;
}

function bytes(n) {
  const v = Number(n);
  if (!Number.isFinite(v) || v <= 0) return '0 B';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  const i = Math.min(units.length - 1, Math.floor(Math.log(v) / Math.log(1024)));
  return `${(v / 1024 ** i).toFixed(i === 0 ? 0 : 1)} ${units[i]}`;
}

const pct = (part, whole) => (whole > 0 ? Math.max(0, Math.min(100, (100 * part) / whole)) : 0);

// --- API key ----------------------------------------------------------------------------------

function apiKey() {
  return localStorage.getItem(KEY_STORE) ?? '';
}

function headers(extra = {}) {
  const key = apiKey();
  return key ? { ...extra, authorization: `Bearer ${key}` } : extra;
}

/** Shows nothing but the key prompt; `refused`: a key was sent and not accepted. */
function askForKey(refused) {
  $('main').hidden = true;
  $('key-form').hidden = false;
  $('summary').textContent = 'An API key is needed to see this cluster.';
  $('key-why').textContent = refused ? 'The coordinator refused this key; enter another.' : 'This coordinator requires an API key.';
  $('key').focus();
}

$('key-form').addEventListener('submit', (e) => {
  e.preventDefault();
  localStorage.setItem(KEY_STORE, $('key').value.trim());
  $('key').value = '';
  $('key-form').hidden = true;
  $('summary').textContent = 'Connecting to the coordinator…';
  poll();
});

// --- status -----------------------------------------------------------------------------------

let pollTimer = null;

async function poll() {
  clearTimeout(pollTimer);
  try {
    const r = await fetch('/api/status', { headers: headers(), signal: AbortSignal.timeout(5000), cache: 'no-store' });
    if (r.status === 401) return askForKey(apiKey() !== '');
    if (!r.ok) throw new Error(`HTTP ${r.status}`);
    render(await r.json());
  } catch (e) {
    unreachable(e);
  }
  pollTimer = setTimeout(poll, POLL_MS);
}

function unreachable(e) {
  $('main').hidden = false;
  showBanner(`The coordinator does not answer (${e.message}); retrying every second.`);
}

function showBanner(text) {
  $('banner').hidden = !text;
  $('banner').textContent = text;
}

function render(s) {
  $('key-form').hidden = true;
  $('main').hidden = false;
  document.body.dataset.state = s.state;
  $('summary').textContent = `${s.model_name || s.model || 'no model'}: ${s.state}${s.cluster_id ? ` · cluster ${s.cluster_id}` : ''}`;
  // Loading has its own section; planning is a moment on the way to loading. Anything else that is not
  // serving (degraded, draining, stopping) is what the banner is for: the same reason /health gives.
  const quiet = ['serving', 'loading', 'planning', 'starting'].includes(s.state);
  showBanner(quiet ? '' : `${s.state}: ${s.reason || 'not serving'}`);
  renderLoad(s);
  renderWorkers(s);
  renderModels(s);
  renderPlan(s);
  renderFigures(s);
  renderEvents(s.events ?? []);
}

function renderLoad(s) {
  const loading = s.state === 'loading';
  $('load').hidden = !loading;
  if (!loading) return;
  const l = s.load;
  $('load-progress').value = l.progress;
  const sent = Object.entries(l.bytes_sent ?? {}).map(([to, n]) => `${bytes(n)} to ${to}`).join(', ');
  const phases = [['connect', l.connect_seconds], ['weights', l.weights_seconds], ['context', l.context_seconds]]
    .filter(([, t]) => t > 0).map(([p, t]) => `${p} ${t.toFixed(1)} s`).join(', ');
  $('load-detail').textContent = `${Math.round(l.progress * 100)}% after ${l.seconds.toFixed(1)} s${phases ? ` (${phases})` : ''}${sent ? `; sent ${sent}` : ''}`;
}

/** Several models: each one's state, where its layers are, what it holds, its queue; and the chat's choice of model. */
function renderModels(s) {
  const models = s.models ?? [];
  $('models-section').hidden = models.length < 2;
  $('chat-model-line').hidden = models.filter((m) => m.kind === 'chat').length < 2;
  const select = $('chat-model');
  const chat = models.filter((m) => m.kind === 'chat').map((m) => m.id);
  if (select.options.length !== chat.length || [...select.options].some((o, i) => o.value !== chat[i])) {
    const chosen = select.value;
    select.replaceChildren(...chat.map((id) => h('option', { value: id }, id)));
    if (chat.includes(chosen)) select.value = chosen;
  }
  if (models.length < 2) return;
  const now = Date.now();
  $('models').tBodies[0].replaceChildren(...models.map((m) => {
    const where = (m.plan?.devices ?? []).filter((d) => d.layers > 0).map((d) => `${d.owner} ${d.layers}`).join(', ');
    const state = m.status === 'loaded' ? (m.state === 'serving' ? 'loaded' : m.state) : m.status;
    return h('tr', { 'data-model': m.id, 'data-status': m.status },
      h('th', { scope: 'row' }, m.id, m.aliases?.length ? h('small', {}, ` (${m.aliases.join(', ')})`) : null, h('small', {}, ` · ${m.policy}`)),
      h('td', { 'data-label': 'Kind' }, m.kind),
      h('td', { 'data-label': 'Status' }, h('strong', { class: `state ${m.state}` }, state), m.reason && m.state !== 'serving' ? h('small', { class: 'reason' }, ` ${m.reason}`) : null),
      h('td', { 'data-label': 'Layers on' }, m.status === 'on disk' ? '–' : where || '–'),
      h('td', { 'data-label': 'Memory' }, m.status === 'loaded' ? bytes(m.loaded_bytes) : '–'),
      h('td', { 'data-label': 'Requests' }, `${m.in_flight} in flight, ${m.waiting} waiting`, m.last_used > 0 ? h('small', {}, ` · last ${Math.round((now - m.last_used) / 1000)} s ago`) : null),
      h('td', { 'data-label': 'Unloads' }, m.policy === 'pinned' ? 'never' : m.expires > 0 ? `in ${Math.max(0, Math.round((m.expires - now) / 1000))} s` : '–'));
  }));
}

/** Bytes the plans of every loaded model put on a worker's devices. */
function usedByHearthAll(s, w) {
  const plans = (s.models ?? []).length > 1 ? s.models.filter((m) => m.status === 'loaded').map((m) => m.plan ?? {}) : [s.plan ?? {}];
  return plans.reduce((sum, p) => sum + usedByHearth(p, w), 0);
}

/** Bytes the plan puts on a worker's devices. */
function usedByHearth(plan, w) {
  return (plan.devices ?? [])
    .filter((d) => d.owner === w.name || d.owner === w.worker_id || d.owner === w.control_address)
    .reduce((sum, d) => sum + Number(d.weight_bytes) + Number(d.kv_bytes) + Number(d.compute_bytes), 0);
}

function memoryBar(used, free, total) {
  const other = Math.max(0, total - free - used);
  return h('div', { class: 'bar', role: 'img', 'aria-label': `${bytes(used)} used by hearth, ${bytes(free)} free of ${bytes(total)}` },
    h('span', { class: 'seg hearth', style: `width:${pct(used, total)}%` }),
    h('span', { class: 'seg other', style: `width:${pct(other, total)}%` }),
    h('span', { class: 'seg free', style: `width:${pct(free, total)}%` }));
}

function renderWorkers(s) {
  const rows = (s.workers ?? []).map((w) => {
    const total = Number(w.total_bytes);
    const free = Number(w.free_bytes);
    const used = usedByHearthAll(s, w);
    // A worker that leaves, or left, on purpose is no fault.
    const bad = !['admitted', 'leaving', 'left'].includes(w.state);
    return h('tr', { 'data-worker': w.name, 'data-state': w.state, class: bad ? 'bad' : null },
      h('th', { scope: 'row' }, w.name),
      h('td', { 'data-label': 'Address' }, w.control_address, w.rpc_endpoint ? h('small', {}, ` rpc ${w.rpc_endpoint}`) : null, w.link ? h('small', {}, ` · ${w.link}`) : null),
      h('td', { 'data-label': 'Devices' }, w.backend || '–', w.bytes_per_second > 0 ? h('small', {}, ` ${(w.bytes_per_second / 1e9).toFixed(1)} GB/s`) : null),
      h('td', { 'data-label': 'Memory' }, memoryBar(used, free, total), h('small', {}, `${bytes(used)} hearth · ${bytes(free)} free · ${bytes(total)} total`)),
      h('td', { 'data-label': 'State' }, h('strong', { class: `state ${w.state}` }, w.state), w.reason ? h('small', { class: 'reason' }, ` ${w.reason}`) : null),
      h('td', { 'data-label': 'Model on disk' }, w.model_local || '–', h('small', {}, ` · tensor cache ${bytes(w.tensor_cache_bytes)}`)));
  });
  $('workers').tBodies[0].replaceChildren(...(rows.length ? rows : [h('tr', {}, h('td', { colspan: 6 }, 'No workers yet.'))]));
}

function renderPlan(s) {
  const p = s.plan ?? { devices: [] };
  const devices = p.devices ?? [];
  const layers = devices.reduce((n, d) => n + d.layers, 0);
  $('plan-summary').textContent = [
    `Model ${s.model_name || s.model || '–'}`,
    `context ${p.ctx_size ?? '–'} tokens`,
    `parallel ${p.parallel ?? s.parallel}`,
    p.objective ? `placed for ${p.objective}` : null,
    p.fits ? (p.split === 'tensor' ? `every layer split over ${devices.length} devices (tensor split)` : `${layers} layers on ${devices.length} device${devices.length === 1 ? '' : 's'}`) : 'no plan fits',
    s.speculation ? `speculation: ${s.speculation}` : null,
  ].filter(Boolean).join(' · ');
  $('plan-devices').replaceChildren(...devices.map((d) => {
    const last = d.first_layer + d.layers - 1;
    const shared = p.split === 'tensor';
    const range = shared ? `${((d.share ?? 0) * 100).toFixed(1)}% of every layer` : d.layers > 0 ? `layers ${d.first_layer}–${last}` : 'no layers';
    return h('li', { 'data-owner': d.owner },
      h('strong', {}, `${d.owner} ${d.device}`), ` ${range}${d.holds_output && !shared ? ' + output' : ''}`,
      d.expert_layers?.length ? ` + experts of ${d.expert_layers.length} block${d.expert_layers.length === 1 ? '' : 's'}` : '',
      h('div', { class: 'bar layers', role: 'img', 'aria-label': range },
        h('span', { class: 'seg gap', style: `width:${shared ? 0 : pct(d.first_layer, layers)}%` }),
        h('span', { class: 'seg hearth', style: `width:${shared ? (d.share ?? 0) * 100 : pct(d.layers, layers)}%` })),
      h('small', {}, `weights ${bytes(d.weight_bytes)} · KV ${bytes(d.kv_bytes)} · compute ${bytes(d.compute_bytes)} · free ${bytes(d.free_bytes)}`
        + (d.seconds_per_token > 0 ? ` · ${(d.seconds_per_token * 1000).toFixed(1)} ms/token` : '')));
  }));
  const refusal = p.fits ? '' : [p.refusal, ...(p.suggestions ?? [])].filter(Boolean).join(' ');
  $('plan-refusal').hidden = !refusal;
  $('plan-refusal').textContent = refusal;
  const replan = lastReplan(s);
  const loaded = (s.events ?? []).findLast((e) => e.kind === 'load');
  $('plan-replan').textContent = [
    replan ? `Last re-plan: ${replan.why} (at ${new Date(replan.time).toLocaleTimeString()}).` : '',
    loaded ? `Last load: ${loaded.message}.` : '',
  ].filter(Boolean).join(' ');
}

/**
 * Why the plan was last made: the newer of last_replan ("ISO time: why", set by speed drift) and the
 * last "planning: why" state event (start, a worker joining or lost, the engine lost).
 */
function lastReplan(s) {
  const drift = /^(\d{4}-\S+Z): (.*)$/s.exec(s.last_replan ?? '');
  const fromDrift = drift ? { time: drift[1], why: drift[2] } : null;
  const event = (s.events ?? []).findLast((e) => e.kind === 'state' && e.message.startsWith('planning: '));
  const fromEvent = event ? { time: event.time, why: event.message.slice('planning: '.length) } : null;
  if (!fromDrift || !fromEvent) return fromDrift ?? fromEvent;
  return Date.parse(fromDrift.time) > Date.parse(fromEvent.time) ? fromDrift : fromEvent;
}

function renderFigures(s) {
  const hist = s.history ?? [];
  const last = hist.at(-1);
  // Time to first token is only measured when a request starts: the latest one in the window.
  const ttft = hist.findLast((p) => p.ttft_ms > 0);
  const figures = [
    ['In flight', `${s.in_flight} of ${s.parallel}`],
    ['Waiting', String(s.waiting)],
    ['Tokens/s', last ? last.tokens_per_second.toFixed(1) : '–'],
    ['Time to first token', ttft ? `${Math.round(ttft.ttft_ms)} ms` : '–'],
  ];
  $('figures').replaceChildren(...figures.map(([k, v]) => h('div', {}, h('dt', {}, k), h('dd', {}, v))));
  $('charts').replaceChildren(
    chart('Tokens/s', hist, [['tokens_per_second', 'line-a']]),
    chart('Time to first token (ms)', hist, [['ttft_ms', 'line-b']]),
    chart('In flight and waiting', hist, [['in_flight', 'line-a'], ['waiting', 'line-c']]),
  );
}

/** A small line chart of `series` over the samples' time span. */
function chart(title, samples, series) {
  const W = 300, H = 60;
  const t0 = samples[0]?.t ?? 0;
  const span = Math.max(1, (samples.at(-1)?.t ?? 0) - t0);
  const peak = Math.max(0, ...samples.flatMap((p) => series.map(([k]) => p[k] ?? 0)));
  const max = peak || 1;
  // Presentation attributes as well as classes: without the style sheet the lines still draw as lines.
  const lines = series.map(([key, cls]) => h('svg:polyline', {
    class: cls,
    fill: 'none',
    stroke: 'currentColor',
    points: samples.map((p) => `${(((p.t - t0) / span) * W).toFixed(1)},${(H - ((p[key] ?? 0) / max) * (H - 4) - 2).toFixed(1)}`).join(' '),
  }));
  const top = peak >= 100 ? Math.round(peak) : Number(peak.toPrecision(2));
  return h('figure', {},
    h('svg:svg', { viewBox: `0 0 ${W} ${H}`, width: W, height: H, preserveAspectRatio: 'none', role: 'img', 'aria-label': title }, ...lines),
    h('figcaption', {}, `${title}, last ${Math.round(span / 60000) || '<1'} min, peak ${samples.length ? top : '–'}`));
}

function renderEvents(events) {
  $('events').replaceChildren(...events.slice().reverse().map((e) =>
    h('li', { 'data-kind': e.kind }, h('time', { datetime: e.time }, new Date(e.time).toLocaleTimeString()), ` ${e.kind}: ${e.message}`)));
}

// --- chat -------------------------------------------------------------------------------------

let messages = [];
let chatAbort = null;

function chatLine(role, text) {
  const body = h('span', { class: 'text' }, text);
  $('chat-log').append(h('li', { class: role }, h('strong', {}, role === 'user' ? 'You: ' : 'Model: '), body));
  return body;
}

/** Yields the JSON payloads of an SSE response body, stopping at [DONE]. */
async function* sseEvents(body) {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buffer = '';
  for (;;) {
    const { done, value } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf('\n\n')) >= 0) {
      const event = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      for (const line of event.split('\n')) {
        if (!line.startsWith('data: ')) continue;
        const data = line.slice(6);
        if (data === '[DONE]') return;
        yield JSON.parse(data);
      }
    }
  }
}

$('chat-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  const prompt = $('prompt').value.trim();
  if (!prompt || chatAbort) return;
  $('prompt').value = '';
  chatLine('user', prompt);
  messages.push({ role: 'user', content: prompt });
  const out = chatLine('assistant', '');
  out.parentElement.setAttribute('aria-busy', 'true');
  chatAbort = new AbortController();
  $('send').disabled = true;
  $('stop').disabled = false;
  let text = '';
  let tokens = 0;
  let first = 0;
  let ending = 'done';
  const started = performance.now();
  try {
    const r = await fetch('/v1/chat/completions', {
      method: 'POST',
      headers: headers({ 'content-type': 'application/json' }),
      body: JSON.stringify({ messages, stream: true, ...($('chat-model').value ? { model: $('chat-model').value } : {}) }),
      signal: chatAbort.signal,
    });
    if (r.status === 401) {
      ending = 'the API key was refused';
      askForKey(true);
    } else if (!r.ok) {
      const body = await r.json().catch(() => null);
      ending = `error: ${body?.error?.message ?? `HTTP ${r.status}`}`;
    } else {
      for await (const chunk of sseEvents(r.body)) {
        if (chunk.error) {
          ending = `error: ${chunk.error.message}`;
          break;
        }
        const delta = chunk.choices?.[0]?.delta?.content;
        if (!delta) continue;
        tokens++;
        if (!first) first = performance.now();
        text += delta;
        out.textContent = text;
        const seconds = (performance.now() - first) / 1000;
        $('chat-stats').textContent = `${tokens} tokens · ${seconds > 0 ? (tokens / seconds).toFixed(1) : '–'} tokens/s · first token after ${Math.round(first - started)} ms`;
      }
    }
  } catch (err) {
    ending = chatAbort.signal.aborted ? 'stopped' : `error: ${err.message}`;
  } finally {
    out.parentElement.removeAttribute('aria-busy');
    out.parentElement.dataset.ending = ending;
    if (ending !== 'done') out.parentElement.append(h('em', { class: 'ending' }, ` (${ending})`));
    if (text) messages.push({ role: 'assistant', content: text });
    chatAbort = null;
    $('send').disabled = false;
    $('stop').disabled = true;
  }
});

$('stop').addEventListener('click', () => chatAbort?.abort());
$('clear').addEventListener('click', () => {
  chatAbort?.abort();
  messages = [];
  $('chat-log').replaceChildren();
  $('chat-stats').textContent = '';
});
$('prompt').addEventListener('keydown', (e) => {
  if (e.key === 'Enter' && !e.shiftKey) {
    e.preventDefault();
    $('chat-form').requestSubmit();
  }
});

poll();
