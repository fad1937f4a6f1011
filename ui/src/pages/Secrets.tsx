import { useState } from "react";
import { api, problemText } from "../api/client";
import { Card, ErrorNote } from "../components/Common";
import { useData } from "../hooks";
import { useSession } from "../session";

export default function Secrets() {
  const { me } = useSession();
  const admin = me?.role === "admin";
  const list = useData(async () => (await api.GET("/api/v1/secrets")).data?.names ?? [], []);
  const [name, setName] = useState("");
  const [value, setValue] = useState("");
  const [note, setNote] = useState("");
  const [error, setError] = useState("");
  const save = async (e: React.FormEvent) => {
    e.preventDefault(); setError(""); setNote("");
    const { error } = await api.PUT("/api/v1/secrets/{name}", { params: { path: { name } }, body: { value } });
    if (error) { setError(problemText(error)); return; }
    setNote(`Secret ${name} saved. Its value is stored encrypted and will not be shown again.`);
    setName(""); setValue(""); list.reload();
  };
  const remove = async (secret: string) => {
    if (!window.confirm(`Delete secret ${secret}?`)) return;
    const { error } = await api.DELETE("/api/v1/secrets/{name}", { params: { path: { name: secret } } });
    if (error) setError(problemText(error)); else list.reload();
  };
  return (
    <>
      <h1>Secrets</h1>
      <p className="muted">Values are write-only: they are encrypted on the server and never sent back, here or in the API.</p>
      <div className="grid2">
        {admin && <Card title="Add or replace a secret">
          <form onSubmit={save} className="form">
            <label>Name <input value={name} onChange={(e) => setName(e.target.value)} required pattern="[A-Za-z_][A-Za-z0-9_]*"
                               placeholder="DB_PASSWORD" autoComplete="off" /></label>
            <label>Value <input type="password" value={value} onChange={(e) => setValue(e.target.value)} required autoComplete="new-password" /></label>
            <button type="submit">Save secret</button>
          </form>
          <p role="status" className="muted">{note}</p>
          <ErrorNote text={error} />
        </Card>}
        <Card title="Stored secrets">
          <ul className="plain" aria-label="Secret names">
            {(list.data ?? []).map((s) => (
              <li key={s}><span className="mono">{s}</span> <span className="muted">••••••</span>{" "}
                {admin && <button type="button" className="link danger" onClick={() => remove(s)} aria-label={`Delete secret ${s}`}>Delete</button>}</li>
            ))}
            {list.data && !list.data.length && <li className="muted">No secrets yet.</li>}
          </ul>
        </Card>
      </div>
    </>
  );
}
