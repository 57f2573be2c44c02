// The file list's search, filters and page live in the URL, so a list can
// be bookmarked, shared and gone back to. This module converts between the
// URL's query, the form's values and the index's query parameters.
import type { operations } from "../api/generated/index";

/** What the index's GET /index/files takes. */
export type IndexQuery = NonNullable<operations["list_files"]["parameters"]["query"]>;

/** File statuses the index knows. */
export const STATUSES = ["pending", "active", "finished", "failed"] as const;
export type FileStatus = (typeof STATUSES)[number];

/** The list's state as the URL holds it. */
export interface ListFilters {
  q: string;
  status: FileStatus | "";
  phase: string;
  initialOption: string;
  /** `YYYY-MM-DD`, inclusive, in the user's time zone. */
  from: string;
  /** `YYYY-MM-DD`, inclusive, in the user's time zone. */
  to: string;
  overdue: "" | "true" | "false";
  /** The index's cursor of this page; empty on the first. */
  cursor: string;
  /** 1-based page number, for display ("Page 3"). */
  page: number;
}

/** No filter: the first page of every file. */
export const EMPTY_FILTERS: ListFilters = {
  q: "",
  status: "",
  phase: "",
  initialOption: "",
  from: "",
  to: "",
  overdue: "",
  cursor: "",
  page: 1,
};

const DAY = /^\d{4}-\d{2}-\d{2}$/;

function validDay(value: string | null): string {
  if (!value || !DAY.test(value)) return "";
  const [y, m, d] = value.split("-").map(Number) as [number, number, number];
  const date = new Date(Date.UTC(y, m - 1, d));
  return date.getUTCFullYear() === y && date.getUTCMonth() === m - 1 && date.getUTCDate() === d ? value : "";
}

/** Reads the filters from the URL's query; anything malformed is dropped. */
export function parseFilters(params: URLSearchParams): ListFilters {
  const status = params.get("status") ?? "";
  const overdue = params.get("overdue") ?? "";
  const page = Number(params.get("page"));
  const cursor = params.get("cursor") ?? "";
  return {
    q: (params.get("q") ?? "").trim(),
    status: (STATUSES as readonly string[]).includes(status) ? (status as FileStatus) : "",
    phase: /^[a-z][a-z0-9_-]{0,63}$/.test(params.get("phase") ?? "") ? (params.get("phase") as string) : "",
    initialOption: params.get("initial_option") ?? "",
    from: validDay(params.get("from")),
    to: validDay(params.get("to")),
    overdue: overdue === "true" || overdue === "false" ? overdue : "",
    cursor,
    page: cursor && Number.isInteger(page) && page > 1 ? page : 1,
  };
}

/** The URL query of `filters`: only what is set, in a stable order. */
export function filtersToParams(filters: ListFilters): URLSearchParams {
  const params = new URLSearchParams();
  const set = (name: string, value: string) => {
    if (value) params.set(name, value);
  };
  set("q", filters.q.trim());
  set("status", filters.status);
  set("phase", filters.phase);
  set("initial_option", filters.initialOption);
  set("from", filters.from);
  set("to", filters.to);
  set("overdue", filters.overdue);
  if (filters.cursor) {
    params.set("cursor", filters.cursor);
    if (filters.page > 1) params.set("page", String(filters.page));
  }
  return params;
}

/** Midnight starting `day` in the browser's time zone, as RFC 3339. */
function startOfDay(day: string): string {
  const [y, m, d] = day.split("-").map(Number) as [number, number, number];
  return new Date(y, m - 1, d, 0, 0, 0, 0).toISOString();
}

/** The last millisecond of `day` in the browser's time zone, as RFC 3339. */
function endOfDay(day: string): string {
  const [y, m, d] = day.split("-").map(Number) as [number, number, number];
  return new Date(y, m - 1, d, 23, 59, 59, 999).toISOString();
}

/** The index's query for `filters` (a page of `limit`). */
export function toIndexQuery(filters: ListFilters, limit = 20): IndexQuery {
  const query: IndexQuery = { limit };
  if (filters.q) query.q = filters.q;
  if (filters.status) query.status = filters.status;
  if (filters.phase) query.phase = filters.phase;
  if (filters.initialOption) query.initial_option = filters.initialOption;
  if (filters.from) query.created_from = startOfDay(filters.from);
  if (filters.to) query.created_to = endOfDay(filters.to);
  if (filters.overdue) query.overdue = filters.overdue === "true";
  if (filters.cursor) query.cursor = filters.cursor;
  return query;
}

/** The filters of the next page. */
export function nextPage(filters: ListFilters, cursor: string): ListFilters {
  return { ...filters, cursor, page: filters.page + 1 };
}

/** New search criteria start at the first page. */
export function withCriteria(filters: ListFilters, changes: Partial<ListFilters>): ListFilters {
  return { ...filters, ...changes, cursor: "", page: 1 };
}
