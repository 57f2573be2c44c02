// The one session of the page, shared by the API clients and the UI. Other
// tabs hear of a logout on a broadcast channel and sign out too.
import { Session } from "./session";
import { httpTransport } from "./transport";

/** The page's session. */
export const session = new Session(httpTransport);

const channel = typeof BroadcastChannel !== "undefined" ? new BroadcastChannel("tramita-session") : null;
channel?.addEventListener("message", (event: MessageEvent<string>) => {
  if (event.data === "logout") session.endedElsewhere();
});

/** Signs out here, on the server and in every other tab. */
export async function logoutEverywhere(): Promise<void> {
  channel?.postMessage("logout");
  await session.logout();
}
