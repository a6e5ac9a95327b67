// Reads a docker env file (KEY=value lines, # comments, no quoting or expansion, as compose's env_file and .env).

export function parseEnvFile(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    const eq = line.indexOf('=');
    if (eq <= 0) throw new Error(`not KEY=value: ${raw}`);
    const key = line.slice(0, eq).trim();
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(key)) throw new Error(`bad variable name: ${key}`);
    if (key in out) throw new Error(`${key} is set twice`);
    out[key] = line.slice(eq + 1);
  }
  return out;
}
