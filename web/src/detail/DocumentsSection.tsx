import { useRef, useState } from "react";
import { useTranslation } from "react-i18next";
import { ScrollRegion } from "../components/ScrollRegion";
import { docsApi } from "../api/clients";
import type { components as DocsSchemas } from "../api/generated/docs";
import { newKey, upload } from "../api/upload";
import { formatDateTime, formatSize } from "../format";
import type { CaseFile } from "../files/queries";
import type { Expectation } from "./useCaseFile";

type DocumentResponse = DocsSchemas["schemas"]["DocumentResponse"];

/** Saves a document: fetched with the token, handed to the browser as a file. */
async function download(id: string, name: string): Promise<void> {
  const { data, response } = await docsApi.GET("/docs/documents/{id}/content", {
    params: { path: { id } },
    parseAs: "blob",
  });
  if (!data || !response.ok) throw new Error(`HTTP ${response.status}`);
  const url = URL.createObjectURL(data);
  const link = document.createElement("a");
  link.href = url;
  link.download = name;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}

/** The documents table with download, and upload of a document or version. */
export function DocumentsSection({ file, writable, expect }: { file: CaseFile; writable: boolean; expect: (e: Expectation) => void }) {
  const { t, i18n } = useTranslation();
  const lang = i18n.language;
  const [chosen, setChosen] = useState<File | null>(null);
  const [fraction, setFraction] = useState<number | null>(null);
  const [message, setMessage] = useState<{ kind: "ok" | "error"; text: string } | null>(null);
  const input = useRef<HTMLInputElement>(null);
  const readOnly = file.status === "finished" || file.status === "failed";
  const mayUpload = writable && file.status === "active";

  async function submit(event: React.FormEvent) {
    event.preventDefault();
    if (!chosen) {
      setMessage({ kind: "error", text: t("create.required") });
      return;
    }
    setMessage(null);
    setFraction(0);
    try {
      const outcome = await upload<DocumentResponse>(`/docs/files/${file.id}/documents`, chosen, {
        idempotencyKey: newKey(),
        onProgress: setFraction,
      });
      if (outcome.ok) {
        const { id, version_count: versions, name } = outcome.body;
        expect((c) => c.documents.some((d) => d.id === id && d.version_count >= versions));
        setMessage({ kind: "ok", text: t("detail.uploaded", { name, version: versions }) });
        setChosen(null);
        if (input.current) input.current.value = "";
      } else {
        const text =
          outcome.status === 413 ? t("create.tooLarge") : outcome.status === 415 ? t("create.badType") : (outcome.problem?.detail ?? outcome.problem?.title ?? `HTTP ${outcome.status}`);
        setMessage({ kind: "error", text });
      }
    } catch (error) {
      setMessage({ kind: "error", text: String(error) });
    } finally {
      setFraction(null);
    }
  }

  return (
    <section aria-labelledby="documents-title" className="card">
      <h2 id="documents-title">{t("detail.documents")}</h2>
      {readOnly && (
        <p className="notice" data-testid="documents-read-only">
          {t("detail.readOnly")}
        </p>
      )}
      {file.documents.length === 0 ? (
        <p className="state state-empty">{t("detail.noDocuments")}</p>
      ) : (
        <ScrollRegion labelledBy="documents-title">
          <table className="table" data-testid="documents">
            <thead>
              <tr>
                <th scope="col">{t("detail.docName")}</th>
                <th scope="col">{t("detail.docDate")}</th>
                <th scope="col">{t("detail.docCreatedBy")}</th>
                <th scope="col">{t("detail.docUpdated")}</th>
                <th scope="col">{t("detail.docVersions")}</th>
                <th scope="col">
                  <span className="visually-hidden">{t("detail.download")}</span>
                </th>
              </tr>
            </thead>
            <tbody>
              {file.documents.map((doc) => (
                <tr key={doc.id} data-document={doc.name}>
                  <td>
                    {doc.name}
                    <span className="muted small"> · {formatSize(doc.size, lang)}</span>
                  </td>
                  <td>{formatDateTime(doc.created_at, lang)}</td>
                  <td>{doc.created_by?.name ?? "—"}</td>
                  <td>
                    {formatDateTime(doc.updated_at, lang)}
                    {doc.updated_by && <span className="muted small"> · {doc.updated_by.name}</span>}
                  </td>
                  <td data-testid="document-versions">{doc.version_count}</td>
                  <td>
                    <button
                      type="button"
                      className="button secondary small"
                      onClick={() => void download(doc.id, doc.name).catch((e) => setMessage({ kind: "error", text: String(e) }))}
                    >
                      {t("detail.download")}
                      <span className="visually-hidden"> {doc.name}</span>
                    </button>
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </ScrollRegion>
      )}
      {mayUpload && (
        <form className="upload-form" onSubmit={(e) => void submit(e)} noValidate aria-labelledby="upload-title">
          <h3 id="upload-title">{t("detail.upload")}</h3>
          <p className="hint" id="upload-hint">
            {t("detail.uploadHint")}
          </p>
          <div className="field">
            <label htmlFor="upload-file">{t("detail.uploadFile")}</label>
            <input
              id="upload-file"
              ref={input}
              type="file"
              aria-describedby="upload-hint"
              disabled={fraction !== null}
              onChange={(e) => setChosen(e.target.files?.[0] ?? null)}
            />
          </div>
          {fraction !== null && (
            <div className="upload-progress">
              <label htmlFor="upload-progress">{t("create.uploading", { percent: Math.round(fraction * 100) })}</label>
              <progress id="upload-progress" max={100} value={Math.round(fraction * 100)} />
            </div>
          )}
          <button type="submit" className="button primary" disabled={fraction !== null}>
            {t("detail.uploadSubmit")}
          </button>
        </form>
      )}
      <p role="status" className={message?.kind === "error" ? "inline-status error" : "inline-status"}>
        {message?.text ?? ""}
      </p>
    </section>
  );
}
