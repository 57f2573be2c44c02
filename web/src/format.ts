// Dates and names shown in the user's language and time zone.

/** A timestamp (RFC 3339) in the language's format and the browser's time zone. */
export function formatDateTime(iso: string | null | undefined, language: string): string {
  if (!iso) return "—";
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return iso;
  return new Intl.DateTimeFormat(language, { dateStyle: "medium", timeStyle: "short" }).format(date);
}

/** A civil date (`YYYY-MM-DD`, such as a due date) as the same day everywhere. */
export function formatCivilDate(day: string | null | undefined, language: string): string {
  if (!day) return "—";
  const match = /^(\d{4})-(\d{2})-(\d{2})$/.exec(day);
  if (!match) return day;
  const date = new Date(Date.UTC(Number(match[1]), Number(match[2]) - 1, Number(match[3])));
  return new Intl.DateTimeFormat(language, { dateStyle: "medium", timeZone: "UTC" }).format(date);
}

/** Localised names (`{es, en}`) in the current language. */
export function localName(names: { es?: string | null; en?: string | null } | null | undefined, language: string, fallback = ""): string {
  if (!names) return fallback;
  const preferred = language === "en" ? names.en : names.es;
  return preferred || names.es || names.en || fallback;
}

/** A size in bytes, as KB/MB. */
export function formatSize(bytes: number, language: string): string {
  const units = ["B", "KB", "MB", "GB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  const digits = unit === 0 ? 0 : 1;
  return `${new Intl.NumberFormat(language, { maximumFractionDigits: digits }).format(value)} ${units[unit]}`;
}
