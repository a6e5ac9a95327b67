// The playground page end to end in real headless Chromium (Debian's /usr/bin/chromium driven by playwright-core,
// no browser download): the embedded server with the real tiny model, a prompt typed on the keyboard, the canvas
// drawn step by step from the stream, replay, API errors, API keys, and a run done with the keyboard alone.

import assert from 'node:assert/strict';
import { existsSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { chromium, type Browser, type Page } from 'playwright-core';
import { startEmbedded } from '../helpers/embedded.js';
import { ROOT } from '../helpers/procs.js';
import { jsonOf, type ErrorBody } from '../helpers/openai.js';
import { BD3_MODEL_DIR } from '../engine/model_fixture.js';
import type { Started } from '../../src/main.js';

const CHROMIUM = '/usr/bin/chromium';
const OUTPUT_DIR = path.join(ROOT, 'test-output', 'playground');
const MODEL = 'tiny-llada';
/** Waits in the browser are generous: CI machines here have two loaded cores. */
const WAIT_MS = 30_000;

/** A state of the canvas the page drew, as recordCanvas keeps it. */
interface CanvasState {
  step: string;
  masked: number;
  cells: number;
}

/** The page's window, with the states recordCanvas keeps there. */
type RecordingWindow = Window & { canvasStates?: CanvasState[] };

/** What the page sends for its controls (threshold left empty = fixed schedule), as an API request. */
interface Controls {
  prompt: string;
  max_tokens: number;
  steps: number;
  block_length: number;
  temperature: number;
  seed: number;
  remasking?: 'low_confidence' | 'random' | 'margin' | 'entropy';
  presence_penalty?: number;
}

async function launchChromium(): Promise<Browser> {
  // A missing browser fails the suite with the fix, rather than skipping the page's only end-to-end check.
  assert.ok(existsSync(CHROMIUM), `${CHROMIUM} is missing: install it with \`apt-get install -y chromium\` (.ci/run does)`);
  return chromium.launch({
    executablePath: CHROMIUM,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
}

/** The non-streamed completion of the same request, through the API. */
async function apiCompletion(
  url: string,
  controls: Controls,
  { headers = {}, model = MODEL }: { headers?: Record<string, string>; model?: string } = {},
): Promise<{ text: string; promptTokens: number }> {
  const response = await fetch(`${url}/v1/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: JSON.stringify({ model, ...controls, remasking: 'low_confidence', threshold: null }),
  });
  assert.equal(response.status, 200, await response.clone().text());
  const body = (await response.json()) as { choices: { text: string }[]; usage: { prompt_tokens: number } };
  return { text: body.choices[0].text, promptTokens: body.usage.prompt_tokens };
}

/** Replaces a field's value by keyboard: focus it, select all, type. */
async function typeInto(page: Page, selector: string, text: string): Promise<void> {
  await page.focus(selector);
  await page.keyboard.press('ControlOrMeta+A');
  await page.keyboard.type(text);
}

/** The prompt is typed key by key; the numbers are filled in at once (the keyboard-only test types them too). */
async function setControls(page: Page, controls: Controls): Promise<void> {
  await typeInto(page, '#prompt', controls.prompt);
  await page.fill('#max-tokens', String(controls.max_tokens));
  await page.fill('#steps', String(controls.steps));
  await page.fill('#block-length', String(controls.block_length));
  await page.fill('#temperature', String(controls.temperature));
  await page.fill('#seed', String(controls.seed));
  if (controls.remasking) await page.selectOption('#remasking', controls.remasking);
}

/**
 * Records, in the page, every state of the canvas the page draws: the step counter and how many cells are masked.
 * Installed before a run so that the test sees the intermediate steps, however fast the run goes.
 */
async function recordCanvas(page: Page): Promise<void> {
  // Inline callbacks only: tsx would wrap a named local function in a helper that does not exist in the page.
  await page.evaluate(() => {
    const seen: CanvasState[] = [];
    (window as RecordingWindow).canvasStates = seen;
    new MutationObserver(() =>
      seen.push({
        step: document.getElementById('step-counter')!.textContent ?? '',
        masked: document.querySelectorAll('#canvas .cell.masked').length,
        cells: document.querySelectorAll('#canvas .cell').length,
      }),
    ).observe(document.querySelector('main')!, { subtree: true, childList: true, characterData: true, attributes: true });
  });
}

const canvasStates = (page: Page) => page.evaluate(() => (window as RecordingWindow).canvasStates!);
const textOf = async (page: Page, selector: string) => (await page.textContent(selector)) ?? '';
const maskedCells = (page: Page) => page.locator('#canvas .cell.masked').count();

async function waitForFinish(page: Page): Promise<void> {
  await page.waitForFunction(() => /^(Finished|Failed|Stopped)/.test(document.getElementById('status')!.textContent ?? ''), null, { timeout: WAIT_MS });
  const status = await textOf(page, '#status');
  assert.match(status, /^Finished/, `the run did not finish: ${status} ${await textOf(page, '#error')}`);
}

const spanLength = (c: Controls) => Math.ceil(c.max_tokens / c.block_length) * c.block_length;

let browser: Browser;
before(async () => {
  mkdirSync(OUTPUT_DIR, { recursive: true });
  browser = await launchChromium();
});
after(async () => {
  await browser?.close();
});

async function openPlayground(url: string): Promise<Page> {
  const page = await browser.newPage({ viewport: { width: 1100, height: 900 } });
  page.setDefaultTimeout(WAIT_MS);
  await page.goto(`${url}/`);
  return page;
}

describe('playground page (embedded server, headless Chromium)', () => {
  let server: Started & { url: string };

  before(async () => {
    server = await startEmbedded();
  });
  after(async () => {
    await server?.stop();
  });

  test('GET / serves the page and its assets; unknown paths keep the API 404', async () => {
    const html = await fetch(`${server.url}/`);
    assert.equal(html.status, 200);
    assert.match(html.headers.get('content-type') ?? '', /text\/html/);
    for (const [asset, type] of [['/playground.js', /javascript/], ['/playground.css', /text\/css/]] as const) {
      const response = await fetch(`${server.url}${asset}`);
      assert.equal(response.status, 200, asset);
      assert.match(response.headers.get('content-type') ?? '', type, asset);
    }
    const missing = await fetch(`${server.url}/no-such-page`);
    assert.equal(missing.status, 404);
    assert.equal((await jsonOf<ErrorBody>(missing)).error.code, 'not_found');
  });

  test('a run draws every step from masks to the final text, which equals the non-streamed completion', async () => {
    const page = await openPlayground(server.url);
    const controls: Controls = { prompt: 'Once upon a time', max_tokens: 16, steps: 8, block_length: 4, temperature: 0, seed: 7 };
    await setControls(page, controls);
    await recordCanvas(page);
    await page.click('#run');
    await waitForFinish(page);

    const states = await canvasStates(page);
    const cells = spanLength(controls);
    assert.ok(states.some((s) => s.cells === cells && s.masked === cells), 'the whole span was drawn masked before the first step');
    const stepsDrawn = new Set(states.map((s) => s.step).filter((s) => /^\d+$/.test(s)));
    assert.ok(stepsDrawn.size > 1, `more than one step drawn (saw ${[...stepsDrawn].join(', ')})`);
    assert.equal(await maskedCells(page), 0, 'no masked placeholder left');
    assert.equal(await page.locator('#canvas .block').count(), cells / controls.block_length, 'one group per block');
    assert.equal(await textOf(page, '#output'), (await apiCompletion(server.url, controls)).text);
    for (const figure of ['#steps-per-second', '#tokens-per-second', '#tokens-per-step']) {
      assert.match(await textOf(page, figure), /^\d+(\.\d+)?$/, figure);
    }
    await page.screenshot({ path: path.join(OUTPUT_DIR, 'final.png'), fullPage: true });
    await page.close();
  });

  test('replay scrubs through the recorded steps with the keyboard', async () => {
    const page = await openPlayground(server.url);
    await setControls(page, { prompt: 'The old man', max_tokens: 32, steps: 16, block_length: 8, temperature: 0, seed: 11 });
    await page.focus('#prompt');
    await page.keyboard.press('Control+Enter'); // runs from the prompt box
    await waitForFinish(page);
    const steps = Number(await page.getAttribute('#replay-step', 'max'));
    assert.ok(steps > 1);
    await page.focus('#replay-step');
    await page.keyboard.press('Home');
    assert.equal(await textOf(page, '#step-counter'), '1');
    assert.ok((await maskedCells(page)) > 0, 'the first step still shows masks');
    assert.ok((await page.locator('#canvas .cell.fresh').count()) > 0, 'the first step highlights what it committed');
    // The first step leaves most of block 0 masked: each such cell shows the model's provisional guess, faintly.
    const guesses = page.locator('#canvas .block.current .cell.provisional');
    assert.ok((await guesses.count()) > 0, 'provisional guesses drawn in the block being decoded');
    assert.equal(await page.locator('#canvas .block:not(.current) .cell.provisional').count(), 0, 'none outside it');
    const look = await guesses.first().evaluate((el) => {
      const style = getComputedStyle(el);
      return { opacity: Number(style.opacity), italic: style.fontStyle === 'italic', text: el.textContent ?? '', title: el.getAttribute('title') ?? '' };
    });
    assert.ok(look.opacity < 1 && look.italic, `drawn faintly: ${JSON.stringify(look)}`);
    assert.notEqual(look.text, '\u2591', 'a guess shows its text, not the mask glyph');
    assert.match(look.title, /provisional guess/);
    await page.keyboard.press('End');
    assert.equal(await page.locator('#canvas .cell.provisional').count(), 0, 'no guess is left once everything is committed');
    await page.keyboard.press('Home');
    await page.keyboard.press('ArrowRight');
    assert.equal(await page.inputValue('#replay-step'), '2');
    assert.equal(await textOf(page, '#step-counter'), '2');
    await page.keyboard.press('End');
    assert.equal(await maskedCells(page), 0);
    await page.focus('#replay-previous');
    await page.keyboard.press('Enter');
    assert.equal(await page.inputValue('#replay-step'), String(steps - 1));
    await page.focus('#replay-first');
    await page.keyboard.press('Space');
    assert.equal(await page.inputValue('#replay-step'), '1');
    // A mid-run picture for the README (docs/playground.png is copied from it).
    await page.focus('#replay-step');
    for (let i = 0; i < Math.floor(steps / 2); i++) await page.keyboard.press('ArrowRight');
    await page.screenshot({ path: path.join(OUTPUT_DIR, 'replay.png'), fullPage: true });
    await page.close();
  });

  test('an API error is shown readably, with the field it is about marked', async () => {
    const page = await openPlayground(server.url);
    await setControls(page, { prompt: 'Hello', max_tokens: 16, steps: 3, block_length: 4, temperature: 0, seed: 0 }); // 4 blocks: 3 steps is no multiple
    await page.click('#run');
    await page.waitForSelector('#error:not([hidden])', { timeout: WAIT_MS });
    const error = await textOf(page, '#error');
    assert.match(error, /multiple of the number of blocks/);
    assert.match(error, /HTTP 400/);
    assert.match(error, /param steps/);
    assert.equal(await page.getAttribute('#steps', 'aria-invalid'), 'true');
    assert.match(await textOf(page, '#status'), /^Failed/);
    await page.close();
  });

  test('Stop ends a run between steps; its steps so far can be replayed', async () => {
    const page = await openPlayground(server.url);
    // A run long enough to stop: the trained tiny model ends most greedy texts within a few steps, while this seeded
    // request (temperature 2, random order) runs all 128 steps on the committed model — checked with
    // `cd models && python3 -m dllm.reference --prompt 'A long time ago' --max-tokens 128 --steps 128
    // --block-length 32 --remasking random --temperature 2 --seed 7`; a new model may need another seed.
    await setControls(page, { prompt: 'A long time ago', max_tokens: 128, steps: 128, block_length: 32, temperature: 2, seed: 7, remasking: 'random' });
    // On an idle machine the whole run takes about 1.5 s, faster than a round trip from the test per step: the page
    // itself presses Stop (focused, as a keyboard user would have it) once the third step is drawn.
    await page.evaluate(() => {
      const counter = document.getElementById('step-counter')!;
      new MutationObserver((_, observer) => {
        if (!(Number(counter.textContent) >= 3)) return; // the counter reads "–" before the first step
        observer.disconnect();
        const stop = document.getElementById('stop') as HTMLButtonElement;
        stop.focus();
        stop.click();
      }).observe(counter, { childList: true, characterData: true, subtree: true });
    });
    await page.focus('#run');
    await page.keyboard.press('Enter');
    await page.waitForFunction(() => /^Stopped/.test(document.getElementById('status')!.textContent ?? ''));
    assert.ok((await maskedCells(page)) > 0, 'a stopped run leaves masks');
    assert.equal(await page.isDisabled('#replay-step'), false, 'replay is open');
    assert.equal(await page.evaluate(() => document.activeElement?.id), 'run', 'focus goes back to Run, not to the page');
    await page.close();
  });

  test('keyboard only: Tab through the fields in order, Space on Run, visible focus', async () => {
    const keyboardPage = await openPlayground(server.url);
    const order = ['prompt', 'max-tokens', 'steps', 'block-length', 'remasking', 'threshold', 'temperature', 'seed', 'presence-penalty', 'frequency-penalty', 'api-key', 'run'];
    const focused = () => keyboardPage.evaluate(() => document.activeElement?.id ?? '');
    for (let presses = 0; (await focused()) !== 'prompt'; presses++) {
      assert.ok(presses < 5, 'the prompt is among the first stops of the tab order');
      await keyboardPage.keyboard.press('Tab');
    }
    const controls: Controls = { prompt: 'The little dog', max_tokens: 16, steps: 8, block_length: 8, temperature: 0.7, seed: 3, presence_penalty: 1.5 };
    const values: Record<string, string> = {
      prompt: controls.prompt,
      'max-tokens': String(controls.max_tokens),
      steps: String(controls.steps),
      'block-length': String(controls.block_length),
      temperature: String(controls.temperature),
      seed: String(controls.seed),
      'presence-penalty': String(controls.presence_penalty),
    };
    for (const id of order) {
      assert.equal(await focused(), id, 'focus order');
      if (id in values) {
        await keyboardPage.keyboard.press('ControlOrMeta+A');
        await keyboardPage.keyboard.type(values[id]);
      }
      if (id === 'run') break;
      await keyboardPage.keyboard.press('Tab');
    }
    const outline = await keyboardPage.evaluate(() => getComputedStyle(document.activeElement!).outlineStyle);
    assert.notEqual(outline, 'none', 'the focused Run button shows its focus');
    await keyboardPage.keyboard.press('Space');
    await waitForFinish(keyboardPage);
    assert.equal(await maskedCells(keyboardPage), 0);
    assert.equal(await textOf(keyboardPage, '#output'), (await apiCompletion(server.url, controls)).text);
    assert.equal(await focused(), 'run', 'focus stays on Run after the run');
    await keyboardPage.close();
  });
});

describe('playground page with API keys', () => {
  const key = 'playground-test-key';
  let server: Started & { url: string };

  before(async () => {
    server = await startEmbedded({ API_KEYS: key });
  });
  after(async () => {
    await server?.stop();
  });

  test('without the key the 401 is shown; with it the run goes through, and the key never reaches storage or the URL', async () => {
    const page = await openPlayground(server.url);
    const controls: Controls = { prompt: 'It was', max_tokens: 8, steps: 4, block_length: 8, temperature: 0, seed: 1 };
    await setControls(page, controls);
    await page.click('#run');
    await page.waitForSelector('#error:not([hidden])', { timeout: WAIT_MS });
    assert.match(await textOf(page, '#error'), /API key[\s\S]*HTTP 401[\s\S]*invalid_api_key/);

    await typeInto(page, '#api-key', key);
    await page.keyboard.press('Enter');
    await waitForFinish(page);
    assert.equal(await page.isHidden('#error'), true);
    assert.equal(await textOf(page, '#output'), (await apiCompletion(server.url, controls, { headers: { authorization: `Bearer ${key}` } })).text);
    const stored = await page.evaluate(() => JSON.stringify({ ...localStorage }) + JSON.stringify({ ...sessionStorage }) + document.cookie + location.href);
    assert.ok(!stored.includes(key), 'the key is kept in page memory only');
  });
});

describe('playground page with the block diffusion model', () => {
  let server: Started & { url: string };

  before(async () => {
    server = await startEmbedded({ MODEL_DIR: BD3_MODEL_DIR });
  });
  after(async () => {
    await server?.stop();
  });

  test("the page takes the model's block size and draws its own blocks, the first one completing the prompt's", async () => {
    const page = await openPlayground(server.url);
    // block_length 4 in the form: the page replaces it by the model's block size (16) instead of getting a 400.
    const controls: Controls = { prompt: 'Once upon a time', max_tokens: 24, steps: 24, block_length: 4, temperature: 0, seed: 7 };
    await setControls(page, controls);
    await page.click('#run');
    await waitForFinish(page);
    assert.equal(await page.inputValue('#block-length'), '16');
    assert.equal(await page.locator('#canvas .cell').count(), 24, 'the span is max_tokens long');
    const sizes = await page.locator('#canvas .block').evaluateAll((blocks) => blocks.map((b) => b.querySelectorAll('.cell').length));
    // BOS + the prompt's tokens put the first boundary where the prompt's last block of 16 ends.
    const api = await apiCompletion(server.url, { ...controls, block_length: 16 }, { model: 'tiny-bd3' });
    const first = 16 - (api.promptTokens % 16);
    assert.deepEqual(sizes, first >= 24 ? [24] : [first, ...(24 - first > 16 ? [16, 24 - first - 16] : [24 - first])]);
    assert.equal(await textOf(page, '#output'), api.text);
    await page.close();
  });
});
