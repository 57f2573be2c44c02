import { useId, useState } from "react";
import { Link, useSearchParams } from "react-router";
import { useTranslation } from "react-i18next";
import { canWrite, useSession } from "../auth/useSession";
import { Empty, ErrorState, Loading, errorMessage } from "../components/States";
import { useDocumentTitle } from "../components/useDocumentTitle";
import { formatCivilDate, formatDateTime, localName } from "../format";
import {
  EMPTY_FILTERS,
  STATUSES,
  filtersToParams,
  nextPage,
  parseFilters,
  toIndexQuery,
  withCriteria,
  type ListFilters,
} from "../files/listParams";
import { useFileList, useInitialOptions, usePhases } from "../files/queries";

export function FileListPage() {
  const { t, i18n } = useTranslation();
  useDocumentTitle(t("list.title"));
  const [params, setParams] = useSearchParams();
  const filters = parseFilters(params);
  const state = useSession();
  const user = state.status === "signed-in" ? state.user : null;
  const list = useFileList(toIndexQuery(filters));
  const headingId = useId();

  const go = (next: ListFilters) => setParams(filtersToParams(next));

  return (
    <section aria-labelledby={headingId}>
      <div className="page-head">
        <h1 id={headingId}>{t("list.title")}</h1>
        {canWrite(user) && (
          <Link to="/files/new" className="button primary">
            {t("list.create")}
          </Link>
        )}
      </div>

      <FilterForm key={params.toString()} filters={filters} onApply={(changes) => go(withCriteria(filters, changes))} />

      <div className="results" aria-busy={list.isFetching}>
        <h2 className="visually-hidden">{t("list.results")}</h2>
        {list.isPending ? (
          <Loading />
        ) : list.isError ? (
          <ErrorState message={errorMessage(list.error)} onRetry={() => void list.refetch()} />
        ) : list.data.items.length === 0 ? (
          <Empty>{t("list.empty")}</Empty>
        ) : (
          <>
            <table className="table responsive" data-testid="file-list">
              <caption className="visually-hidden">
                {t("list.title")} — {t("list.page", { page: filters.page })}
              </caption>
              <thead>
                <tr>
                  <th scope="col">{t("list.code")}</th>
                  <th scope="col">{t("list.initialOption")}</th>
                  <th scope="col">{t("list.date")}</th>
                  <th scope="col">{t("list.phase")}</th>
                  <th scope="col">{t("list.status")}</th>
                  <th scope="col">{t("list.dueDate")}</th>
                  <th scope="col">{t("list.description")}</th>
                </tr>
              </thead>
              <tbody>
                {list.data.items.map((file) => (
                  <tr key={file.id} className={file.overdue ? "overdue" : undefined} data-code={file.code}>
                    <td data-label={t("list.code")}>
                      <Link to={`/files/${file.id}`} className="code-link">
                        {file.code}
                      </Link>
                    </td>
                    <td data-label={t("list.initialOption")}>{file.initial_option}</td>
                    <td data-label={t("list.date")}>{formatDateTime(file.created_at, i18n.language)}</td>
                    <td data-label={t("list.phase")}>{file.phase ? localName(file.phase.names, i18n.language, file.phase.key) : t("list.noPhase")}</td>
                    <td data-label={t("list.status")}>
                      <span className={`badge status-${file.status}`}>{t(`status.${file.status as "active"}`, { defaultValue: file.status })}</span>
                    </td>
                    <td data-label={t("list.dueDate")}>
                      {formatCivilDate(file.due_date, i18n.language)}
                      {file.overdue && <span className="badge overdue-badge">{t("list.overdueBadge")}</span>}
                      {file.suspended && <span className="badge suspended-badge">{t("list.suspendedBadge")}</span>}
                    </td>
                    <td data-label={t("list.description")} className="description-cell">
                      {file.description}
                    </td>
                  </tr>
                ))}
              </tbody>
            </table>
            <nav className="pager" aria-label={t("list.page", { page: filters.page })}>
              {filters.page > 1 && (
                <Link to={{ search: filtersToParams({ ...filters, cursor: "", page: 1 }).toString() }} className="button secondary">
                  {t("list.first")}
                </Link>
              )}
              <span className="pager-page">{t("list.page", { page: filters.page })}</span>
              {list.data.next_cursor && (
                <Link to={{ search: filtersToParams(nextPage(filters, list.data.next_cursor)).toString() }} className="button secondary" rel="next">
                  {t("list.next")}
                </Link>
              )}
            </nav>
          </>
        )}
      </div>
    </section>
  );
}

function FilterForm({ filters, onApply }: { filters: ListFilters; onApply: (changes: Partial<ListFilters>) => void }) {
  const { t, i18n } = useTranslation();
  const options = useInitialOptions();
  const phases = usePhases();
  const [draft, setDraft] = useState(filters);
  const set = <K extends keyof ListFilters>(key: K, value: ListFilters[K]) => setDraft({ ...draft, [key]: value });
  const hasFilters = filtersToParams({ ...filters, cursor: "", page: 1 }).toString() !== "";

  return (
    <form
      className="filters card"
      role="search"
      aria-label={t("list.filters")}
      onSubmit={(event) => {
        event.preventDefault();
        onApply(draft);
      }}
    >
      <div className="field field-search">
        <label htmlFor="f-q">{t("list.search")}</label>
        <input id="f-q" type="search" value={draft.q} aria-describedby="f-q-hint" onChange={(e) => set("q", e.target.value)} />
        <span id="f-q-hint" className="hint">
          {t("list.searchHint")}
        </span>
      </div>
      <div className="field">
        <label htmlFor="f-status">{t("list.status")}</label>
        <select id="f-status" value={draft.status} onChange={(e) => set("status", e.target.value as ListFilters["status"])}>
          <option value="">{t("list.any")}</option>
          {STATUSES.map((status) => (
            <option key={status} value={status}>
              {t(`status.${status}`)}
            </option>
          ))}
        </select>
      </div>
      <div className="field">
        <label htmlFor="f-phase">{t("list.phase")}</label>
        <select id="f-phase" value={draft.phase} onChange={(e) => set("phase", e.target.value)}>
          <option value="">{t("list.any")}</option>
          {(phases.data ?? []).map((phase) => (
            <option key={phase.key} value={phase.key}>
              {localName(phase.names, i18n.language, phase.key)}
            </option>
          ))}
          {draft.phase && !phases.data?.some((p) => p.key === draft.phase) && <option value={draft.phase}>{draft.phase}</option>}
        </select>
      </div>
      <div className="field">
        <label htmlFor="f-option">{t("list.initialOption")}</label>
        <select id="f-option" value={draft.initialOption} onChange={(e) => set("initialOption", e.target.value)}>
          <option value="">{t("list.any")}</option>
          {(options.data ?? []).map((option) => (
            <option key={option} value={option}>
              {option}
            </option>
          ))}
          {draft.initialOption && !options.data?.includes(draft.initialOption) && (
            <option value={draft.initialOption}>{draft.initialOption}</option>
          )}
        </select>
      </div>
      <div className="field">
        <label htmlFor="f-from">{t("list.from")}</label>
        <input id="f-from" type="date" value={draft.from} onChange={(e) => set("from", e.target.value)} />
      </div>
      <div className="field">
        <label htmlFor="f-to">{t("list.to")}</label>
        <input id="f-to" type="date" value={draft.to} onChange={(e) => set("to", e.target.value)} />
      </div>
      <div className="field">
        <label htmlFor="f-overdue">{t("list.overdue")}</label>
        <select id="f-overdue" value={draft.overdue} onChange={(e) => set("overdue", e.target.value as ListFilters["overdue"])}>
          <option value="">{t("list.overdueAny")}</option>
          <option value="true">{t("list.overdueYes")}</option>
          <option value="false">{t("list.overdueNo")}</option>
        </select>
      </div>
      <div className="filter-actions">
        <button type="submit" className="button primary">
          {t("list.apply")}
        </button>
        {hasFilters && (
          <button type="button" className="button secondary" onClick={() => onApply(EMPTY_FILTERS)}>
            {t("list.clear")}
          </button>
        )}
      </div>
    </form>
  );
}
