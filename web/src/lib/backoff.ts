// Reconnect delays for the events WebSocket: exponential with a cap and jitter, so many tabs
// (or a restarted node) are not hammered in lockstep.

export const BACKOFF_BASE_MS = 500;
export const BACKOFF_MAX_MS = 15_000;

/** Delay before reconnect attempt `attempt` (0-based); `rand` in [0,1) supplies the jitter. */
export function backoffDelay(attempt: number, rand: number): number {
  const exp = Math.min(BACKOFF_MAX_MS, BACKOFF_BASE_MS * 2 ** Math.min(attempt, 20));
  // Full jitter on the upper half: never below half the nominal delay, never above the cap.
  return Math.round(exp / 2 + (exp / 2) * rand);
}
