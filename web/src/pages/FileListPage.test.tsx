import { beforeEach, describe, expect, it } from "vitest";
import { render, screen, within } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { QueryClient, QueryClientProvider } from "@tanstack/react-query";
import { createMemoryRouter, RouterProvider } from "react-router";
import { session } from "../auth/instance";
import { fakeApi, fakeJwt, json } from "../test/api";
import { FileListPage } from "./FileListPage";

const api = fakeApi;

const names = (es: string, en: string) => ({ es, en });
function row(code: string, overrides: object = {}) {
  return {
    id: `id-${code}`,
    code,
    initial_option: "Sede electrónica",
    description: `Licencia ${code}`,
    status: "active",
    overdue: false,
    suspended: false,
    created_at: "2026-03-01T09:30:00Z",
    updated_at: "2026-03-01T09:30:00Z",
    version: 1,
    phase: { key: "validation", names: names("Fase de validación", "Validation phase") },
    due_date: "2026-03-10",
    ...overrides,
  };
}

async function signInAs(roles: string[]) {
  api.handlers.set("POST /auth/token", () =>
    json({ access_token: fakeJwt({ sub: "u", name: "Demo, Usuario", roles }), token_type: "Bearer", expires_in: 300 }),
  );
  await session.login("u", "p");
}

function renderList(url: string) {
  const router = createMemoryRouter([{ path: "/files", element: <FileListPage /> }], { initialEntries: [url] });
  const queries = new QueryClient({ defaultOptions: { queries: { retry: false } } });
  render(
    <QueryClientProvider client={queries}>
      <RouterProvider router={router} />
    </QueryClientProvider>,
  );
  return router;
}

const listCalls = () =>
  api.requests.filter((r) => new URL(r.url).pathname === "/api/v1/index/files").map((r) => Object.fromEntries(new URL(r.url).searchParams));

beforeEach(() => {
  api.requests.length = 0;
  api.handlers.set("GET /files/initial-options", () => json({ options: ["Sede electrónica", "A petición departamento"] }));
  api.handlers.set("GET /bpm/definitions", () =>
    json({
      items: [
        {
          key: "standard",
          version: 1,
          names: names("Procedimiento estándar", "Standard procedure"),
          published_at: "2026-01-01T00:00:00Z",
          transitions: [],
          phases: [
            { key: "initial", names: names("Fase inicial", "Initial phase"), initial: true, terminal: false },
            { key: "validation", names: names("Fase de validación", "Validation phase"), initial: false, terminal: false },
          ],
        },
      ],
    }),
  );
  api.handlers.set("GET /index/files", (request) => {
    const cursor = new URL(request.url).searchParams.get("cursor");
    return cursor
      ? json({ items: [row("2026/000003")] })
      : json({ items: [row("2026/000001", { overdue: true }), row("2026/000002")], next_cursor: "c2" });
  });
});

describe("FileListPage", () => {
  it("given a shared URL, shows its filters and asks the index for exactly them", async () => {
    await signInAs(["clerk"]);
    renderList("/files?q=obra&status=active&phase=validation&overdue=true");

    const table = await screen.findByTestId("file-list");
    expect(screen.getByLabelText("Buscar")).toHaveValue("obra");
    expect(screen.getByLabelText("Estado")).toHaveValue("active");
    expect(screen.getByLabelText("Plazo")).toHaveValue("true");
    expect(listCalls().at(-1)).toEqual({ q: "obra", status: "active", phase: "validation", overdue: "true", limit: "20" });

    const overdue = within(table).getByRole("row", { name: /2026\/000001/ });
    expect(overdue).toHaveClass("overdue");
    expect(within(overdue).getByText("Vencido")).toBeInTheDocument();
    expect(within(table).getByRole("row", { name: /2026\/000002/ })).not.toHaveClass("overdue");
    expect(within(table).getByRole("link", { name: "2026/000001" })).toHaveAttribute("href", "/files/id-2026/000001");
    expect(screen.getByRole("link", { name: "Crear expediente" })).toBeInTheDocument();
  });

  it("puts new criteria into the URL from the first page, and the next page's cursor too", async () => {
    await signInAs(["clerk"]);
    const router = renderList("/files?q=obra");
    const user = userEvent.setup();
    await screen.findByTestId("file-list");

    await user.click(screen.getByRole("link", { name: "Página siguiente" }));
    expect(router.state.location.search).toBe("?q=obra&cursor=c2&page=2");
    expect(await screen.findByText("2026/000003")).toBeInTheDocument();
    expect(screen.getByText("Página 2")).toBeInTheDocument();
    expect(listCalls().at(-1)).toMatchObject({ q: "obra", cursor: "c2" });

    await user.selectOptions(screen.getByLabelText("Estado"), "finished");
    await user.click(screen.getByRole("button", { name: "Aplicar" }));
    expect(router.state.location.search).toBe("?q=obra&status=finished");

    await user.click(screen.getByRole("button", { name: "Limpiar filtros" }));
    expect(router.state.location.search).toBe("");
  });

  it("a reader is not offered to create a file", async () => {
    await signInAs(["reader"]);
    renderList("/files");
    await screen.findByTestId("file-list");
    expect(screen.queryByRole("link", { name: "Crear expediente" })).not.toBeInTheDocument();
  });

  it("says when nothing matches, and when the index cannot answer", async () => {
    await signInAs(["clerk"]);
    api.handlers.set("GET /index/files", () => json({ items: [] }));
    renderList("/files?q=nada");
    expect(await screen.findByText("No hay expedientes que coincidan con la búsqueda.")).toBeInTheDocument();
  });
});
