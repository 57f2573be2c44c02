import { beforeEach, describe, expect, it, vi } from "vitest";
import { render, screen, within } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { QueryClient, QueryClientProvider } from "@tanstack/react-query";
import { createMemoryRouter, RouterProvider } from "react-router";
import { session } from "../auth/instance";
import { fakeApi as api, fakeJwt, json } from "../test/api";
import CreateFilePage from "./CreateFilePage";

// XMLHttpRequest uploads are replaced: jsdom has no server to send them to.
const uploads = vi.hoisted(() => ({ count: 0 }));
vi.mock("../api/upload", () => ({
  newKey: () => "key-1",
  upload: async (_path: string, file: File, options: { onProgress?: (f: number) => void }) => {
    uploads.count += 1;
    options.onProgress?.(0.5);
    options.onProgress?.(1);
    return { ok: true, status: 201, body: { id: "upload-1", name: file.name, media_type: "application/pdf", size: 9, sha256: "x", created_at: "", expires_at: "" } };
  },
}));

const FILE_ID = "0193aaaa-0000-7000-8000-000000000001";
const file = (status: string, step: string, sagaStatus: string) => ({
  id: FILE_ID,
  code: "2026/000042",
  initial_option: "Sede electrónica",
  description: "Licencia",
  status,
  created_at: "2026-03-01T09:30:00Z",
  updated_at: "2026-03-01T09:30:00Z",
  version: 1,
  saga: { id: "s", file_id: FILE_ID, step, status: sagaStatus, since: "", attempts: 1, procedure: "standard", created_at: "", updated_at: "" },
});

beforeEach(async () => {
  api.requests.length = 0;
  uploads.count = 0;
  api.handlers.set("POST /auth/token", () =>
    json({ access_token: fakeJwt({ sub: "u", name: "Demo, Tramitador", roles: ["clerk"] }), token_type: "Bearer", expires_in: 300 }),
  );
  await session.login("clerk", "x");
  api.handlers.set("GET /files/initial-options", () => json({ options: ["Sede electrónica", "A petición departamento"] }));
});

function renderCreate() {
  const router = createMemoryRouter(
    [
      { path: "/files/new", element: <CreateFilePage /> },
      { path: "/files/:id", element: <p>detail</p> },
      { path: "/files", element: <p>list</p> },
    ],
    { initialEntries: ["/files/new"] },
  );
  render(
    <QueryClientProvider client={new QueryClient({ defaultOptions: { queries: { retry: false } } })}>
      <RouterProvider router={router} />
    </QueryClientProvider>,
  );
}

describe("CreateFilePage", () => {
  it("shows the API's field errors beside their fields, then follows the saga until the file is active", async () => {
    let created = 0;
    api.handlers.set("POST /files", () => {
      created += 1;
      return created === 1
        ? json(
            {
              type: "https://tramita.example/problems/validation",
              title: "Invalid request",
              status: 422,
              errors: [{ field: "code", message: "may contain only letters, digits and / - _ . (found ' ')" }],
            },
            { status: 422, headers: { "content-type": "application/problem+json" } },
          )
        : json(file("pending", "attach_document", "running"), { status: 202, headers: { location: `/files/${FILE_ID}` } });
    });
    const answers = [file("pending", "start_process", "running"), file("active", "start_process", "completed")];
    api.handlers.set(`GET /files/${FILE_ID}`, () => json(answers.length > 1 ? answers.shift() : answers[0]));
    renderCreate();
    const user = userEvent.setup();

    await user.upload(screen.getByLabelText(/^Primer documento/), new File(["%PDF-1.4\n"], "solicitud.pdf", { type: "application/pdf" }));
    await user.selectOptions(await screen.findByLabelText(/^Opción inicial/), "Sede electrónica");
    await user.type(screen.getByLabelText(/^Código/), "mal código");
    await user.type(screen.getByLabelText(/^Descripción/), "Licencia");
    await user.click(screen.getByRole("button", { name: "Crear expediente" }));

    const code = screen.getByLabelText(/^Código/);
    const summary = await screen.findByTestId("form-errors");
    expect(summary).toHaveFocus();
    expect(code).toHaveAttribute("aria-invalid", "true");
    expect(code).toHaveAccessibleDescription(/may contain only letters/);
    expect(screen.getByTestId("cf-code-errors")).toHaveTextContent("may contain only letters, digits and / - _ . (found ' ')");

    await user.clear(code);
    await user.click(screen.getByRole("button", { name: "Crear expediente" }));

    expect(await screen.findByText("El expediente 2026/000042 está activo.", {}, { timeout: 5000 })).toBeInTheDocument();
    const steps = within(screen.getByTestId("saga-steps")).getAllByRole("listitem");
    expect(steps.map((s) => s.dataset.state)).toEqual(["done", "done", "done", "done", "done"]);
    expect(screen.getByRole("link", { name: "Abrir el expediente" })).toHaveAttribute("href", `/files/${FILE_ID}`);

    // The document went up once: the corrected request reused the staged upload
    expect(uploads.count).toBe(1);
    const posts = api.requests.filter((r) => r.method === "POST" && new URL(r.url).pathname === "/api/v1/files");
    expect(posts).toHaveLength(2);
    expect(posts[1]?.headers.get("idempotency-key")).toBe("key-1");
    expect(await posts[1]?.json()).toEqual({
      initial_option: "Sede electrónica",
      description: "Licencia",
      first_document: { upload_id: "upload-1" },
    });
  });

  it("says why the file could not be created", async () => {
    api.handlers.set("POST /files", () => json(file("pending", "attach_document", "running"), { status: 202 }));
    api.handlers.set(`GET /files/${FILE_ID}`, () =>
      json({ ...file("failed", "attach_document", "failed"), failure_reason: "attach_document refused: upload_expired" }),
    );
    renderCreate();
    const user = userEvent.setup();
    await user.upload(screen.getByLabelText(/^Primer documento/), new File(["%PDF-1.4\n"], "a.pdf", { type: "application/pdf" }));
    await user.selectOptions(await screen.findByLabelText(/^Opción inicial/), "A petición departamento");
    await user.type(screen.getByLabelText(/^Descripción/), "Informe");
    await user.click(screen.getByRole("button", { name: "Crear expediente" }));

    expect(await screen.findByText(/No se ha podido crear el expediente: attach_document refused: upload_expired/, {}, { timeout: 5000 })).toBeInTheDocument();
    const steps = within(screen.getByTestId("saga-steps")).getAllByRole("listitem");
    expect(steps.map((s) => s.dataset.state)).toEqual(["done", "done", "failed", "pending", "pending"]);
    expect(screen.queryByRole("link", { name: "Abrir el expediente" })).not.toBeInTheDocument();
  });
});
