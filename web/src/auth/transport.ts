// The token endpoint for the web client: client_id=tramita-web and the
// X-Tramita-Web header, so the auth service keeps the refresh token in its
// HttpOnly cookie (scoped to /api/v1/auth) and never in a body.
import createClient from "openapi-fetch";
import type { paths as AuthPaths } from "../api/generated/auth";
import { LoginError, type TokenGrant, type TokenTransport } from "./session";

/** The web app's public client id at the auth service. */
export const WEB_CLIENT_ID = "tramita-web";

const tokenApi = createClient<AuthPaths>({
  baseUrl: `${globalThis.location?.origin ?? ""}/api/v1`,
  credentials: "same-origin",
  bodySerializer: (body) => new URLSearchParams(body as unknown as Record<string, string>),
  headers: { "content-type": "application/x-www-form-urlencoded" },
});

const csrf = { "x-tramita-web": "1" } as const;

/** Seconds from a Retry-After header (delta-seconds or an HTTP date). */
export function retryAfterSeconds(value: string | null, now = Date.now()): number {
  if (!value) return 1;
  const seconds = Number(value);
  if (Number.isFinite(seconds)) return Math.max(1, Math.ceil(seconds));
  const date = Date.parse(value);
  return Number.isNaN(date) ? 1 : Math.max(1, Math.ceil((date - now) / 1000));
}

/** Runs `task` while holding a lock shared by every tab: two tabs never spend one cookie. */
async function exclusive<T>(task: () => Promise<T>): Promise<T> {
  const locks = typeof navigator !== "undefined" ? navigator.locks : undefined;
  return locks ? locks.request("tramita-refresh", task) : task();
}

/** The token endpoint through the gateway. */
export const httpTransport: TokenTransport = {
  async login(username, password): Promise<TokenGrant> {
    let result;
    try {
      result = await tokenApi.POST("/auth/token", {
        params: { header: csrf },
        body: { grant_type: "password", username, password, client_id: WEB_CLIENT_ID },
      });
    } catch {
      throw new LoginError({ kind: "unavailable" });
    }
    const { data, response } = result;
    if (data) return { accessToken: data.access_token, expiresIn: data.expires_in };
    const retryAfter = retryAfterSeconds(response.headers.get("retry-after"));
    if (response.status === 429) throw new LoginError({ kind: "throttled", retryAfterSeconds: retryAfter });
    if (response.status === 503) throw new LoginError({ kind: "busy", retryAfterSeconds: retryAfter });
    if (response.status === 400) throw new LoginError({ kind: "invalid" });
    throw new LoginError({ kind: "unavailable" });
  },

  refresh(): Promise<TokenGrant | null> {
    return exclusive(async () => {
      const { data, response } = await tokenApi.POST("/auth/token", {
        params: { header: csrf },
        body: { grant_type: "refresh_token", client_id: WEB_CLIENT_ID },
      });
      if (data) return { accessToken: data.access_token, expiresIn: data.expires_in };
      if (response.status === 400 || response.status === 401) return null;
      throw new Error(`refresh failed: ${response.status}`);
    });
  },

  async logout(): Promise<void> {
    await tokenApi
      .POST("/auth/logout", { params: { header: csrf }, body: { client_id: WEB_CLIENT_ID } })
      .catch(() => undefined);
  },
};
