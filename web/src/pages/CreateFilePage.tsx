import { useEffect, useRef, useState } from "react";
import { Link } from "react-router";
import { useTranslation } from "react-i18next";
import { useQuery, useQueryClient } from "@tanstack/react-query";
import { filesApi } from "../api/clients";
import type { components as DocsSchemas } from "../api/generated/docs";
import { mapProblem, isProblem, type MappedErrors } from "../api/problem";
import { newKey, upload } from "../api/upload";
import { canWrite, useSession } from "../auth/useSession";
import { Field } from "../components/Field";
import { SagaProgressView } from "../components/SagaProgressView";
import { ErrorState, Loading, errorMessage } from "../components/States";
import { useDocumentTitle } from "../components/useDocumentTitle";
import { sagaProgress, type FileResponse } from "../files/sagaProgress";
import { unwrap, useInitialOptions } from "../files/queries";

type UploadResponse = DocsSchemas["schemas"]["UploadResponse"];

const FIELDS = ["first_document", "initial_option", "code", "description"] as const;
type FormField = (typeof FIELDS)[number];

type Phase =
  | { kind: "form" }
  | { kind: "uploading"; fraction: number }
  | { kind: "creating" }
  | { kind: "following"; file: FileResponse };

export default function CreateFilePage() {
  const { t } = useTranslation();
  useDocumentTitle(t("create.title"));
  const state = useSession();
  const user = state.status === "signed-in" ? state.user : null;
  const options = useInitialOptions();
  const [document, setDocument] = useState<File | null>(null);
  const [initialOption, setInitialOption] = useState("");
  const [code, setCode] = useState("");
  const [description, setDescription] = useState("");
  const [errors, setErrors] = useState<MappedErrors<FormField>>({ fields: {}, general: [] });
  const [phase, setPhase] = useState<Phase>({ kind: "form" });
  const staged = useRef<{ file: File; uploadId: string } | null>(null);
  const summaryRef = useRef<HTMLDivElement>(null);
  const fileInput = useRef<HTMLInputElement>(null);

  const hasErrors = errors.general.length > 0 || Object.keys(errors.fields).length > 0;
  useEffect(() => {
    if (hasErrors) summaryRef.current?.focus();
  }, [errors, hasErrors]);

  if (!canWrite(user)) {
    return <ErrorState message={t("app.forbidden")} />;
  }

  if (phase.kind === "following") {
    return (
      <SagaFollower
        initial={phase.file}
        onRestart={() => {
          staged.current = null;
          setDocument(null);
          setCode("");
          setDescription("");
          setPhase({ kind: "form" });
        }}
      />
    );
  }

  function validate(): MappedErrors<FormField> {
    const fields: MappedErrors<FormField>["fields"] = {};
    if (!document) fields.first_document = [t("create.required")];
    if (!initialOption) fields.initial_option = [t("create.required")];
    if (!description.trim()) fields.description = [t("create.required")];
    return { fields, general: [] };
  }

  async function submit(event: React.FormEvent) {
    event.preventDefault();
    const local = validate();
    if (Object.keys(local.fields).length > 0 || !document) {
      setErrors(local);
      return;
    }
    setErrors({ fields: {}, general: [] });
    try {
      let uploadId = staged.current?.file === document ? staged.current.uploadId : null;
      if (!uploadId) {
        setPhase({ kind: "uploading", fraction: 0 });
        const outcome = await upload<UploadResponse>("/docs/uploads", document, {
          idempotencyKey: newKey(),
          onProgress: (fraction) => setPhase({ kind: "uploading", fraction }),
        });
        if (!outcome.ok) {
          const message =
            outcome.status === 413 ? t("create.tooLarge") : outcome.status === 415 ? t("create.badType") : (outcome.problem?.detail ?? outcome.problem?.title ?? `HTTP ${outcome.status}`);
          setErrors({ fields: { first_document: [message] }, general: [] });
          setPhase({ kind: "form" });
          return;
        }
        uploadId = outcome.body.id;
        staged.current = { file: document, uploadId };
      }
      setPhase({ kind: "creating" });
      const key = newKey();
      const body = {
        initial_option: initialOption,
        description: description.trim(),
        code: code.trim() || undefined,
        first_document: { upload_id: uploadId },
      };
      let result = await filesApi.POST("/files", { params: { header: { "Idempotency-Key": key } }, body }).catch(() => null);
      // A lost answer is asked again with the same key: one file, one saga.
      if (!result || result.response.status >= 500) {
        result = await filesApi.POST("/files", { params: { header: { "Idempotency-Key": key } }, body });
      }
      if (result.data) {
        setPhase({ kind: "following", file: result.data });
        return;
      }
      const problem = isProblem(result.error) ? result.error : null;
      setErrors(
        problem
          ? mapProblem(problem, FIELDS, "code")
          : { fields: {}, general: [`HTTP ${result.response.status}`] },
      );
      setPhase({ kind: "form" });
    } catch (error) {
      setErrors({ fields: {}, general: [errorMessage(error)] });
      setPhase({ kind: "form" });
    }
  }

  const busy = phase.kind === "uploading" || phase.kind === "creating";
  const percent = phase.kind === "uploading" ? Math.round(phase.fraction * 100) : phase.kind === "creating" ? 100 : 0;

  return (
    <section aria-labelledby="create-title">
      <div className="page-head">
        <h1 id="create-title">{t("create.title")}</h1>
      </div>
      <form className="card form" onSubmit={(e) => void submit(e)} noValidate>
        {hasErrors && (
          <div className="alert" role="alert" tabIndex={-1} ref={summaryRef} data-testid="form-errors">
            <h2 className="alert-title">{t("create.errorsTitle")}</h2>
            <ul>
              {FIELDS.filter((f) => errors.fields[f]).map((f) => (
                <li key={f}>
                  <a href={`#cf-${f}`}>{t(`create.${f === "first_document" ? "document" : f === "initial_option" ? "initialOption" : f}`)}</a>: {errors.fields[f]?.join(" ")}
                </li>
              ))}
              {errors.general.map((message) => (
                <li key={message}>{message}</li>
              ))}
            </ul>
          </div>
        )}
        <Field id="cf-first_document" label={t("create.document")} hint={t("create.documentHint")} errors={errors.fields.first_document} required>
          {(props) => (
            <input
              {...props}
              ref={fileInput}
              type="file"
              name="file"
              accept=".pdf,.png,.jpg,.jpeg,.odt,.docx,.txt,application/pdf,image/png,image/jpeg,text/plain"
              disabled={busy}
              onChange={(e) => setDocument(e.target.files?.[0] ?? null)}
            />
          )}
        </Field>
        <Field id="cf-initial_option" label={t("create.initialOption")} errors={errors.fields.initial_option} required>
          {(props) => (
            <select {...props} value={initialOption} disabled={busy} onChange={(e) => setInitialOption(e.target.value)}>
              <option value="">{options.isPending ? t("app.loading") : t("create.choose")}</option>
              {(options.data ?? []).map((option) => (
                <option key={option} value={option}>
                  {option}
                </option>
              ))}
            </select>
          )}
        </Field>
        <Field id="cf-code" label={t("create.code")} hint={t("create.codeHint")} errors={errors.fields.code}>
          {(props) => <input {...props} value={code} disabled={busy} autoComplete="off" onChange={(e) => setCode(e.target.value)} />}
        </Field>
        <Field id="cf-description" label={t("create.description")} errors={errors.fields.description} required>
          {(props) => <textarea {...props} rows={4} value={description} disabled={busy} onChange={(e) => setDescription(e.target.value)} />}
        </Field>
        {busy && (
          <div className="upload-progress" role="status" aria-live="polite">
            <label htmlFor="cf-progress">{t("create.uploading", { percent })}</label>
            <progress id="cf-progress" max={100} value={percent} />
          </div>
        )}
        <div className="form-actions">
          <button type="submit" className="button primary" disabled={busy}>
            {t("create.submit")}
          </button>
          <Link to="/files" className="button secondary">
            {t("create.cancel")}
          </Link>
        </div>
      </form>
    </section>
  );
}

/** Follows the saga of a new file until it is active or failed. */
function SagaFollower({ initial, onRestart }: { initial: FileResponse; onRestart: () => void }) {
  const { t } = useTranslation();
  const queries = useQueryClient();
  const file = useQuery({
    queryKey: ["file", initial.id, "saga"],
    queryFn: async () => unwrap(await filesApi.GET("/files/{id}", { params: { path: { id: initial.id } } })),
    initialData: initial,
    refetchInterval: (query) => (sagaProgress(query.state.data).outcome === "running" ? 500 : false),
    staleTime: 0,
  });
  const progress = sagaProgress(file.data);
  const headingRef = useRef<HTMLHeadingElement>(null);
  useEffect(() => {
    headingRef.current?.focus();
  }, []);
  useEffect(() => {
    if (progress.outcome !== "running") void queries.invalidateQueries({ queryKey: ["files"] });
  }, [progress.outcome, queries]);

  return (
    <section aria-labelledby="saga-title" className="card">
      <h1 id="saga-title" tabIndex={-1} ref={headingRef}>
        {t("create.progressTitle", { code: file.data.code })}
      </h1>
      <SagaProgressView progress={progress} />
      <div role="status" aria-live="polite" data-testid="saga-outcome" data-outcome={progress.outcome}>
        {progress.outcome === "running" && <Loading />}
        {progress.outcome === "active" && <p className="success">{t("create.active", { code: file.data.code })}</p>}
        {progress.outcome === "failed" && <p className="alert">{t("create.failed", { reason: progress.reason ?? "—" })}</p>}
      </div>
      {file.isError && <ErrorState message={errorMessage(file.error)} onRetry={() => void file.refetch()} />}
      <div className="form-actions">
        {progress.outcome === "active" && (
          <Link to={`/files/${file.data.id}`} className="button primary">
            {t("create.open")}
          </Link>
        )}
        {progress.outcome !== "running" && (
          <button type="button" className="button secondary" onClick={onRestart}>
            {progress.outcome === "failed" ? t("create.retry") : t("create.another")}
          </button>
        )}
      </div>
    </section>
  );
}
