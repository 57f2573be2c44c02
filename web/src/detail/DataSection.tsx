import { useState } from "react";
import { useTranslation } from "react-i18next";
import { filesApi } from "../api/clients";
import { isProblem, mapProblem } from "../api/problem";
import { newKey } from "../api/upload";
import { Field } from "../components/Field";
import { formatCivilDate, formatDateTime, localName } from "../format";
import type { CaseFile } from "../files/queries";
import type { Expectation } from "./useCaseFile";

/** Code, date, user, initial option, description (editable while open), phase and deadline. */
export function DataSection({ file, writable, expect }: { file: CaseFile; writable: boolean; expect: (e: Expectation) => void }) {
  const { t, i18n } = useTranslation();
  const [editing, setEditing] = useState(false);
  const [draft, setDraft] = useState(file.description);
  const [errors, setErrors] = useState<string[] | undefined>();
  const [saving, setSaving] = useState(false);
  const [saved, setSaved] = useState(false);
  const open = file.status === "active" || file.status === "pending";
  const lang = i18n.language;

  async function save(event: React.FormEvent) {
    event.preventDefault();
    if (!draft.trim()) {
      setErrors([t("create.required")]);
      return;
    }
    setSaving(true);
    setErrors(undefined);
    const result = await filesApi
      .PATCH("/files/{id}", {
        params: { path: { id: file.id }, header: { "Idempotency-Key": newKey() } },
        body: { description: draft.trim() },
      })
      .catch(() => null);
    setSaving(false);
    if (result?.data) {
      const version = result.data.version;
      expect((c) => c.version >= version);
      setEditing(false);
      setSaved(true);
      return;
    }
    const problem = result && isProblem(result.error) ? result.error : null;
    const mapped = problem ? mapProblem(problem, ["description"] as const) : null;
    setErrors(mapped ? [...(mapped.fields.description ?? []), ...mapped.general] : [t("login.unavailable")]);
  }

  return (
    <section aria-labelledby="data-title" className="card">
      <h2 id="data-title">{t("detail.data")}</h2>
      <dl className="facts">
        <div>
          <dt>{t("detail.code")}</dt>
          <dd data-testid="file-code">{file.code}</dd>
        </div>
        <div>
          <dt>{t("detail.date")}</dt>
          <dd>{formatDateTime(file.created_at, lang)}</dd>
        </div>
        <div>
          <dt>{t("detail.createdBy")}</dt>
          <dd>{file.created_by?.name ?? "—"}</dd>
        </div>
        <div>
          <dt>{t("detail.initialOption")}</dt>
          <dd>{file.initial_option}</dd>
        </div>
        <div>
          <dt>{t("detail.status")}</dt>
          <dd>
            <span className={`badge status-${file.status}`} data-testid="file-status" data-status={file.status}>
              {t(`status.${file.status as "active"}`, { defaultValue: file.status })}
            </span>
          </dd>
        </div>
        <div>
          <dt>{t("detail.phase")}</dt>
          <dd data-testid="file-phase" data-phase={file.process?.phase.key ?? ""}>
            {file.process ? localName(file.process.phase.names, lang, file.process.phase.key) : "—"}
            {file.process?.suspended && <span className="badge suspended-badge">{t("detail.suspended")}</span>}
          </dd>
        </div>
        <div>
          <dt>{t("detail.dueDate")}</dt>
          <dd>
            {file.process?.due_date ? formatCivilDate(file.process.due_date, lang) : t("detail.noDueDate")}
            {file.process?.overdue && <span className="badge overdue-badge">{t("list.overdueBadge")}</span>}
          </dd>
        </div>
        {file.process?.procedure && (
          <div>
            <dt>{t("detail.procedure")}</dt>
            <dd>
              {localName(file.process.procedure.names, lang, file.process.procedure.key)} (v{file.process.procedure.version})
            </dd>
          </div>
        )}
        <div className="fact-wide">
          <dt id="description-label">{t("detail.description")}</dt>
          <dd>
            {editing ? (
              <form onSubmit={(e) => void save(e)} className="inline-form" noValidate>
                <Field id="edit-description" label={t("detail.description")} errors={errors} required>
                  {(props) => <textarea {...props} rows={3} value={draft} onChange={(e) => setDraft(e.target.value)} disabled={saving} />}
                </Field>
                <div className="form-actions">
                  <button type="submit" className="button primary" disabled={saving}>
                    {saving ? t("detail.saving") : t("detail.save")}
                  </button>
                  <button
                    type="button"
                    className="button secondary"
                    onClick={() => {
                      setEditing(false);
                      setErrors(undefined);
                    }}
                  >
                    {t("detail.cancel")}
                  </button>
                </div>
              </form>
            ) : (
              <>
                <p className="description" data-testid="file-description">
                  {file.description}
                </p>
                {writable && open && (
                  <button
                    type="button"
                    className="button secondary small"
                    onClick={() => {
                      setDraft(file.description);
                      setSaved(false);
                      setEditing(true);
                    }}
                  >
                    {t("detail.edit")}
                  </button>
                )}
              </>
            )}
            <span role="status" className="inline-status">
              {saved && !editing ? t("detail.saved") : ""}
            </span>
          </dd>
        </div>
      </dl>
    </section>
  );
}
