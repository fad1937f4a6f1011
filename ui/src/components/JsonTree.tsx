// Outputs as a collapsible tree: objects and arrays are <details>, so keyboard and screen readers work.
function Leaf({ value }: { value: unknown }) {
  if (value === null) return <span className="j-null">null</span>;
  if (typeof value === "string") return <span className="j-str">"{value}"</span>;
  if (typeof value === "number") return <span className="j-num">{value}</span>;
  if (typeof value === "boolean") return <span className="j-bool">{String(value)}</span>;
  return <span>{String(value)}</span>;
}

export function JsonTree({ value, name, open = true }: { value: unknown; name?: string; open?: boolean }) {
  if (value === null || typeof value !== "object") {
    return <div className="j-row">{name !== undefined && <span className="j-key">{name}: </span>}<Leaf value={value} /></div>;
  }
  const entries = Array.isArray(value) ? value.map((v, i) => [String(i), v] as const) : Object.entries(value);
  const label = Array.isArray(value) ? `[${entries.length}]` : `{${entries.length}}`;
  return (
    <details className="j-node" open={open}>
      <summary>{name !== undefined && <span className="j-key">{name}: </span>}<span className="muted">{label}</span></summary>
      <div className="j-children">
        {entries.map(([k, v]) => <JsonTree key={k} name={k} value={v} open={entries.length < 20} />)}
      </div>
    </details>
  );
}
