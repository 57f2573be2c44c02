import { describe, expect, it } from "vitest";
import { act, render, screen, within } from "@testing-library/react";
import i18n from "../i18n";
import { SagaProgressView } from "../components/SagaProgressView";
import { sagaProgress, type FileResponse } from "./sagaProgress";

function file(overrides: Partial<FileResponse>): FileResponse {
  return {
    id: "f",
    code: "2026/000001",
    initial_option: "Sede electrónica",
    description: "Licencia",
    status: "pending",
    created_at: "2026-01-01T10:00:00Z",
    updated_at: "2026-01-01T10:00:00Z",
    version: 1,
    ...overrides,
  };
}

const saga = (step: string, status: string) => ({
  id: "s",
  file_id: "f",
  step,
  status,
  since: "2026-01-01T10:00:00Z",
  attempts: 1,
  procedure: "standard",
  created_at: "2026-01-01T10:00:00Z",
  updated_at: "2026-01-01T10:00:00Z",
});

const states = (f: FileResponse | null) => sagaProgress(f).steps.map((s) => `${s.key}:${s.state}`);

describe("sagaProgress", () => {
  it("follows the saga step by step until the file is active", () => {
    expect(states(null)).toEqual(["upload:done", "registered:current", "attach_document:pending", "start_process:pending", "active:pending"]);
    expect(states(file({ saga: saga("attach_document", "running") }))).toEqual([
      "upload:done",
      "registered:done",
      "attach_document:current",
      "start_process:pending",
      "active:pending",
    ]);
    expect(states(file({ saga: saga("start_process", "running") }))).toEqual([
      "upload:done",
      "registered:done",
      "attach_document:done",
      "start_process:current",
      "active:pending",
    ]);
    const active = sagaProgress(file({ status: "active", saga: saga("start_process", "completed") }));
    expect(active.outcome).toBe("active");
    expect(active.steps.every((s) => s.state === "done")).toBe(true);
  });

  it("shows the step that failed and why", () => {
    const refused = sagaProgress(
      file({ status: "failed", saga: saga("attach_document", "failed"), failure_reason: "attach_document refused: unknown_upload" }),
    );
    expect(refused.outcome).toBe("failed");
    expect(refused.reason).toBe("attach_document refused: unknown_upload");
    expect(refused.steps.map((s) => s.state)).toEqual(["done", "done", "failed", "pending", "pending"]);

    const compensated = sagaProgress(file({ status: "failed", saga: saga("remove_document", "failed"), failure_reason: "start_process: no reply within 30 s" }));
    expect(compensated.steps.map((s) => s.state)).toEqual(["done", "done", "done", "failed", "pending"]);

    const compensating = sagaProgress(file({ status: "pending", saga: saga("remove_document", "compensating") }));
    expect(compensating.outcome).toBe("running");
    expect(compensating.steps[3]?.state).toBe("failed");
  });
});

describe("SagaProgressView", () => {
  it("says each step's state in words and marks the current step", async () => {
    await i18n.changeLanguage("es");
    render(<SagaProgressView progress={sagaProgress(file({ saga: saga("start_process", "running") }))} />);
    const items = within(screen.getByTestId("saga-steps")).getAllByRole("listitem");
    expect(items.map((li) => li.textContent)).toEqual([
      "✓Documento subido(hecho)",
      "✓Expediente registrado(hecho)",
      "✓Documento adjuntado(hecho)",
      "…Procedimiento iniciado(en curso)",
      "○Expediente activo(pendiente)",
    ]);
    expect(items[3]).toHaveAttribute("aria-current", "step");
  });

  it("speaks English when switched", async () => {
    await act(() => i18n.changeLanguage("en"));
    render(<SagaProgressView progress={sagaProgress(file({ status: "active", saga: saga("start_process", "completed") }))} />);
    expect(screen.getByText("File active")).toBeInTheDocument();
    await act(() => i18n.changeLanguage("es"));
  });
});
