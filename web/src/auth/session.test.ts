import { describe, expect, it, vi } from "vitest";
import { LoginError, Session, refreshDelayMs, userFromToken, type Clock, type TokenGrant, type TokenTransport } from "./session";
import { retryAfterSeconds } from "./transport";

function jwt(claims: object): string {
  const encode = (value: object) => {
    const bytes = new TextEncoder().encode(JSON.stringify(value));
    return btoa(String.fromCharCode(...bytes)).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  };
  return `${encode({ alg: "EdDSA" })}.${encode(claims)}.signature`;
}

/** A clock whose time and timers the test moves. */
class FakeClock implements Clock {
  time = 0;
  timers: { at: number; callback: () => void; id: number }[] = [];
  private next = 1;
  now = () => this.time;
  setTimeout = (callback: () => void, ms: number) => {
    const id = this.next++;
    this.timers.push({ at: this.time + ms, callback, id });
    return id;
  };
  clearTimeout = (handle: unknown) => {
    this.timers = this.timers.filter((t) => t.id !== handle);
  };
  advance(ms: number) {
    this.time += ms;
    const due = this.timers.filter((t) => t.at <= this.time);
    this.timers = this.timers.filter((t) => t.at > this.time);
    for (const timer of due) timer.callback();
  }
}

function grant(name: string, expiresIn = 300): TokenGrant {
  return { accessToken: jwt({ sub: `id-${name}`, name, roles: ["clerk"] }), expiresIn };
}

function transport(overrides: Partial<TokenTransport> = {}): TokenTransport {
  return {
    login: vi.fn(async () => grant("Demo, Tramitador")),
    refresh: vi.fn(async () => grant("Demo, Tramitador")),
    logout: vi.fn(async () => undefined),
    ...overrides,
  };
}

const flush = () => new Promise((resolve) => setTimeout(resolve, 0));

describe("refreshDelayMs", () => {
  it("renews a 5-minute token one minute before it expires", () => {
    expect(refreshDelayMs(300)).toBe(240_000);
  });
  it("renews a short token at four fifths of its life", () => {
    expect(refreshDelayMs(60)).toBe(48_000);
    expect(refreshDelayMs(0)).toBe(0);
  });
});

describe("Session", () => {
  it("given a login, keeps the token in memory and refreshes it before it expires", async () => {
    const clock = new FakeClock();
    const api = transport();
    const session = new Session(api, clock);

    const user = await session.login("clerk", "clerk-dev-only");

    expect(user).toEqual({ id: "id-Demo, Tramitador", name: "Demo, Tramitador", roles: ["clerk"] });
    expect(session.current.status).toBe("signed-in");
    expect(api.refresh).not.toHaveBeenCalled();
    clock.advance(239_999);
    expect(api.refresh).not.toHaveBeenCalled();
    clock.advance(1);
    expect(api.refresh).toHaveBeenCalledTimes(1);
    await flush();
    // the next one is scheduled from the new token
    clock.advance(240_000);
    expect(api.refresh).toHaveBeenCalledTimes(2);
  });

  it("given many callers of an expiring token, refreshes once", async () => {
    const clock = new FakeClock();
    let resolve: (g: TokenGrant) => void = () => undefined;
    const api = transport({ refresh: vi.fn(() => new Promise<TokenGrant>((r) => (resolve = r))) });
    const session = new Session(api, clock);
    await session.login("clerk", "x");
    clock.time = 299_000; // the timer was cleared by nobody: simulate a sleeping tab
    const calls = [session.accessToken(), session.accessToken(), session.accessToken()];
    resolve(grant("Demo, Tramitador"));
    const tokens = await Promise.all(calls);
    expect(api.refresh).toHaveBeenCalledTimes(1);
    expect(new Set(tokens).size).toBe(1);
  });

  it("when the refresh is refused, signs out with the reason expired", async () => {
    const clock = new FakeClock();
    const api = transport({ refresh: vi.fn(async () => null) });
    const session = new Session(api, clock);
    await session.login("clerk", "x");
    const states: string[] = [];
    session.subscribe((s) => states.push(s.status === "signed-out" ? `signed-out:${s.reason}` : s.status));

    clock.advance(240_000);
    await flush();

    expect(states).toEqual(["signed-out:expired"]);
    expect(await session.accessToken()).toBeNull();
  });

  it("restores a session from the cookie on page load, or is signed out without one", async () => {
    const signedIn = new Session(transport(), new FakeClock());
    await signedIn.restore();
    expect(signedIn.current.status).toBe("signed-in");

    const anonymous = new Session(transport({ refresh: vi.fn(async () => null) }), new FakeClock());
    expect(anonymous.current.status).toBe("restoring");
    await anonymous.restore();
    expect(anonymous.current).toEqual({ status: "signed-out" });
  });

  it("logout forgets the token, stops the timer and ends the server session", async () => {
    const clock = new FakeClock();
    const api = transport();
    const session = new Session(api, clock);
    await session.login("clerk", "x");
    await session.logout();
    expect(session.current).toEqual({ status: "signed-out", reason: "logout" });
    expect(api.logout).toHaveBeenCalledTimes(1);
    expect(clock.timers).toHaveLength(0);
    expect(await session.accessToken()).toBeNull();
  });

  it("a refused login stays signed out and says why", async () => {
    const api = transport({
      login: vi.fn(async () => {
        throw new LoginError({ kind: "throttled", retryAfterSeconds: 8 });
      }),
      refresh: vi.fn(async () => null),
    });
    const session = new Session(api, new FakeClock());
    await session.restore();
    await expect(session.login("clerk", "wrong")).rejects.toMatchObject({ failure: { kind: "throttled", retryAfterSeconds: 8 } });
    expect(session.current.status).toBe("signed-out");
  });

  it("after a 401 it refreshes once and hands out the new token", async () => {
    const api = transport();
    const session = new Session(api, new FakeClock());
    await session.login("clerk", "x");
    const token = await session.unauthorized();
    expect(api.refresh).toHaveBeenCalledTimes(1);
    expect(token).toBe(grant("Demo, Tramitador").accessToken);
  });
});

describe("userFromToken", () => {
  it("reads UTF-8 names", () => {
    expect(userFromToken(jwt({ sub: "1", name: "Pérez, Luis", roles: ["reader"] })).name).toBe("Pérez, Luis");
  });
});

describe("retryAfterSeconds", () => {
  it("reads delta seconds and HTTP dates, at least one second", () => {
    expect(retryAfterSeconds("8")).toBe(8);
    expect(retryAfterSeconds("0")).toBe(1);
    expect(retryAfterSeconds(null)).toBe(1);
    expect(retryAfterSeconds(new Date(10_000).toUTCString(), 0)).toBe(10);
  });
});
