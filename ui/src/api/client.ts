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

// Answers index.html asked for before the bundle ran, by path and query: the first GET of the
// same URL takes one (once) if it is fresh and succeeded; anything else (a 401 before login, an
// error, an answer older than a few seconds) goes to the server again.
const EARLY_FRESH_MS = 5000;
const early: Record<string, Promise<Response> | undefined> =
  (window as unknown as { __prefetch?: Record<string, Promise<Response>> }).__prefetch ?? {};
const read: Record<string, unknown> = {};

/** Waits (at most `ms`) for index.html's early answers and reads those that succeeded, so the
 * opened page renders with its data the first time (`earlyData`) instead of placeholders, a
 * paint, an effect that asks, and a second render. Answers still on their way stay for api.GET. */
export async function settleEarly(ms: number): Promise<void> {
  const reads = Object.entries(early).map(async ([url, answer]) => {
    try {
      const response = await answer;
      if (response?.ok && early[url] === answer) read[url] = await response.clone().json();
    } catch { /* taken by api.GET meanwhile, or not JSON: the page asks as usual */ }
  });
  await Promise.race([Promise.all(reads), new Promise((done) => setTimeout(done, ms))]);
}

/** The early answer of `url` read by `settleEarly` (once, while fresh), for a page's first render. */
export function earlyData<T>(url: string): T | undefined {
  if (!(url in read)) return undefined;
  const data = read[url] as T;
  delete read[url];
  delete early[url];
  return performance.now() > EARLY_FRESH_MS ? undefined : data;
}
api.use({
  async onRequest({ request }) {
    if (request.method !== "GET") return undefined;
    const url = new URL(request.url);
    const found = early[url.pathname + url.search];
    if (!found) return undefined;
    delete early[url.pathname + url.search];
    if (performance.now() > EARLY_FRESH_MS) return undefined;
    const response = await found.catch(() => undefined);
    return response?.ok ? response : undefined;
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
