import type { ReactNode } from "react";

export function StateBadge({ state }: { state: string }) {
  return <span className={`badge state-${state}`}>{state.replace("_", " ")}</span>;
}

export function ErrorNote({ text }: { text: string }) {
  return text ? <p role="alert" className="error-note">{text}</p> : null;
}

export function Card({ title, children, actions }: { title: string; children: ReactNode; actions?: ReactNode }) {
  return (
    <section className="card" aria-label={title}>
      <header className="card-head"><h2>{title}</h2>{actions}</header>
      {children}
    </section>
  );
}

export function Loading() {
  return <p className="muted" aria-live="polite">Loading…</p>;
}
