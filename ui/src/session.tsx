// Who is logged in: /api/v1/auth/me once at start. Browser sessions are an HttpOnly cookie the
// server set at login; every change carries the session's CSRF token (X-CSRF-Token), which the
// page keeps in memory only. Without a session the app shows the login page.
import { createContext, useContext, useEffect, useState, type ReactNode } from "react";
import { api, earlyData, type Schemas } from "./api/client";
import { useData } from "./hooks";

export type Me = Schemas["MeOut"];

let csrf: string | null = null;
const UNSAFE = new Set(["POST", "PUT", "PATCH", "DELETE"]);

api.use({
  onRequest({ request }) {
    if (csrf && UNSAFE.has(request.method)) request.headers.set("X-CSRF-Token", csrf);
    return request;
  },
});

type SessionState = { me: Me | null; loading: boolean; refresh: () => Promise<void>; logout: () => Promise<void> };
const SessionContext = createContext<SessionState>({
  me: null, loading: true, refresh: async () => {}, logout: async () => {},
});

/** Who is logged in (null: nobody), asked once; keeps the session's CSRF token for later changes. */
export async function loadSession(): Promise<Me | null> {
  const { data } = await api.GET("/api/v1/auth/me");
  csrf = data?.csrf_token ?? null;
  return data ?? null;
}

/** Who is logged in, from inside index.html (a browser that logged in: api/client.ts), or
 * undefined when the page came without it. */
export function inlinedSession(): Me | undefined {
  const me = earlyData<Me>("/api/v1/auth/me");
  if (me) csrf = me.csrf_token ?? null;
  return me;
}

/** `initial`: the identity main.tsx loaded before the first render (the app then starts on its
 * page instead of "Loading…"); without it the provider asks itself. */
export function SessionProvider({ children, initial }: { children: ReactNode; initial?: Me | null }) {
  const [me, setMe] = useState<Me | null>(initial ?? null);
  const [loading, setLoading] = useState(initial === undefined);
  const refresh = async () => {
    setMe(await loadSession());
    setLoading(false);
  };
  const logout = async () => {
    await api.POST("/api/v1/auth/logout");
    csrf = null;
    setMe(null);
  };
  useEffect(() => { if (initial === undefined) void refresh(); }, []);
  return <SessionContext.Provider value={{ me, loading, refresh, logout }}>{children}</SessionContext.Provider>;
}

export function useSession(): SessionState {
  return useContext(SessionContext);
}

/** Whether the logged-in identity has at least this global role (the server checks every call). */
export function can(me: Me | null, role: "viewer" | "operator" | "admin"): boolean {
  const order = ["viewer", "operator", "admin"];
  return !!me && order.indexOf(me.role) >= order.indexOf(role);
}

export type RoleName = "viewer" | "operator" | "admin";
const ORDER: RoleName[] = ["viewer", "operator", "admin"];

function matches(target: string, pipeline: string, tags: readonly string[]): boolean {
  return target.startsWith("tag:") ? tags.includes(target.slice(4)) : target === pipeline;
}

/** The caller's role on one pipeline, as the server computes it (roles.Principal.role_for): the
 * global role raised by matching grants; null when a scoped token does not cover the pipeline. */
export function roleOn(me: Me | null, pipeline: string, tags: readonly string[] = []): RoleName | null {
  if (!me) return null;
  if (me.scope && !me.scope.some((t) => matches(t, pipeline, tags))) return null;
  const raised = (me.user?.grants ?? []).filter((g) => matches(g.target, pipeline, tags)).map((g) => g.role);
  return [me.role, ...raised].reduce((a, b) => (ORDER.indexOf(b) > ORDER.indexOf(a) ? b : a));
}

/** Whether a control that needs `role` on `pipeline` is shown (hidden otherwise; the server checks anyway). */
export function canOn(me: Me | null, role: RoleName, pipeline: string, tags: readonly string[] = []): boolean {
  const found = roleOn(me, pipeline, tags);
  return found !== null && ORDER.indexOf(found) >= ORDER.indexOf(role);
}

/** Whether `role` is reached on some pipeline (globally or by a grant): decides page-wide controls. */
export function canSomewhere(me: Me | null, role: RoleName): boolean {
  if (!me) return false;
  return [me.role, ...(me.user?.grants ?? []).map((g) => g.role)].some((r) => ORDER.indexOf(r) >= ORDER.indexOf(role));
}

/** Whether the caller's grants or scope name tags, so a pipeline's tags decide its role (else the
 * name does and no spec needs reading). */
export function needsTags(me: Me | null): boolean {
  return !!me && [...(me.user?.grants ?? []).map((g) => g.target), ...(me.scope ?? [])].some((t) => t.startsWith("tag:"));
}

/** The roles the caller may hand out (tokens, never above one's own). */
export function rolesUpTo(role: RoleName): RoleName[] {
  return ORDER.slice(0, ORDER.indexOf(role) + 1);
}

/** The tags of these pipelines (from their specs), read only when the caller's grants name tags. */
export function usePipelineTags(me: Me | null, names: readonly string[]): Record<string, string[]> {
  const wanted = needsTags(me) ? [...new Set(names)].sort() : [];
  const found = useData(async () => Object.fromEntries(await Promise.all(wanted.map(async (name) => {
    const { data } = await api.GET("/api/v1/pipelines/{name}/spec", { params: { path: { name } } });
    return [name, ((data ?? {}) as { tags?: string[] }).tags ?? []] as const;
  }))), [wanted.join("\n")]);
  return found.data ?? {};
}
