import { useEffect, useRef } from "react";
import { Link, Outlet, useLocation, useNavigate } from "react-router";
import { useTranslation } from "react-i18next";
import { useQueryClient } from "@tanstack/react-query";
import { useSession } from "../auth/useSession";
import { logoutEverywhere } from "../auth/instance";
import { LanguageSwitch } from "./LanguageSwitch";

/** The frame of every signed-in screen: header with user, language and logout. */
export function Layout() {
  const { t } = useTranslation();
  const state = useSession();
  const navigate = useNavigate();
  const queries = useQueryClient();
  const user = state.status === "signed-in" ? state.user : null;
  const { pathname } = useLocation();
  const mainRef = useRef<HTMLElement>(null);
  const shown = useRef(pathname);
  // Moving to another screen puts the focus at the start of its content, as
  // a page load would (screen readers then read the new screen).
  useEffect(() => {
    if (shown.current !== pathname) {
      shown.current = pathname;
      mainRef.current?.focus();
    }
  }, [pathname]);

  async function logout() {
    await logoutEverywhere();
    queries.clear();
    navigate("/login", { replace: true, state: { reason: "logout" } });
  }

  return (
    <>
      <a className="skip-link" href="#main">
        {t("app.skip")}
      </a>
      <header className="topbar">
        <div className="topbar-inner">
          <Link to="/files" className="brand">
            <span className="brand-mark" aria-hidden="true">
              T
            </span>
            <span>
              {t("app.name")}
              <span className="brand-tagline">{t("app.tagline")}</span>
            </span>
          </Link>
          <nav aria-label={t("app.nav")} className="topnav">
            <Link to="/files">{t("app.files")}</Link>
          </nav>
          <div className="userbox">
            {user && (
              <p className="user" data-testid="user-name">
                <span className="visually-hidden">{t("app.signedInAs", { name: "" })}</span>
                <strong>{user.name}</strong>
                <span className="user-roles">
                  {user.roles.map((role) => t(`app.roles.${role as "clerk"}`, { defaultValue: role })).join(", ")}
                </span>
              </p>
            )}
            <LanguageSwitch />
            <button type="button" className="button secondary" onClick={() => void logout()}>
              {t("app.logout")}
            </button>
          </div>
        </div>
      </header>
      <main id="main" className="content" tabIndex={-1} ref={mainRef}>
        <Outlet />
      </main>
    </>
  );
}
