// The dashboard's static files (coordinator/http/dashboard/) on the coordinator's HTTP port. The page
// itself needs no API key; what it shows comes from /api/status, which does.
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { FastifyInstance } from 'fastify';

const FILES = {
  '/': { file: 'index.html', type: 'text/html; charset=utf-8' },
  '/dashboard/app.js': { file: 'app.js', type: 'text/javascript; charset=utf-8' },
  '/dashboard/style.css': { file: 'style.css', type: 'text/css; charset=utf-8' },
} as const;

/**
 * tsc compiles this module to dist/coordinator/http/ but copies no assets, so the files are read from
 * the source tree: beside this module when run from source, three levels up from dist otherwise.
 */
function assetDirectory(): string {
  const candidates = [new URL('./dashboard/', import.meta.url), new URL('../../../coordinator/http/dashboard/', import.meta.url)].map((u) => fileURLToPath(u));
  const found = candidates.find((d) => existsSync(`${d}index.html`));
  if (!found) throw new Error(`the dashboard's files are missing (looked in ${candidates.join(' and ')})`);
  return found;
}

/** Registers GET / and the page's assets; the files are read once, at start. */
export function registerDashboard(app: FastifyInstance): void {
  const dir = assetDirectory();
  for (const [route, { file, type }] of Object.entries(FILES)) {
    const body = readFileSync(`${dir}${file}`);
    app.get(route, (_req, reply) => reply.type(type).header('cache-control', 'no-cache').header('x-content-type-options', 'nosniff').send(body));
  }
}
