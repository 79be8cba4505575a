/**
 * The discrete state transition of ALGORITHM.md §1.3 and the initial states of §1.1, through the
 * dstUpdate and initStates ops.
 *
 * Statistics: each cell (Z_N, state w, proposal ΔW, τ) is drawn 10⁶ times at once — 10⁶ weights
 * in the same state with the same gradient; the `sgd` proposal with η = 1 makes ΔW = −g exactly.
 * Every outcome's frequency must be within 4σ = 4·√(p(1 − p)/n) of its probability under the
 * reference (and exactly 0 or n where the probability is 0 or 1). The draws are Philox's, so
 * each run is deterministic: a pass is a pass for good, and the 4σ bands are there to say the
 * generator and the rule together give the right law, not to absorb flakiness.
 *
 * Beyond the law, the decisions themselves: each weight's jump is the reference's decision for
 * that weight's own Philox draw (the counter layout both backends share), and τ is probed at
 * 1e-6 of each draw.
 */
import { strict as assert } from "assert";
import { addon } from "../src/native";
import * as R from "./reference";
import { Tau, TauSpec, f32 } from "./reference";

const ops = addon().ops;

const N_DRAWS = 1_000_000;
const SEED = 0x5eed;

const TANH: TauSpec = { tau: Tau.Tanh, m: 3 };
const LINEAR: TauSpec = { tau: Tau.Linear };
const LOGISTIC = (temperature: number): TauSpec => ({ tau: Tau.Logistic, temperature });
const tauName = (s: TauSpec) => (s.tau === Tau.Tanh ? `tanh(${s.m}·x)` : s.tau === Tau.Linear ? "linear" : `logistic(T=${s.temperature})`);

interface DstCall {
  levels: number;
  tau: TauSpec;
  lr?: number;
  seed?: number;
  step: number;
  layer?: number;
}
function dstParams(c: DstCall) {
  return {
    levels: c.levels, tau: c.tau.tau, m: c.tau.m ?? 3, temperature: c.tau.temperature ?? 1,
    lr: c.lr ?? 1, seed: c.seed ?? SEED, step: c.step, layer: c.layer ?? 0,
  };
}

/** Counts of each next state after one DST step of `n` weights all at state q with proposal ΔW (sgd, η = 1). */
function runCell(backend: string, N: number, q: number, dW: number, tau: TauSpec, step: number, n = N_DRAWS) {
  const res = ops.dstUpdate(backend, new Int8Array(n).fill(q), new Float32Array(n).fill(-dW), null, null, dstParams({ levels: N, tau, step }));
  const counts = new Map<number, number>();
  for (const v of res.q as Int8Array) counts.set(v, (counts.get(v) ?? 0) + 1);
  return { counts, flips: res.flips as number, q: res.q as Int8Array };
}

function checkLaw(what: string, counts: Map<number, number>, probs: Map<number, number>, n: number): void {
  for (const [state, c] of counts) assert.ok(probs.has(state) || c === 0, `${what}: ${c} weights went to state ${state}, which has probability 0`);
  for (const [state, p] of probs) {
    const c = counts.get(state) ?? 0;
    const r = R.withinSigmas(c, n, p);
    assert.ok(r.ok, `${what}: state ${state} ${c}/${n} = ${r.freq}, expected ${p} (${r.z.toFixed(2)}σ)`);
  }
}

// [N, state q, ΔW, τ]: crossing a boundary, |ΔW| > Δ (κ ≥ 1), tiny ΔW, either sign, N = 0, 1, 2.
type Cell = [number, number, number, TauSpec];
const CELLS: Cell[] = [
  // ternary, Δ = 1
  [1, 0, 0.3, TANH], [1, 0, -0.3, TANH], [1, 1, -0.3, TANH], [1, -1, 0.05, TANH],
  [1, 1, 0.3, TANH], [1, -1, -0.7, TANH],          // pushing outward at the boundary: clipped to 0
  [1, 0, 1.4, TANH], [1, 1, -2.5, TANH],           // crossing the boundary: clipped to it, κ = 1 or 2, ν = 0
  [1, -1, 1.4, TANH], [1, -1, 1.9999, TANH], [1, 1, -1.25, TANH], // κ = 1 inside the range
  [1, 0, -0.999, TANH], [1, 0, 1e-3, TANH], [1, 0, -1e-6, TANH], [1, 0, 1e-30, TANH], // tiny
  [1, 0, 0.3, LINEAR], [1, -1, 1.7, LINEAR], [1, 1, -0.25, LINEAR], [1, 0, -1e-4, LINEAR],
  [1, 0, 0.3, LOGISTIC(0.1)], [1, 0, -0.6, LOGISTIC(0.1)], [1, 0, 0.5, LOGISTIC(1)],
  [1, 0, 1, LOGISTIC(0.2)],                        // clipped to κ = 1, ν = 0: τ(0) > 0 tries to jump past 1
  [1, -1, 1.3, LOGISTIC(0.2)], [1, 0, 0.02, LOGISTIC(0.05)],
  // binary, Δ = 2
  [0, -1, 0.5, TANH], [0, 1, -1.5, TANH], [0, 1, 0.5, TANH], [0, -1, 3, TANH], [0, -1, 1e-5, TANH],
  [0, -1, 1.2, LINEAR], [0, 1, -0.4, LOGISTIC(0.3)],
  // N = 2, Δ = ½ (states stored as q = 2w)
  [2, 0, 0.2, TANH], [2, 1, -0.8, TANH], [2, 2, 0.1, TANH], [2, -1, -0.9, TANH], [2, -2, 0.74, TANH],
  [2, 0, -1.2, TANH], [2, 0, 0.3, LINEAR], [2, -2, 1.3, LINEAR], [2, 1, -0.35, LOGISTIC(0.25)],
];

export function dstTests(backend: string): void {
  describe("transition law (10⁶ draws per cell, every outcome within 4σ)", () => {
    for (const N of [1, 0, 2]) {
      const cells = CELLS.filter((c) => c[0] === N);
      it(`Z_${N}: ${cells.length} cells of (w, ΔW, τ)`, () => {
        const lv = R.levels(N);
        for (const cell of cells) {
          const [, q, dW, tau] = cell;
          const step = CELLS.indexOf(cell) + 1; // a fresh counter for every cell
          const { counts, flips } = runCell(backend, N, q, dW, tau, step);
          const { probs } = R.dstOutcomes(N, q, f32(dW), tau);
          checkLaw(`N=${N} w=${q * lv.unit} ΔW=${dW} ${tauName(tau)}`, counts, probs, N_DRAWS);
          assert.equal(flips, N_DRAWS - (counts.get(q) ?? 0), "the flip counter counts the weights that changed");
        }
      });
    }

    it("m and T shape τ as documented: tanh(m·x) for m = 1, 6; logistic at T = 0.02 rounds to nearest", () => {
      const cases: [number, number, number, TauSpec][] = [
        [1, 0, 0.3, { tau: Tau.Tanh, m: 1 }], [1, 0, -0.3, { tau: Tau.Tanh, m: 6 }],
        [1, 0, 0.45, LOGISTIC(0.02)], [1, 0, 0.55, LOGISTIC(0.02)],
      ];
      cases.forEach(([N, q, dW, tau], i) => {
        const { counts } = runCell(backend, N, q, dW, tau, 500 + i);
        checkLaw(`ΔW=${dW} ${tauName(tau)}`, counts, R.dstOutcomes(N, q, f32(dW), tau).probs, N_DRAWS);
      });
    });
  });

  it("linear τ is unbiased: the mean move equals the (clipped) ΔW within 4σ", () => {
    const cells: [number, number, number][] = [
      [1, 0, 0.3], [1, 0, -0.77], [1, -1, 1.7], [1, 1, -1.05], [1, 0, 2e-3], [1, 1, 0.4],
      [0, -1, 1.2], [0, 1, -0.1], [2, 0, 0.3], [2, -2, 1.3], [2, 1, -0.95], [2, 2, -1.8],
    ];
    cells.forEach(([N, q, dW], i) => {
      const lv = R.levels(N);
      const { counts } = runCell(backend, N, q, dW, LINEAR, 600 + i);
      const { clipped } = R.dstOutcomes(N, q, f32(dW), LINEAR);
      let sum = 0;
      for (const [s, c] of counts) sum += (s - q) * lv.unit * c;
      const mean = sum / N_DRAWS;
      const x = Math.abs(clipped) / lv.delta, frac = x - Math.floor(x);
      const sd = lv.delta * Math.sqrt((frac * (1 - frac)) / N_DRAWS);
      assert.ok(Math.abs(mean - clipped) <= 4 * sd + 1e-12, `N=${N} w=${q * lv.unit} ΔW=${dW}: mean move ${mean}, expected ${clipped} ± ${4 * sd}`);
    });
  });

  describe("decisions", () => {
    // For weight i with draw u_i (reference Philox, the shared counter layout) a proposal is chosen
    // so that the exact τ is u_i·(1 ± 1e-6): the weight must jump exactly when τ > u_i. This pins
    // each decision to its own draw and τ's evaluation to 1e-6 (float32 τ is good to ~2e-7).
    const n = 16384;
    for (const [N, tau] of [[1, TANH], [1, LINEAR], [1, LOGISTIC(0.1)], [1, LOGISTIC(1)], [0, TANH], [2, TANH], [2, LOGISTIC(0.3)]] as [number, TauSpec][])
      it(`each weight jumps iff u < τ(|ν|/Δ), its own Philox draw: N=${N}, ${tauName(tau)}`, () => {
        const lv = R.levels(N);
        const step = 77, layer = 5;
        const rng = new R.Rng(31 + N * 10 + tau.tau);
        const q = new Int8Array(n), g = new Float32Array(n);
        const kinds: string[] = [];
        for (let i = 0; i < n; i++) {
          const u = R.dstUniform(SEED, step, layer, i);
          // the inverse of τ at a target just above or below u
          const target = u * (1 + (i % 2 ? 1e-6 : -1e-6));
          let frac: number;
          if (tau.tau === Tau.Linear) frac = i % 4 < 2 ? target : i % 4 === 2 ? u : u + 2 ** -24;
          else if (tau.tau === Tau.Tanh) frac = Math.atanh(target) / (tau.m ?? 3);
          else frac = 0.5 + (tau.temperature ?? 1) * Math.log(target / (1 - target));
          // a state and direction with room for one or two steps, κ = 0 or 1
          const states = lv.states;
          const from = states[rng.int(0, states.length - 2)];
          const roomUp = (states[states.length - 1] - from) / (N === 0 ? 2 : 1);
          const kappa = roomUp >= 2 && rng.uniform() < 0.5 ? 1 : 0;
          q[i] = from;
          if (!(frac >= 0 && frac < 1) || target >= 1) {
            g[i] = 0;
            kinds.push("skip");
            continue;
          }
          g[i] = -f32((kappa + frac) * lv.delta);
          kinds.push("probe");
        }
        const res = ops.dstUpdate(backend, q, g, null, null, dstParams({ levels: N, tau, step, layer }));
        let checked = 0;
        for (let i = 0; i < n; i++) {
          const dW = -g[i];
          if (kinds[i] === "skip") {
            assert.equal(res.q[i], q[i], `element ${i}: ΔW = 0 must not move`);
            continue;
          }
          const u = R.dstUniform(SEED, step, layer, i);
          // τ of the op's own float32 frac, with its float32 temperature
          const x = dW / lv.delta, kappa = Math.floor(x), t = R.tauOf(x - kappa, { ...tau, temperature: f32(tau.temperature ?? 1) });
          if (tau.tau !== Tau.Linear && Math.abs(t - u) <= 5e-7 * u + 2 ** -30) continue; // within τ's float32 error
          const expected = q[i] + (kappa + (u < t ? 1 : 0)) * (N === 0 ? 2 : 1);
          if (res.q[i] !== expected) assert.fail(`element ${i}: state ${q[i]}, ΔW ${dW}, u ${u}, τ ${t}: got ${res.q[i]}, expected ${expected}`);
          checked++;
        }
        assert.ok(checked > 0.9 * kinds.filter((k) => k === "probe").length, `only ${checked} decisions were unambiguous`);
      });

    it("draws are independent across elements, steps, layers and seeds, and repeat for the same counter", () => {
      // linear τ = ½: each weight jumps with probability ½, so two independent decisions agree with
      // probability ½ and both jump with probability ¼.
      const n = 200000;
      const q = new Int8Array(n), g = new Float32Array(n).fill(-0.5);
      const run = (over: Partial<DstCall>) =>
        ops.dstUpdate(backend, q, g, null, null, dstParams({ levels: 1, tau: LINEAR, step: 1, ...over })).q as Int8Array;
      const base = run({});
      assert.deepEqual(Buffer.from(run({}).buffer), Buffer.from(base.buffer), "the same (seed, step, layer, element) must repeat");
      const both = (a: Int8Array, b: Int8Array, shift = 0) => {
        let c = 0;
        for (let i = 0; i + shift < n; i++) c += a[i] && b[i + shift] ? 1 : 0;
        return c;
      };
      for (const [what, other, shift] of [
        ["next element", base, 1], ["element + 4", base, 4], ["next step", run({ step: 2 }), 0],
        ["next layer", run({ layer: 1 }), 0], ["next seed", run({ seed: SEED + 1 }), 0],
        ["seed + 2³²", run({ seed: SEED + 2 ** 32 }), 0],
      ] as [string, Int8Array, number][]) {
        const r = R.withinSigmas(both(base, other, shift), n - shift, 0.25);
        assert.ok(r.ok, `${what}: P(both jump) = ${r.freq} (${r.z.toFixed(2)}σ from ¼)`);
      }
    });
  });

  describe("weights stay in Z_N", () => {
    for (const N of [0, 1, 2])
      it(`N=${N}: random proposals of any size, ±∞, ±0 and denormals, every τ, five steps`, () => {
        const lv = R.levels(N);
        const valid = new Set(lv.states);
        const rng = new R.Rng(40 + N);
        const n = 50000;
        let q = Int8Array.from({ length: n }, () => lv.states[rng.int(0, lv.states.length - 1)]);
        const special = [Infinity, -Infinity, 0, -0, 3.4e38, -3.4e38, 1e-45, -1e-45, 1e-39];
        for (let step = 1; step <= 5; step++)
          for (const tau of [TANH, LINEAR, LOGISTIC(0.1), LOGISTIC(10)]) {
            const g = Float32Array.from({ length: n }, (_, i) =>
              i < special.length ? special[i] : (rng.uniform() < 0.5 ? -1 : 1) * 10 ** rng.range(-42, 38));
            for (const lr of [1e-3, 1, 1e6]) {
              const res = ops.dstUpdate(backend, q, g, null, null, dstParams({ levels: N, tau, lr, step }));
              const nq = res.q as Int8Array;
              let changed = 0;
              for (let i = 0; i < n; i++) {
                if (!valid.has(nq[i])) assert.fail(`N=${N} ${tauName(tau)} lr ${lr}: element ${i} (ΔW = ${-lr * g[i]}) reached state ${nq[i]}`);
                changed += nq[i] !== q[i] ? 1 : 0;
              }
              assert.equal(res.flips, changed);
              q = nq;
            }
          }
      });

    it("a zero or NaN proposal leaves every weight where it is", () => {
      for (const N of [0, 1, 2])
        for (const tau of [TANH, LINEAR, LOGISTIC(0.2)]) {
          const lv = R.levels(N);
          const q = Int8Array.from({ length: 4096 }, (_, i) => lv.states[i % lv.states.length]);
          for (const v of [0, -0, NaN]) {
            const res = ops.dstUpdate(backend, q, new Float32Array(q.length).fill(v), null, null, dstParams({ levels: N, tau, step: 9 }));
            assert.deepEqual(Array.from(res.q as Int8Array), Array.from(q), `N=${N} ${tauName(tau)} g=${v}`);
            assert.equal(res.flips, 0);
          }
        }
    });
  });

  describe("Adam proposal (Lasagne's form, lr = α_t)", () => {
    // The op holds β1, β2, ε as float32; the reference takes the same values.
    const H: R.AdamHyper = { beta1: f32(0.9), beta2: f32(0.999), eps: f32(1e-8) };

    it("moments match Lasagne's update and each move is the linear-τ decision for ΔW = −α_t·m/(√v + ε)", () => {
      const n = 20000, step = 3, layer = 2;
      const rng = new R.Rng(50);
      const lr = f32(R.adamAlpha(0.5, 7));
      const q = rng.ternary(n);
      const g = Float32Array.from({ length: n }, () => rng.normal() * 10 ** rng.range(-4, 0));
      const m = Float32Array.from({ length: n }, () => rng.normal() * 0.05);
      const v = Float32Array.from({ length: n }, (_, i) => (i % 7 === 0 ? 0 : Math.abs(rng.normal()) * 1e-3));
      const res = ops.dstUpdate(backend, q, g, m, v, dstParams({ levels: 1, tau: LINEAR, lr, step, layer }));
      const U = R.U32;
      let checked = 0;
      for (let i = 0; i < n; i++) {
        const ref = R.lasagneAdam(g[i], m[i], v[i], lr, H);
        const mTol = 4 * U * (H.beta1 * Math.abs(m[i]) + (1 - H.beta1) * Math.abs(g[i]));
        const vTol = 4 * U * (H.beta2 * v[i] + (1 - H.beta2) * g[i] * g[i]);
        if (!(Math.abs(res.m[i] - ref.m) <= mTol)) assert.fail(`element ${i}: m ${res.m[i]}, expected ${ref.m}`);
        if (!(Math.abs(res.v[i] - ref.v) <= vTol)) assert.fail(`element ${i}: v ${res.v[i]}, expected ${ref.v}`);
        const dW = -ref.step;
        const { clipped } = R.dstOutcomes(1, q[i], dW, LINEAR);
        const x = Math.abs(clipped), kappa = Math.floor(x), frac = x - kappa;
        const u = R.dstUniform(SEED, step, layer, i);
        // ΔW carries ~8u of float32 error: leave out draws that close to the boundary
        if (Math.abs(frac - u) <= 16 * U * (x + 1)) continue;
        const expected = Math.max(-1, Math.min(1, q[i] + Math.sign(clipped) * (kappa + (u < frac ? 1 : 0))));
        if (res.q[i] !== expected) assert.fail(`element ${i}: state ${q[i]}, ΔW ${dW}, u ${u}: got ${res.q[i]}, expected ${expected}`);
        checked++;
      }
      assert.ok(checked > 0.99 * n, `only ${checked} decisions were unambiguous`);
    });

    it("10⁶ weights with the same (g, m, v): the moments are identical and the move law is that of the reference ΔW", () => {
      const g = f32(0.02), m0 = f32(-0.01), v0 = f32(2e-4), lr = f32(R.adamAlpha(0.3, 2));
      const res = ops.dstUpdate(backend, new Int8Array(N_DRAWS), new Float32Array(N_DRAWS).fill(g),
        new Float32Array(N_DRAWS).fill(m0), new Float32Array(N_DRAWS).fill(v0), dstParams({ levels: 1, tau: LINEAR, lr, step: 700 }));
      const ref = R.lasagneAdam(g, m0, v0, lr, H);
      assert.ok(Math.abs(res.m[0] - ref.m) <= 4 * R.U32 * Math.abs(ref.m) + 1e-12 && Math.abs(res.v[0] - ref.v) <= 4 * R.U32 * ref.v);
      for (let i = 1; i < N_DRAWS; i += 9973) assert.ok(res.m[i] === res.m[0] && res.v[i] === res.v[0]);
      const counts = new Map<number, number>();
      let sum = 0;
      for (const s of res.q as Int8Array) {
        counts.set(s, (counts.get(s) ?? 0) + 1);
        sum += s;
      }
      checkLaw(`ΔW = ${-ref.step}`, counts, R.dstOutcomes(1, 0, -ref.step, LINEAR).probs, N_DRAWS);
      const p = Math.abs(ref.step);
      assert.ok(Math.abs(sum / N_DRAWS + ref.step) <= 4 * Math.sqrt((p * (1 - p)) / N_DRAWS), `mean move ${sum / N_DRAWS} vs ΔW ${-ref.step}`);
    });

    it("α_t is Lasagne's η·√(1 − β2^t)/(1 − β1^t)", () => {
      assert.ok(Math.abs(R.adamAlpha(0.1, 1) - (0.1 * Math.sqrt(0.001)) / 0.1) < 1e-15);
      assert.ok(Math.abs(R.adamAlpha(0.1, 1e6) - 0.1) < 1e-12);
    });
  });

  describe("initial states (§1.1)", () => {
    const cases: [number, number, string][] = [
      [1, 1, "ternary, U(−1, 1): P(0) = ½, P(±1) = ¼"],
      [1, 1.5, "ternary, U(−1.5, 1.5) (the CIFAR dense layers): ⅓ each"],
      [0, 1, "binary: ½ each"],
      [2, 1, "N = 2: P(0) = P(±½) = ¼, P(±1) = ⅛"],
    ];
    for (const [N, spread, what] of cases)
      it(`${what}, within 4σ over 10⁶ weights`, () => {
        const q = ops.initStates(backend, N_DRAWS, 12345, 3, spread, N) as Int8Array;
        const counts = new Map<number, number>();
        for (const s of q) counts.set(s, (counts.get(s) ?? 0) + 1);
        const probs = R.initProbabilities(N, spread);
        if (N === 1 && spread === 1) assert.deepEqual([probs.get(-1), probs.get(0), probs.get(1)], [0.25, 0.5, 0.25]);
        if (N === 1 && spread === 1.5) for (const s of [-1, 0, 1]) assert.ok(Math.abs(probs.get(s)! - 1 / 3) < 1e-15);
        checkLaw(what, counts, probs, N_DRAWS);
      });

    it("is a function of (seed, layer, element): repeatable, and independent across layers and seeds", () => {
      const n = 200000;
      const a = ops.initStates(backend, n, 7, 0, 1, 1) as Int8Array;
      assert.deepEqual(Buffer.from((ops.initStates(backend, n, 7, 0, 1, 1) as Int8Array).buffer), Buffer.from(a.buffer));
      // a prefix of a larger tensor is the smaller tensor
      assert.deepEqual(Buffer.from((ops.initStates(backend, 1000, 7, 0, 1, 1) as Int8Array).buffer), Buffer.from(a.subarray(0, 1000)));
      for (const [what, b] of [["layer 1", ops.initStates(backend, n, 7, 1, 1, 1)], ["seed 8", ops.initStates(backend, n, 8, 0, 1, 1)]] as [string, Int8Array][]) {
        let same = 0;
        for (let i = 0; i < n; i++) same += a[i] === b[i] ? 1 : 0;
        // independent ternary draws agree with probability ¼² + ½² + ¼² = 3/8
        const r = R.withinSigmas(same, n, 0.375);
        assert.ok(r.ok, `${what}: agreement ${r.freq} (${r.z.toFixed(2)}σ from 3/8)`);
      }
    });
  });
}

R.describeBackends("DST", dstTests);
