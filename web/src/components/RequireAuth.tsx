import { Navigate, useLocation } from "react-router";
import { useTranslation } from "react-i18next";
import { useSession } from "../auth/useSession";
import { Loading } from "./States";

/** Shows its children to a signed-in user; sends anyone else to the login. */
export function RequireAuth({ children }: { children: React.ReactNode }) {
  const state = useSession();
  const location = useLocation();
  const { t } = useTranslation();
  if (state.status === "restoring") {
    return (
      <main id="main" className="centered">
        <Loading label={t("app.restoring")} />
      </main>
    );
  }
  if (state.status === "signed-out") {
    const next = location.pathname + location.search;
    return <Navigate to="/login" replace state={{ next, reason: state.reason }} />;
  }
  return <>{children}</>;
}
