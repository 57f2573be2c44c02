// The whole case from the index, re-read until it shows a change this page
// just made (the index is eventually consistent: it follows the events).
import { useCallback, useEffect, useState } from "react";
import { useQuery, useQueryClient } from "@tanstack/react-query";
import { indexApi } from "../api/clients";
import { ApiError, unwrap, type CaseFile } from "../files/queries";

/** A condition the index must meet before the page stops re-reading it. */
export type Expectation = (file: CaseFile) => boolean;

/** The case file, and `expect` to re-read it until a change shows. */
export function useCaseFile(id: string) {
  const [expectation, setExpectation] = useState<Expectation | null>(null);
  const queries = useQueryClient();
  const query = useQuery({
    queryKey: ["case", id],
    queryFn: async ({ signal }) => unwrap(await indexApi.GET("/index/files/{id}", { params: { path: { id } }, signal })),
    // A file just created may not have reached the index yet.
    retry: (count, error) => error instanceof ApiError && error.status === 404 && count < 6,
    retryDelay: 500,
    refetchInterval: (q) => (expectation && q.state.data && !expectation(q.state.data) ? 400 : false),
  });
  const waiting = expectation !== null && !(query.data && expectation(query.data));
  // Once the index shows the change, the timeline and the list have it too.
  useEffect(() => {
    if (expectation && !waiting) {
      void queries.invalidateQueries({ queryKey: ["timeline", id] });
      void queries.invalidateQueries({ queryKey: ["files"] });
    }
  }, [expectation, waiting, queries, id]);
  const expect = useCallback(
    (condition: Expectation) => {
      setExpectation(() => condition);
      void queries.invalidateQueries({ queryKey: ["case", id] });
    },
    [queries, id],
  );
  return { ...query, expect, waiting };
}
