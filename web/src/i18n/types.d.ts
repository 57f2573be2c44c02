import "i18next";
import type { Messages } from "./es";

declare module "i18next" {
  interface CustomTypeOptions {
    resources: { translation: Messages };
  }
}
