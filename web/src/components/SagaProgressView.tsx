import { useTranslation } from "react-i18next";
import type { Progress } from "../files/sagaProgress";

const MARKS = { done: "✓", current: "…", pending: "○", failed: "✗" } as const;

/** The steps of a file's creation, with the state of each in words. */
export function SagaProgressView({ progress }: { progress: Progress }) {
  const { t } = useTranslation();
  return (
    <ol className="steps" data-testid="saga-steps">
      {progress.steps.map((step) => (
        <li key={step.key} className={`step step-${step.state}`} aria-current={step.state === "current" ? "step" : undefined} data-step={step.key} data-state={step.state}>
          <span className="step-mark" aria-hidden="true">
            {MARKS[step.state]}
          </span>
          <span className="step-label">{t(`create.steps.${step.key}`)}</span>
          <span className="step-state">({t(`create.stepState.${step.state}`)})</span>
        </li>
      ))}
    </ol>
  );
}
