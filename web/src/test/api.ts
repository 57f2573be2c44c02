// A stand-in for the gateway in component tests: handlers by "METHOD /path"
// (the path under /api/v1), every request recorded. Install it with
// vi.hoisted(installApi) so the generated clients pick it up.
export type Handler = (request: Request) => Response | Promise<Response>;

export interface FakeApi {
  handlers: Map<string, Handler>;
  requests: Request[];
}

export function installApi(): FakeApi {
  const api: FakeApi = { handlers: new Map(), requests: [] };
  globalThis.fetch = async (input: RequestInfo | URL, init?: RequestInit) => {
    const request = input instanceof Request ? input : new Request(input, init);
    api.requests.push(request.clone());
    const url = new URL(request.url);
    const key = `${request.method} ${url.pathname.replace(/^\/api\/v1/, "")}`;
    const handler = api.handlers.get(key);
    if (!handler) return new Response(JSON.stringify({ type: "about:blank", title: "Not Found", status: 404 }), { status: 404 });
    return handler(request);
  };
  return api;
}

export function json(body: unknown, init: ResponseInit = {}): Response {
  return new Response(JSON.stringify(body), {
    ...init,
    headers: { "content-type": "application/json", ...(init.headers ?? {}) },
  });
}

/** An unsigned JWT with the claims the app reads (display only). */
export function fakeJwt(claims: { sub: string; name: string; roles: string[] }): string {
  const encode = (value: object) => {
    const bytes = new TextEncoder().encode(JSON.stringify(value));
    return btoa(String.fromCharCode(...bytes)).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  };
  return `${encode({ alg: "EdDSA" })}.${encode(claims)}.x`;
}

/** The fake gateway of every component test (installed by setup.ts, before the app's modules load). */
export const fakeApi = installApi();
