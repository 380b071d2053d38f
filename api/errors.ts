// The message of anything a `catch` can receive. Node's APIs throw Errors, but a catch clause is
// typed unknown for a reason (a rejected promise may carry any value); this is the one place that
// narrows it, instead of `(e as Error).message` at every catch.
export function errorMessage(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
