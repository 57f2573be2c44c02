import { useId } from "react";

/** A labelled form control with its hint and its errors beside it. */
export function Field({
  label,
  hint,
  errors,
  required,
  children,
  id: givenId,
}: {
  label: string;
  hint?: string;
  errors?: string[];
  required?: boolean;
  id?: string;
  children: (props: { id: string; "aria-describedby"?: string; "aria-invalid"?: boolean; required?: boolean }) => React.ReactNode;
}) {
  const generated = useId();
  const id = givenId ?? generated;
  const hintId = `${id}-hint`;
  const errorId = `${id}-error`;
  const describedBy = [hint ? hintId : null, errors?.length ? errorId : null].filter(Boolean).join(" ") || undefined;
  return (
    <div className={`field${errors?.length ? " field-invalid" : ""}`}>
      <label htmlFor={id}>
        {label}
        {required && <span aria-hidden="true"> *</span>}
      </label>
      {hint && (
        <span id={hintId} className="hint">
          {hint}
        </span>
      )}
      {children({ id, "aria-describedby": describedBy, "aria-invalid": errors?.length ? true : undefined, required })}
      {errors?.length ? (
        <ul id={errorId} className="field-errors" data-testid={`${id}-errors`}>
          {errors.map((error) => (
            <li key={error}>{error}</li>
          ))}
        </ul>
      ) : null}
    </div>
  );
}
