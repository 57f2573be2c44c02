// Typed clients of the five services, generated from their OpenAPI
// documents (src/api/generated, `npm run gen:api`). The gateway serves every
// service under /api/v1, and each service's paths already start with its name
// (/files/..., /index/...), so every client's base is /api/v1.
import createClient, { type Middleware } from "openapi-fetch";
import type { paths as AuthPaths } from "./generated/auth";
import type { paths as BpmPaths } from "./generated/bpm";
import type { paths as DocsPaths } from "./generated/docs";
import type { paths as FilesPaths } from "./generated/files";
import type { paths as IndexPaths } from "./generated/index";
import { session } from "../auth/instance";

/** Where the gateway serves the API: this origin's /api/v1. */
export const API_BASE = `${globalThis.location?.origin ?? ""}/api/v1`;

const retries = new WeakMap<Request, Request>();

/** Adds the access token; on 401 refreshes once and repeats a GET. */
const bearer: Middleware = {
  async onRequest({ request }) {
    const token = await session.accessToken();
    if (token) request.headers.set("Authorization", `Bearer ${token}`);
    if (request.method === "GET") retries.set(request, request.clone());
    return request;
  },
  async onResponse({ request, response }) {
    if (response.status !== 401) return response;
    const token = await session.unauthorized();
    const again = retries.get(request);
    if (!token || !again) return response;
    again.headers.set("Authorization", `Bearer ${token}`);
    return fetch(again);
  },
};

function client<Paths extends object>() {
  const api = createClient<Paths>({ baseUrl: API_BASE });
  api.use(bearer);
  return api;
}

/** auth: who am I (the token endpoint is in auth/transport.ts). */
export const authApi = client<AuthPaths>();
/** files: create, read and change case files. */
export const filesApi = client<FilesPaths>();
/** index: find files and read the whole case. */
export const indexApi = client<IndexPaths>();
/** docs: documents, uploads and downloads. */
export const docsApi = client<DocsPaths>();
/** bpm: processes, transitions and definitions. */
export const bpmApi = client<BpmPaths>();
