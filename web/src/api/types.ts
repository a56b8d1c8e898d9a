// The node's local API types. Everything here comes from generated.ts, which ts-rs writes from
// the node's Rust DTOs (crates/dopus-node/src/api/dto/); edit those, then run
// ./scripts/gen-api-types.sh. This module only adds the names the UI uses for them.
export type * from "./generated";
import type { Event } from "./generated";

/** A live event from `GET /api/v1/events`. */
export type ApiEvent = Event;
