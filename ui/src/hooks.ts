import { useCallback, useEffect, useRef, useState } from "react";

/** Load data with `load`, again every `everyMs` (never faster than every few seconds), and on
 * `reload()`. `initial`: data the first render already has (api/client.ts `earlyData`), so the
 * first load is skipped. */
export function useData<T>(load: () => Promise<T>, deps: unknown[], everyMs = 0, initial?: T) {
  const [data, setData] = useState<T | undefined>(initial);
  const [error, setError] = useState<string>("");
  const [tick, setTick] = useState(0);
  const reload = useCallback(() => setTick((t) => t + 1), []);
  const given = useRef(initial !== undefined);
  useEffect(() => {
    if (given.current) { given.current = false; return; }
    let alive = true;
    load().then(
      (value) => { if (alive) { setData(value); setError(""); } },
      (e: unknown) => { if (alive) setError(e instanceof Error ? e.message : String(e)); },
    );
    return () => { alive = false; };
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [...deps, tick]);
  useEffect(() => {
    if (!everyMs) return;
    const id = window.setInterval(reload, Math.max(everyMs, 3000));
    return () => window.clearInterval(id);
  }, [everyMs, reload]);
  return { data, error, reload };
}

/** Follow a server-sent event stream; handlers get the parsed JSON data of each named event. */
export function useEvents(url: string | null, handlers: Record<string, (data: any, id: string) => void>) {
  const ref = useRef(handlers);
  ref.current = handlers;
  useEffect(() => {
    if (!url) return;
    const source = new EventSource(url);
    const names = Object.keys(ref.current);
    const listeners = names.map((name) => {
      const listener = (e: MessageEvent) => {
        if (name === "end") source.close();
        ref.current[name]?.(JSON.parse(e.data), e.lastEventId);
      };
      source.addEventListener(name, listener as EventListener);
      return [name, listener] as const;
    });
    return () => {
      for (const [name, listener] of listeners) source.removeEventListener(name, listener as EventListener);
      source.close();
    };
  }, [url]);
}

export function fmtDuration(seconds: number | null | undefined): string {
  if (seconds == null) return "–";
  if (seconds < 1) return `${Math.round(seconds * 1000)} ms`;
  if (seconds < 60) return `${seconds.toFixed(1)} s`;
  const m = Math.floor(seconds / 60);
  if (m < 60) return `${m} m ${Math.round(seconds % 60)} s`;
  return `${Math.floor(m / 60)} h ${m % 60} m`;
}

const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
const two = (n: number) => String(n).padStart(2, "0");

/** A time in the browser's time zone as English text, "Dec 7, 05:43:12 AM" (what en-US
 * toLocaleString gives with these fields; the UI is in English). Written out rather than asked
 * of Intl: a page's first Intl call loads the browser's locale data, ~20 ms of main-thread CPU
 * before a run page's first paint (a trace of its first render: ~47-53 ms of script with it,
 * ~25-33 ms without). */
export function fmtTime(value: string | null | undefined): string {
  if (!value) return "–";
  const d = new Date(value);
  if (Number.isNaN(d.getTime())) return value;
  const hour = d.getHours() % 12 || 12;
  return `${MONTHS[d.getMonth()]} ${d.getDate()}, ${two(hour)}:${two(d.getMinutes())}:${two(d.getSeconds())} ${d.getHours() < 12 ? "AM" : "PM"}`;
}
