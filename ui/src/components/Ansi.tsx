// ANSI SGR colours (the 8/16 colours, bold, reset) to spans; other escape sequences are dropped.
const ESC = /\x1b\[([0-9;]*)m/g;
const STRIP = /\x1b\[[0-9;?]*[A-Za-z]/g;

export function ansiSpans(text: string): { text: string; cls: string }[] {
  if (!text.includes("\x1b")) return [{ text, cls: "" }];
  const out: { text: string; cls: string }[] = [];
  let fg = "", bold = false, last = 0;
  const push = (chunk: string) => {
    chunk = chunk.replace(STRIP, "");
    if (chunk) out.push({ text: chunk, cls: [fg, bold ? "a-bold" : ""].filter(Boolean).join(" ") });
  };
  for (const match of text.matchAll(ESC)) {
    push(text.slice(last, match.index));
    last = (match.index ?? 0) + match[0].length;
    for (const code of (match[1] || "0").split(";").map(Number)) {
      if (code === 0) { fg = ""; bold = false; }
      else if (code === 1) bold = true;
      else if (code === 22) bold = false;
      else if (code === 39) fg = "";
      else if ((code >= 30 && code <= 37) || (code >= 90 && code <= 97)) fg = `a-fg${code}`;
    }
  }
  push(text.slice(last));
  return out;
}

export function AnsiText({ text, highlight }: { text: string; highlight?: string }) {
  return (
    <>
      {ansiSpans(text).map((span, i) => (
        <span key={i} className={span.cls || undefined}>{highlight ? mark(span.text, highlight) : span.text}</span>
      ))}
    </>
  );
}

function mark(text: string, needle: string) {
  const lower = text.toLowerCase(), n = needle.toLowerCase();
  const parts = [];
  let from = 0, at = lower.indexOf(n);
  while (at >= 0 && n) {
    parts.push(text.slice(from, at), <mark key={at}>{text.slice(at, at + n.length)}</mark>);
    from = at + n.length;
    at = lower.indexOf(n, from);
  }
  parts.push(text.slice(from));
  return parts;
}
