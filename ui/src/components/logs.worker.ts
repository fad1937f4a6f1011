import { SEP } from "./logFormat";

// Follows a run's log stream off the main thread: fetch + SSE parsing + JSON.parse happen here,
// and the page gets compact batches (at most every 50 ms), so a 200,000-line burst never blocks
// it. Resumes after a dropped connection from the last cursor (?after=, like Last-Event-ID).
// One string per line, "at SEP stream SEP stage SEP attempt SEP text": 200,000 lines are then
// 200,000 objects on the page, not a million (an array and its strings per line), which keeps the
// garbage collector's pauses short while the log streams (see logLine in LogView).
type Out = { lines: string[] } | { end: string } | { error: string };

const post = (message: Out) => (self as unknown as Worker).postMessage(message);
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
    let buffer = "", batch: string[] = [], sent = performance.now();
    const flush = () => { if (batch.length) { post({ lines: batch }); batch = []; } sent = performance.now(); };
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
          batch.push(`${l.at}${SEP}${l.stream}${SEP}${l.stage_id}${SEP}${l.attempt}${SEP}${l.text}`);
          after = id || after;
        } else if (event === "end") {
          flush();
          post({ end: JSON.parse(data).state });
          return;
        }
      }
      if (batch.length >= 4000 || performance.now() - sent > 50) flush();
    }
    flush();
    await sleep(1000);
  }
}

self.onmessage = (e: MessageEvent<{ url: string }>) => { void follow(e.data.url); };
