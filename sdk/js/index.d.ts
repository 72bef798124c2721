// Type declarations for @selfcloud/sdk.

export type Scope =
  | 'ai:chat' | 'ai:collaborate' | 'storage:read' | 'storage:write' | 'files:read' | 'files:write'
  | 'db:read' | 'db:write' | 'chain:read' | 'chain:transact' | 'crypto:use' | 'network:notify';

/** SPEC §4's codes, plus OAuth's (`access_denied`, `invalid_grant`, …) and `STATE_MISMATCH`. */
export type ErrorCode =
  | 'UNAUTHENTICATED' | 'PERMISSION_DENIED' | 'NOT_FOUND' | 'INVALID_ARGUMENT' | 'ALREADY_EXISTS'
  | 'PAYLOAD_TOO_LARGE' | 'QUOTA_EXCEEDED' | 'RATE_LIMITED' | 'UNAVAILABLE' | 'INTERNAL' | 'STATE_MISMATCH'
  | (string & {});

export class SelfError extends Error {
  readonly code: ErrorCode;
  readonly status: number;
  readonly requestId: string | null;
  /** Seconds to wait, for `RATE_LIMITED`. */
  readonly retryAfter: number | null;
}

export interface Tokens {
  accessToken: string;
  refreshToken: string;
  scope: string;
  instanceUrl: string;
  /** Seconds since the epoch. */
  expiresAt: number;
}

export interface AppOptions {
  appId: string;
  /** Confidential apps only; public apps (SPAs, CLIs) rely on PKCE. */
  appSecret?: string | null;
  /** The gateway, e.g. `http://127.0.0.1:8080`. */
  baseUrl: string;
  /** The developer's owner token, for `createTestUser`. */
  developerToken?: string | null;
}

export interface TestUser {
  username: string;
  password: string;
  tier: 'free' | 'growth' | 'pro';
  instance: { id: string; url: string; status: string };
  test_user_of: string;
  [field: string]: unknown;
}

export class App {
  constructor(options: AppOptions);
  readonly appId: string;
  readonly baseUrl: string;
  createConnectionUrl(options: { permissions: Scope[]; redirectUrl: string }): Promise<string>;
  handleCallback(url: string): Promise<Session>;
  resume(tokens: Tokens): Session;
  createTestUser(options?: { tier?: 'free' | 'growth' | 'pro'; username?: string; developerToken?: string }): Promise<TestUser>;
}

export interface ChatAnswer {
  conversation: string;
  message: { role: 'assistant'; content: string };
  finish_reason: 'stop' | 'length';
  usage: { prompt_tokens: number; completion_tokens: number; total_tokens: number; cached_tokens: number };
  sources: { id: string; title: string; score: number }[];
}

export type ChatEvent =
  | { type: 'start'; conversation: string; sources: ChatAnswer['sources'] }
  | { type: 'delta'; conversation: string; delta: string }
  | ({ type: 'done' } & ChatAnswer);

export interface ChatRequest {
  message: string;
  context?: unknown;
  conversation?: string;
  system?: string;
  max_tokens?: number;
  temperature?: number;
  top_p?: number;
  seed?: number;
  stop?: string | string[];
}

export interface Database {
  readonly address: string;
  readonly type: 'events' | 'documents' | 'keyvalue';
  put(key: string, value: unknown): Promise<string>;
  get(key: string): Promise<unknown | null>;
  del(key: string): Promise<boolean>;
  all(): Promise<{ key: string; value: unknown; hash: string }[]>;
  add(value: unknown): Promise<string>;
  iterator(options?: { amount?: number; gt?: string; gte?: string; lt?: string; lte?: string }): Promise<{ hash: string; value: unknown }[]>;
  putDoc(doc: { _id: string; [field: string]: unknown }): Promise<unknown>;
  getDoc(id: string): Promise<Record<string, unknown> | null>;
  delDoc(id: string): Promise<boolean>;
  query(where: Record<string, unknown>): Promise<Record<string, unknown>[]>;
}

export class Session {
  readonly tokens: Tokens;
  readonly instanceUrl: string;
  hasPermission(scope: Scope): boolean;
  requestPermissions(more: Scope[], options: { redirectUrl: string }): Promise<string>;
  refresh(): Promise<void>;
  readonly ai: {
    chat(request: ChatRequest): Promise<ChatAnswer>;
    chatStream(request: ChatRequest): AsyncIterableIterator<ChatEvent>;
  };
  readonly storage: {
    set(entry: { key: string; value: unknown; encrypted?: boolean }): Promise<void>;
    get(key: string): Promise<unknown | null>;
    list(options?: { prefix?: string; limit?: number; cursor?: string }): Promise<{ keys: string[]; next_cursor: string | null }>;
    delete(key: string): Promise<boolean>;
  };
  readonly files: {
    add(data: string | Uint8Array | ArrayBuffer | Blob, options?: { name?: string }): Promise<{ cid: string; size: number }>;
    cat(cid: string): Promise<Uint8Array>;
    list(): Promise<{ cid: string; size: number; name?: string }[]>;
    remove(cid: string): Promise<void>;
    publish(cid: string): Promise<{ cid: string; published: boolean }>;
  };
  readonly db: {
    open(options: { name: string; type: 'events' | 'documents' | 'keyvalue' }): Promise<Database>;
    list(): Promise<{ address: string; name: string; type: string }[]>;
  };
  readonly blockchain: {
    getInfo(): Promise<{ address: string; balance: string; nonce: number; height: number }>;
    getTransactions(options?: { limit?: number; offset?: number }): Promise<{ address: string; transactions: unknown[] }>;
    transfer(options: { to: string; amount: string | bigint | number }): Promise<{ hash: string; height: number }>;
  };
  readonly crypto: {
    encrypt(options: { data: string | Uint8Array; recipient: string }): Promise<string>;
    decrypt(options: { ciphertext: string }): Promise<Uint8Array>;
    sign(options: { data: string | Uint8Array }): Promise<{ signature: string; public_key: string; sign_prefix: string }>;
    verify(options: { data: string | Uint8Array; signature: string; publicKey: string }): Promise<boolean>;
  };
  readonly network: {
    notify(options: { recipient: string; type: string; payload?: unknown }): Promise<{ delivered: boolean; recipient: string; id: string }>;
  };
}

export const SELF: { App: typeof App; Session: typeof Session; SelfError: typeof SelfError };
export default SELF;
