/**
 * Live display of running trainings, for hosts such as the Jupyter kernel.
 *
 * The library knows nothing of Jupyter: a host (kernel/) registers itself here once, and every
 * `train()` call that starts while a host is registered asks it for a view and keeps the view up to
 * date (throttling is the host's business). `cancelAll()` is how a host turns an interrupt into
 * the cancellation of every native training in flight: their promises reject with E_CANCELLED.
 */
export interface LiveRun {
  /** A stable id for the run (also used as a display id by hosts). */
  readonly id: string;
  readonly status: "running" | "done" | "cancelled" | "failed";
  readonly progress: {
    step: number;
    totalSteps: number;
    epoch: number;
    epochs: number;
    elapsedSeconds: number;
    etaSeconds: number | null;
  };
  /** The latest per-step scalars (loss, train_accuracy, learning_rate, flip_rate/<layer>, ...). */
  readonly latest: Readonly<Record<string, number>>;
  // Runs also implement [Symbol.for("Jupyter.display")]() (a MIME bundle with a progress bar and
  // charts); TypeScript cannot declare a Symbol.for() key in an interface.
  cancel(reason?: string): void;
}

export interface LiveView {
  /** Called after new metrics arrived (possibly many times a second: throttle). */
  update(): void;
  /** Called once when the run ends, whatever the outcome. */
  end(): void;
}

export interface LiveHost {
  start(run: LiveRun): LiveView;
}

let host: LiveHost | null = null;
const active = new Set<LiveRun>();

export function setLiveHost(h: LiveHost | null): void {
  host = h;
}

export function liveHost(): LiveHost | null {
  return host;
}

/** Called by train(): registers the run and returns its view (a no-op view without a host). */
export function beginLive(run: LiveRun): LiveView {
  active.add(run);
  const view = host?.start(run);
  return {
    update: () => view?.update(),
    end: () => {
      active.delete(run);
      view?.end();
    },
  };
}

/** Cancels every training in flight (an interrupt). Returns how many were cancelled. */
export function cancelAll(reason = "interrupted"): number {
  const n = active.size;
  for (const r of active) r.cancel(reason);
  return n;
}

export function activeRuns(): LiveRun[] {
  return [...active];
}
