// The relay's Observer API from the browser: gRPC-Web through `septum ui`'s bridge, on the
// page's own origin (nothing else is contacted).
import { createClient, type Client } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import { Observer } from "./gen/septum/dataplane/observe/api/observer/observer_pb";
import { PolicyService } from "./gen/septum/ui/api/v1/policy_pb";

const transport = createGrpcWebTransport({ baseUrl: window.location.origin, useBinaryFormat: true });

export const observer: Client<typeof Observer> = createClient(Observer, transport);

// Septum's own service (septum.ui.v1), served by `septum ui` itself.
export const policies: Client<typeof PolicyService> = createClient(PolicyService, transport);
