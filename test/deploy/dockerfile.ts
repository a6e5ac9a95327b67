// A small Dockerfile reader for the deploy checks: instructions (continuations joined, comments dropped), stages,
// the ARG defaults before the first FROM, and per-stage ENV, WORKDIR, COPY, USER, ENTRYPOINT and CMD.

import { readFileSync } from 'node:fs';
import path from 'node:path';
import { ROOT } from '../helpers/paths.js';

export { ROOT };

export interface Instruction {
  keyword: string;
  args: string;
  line: number;
}

export interface Copy {
  from: string | null;
  sources: string[];
  dest: string;
}

export interface Stage {
  name: string | null;
  /** The FROM image as written (may be ${ARG}). */
  base: string;
  /** The FROM image with global ARG defaults substituted. */
  image: string;
  instructions: Instruction[];
  env: Record<string, string>;
  workdir: string;
  copies: Copy[];
  user: string | null;
  entrypoint: string[] | null;
  cmd: string[] | null;
  healthcheck: string | null;
}

export interface Dockerfile {
  text: string;
  instructions: Instruction[];
  globalArgs: Record<string, string>;
  stages: Stage[];
  stage(name: string): Stage;
}

export function instructions(text: string): Instruction[] {
  const out: Instruction[] = [];
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const start = i;
    let line = lines[i];
    if (/^\s*#/.test(line) || line.trim() === '') continue;
    while (/\\\s*$/.test(line) && i + 1 < lines.length) {
      i++;
      const next = lines[i];
      if (/^\s*#/.test(next)) continue;
      line = line.replace(/\\\s*$/, ' ') + next;
    }
    const m = /^\s*(\w+)\s*(.*)$/.exec(line);
    if (m) out.push({ keyword: m[1].toUpperCase(), args: m[2].trim(), line: start + 1 });
  }
  return out;
}

/** KEY=value pairs of ENV/ARG (quotes removed); also the legacy `ENV KEY value` form. */
export function keyValues(args: string): Record<string, string> {
  const out: Record<string, string> = {};
  if (!args.includes('=')) {
    const [k, ...rest] = args.split(/\s+/);
    out[k] = rest.join(' ');
    return out;
  }
  const re = /([A-Za-z_][A-Za-z0-9_]*)(?:=("([^"]*)"|'([^']*)'|(\S*)))?/g;
  for (const m of args.matchAll(re)) out[m[1]] = m[3] ?? m[4] ?? m[5] ?? '';
  return out;
}

function execForm(args: string): string[] | null {
  try {
    const v = JSON.parse(args);
    return Array.isArray(v) && v.every((x) => typeof x === 'string') ? v : null;
  } catch {
    return null;
  }
}

export function substitute(s: string, vars: Record<string, string>): string {
  return s.replace(/\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)/g, (_m, a, def, b) => vars[a ?? b] ?? def ?? '');
}

export function parseDockerfile(text: string): Dockerfile {
  const all = instructions(text);
  const globalArgs: Record<string, string> = {};
  const stages: Stage[] = [];
  let cur: Stage | null = null;
  for (const ins of all) {
    if (ins.keyword === 'FROM') {
      const parts = ins.args.split(/\s+/).filter((p) => !p.startsWith('--'));
      const base = parts[0];
      const name = parts.length >= 3 && parts[1].toUpperCase() === 'AS' ? parts[2] : null;
      const parent = stages.find((s) => s.name === base);
      cur = {
        name,
        base,
        image: parent ? parent.image : substitute(base, globalArgs),
        instructions: [],
        env: parent ? { ...parent.env } : {},
        workdir: parent ? parent.workdir : '/',
        copies: [],
        user: parent ? parent.user : null,
        entrypoint: parent ? parent.entrypoint : null,
        cmd: parent ? parent.cmd : null,
        healthcheck: parent ? parent.healthcheck : null,
      };
      stages.push(cur);
      continue;
    }
    if (cur === null) {
      if (ins.keyword === 'ARG') Object.assign(globalArgs, keyValues(ins.args));
      continue;
    }
    cur.instructions.push(ins);
    switch (ins.keyword) {
      case 'ENV':
        Object.assign(cur.env, keyValues(ins.args));
        break;
      case 'WORKDIR':
        cur.workdir = path.posix.resolve(cur.workdir, ins.args);
        break;
      case 'USER':
        cur.user = ins.args;
        break;
      case 'ENTRYPOINT':
        cur.entrypoint = execForm(ins.args) ?? ['/bin/sh', '-c', ins.args];
        cur.cmd = null; // Docker resets CMD when ENTRYPOINT is set
        break;
      case 'CMD':
        cur.cmd = execForm(ins.args) ?? ['/bin/sh', '-c', ins.args];
        break;
      case 'HEALTHCHECK':
        cur.healthcheck = ins.args;
        break;
      case 'COPY':
      case 'ADD': {
        const words = ins.args.split(/\s+/);
        const from = words.find((w) => w.startsWith('--from='))?.slice('--from='.length) ?? null;
        const paths = words.filter((w) => !w.startsWith('--'));
        cur.copies.push({ from, sources: paths.slice(0, -1), dest: paths[paths.length - 1] });
        break;
      }
    }
  }
  return {
    text,
    instructions: all,
    globalArgs,
    stages,
    stage(name: string) {
      const s = stages.find((st) => st.name === name);
      if (!s) throw new Error(`Dockerfile has no stage ${name}`);
      return s;
    },
  };
}

export function readDockerfile(): Dockerfile {
  return parseDockerfile(readFileSync(path.join(ROOT, 'Dockerfile'), 'utf8'));
}

/** The command a container of this stage runs: ENTRYPOINT followed by CMD. */
export function entryCommand(stage: Stage): string[] {
  return [...(stage.entrypoint ?? []), ...(stage.cmd ?? [])];
}

/** .dockerignore semantics enough for our file: patterns in order, `!` re-includes, the last match wins. */
export function dockerignoreIncludes(ignoreText: string, file: string): boolean {
  const patterns = ignoreText
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith('#'));
  let included = true;
  for (const raw of patterns) {
    const negate = raw.startsWith('!');
    const pat = (negate ? raw.slice(1) : raw).replace(/^\/+/, '').replace(/\/+$/, '');
    const re = new RegExp(
      '^' +
        pat
          .split('/')
          .map((seg) => (seg === '**' ? '(?:.*)' : seg.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '[^/]*').replace(/\?/g, '[^/]')))
          .join('/')
          .replace(/\(\?:\.\*\)\//g, '(?:.*/)?') +
        '(?:/.*)?$',
    );
    if (re.test(file)) included = negate;
  }
  return included;
}
