/**
 * A region that scrolls sideways (a wide table on a phone): focusable, so a
 * keyboard can scroll it (WCAG 2.1.1), and named by its heading.
 */
export function ScrollRegion({ labelledBy, children }: { labelledBy: string; children: React.ReactNode }) {
  return (
    // eslint-disable-next-line jsx-a11y/no-noninteractive-tabindex
    <div className="table-scroll" role="region" aria-labelledby={labelledBy} tabIndex={0}>
      {children}
    </div>
  );
}
