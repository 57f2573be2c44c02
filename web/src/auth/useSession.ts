// The session's state in React.
import { useSyncExternalStore } from "react";
import { session } from "./instance";
import type { SessionState, User } from "./session";

/** The current session state, re-rendering on change. */
export function useSession(): SessionState {
  return useSyncExternalStore(
    (listener) => session.subscribe(listener),
    () => session.current,
  );
}

/** Roles that create files, upload documents and change phases. */
const WRITERS = ["clerk", "validator"];

/** Whether `user` may create and change files (a reader and an admin may not). */
export function canWrite(user: User | null | undefined): boolean {
  return !!user && user.roles.some((role) => WRITERS.includes(role));
}
