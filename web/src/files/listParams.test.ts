import { describe, expect, it } from "vitest";
import { EMPTY_FILTERS, filtersToParams, nextPage, parseFilters, toIndexQuery, withCriteria } from "./listParams";

describe("the file list's state in the URL", () => {
  it("given a bookmarked URL, restores search, filters and page", () => {
    const params = new URLSearchParams(
      "q=licencia&status=active&phase=validation&initial_option=Sede+electr%C3%B3nica&from=2026-01-01&to=2026-01-31&overdue=true&cursor=abc&page=3",
    );
    const filters = parseFilters(params);
    expect(filters).toEqual({
      q: "licencia",
      status: "active",
      phase: "validation",
      initialOption: "Sede electrónica",
      from: "2026-01-01",
      to: "2026-01-31",
      overdue: "true",
      cursor: "abc",
      page: 3,
    });
    expect(filtersToParams(filters).toString()).toBe(params.toString());
  });

  it("drops what is malformed instead of sending it to the index", () => {
    const filters = parseFilters(new URLSearchParams("status=open&phase=DROP%20TABLE&from=2026-02-30&to=yesterday&overdue=maybe&page=9"));
    expect(filters).toEqual(EMPTY_FILTERS);
  });

  it("writes only what is set, so an empty list has a clean URL", () => {
    expect(filtersToParams(EMPTY_FILTERS).toString()).toBe("");
    expect(filtersToParams({ ...EMPTY_FILTERS, q: "  obra  " }).toString()).toBe("q=obra");
  });

  it("new criteria go back to the first page; the next page carries the cursor", () => {
    const second = nextPage({ ...EMPTY_FILTERS, q: "obra" }, "c1");
    expect(filtersToParams(second).toString()).toBe("q=obra&cursor=c1&page=2");
    const changed = withCriteria(second, { status: "finished" });
    expect(filtersToParams(changed).toString()).toBe("q=obra&status=finished");
  });

  it("asks the index for whole days in the user's time zone", () => {
    const query = toIndexQuery({ ...EMPTY_FILTERS, from: "2026-03-01", to: "2026-03-02", overdue: "false", cursor: "c" });
    expect(query.created_from).toBe(new Date(2026, 2, 1, 0, 0, 0, 0).toISOString());
    expect(query.created_to).toBe(new Date(2026, 2, 2, 23, 59, 59, 999).toISOString());
    expect(query.overdue).toBe(false);
    expect(query.cursor).toBe("c");
    expect(query.limit).toBe(20);
    expect(toIndexQuery(EMPTY_FILTERS)).toEqual({ limit: 20 });
  });
});
