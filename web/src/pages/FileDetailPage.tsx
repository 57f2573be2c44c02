import { Link, useParams } from "react-router";
import { useTranslation } from "react-i18next";
import { canWrite, useSession } from "../auth/useSession";
import { ErrorState, Loading, errorMessage } from "../components/States";
import { useDocumentTitle } from "../components/useDocumentTitle";
import { ApiError } from "../files/queries";
import { DataSection } from "../detail/DataSection";
import { DocumentsSection } from "../detail/DocumentsSection";
import { ChangePhase, PhaseHistory } from "../detail/PhaseSection";
import { TimelineSection } from "../detail/TimelineSection";
import { useCaseFile } from "../detail/useCaseFile";

export default function FileDetailPage() {
  const { id = "" } = useParams();
  const { t } = useTranslation();
  const state = useSession();
  const writable = canWrite(state.status === "signed-in" ? state.user : null);
  const file = useCaseFile(id);
  useDocumentTitle(file.data ? t("detail.title", { code: file.data.code }) : t("app.loading"));

  if (file.isPending) return <Loading />;
  if (file.isError) {
    if (file.error instanceof ApiError && file.error.status === 404) {
      return (
        <section>
          <h1>{t("detail.notFound")}</h1>
          <p>{t("detail.notFoundText")}</p>
          <div className="form-actions">
            <button type="button" className="button secondary" onClick={() => void file.refetch()}>
              {t("app.retry")}
            </button>
            <Link to="/files">{t("app.backToList")}</Link>
          </div>
        </section>
      );
    }
    return <ErrorState message={errorMessage(file.error)} onRetry={() => void file.refetch()} />;
  }
  const data = file.data;

  return (
    <div className="detail" aria-busy={file.waiting}>
      <p className="breadcrumbs">
        <Link to="/files">{t("app.backToList")}</Link>
      </p>
      <div className="page-head">
        <h1>{t("detail.title", { code: data.code })}</h1>
        <ChangePhase file={data} writable={writable} expect={file.expect} />
      </div>
      {data.status === "pending" && <p className="notice">{t("detail.pendingSaga")}</p>}
      {data.status === "failed" && <p className="alert">{t("detail.failedReason")}</p>}
      <DataSection file={data} writable={writable} expect={file.expect} />
      <section aria-labelledby="history-title" className="card">
        <h2 id="history-title">{t("detail.history")}</h2>
        <PhaseHistory file={data} />
      </section>
      <DocumentsSection file={data} writable={writable} expect={file.expect} />
      <TimelineSection fileId={data.id} />
    </div>
  );
}
