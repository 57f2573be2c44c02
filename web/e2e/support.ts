// Helpers of the end-to-end tests: a client address per browser context,
// sign-in, the axe scan and the screenshots.
import AxeBuilder from "@axe-core/playwright";
import { expect, test as base, type Browser, type BrowserContext, type Page } from "@playwright/test";
import path from "node:path";
import { mkdirSync } from "node:fs";

/** A client address of its own (10.x.y.z), so throttling of one test never reaches another. */
export function clientAddress(): string {
  const octet = () => 1 + Math.floor(Math.random() * 254);
  return `10.${octet()}.${octet()}.${octet()}`;
}

/** A new browser context playing a client at its own address. */
export async function newClient(browser: Browser, options: Parameters<Browser["newContext"]>[0] = {}): Promise<BrowserContext> {
  return browser.newContext({ ...options, extraHTTPHeaders: { "X-Forwarded-For": clientAddress() } });
}

export const test = base.extend({
  context: async ({ browser }, use) => {
    const context = await newClient(browser);
    await use(context);
    await context.close();
  },
});
export { expect };

export const USERS = {
  clerk: { username: "clerk", password: "clerk-dev-only", name: "Demo, Tramitador" },
  validator: { username: "validator", password: "validator-dev-only" },
  reader: { username: "reader", password: "reader-dev-only" },
} as const;

/** Signs in through the login screen and waits for the file list. */
export async function signIn(page: Page, who: keyof typeof USERS) {
  const user = USERS[who];
  await page.goto("/login");
  await page.getByLabel(/^(Usuario|User name)$/).fill(user.username);
  await page.getByLabel(/^(Contraseña|Password)$/).fill(user.password);
  await page.getByRole("button", { name: /^(Entrar|Sign in)$/ }).click();
  await expect(page).toHaveURL(/\/files(\?|$)/);
  await expect(page.getByRole("heading", { level: 1 })).toBeVisible();
}

/** Scans the page with axe for WCAG 2.0/2.1 A and AA violations. */
export async function expectAccessible(page: Page, screen: string) {
  const results = await new AxeBuilder({ page }).withTags(["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]).analyze();
  const violations = results.violations.map((v) => ({
    id: v.id,
    impact: v.impact,
    help: v.help,
    targets: v.nodes.map((n) => n.target.join(" ")).slice(0, 5),
  }));
  expect(violations, `axe violations on the ${screen} screen`).toEqual([]);
}

const SCREENSHOTS = process.env.TRAMITA_SCREENSHOTS ?? path.resolve(import.meta.dirname, "../../docs/screenshots");

/** Saves a screenshot of the whole page as docs/screenshots/<name>.png. */
export async function screenshot(page: Page, name: string, { fullPage = true } = {}) {
  mkdirSync(SCREENSHOTS, { recursive: true });
  await page.screenshot({ path: path.join(SCREENSHOTS, `${name}.png`), fullPage, animations: "disabled" });
}

/** A small PDF the docs service recognises by its signature. */
export function pdf(title: string): Buffer {
  return Buffer.from(
    `%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\n2 0 obj << /Type /Pages /Kids [] /Count 0 >> endobj\n% ${title}\ntrailer << /Root 1 0 R >>\n%%EOF\n`,
  );
}
