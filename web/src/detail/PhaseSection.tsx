import { useState } from "react";
import { useQuery, useQueryClient } from "@tanstack/react-query";
import * as Dialog from "@radix-ui/react-dialog";
import { useTranslation } from "react-i18next";
import { ScrollRegion } from "../components/ScrollRegion";
import { bpmApi } from "../api/clients";
import { isProblem } from "../api/problem";
import { newKey } from "../api/upload";
import { formatDateTime, localName } from "../format";
import { unwrap, type CaseFile } from "../files/queries";
import type { Expectation } from "./useCaseFile";

/** The process as bpm answers it (with the transitions this user may take). */
function useProcess(fileId: string, enabled: boolean) {
  return useQuery({
    queryKey: ["process", fileId],
    enabled,
    queryFn: async () => unwrap(await bpmApi.GET("/bpm/processes/{file_id}", { params: { path: { file_id: fileId } } })),
  });
}

/** "Change phase": only the transitions bpm says this user may take now. */
export function ChangePhase({ file, writable, expect }: { file: CaseFile; writable: boolean; expect: (e: Expectation) => void }) {
  const { t, i18n } = useTranslation();
  const queries = useQueryClient();
  const running = file.status === "active" && file.process?.status === "running";
  const process = useProcess(file.id, writable && running);
  const [open, setOpen] = useState(false);
  const [target, setTarget] = useState("");
  const [comment, setComment] = useState("");
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const [moved, setMoved] = useState<string | null>(null);

  if (!writable || !running) return null;
  const transitions = process.data?.available_transitions ?? [];
  const nameOf = (key: string) => {
    const phase = transitions.find((tr) => tr.to.key === key)?.to;
    return phase ? localName(phase.names, i18n.language, key) : key;
  };

  async function submit(event: React.FormEvent) {
    event.preventDefault();
    if (!process.data || !target) return;
    setBusy(true);
    setError(null);
    const result = await bpmApi
      .POST("/bpm/processes/{file_id}/transitions", {
        params: {
          path: { file_id: file.id },
          header: { "If-Match": `"${process.data.version}"`, "Idempotency-Key": newKey() },
        },
        body: { to: target, comment: comment.trim() || undefined },
      })
      .catch(() => null);
    setBusy(false);
    if (result?.data) {
      const entered = result.data.phase.key;
      const visits = result.data.history.length;
      // Entering a terminal phase finishes the process, and then the file
      // (files hears of it from bpm): wait for both in the index.
      const finishes = result.data.status === "finished";
      expect(
        (c) =>
          c.process?.phase.key === entered &&
          (c.process?.history.length ?? 0) >= visits &&
          (!finishes || c.status === "finished"),
      );
      void queries.invalidateQueries({ queryKey: ["process", file.id] });
      setMoved(localName(result.data.phase.names, i18n.language, entered));
      setOpen(false);
      setTarget("");
      setComment("");
      return;
    }
    if (result?.response.status === 409 || result?.response.status === 412) {
      setError(t("detail.stale"));
      void queries.invalidateQueries({ queryKey: ["process", file.id] });
      return;
    }
    const problem = result && isProblem(result.error) ? result.error : null;
    setError(problem ? [problem.detail ?? problem.title, ...(problem.errors ?? []).map((e) => e.message)].join(" ") : t("login.unavailable"));
  }

  return (
    <div className="change-phase">
      <p role="status" className="inline-status">
        {moved ? t("detail.moved", { phase: moved }) : ""}
      </p>
      {process.isSuccess && transitions.length === 0 ? (
        <p className="muted">{t("detail.noTransitions")}</p>
      ) : (
        <Dialog.Root
          open={open}
          onOpenChange={(next) => {
            setOpen(next);
            setError(null);
            if (next) setMoved(null);
          }}
        >
          <Dialog.Trigger asChild>
            <button type="button" className="button primary" disabled={!process.isSuccess}>
              {t("detail.changePhase")}
            </button>
          </Dialog.Trigger>
          <Dialog.Portal>
            <Dialog.Overlay className="dialog-overlay" />
            <Dialog.Content className="dialog" aria-describedby={undefined}>
              <Dialog.Title className="dialog-title">{t("detail.changePhaseTitle", { code: file.code })}</Dialog.Title>
              <form onSubmit={(e) => void submit(e)} noValidate>
                <fieldset className="choices">
                  <legend>{t("detail.target")}</legend>
                  {transitions.map((transition) => (
                    <label key={transition.to.key} className="choice">
                      <input
                        type="radio"
                        name="target"
                        value={transition.to.key}
                        checked={target === transition.to.key}
                        onChange={() => setTarget(transition.to.key)}
                        required
                      />
                      {nameOf(transition.to.key)}
                    </label>
                  ))}
                </fieldset>
                <div className="field">
                  <label htmlFor="transition-comment">{t("detail.comment")}</label>
                  <textarea id="transition-comment" rows={3} maxLength={2000} value={comment} onChange={(e) => setComment(e.target.value)} />
                </div>
                {error && (
                  <p className="alert" role="alert">
                    {error}
                  </p>
                )}
                <div className="form-actions">
                  <button type="submit" className="button primary" disabled={busy || !target}>
                    {busy ? t("detail.moving") : t("detail.confirm")}
                  </button>
                  <Dialog.Close asChild>
                    <button type="button" className="button secondary">
                      {t("detail.cancel")}
                    </button>
                  </Dialog.Close>
                </div>
              </form>
            </Dialog.Content>
          </Dialog.Portal>
        </Dialog.Root>
      )}
    </div>
  );
}

/** One row per phase visit: phase, date, user, date finished, finished by, comment. */
export function PhaseHistory({ file }: { file: CaseFile }) {
  const { t, i18n } = useTranslation();
  const lang = i18n.language;
  const history = file.process?.history ?? [];
  return (
    <ScrollRegion labelledBy="history-title">
      <table className="table" data-testid="phase-history">
        <thead>
          <tr>
            <th scope="col">{t("detail.historyPhase")}</th>
            <th scope="col">{t("detail.historyStarted")}</th>
            <th scope="col">{t("detail.historyStartedBy")}</th>
            <th scope="col">{t("detail.historyFinished")}</th>
            <th scope="col">{t("detail.historyFinishedBy")}</th>
            <th scope="col">{t("detail.historyComment")}</th>
          </tr>
        </thead>
        <tbody>
          {history.map((visit) => (
            <tr key={visit.seq} data-phase={visit.phase.key}>
              <td>{localName(visit.phase.names, lang, visit.phase.key)}</td>
              <td>{formatDateTime(visit.entered_at, lang)}</td>
              <td>{visit.entered_by?.name ?? "—"}</td>
              <td>{formatDateTime(visit.left_at, lang)}</td>
              <td>{visit.left_by?.name ?? "—"}</td>
              <td>{visit.comment ?? ""}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </ScrollRegion>
  );
}
