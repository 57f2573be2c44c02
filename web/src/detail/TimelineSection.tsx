import { useInfiniteQuery } from "@tanstack/react-query";
import { useTranslation } from "react-i18next";
import { indexApi } from "../api/clients";
import { ErrorState, Loading, errorMessage } from "../components/States";
import { formatDateTime } from "../format";
import { unwrap } from "../files/queries";

/** Everything that happened to the file, oldest first, a page at a time. */
export function TimelineSection({ fileId }: { fileId: string }) {
  const { t, i18n } = useTranslation();
  const timeline = useInfiniteQuery({
    queryKey: ["timeline", fileId],
    initialPageParam: "",
    queryFn: async ({ pageParam }) =>
      unwrap(
        await indexApi.GET("/index/files/{id}/timeline", {
          params: { path: { id: fileId }, query: { limit: 50, ...(pageParam ? { cursor: pageParam } : {}) } },
        }),
      ),
    getNextPageParam: (page) => page.next_cursor ?? undefined,
  });
  const items = timeline.data?.pages.flatMap((page) => page.items) ?? [];
  return (
    <section aria-labelledby="timeline-title" className="card">
      <h2 id="timeline-title">{t("detail.timeline")}</h2>
      {timeline.isPending ? (
        <Loading />
      ) : timeline.isError ? (
        <ErrorState message={errorMessage(timeline.error)} onRetry={() => void timeline.refetch()} />
      ) : items.length === 0 ? (
        <p className="state state-empty">{t("detail.noTimeline")}</p>
      ) : (
        <ol className="timeline" data-testid="timeline">
          {items.map((item) => (
            <li key={item.id} data-type={item.type}>
              <time dateTime={item.occurred_at}>{formatDateTime(item.occurred_at, i18n.language)}</time>
              <span className="timeline-what">
                <strong>{t(`events.${item.type as "files.FileCreated.v1"}`, { defaultValue: item.type })}</strong>
                <span lang="es"> — {item.summary}</span>
              </span>
              <span className="muted">{item.actor?.name ?? t("detail.system")}</span>
            </li>
          ))}
        </ol>
      )}
      {timeline.hasNextPage && (
        <button type="button" className="button secondary" onClick={() => void timeline.fetchNextPage()} disabled={timeline.isFetchingNextPage}>
          {t("detail.more")}
        </button>
      )}
    </section>
  );
}
