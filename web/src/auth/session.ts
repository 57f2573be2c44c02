// The signed-in session: the access token lives only in this object's
// memory and is refreshed before it expires; the refresh token is an
// HttpOnly cookie the page never sees (the auth service sets it for the web
// client). A page load restores the session by a refresh with that cookie.

/** What a grant gives the page: the access token and its lifetime. */
export interface TokenGrant {
  accessToken: string;
  /** Lifetime in seconds. */
  expiresIn: number;
}

/** Why a login was refused. */
export type LoginFailure =
  | { kind: "invalid" }
  | { kind: "throttled"; retryAfterSeconds: number }
  | { kind: "busy"; retryAfterSeconds: number }
  | { kind: "unavailable" };

/** A refused login, with its reason. */
export class LoginError extends Error {
  constructor(readonly failure: LoginFailure) {
    super(`login refused: ${failure.kind}`);
  }
}

/** The token endpoint as the session uses it. */
export interface TokenTransport {
  /** Password grant; rejects with {@link LoginError}. */
  login(username: string, password: string): Promise<TokenGrant>;
  /** Refresh grant with the cookie; resolves `null` when there is no session. */
  refresh(): Promise<TokenGrant | null>;
  /** Ends the session on the server and removes the cookie. */
  logout(): Promise<void>;
}

/** Time, injectable for tests. */
export interface Clock {
  now(): number;
  setTimeout(callback: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

const realClock: Clock = {
  now: () => Date.now(),
  setTimeout: (callback, ms) => globalThis.setTimeout(callback, ms),
  clearTimeout: (handle) => globalThis.clearTimeout(handle as ReturnType<typeof setTimeout>),
};

/** The signed-in user, as the access token names them (for display only). */
export interface User {
  id: string;
  name: string;
  roles: string[];
}

/** The session's state. */
export type SessionState =
  | { status: "restoring" }
  | { status: "signed-out"; reason?: "expired" | "logout" }
  | { status: "signed-in"; user: User };

/**
 * How long before expiry the access token is refreshed: a fifth of its
 * lifetime, at most a minute, so a 5-minute token is renewed after 4.
 */
export function refreshDelayMs(expiresInSeconds: number): number {
  const lifetime = Math.max(0, expiresInSeconds) * 1000;
  const margin = Math.min(60_000, lifetime / 5);
  return Math.max(0, lifetime - margin);
}

/** The claims of a JWT's payload (not verified: the services do that). */
export function userFromToken(token: string): User {
  const payload = token.split(".")[1] ?? "";
  const base64 = payload.replace(/-/g, "+").replace(/_/g, "/");
  const padded = base64 + "=".repeat((4 - (base64.length % 4)) % 4);
  const bytes = Uint8Array.from(atob(padded), (c) => c.charCodeAt(0));
  const claims = JSON.parse(new TextDecoder().decode(bytes)) as {
    sub?: string;
    name?: string;
    roles?: string[];
  };
  return { id: claims.sub ?? "", name: claims.name ?? claims.sub ?? "", roles: claims.roles ?? [] };
}

/** Holds the access token, renews it on time and tells listeners. */
export class Session {
  private token: string | null = null;
  private expiresAt = 0;
  private timer: unknown = null;
  private pending: Promise<string | null> | null = null;
  private state: SessionState = { status: "restoring" };
  private readonly listeners = new Set<(state: SessionState) => void>();

  constructor(
    private readonly transport: TokenTransport,
    private readonly clock: Clock = realClock,
  ) {}

  /** The current state. */
  get current(): SessionState {
    return this.state;
  }

  /** Calls `listener` on every change; returns the unsubscribe. */
  subscribe(listener: (state: SessionState) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Restores a session from the cookie (on page load). */
  async restore(): Promise<void> {
    await this.renew();
    if (this.state.status === "restoring") this.setState({ status: "signed-out" });
  }

  /** Signs in; rejects with {@link LoginError}. */
  async login(username: string, password: string): Promise<User> {
    const grant = await this.transport.login(username, password);
    return this.accept(grant);
  }

  /**
   * Ends the session on the server (which removes the cookie), then here:
   * "signed out" is only shown once it is true.
   */
  async logout(): Promise<void> {
    try {
      await this.transport.logout();
    } finally {
      this.drop({ status: "signed-out", reason: "logout" });
    }
  }

  /** Another tab ended the session: forget it here too. */
  endedElsewhere(): void {
    this.drop({ status: "signed-out", reason: "logout" });
  }

  /**
   * A valid access token for a request: the one in memory, or a fresh one
   * when it is about to expire (one refresh however many callers wait).
   */
  async accessToken(): Promise<string | null> {
    if (this.token && this.clock.now() < this.expiresAt - 5_000) return this.token;
    if (this.state.status === "signed-out") return null;
    return this.renew();
  }

  /** An API call was refused with 401: try one refresh, else sign out. */
  async unauthorized(): Promise<string | null> {
    this.token = null;
    return this.renew();
  }

  private renew(): Promise<string | null> {
    if (!this.pending) {
      this.pending = this.transport
        .refresh()
        .then((grant) => {
          if (grant) {
            this.accept(grant);
            return grant.accessToken;
          }
          this.expire();
          return null;
        })
        .catch(() => {
          this.expire();
          return null;
        })
        .finally(() => {
          this.pending = null;
        });
    }
    return this.pending;
  }

  private accept(grant: TokenGrant): User {
    this.token = grant.accessToken;
    this.expiresAt = this.clock.now() + grant.expiresIn * 1000;
    this.schedule(refreshDelayMs(grant.expiresIn));
    const user = userFromToken(grant.accessToken);
    this.setState({ status: "signed-in", user });
    return user;
  }

  private expire(): void {
    const wasSignedIn = this.state.status === "signed-in";
    this.drop(wasSignedIn ? { status: "signed-out", reason: "expired" } : { status: "signed-out" });
  }

  private drop(state: SessionState): void {
    this.token = null;
    this.expiresAt = 0;
    if (this.timer !== null) this.clock.clearTimeout(this.timer);
    this.timer = null;
    this.setState(state);
  }

  private schedule(delay: number): void {
    if (this.timer !== null) this.clock.clearTimeout(this.timer);
    this.timer = this.clock.setTimeout(() => {
      this.timer = null;
      void this.renew();
    }, delay);
  }

  private setState(state: SessionState): void {
    this.state = state;
    for (const listener of this.listeners) listener(state);
  }
}
