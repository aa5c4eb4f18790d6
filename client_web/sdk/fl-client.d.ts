// Types of client_web/sdk/fl-client.js, the browser SDK of fl-coordinator (see docs/browser-sdk.md).
/** The SDK's module worker (Pyodide, the kernel, libsodium and the Python sessions). */
export declare class WorkerRuntime {
  readonly worker: Worker;
  /** Loading timings by stage (ms since the worker started loading). */
  timings: Record<string, number> | null;
  /** Bytes of the preloaded files (from the network or Cache Storage). */
  downloaded: number;
  terminate(): void;
}

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
  /** Enrolment token (hex) the coordinator's operator issued for this client's key (`fl-coordinator enrol-token
   *  --client-key <FlClient.publicKey>`), for a coordinator run with enrolment = token; needed the first time. */
  enrolmentToken?: string;
  /** This client's privacy policy: what it requires of every task (it declines the others). Omitted options keep
   *  the safe defaults; an unknown option or an invalid value makes connect() reject with err.code "policy". */
  privacy?: PrivacyOptions;
  /** Where the Python bundle is served (default `${coordinator}/py/`). */
  pythonUrl?: string;
  /** The runtime's asset list (default `${url}/sdk/assets.json`). */
  assetsUrl?: string;
  /** ms without progress before a loading stage is retried in a fresh worker. */
  loadTimeouts?: { assets?: number; download?: number; pyodide?: number; "python-files"?: number };
  /** Loading attempts before connect() rejects with code "loading" (default Infinity). */
  loadAttempts?: number;
  /** The worker script (default ./fl-worker.js beside fl-client.js). */
  workerUrl?: string;
  /** Another client's runtime (its worker): this client's session runs in it too. */
  runtime?: WorkerRuntime;
  /** Largest training batch the kernel allocates for (default 64). */
  maxBatch?: number;
  /** Back-off between reconnects: starts at initialMs (500), doubles up to maxMs (10000), ×U[0.5, 1.5). */
  reconnect?: { initialMs?: number; maxMs?: number };
  /** Say bye and close the connection when the page is hidden for good (`pagehide`: closed, reloaded,
   * navigated away), so the coordinator drops this client from a round at once. Default true. */
  leaveOnPageHide?: boolean;
  /** Poll /status this often while participating (default 3000 ms; 0 = only after each round). */
  statusIntervalMs?: number;
  /** Called with every event ({type, ...detail}), including "loading" events before connect() resolves. */
  onEvent?: (event: FlEvent) => void;
}

export interface PrivacyOptions {
  /** Smallest secure-aggregation group accepted (default 5). */
  minGroupSize?: number;
  /** SecAgg+ threshold floor: "majority" or "two-thirds" (default; the active-adversary regime). */
  thresholdRule?: "majority" | "two-thirds";
  /** Colluding group members (with the coordinator) the threshold must withstand: 2t − n > colluders (default 1). */
  colluders?: number;
  /** Accept SecAgg+'s sparse neighbour graphs (default false: a malicious coordinator can split their checks). */
  allowSparseGraph?: boolean;
  /** Smallest DP noise multiplier z accepted (default 0.5). */
  minNoise?: number;
  /** This client's own ε budget on its ledger (default 10); null or Infinity: no budget. */
  epsilonBudget?: number | null;
  /** δ of the ledger (default 1e-6). */
  delta?: number;
  /** Consecutive round attempts (any round number) aborted after this client's reveal that it tolerates before
   *  declining the next selection; reset by a completed round (default 10). */
  maxAbortedReveals?: number;
}

/** The policy in force (FlClient.policy): every option, epsilonBudget null = no budget. */
export type PrivacyPolicy = { [K in keyof PrivacyOptions]-?: Exclude<PrivacyOptions[K], undefined> };

export interface LedgerSummary {
  /** ε this client has spent if secure aggregation holds (≥ t − colluders honest noise shares in every released
   *  sum); null with private = false when a release carried no noise (ε infinite). */
  epsilon: number | null;
  /** ε if secure aggregation is broken (its own noise share alone); null when infinite. */
  epsilonWorstCase: number | null;
  /** Releases this client's input entered (rounds it took part in). */
  participations: number;
  /** Its ε budget (null: none). */
  budget: number | null;
  delta: number;
  private: boolean;
  lastRound: number | null;
}

/** The stored ledger (PrivacyLedger.to_dict()). */
export interface LedgerState {
  version: number;
  epsilon_budget: number | null;
  delta: number;
  entries: { round: number; attempt: string; group_size: number; threshold: number; z_guaranteed: number;
             z_own: number; config_hash: string }[];
}

export interface StatusDetail {
  round: number;
  rounds: number;
  finished: boolean;
  /** The global model's accuracy / loss on the coordinator's evaluation data (null when it has none). */
  accuracy: number | null;
  loss: number | null;
  /** Privacy spent so far (ε at δ) per the coordinator's accountant: the largest per-client ε against the
   *  coordinator (compare with FlClient.ledger, this client's own figure). */
  epsilon: number | null;
  delta: number | null;
  /** The coordinator's configuration: its ε budget per client (null: none), noise multiplier, group size,
   *  threshold rule and colluders. */
  epsilonBudget: number | null;
  noiseMultiplier: number | null;
  groupSize: number | null;
  thresholdRule: string | null;
  colluders: number | null;
  connected: number;
  /** Clients ready for the next round, and how many it needs: clientsPerRound, or minClientsPerRound once every
   *  connected client is ready. */
  ready: number | null;
  clientsPerRound: number | null;
  minClientsPerRound: number | null;
  inProgress: { round: number; groups: number; failed_groups: number; phases: string[] } | null;
}

export interface FlEventMap {
  loading: { stage: string; ms?: number; loaded?: number; total?: number; cachedBytes?: number; snapshot?: boolean;
             attempt?: number; error?: string; retryInMs?: number; url?: string; resumeAt?: number };
  connecting: { attempt: number; url: string };
  connected: { clientId: string; coordinatorKey: string; firstUse: boolean };
  disconnected: { code: number; reason: string; retryInMs: number };
  "round-start": { round: number; examples: number };
  trained: { round: number; loss: number };
  /** The participation is recorded in the ledger and (persist) stored in IndexedDB; the masked input follows. */
  ledger: { round: number; persisted: boolean } & LedgerSummary;
  /** The policy or the budget refused this round's task: a decline message was sent, nothing about the update. */
  declined: { round: number; code: string; message: string };
  /** declined: this client declined that round (it is then in summary.declined, not rounds/failedRounds). */
  "round-done": { round: number; status: "ok" | "failed"; declined: boolean };
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
  /** Tasks this client's policy or budget declined. */
  declined: { round: number; code: string }[];
  lastLoss: number | null;
  /** The ledger after the last recorded participation. */
  ledger: LedgerSummary;
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
  readonly runtime: WorkerRuntime;
  /** hex BLAKE2b-128 of this client's Ed25519 public key; stable across visits when persisted. */
  readonly clientId: string;
  /** This client's Ed25519 public key (hex): what an operator allow-lists or issues an enrolment token for. */
  readonly publicKey: string;
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

  setData(x: Float32Array | number[] | number[][], y: Int32Array | number[]): Promise<void>;
  /** Join rounds until the coordinator says stop or leave() is called; rejects on a fatal error. */
  participate(): Promise<ParticipationSummary>;
  /** Class predictions of the latest global model received, computed in the worker. Rejects before the first. */
  /** Rounds completed when the global model used by predict() was released (null: none yet); restored from
   *  IndexedDB with the identity, signature checked. */
  modelRound: number | null;
  predict(x: Float32Array | number[] | number[][]): Promise<Int32Array>;
  /** Send bye and close; participate() resolves with stopReason = reason (default "left"). */
  leave(reason?: string): Promise<void>;
  /** Debugging/tests: the field vector fed into the last secure aggregation. */
  debugLastInput(): Promise<SecAggInput | null>;
  /** Debugging/tests: what a protocol frame is (not verified). */
  debugDescribeFrame(frame: Uint8Array | ArrayBuffer): Promise<{ type: string; round: number; sender: string; phase: string | null }>;
  /** The privacy policy this client enforces. */
  readonly policy: PrivacyPolicy;
  /** The default policy (what `policy` is without `privacy` options). */
  readonly defaultPolicy: PrivacyPolicy;
  /** This client's privacy ledger (restored from IndexedDB with the identity). */
  readonly ledger: LedgerSummary;
  /** The whole ledger, as stored. */
  readonly ledgerState: LedgerState;

  addEventListener<K extends keyof FlEventMap>(type: K, listener: (ev: CustomEvent<FlEventMap[K]>) => void,
                                               options?: boolean | AddEventListenerOptions): void;
  addEventListener(type: "event", listener: (ev: CustomEvent<FlEvent>) => void,
                   options?: boolean | AddEventListenerOptions): void;
  addEventListener(type: string, listener: EventListenerOrEventListenerObject | null,
                   options?: boolean | AddEventListenerOptions): void;
}

/** Load the runtime, restore or create the identity for the coordinator at `url` (http(s):// or ws(s)://). */
export function connect(url: string | URL, options?: ConnectOptions): Promise<FlClient>;
/** Delete the stored identity, pinned key and privacy ledger for a coordinator (the ledger belongs to the identity). */
export function forgetIdentity(url: string | URL, identityName?: string): Promise<void>;
export function endpoints(url: string | URL): { http: string; ws: string; origin: string };
export function bytesToHex(bytes: Uint8Array): string;
export function sleep(ms: number): Promise<void>;
