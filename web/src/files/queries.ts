// Server state of the screens (TanStack Query): every call is a typed call of
// a generated client; errors are the services' problem bodies.
import { useQuery } from "@tanstack/react-query";
import { bpmApi, filesApi, indexApi } from "../api/clients";
import type { components as BpmSchemas } from "../api/generated/bpm";
import type { components as IndexSchemas } from "../api/generated/index";
import type { Problem } from "../api/problem";
import type { IndexQuery } from "./listParams";

/** A file as the index shows it whole. */
export type CaseFile = IndexSchemas["schemas"]["CaseFile"];
/** A row of the file list. */
export type IndexedFile = IndexSchemas["schemas"]["IndexedFile"];
/** A phase of a procedure definition. */
export type PhaseDefinition = BpmSchemas["schemas"]["PhaseDto"];

/** A refused call: its status and problem body. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly problem: Problem | null,
  ) {
    super(problem?.detail ?? problem?.title ?? `HTTP ${status}`);
  }
}

/** The data of a call, or an {@link ApiError}. */
export function unwrap<T>(result: { data?: T; error?: unknown; response: Response }): T {
  if (result.data !== undefined && result.response.ok) return result.data;
  throw new ApiError(result.response.status, (result.error as Problem | undefined) ?? null);
}

/** The channels a file can come in through (files, `FILES_INITIAL_OPTIONS`). */
export function useInitialOptions() {
  return useQuery({
    queryKey: ["initial-options"],
    queryFn: async () => unwrap(await filesApi.GET("/files/initial-options")).options,
    staleTime: Infinity,
  });
}

/** Every phase of every published procedure, by key (for the phase filter). */
export function usePhases() {
  return useQuery({
    queryKey: ["phases"],
    queryFn: async () => {
      const { items } = unwrap(await bpmApi.GET("/bpm/definitions"));
      const phases = new Map<string, PhaseDefinition>();
      for (const definition of items) for (const phase of definition.phases) if (!phases.has(phase.key)) phases.set(phase.key, phase);
      return [...phases.values()];
    },
    staleTime: 60_000,
  });
}

/** A page of the file list. */
export function useFileList(query: IndexQuery) {
  return useQuery({
    queryKey: ["files", query],
    queryFn: async ({ signal }) => unwrap(await indexApi.GET("/index/files", { params: { query }, signal })),
    placeholderData: (previous) => previous,
  });
}
