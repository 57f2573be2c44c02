// The life of one file: a clerk creates it with a PDF and takes it through
// the rejection loop, a validator finishes it, a reader only reads it; then
// every screen again in English. Tests run in order and share the file.
import type { Page } from "@playwright/test";
import { expect, expectAccessible, newClient, pdf, screenshot, signIn, test } from "./support";

test.describe.configure({ mode: "serial" });

let fileUrl = "";
let code = "";
const description = `Licencia de obra menor e2e ${Date.now()}`;

async function changePhase(page: Page, to: string, key: string, comment?: string) {
  await page.getByRole("button", { name: "Cambiar de fase" }).click();
  const dialog = page.getByRole("dialog");
  await expect(dialog).toBeVisible();
  await dialog.getByRole("radio", { name: to }).check();
  if (comment) await dialog.getByLabel("Comentario (opcional)").fill(comment);
  await dialog.getByRole("button", { name: "Cambiar de fase" }).click();
  await expect(dialog).toBeHidden();
  await expect(page.getByTestId("file-phase")).toHaveAttribute("data-phase", key);
}

test("a clerk uploads a PDF, creates a file and watches it become active", async ({ page }) => {
  await signIn(page, "clerk");
  await expect(page.getByTestId("user-name")).toContainText("Demo, Tramitador");
  await expectAccessible(page, "file list");
  await screenshot(page, "list-es");

  await page.getByRole("link", { name: "Crear expediente" }).click();
  await expect(page.getByRole("heading", { name: "Crear expediente", level: 1 })).toBeVisible();
  await expectAccessible(page, "create file");

  // Required fields are said beside each field
  await page.getByRole("button", { name: "Crear expediente" }).click();
  await expect(page.getByTestId("form-errors")).toBeFocused();
  await expect(page.getByTestId("cf-first_document-errors")).toHaveText("Este campo es obligatorio.");
  await expect(page.getByTestId("cf-description-errors")).toHaveText("Este campo es obligatorio.");

  // The API's field error (problem+json) lands beside its field
  await page.getByLabel(/^Primer documento/).setInputFiles({ name: "solicitud.pdf", mimeType: "application/pdf", buffer: pdf("solicitud") });
  await page.getByLabel(/^Opción inicial/).selectOption("Sede electrónica");
  await page.getByLabel(/^Código/).fill("código no válido!");
  await page.getByLabel(/^Descripción/).fill(description);
  await page.getByRole("button", { name: "Crear expediente" }).click();
  await expect(page.getByTestId("cf-code-errors")).toContainText("may contain only letters");
  await expect(page.getByLabel(/^Código/)).toHaveAttribute("aria-invalid", "true");
  await expectAccessible(page, "create file with errors");
  await screenshot(page, "create-es");

  // Corrected, the file is created and the saga followed until active
  await page.getByLabel(/^Código/).fill("");
  await page.getByRole("button", { name: "Crear expediente" }).click();
  await expect(page.getByTestId("saga-outcome")).toHaveAttribute("data-outcome", "active", { timeout: 60_000 });
  await expect(page.getByTestId("saga-steps").getByRole("listitem")).toHaveText([
    /Documento subido\(hecho\)/,
    /Expediente registrado\(hecho\)/,
    /Documento adjuntado\(hecho\)/,
    /Procedimiento iniciado\(hecho\)/,
    /Expediente activo\(hecho\)/,
  ]);
  const heading = await page.getByRole("heading", { level: 1 }).textContent();
  code = /Creación del expediente (\S+)/.exec(heading ?? "")?.[1] ?? "";
  expect(code).toMatch(/^\d{4}\/\d{6}$/);
  await expectAccessible(page, "saga progress");
  await screenshot(page, "create-progress-es");

  await page.getByRole("link", { name: "Abrir el expediente" }).click();
  await expect(page).toHaveURL(/\/files\/[0-9a-f-]{36}$/);
  fileUrl = new URL(page.url()).pathname;
  await expect(page.getByRole("heading", { name: `Expediente ${code}`, level: 1 })).toBeVisible();
  await expect(page.getByTestId("file-status")).toHaveText("Activo");
  await expect(page.getByTestId("file-phase")).toHaveAttribute("data-phase", "initial");
  await expect(page.getByTestId("file-phase")).toContainText("Fase inicial");
  await expect(page.getByTestId("documents").getByRole("row", { name: /solicitud\.pdf/ })).toContainText("Demo, Tramitador");
  await expect(page.getByTestId("file-description")).toHaveText(description);
});

test("the clerk edits it, adds a version and takes it through the rejection loop", async ({ page }) => {
  await signIn(page, "clerk");
  await page.goto(fileUrl);
  await expect(page.getByTestId("file-status")).toHaveText("Activo");

  await page.getByRole("button", { name: "Editar descripción" }).click();
  await page.getByLabel(/^Descripción/).fill(`${description} (corregida)`);
  await page.getByRole("button", { name: "Guardar" }).click();
  await expect(page.getByTestId("file-description")).toHaveText(`${description} (corregida)`);

  await page.getByLabel("Documento", { exact: true }).setInputFiles({ name: "solicitud.pdf", mimeType: "application/pdf", buffer: pdf("solicitud v2") });
  await page.getByRole("button", { name: "Subir" }).click();
  await expect(page.getByText("Documento solicitud.pdf subido (versión 2).")).toBeVisible();
  await expect(page.getByTestId("documents").getByRole("row", { name: /solicitud\.pdf/ }).getByTestId("document-versions")).toHaveText("2");

  const download = page.waitForEvent("download");
  await page.getByRole("button", { name: "Descargar solicitud.pdf" }).click();
  expect((await download).suggestedFilename()).toBe("solicitud.pdf");

  await changePhase(page, "Fase de análisis técnico", "technical_analysis");
  await changePhase(page, "Fase rechazado", "rejected", "Falta el plano de situación");
  await changePhase(page, "Fase inicial", "initial");
  await changePhase(page, "Fase de análisis técnico", "technical_analysis");
  await changePhase(page, "Fase de validación", "validation", "Informe técnico favorable");

  // Only a validator finishes a file: the clerk is offered the rejection only
  await page.getByRole("button", { name: "Cambiar de fase" }).click();
  const dialog = page.getByRole("dialog");
  await expect(dialog.getByRole("radio")).toHaveCount(1);
  await expect(dialog.getByRole("radio", { name: "Fase rechazado" })).toBeVisible();
  await expectAccessible(page, "change phase dialog");
  await screenshot(page, "change-phase-es", { fullPage: false });
  await page.keyboard.press("Escape");
  await expect(dialog).toBeHidden();

  const history = page.getByTestId("phase-history").locator("tbody tr");
  await expect(history).toHaveCount(6);
  await expect(history.locator("td:first-child")).toHaveText([
    "Fase inicial",
    "Fase de análisis técnico",
    "Fase rechazado",
    "Fase inicial",
    "Fase de análisis técnico",
    "Fase de validación",
  ]);
  await expect(history.nth(2)).toContainText("Falta el plano de situación");
  await expect(page.getByTestId("timeline").locator("li")).not.toHaveCount(0);
  await expectAccessible(page, "file detail");
  await screenshot(page, "detail-es");
});

test("a validator finishes it and its documents become read-only", async ({ page }) => {
  await signIn(page, "validator");
  await page.getByLabel("Buscar").fill(code);
  await page.getByLabel("Estado").selectOption("active");
  await page.getByRole("button", { name: "Aplicar" }).click();
  await expect(page).toHaveURL(new RegExp(`q=${encodeURIComponent(code).replace(/%2F/g, "(%2F|/)")}.*status=active|status=active.*q=`));
  await page.getByRole("link", { name: code }).click();
  await expect(page.getByTestId("file-phase")).toHaveAttribute("data-phase", "validation");

  await changePhase(page, "Finalizado", "finished", "Concedida");
  await expect(page.getByTestId("file-status")).toHaveText("Finalizado");
  await expect(page.getByTestId("documents-read-only")).toHaveText("Los documentos de un expediente finalizado son de solo lectura.");
  await expect(page.getByRole("button", { name: "Subir" })).toHaveCount(0);
  await expect(page.getByRole("button", { name: "Cambiar de fase" })).toHaveCount(0);
  await expect(page.getByRole("button", { name: "Editar descripción" })).toHaveCount(0);
  await expect(page.getByRole("button", { name: "Descargar solicitud.pdf" })).toBeVisible();
  await expectAccessible(page, "finished file");
  await screenshot(page, "detail-finished-es");

  // The list's filters live in the URL: a shared link shows the same list
  await page.goto(`/files?q=${encodeURIComponent(code)}&status=finished`);
  await expect(page.getByLabel("Estado")).toHaveValue("finished");
  await expect(page.getByTestId("file-list").locator("tbody tr")).toHaveCount(1);
  await expect(page.getByTestId("file-list")).toContainText("Finalizado");
});

test("a reader sees no actions", async ({ page }) => {
  await signIn(page, "reader");
  await expect(page.getByRole("link", { name: "Crear expediente" })).toHaveCount(0);
  await page.goto(fileUrl);
  await expect(page.getByTestId("file-code")).toHaveText(code);
  await expect(page.getByRole("button", { name: "Cambiar de fase" })).toHaveCount(0);
  await expect(page.getByRole("button", { name: "Editar descripción" })).toHaveCount(0);
  await expect(page.getByRole("button", { name: "Subir" })).toHaveCount(0);
  await page.goto("/files/new");
  await expect(page.getByRole("alert")).toContainText("No tiene permiso para esta acción.");
  await expect(page.getByLabel(/^Primer documento/)).toHaveCount(0);
});

test("in English: every screen, and the choice is kept", async ({ browser }) => {
  const context = await newClient(browser, { locale: "en-GB" });
  const page = await context.newPage();
  await page.goto("/login");
  await page.getByRole("button", { name: "English" }).click();
  await expect(page.getByRole("heading", { name: "Sign in" })).toBeVisible();
  await expect(page.locator("html")).toHaveAttribute("lang", "en");
  await expectAccessible(page, "login (en)");
  await screenshot(page, "login-en");

  await signIn(page, "clerk");
  await expect(page.getByRole("heading", { name: "Files", level: 1 })).toBeVisible();
  await expect(page.getByRole("button", { name: "English" })).toHaveAttribute("aria-pressed", "true");
  await expectAccessible(page, "file list (en)");
  await screenshot(page, "list-en");

  await page.getByRole("link", { name: "Create file" }).click();
  await page.getByRole("button", { name: "Create file" }).click();
  await expect(page.getByTestId("cf-first_document-errors")).toHaveText("This field is required.");
  await expectAccessible(page, "create file (en)");
  await screenshot(page, "create-en");

  await page.goto(fileUrl);
  await expect(page.getByRole("heading", { name: `File ${code}`, level: 1 })).toBeVisible();
  await expect(page.getByTestId("file-status")).toHaveText("Finished");
  await expect(page.getByTestId("phase-history").locator("tbody tr td:first-child").first()).toHaveText("Initial phase");
  await expect(page.getByTestId("documents-read-only")).toHaveText("The documents of a finished file are read-only.");
  await expectAccessible(page, "file detail (en)");
  await screenshot(page, "detail-en");

  await page.reload();
  await expect(page.getByRole("heading", { name: `File ${code}`, level: 1 })).toBeVisible();
  await context.close();
});

test("on a 360 px phone nothing scrolls sideways", async ({ browser }) => {
  const context = await newClient(browser, { viewport: { width: 360, height: 740 }, isMobile: true, hasTouch: true });
  const page = await context.newPage();
  await signIn(page, "clerk");
  await expect(page.getByTestId("file-list")).toBeVisible();
  const overflow = () => page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
  expect(await overflow()).toBeLessThanOrEqual(0);
  await expectAccessible(page, "file list (phone)");
  await screenshot(page, "list-phone-es");
  await page.goto(fileUrl);
  await expect(page.getByTestId("file-code")).toHaveText(code);
  expect(await overflow()).toBeLessThanOrEqual(0);
  await screenshot(page, "detail-phone-es");
  await context.close();
});
