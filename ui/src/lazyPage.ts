// Code-split pages (React.lazy) that do not cost the first page a wait.
//
// With plain React.lazy the page the browser opened asks for its chunk only once it first
// renders (after /auth/me answered), suspends, shows the Suspense fallback, and React 19 then
// holds the page back for up to 300 ms after that fallback (its throttle on revealing content):
// measured as ~250 ms of idle time on the run page. Here the opened page's chunk starts loading
// while the app's own script runs, `firstPage()` lets main.tsx render once it is here, and a
// page whose chunk is here renders without suspending.
import { createElement, lazy as reactLazy, type ComponentType } from "react";
import { matchPath } from "./router";

type Module = { default: ComponentType };
const opening: Promise<unknown>[] = [];

/** A page loaded on demand; `path` (the route's pattern) starts loading it at once when the app opens there. */
export function lazy(load: () => Promise<Module>, path?: string): ComponentType {
  let loaded: ComponentType | undefined;
  let pending: Promise<Module> | undefined;
  const start = () => (pending ??= load().then((module) => { loaded = module.default; return module; }));
  if (path && matchPath(path, window.location.pathname)) opening.push(start());
  const Lazy = reactLazy(start);
  return function Page() {
    return createElement(loaded ?? Lazy);
  };
}

/** Settles when the chunk of the page the app opened on has loaded (or failed: then React.lazy reports it). */
export function firstPage(): Promise<unknown> {
  return Promise.allSettled(opening);
}
