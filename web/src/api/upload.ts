// Uploads with progress: fetch cannot report upload progress, so documents
// go up with XMLHttpRequest (multipart, one part named "file", as docs wants).
import { session } from "../auth/instance";
import { API_BASE } from "./clients";
import { isProblem, type Problem } from "./problem";

/** The outcome of an upload: the service's JSON, or its problem. */
export type UploadOutcome<T> =
  | { ok: true; status: number; body: T }
  | { ok: false; status: number; problem: Problem | null };

/** Options of {@link upload}. */
export interface UploadOptions {
  /** Fraction sent, 0 to 1. */
  onProgress?: (fraction: number) => void;
  /** Sent as Idempotency-Key, so a retried upload adds nothing twice. */
  idempotencyKey?: string;
  signal?: AbortSignal;
}

/** POSTs `file` to `path` (under /api/v1) as multipart with progress. */
export async function upload<T>(path: string, file: File, options: UploadOptions = {}): Promise<UploadOutcome<T>> {
  const token = await session.accessToken();
  const form = new FormData();
  form.append("file", file, file.name);
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", `${API_BASE}${path}`);
    if (token) xhr.setRequestHeader("Authorization", `Bearer ${token}`);
    if (options.idempotencyKey) xhr.setRequestHeader("Idempotency-Key", options.idempotencyKey);
    xhr.responseType = "text";
    xhr.upload.addEventListener("progress", (event) => {
      if (event.lengthComputable && event.total > 0) options.onProgress?.(event.loaded / event.total);
    });
    xhr.addEventListener("load", () => {
      let body: unknown = null;
      try {
        body = xhr.responseText ? JSON.parse(xhr.responseText) : null;
      } catch {
        body = null;
      }
      if (xhr.status >= 200 && xhr.status < 300) {
        options.onProgress?.(1);
        resolve({ ok: true, status: xhr.status, body: body as T });
      } else {
        resolve({ ok: false, status: xhr.status, problem: isProblem(body) ? body : null });
      }
    });
    xhr.addEventListener("error", () => reject(new Error("network error during the upload")));
    xhr.addEventListener("abort", () => reject(new DOMException("upload aborted", "AbortError")));
    options.signal?.addEventListener("abort", () => xhr.abort());
    xhr.send(form);
  });
}

/** A new idempotency key. */
export function newKey(): string {
  if (typeof crypto.randomUUID === "function") return crypto.randomUUID();
  // randomUUID needs a secure context; the key only has to be unique.
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}
