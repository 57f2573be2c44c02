import { beforeEach, describe, expect, it } from "vitest";
import { render, screen } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { createMemoryRouter, RouterProvider } from "react-router";
import { fakeApi, fakeJwt, json } from "../test/api";
import { session } from "../auth/instance";
import { LoginPage } from "./LoginPage";

const api = fakeApi;

function renderLogin() {
  const router = createMemoryRouter(
    [
      { path: "/login", element: <LoginPage /> },
      { path: "/files", element: <p>the list</p> },
    ],
    { initialEntries: ["/login"] },
  );
  render(<RouterProvider router={router} />);
  return router;
}

async function signIn(username: string, password: string) {
  const user = userEvent.setup();
  await user.type(screen.getByLabelText("Usuario"), username);
  await user.type(screen.getByLabelText("Contraseña"), password);
  await user.click(screen.getByRole("button", { name: "Entrar" }));
}

beforeEach(() => {
  // Each test starts signed out (the page's session is one per module).
  session.endedElsewhere();
});

describe("LoginPage", () => {
  it("given a throttled login, says at what time to try again and waits until then", async () => {
    api.handlers.set("POST /auth/token", () =>
      json({ error: "slow_down", error_description: "too many failed logins" }, { status: 429, headers: { "retry-after": "30" } }),
    );
    renderLogin();
    const before = Date.now();

    await signIn("clerk", "wrong");

    const alert = await screen.findByRole("alert");
    const time = new Intl.DateTimeFormat("es", { timeStyle: "medium" });
    const expected = [0, 1, 2].map((s) => time.format(before + 30_000 + s * 1000));
    expect(alert.textContent).toMatch(/^Demasiados intentos fallidos\. Vuelva a intentarlo a las .+ \(dentro de 30 s\)\.$/);
    expect(expected.some((t) => alert.textContent?.includes(t))).toBe(true);
    expect(screen.getByRole("button", { name: "Entrar" })).toBeDisabled();
    expect(alert).toHaveFocus();
  });

  it("signs in as the web client: form body with client_id, the anti-CSRF header, no token kept in storage", async () => {
    api.handlers.set("POST /auth/token", () =>
      json({ access_token: fakeJwt({ sub: "u1", name: "Demo, Tramitador", roles: ["clerk"] }), token_type: "Bearer", expires_in: 300 }),
    );
    const router = renderLogin();

    await signIn("clerk", "clerk-dev-only");

    expect(await screen.findByText("the list")).toBeInTheDocument();
    expect(router.state.location.pathname).toBe("/files");
    const request = api.requests.at(-1) as Request;
    expect(request.headers.get("x-tramita-web")).toBe("1");
    expect(request.headers.get("content-type")).toBe("application/x-www-form-urlencoded");
    const form = new URLSearchParams(await request.text());
    expect(Object.fromEntries(form)).toEqual({
      grant_type: "password",
      username: "clerk",
      password: "clerk-dev-only",
      client_id: "tramita-web",
    });
    expect(localStorage.length === 0 || !JSON.stringify({ ...localStorage }).includes("eyJ")).toBe(true);
    expect(sessionStorage.length).toBe(0);
  });

  it("a wrong password clears the password and says so", async () => {
    api.handlers.set("POST /auth/token", () => json({ error: "invalid_grant", error_description: "invalid username or password" }, { status: 400 }));
    renderLogin();
    await signIn("clerk", "wrong");
    expect(await screen.findByRole("alert")).toHaveTextContent("Usuario o contraseña incorrectos.");
    expect(screen.getByLabelText("Contraseña")).toHaveValue("");
    expect(screen.getByRole("button", { name: "Entrar" })).toBeEnabled();
  });
});
