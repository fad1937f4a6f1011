// Who is logged in: /api/v1/auth/me once at start. Browser sessions are an HttpOnly cookie the
// server set at login; every change carries the session's CSRF token (X-CSRF-Token), which the
// page keeps in memory only. Without a session the app shows the login page.
import { createContext, useContext, useEffect, useState, type ReactNode } from "react";
import { api, type Schemas } from "./api/client";

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

export function SessionProvider({ children }: { children: ReactNode }) {
  const [me, setMe] = useState<Me | null>(null);
  const [loading, setLoading] = useState(true);
  const refresh = async () => {
    const { data } = await api.GET("/api/v1/auth/me");
    csrf = data?.csrf_token ?? null;
    setMe(data ?? null);
    setLoading(false);
  };
  const logout = async () => {
    await api.POST("/api/v1/auth/logout");
    csrf = null;
    setMe(null);
  };
  useEffect(() => { void refresh(); }, []);
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
