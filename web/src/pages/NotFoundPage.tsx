import { Link } from "react-router";
import { useTranslation } from "react-i18next";
import { useDocumentTitle } from "../components/useDocumentTitle";

export function NotFoundPage() {
  const { t } = useTranslation();
  useDocumentTitle(t("app.notFound"));
  return (
    <section>
      <h1>{t("app.notFound")}</h1>
      <p>{t("app.notFoundText")}</p>
      <Link to="/files">{t("app.backToList")}</Link>
    </section>
  );
}
