import { useState, type FormEvent } from "react";
import { api, problemText } from "../api/client";
import { ErrorNote } from "../components/Common";
import { useSession } from "../session";

/** Password login, then the forced change of a one-time password. */
export function Login() {
  const { me, refresh } = useSession();
  const [username, setUsername] = useState("");
  const [password, setPassword] = useState("");
  const [fresh, setFresh] = useState("");
  const [error, setError] = useState("");

  const login = async (event: FormEvent) => {
    event.preventDefault();
    setError("");
    const { error: failed } = await api.POST("/api/v1/auth/login", { body: { username, password } });
    if (failed) { setError(problemText(failed, "login failed")); return; }
    await refresh();
  };
  const change = async (event: FormEvent) => {
    event.preventDefault();
    setError("");
    const { error: failed } = await api.POST("/api/v1/auth/password", { body: { current: password, new: fresh } });
    if (failed) { setError(problemText(failed, "could not change the password")); return; }
    await refresh();
  };

  if (me?.must_change_password) {
    return (
      <main id="main" className="login">
        <h1>Choose a new password</h1>
        <p>The one-time password must be changed before you go on.</p>
        <form onSubmit={change}>
          <label>Current password <input type="password" autoComplete="current-password" value={password}
                                         onChange={e => setPassword(e.target.value)} required /></label>
          <label>New password (12 characters or more) <input type="password" autoComplete="new-password"
                 minLength={12} value={fresh} onChange={e => setFresh(e.target.value)} required /></label>
          <button type="submit">Change password</button>
        </form>
        {error && <ErrorNote text={error} />}
      </main>
    );
  }
  return (
    <main id="main" className="login">
      <h1>Log in to Kubeline</h1>
      <form onSubmit={login}>
        <label>Username <input autoComplete="username" value={username}
                               onChange={e => setUsername(e.target.value)} required /></label>
        <label>Password <input type="password" autoComplete="current-password" value={password}
                               onChange={e => setPassword(e.target.value)} required /></label>
        <button type="submit">Log in</button>
      </form>
      {error && <ErrorNote text={error} />}
    </main>
  );
}
