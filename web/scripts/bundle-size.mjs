// The initial bundle's size: the JavaScript and CSS that web/dist/index.html
// loads before the first screen (entry script, module preloads, styles),
// gzipped, and everything else (chunks loaded on demand). Fails above the
// budget of 200 KB gzipped. Prints JSON; `--out FILE` also writes it there.
import { readFile, readdir, writeFile } from "node:fs/promises";
import { gzipSync } from "node:zlib";
import path from "node:path";
import { fileURLToPath } from "node:url";

const dist = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../dist");
const BUDGET = 200 * 1024;
const html = await readFile(path.join(dist, "index.html"), "utf8");
const initial = new Set(
  [...html.matchAll(/(?:src|href)="\/(assets\/[^"]+\.(?:js|css))"/g)].map((match) => match[1]),
);

const sizes = { initial_js_gzip: 0, initial_css_gzip: 0, lazy_js_gzip: 0, files: {} };
for (const name of await readdir(path.join(dist, "assets"))) {
  const file = `assets/${name}`;
  const body = await readFile(path.join(dist, file));
  const gzip = gzipSync(body, { level: 9 }).length;
  sizes.files[file] = { bytes: body.length, gzip };
  if (initial.has(file)) {
    if (name.endsWith(".css")) sizes.initial_css_gzip += gzip;
    else sizes.initial_js_gzip += gzip;
  } else if (name.endsWith(".js")) {
    sizes.lazy_js_gzip += gzip;
  }
}
sizes.initial_total_gzip = sizes.initial_js_gzip + sizes.initial_css_gzip;
sizes.budget_gzip = BUDGET;
const text = JSON.stringify(sizes, null, 2);
console.log(text);
const outIndex = process.argv.indexOf("--out");
if (outIndex > 0 && process.argv[outIndex + 1]) await writeFile(process.argv[outIndex + 1], text + "\n");
if (sizes.initial_total_gzip > BUDGET) {
  console.error(`the initial bundle is ${sizes.initial_total_gzip} bytes gzipped, over the budget of ${BUDGET}`);
  process.exit(1);
}
