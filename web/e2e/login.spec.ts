import { expect, expectAccessible, screenshot, signIn, test } from "./support";

test.describe("signing in", () => {
  test("the login screen is accessible and a wrong password is refused", async ({ page }) => {
    await page.goto("/");
    await expect(page).toHaveURL(/\/login$/);
    await expect(page.getByRole("heading", { name: "Iniciar sesión" })).toBeVisible();
    await expectAccessible(page, "login");
    await screenshot(page, "login-es");

    await page.getByLabel("Usuario").fill("clerk");
    await page.getByLabel("Contraseña").fill("not-the-password");
    await page.getByRole("button", { name: "Entrar" }).click();
    await expect(page.getByRole("alert")).toHaveText("Usuario o contraseña incorrectos.");
    await expect(page.getByLabel("Contraseña")).toHaveValue("");
    await expect(page).toHaveURL(/\/login$/);
  });

  test("a throttled login says when to try again", async ({ page }) => {
    const username = `nadie-${Date.now()}`;
    await page.goto("/login");
    const submit = page.getByRole("button", { name: "Entrar" });
    const alert = page.getByTestId("login-error");
    let throttled = false;
    for (let attempt = 0; attempt < 8 && !throttled; attempt++) {
      await page.getByLabel("Usuario").fill(username);
      await page.getByLabel("Contraseña").fill(`wrong-${attempt}`);
      const answer = page.waitForResponse((r) => r.url().endsWith("/api/v1/auth/token"));
      await submit.click();
      const response = await answer;
      if (response.status() === 429) {
        throttled = true;
        expect(Number(response.headers()["retry-after"])).toBeGreaterThanOrEqual(1);
      } else {
        expect(response.status()).toBe(400);
        await expect(alert).toHaveText("Usuario o contraseña incorrectos.");
      }
    }
    expect(throttled, "the 4th failure in a row from one address is throttled").toBe(true);
    await expect(alert).toHaveText(/^Demasiados intentos fallidos\. Vuelva a intentarlo a las \d{1,2}:\d{2}:\d{2} \(dentro de \d+ s\)\.$/);
    await expect(alert).toBeFocused();
    await screenshot(page, "login-throttled-es");
  });

  test("the refresh token is an HttpOnly cookie, never in storage; a reload keeps the session and logout ends it", async ({ page, context }) => {
    await signIn(page, "clerk");
    const cookies = await context.cookies();
    const refresh = cookies.find((c) => c.name === "tramita_refresh");
    expect(refresh).toMatchObject({ httpOnly: true, secure: true, sameSite: "Strict", path: "/api/v1/auth" });
    expect(await page.evaluate(() => document.cookie)).not.toContain("tramita_refresh");
    const stored = await page.evaluate(() => JSON.stringify({ ...localStorage, ...sessionStorage }));
    expect(stored).not.toMatch(/eyJ|token/i);

    await page.reload();
    await expect(page.getByTestId("user-name")).toContainText("Demo, Tramitador");

    await page.getByRole("button", { name: "Cerrar sesión" }).click();
    await expect(page).toHaveURL(/\/login$/);
    await expect(page.getByText("Ha cerrado la sesión.")).toBeVisible();
    await expect.poll(async () => (await context.cookies()).some((c) => c.name === "tramita_refresh")).toBe(false);
    await page.goto("/files");
    await expect(page).toHaveURL(/\/login$/);
  });

  test("keyboard only: sign in and open the first file", async ({ page }) => {
    await page.goto("/login");
    await page.keyboard.press("Tab"); // Español
    await page.keyboard.press("Tab"); // English
    await page.keyboard.press("Tab");
    await expect(page.getByLabel("Usuario")).toBeFocused();
    await page.keyboard.type("clerk");
    await page.keyboard.press("Tab");
    await page.keyboard.type("clerk-dev-only");
    await page.keyboard.press("Enter");
    await expect(page).toHaveURL(/\/files/);
    // A keyboard user presses Tab once the screen is there: the URL changes
    // before the list's code and data have arrived, and a Tab pressed in
    // between lands on the login form on its way out.
    await expect(page.getByRole("heading", { name: "Expedientes" })).toBeVisible();
    await page.keyboard.press("Tab");
    await expect(page.getByRole("link", { name: "Saltar al contenido" })).toBeFocused();
    await page.keyboard.press("Enter");
    await expect(page.locator("#main")).toBeFocused();
  });
});
