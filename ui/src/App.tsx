import { useEffect, useState } from "react";
import { health } from "./health";
import { FlowTable } from "./views/FlowTable";
import { ServiceMap } from "./views/ServiceMap";
import { StatusBar } from "./views/StatusBar";

type Tab = "map" | "flows";

function fromHash(): { tab: Tab; filter: string } {
  const [path, query] = window.location.hash.replace(/^#\/?/, "").split("?");
  const tab: Tab = path === "flows" ? "flows" : "map";
  return { tab, filter: new URLSearchParams(query ?? "").get("filter") ?? "" };
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
        </nav>
        <StatusBar health={health} />
      </header>
      <main>
        {route.tab === "map" && <ServiceMap health={health} onEdge={(f) => go("flows", f)} />}
        {route.tab === "flows" && <FlowTable key={route.filter} health={health} initialFilter={route.filter} />}
      </main>
    </div>
  );
}
