// react-i18next with Spanish by default and English; the choice is kept in
// localStorage (a preference, not a secret) and set as <html lang>.
import i18n from "i18next";
import { initReactI18next } from "react-i18next";
import es from "./es";
import en from "./en";

/** The languages of the app, the default first. */
export const LANGUAGES = ["es", "en"] as const;
/** One of {@link LANGUAGES}. */
export type Language = (typeof LANGUAGES)[number];

const STORAGE_KEY = "tramita.language";

function saved(): Language {
  try {
    const value = localStorage.getItem(STORAGE_KEY);
    return value === "en" ? "en" : "es";
  } catch {
    return "es";
  }
}

void i18n.use(initReactI18next).init({
  resources: { es: { translation: es }, en: { translation: en } },
  lng: saved(),
  fallbackLng: "es",
  interpolation: { escapeValue: false },
  returnNull: false,
});

function applyLang(language: string) {
  if (typeof document !== "undefined") document.documentElement.lang = language;
}
applyLang(i18n.language);
i18n.on("languageChanged", applyLang);

/** Switches the language and remembers it. */
export function setLanguage(language: Language): void {
  try {
    localStorage.setItem(STORAGE_KEY, language);
  } catch {
    // A browser without storage still switches for this page.
  }
  void i18n.changeLanguage(language);
}

/** The current language as one of {@link LANGUAGES}. */
export function currentLanguage(): Language {
  return i18n.language === "en" ? "en" : "es";
}

export default i18n;
