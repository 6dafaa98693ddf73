// ELK in a web worker: the map's layout runs beside the flow stream's decoding and React's
// rendering instead of blocking them. The worker (ELK is 1.4 MB of script) starts when a map
// first needs a layout.
import ELK from "elkjs/lib/elk-api.js";
import ElkWorker from "elkjs/lib/elk-worker.min.js?worker";
import { MapLayout, type Layouter } from "./layout";

let elk: Layouter | undefined;

function worker(): Layouter {
  elk ??= new ELK({ workerFactory: () => new ElkWorker() as unknown as Worker });
  return elk;
}

/** A fresh layout (one per map view: its cache follows that view's graph). */
export function mapLayout(): MapLayout {
  return new MapLayout(worker);
}
