// The spec as YAML with light highlighting (keys, strings, numbers, booleans, comments).
import { stringify } from "yaml";

const TOKEN = /^(\s*-?\s*)([\w.$-]+)(:)(.*)$/;

function value(text: string) {
  const t = text.trim();
  if (!t) return text;
  const cls = /^(true|false|null)$/.test(t) ? "y-bool" : /^-?\d+(\.\d+)?$/.test(t) ? "y-num" : "y-str";
  return <span className={cls}>{text}</span>;
}

export function Yaml({ data, label }: { data: unknown; label: string }) {
  const text = stringify(data, { lineWidth: 0 });
  return (
    <pre className="yaml" tabIndex={0} aria-label={label}>
      {text.split("\n").map((line, i) => {
        const m = TOKEN.exec(line);
        return <div key={i}>{m ? <>{m[1]}<span className="y-key">{m[2]}</span>{m[3]}{value(m[4])}</> : value(line)}</div>;
      })}
    </pre>
  );
}
