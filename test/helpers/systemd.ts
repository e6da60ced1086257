// Reading a systemd unit back as systemd reads it, written apart from cli/service/definition.ts so
// that a quoting mistake there is not repeated here; and systemd's own checker, systemd-analyze.
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** Every `Key=value` of a unit, by section, in order (a key may repeat: Environment=). */
export function unitEntries(text: string): Map<string, [string, string][]> {
  const sections = new Map<string, [string, string][]>();
  let current: [string, string][] | null = null;
  for (const line of text.split('\n')) {
    if (line.startsWith('#') || line.trim() === '') continue;
    const section = /^\[(.+)\]$/.exec(line);
    if (section) {
      current = [];
      sections.set(section[1]!, current);
      continue;
    }
    const eq = line.indexOf('=');
    if (!current || eq < 0) throw new Error(`not a unit line: ${line}`);
    current.push([line.slice(0, eq), line.slice(eq + 1)]);
  }
  return sections;
}

export function unitValue(text: string, section: string, key: string): string[] {
  return (unitEntries(text).get(section) ?? []).filter(([k]) => k === key).map(([, v]) => v);
}

/**
 * A command line as systemd turns it into argv: specifiers first (only `%%` is expected here), then
 * words split on blanks, with quoted spans ("…" or '…') and C escapes, then `$$` to `$` (other `$` would be
 * variables, which a hearth unit never uses).
 */
export function execStartArgv(value: string): string[] {
  return unitWords(value, true);
}

/** Words of a unit value; `commandLine`: `$` is a variable there, `$$` a dollar (not in Environment=). */
function unitWords(value: string, commandLine: boolean): string[] {
  if (/%[^%]/.test(value.replaceAll('%%', ''))) throw new Error(`a specifier other than %% in ${value}`);
  const line = value.replaceAll('%%', '%');
  const words: string[] = [];
  let i = 0;
  while (i < line.length) {
    while (line[i] === ' ' || line[i] === '\t') i++;
    if (i >= line.length) break;
    let word = '';
    let quoted: '"' | "'" | null = null;
    for (; i < line.length; i++) {
      const c = line[i]!;
      if (!quoted && (c === ' ' || c === '\t')) break;
      if ((c === '"' || c === "'") && (quoted === null || quoted === c)) {
        quoted = quoted === null ? c : null;
        continue;
      }
      if (c === '\\') {
        const n = line[++i];
        word += n === 'n' ? '\n' : n === 't' ? '\t' : (n ?? '');
        continue;
      }
      word += c;
    }
    if (quoted) throw new Error(`unbalanced quotes in ${value}`);
    if (!commandLine) {
      words.push(word);
      continue;
    }
    if (word.replaceAll('$$', '').includes('$')) throw new Error(`a variable in ${word}`);
    words.push(word.replaceAll('$$', '$'));
  }
  return words;
}

/** `Environment=` values as a map: each is one word, "NAME=value". */
export function unitEnvironment(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const v of unitValue(text, 'Service', 'Environment')) {
    for (const word of unitWords(v, false)) out[word.slice(0, word.indexOf('='))] = word.slice(word.indexOf('=') + 1);
  }
  return out;
}

export const haveSystemdAnalyze = spawnSync('systemd-analyze', ['--version'], { stdio: 'ignore' }).status === 0;

/**
 * `systemd-analyze verify` on the unit, as `name`: it needs no running systemd, and checks every
 * key, the quoting, and that ExecStart's program exists. Returns what it printed (nothing: valid).
 */
export function verifyUnit(text: string, name: string, scope: 'system' | 'user'): { status: number | null; output: string } {
  const dir = mkdtempSync(join(tmpdir(), 'hearth-unit-'));
  try {
    writeFileSync(join(dir, name), text);
    // A user manager wants a runtime directory even to verify.
    const runtime = join(dir, 'runtime');
    mkdirSync(runtime, { mode: 0o700 });
    const r = spawnSync('systemd-analyze', [...(scope === 'user' ? ['--user'] : []), 'verify', join(dir, name)], {
      encoding: 'utf8',
      cwd: dir,
      env: { ...process.env, XDG_RUNTIME_DIR: runtime, SYSTEMD_LOG_COLOR: '0' },
      timeout: 30_000,
    });
    return { status: r.status, output: `${r.stdout}${r.stderr}`.trim() };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
