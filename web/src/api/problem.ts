// RFC 9457 problem details as the services answer them, and their field
// errors mapped onto the fields of a form.
import type { components } from "./generated/files";

/** An `application/problem+json` body. */
export type Problem = components["schemas"]["Problem"];

/** Whether `value` looks like a problem body. */
export function isProblem(value: unknown): value is Problem {
  return (
    typeof value === "object" &&
    value !== null &&
    typeof (value as Problem).status === "number" &&
    typeof (value as Problem).title === "string"
  );
}

/** The field errors of a problem, by form field, and what belongs to none. */
export interface MappedErrors<F extends string> {
  fields: Partial<Record<F, string[]>>;
  general: string[];
}

/**
 * The form field an API field name belongs to: `code`, `/code`,
 * `first_document.upload_id` and `/first_document/upload_id` all name their
 * first segment.
 */
export function fieldOf(apiField: string): string {
  return apiField.replace(/^\//, "").split(/[./[]/)[0] ?? apiField;
}

/**
 * Maps a problem's `errors` onto the form's fields; errors of other fields,
 * and the detail of a problem without errors, are general. `conflicts`
 * names the field a 409 is about (a taken code).
 */
export function mapProblem<F extends string>(
  problem: Problem,
  formFields: readonly F[],
  conflicts?: F,
): MappedErrors<F> {
  const mapped: MappedErrors<F> = { fields: {}, general: [] };
  const known = new Set<string>(formFields);
  for (const error of problem.errors ?? []) {
    const field = fieldOf(error.field);
    if (known.has(field)) {
      const list = (mapped.fields[field as F] ??= []);
      list.push(error.message);
    } else {
      mapped.general.push(`${error.field}: ${error.message}`);
    }
  }
  if (!problem.errors?.length) {
    const text = problem.detail ?? problem.title;
    if (problem.status === 409 && conflicts) mapped.fields[conflicts] = [text];
    else mapped.general.push(text);
  }
  return mapped;
}
