import { useEffect } from "react";

/** Sets the page's title ("<screen> · Tramita"), which screen readers announce. */
export function useDocumentTitle(title: string) {
  useEffect(() => {
    document.title = `${title} · Tramita`;
  }, [title]);
}
