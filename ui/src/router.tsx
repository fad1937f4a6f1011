// The app's routing is wouter's (https://github.com/molefrog/wouter, ~2 kB gzip): history-backed
// <Switch>/<Route> with :params, <Link>, useParams, useLocation and useSearchParams. It replaced
// react-router, which was 37 kB of the 83 kB main script, all parsed and most of it run before
// the first paint. This module adds the two things the app needs beyond what wouter ships.
import { createElement, type ComponentProps } from "react";
import { Link, matchRoute, useLocation } from "wouter";
import { parse } from "regexparam";  // wouter's own pattern parser

/** Whether the route pattern `pattern` ("/runs/:id") matches `pathname`; usable outside React (lazyPage). */
export function matchPath(pattern: string, pathname: string): boolean {
  return matchRoute(parse, pattern, pathname)[0];
}

/** A <Link> marked "active" (class and aria-current="page") on its page and, unless `end`, below it. */
export function NavLink({ to, end = false, ...rest }: ComponentProps<typeof Link> & { to: string; end?: boolean }) {
  const [location] = useLocation();
  const path = location.length > 1 ? location.replace(/\/+$/, "") : location;
  const active = path === to || (!end && path.startsWith(to.endsWith("/") ? to : `${to}/`));
  return createElement(Link, {
    ...rest, to, className: active ? "active" : undefined, "aria-current": active ? "page" : undefined,
  } as ComponentProps<typeof Link>);
}
