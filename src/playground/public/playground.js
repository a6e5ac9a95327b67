// The playground: runs one streamed completion and draws each denoising step on a canvas of the generated span.
// It is a plain client of the public API (GET /v1/models, POST /v1/completions with stream + include_canvas),
// so what it shows is exactly what any client receives. No framework, no build step.

/** How the API draws a still-masked position in `draft` (docs/design.md §5); the canvas cells use the same glyph. */
const MASK_GLYPH = '\u2591';

const $ = (id) => document.getElementById(id);

const form = $('run-form');
const promptBox = $('prompt');
const runButton = $('run');
const stopButton = $('stop');
const statusLine = $('status');
const errorBox = $('error');
const canvasBox = $('canvas');
const outputBox = $('output');
const replay = {
  fieldset: $('replay'),
  range: $('replay-step'),
  position: $('replay-position'),
  first: $('replay-first'),
  previous: $('replay-previous'),
  next: $('replay-next'),
  last: $('replay-last'),
};
const figures = {
  step: $('step-counter'),
  block: $('block-counter'),
  stepsPerSecond: $('steps-per-second'),
  tokensPerSecond: $('tokens-per-second'),
  tokensPerStep: $('tokens-per-step'),
};

/** Fields the page needs to lay the canvas out before the first step arrives (span length and block boundaries). */
const REQUIRED_NUMBERS = [
  ['max-tokens', 'max_tokens', 'Max tokens'],
  ['steps', 'steps', 'Steps'],
  ['block-length', 'block_length', 'Block length'],
  ['temperature', 'temperature', 'Temperature'],
];

/** The run being shown: its steps (for replay), its cells and what the stream said about its end. */
let current = null;
/** Aborts the request in flight (Stop button); null when idle. */
let inFlight = null;

class PageError extends Error {
  constructor(message, details = '', field = null) {
    super(message);
    this.details = details;
    this.field = field;
  }
}

function authHeaders() {
  // The key lives only in the field's value: never stored, never put in the URL.
  const key = $('api-key').value.trim();
  return key ? { authorization: `Bearer ${key}` } : {};
}

/** The OpenAI error object ({error: {message, type, param, code}}) as a PageError a person can read. */
function apiError(body, httpStatus) {
  const e = body && typeof body === 'object' ? body.error : null;
  if (!e || typeof e.message !== 'string') {
    return new PageError(`The server answered HTTP ${httpStatus} without an error object.`);
  }
  const details = [
    httpStatus ? `HTTP ${httpStatus}` : 'during the stream',
    e.type,
    e.code ? `code ${e.code}` : null,
    e.param ? `param ${e.param}` : null,
  ].filter(Boolean).join(' · ');
  return new PageError(e.message, details, e.param);
}

async function failedResponse(response) {
  const body = await response.json().catch(() => null);
  return apiError(body, response.status);
}

function readRequest() {
  const body = { prompt: promptBox.value };
  if (body.prompt.trim() === '') throw new PageError('Write a prompt first.', '', 'prompt');
  for (const [id, name, label] of REQUIRED_NUMBERS) {
    const input = $(id);
    if (input.value === '') throw new PageError(`${label} must be a number.`, '', name);
    body[name] = Number(input.value);
  }
  // A commit rule names LLaDA's sampler (remasking) or Dream's (alg); none leaves the model folder's default.
  const rule = $('remasking').value;
  if (rule.startsWith('alg:')) body.alg = rule.slice('alg:'.length);
  else if (rule !== '') body.remasking = rule;
  if ($('threshold').value !== '') body.threshold = Number($('threshold').value);
  if ($('seed').value !== '') body.seed = Number($('seed').value);
  // Empty: the model folder's default penalties.
  for (const [id, name] of [['presence-penalty', 'presence_penalty'], ['frequency-penalty', 'frequency_penalty']]) {
    if ($(id).value !== '') body[name] = Number($(id).value);
  }
  return body;
}

/** Yields each `data:` payload of a server-sent event stream as parsed JSON, until `data: [DONE]`. */
async function* sseData(response) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.indexOf('\n\n')) >= 0) {
      const event = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const data = event
        .split('\n')
        .filter((line) => line.startsWith('data:'))
        .map((line) => line.slice(5).replace(/^ /, ''))
        .join('\n');
      if (data === '') continue; // a `: ping` keep-alive comment
      if (data === '[DONE]') return;
      yield JSON.parse(data);
    }
  }
}

// ---- the canvas --------------------------------------------------------------------------------------------------

/** Block starts, then the span's end: blocks of blockLength from the span's start (the server's own come later). */
function uniformBlockStarts(spanLength, blockLength) {
  const starts = [];
  for (let start = 0; start < spanLength; start += blockLength) starts.push(start);
  return [...starts, spanLength];
}

/**
 * One cell per position of the generated span, grouped by block so that block boundaries show. `starts`: where each
 * block starts, then the span's end (a block diffusion model's first and last blocks may be short).
 */
function layOutCanvas(starts) {
  canvasBox.replaceChildren();
  const cells = [];
  const blocks = [];
  for (let b = 0; b + 1 < starts.length; b++) {
    const [start, end] = [starts[b], starts[b + 1]];
    const block = document.createElement('div');
    block.className = 'block';
    block.setAttribute('role', 'group');
    const label = document.createElement('span');
    label.className = 'block-label';
    label.id = `block-label-${blocks.length}`;
    label.textContent = `block ${blocks.length}`;
    block.setAttribute('aria-labelledby', label.id);
    block.append(label);
    for (let position = start; position < end; position++) {
      const cell = document.createElement('span');
      cell.className = 'cell masked';
      cell.textContent = MASK_GLYPH;
      cell.dataset.position = String(position);
      block.append(cell);
      cells.push(cell);
    }
    canvasBox.append(block);
    blocks.push(block);
  }
  return { cells, blocks };
}

/** Token text made visible in a cell: newlines and tabs as symbols, empty (special) tokens as ∅. */
function visibleText(text) {
  if (text === '') return '\u2205';
  return text.replace(/\n/g, '\u23ce').replace(/\t/g, '\u21e5');
}

/**
 * Draws one recorded step: masked, committed earlier, committed in this step, or after the end of the text. A masked
 * position of the block being decoded shows, faintly, the model's provisional guess there (docs/design.md §5).
 */
function drawStep(run, index) {
  const snapshot = run.snapshots[index];
  const isFinal = run.finishReason !== null && index === run.snapshots.length - 1;
  const fresh = new Set(snapshot.committed);
  const guesses = new Map(snapshot.provisional.map((t) => [t.position, t]));
  run.cells.forEach((cell, position) => {
    const token = snapshot.canvas[position];
    let kind;
    if (token !== null) kind = fresh.has(position) ? 'fresh' : 'committed';
    // Once the text has ended, positions never committed count as end of text (docs/design.md §4), not as masks.
    else kind = isFinal ? 'after-end' : 'masked';
    cell.className = `cell ${kind}`;
    const guess = kind === 'masked' ? guesses.get(position) : undefined;
    if (guess !== undefined) {
      cell.className = 'cell masked provisional';
      cell.textContent = visibleText(guess.text);
      cell.title = `position ${position}: masked; provisional guess: token ${guess.token_id} ${JSON.stringify(guess.text)}`;
    } else if (token === null) {
      cell.textContent = kind === 'masked' ? MASK_GLYPH : '';
      cell.title = kind === 'masked' ? `position ${position}: masked` : `position ${position}: after the end`;
    } else {
      const { text, confidence } = run.tokens[position];
      cell.textContent = visibleText(text);
      cell.title = `position ${position}: token ${token} ${JSON.stringify(text)}, confidence ${confidence.toFixed(3)}`;
    }
  });
  run.blocks.forEach((block, b) => block.classList.toggle('current', !isFinal && b === snapshot.block));
  figures.step.textContent = String(snapshot.step + 1);
  figures.block.textContent = String(snapshot.block);
  const seconds = snapshot.elapsedMs / 1000;
  const steps = index + 1;
  figures.stepsPerSecond.textContent = seconds > 0 ? (steps / seconds).toFixed(1) : '–';
  figures.tokensPerSecond.textContent = seconds > 0 ? (snapshot.committedSoFar / seconds).toFixed(1) : '–';
  figures.tokensPerStep.textContent = (snapshot.committedSoFar / steps).toFixed(2);
  outputBox.textContent = snapshot.output;
}

// ---- replay ------------------------------------------------------------------------------------------------------

function showReplayStep(index) {
  const run = current;
  const clamped = Math.max(0, Math.min(index, run.snapshots.length - 1));
  replay.range.value = String(clamped + 1);
  const label = `Step ${clamped + 1} of ${run.snapshots.length}, block ${run.snapshots[clamped].block}`;
  replay.range.setAttribute('aria-valuetext', label);
  replay.position.textContent = label;
  drawStep(run, clamped);
}

function enableReplay(run) {
  const count = run.snapshots.length;
  replay.range.max = String(count);
  replay.fieldset.disabled = count === 0;
  if (count > 0) showReplayStep(count - 1);
}

const replayIndex = () => Number(replay.range.value) - 1;
replay.range.addEventListener('input', () => showReplayStep(replayIndex()));
replay.first.addEventListener('click', () => showReplayStep(0));
replay.previous.addEventListener('click', () => showReplayStep(replayIndex() - 1));
replay.next.addEventListener('click', () => showReplayStep(replayIndex() + 1));
replay.last.addEventListener('click', () => showReplayStep(current.snapshots.length - 1));

// ---- a run -------------------------------------------------------------------------------------------------------

function showError(error) {
  const title = document.createElement('strong');
  title.textContent = error.message;
  errorBox.replaceChildren(title);
  if (error.details) {
    const details = document.createElement('span');
    details.className = 'details';
    details.textContent = error.details;
    errorBox.append(' ', details);
  }
  errorBox.hidden = false;
  const field = error.field ? form.elements.namedItem(error.field) : null;
  if (field && 'setAttribute' in field) field.setAttribute('aria-invalid', 'true');
}

function clearError() {
  errorBox.hidden = true;
  errorBox.replaceChildren();
  for (const field of form.querySelectorAll('[aria-invalid]')) field.removeAttribute('aria-invalid');
}

async function servedModel(signal) {
  const response = await fetch('/v1/models', { headers: authHeaders(), signal });
  if (!response.ok) throw await failedResponse(response);
  const list = await response.json();
  return list.data[0];
}

/** Folds one streamed chunk into the run; an error sent after the stream began is thrown as a PageError. */
function takeChunk(run, chunk) {
  if (chunk.error) throw apiError(chunk, 0);
  const choice = chunk.choices[0];
  if (!choice) return;
  run.output += choice.text;
  if (choice.finish_reason) run.finishReason = choice.finish_reason;
  const step = choice.diffusion;
  if (step?.block_starts && JSON.stringify(step.block_starts) !== JSON.stringify(run.blockStarts)) {
    // The server's block layout (include_canvas) wins over the one assumed from the request.
    run.blockStarts = step.block_starts;
    Object.assign(run, layOutCanvas(step.block_starts));
  }
  if (!step) {
    if (run.finishReason !== null && run.snapshots.length > 0) {
      run.snapshots[run.snapshots.length - 1].output = run.output;
      drawStep(run, run.snapshots.length - 1);
    }
    return;
  }
  for (const c of step.committed) run.tokens[c.position] = { text: c.text, confidence: c.confidence };
  run.committedSoFar += step.committed.length;
  run.snapshots.push({
    step: step.step,
    block: step.block,
    canvas: step.canvas,
    committed: step.committed.map((c) => c.position),
    provisional: step.provisional ?? [],
    committedSoFar: run.committedSoFar,
    elapsedMs: performance.now() - run.startedAt,
    output: run.output,
  });
  drawStep(run, run.snapshots.length - 1);
}

async function startRun() {
  clearError();
  let request;
  try {
    request = readRequest();
  } catch (error) {
    showError(error);
    return;
  }
  const controller = new AbortController();
  inFlight = controller;
  // Run stays focusable while a run is in flight (a disabled button would drop keyboard focus to the page).
  runButton.setAttribute('aria-disabled', 'true');
  stopButton.disabled = false;
  replay.fieldset.disabled = true;
  outputBox.textContent = '';
  const spanLength = Math.ceil(request.max_tokens / request.block_length) * request.block_length;
  const blockStarts = uniformBlockStarts(spanLength, request.block_length);
  current = {
    ...layOutCanvas(blockStarts),
    blockStarts,
    tokens: [],
    snapshots: [],
    committedSoFar: 0,
    output: '',
    finishReason: null,
    startedAt: performance.now(),
  };
  const run = current;
  for (const figure of Object.values(figures)) figure.textContent = '–';
  statusLine.textContent = 'Running…';
  try {
    const { id: model, block_size: blockSize } = await servedModel(controller.signal);
    // A block diffusion model decodes in its own blocks only: its block size is the one block_length it accepts.
    if (blockSize !== undefined) {
      request.block_length = blockSize;
      $('block-length').value = String(blockSize);
    }
    run.startedAt = performance.now();
    const response = await fetch('/v1/completions', {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...authHeaders() },
      body: JSON.stringify({ model, ...request, stream: true, include_canvas: true }),
      signal: controller.signal,
    });
    if (!response.ok) throw await failedResponse(response);
    for await (const chunk of sseData(response)) {
      // Chunks already received when Stop was pressed are still parsed out of the buffer: drop them.
      controller.signal.throwIfAborted();
      takeChunk(run, chunk);
    }
    const seconds = ((performance.now() - run.startedAt) / 1000).toFixed(2);
    statusLine.textContent =
      `Finished (${run.finishReason ?? 'no finish reason'}): ${run.snapshots.length} steps, ` +
      `${run.committedSoFar} positions committed in ${seconds} s.`;
  } catch (error) {
    if (controller.signal.aborted) {
      statusLine.textContent = `Stopped after ${run.snapshots.length} steps.`;
    } else {
      const readable = error instanceof PageError ? error : new PageError(`Request failed: ${error.message}`);
      showError(readable);
      statusLine.textContent = `Failed: ${readable.message}`;
    }
  } finally {
    inFlight = null;
    runButton.removeAttribute('aria-disabled');
    if (document.activeElement === stopButton) runButton.focus();
    stopButton.disabled = true;
    enableReplay(run);
  }
}

form.addEventListener('submit', (event) => {
  event.preventDefault();
  if (!inFlight) void startRun();
});
// In the prompt, Enter makes a new line; Ctrl+Enter (Cmd+Enter) runs.
promptBox.addEventListener('keydown', (event) => {
  if (event.key === 'Enter' && (event.ctrlKey || event.metaKey)) {
    event.preventDefault();
    form.requestSubmit();
  }
});
stopButton.addEventListener('click', () => inFlight?.abort());
