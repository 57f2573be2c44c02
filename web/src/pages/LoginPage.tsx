import { useEffect, useRef, useState } from "react";
import { Navigate, useLocation, useNavigate } from "react-router";
import { useTranslation } from "react-i18next";
import { session } from "../auth/instance";
import { LoginError, type LoginFailure } from "../auth/session";
import { useSession } from "../auth/useSession";
import { LanguageSwitch } from "../components/LanguageSwitch";
import { useDocumentTitle } from "../components/useDocumentTitle";

interface LocationState {
  next?: string;
  reason?: "expired" | "logout";
}

/** A refusal and, when throttled, until when. */
interface Refusal {
  failure: LoginFailure;
  until?: number;
}

export function LoginPage() {
  const { t, i18n } = useTranslation();
  useDocumentTitle(t("login.title"));
  const state = useSession();
  const navigate = useNavigate();
  const location = useLocation();
  const from = (location.state ?? {}) as LocationState;
  const [username, setUsername] = useState("");
  const [password, setPassword] = useState("");
  const [busy, setBusy] = useState(false);
  const [refusal, setRefusal] = useState<Refusal | null>(null);
  const [missing, setMissing] = useState(false);
  const [now, setNow] = useState(() => Date.now());
  const alertRef = useRef<HTMLDivElement>(null);

  const waiting = refusal?.until !== undefined && refusal.until > now;
  useEffect(() => {
    if (!waiting) return;
    const timer = setInterval(() => setNow(Date.now()), 1000);
    return () => clearInterval(timer);
  }, [waiting]);

  useEffect(() => {
    if (refusal || missing) alertRef.current?.focus();
  }, [refusal, missing]);

  if (state.status === "signed-in" && !busy) {
    return <Navigate to={from.next && from.next !== "/login" ? from.next : "/files"} replace />;
  }

  async function submit(event: React.FormEvent) {
    event.preventDefault();
    if (!username.trim() || !password) {
      setMissing(true);
      setRefusal(null);
      return;
    }
    setMissing(false);
    setBusy(true);
    setRefusal(null);
    try {
      await session.login(username.trim(), password);
      navigate(from.next && from.next !== "/login" ? from.next : "/files", { replace: true });
    } catch (error) {
      const failure: LoginFailure = error instanceof LoginError ? error.failure : { kind: "unavailable" };
      const until =
        failure.kind === "throttled" || failure.kind === "busy" ? Date.now() + failure.retryAfterSeconds * 1000 : undefined;
      setNow(Date.now());
      setRefusal({ failure, until });
      setPassword("");
    } finally {
      setBusy(false);
    }
  }

  function message(refusal: Refusal): string {
    const { failure } = refusal;
    switch (failure.kind) {
      case "invalid":
        return t("login.invalid");
      case "throttled": {
        const time = new Intl.DateTimeFormat(i18n.language, { timeStyle: "medium" }).format(refusal.until);
        return t("login.throttled", { time, count: failure.retryAfterSeconds });
      }
      case "busy":
        return t("login.busy", { count: failure.retryAfterSeconds });
      default:
        return t("login.unavailable");
    }
  }

  const notice = from.reason === "expired" ? t("app.expired") : from.reason === "logout" ? t("app.loggedOut") : null;

  return (
    <div className="login-page">
      <header className="login-header">
        <span className="brand">
          <span className="brand-mark" aria-hidden="true">
            T
          </span>
          <span>
            {t("app.name")}
            <span className="brand-tagline">{t("app.tagline")}</span>
          </span>
        </span>
        <LanguageSwitch />
      </header>
      <main id="main" className="login-main">
        <form className="card login-card" onSubmit={(e) => void submit(e)} noValidate aria-labelledby="login-title">
          <h1 id="login-title">{t("login.title")}</h1>
          <p className="muted">{t("login.intro")}</p>
          {notice && !refusal && (
            <p className="notice" role="status">
              {notice}
            </p>
          )}
          {(refusal || missing) && (
            <div className="alert" role="alert" tabIndex={-1} ref={alertRef} data-testid="login-error">
              {refusal ? message(refusal) : t("login.required")}
            </div>
          )}
          <div className="field">
            <label htmlFor="username">{t("login.username")}</label>
            <input
              id="username"
              name="username"
              autoComplete="username"
              autoCapitalize="none"
              spellCheck={false}
              required
              value={username}
              onChange={(e) => setUsername(e.target.value)}
            />
          </div>
          <div className="field">
            <label htmlFor="password">{t("login.password")}</label>
            <input
              id="password"
              name="password"
              type="password"
              autoComplete="current-password"
              required
              value={password}
              onChange={(e) => setPassword(e.target.value)}
            />
          </div>
          <button type="submit" className="button primary wide" disabled={busy || waiting} aria-disabled={busy || waiting}>
            {busy ? t("login.submitting") : t("login.submit")}
          </button>
        </form>
      </main>
    </div>
  );
}
