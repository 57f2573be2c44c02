// Lighthouse (performance, accessibility, best practices) of the file list
// and a file's detail against a running suite, with Debian's Chromium,
// signed in as the clerk. Prints JSON; `--out FILE` also writes it there.
//   TRAMITA_E2E_BASE_URL   the gateway (default http://127.0.0.1:8080)
//   CHROMIUM               the browser (default /usr/bin/chromium)
import { readFile, writeFile } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import puppeteer from "puppeteer-core";
import { navigation, desktopConfig } from "lighthouse";

const base = process.env.TRAMITA_E2E_BASE_URL ?? "http://127.0.0.1:8080";
const executablePath = process.env.CHROMIUM ?? "/usr/bin/chromium";
const here = path.dirname(fileURLToPath(import.meta.url));

const browser = await puppeteer.launch({
  executablePath,
  headless: true,
  args: ["--no-sandbox", "--disable-dev-shm-usage"],
});
const version = await browser.version();
const page = await browser.newPage();
await page.goto(`${base}/login`, { waitUntil: "networkidle0" });
await page.type("#username", "clerk");
await page.type("#password", "clerk-dev-only");
await Promise.all([page.waitForSelector("[data-testid=file-list]"), page.click("button[type=submit]")]);
const firstFile = await page.$eval("[data-testid=file-list] a.code-link", (a) => a.getAttribute("href"));

const screens = { list: `${base}/files`, detail: `${base}${firstFile}` };
const results = {};
for (const [formFactor, config] of [["mobile", undefined], ["desktop", desktopConfig]]) {
  for (const [screen, url] of Object.entries(screens)) {
    // The refresh cookie must survive: the app restores its session from it.
    const flow = await navigation(page, url, { config, flags: { disableStorageReset: true } });
    const lhr = flow.lhr;
    const metric = (id) => lhr.audits[id]?.numericValue ?? null;
    results[`${screen}_${formFactor}`] = {
      url,
      performance: Math.round((lhr.categories.performance?.score ?? 0) * 100),
      accessibility: Math.round((lhr.categories.accessibility?.score ?? 0) * 100),
      best_practices: Math.round((lhr.categories["best-practices"]?.score ?? 0) * 100),
      first_contentful_paint_ms: metric("first-contentful-paint"),
      largest_contentful_paint_ms: metric("largest-contentful-paint"),
      total_blocking_time_ms: metric("total-blocking-time"),
      cumulative_layout_shift: metric("cumulative-layout-shift"),
      failed_accessibility_audits: Object.values(lhr.audits)
        .filter((a) => lhr.categories.accessibility.auditRefs.some((r) => r.id === a.id) && a.score === 0)
        .map((a) => a.id),
    };
  }
}
await browser.close();

let bundle = null;
try {
  bundle = JSON.parse(await readFile(path.join(here, "../dist/bundle-size.json"), "utf8"));
} catch {
  bundle = null;
}
const report = {
  measured_at: new Date().toISOString(),
  browser: version,
  note: "Lighthouse 12 default (mobile: Moto G power, simulated slow 4G, 4x CPU slowdown) and desktop presets, against the local suite (debug builds of the services) through the gateway",
  bundle: bundle && {
    initial_js_gzip: bundle.initial_js_gzip,
    initial_css_gzip: bundle.initial_css_gzip,
    initial_total_gzip: bundle.initial_total_gzip,
    lazy_js_gzip: bundle.lazy_js_gzip,
  },
  lighthouse: results,
};
const text = JSON.stringify(report, null, 2);
console.log(text);
const outIndex = process.argv.indexOf("--out");
if (outIndex > 0 && process.argv[outIndex + 1]) await writeFile(process.argv[outIndex + 1], text + "\n");
