// Builds the panel into idcs_core/static/panel: one bundled, minified script and one style sheet
// with content-hashed names, an index.html that loads them (no inline script: the page's CSP
// forbids it), and a gzip copy of each asset for browsers that accept it.
import { build } from 'esbuild';
import { mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';

const here = dirname(fileURLToPath(import.meta.url));
const out = process.env.PANEL_OUT || join(here, '..', '..', 'idcs_core', 'static', 'panel');
rmSync(out, { recursive: true, force: true });
mkdirSync(out, { recursive: true });

const result = await build({
  entryPoints: { app: join(here, 'src', 'main.js') },
  bundle: true, minify: true, format: 'esm', target: ['es2020'], outdir: out,
  entryNames: '[name]-[hash]', metafile: true, logLevel: 'warning',
});
const files = Object.keys(result.metafile.outputs).map((p) => basename(p));
const js = files.find((f) => f.endsWith('.js'));
const css = files.find((f) => f.endsWith('.css'));
const page = `<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>OpenIDCS</title>
<link rel="stylesheet" href="/panel/${css}">
<script type="module" src="/panel/${js}"></script>
</head><body><div id="app"></div><noscript>OpenIDCS needs JavaScript.</noscript></body></html>
`;
writeFileSync(join(out, 'index.html'), page);
for (const f of readdirSync(out)) {
  if (/\.(js|css)$/.test(f)) writeFileSync(join(out, f + '.gz'), gzipSync(readFileSync(join(out, f)), { level: 9 }));
}
console.log(`panel built into ${out}: ${files.join(' ')}`);
