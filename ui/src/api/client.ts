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

/** The problem's detail, for showing an error in words. */
export function problemText(error: unknown, fallback = "request failed"): string {
  if (error && typeof error === "object" && "detail" in error) {
    const p = error as Problem;
    return p.detail || p.title || fallback;
  }
  return fallback;
}

export const FINAL = new Set(["succeeded", "failed", "cancelled", "timed_out"]);
