// Types of client_web/sdk/fl-client.js, the browser SDK of fl-coordinator (see docs/browser-sdk.md).
import type { Runtime } from "../js/runtime";

export interface ConnectOptions {
  /** Local training data: x flat row-major (examples × features), y integer labels. Or call setData() later. */
  data?: { x: Float32Array | number[] | number[][]; y: Int32Array | number[] };
  /** Keep the identity (Ed25519 seed) and the pinned coordinator key in IndexedDB (default true). */
  persist?: boolean;
  /** Identity slot within the coordinator's origin (default "default"). Each tab/client holds a Web Lock on its
   *  slot; when it is taken, the next free one is used ("NAME~2", "NAME~3", …): two tabs never share an identity. */
  identityName?: string;
  /** Use this 32-byte Ed25519 seed (overrides what is stored; not persisted). */
  identitySeed?: Uint8Array;
  /** The coordinator's public key (hex) to require; default: the key pinned on first use. */
  coordinatorKey?: string;
  /** Where the Python bundle is served (default `${coordinator}/py/`). */
  pythonUrl?: string;
  /** An already loaded runtime (client_web/js/runtime.js) to reuse. */
  runtime?: Runtime;
  /** Largest training batch the kernel allocates for (default 64). */
  maxBatch?: number;
  /** Back-off between reconnects: starts at initialMs (500), doubles up to maxMs (10000), ×U[0.5, 1.5). */
  reconnect?: { initialMs?: number; maxMs?: number };
  /** Poll /status this often while participating (default 3000 ms; 0 = only after each round). */
  statusIntervalMs?: number;
  /** Called with every event ({type, ...detail}), including "loading" events before connect() resolves. */
  onEvent?: (event: FlEvent) => void;
}

export interface StatusDetail {
  round: number;
  rounds: number;
  finished: boolean;
  /** The global model's accuracy / loss on the coordinator's evaluation data (null when it has none). */
  accuracy: number | null;
  loss: number | null;
  /** Mean of the local losses the round's clients reported. */
  trainLoss: number | null;
  /** Privacy spent so far (ε at δ) per the coordinator's accountant. */
  epsilon: number | null;
  delta: number | null;
  connected: number;
  inProgress: { round: number; groups: number; failed_groups: number; phases: string[] } | null;
}

export interface FlEventMap {
  loading: { stage: string; ms: number };
  connecting: { attempt: number; url: string };
  connected: { clientId: string; coordinatorKey: string; firstUse: boolean };
  disconnected: { code: number; reason: string; retryInMs: number };
  "round-start": { round: number; examples: number };
  trained: { round: number; loss: number };
  "round-done": { round: number; status: "ok" | "failed" };
  status: StatusDetail;
  stopped: { reason: string };
  error: { code: string; message: string; fatal: boolean };
}

export type FlEvent = { [K in keyof FlEventMap]: { type: K } & FlEventMap[K] }[keyof FlEventMap];

export interface ParticipationSummary {
  clientId: string;
  /** Rounds this client took part in that completed ("ok"), and those that failed. */
  rounds: number[];
  failedRounds: number[];
  lastLoss: number | null;
  /** The coordinator's stop reason, "left" after leave(), or "error: CODE" (then participate() rejected). */
  stopReason: string | null;
  reconnects: number;
  /** Error codes the coordinator or the session reported (non-fatal ones included). */
  errors: string[];
}

export interface SecAggInput {
  round: number;
  modulus_bits: number;
  values: number[];
}

export declare class FlClient extends EventTarget {
  readonly runtime: Runtime;
  /** hex BLAKE2b-128 of this client's Ed25519 public key; stable across visits when persisted. */
  readonly clientId: string;
  /** The coordinator key this client trusts (hex), or null before the first handshake. */
  readonly coordinatorKey: string | null;
  readonly endpoints: { http: string; ws: string; origin: string };
  /** The identity slot this client uses (see ConnectOptions.identityName); null when not persisted. */
  identityName: string | null;
  /** Number of local examples (after setData). */
  examples?: number;
  summary: ParticipationSummary | null;
  lastStatus: StatusDetail | null;
  /** The "loading" events of connect(). */
  loading: FlEvent[];

  setData(x: Float32Array | number[] | number[][], y: Int32Array | number[]): void;
  /** Join rounds until the coordinator says stop or leave() is called; rejects on a fatal error. */
  participate(): Promise<ParticipationSummary>;
  /** Class predictions of the latest global model received. Throws before the first round. */
  predict(x: Float32Array | number[] | number[][]): Int32Array;
  /** Send bye and close; participate() resolves with stopReason = reason (default "left"). */
  leave(reason?: string): Promise<void>;
  /** Debugging/tests: the field vector fed into the last secure aggregation. */
  debugLastInput(): SecAggInput | null;

  addEventListener<K extends keyof FlEventMap>(type: K, listener: (ev: CustomEvent<FlEventMap[K]>) => void,
                                               options?: boolean | AddEventListenerOptions): void;
  addEventListener(type: "event", listener: (ev: CustomEvent<FlEvent>) => void,
                   options?: boolean | AddEventListenerOptions): void;
  addEventListener(type: string, listener: EventListenerOrEventListenerObject | null,
                   options?: boolean | AddEventListenerOptions): void;
}

/** Load the runtime, restore or create the identity for the coordinator at `url` (http(s):// or ws(s)://). */
export function connect(url: string | URL, options?: ConnectOptions): Promise<FlClient>;
/** Delete the stored identity and pinned key for a coordinator. */
export function forgetIdentity(url: string | URL, identityName?: string): Promise<void>;
export function endpoints(url: string | URL): { http: string; ws: string; origin: string };
export function bytesToHex(bytes: Uint8Array): string;
export function sleep(ms: number): Promise<void>;
