import { useEffect, useState, type ReactNode } from "react";
import { NavLink } from "../router";
import { useSession } from "../session";

// Who sees which link: the server refuses the pages' calls to anyone else anyway.
const LINKS = [
  ["/", "Dashboard", "any"], ["/pipelines", "Pipelines", "any"], ["/runs", "Runs", "any"], ["/secrets", "Secrets", "any"],
  ["/sources", "Sources", "any"], ["/notifications", "Notifications", "any"], ["/system", "System", "any"], ["/tokens", "Tokens", "any"], ["/users", "Users", "admin"], ["/audit", "Audit", "admin"],
  ["/cleanup", "Cleanup", "admin"],
] as const;

export function Layout({ children }: { children: ReactNode }) {
  const { me, logout } = useSession();
  const [theme, setTheme] = useState(document.documentElement.dataset.theme || "light");
  useEffect(() => {
    document.documentElement.dataset.theme = theme;
    localStorage.setItem("kubeline-theme", theme);
  }, [theme]);
  return (
    <>
      <a className="skip" href="#main">Skip to content</a>
      <header className="topbar">
        <span className="brand" aria-label="Kubeline">◆ Kubeline</span>
        <nav aria-label="Main">
          {LINKS.filter(([, , who]) => who === "any" || me?.role === "admin").map(([to, label]) => <NavLink key={to} to={to} end={to === "/"}>{label}</NavLink>)}
        </nav>
        <button type="button" className="theme" onClick={() => setTheme(theme === "dark" ? "light" : "dark")}
                aria-label={`Switch to ${theme === "dark" ? "light" : "dark"} theme`}>{theme === "dark" ? "☀" : "☾"}</button>
        {me && <span className="who">{me.name} ({me.role})</span>}
        {me?.user && <button type="button" onClick={() => void logout()}>Log out</button>}
      </header>
      <main id="main" tabIndex={-1}>{children}</main>
    </>
  );
}
