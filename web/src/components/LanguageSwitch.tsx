import { useTranslation } from "react-i18next";
import { LANGUAGES, setLanguage, currentLanguage } from "../i18n";

/** Two buttons, one per language; the current one is pressed. */
export function LanguageSwitch() {
  const { t, i18n } = useTranslation();
  const current = currentLanguage();
  return (
    <div className="language" role="group" aria-label={t("app.language")} data-language={i18n.language}>
      {LANGUAGES.map((language) => (
        <button
          key={language}
          type="button"
          className="language-option"
          aria-pressed={current === language}
          lang={language}
          onClick={() => setLanguage(language)}
        >
          {t(`app.languages.${language}`)}
        </button>
      ))}
    </div>
  );
}
