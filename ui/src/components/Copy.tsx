import { useState } from "react";

/** Copies `text` to the clipboard; says so in a live region (clipboard access needs a secure
 * context: on plain http to a non-loopback host the browser refuses and the note says to select it). */
export function CopyButton({ text, label }: { text: string; label: string }) {
  const [note, setNote] = useState("");
  const copy = async () => {
    try {
      if (!navigator.clipboard) throw new Error("no clipboard");
      await navigator.clipboard.writeText(text);
      setNote("copied");
    } catch {
      setNote("copy refused by the browser: select the text and copy it");
    }
  };
  return <><button type="button" onClick={() => void copy()}>{label}</button><span role="status" className="muted small">{note}</span></>;
}
