// The flows the table holds: a bounded buffer (oldest dropped first) of rows, so following
// 1,000 flows a second for an hour keeps memory flat.
import type { GetFlowsResponse } from "../gen/septum/dataplane/observe/api/observer/observer_pb";
import { toRow, type FlowRow } from "./flows";

export const DEFAULT_CAPACITY = 10_000;

export class FlowBuffer {
  private rows: FlowRow[] = [];
  private responses: GetFlowsResponse[] = [];
  private nextKey = 0;
  constructor(readonly capacity: number = DEFAULT_CAPACITY) {}

  /** Add a batch of responses with flows; returns how many were evicted. */
  push(batch: GetFlowsResponse[]): number {
    for (const resp of batch) {
      if (resp.responseTypes.case !== "flow") continue;
      this.rows.push(toRow(this.nextKey++, resp.responseTypes.value));
      this.responses.push(resp);
    }
    const over = this.rows.length - this.capacity;
    if (over > 0) {
      this.rows.splice(0, over);
      this.responses.splice(0, over);
      return over;
    }
    return 0;
  }

  get length(): number {
    return this.rows.length;
  }

  /** Newest first, as Hubble UI lists them. */
  rowNewestFirst(i: number): FlowRow {
    return this.rows[this.rows.length - 1 - i];
  }

  /** Every held response, oldest first (the export's order, as `hubble observe`). */
  allResponses(): readonly GetFlowsResponse[] {
    return this.responses;
  }

  clear(): void {
    this.rows = [];
    this.responses = [];
  }
}
