import "@testing-library/jest-dom/vitest";
import { cleanup } from "@testing-library/react";
import { afterEach } from "vitest";
// Installs the fake gateway before the generated clients capture fetch.
import "./api";
import "../i18n";

afterEach(() => cleanup());
