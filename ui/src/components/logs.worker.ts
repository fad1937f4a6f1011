import { SEP, type Batch } from "./logFormat";

// Follows a run's log stream off the main thread: fetch + SSE parsing + JSON.parse happen here,
// and the page gets one packed batch (logFormat.ts) at most every EVERY_MS, so a 200,000-line
// burst never blocks it and it renders ~5 times a second while lines pour in, not every frame.
// Each render rewrites every row drawn (the window moves by hundreds of lines), a task of a few
// ms of CPU; on a loaded machine any task can be descheduled past 50 ms, so fewer of them means
// fewer long tasks, and 200 ms still reads as live. A quiet log's last lines come after EVERY_MS.
// Resumes after a dropped connection from the last cursor (?after=, like Last-Event-ID).
type Out = { batch: Batch } | { end: string } | { error: string };

const EVERY_MS = 200;
const MAX_LINES = 20_000;  // a batch is sent sooner once it has this many lines (bounds its copy)

const post = (message: Out) => (self as unknown as Worker).postMessage(
  message, "batch" in message ? [message.batch.ends.buffer] : []);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function follow(url: string) {
  let after = "";
  for (let attempt = 0; attempt < 100; attempt++) {
    let response: Response;
    try {
      response = await fetch(after ? `${url}?after=${encodeURIComponent(after)}` : url, { headers: { Accept: "text/event-stream" } });
    } catch {
      await sleep(1000);
      continue;
    }
    if (!response.ok || !response.body) {
      post({ error: `the log stream answered ${response.status}` });
      return;
    }
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "", batch: string[] = [], ends: number[] = [], size = 0, sent = performance.now(), timer = 0;
    const flush = () => {
      clearTimeout(timer); timer = 0;
      if (batch.length) post({ batch: { text: batch.join(""), ends: Uint32Array.from(ends) } });
      batch = []; ends = []; size = 0; sent = performance.now();
    };
    for (;;) {
      let chunk: ReadableStreamReadResult<Uint8Array>;
      try { chunk = await reader.read(); } catch { break; }
      if (chunk.done) break;
      buffer += decoder.decode(chunk.value, { stream: true });
      const blocks = buffer.split("\n\n");
      buffer = blocks.pop() ?? "";
      for (const block of blocks) {
        let event = "message", data = "", id = "";
        for (const line of block.split("\n")) {
          if (line.startsWith("data: ")) data += line.slice(6);
          else if (line.startsWith("event: ")) event = line.slice(7);
          else if (line.startsWith("id: ")) id = line.slice(4);
        }
        if (event === "log") {
          const l = JSON.parse(data);
          const line = `${l.at}${SEP}${l.stream}${SEP}${l.stage_id}${SEP}${l.attempt}${SEP}${l.text}`;
          batch.push(line);
          ends.push(size += line.length);
          after = id || after;
        } else if (event === "end") {
          flush();
          post({ end: JSON.parse(data).state });
          return;
        }
      }
      const waited = performance.now() - sent;
      if (batch.length >= MAX_LINES || waited >= EVERY_MS) flush();
      else if (batch.length && !timer) timer = self.setTimeout(flush, EVERY_MS - waited);  // a quiet log's last lines
    }
    flush();
    await sleep(1000);
  }
}

self.onmessage = (e: MessageEvent<{ url: string }>) => { void follow(e.data.url); };
