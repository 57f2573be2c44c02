// What the create-file screen shows while the saga runs: the file as
// `GET /files/{id}` reports it, turned into a list of steps.
import type { components } from "../api/generated/files";

/** A file as the files service answers it. */
export type FileResponse = components["schemas"]["FileResponse"];

/** The steps the screen lists, in order. */
export const STEPS = ["upload", "registered", "attach_document", "start_process", "active"] as const;
export type StepKey = (typeof STEPS)[number];
export type StepState = "done" | "current" | "pending" | "failed";

/** Where the creation stands. */
export interface Progress {
  steps: { key: StepKey; state: StepState }[];
  outcome: "running" | "active" | "failed";
  /** Why it failed, when it did. */
  reason?: string;
}

function states(doneUpTo: number, at: StepState | null): Progress["steps"] {
  return STEPS.map((key, index) => ({
    key,
    state: index < doneUpTo ? "done" : index === doneUpTo && at ? at : "pending",
  }));
}

/**
 * The progress of a file's creation. Before the file is known only the
 * upload is done; then each saga step is done, running or failed, and the
 * file is active (or finished) once the saga completed.
 */
export function sagaProgress(file: FileResponse | null | undefined): Progress {
  if (!file) return { steps: states(1, "current"), outcome: "running" };
  if (file.status === "active" || file.status === "finished" || file.saga?.status === "completed") {
    return { steps: states(STEPS.length, null), outcome: "active" };
  }
  const step = file.saga?.step;
  // A failure compensated by remove_document happened at start_process
  // (the document had been attached, then removed).
  const at = step === "start_process" || step === "remove_document" ? 3 : 2;
  const sagaFailed = file.saga?.status === "failed" || file.saga?.status === "compensating";
  if (file.status === "failed" || sagaFailed) {
    return {
      steps: states(at, "failed"),
      outcome: file.status === "failed" ? "failed" : "running",
      reason: file.failure_reason ?? file.saga?.last_error ?? undefined,
    };
  }
  return { steps: states(at, "current"), outcome: "running" };
}
