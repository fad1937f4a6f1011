import { useState, type FormEvent } from "react";
import { useLocation } from "wouter";
import { api, problemText } from "../api/client";
import { ErrorNote } from "../components/Common";
import { useData } from "../hooks";
import { useSession } from "../session";

const PROVIDER_PROBLEM = "kubeline_login_problem";

/** Why a provider login was just refused, in words: the server's callback sends the browser back
 * here with the reason in a short-lived cookie (api/routes/oidc.py), read once and removed. */
function takeProviderProblem(): string {
  const found = new RegExp(`(?:^|; )${PROVIDER_PROBLEM}=([^;]*)`).exec(document.cookie);
  if (!found) return "";
  document.cookie = `${PROVIDER_PROBLEM}=; Max-Age=0; Path=/`;
  try { return decodeURIComponent(found[1]); } catch { return ""; }
}

/** Password login, then the forced change of a one-time password. */
export function Login() {
  const { me, refresh } = useSession();
  const [username, setUsername] = useState("");
  const [password, setPassword] = useState("");
  const [fresh, setFresh] = useState("");
  const [error, setError] = useState(takeProviderProblem);
  const providers = useData(async () => (await api.GET("/api/v1/auth/providers")).data ?? [], []);

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
      {!!providers.data?.length && (
        <nav aria-label="Other ways to log in" className="providers">
          {providers.data.map((p) => <a key={p.name} className="button" href={p.login_url}>Log in with {p.label}</a>)}
        </nav>
      )}
    </main>
  );
}

/** The page an invitation link opens (/invite#TOKEN): choose a username and password, which
 * accepts the invitation once and logs you in. The token stays in the fragment, never sent in a URL. */
export function AcceptInvitation() {
  const { refresh } = useSession();
  const [, navigate] = useLocation();
  const [token] = useState(() => decodeURIComponent(window.location.hash.slice(1)));
  const [username, setUsername] = useState("");
  const [password, setPassword] = useState("");
  const [error, setError] = useState("");
  const accept = async (event: FormEvent) => {
    event.preventDefault();
    setError("");
    const { error: failed } = await api.POST("/api/v1/auth/invitations/accept", { body: { token, username, password } });
    if (failed) { setError(problemText(failed, "the invitation could not be accepted")); return; }
    navigate("/", { replace: true });
    await refresh();
  };
  return (
    <main id="main" className="login">
      <h1>Join Kubeline</h1>
      {!token ? <ErrorNote text="This invitation link has no token: open the whole link you were sent." /> : <>
        <p>You were invited. Choose how you will log in; the link works once.</p>
        <form onSubmit={accept} aria-label="Accept the invitation">
          <label>Username <input autoComplete="username" value={username} onChange={e => setUsername(e.target.value)} required /></label>
          <label>Password (12 characters or more) <input type="password" autoComplete="new-password" minLength={12}
                 value={password} onChange={e => setPassword(e.target.value)} required /></label>
          <button type="submit">Join</button>
        </form>
      </>}
      {error && <ErrorNote text={error} />}
    </main>
  );
}
