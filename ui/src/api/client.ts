// The typed API client: generated types (schema.d.ts, from /api/v1/openapi.json) + openapi-fetch.
import createClient from "openapi-fetch";
import type { components, paths } from "./schema";

export type Schemas = components["schemas"];
export type Run = Schemas["RunOut"];
export type Pipeline = Schemas["PipelineOut"];
export type Stage = Schemas["StageOut"];
export type Attempt = Schemas["AttemptOut"];
export type Schedule = Schemas["ScheduleOut"];
export type Stats = Schemas["StatsOut"];
export type Problem = Schemas["ProblemOut"];

export const api = createClient<paths>({ baseUrl: "" });

// The opened page's first data, sent inside index.html to a browser that logged in (the
// server's kubeline/ui/first.py): 200 answers by URL, as openapi-fetch writes it. Each is used
// once, by the page's first render (`earlyData`) or else by the first GET of exactly that URL,
// and only while fresh; anything not there is asked for as usual.
const EARLY_FRESH_MS = 5000;
const inlined: Record<string, unknown> = (() => {
  const element = document.getElementById("kubeline-first");
  if (!element) return {};
  element.remove();
  try {
    return JSON.parse(element.textContent ?? "") as Record<string, unknown>;
  } catch {
    return {};
  }
})();

function take(url: string): unknown {
  if (!(url in inlined)) return undefined;
  const data = inlined[url];
  delete inlined[url];
  return performance.now() > EARLY_FRESH_MS ? undefined : data;
}

/** The page's inlined answer for `url` (once, while fresh), for its first render. */
export function earlyData<T>(url: string): T | undefined {
  return take(url) as T | undefined;
}

api.use({
  onRequest({ request }) {
    if (request.method !== "GET") return undefined;
    const url = new URL(request.url);
    const data = take(url.pathname + url.search);
    return data === undefined ? undefined
      : new Response(JSON.stringify(data), { status: 200, headers: { "Content-Type": "application/json" } });
  },
});

/** The problem's detail, for showing an error in words. */
export function problemText(error: unknown, fallback = "request failed"): string {
  if (error && typeof error === "object" && "detail" in error) {
    const p = error as Problem;
    return p.detail || p.title || fallback;
  }
  return fallback;
}

export const FINAL = new Set(["succeeded", "failed", "cancelled", "timed_out"]);
