import { describe, expect, it } from "vitest";
import { fieldOf, mapProblem } from "./problem";

const FIELDS = ["first_document", "initial_option", "code", "description"] as const;

describe("problem+json field errors", () => {
  it("puts each error beside its field, whatever the API's field syntax", () => {
    const mapped = mapProblem(
      {
        type: "https://tramita.example/problems/validation",
        title: "Invalid request",
        status: 422,
        errors: [
          { field: "description", message: "contains control characters" },
          { field: "first_document.upload_id", message: "is not a UUID" },
          { field: "/code", message: "must look like 2026/000123" },
          { field: "description", message: "is too long" },
        ],
      },
      FIELDS,
    );
    expect(mapped.fields).toEqual({
      description: ["contains control characters", "is too long"],
      first_document: ["is not a UUID"],
      code: ["must look like 2026/000123"],
    });
    expect(mapped.general).toEqual([]);
  });

  it("keeps errors of fields the form does not have, and a bare detail, as general", () => {
    const mapped = mapProblem(
      { type: "t", title: "Invalid", status: 422, errors: [{ field: "procedure", message: "unknown" }] },
      FIELDS,
    );
    expect(mapped).toEqual({ fields: {}, general: ["procedure: unknown"] });
    expect(mapProblem({ type: "t", title: "Bad request", status: 400, detail: "malformed JSON" }, FIELDS)).toEqual({
      fields: {},
      general: ["malformed JSON"],
    });
  });

  it("a conflict is about the field the form names (a taken code)", () => {
    const mapped = mapProblem({ type: "t", title: "Conflict", status: 409, detail: "a file with code 2026/000001 already exists" }, FIELDS, "code");
    expect(mapped.fields.code).toEqual(["a file with code 2026/000001 already exists"]);
  });

  it("names the first segment of pointers and dotted paths", () => {
    expect(fieldOf("/phases/1/initial")).toBe("phases");
    expect(fieldOf("items[0].name")).toBe("items");
  });
});
