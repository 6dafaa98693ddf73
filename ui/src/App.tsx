import { useEffect, useState } from "react";
import { health } from "./health";
import { FlowTable } from "./views/FlowTable";
import { PolicyView } from "./views/PolicyView";
import { ServiceMap } from "./views/ServiceMap";
import { StatusBar } from "./views/StatusBar";

type Tab = "map" | "flows" | "policy";

function fromHash(): { tab: Tab; filter: string; params: URLSearchParams; raw: string } {
  const raw = window.location.hash;
  const [path, query] = raw.replace(/^#\/?/, "").split("?");
  const tab: Tab = path === "flows" || path === "policy" ? path : "map";
  const params = new URLSearchParams(query ?? "");
  return { tab, filter: params.get("filter") ?? "", params, raw };
}

export function App() {
  const [route, setRoute] = useState(fromHash);
  useEffect(() => {
    health.start();
    const on = () => setRoute(fromHash());
    window.addEventListener("hashchange", on);
    return () => window.removeEventListener("hashchange", on);
  }, []);
  const go = (tab: Tab, filter = "") => {
    window.location.hash = `#/${tab}${filter ? `?filter=${encodeURIComponent(filter)}` : ""}`;
  };
  return (
    <div className="app">
      <header className="top">
        <strong>Septum</strong>
        <nav>
          <a className={route.tab === "map" ? "on" : ""} href="#/map" data-testid="tab-map">Service map</a>
          <a className={route.tab === "flows" ? "on" : ""} href="#/flows" data-testid="tab-flows">Flows</a>
          <a className={route.tab === "policy" ? "on" : ""} href="#/policy" data-testid="tab-policy">Policy</a>
        </nav>
        <StatusBar health={health} />
      </header>
      <main>
        {route.tab === "map" && <ServiceMap health={health} onEdge={(f) => go("flows", f)} />}
        {route.tab === "flows" && <FlowTable key={route.filter} health={health} initialFilter={route.filter} />}
        {route.tab === "policy" && <PolicyView key={route.raw} params={route.params} />}
      </main>
    </div>
  );
}
