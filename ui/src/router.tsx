// The app's router: the browser's history, routes with :params, links and search params.
//
// These few parts of react-router were 37 kB of the 83 kB main script (its data routers,
// loaders, fetchers and ranking came along with BrowserRouter), so most of what the browser
// parsed and ran before the first paint; its history also rewrote the entry at start
// (replaceState). Same names and behaviour for what the pages use: <Routes> renders the first
// <Route> whose path matches ("*" matches any), a path is "/a/:b" (a trailing slash ignored,
// params decoded), <Link> and <NavLink> are plain anchors whose ordinary left clicks navigate in
// place, and setting search params adds a history entry.
import {
  createContext, createElement, useContext, useEffect, useMemo, useState,
  type AnchorHTMLAttributes, type MouseEvent, type ReactElement, type ReactNode,
} from "react";

type Place = { pathname: string; search: string };
type Params = Record<string, string>;
type Navigate = (to: string, options?: { replace?: boolean }) => void;

const changed = new Set<() => void>();
window.addEventListener("popstate", () => changed.forEach((listener) => listener()));

const here = (): Place => ({ pathname: window.location.pathname, search: window.location.search });

/** Go to `to` (a path with its search, from the site's root), adding a history entry unless `replace`. */
export const navigate: Navigate = (to, { replace = false } = {}) => {
  if (replace) window.history.replaceState(null, "", to);
  else window.history.pushState(null, "", to);
  changed.forEach((listener) => listener());
};

const PlaceContext = createContext<Place>(here());
const ParamsContext = createContext<Params>({});

export function BrowserRouter({ children }: { children: ReactNode }) {
  const [place, setPlace] = useState(here);
  useEffect(() => {
    const listener = () => setPlace(here());
    changed.add(listener);
    return () => { changed.delete(listener); };
  }, []);
  return createElement(PlaceContext.Provider, { value: place }, children);
}

/** The params of `pattern` ("/runs/:id", "*") in `pathname`, or null when it does not match. */
export function matchPath(pattern: string, pathname: string): { params: Params } | null {
  if (pattern === "*") return { params: {} };
  const want = pattern.split("/").filter(Boolean), have = pathname.split("/").filter(Boolean);
  if (want.length !== have.length) return null;
  const params: Params = {};
  for (let i = 0; i < want.length; i++) {
    if (want[i].startsWith(":")) {
      try { params[want[i].slice(1)] = decodeURIComponent(have[i]); } catch { return null; }
    } else if (want[i] !== have[i]) return null;
  }
  return { params };
}

type RouteProps = { path: string; element: ReactNode };

/** One route of <Routes>: it renders nothing itself. */
export function Route(_: RouteProps): null {
  return null;
}

export function Routes({ children }: { children: ReactElement<RouteProps> | ReactElement<RouteProps>[] }) {
  const { pathname } = useContext(PlaceContext);
  for (const route of ([] as ReactElement<RouteProps>[]).concat(children)) {
    const found = route && matchPath(route.props.path, pathname);
    if (found) return createElement(ParamsContext.Provider, { value: found.params }, route.props.element);
  }
  return null;
}

export function useParams(): Params {
  return useContext(ParamsContext);
}

export function useNavigate(): Navigate {
  return navigate;
}

/** The page's search params, and a setter that navigates to them (a new history entry unless `replace`). */
export function useSearchParams(): [URLSearchParams, (next: URLSearchParams, options?: { replace?: boolean }) => void] {
  const { pathname, search } = useContext(PlaceContext);
  const params = useMemo(() => new URLSearchParams(search), [search]);
  const set = (next: URLSearchParams, options?: { replace?: boolean }) => {
    const query = next.toString();
    navigate(query ? `${pathname}?${query}` : pathname, options);
  };
  return [params, set];
}

type LinkProps = Omit<AnchorHTMLAttributes<HTMLAnchorElement>, "href"> & { to: string };

function follow(event: MouseEvent<HTMLAnchorElement>, to: string, target?: string) {
  if (event.defaultPrevented || event.button !== 0 || event.metaKey || event.altKey || event.ctrlKey
      || event.shiftKey || (target && target !== "_self")) return;  // the browser's own: new tab, download...
  event.preventDefault();
  navigate(to);
}

export function Link({ to, onClick, ...rest }: LinkProps) {
  return createElement("a", { ...rest, href: to, onClick: (event: MouseEvent<HTMLAnchorElement>) => {
    onClick?.(event);
    follow(event, to, rest.target);
  } });
}

/** A <Link> marked "active" (class and aria-current="page") on its page and, unless `end`, below it. */
export function NavLink({ to, end = false, className, ...rest }: LinkProps & { end?: boolean }) {
  const { pathname } = useContext(PlaceContext);
  const path = pathname.length > 1 ? pathname.replace(/\/+$/, "") : pathname;
  const active = path === to || (!end && path.startsWith(to.endsWith("/") ? to : `${to}/`));
  return createElement(Link, {
    ...rest, to, className: [className, active ? "active" : ""].filter(Boolean).join(" ") || undefined,
    "aria-current": active ? "page" : undefined,
  });
}
