import { StrictMode, Suspense } from "react";
import { createRoot } from "react-dom/client";
import { Route, Switch } from "wouter";
import { Layout } from "./components/Layout";
import { firstPage, lazy } from "./lazyPage";
import { Loading } from "./components/Common";
import { Dashboard } from "./pages/Dashboard";
import { AcceptInvitation, Login } from "./pages/Login";
import { inlinedSession, loadSession, SessionProvider, useSession } from "./session";
import "./styles.css";

const Runs = lazy(() => import("./pages/Runs"), "/runs");
const RunDetail = lazy(() => import("./pages/RunDetail"), "/runs/:id");
const Pipelines = lazy(() => import("./pages/Pipelines"), "/pipelines");
const PipelineDetail = lazy(() => import("./pages/PipelineDetail"), "/pipelines/:name");
const Secrets = lazy(() => import("./pages/Secrets"), "/secrets");
const System = lazy(() => import("./pages/System"), "/system");
const Users = lazy(() => import("./pages/Users"), "/users");
const Tokens = lazy(() => import("./pages/Tokens"), "/tokens");
const Audit = lazy(() => import("./pages/Audit"), "/audit");
const Sources = lazy(() => import("./pages/Sources"), "/sources");
const Notifications = lazy(() => import("./pages/Notifications"), "/notifications");
const Cleanup = lazy(() => import("./pages/Cleanup"), "/cleanup");

function NotFound() {
  return <><h1>Not found</h1><p>No page here. Use the navigation above.</p></>;
}

function App() {
  const { me, loading } = useSession();
  if (loading) return <Loading />;
  if (!me && window.location.pathname === "/invite") return <AcceptInvitation />;
  if (!me || me.must_change_password) return <Login />;
  return (
      <Layout>
        <Suspense fallback={<Loading />}>
          <Switch>
            <Route path="/"><Dashboard /></Route>
            <Route path="/runs"><Runs /></Route>
            <Route path="/runs/:id"><RunDetail /></Route>
            <Route path="/pipelines"><Pipelines /></Route>
            <Route path="/pipelines/:name"><PipelineDetail /></Route>
            <Route path="/secrets"><Secrets /></Route>
            <Route path="/system"><System /></Route>
            <Route path="/users"><Users /></Route>
            <Route path="/tokens"><Tokens /></Route>
            <Route path="/audit"><Audit /></Route>
            <Route path="/sources"><Sources /></Route>
            <Route path="/notifications"><Notifications /></Route>
            <Route path="/cleanup"><Cleanup /></Route>
            <Route path="/invite"><p>You are logged in as {me.name}: log out to accept an invitation as someone else.</p></Route>
            <Route><NotFound /></Route>
          </Switch>
        </Suspense>
      </Layout>
  );
}

// Rendered once the opened page's code and who is logged in are here (lazyPage.ts explains the
// former; the latter, like the page's first data, is inside index.html for a browser that logged
// in: api/client.ts): the first render is the page, with its data.
void Promise.all([inlinedSession() ?? loadSession().catch(() => undefined), firstPage()]).then(([me]) => createRoot(document.getElementById("root")!).render(
  <StrictMode>
    <SessionProvider initial={me}>
      <App />
    </SessionProvider>
  </StrictMode>,
));
